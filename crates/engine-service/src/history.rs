//! Refresh history: what the runtime reports of each lifecycle step ([`RefreshReport`]), kept
//! per instance in its store (an instance file's: a sidecar JSON-lines file next to it).

use std::sync::{Mutex, PoisonError};

use engine_runtime::{
    Event, Observer, RefreshPolicy, RefreshReason, RefreshReport, RunError, RunRequest,
};
use engine_spec::kinds::ResourceType;
use engine_store::InstanceStore;
use serde_json::{Value, json};

use crate::error::Warning;
pub use crate::status::DEFAULT_KEEP;

/// The longest vendor body a history entry keeps, in characters.
const MAX_RESPONSE: usize = 2000;

/// Why a refresh ran, as the history records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A run, on its own: expiry, a missing token, or the vendor's 401.
    Run,
    /// A scheduled refresh ([`crate::refresh`]).
    Schedule,
    /// A refresh a caller asked for, whatever the expiry (a server's forced refresh).
    Manual,
    /// A sign-in through a browser: the exchange of its code ([`crate::authorize`]).
    SignIn,
}

/// Passes every event on to `inner`, and keeps the [`RefreshReport`]s.
pub struct Recorder<'a> {
    inner: &'a dyn Observer,
    reports: Mutex<Vec<RefreshReport>>,
    superseded: std::sync::atomic::AtomicBool,
}

/// The number of reports kept: the observer and the reports are not shown.
impl std::fmt::Debug for Recorder<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kept = self
            .reports
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        formatter
            .debug_struct("Recorder")
            .field("reports", &kept)
            .finish_non_exhaustive()
    }
}

impl<'a> Recorder<'a> {
    /// A recorder that passes events on to `inner`.
    pub fn new(inner: &'a dyn Observer) -> Self {
        Self {
            inner,
            reports: Mutex::new(Vec::new()),
            superseded: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// True when a write of the run met newer tokens another process stored meanwhile
    /// ([`Event::RefreshedElsewhere`]): the run went on with those, and the tokens of its own
    /// refresh were discarded.
    pub fn superseded(&self) -> bool {
        self.superseded.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The reports kept so far, emptied.
    pub fn take(&self) -> Vec<RefreshReport> {
        std::mem::take(&mut *self.reports.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Observer for Recorder<'_> {
    fn event(&self, event: &Event) {
        match event {
            Event::RefreshFinished(report) => self
                .reports
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(report.clone()),
            Event::RefreshedElsewhere => self
                .superseded
                .store(true, std::sync::atomic::Ordering::Relaxed),
            _ => {}
        }
        // Every event, whatever the verbosity (the inner observer decides): warnings are shown,
        // and a run keeps the skipped parameters for a refusal's error.
        self.inner.event(event);
    }

    /// As `inner`: the reports come whatever this says, and the events it gates (each request's
    /// redacted URL and timing) are only passed on.
    fn enabled(&self) -> bool {
        self.inner.enabled()
    }
}

/// One history entry: when, why (`schedule`, `expiry`, `401`, `manual`, `sign-in`), which step or retried
/// resource, the status, how long, the outcome (`ok`; `rejected` for a 4xx answer other than
/// 429, which re-authentication fixes; `failed` otherwise), the error and the vendor's body
/// (both masked by the runtime), and token fingerprints (never a token).
pub fn entry_of(report: &RefreshReport, trigger: Trigger) -> Value {
    let trigger = match (trigger, &report.reason) {
        (Trigger::Schedule, _) => "schedule",
        (Trigger::SignIn, _) => "sign-in",
        (Trigger::Manual, _) | (Trigger::Run, RefreshReason::Requested) => "manual",
        (Trigger::Run, RefreshReason::Rejected { .. }) => "401",
        (Trigger::Run, _) => "expiry",
    };
    let outcome = match (&report.error, report.status) {
        (None, _) => "ok",
        (Some(_), Some(status)) if (400..500).contains(&status) && status != 429 => "rejected",
        (Some(_), _) => "failed",
    };
    let response = report.response.as_deref().map(|body| {
        if body.chars().count() > MAX_RESPONSE {
            let mut cut: String = body.chars().take(MAX_RESPONSE).collect();
            cut.push('…');
            cut
        } else {
            body.to_owned()
        }
    });
    json!({
        "at": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "trigger": trigger,
        "resource": report.by,
        "retry": report.retry,
        "status": report.status,
        "duration_ms": u64::try_from(report.elapsed.as_millis()).unwrap_or(u64::MAX),
        "outcome": outcome,
        "error": report.error,
        "response": response,
        "old_token": report.old_token,
        "new_token": report.new_token,
    })
}

/// The history entries of `reports` ([`entry_of`]). When the run was `superseded`
/// ([`Recorder::superseded`]: another process stored newer tokens before its write), the
/// outcome of each successful step is `superseded`: the vendor answered, its tokens were
/// discarded.
pub fn entries_of(reports: &[RefreshReport], trigger: Trigger, superseded: bool) -> Vec<Value> {
    reports
        .iter()
        .map(|report| {
            let mut entry = entry_of(report, trigger);
            if superseded && report.error.is_none() && !report.retry {
                entry["outcome"] = "superseded".into();
            }
            entry
        })
        .collect()
}

/// Appends the entries of `reports` ([`entries_of`]) to the history of `instance`, keeping the
/// last `keep`. Returns a [`Warning`] for each entry not written: a history never fails its
/// refresh.
pub async fn record(
    store: &dyn InstanceStore,
    instance: &str,
    reports: &[RefreshReport],
    superseded: bool,
    trigger: Trigger,
    keep: usize,
) -> Vec<Warning> {
    let mut warnings = Vec::new();
    for entry in entries_of(reports, trigger, superseded) {
        if let Err(error) = store.append_history(instance, entry, keep).await {
            warnings.push(Warning::HistoryNotRecorded {
                instance: instance.to_owned(),
                error,
            });
        }
    }
    warnings
}

/// After a run: records the run's lifecycle steps in the instance's history, and clears its
/// rejection count and `needs-reauth` mark when the run obtained a token: a refresh or a
/// provisioning the engine decided on, or a `PROVISION AUTH VALIDATION` or `ON REFRESH` resource
/// the caller ran. Publishes the events of the run's refreshes ([`crate::events`]): an instance
/// that had failed recovered; a refresh of its own failed. A `superseded` run
/// ([`Recorder::superseded`]) went on with another process's tokens: its own refresh is
/// recorded as such and renewed nothing. `failed` is the run's error, when it failed.
///
/// With `policy` (the scheduler's [`RefreshPolicy`] and the time, epoch ms), a refresh of the
/// run's own that the vendor rejected or that failed transiently advances the instance's
/// failure state exactly as a scheduled refresh does (`retrying` after a backoff, with a
/// cooldown that answers the next callers at once; `needs-reauth` after the last rejection
/// allowed): the change goes into the history entry of the failed step and is published as its
/// event. Without it (a single `engine run`), the failure is recorded and published (at most one
/// event per instance per [`crate::events::CALL_FAILURE_QUIET`]) and the schedule is left alone.
///
/// Returns what could not be written, as warnings.
pub async fn after_run(
    store: &dyn InstanceStore,
    request: &RunRequest<'_>,
    reports: &[RefreshReport],
    superseded: bool,
    failed: Option<&RunError>,
    policy: Option<(&RefreshPolicy, u64)>,
) -> Vec<Warning> {
    let succeeded = failed.is_none();
    let refreshed = !superseded
        && reports.iter().any(|report| {
            report.error.is_none() && !report.retry && report.reason != RefreshReason::Requested
        });
    let renewed = refreshed
        || request
            .connector
            .find_resource(request.selector)
            .is_some_and(|resource| {
                matches!(
                    resource.kind(),
                    ResourceType::ProvisionAuthValidation | ResourceType::OnRefresh
                )
            });
    // The runtime's write of a new token cleared the failure state it read: whether the
    // instance had failed is its history's last word before this run.
    let had_failed = if succeeded && renewed {
        crate::events::failed_before(store, request.instance).await
    } else {
        None
    };
    let mut warnings = Vec::new();
    let failed_refresh = reports
        .iter()
        .rev()
        .find(|report| report.error.is_some() && !report.retry);
    // A refresh of the run's own failed: the same state machine as the scheduler's.
    let attempt = failed.and_then(crate::refresh::attempt_of);
    let transition = match (policy, failed_refresh, attempt) {
        (Some((policy, now_ms)), Some(_), Some(attempt)) => {
            match crate::refresh::transition(
                now_ms,
                store,
                request.connector,
                request.instance,
                attempt,
                &engine_store::Schedule::default(),
                policy,
            )
            .await
            {
                Ok(transition) => transition,
                Err(error) => {
                    warnings.push(Warning::FailureNotRecorded {
                        instance: request.instance.to_owned(),
                        error,
                    });
                    None
                }
            }
        }
        _ => None,
    };
    let mut entries = entries_of(reports, Trigger::Run, superseded);
    if let Some(transition) = &transition
        && let Some(last) = entries.last_mut()
    {
        last["transition"] = transition.to_value();
    }
    for entry in entries {
        if let Err(error) = store
            .append_history(request.instance, entry, DEFAULT_KEEP)
            .await
        {
            warnings.push(Warning::HistoryNotRecorded {
                instance: request.instance.to_owned(),
                error,
            });
        }
    }
    if succeeded && renewed {
        let cleared = match crate::store::clear_failures(store, request.instance).await {
            Ok(cleared) => cleared,
            Err(warning) => {
                warnings.push(warning);
                None
            }
        };
        // An entry of a successful step is already the history's last word.
        let mark = !reports.iter().any(|report| report.error.is_none());
        if let Some(from) = cleared.or(had_failed)
            && let Err(warning) =
                crate::events::publish_recovered(store, request.instance, from, "call", mark).await
        {
            warnings.push(warning);
        }
    }
    if let Some(failed_report) = failed_refresh {
        let now_ms = u64::try_from(jiff::Timestamp::now().as_millisecond()).unwrap_or(0);
        // A change of the policy is an event of its own kind, paced by the backoff.
        let published = if let Some(transition) = transition {
            if let Some(kind) = crate::events::EventType::of(&transition) {
                let event = crate::events::NewEvent::new(
                    kind,
                    request.instance,
                    "call",
                    Some(transition),
                    std::slice::from_ref(failed_report),
                    failed,
                );
                crate::events::publish(store, &event, policy.map_or(now_ms, |(_, at)| at))
                    .await
                    .map(|_| ())
            } else {
                Ok(())
            }
        } else {
            let event = crate::events::NewEvent::new(
                crate::events::EventType::RefreshFailed,
                request.instance,
                "call",
                None,
                std::slice::from_ref(failed_report),
                None,
            );
            crate::events::publish_quietly(store, &event, now_ms)
                .await
                .map(|_| ())
        };
        if let Err(error) = published {
            warnings.push(Warning::EventNotPublished {
                instance: request.instance.to_owned(),
                error,
            });
        }
    }
    warnings
}

#[cfg(test)]
mod tests {
    use engine_runtime::{Event, NoObserver, Observer};

    use super::Recorder;

    /// Listens to everything.
    struct Listening;

    impl Observer for Listening {
        fn event(&self, _: &Event) {}
    }

    #[test]
    fn a_recorder_asks_for_the_costly_events_only_when_its_inner_observer_does() {
        // A server's call (nothing printed) builds no redacted URL per request.
        assert!(!Recorder::new(&NoObserver).enabled());
        assert!(Recorder::new(&Listening).enabled());
    }
}
