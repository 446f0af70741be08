//! Never a silent difference: what a run will not do as the platform did. The connector keeps
//! what `engine validate` reports as W0501 about hooks and converters
//! ([`engine_spec::NotExecuted`]); a run says the ones of the resources it executes
//! ([`crate::Event::NotExecuted`]), and a strict run refuses to start over them.
//!
//! [`executed`] is the one place that says which hooks and converters the engine runs: a part
//! it runs is no difference.

use engine_spec::kinds::ResourceType;
use engine_spec::{Connector, NotExecuted, NotExecutedKind, Resource};

use crate::auth::Scheme;

/// True when the engine runs `what` as the platform did: `preRequest` and `postRequest` hooks
/// run (`crate::hooks`), `event` hooks do not (they belong to webhooks); the converters the
/// connector keeps here are the ones the engine lacks (the executed ones are not recorded).
pub fn executed(what: &NotExecutedKind) -> bool {
    match what {
        NotExecutedKind::Hooks(kinds) => kinds
            .iter()
            .all(|kind| kind == "preRequest" || kind == "postRequest"),
        NotExecutedKind::Converter(_) | NotExecutedKind::ScriptMissing(_) => false,
    }
}

/// True when `difference` changes the request itself (a `preRequest` hook, a converter): a
/// lifecycle resource with one is not sent half-built.
pub fn changes_the_request(difference: &NotExecuted) -> bool {
    match &difference.what {
        NotExecutedKind::Hooks(kinds) => kinds.iter().any(|kind| kind == "preRequest"),
        NotExecutedKind::Converter(_) => true,
        NotExecutedKind::ScriptMissing(kind) => kind == "preRequest",
    }
}

/// The differences of the connector itself (its hooks and global parameters: every request)
/// and of the resources at `indexes`, in file order; the parts the engine runs are left out.
pub fn differences<'c>(connector: &'c Connector, indexes: &[usize]) -> Vec<&'c NotExecuted> {
    connector
        .not_executed()
        .iter()
        .filter(|difference| {
            difference
                .resource
                .is_none_or(|index| indexes.contains(&index))
        })
        .filter(|difference| !executed(&difference.what))
        .collect()
}

/// The differences of `resource` alone (not the connector's own).
pub(crate) fn of_resource<'c>(
    connector: &'c Connector,
    resource: &Resource,
) -> impl Iterator<Item = &'c NotExecuted> {
    let index = resource.index();
    connector
        .not_executed()
        .iter()
        .filter(move |difference| difference.resource == Some(index))
        .filter(|difference| !executed(&difference.what))
}

/// Every resource a run of `resource` may execute, by index: it and its `nextResource` chain,
/// and, for an `API` (or `ON DELETE`) resource of a connector that obtains tokens, the lifecycle
/// resources that may obtain or refresh the token first, with their chains. For a
/// `PROVISION AUTH VALIDATION`, the whole provisioning.
pub fn plan(connector: &Connector, resource: &Resource) -> Vec<usize> {
    let mut indexes = Vec::new();
    let add_chain = |start: &Resource, indexes: &mut Vec<usize>| {
        let mut current = Some(start);
        while let Some(resource) = current {
            if indexes.contains(&resource.index()) {
                break;
            }
            indexes.push(resource.index());
            current = connector.next_of(resource);
        }
    };
    add_chain(resource, &mut indexes);
    let lifecycle: &[ResourceType] = match resource.kind() {
        kind if kind.is_api() || kind == ResourceType::OnDelete => {
            if Scheme::of(connector).obtains_tokens() {
                &[
                    ResourceType::ProvisionAuthValidation,
                    ResourceType::OnProvision,
                    ResourceType::OnRefresh,
                    ResourceType::OauthOnTokenRefresh,
                ]
            } else {
                &[]
            }
        }
        ResourceType::ProvisionAuthValidation => &[
            ResourceType::ProvisionAuthValidation,
            ResourceType::OnProvision,
        ],
        _ => &[],
    };
    for other in connector.resources() {
        if lifecycle.contains(&other.kind()) {
            add_chain(other, &mut indexes);
        }
    }
    indexes.sort_unstable();
    indexes
}
