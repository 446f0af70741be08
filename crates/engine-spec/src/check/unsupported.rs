//! W0501: parts of element.json exports the engine accepts but never executes: `event` hooks
//! (`preRequest` and `postRequest` hooks run, docs/hooks.md), parameter converters, the resources it never runs (the webhook resources,
//! `oauthOnAuthorizeUrl`, `oauth2Password`), protocols other than HTTP (`jdbc`, `odata`),
//! events and bulk (pagination is followed: `engine run --pages`).
//!
//! One warning per site: per resource (its type and its hooks together), per converter
//! parameter, one for the connector's own hooks, and one for each connector-wide feature, so that
//! a large export stays readable.
//!
//! The hooks and converters change the requests a run sends: the model keeps those warnings
//! ([`NotExecuted`]) so that a run executing the resource says them too.

use serde_json::Value;

use crate::check::Input;
use crate::diagnostic::{Code, Diagnostic};
use crate::model::{NotExecuted, NotExecutedKind, Protocol};
use crate::pointer::JsonPointer;
use crate::raw::RawParameter;
use crate::source::Location;

const HOOKS_HELP: &str = "`event` hooks turn a vendor's webhook payload into events; the engine \
                          receives no webhooks yet, so they never run (`preRequest` and \
                          `postRequest` hooks do)";

/// The `event` hooks of a `hooks` array: the only ones the engine does not run.
fn event_hooks(hooks: &[Value]) -> Vec<Value> {
    hooks
        .iter()
        .filter(|hook| hook.get("type").and_then(Value::as_str) == Some("event"))
        .cloned()
        .collect()
}

/// The `preRequest` and `postRequest` hooks of a `hooks` array that carry no script (an export
/// that left the `body` out), with their positions and types.
fn scriptless_hooks(hooks: &[Value]) -> impl Iterator<Item = (usize, &str)> {
    hooks.iter().enumerate().filter_map(|(position, hook)| {
        let kind = hook.get("type").and_then(Value::as_str)?;
        let runs = kind == "preRequest" || kind == "postRequest";
        (runs && hook.get("body").is_none_or(Value::is_null)).then_some((position, kind))
    })
}

/// The W0501 warning of a hook with no script at `pointer`, on `whose` (the connector, or a
/// resource).
fn scriptless(input: &Input<'_>, pointer: JsonPointer, whose: &str, kind: &str) -> Diagnostic {
    Diagnostic::new(
        Code::NotExecuted,
        Location::new(input.file, pointer),
        format!("{whose} `{kind}` hook has no script in this export (no `body`): the platform ran one, the engine runs nothing"),
    )
    .with_label("no `body`")
    .with_help("add the hook's script as its `body` (export the connector again with its hooks), or remove the hook")
}

/// Pushes the W0501 warnings; returns the ones a run must say (converters it lacks, hooks
/// with no script). The `event` hooks are only said here: they turn webhooks into events and
/// never touch a request.
pub(super) fn check(input: &Input<'_>, diagnostics: &mut Vec<Diagnostic>) -> Vec<NotExecuted> {
    connector_wide(input, diagnostics);
    let mut at_run = Vec::new();
    let mut keep = |diagnostic: Diagnostic,
                    resource: Option<usize>,
                    what: NotExecutedKind,
                    diagnostics: &mut Vec<Diagnostic>| {
        at_run.push(NotExecuted {
            diagnostic: diagnostic.clone(),
            resource,
            what,
        });
        diagnostics.push(diagnostic);
    };
    let events = event_hooks(&input.raw.hooks);
    if !events.is_empty() {
        diagnostics.push(
            Diagnostic::new(
                Code::NotExecuted,
                Location::new(input.file, JsonPointer::root().field("hooks")),
                format!(
                    "the connector has {}; the engine accepts but never executes {}",
                    describe_hooks(&events),
                    them(&events)
                ),
            )
            .with_label("not executed")
            .with_help(HOOKS_HELP),
        );
    }
    for (position, kind) in scriptless_hooks(&input.raw.hooks) {
        let pointer = JsonPointer::root().field("hooks").index(position);
        keep(
            scriptless(input, pointer, "the connector's", kind),
            None,
            NotExecutedKind::ScriptMissing(kind.to_owned()),
            diagnostics,
        );
    }
    for (index, parameter) in input.raw.parameters.iter().enumerate() {
        let pointer = JsonPointer::root().field("parameters").index(index);
        if let Some((diagnostic, name)) = converter(input, parameter, &pointer) {
            keep(
                diagnostic,
                None,
                NotExecutedKind::Converter(name),
                diagnostics,
            );
        }
    }
    for (resource, raw) in input.connector.resources().iter().zip(&input.raw.resources) {
        let pointer = &resource.location().pointer;
        let name = resource.display_name();
        if resource.kind().is_never_executed() {
            let label = resource.kind().label();
            // Every never-run type starts with a vowel: `an ON DELETE WEBHOOK resource`.
            let subject = if name == label {
                format!("an `{label}` resource")
            } else {
                format!("resource `{name}` of type `{label}`")
            };
            let (hooks, verb) = if raw.hooks.is_empty() {
                (String::new(), "is")
            } else {
                (format!(" and its {}", describe_hooks(&raw.hooks)), "are")
            };
            diagnostics.push(
                Diagnostic::new(
                    Code::NotExecuted,
                    Location::new(input.file, pointer.field("type")),
                    format!("{subject}{hooks} {verb} accepted but never executed"),
                )
                .with_label("the engine never runs this resource type; `engine run` refuses it")
                .with_help("remove the resource, or run the call it makes as an `API` resource"),
            );
        } else if !event_hooks(&raw.hooks).is_empty() {
            let events = event_hooks(&raw.hooks);
            diagnostics.push(
                Diagnostic::new(
                    Code::NotExecuted,
                    Location::new(input.file, pointer.field("hooks")),
                    format!(
                        "resource `{name}` has {}; the engine accepts but never executes {}",
                        describe_hooks(&events),
                        them(&events)
                    ),
                )
                .with_label("not executed")
                .with_help(HOOKS_HELP),
            );
        }
        for (position, kind) in scriptless_hooks(&raw.hooks) {
            keep(
                scriptless(
                    input,
                    pointer.field("hooks").index(position),
                    &format!("resource `{name}`'s"),
                    kind,
                ),
                Some(resource.index()),
                NotExecutedKind::ScriptMissing(kind.to_owned()),
                diagnostics,
            );
        }
        for (position, parameter) in raw.parameters.iter().enumerate() {
            let pointer = pointer.field("parameters").index(position);
            if let Some((diagnostic, name)) = converter(input, parameter, &pointer) {
                keep(
                    diagnostic,
                    Some(resource.index()),
                    NotExecutedKind::Converter(name),
                    diagnostics,
                );
            }
        }
    }
    at_run
}

/// Connector-wide features the engine does not run: a protocol other than HTTP,
/// events, bulk. One warning each.
fn connector_wide(input: &Input<'_>, diagnostics: &mut Vec<Diagnostic>) {
    let connector = input.connector;
    let at = |pointer: JsonPointer| Location::new(input.file, pointer);
    let mut warn = |location: Location, message: String, label: &str, help: &str| {
        diagnostics.push(
            Diagnostic::new(Code::NotExecuted, location, message)
                .with_label(label)
                .with_help(help),
        );
    };
    if let Protocol::NotExecuted(name) = connector.protocol() {
        warn(
            at(JsonPointer::root().field("protocolType")),
            format!("protocol `{name}` is accepted but never executed: the engine runs HTTP only"),
            "`engine run` refuses this connector",
            "describe the vendor's HTTP API with `http` resources, or run it on its platform",
        );
    }
    let key_index = |prefix: &str| {
        connector
            .configuration()
            .iter()
            .position(|property| property.key().starts_with(prefix))
    };
    // Event hooks are reported with the connector's hooks.
    let events = key_index("event.").map(|index| {
        JsonPointer::root()
            .field("configuration")
            .index(index)
            .field("key")
    });
    if let Some(pointer) = events {
        warn(
            at(pointer),
            "events (webhooks and polling) are accepted but never executed".to_owned(),
            "no event is received or polled",
            "poll the vendor yourself by running its `API` resources",
        );
    }
    let bulk_flag = ["bulkDownloadEnabled", "bulkUploadEnabled"]
        .into_iter()
        .find(|flag| input.raw.extra.get(*flag) == Some(&Value::Bool(true)));
    let bulk = bulk_flag
        .map(|flag| JsonPointer::root().field(flag))
        .or_else(|| {
            key_index("bulk.").map(|index| {
                JsonPointer::root()
                    .field("configuration")
                    .index(index)
                    .field("key")
            })
        });
    if let Some(pointer) = bulk {
        warn(
            at(pointer),
            "bulk upload and download are accepted but never executed".to_owned(),
            "no bulk job is started",
            "run the `API` resources record by record",
        );
    }
}

/// The `converter:NAME` vendor names `engine run` executes (`engine_runtime::ceql`): the
/// caller's CEQL `where` becomes query parameters or an `OData` `$filter`.
pub(crate) const EXECUTED_CONVERTERS: &[&str] =
    &["toQueryParameters", "toODataFilter", "toODataV3Filter"];

/// The warning for a parameter with a `converter` field or a `converter:` vendor name the
/// engine does not execute ([`EXECUTED_CONVERTERS`]), with the converter's name.
fn converter(
    input: &Input<'_>,
    parameter: &RawParameter,
    pointer: &JsonPointer,
) -> Option<(Diagnostic, String)> {
    let from_vendor_name = parameter
        .vendor_name
        .as_deref()
        .and_then(|name| name.strip_prefix("converter:"));
    if from_vendor_name.is_some_and(|name| EXECUTED_CONVERTERS.contains(&name.trim())) {
        return None;
    }
    let (converter, field) = match parameter.extra.get("converter") {
        Some(Value::String(converter)) => (converter.as_str(), "converter"),
        Some(_) => ("", "converter"),
        None => match from_vendor_name {
            Some(converter) => (converter, "vendorName"),
            None => return None,
        },
    };
    let what = if converter.is_empty() {
        "a converter".to_owned()
    } else {
        format!("converter `{converter}`")
    };
    let diagnostic = Diagnostic::new(
        Code::NotExecuted,
        Location::new(input.file, pointer.field(field)),
        format!(
            "parameter `{}` uses {what}, which the engine does not execute",
            parameter.name
        ),
    )
    .with_label(if field == "vendorName" {
        "not executed: the parameter is not sent (a warning at run)"
    } else {
        "not executed: the value is sent unconverted"
    })
    .with_help(format!(
        "the engine executes {}; else map the value with plain parameters, or remove the parameter",
        EXECUTED_CONVERTERS
            .iter()
            .map(|name| format!("`converter:{name}`"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    Some((diagnostic, converter.trim().to_owned()))
}

fn them(hooks: &[Value]) -> &'static str {
    if hooks.len() == 1 { "it" } else { "them" }
}

/// The types of `hooks` (`preRequest`, `postRequest`...), each once, in order.
fn hook_kinds(hooks: &[Value]) -> Vec<String> {
    let mut kinds: Vec<String> = Vec::new();
    for kind in hooks
        .iter()
        .filter_map(|hook| hook.get("type").and_then(Value::as_str))
    {
        if !kinds.iter().any(|known| known == kind) {
            kinds.push(kind.to_owned());
        }
    }
    kinds
}

/// `1 JavaScript hook (`preRequest`)`, `2 JavaScript hooks (`preRequest`, `postRequest`)`.
fn describe_hooks(hooks: &[Value]) -> String {
    let kinds = hook_kinds(hooks);
    let count = match hooks.len() {
        1 => "1 JavaScript hook".to_owned(),
        count => format!("{count} JavaScript hooks"),
    };
    if kinds.is_empty() {
        count
    } else {
        let kinds: Vec<String> = kinds.iter().map(|kind| format!("`{kind}`")).collect();
        format!("{count} ({})", kinds.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use crate::check::test_support::with_code;
    use crate::diagnostic::Code;

    #[test]
    fn a_hook_without_its_script_is_a_difference_said_at_run() {
        let text = r#"{"hooks": [{"type": "preRequest", "body": null}], "resources": [
            {"name": "a", "type": "api", "hooks": [{"type": "postRequest", "contextParams": "configuration"}, {"type": "event"}]},
            {"name": "b", "type": "api", "hooks": [{"type": "preRequest", "body": ""}]}]}"#;
        let found = with_code(text, Code::NotExecuted);
        let said: Vec<(&str, &str)> = found
            .iter()
            .map(|d| (d.location.pointer.as_str(), d.message.as_str()))
            .collect();
        assert_eq!(
            said,
            [
                (
                    "/hooks/0",
                    "the connector's `preRequest` hook has no script in this export (no `body`): the platform ran one, the engine runs nothing"
                ),
                (
                    "/resources/0/hooks",
                    "resource `a` has 1 JavaScript hook (`event`); the engine accepts but never executes it"
                ),
                (
                    "/resources/0/hooks/0",
                    "resource `a`'s `postRequest` hook has no script in this export (no `body`): the platform ran one, the engine runs nothing"
                ),
            ]
        );
    }

    #[test]
    fn hooks_warn_once_per_site() {
        let text = r#"{"hooks": [{"type": "event", "body": "x"}], "resources": [
            {"name": "a", "type": "api", "hooks": [{"type": "preRequest", "body": "done()"}, {"type": "event"}, {"type": "event"}]},
            {"name": "b", "type": "api", "hooks": [{"type": "preRequest", "body": "done()"}, {"type": "postRequest", "body": "done()"}]},
            {"name": "c", "type": "onDeleteWebhook", "hooks": [{"type": "preRequest", "body": "done()"}]}]}"#;
        let found = with_code(text, Code::NotExecuted);
        let messages: Vec<&str> = found.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "the connector has 1 JavaScript hook (`event`); the engine accepts but never executes it",
                "resource `a` has 2 JavaScript hooks (`event`); the engine accepts but never executes them",
                "resource `c` of type `ON DELETE WEBHOOK` and its 1 JavaScript hook (`preRequest`) are accepted but never executed",
            ]
        );
    }

    #[test]
    fn converters_warn_once_per_parameter() {
        let text = r#"{"resources": [{"type": "api", "parameters": [
            {"name": "where", "type": "query", "vendorName": "converter:toQueryParameters", "vendorType": "query", "converter": "toQueryParameters"},
            {"name": "q", "type": "query", "vendorName": "converter:toQuery"}]}]}"#;
        // `toQueryParameters` is executed: only the converter the engine lacks warns.
        let found = with_code(text, Code::NotExecuted);
        assert_eq!(found.len(), 1);
        assert_eq!(
            found[0].location.pointer.as_str(),
            "/resources/0/parameters/1/vendorName"
        );
    }

    #[test]
    fn a_large_export_warns_once_per_site_and_feature() {
        // The shape of a real export: the connector's hooks, resources with hooks (one of a
        // never-run type), pagination on several resources, events and bulk settings. Only
        // `event` hooks warn: `preRequest` and `postRequest` hooks run, and pagination is
        // followed (`engine run --pages`).
        let text = r#"{"hooks": [{"type": "event"}], "bulkDownloadEnabled": true,
            "configuration": [{"key": "event.poller.refresh_interval"}, {"key": "bulk.query.field_name"}],
            "resources": [
              {"name": "a", "type": "api", "paginationType": "VENDOR_SUPPORTED", "hooks": [{"type": "postRequest", "body": "done()"}, {"type": "event"}]},
              {"name": "b", "type": "api", "nextPageKey": "next", "hooks": [{"type": "preRequest", "body": "done()"}]},
              {"name": "c", "type": "onProvisionWebhook", "hooks": [{"type": "preRequest", "body": "done()"}]},
              {"name": "d", "type": "api", "paginationType": "VENDOR_SUPPORTED"}]}"#;
        let found = with_code(text, Code::NotExecuted);
        let pointers: Vec<&str> = found.iter().map(|d| d.location.pointer.as_str()).collect();
        assert_eq!(
            pointers,
            [
                "/hooks",
                "/bulkDownloadEnabled",
                "/configuration/0/key",
                "/resources/0/hooks",
                "/resources/2/type",
            ]
        );
    }
}
