//! `nextResource` chains, on the model (targets are resolved while it is built, E0302):
//! - E0303: a chain that loops back;
//! - E0304: a chain longer than [`MAX_CHAIN`] hops.

use crate::check::Input;
use crate::diagnostic::{Code, Diagnostic};
use crate::source::Location;

/// The most `nextResource` hops one run may take.
pub const MAX_CHAIN: usize = 5;

pub(super) fn check(input: &Input<'_>, diagnostics: &mut Vec<Diagnostic>) {
    let resources = input.connector.resources();
    let next: Vec<Option<usize>> = resources
        .iter()
        .map(|resource| {
            input
                .connector
                .next_of(resource)
                .map(crate::model::Resource::index)
        })
        .collect();
    let mut has_predecessor = vec![false; resources.len()];
    for &following in next.iter().flatten() {
        has_predecessor[following] = true;
    }
    // Each resource leads to at most one other, so every node is walked once: `reach[i]` is the
    // number of distinct resources a chain from `i` visits, `i` included.
    let mut reach: Vec<usize> = vec![0; resources.len()];
    let mut on_path = vec![false; resources.len()];
    for start in 0..resources.len() {
        if reach[start] > 0 {
            continue;
        }
        let mut path = vec![start];
        on_path[start] = true;
        let mut current = start;
        // Follow the chain until it ends, reaches a resource already measured, or loops.
        let mut tail = 0;
        while let Some(following) = next[current] {
            if on_path[following] {
                let entry = path
                    .iter()
                    .position(|&member| member == following)
                    .expect("on the path");
                let cycle = &path[entry..];
                for &member in cycle {
                    reach[member] = cycle.len();
                }
                report_cycle(input, cycle, diagnostics);
                tail = cycle.len();
                path.truncate(entry);
                break;
            }
            if reach[following] > 0 {
                tail = reach[following];
                break;
            }
            path.push(following);
            on_path[following] = true;
            current = following;
        }
        for &member in path.iter().rev() {
            tail += 1;
            reach[member] = tail;
        }
        for member in path {
            on_path[member] = false;
        }
    }
    for (start, &reach) in reach.iter().enumerate() {
        let hops = reach.saturating_sub(1);
        if hops > MAX_CHAIN && !has_predecessor[start] {
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

/// Reports a cycle once, at its first member in file order, following the chain from there.
fn report_cycle(input: &Input<'_>, cycle: &[usize], diagnostics: &mut Vec<Diagnostic>) {
    let resources = input.connector.resources();
    let first = (0..cycle.len())
        .min_by_key(|&position| cycle[position])
        .unwrap_or(0);
    let path: Vec<String> = cycle[first..]
        .iter()
        .chain(&cycle[..first])
        .chain(std::iter::once(&cycle[first]))
        .map(|&member| resources[member].display_name())
        .collect();
    diagnostics.push(
        Diagnostic::new(
            Code::ChainCycle,
            location(input, cycle[first]),
            format!("`nextResource` chain loops: {}", path.join(" -> ")),
        )
        .with_label("the chain comes back here")
        .with_help("remove `nextResource` from the last resource of the chain"),
    );
}

fn location(input: &Input<'_>, index: usize) -> Location {
    let resource = &input.connector.resources()[index];
    Location::new(
        input.file,
        resource.location().pointer.field("nextResource"),
    )
}
