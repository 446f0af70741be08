//! - W0504: a `{placeholder}` of `vendorPath` that nothing fills;
//! - W0511: a resource's `path` parameter whose `vendorName` is no placeholder of its `vendorPath`
//!   (nor of the default `base.url`): its value goes nowhere.
//!
//! A placeholder is filled by a `path` parameter whose `vendorName` names it (the resource's or
//! a global one), or, as element.json did, by the caller's path value of the same name: a
//! `{variable}` of the resource's own `path`, or `--param NAME=VALUE`. One that no parameter and
//! no path variable names can only come from `--param`; the run stops (exit 3) when it is missing.
//! Query strings inside `vendorPath` are supported: their pairs are merged with `query`
//! parameters and their placeholders filled and encoded like the path's.

use crate::check::Input;
use crate::diagnostic::{Code, Diagnostic};
use crate::kinds::{ParameterKind, Source, VendorKind};
use crate::source::Location;
use crate::suggest;

pub(super) fn check(input: &Input<'_>, diagnostics: &mut Vec<Diagnostic>) {
    let connector = input.connector;
    let base_url = connector
        .property("base.url")
        .and_then(crate::ConfigProperty::default_value)
        .unwrap_or_default();
    for resource in connector.resources() {
        if resource.kind().is_never_executed() {
            continue;
        }
        let placeholders = resource.vendor_path().placeholders();
        for parameter in resource.parameters() {
            let name = parameter.vendor_name();
            let used = placeholders
                .iter()
                .any(|placeholder| placeholder.name == name)
                || base_url.contains(&format!("{{{name}}}"));
            if parameter.source() == Source::Request
                && parameter.vendor_kind() == VendorKind::Path
                && !used
            {
                diagnostics.push(
                    Diagnostic::new(
                        Code::UnusedPathParameter,
                        Location::new(input.file, parameter.location().pointer.field("vendorName")),
                        format!("`path` parameter `{name}` fills no placeholder"),
                    )
                    .with_label("no `{...}` of this name in `vendorPath` or `base.url`")
                    .with_help_opt(
                        suggest::hint(name, placeholders.iter().map(|placeholder| placeholder.name.as_str()))
                            .or_else(|| Some(format!("write `{{{name}}}` where the value goes in `vendorPath`, or remove the parameter"))),
                    ),
                );
            }
        }
        if placeholders.is_empty() {
            continue;
        }
        let parameters: Vec<_> = connector
            .global_parameters()
            .iter()
            .chain(resource.parameters())
            .filter(|parameter| parameter.source() == Source::Request)
            .collect();
        let mut fillers: Vec<&str> = parameters
            .iter()
            .filter_map(
                |parameter| match (parameter.vendor_kind(), parameter.kind()) {
                    (VendorKind::Path, _) => Some(parameter.vendor_name()),
                    (_, ParameterKind::Path) => Some(parameter.name()),
                    _ => None,
                },
            )
            .collect();
        fillers.extend(path_variables(resource.path().unwrap_or_default()));
        for placeholder in placeholders {
            if fillers.contains(&placeholder.name.as_str()) {
                continue;
            }
            let name = &placeholder.name;
            diagnostics.push(
                Diagnostic::new(
                    Code::UnfilledPlaceholder,
                    Location::new(input.file, resource.location().pointer.field("vendorPath"))
                        .narrow(placeholder.start - 1, placeholder.end + 1),
                    format!("nothing fills `{{{name}}}`"),
                )
                .with_label("no `path` parameter and no path variable has this name")
                .with_help_opt(
                    suggest::hint(name, fillers.iter().copied()).or_else(|| {
                        Some(format!(
                            "callers must pass `--param {name}=VALUE`; or add a parameter with \
                         `\"type\": \"path\"` and `\"vendorName\": \"{name}\"`"
                        ))
                    }),
                ),
            );
        }
    }
}

/// The `{variable}` names of a resource's own `path`.
fn path_variables(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter_map(|segment| {
        segment
            .strip_prefix('{')
            .and_then(|segment| segment.strip_suffix('}'))
    })
}

#[cfg(test)]
mod tests {
    use crate::check::test_support::with_code;
    use crate::diagnostic::Code;

    #[test]
    fn placeholders_bind_by_name_to_path_variables_and_global_parameters() {
        // `{id}` is the caller's path value; `{tenant}` a global `path` parameter without
        // `vendorType` (its default is decided once, in the model).
        let text = r#"{"parameters": [{"name": "tenant", "type": "path"}],
            "resources": [{"type": "api", "method": "GET", "path": "/hubs/crm/contacts/{id}",
                           "vendorPath": "/{tenant}/contacts/{id}?fields={fields}"}]}"#;
        let found = with_code(text, Code::UnfilledPlaceholder);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].message, "nothing fills `{fields}`");
        assert_eq!(found[0].location.inner, Some((31, 39)));
    }

    #[test]
    fn never_executed_resources_are_not_checked() {
        let text =
            r#"{"resources": [{"type": "onDeleteWebhook", "vendorPath": "/hooks/{hookId}"}]}"#;
        assert!(with_code(text, Code::UnfilledPlaceholder).is_empty());
    }
}
