//! Following pages: a run, then the runs of its next pages as the caller allows, each with the
//! cursor the one before gave ([`crate::pagination`] reads the cursors).

use std::collections::HashSet;

use engine_store::InstanceStore;
use serde_json::Value;

use crate::engine::{Engine, RunRequest};
use crate::observer::Observer;
use crate::pagination::NextPage;
use crate::redact::Redactor;
use crate::request::Inputs;
use crate::run_error::RunError;

/// The most pages [`Pages::All`] follows: a vendor that never stops is cut here, with a word.
pub const MAX_PAGES: usize = 100;

/// How many pages a run follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pages {
    /// At most this many (1: the page asked for only).
    UpTo(usize),
    /// Until the vendor gives no next page, at most [`MAX_PAGES`].
    All,
}

/// Why following stopped before the vendor ran out of pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageStop {
    /// The vendor gave a cursor already followed: following it would loop.
    Repeated,
    /// [`Pages::All`] reached [`MAX_PAGES`].
    Capped,
    /// The resource has no input to ask for the next page with.
    NotFollowable,
}

/// The pages of a run.
#[derive(Debug)]
pub struct PagedOutput {
    /// The last response's status.
    pub status: u16,
    /// Each page's body after `rootKey`, secrets masked, in order.
    pub pages: Vec<Value>,
    /// How to ask for the page after the last one, when the vendor gave one.
    pub next_page: Option<NextPage>,
    /// Why following stopped early, if it did.
    pub stopped: Option<PageStop>,
    /// The output parameters of the pages that their bodies (lists) have no field for, by name,
    /// in order ([`crate::RunOutput::outputs`]).
    pub outputs: Vec<(String, Value)>,
    /// Masks every secret the runs know of.
    pub redactor: Redactor,
}

/// Runs `request`, then its next pages as `pages` allows: each page is a run of its own (fresh
/// token, lock, history), with the cursor of the previous one as its input.
///
/// Fails as [`Engine::run`] does, on the first page that fails.
pub async fn run_pages(
    engine: &Engine,
    request: &RunRequest<'_>,
    store: &dyn InstanceStore,
    observer: &dyn Observer,
    pages: Pages,
) -> Result<PagedOutput, RunError> {
    let limit = match pages {
        Pages::UpTo(limit) => limit.max(1),
        Pages::All => MAX_PAGES,
    };
    let mut inputs: Inputs = request.inputs.clone();
    let mut seen: HashSet<String> = HashSet::new();
    let mut bodies = Vec::new();
    let mut outputs = Vec::new();
    loop {
        let page = RunRequest {
            inputs: &inputs,
            ..*request
        };
        let output = engine.run(&page, store, observer).await?;
        bodies.push(output.body.into_value());
        outputs.extend(output.outputs);
        let stopped = match &output.next_page {
            None => None,
            Some(_) if bodies.len() >= limit => (pages == Pages::All).then_some(PageStop::Capped),
            Some(next) if !next.followable => Some(PageStop::NotFollowable),
            Some(next) if !seen.insert(next.value.clone()) => Some(PageStop::Repeated),
            Some(next) => {
                inputs.params.retain(|(name, _)| *name != next.input);
                inputs.params.push((next.input.clone(), next.value.clone()));
                continue;
            }
        };
        return Ok(PagedOutput {
            status: output.status,
            pages: bodies,
            next_page: output.next_page,
            stopped,
            outputs,
            redactor: output.redactor,
        });
    }
}
