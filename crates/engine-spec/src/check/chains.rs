//! `nextResource` chains, on the model (targets are resolved while it is built, E0302):
//! - E0303: a chain that loops back;
//! - E0304: a chain longer than [`MAX_CHAIN`] hops.

use crate::check::Input;
use crate::diagnostic::{Code, Diagnostic};
use crate::source::Location;
use crate::validate::MAX_CHAIN;

pub(super) fn check(input: &Input<'_>, diagnostics: &mut Vec<Diagnostic>) {
    let resources = input.connector.resources();
    let next = |index: usize| {
        input
            .connector
            .next_of(&resources[index])
            .map(crate::model::Resource::index)
    };
    for start in 0..resources.len() {
        let mut seen = vec![start];
        let mut current = start;
        while let Some(following) = next(current) {
            if seen.contains(&following) {
                // Report a cycle once, at its first member in file order.
                if following == start && seen.iter().all(|&member| member >= start) {
                    let path: Vec<String> = seen
                        .iter()
                        .chain(std::iter::once(&start))
                        .map(|&member| resources[member].display_name())
                        .collect();
                    diagnostics.push(
                        Diagnostic::new(
                            Code::ChainCycle,
                            location(input, start),
                            format!("`nextResource` chain loops: {}", path.join(" -> ")),
                        )
                        .with_label("the chain comes back here")
                        .with_help("remove `nextResource` from the last resource of the chain"),
                    );
                }
                break;
            }
            seen.push(following);
            current = following;
        }
        let hops = seen.len() - 1;
        let is_head = !(0..resources.len()).any(|index| next(index) == Some(start));
        if hops > MAX_CHAIN && is_head {
            diagnostics.push(
                Diagnostic::new(
                    Code::ChainTooLong,
                    location(input, start),
                    format!(
                        "`nextResource` chain has {hops} steps; at most {MAX_CHAIN} are allowed"
                    ),
                )
                .with_label("the chain starts here")
                .with_help("split the chain, or fold steps into one resource"),
            );
        }
    }
}

fn location(input: &Input<'_>, index: usize) -> Location {
    let resource = &input.connector.resources()[index];
    Location::new(
        input.file,
        resource.location().pointer.field("nextResource"),
    )
}
