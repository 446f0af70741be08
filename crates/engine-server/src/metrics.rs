//! The server's metrics, kept in the process and shown at `GET /metrics` in the Prometheus
//! text exposition format (version 0.0.4): refreshes by connector, trigger and outcome, the
//! time of refresh steps, the scheduler's lag, lost leases, resource calls by status class and
//! the instances by status. Labels name connectors (as instances record them), triggers,
//! outcomes, status classes and statuses: never an instance id or a value of an instance.
//!
//! The instances by status come from the scheduler's own pass over the store's listing (it
//! reads every page of summaries to find the next due time, at least every minute): a scrape
//! reads nothing from the store, and the counts are as old as that pass
//! (`engine_instances_counted_timestamp_seconds`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use engine_runtime::RefreshReport;
use engine_service::{InstanceState, Outcome, Refreshed};
use engine_store::Summary;

/// The bounds of the refresh steps' and resource calls' buckets, in seconds.
const CALL_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The bounds of the scheduler lag's buckets, in seconds.
const LAG_BUCKETS: [f64; 10] = [0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];

/// The statuses of `engine_instances`, in the order shown.
const STATES: [InstanceState; 4] = [
    InstanceState::Fresh,
    InstanceState::Expired,
    InstanceState::Unknown,
    InstanceState::NeedsReauth,
];

/// The status classes of `engine_resource_calls_total`, always shown.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The metrics of one server process: shared by the API and the scheduler, shown by
/// [`Metrics::render`].
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// By (connector, trigger, outcome).
    refreshes: BTreeMap<(String, &'static str, &'static str), u64>,
    /// By connector.
    refresh_seconds: BTreeMap<String, Histogram>,
    lag: Option<Histogram>,
    lease_losses: u64,
    /// By status class.
    calls: BTreeMap<&'static str, u64>,
    call_seconds: Option<Histogram>,
    census: Option<Census>,
    /// Webhook deliveries by outcome, when the server delivers them.
    deliveries: Option<BTreeMap<&'static str, u64>>,
}

/// The outcomes of `engine_webhook_deliveries_total`, always shown when the server delivers.
pub(crate) const DELIVERY_OUTCOMES: [&str; 3] = ["delivered", "retried", "failed"];

/// The instances by status, as the scheduler last counted them.
#[derive(Debug, Clone, Default)]
pub struct Census {
    counts: [u64; STATES.len()],
    at_ms: u64,
}

impl Census {
    /// An empty count, taken at `at_ms` (epoch milliseconds).
    pub fn new(at_ms: u64) -> Self {
        Self {
            counts: [0; STATES.len()],
            at_ms,
        }
    }

    /// Counts the instance `summary` describes, by its status at the census's time.
    pub fn count(&mut self, summary: &Summary) {
        let state = InstanceState::of(summary, self.at_ms);
        if let Some(index) = STATES.iter().position(|known| *known == state) {
            self.counts[index] = self.counts[index].saturating_add(1);
        }
    }
}

/// A histogram: a count per bucket (not cumulative), the sum and the count.
#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            buckets: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, value: Duration) {
        let seconds = value.as_secs_f64();
        if let Some(index) = self.bounds.iter().position(|bound| seconds <= *bound) {
            self.buckets[index] = self.buckets[index].saturating_add(1);
        }
        self.sum += seconds;
        self.count = self.count.saturating_add(1);
    }

    /// The `_bucket`, `_sum` and `_count` lines of `name`, with `labels` (already written, with
    /// a trailing comma when there are any) before `le`.
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0_u64;
        for (bound, count) in self.bounds.iter().zip(&self.buckets) {
            cumulative = cumulative.saturating_add(*count);
            let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {}", self.count);
        let plain = labels.trim_end_matches(',');
        let braces = if plain.is_empty() {
            String::new()
        } else {
            format!("{{{plain}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

/// The outcome label of a refresh ([`Outcome`]): `ok`, `rejected` (the vendor refused the
/// credentials) or `failed` (anything else: the vendor unreachable or failing, a connector that
/// does not load...); `None` when nothing was attempted (found fresh, skipped, not provisioned).
fn outcome_label(outcome: &Outcome) -> Option<&'static str> {
    match outcome {
        Outcome::Refreshed(_) => Some("ok"),
        Outcome::Rejected { .. } => Some("rejected"),
        Outcome::Transient(_) | Outcome::Failed(_) => Some("failed"),
        _ => None,
    }
}

/// The outcome label of a refresh step: its history entry's (`ok`; `rejected` for a 4xx
/// answer other than 429; `failed` otherwise).
fn report_outcome(report: &RefreshReport) -> &'static str {
    let entry = engine_service::history::entry_of(report, engine_service::Trigger::Run);
    match entry["outcome"].as_str() {
        Some("ok") => "ok",
        Some("rejected") => "rejected",
        _ => "failed",
    }
}

impl Metrics {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a refresh of engine-service's policy (`trigger`: `schedule` or `manual`): its
    /// outcome, the time of its steps, its lag and a lost lease.
    pub(crate) fn refreshed(&self, refreshed: &Refreshed, trigger: &'static str) {
        let mut inner = self.inner();
        let connector = refreshed.connector.clone().unwrap_or_default();
        if let Some(outcome) = outcome_label(&refreshed.outcome) {
            let count = inner
                .refreshes
                .entry((connector.clone(), trigger, outcome))
                .or_default();
            *count = count.saturating_add(1);
        }
        if !refreshed.vendor_time.is_empty() {
            let histogram = inner
                .refresh_seconds
                .entry(connector)
                .or_insert_with(|| Histogram::new(&CALL_BUCKETS));
            for elapsed in &refreshed.vendor_time {
                histogram.observe(*elapsed);
            }
        }
        if let Some(lag) = refreshed.lag {
            inner
                .lag
                .get_or_insert_with(|| Histogram::new(&LAG_BUCKETS))
                .observe(lag);
        }
        if refreshed.lease_lost {
            inner.lease_losses = inner.lease_losses.saturating_add(1);
        }
    }

    /// Counts the refresh a resource call made on its own (trigger `call`), from the steps the
    /// runtime reported (the retried call aside): one refresh, its outcome the last step's.
    pub(crate) fn call_refreshed(
        &self,
        connector: &str,
        reports: &[RefreshReport],
        superseded: bool,
    ) {
        let steps: Vec<&RefreshReport> = reports.iter().filter(|report| !report.retry).collect();
        let Some(last) = steps.last() else { return };
        let mut inner = self.inner();
        // A refresh another process's newer tokens superseded is not one more refresh; the
        // vendor's time is measured all the same.
        if !superseded {
            let count = inner
                .refreshes
                .entry((connector.to_owned(), "call", report_outcome(last)))
                .or_default();
            *count = count.saturating_add(1);
        }
        let histogram = inner
            .refresh_seconds
            .entry(connector.to_owned())
            .or_insert_with(|| Histogram::new(&CALL_BUCKETS));
        for step in steps {
            histogram.observe(step.elapsed);
        }
    }

    /// Keeps the scheduler's latest count of the instances by status.
    pub fn counted(&self, census: Census) {
        self.inner().census = Some(census);
    }

    /// The scheduler's latest count: each status's label and count, and when it was taken
    /// (epoch milliseconds); `None` before its first pass over the store.
    pub(crate) fn census(&self) -> Option<(Vec<(&'static str, u64)>, u64)> {
        let inner = self.inner();
        let census = inner.census.as_ref()?;
        let counts = STATES
            .iter()
            .zip(census.counts)
            .map(|(state, count)| (state.label(), count))
            .collect();
        Some((counts, census.at_ms))
    }

    /// Counts a resource call's answer and how long it took to serve.
    pub(crate) fn called(&self, status: u16, elapsed: Duration) {
        let class = CLASSES
            .get(usize::from(status / 100).wrapping_sub(1))
            .copied()
            .unwrap_or("5xx");
        let mut inner = self.inner();
        let count = inner.calls.entry(class).or_default();
        *count = count.saturating_add(1);
        inner
            .call_seconds
            .get_or_insert_with(|| Histogram::new(&CALL_BUCKETS))
            .observe(elapsed);
    }

    /// Shows `engine_webhook_deliveries_total` from now on: the server delivers webhooks.
    pub(crate) fn deliver_webhooks(&self) {
        self.inner().deliveries.get_or_insert_with(BTreeMap::new);
    }

    /// Counts an attempt to deliver an event: `delivered`, `retried` (it failed and is tried
    /// again) or `failed` (it failed for the last time).
    pub(crate) fn delivery(&self, outcome: &'static str) {
        let mut inner = self.inner();
        let count = inner
            .deliveries
            .get_or_insert_with(BTreeMap::new)
            .entry(outcome)
            .or_default();
        *count = count.saturating_add(1);
    }

    /// Every series, in the Prometheus text format 0.0.4.
    pub fn render(&self) -> String {
        let inner = self.inner();
        let mut out = String::new();
        family(
            &mut out,
            "engine_refreshes_total",
            "counter",
            "Token refreshes by connector, trigger (schedule, manual, call) and outcome (ok, rejected, failed).",
        );
        for ((connector, trigger, outcome), count) in &inner.refreshes {
            let _ = writeln!(
                out,
                "engine_refreshes_total{{connector=\"{}\",trigger=\"{trigger}\",outcome=\"{outcome}\"}} {count}",
                escape_label(connector)
            );
        }
        family(
            &mut out,
            "engine_refresh_step_seconds",
            "histogram",
            "Time of each refresh step (the call to the vendor), by connector.",
        );
        for (connector, histogram) in &inner.refresh_seconds {
            let labels = format!("connector=\"{}\",", escape_label(connector));
            histogram.render(&mut out, "engine_refresh_step_seconds", &labels);
        }
        family(
            &mut out,
            "engine_scheduler_lag_seconds",
            "histogram",
            "How late each scheduled refresh started after its due time.",
        );
        inner
            .lag
            .clone()
            .unwrap_or_else(|| Histogram::new(&LAG_BUCKETS))
            .render(&mut out, "engine_scheduler_lag_seconds", "");
        family(
            &mut out,
            "engine_lease_losses_total",
            "counter",
            "Claims on due instances found lost while their refresh ran.",
        );
        let _ = writeln!(out, "engine_lease_losses_total {}", inner.lease_losses);
        family(
            &mut out,
            "engine_resource_calls_total",
            "counter",
            "Resource calls (/v1/instances/ID/resources/...) by the status class of the answer.",
        );
        for class in CLASSES {
            let count = inner.calls.get(class).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "engine_resource_calls_total{{class=\"{class}\"}} {count}"
            );
        }
        family(
            &mut out,
            "engine_resource_call_seconds",
            "histogram",
            "Time to answer each resource call, the vendor's included.",
        );
        inner
            .call_seconds
            .clone()
            .unwrap_or_else(|| Histogram::new(&CALL_BUCKETS))
            .render(&mut out, "engine_resource_call_seconds", "");
        if let Some(census) = &inner.census {
            family(
                &mut out,
                "engine_instances",
                "gauge",
                "Instances by status, as the scheduler last counted them.",
            );
            for (state, count) in STATES.iter().zip(census.counts) {
                let _ = writeln!(
                    out,
                    "engine_instances{{status=\"{}\"}} {count}",
                    state.label()
                );
            }
            family(
                &mut out,
                "engine_instances_counted_timestamp_seconds",
                "gauge",
                "When the scheduler last counted the instances (Unix time).",
            );
            let _ = writeln!(
                out,
                "engine_instances_counted_timestamp_seconds {}",
                census.at_ms / 1000
            );
        }
        if let Some(deliveries) = &inner.deliveries {
            family(
                &mut out,
                "engine_webhook_deliveries_total",
                "counter",
                "Attempts to deliver events as webhooks, by outcome (delivered, retried, failed).",
            );
            for outcome in DELIVERY_OUTCOMES {
                let count = deliveries.get(outcome).copied().unwrap_or(0);
                let _ = writeln!(
                    out,
                    "engine_webhook_deliveries_total{{outcome=\"{outcome}\"}} {count}"
                );
            }
        }
        out
    }
}

/// A family's `# HELP` and `# TYPE` lines.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value as the text format wants it: backslash, double quote and line feed escaped.
fn escape_label(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for character in value.chars() {
        match character {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            other => escaped.push(other),
        }
    }
    escaped
}

/// `GET /metrics`: every series, in the text format 0.0.4.
pub(crate) fn metrics(metrics: &Metrics) -> Response {
    let mut response = metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
    }

    #[test]
    fn histograms_are_cumulative_with_sum_and_count() {
        let mut histogram = Histogram::new(&LAG_BUCKETS);
        histogram.observe(Duration::from_millis(300));
        histogram.observe(Duration::from_secs(2));
        histogram.observe(Duration::from_hours(2));
        let mut out = String::new();
        histogram.render(&mut out, "lag", "");
        assert!(out.contains("lag_bucket{le=\"0.1\"} 0\n"), "{out}");
        assert!(out.contains("lag_bucket{le=\"0.5\"} 1\n"), "{out}");
        assert!(out.contains("lag_bucket{le=\"5\"} 2\n"), "{out}");
        assert!(out.contains("lag_bucket{le=\"3600\"} 2\n"), "{out}");
        assert!(out.contains("lag_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("lag_sum 7202.3\n"), "{out}");
        assert!(out.contains("lag_count 3\n"), "{out}");
    }

    /// A refresh step's report: `status` answered, an error unless 2xx, a retried call or not.
    fn report(status: u16, retry: bool) -> RefreshReport {
        RefreshReport {
            reason: engine_runtime::RefreshReason::NoToken,
            by: "oauth2 client_credentials".to_owned(),
            status: Some(status),
            elapsed: Duration::from_millis(20),
            error: (status >= 300).then(|| format!("HTTP {status}")),
            response: None,
            retry,
            old_token: None,
            new_token: None,
        }
    }

    #[test]
    fn a_call_counts_one_refresh_by_its_last_step_the_retried_call_and_a_superseded_one_aside() {
        let metrics = Metrics::default();
        metrics.call_refreshed("demo", &[report(200, false), report(500, true)], false);
        metrics.call_refreshed("demo", &[report(401, false)], false);
        metrics.call_refreshed("demo", &[report(429, false)], false);
        metrics.call_refreshed("demo", &[report(200, true)], false);
        metrics.call_refreshed("demo", &[], false);
        // Superseded: not counted, its vendor time measured.
        metrics.call_refreshed("demo", &[report(200, false)], true);
        let text = metrics.render();
        for line in [
            "engine_refreshes_total{connector=\"demo\",trigger=\"call\",outcome=\"ok\"} 1\n",
            "engine_refreshes_total{connector=\"demo\",trigger=\"call\",outcome=\"rejected\"} 1\n",
            "engine_refreshes_total{connector=\"demo\",trigger=\"call\",outcome=\"failed\"} 1\n",
            "engine_refresh_step_seconds_bucket{connector=\"demo\",le=\"0.01\"} 0\n",
            "engine_refresh_step_seconds_bucket{connector=\"demo\",le=\"0.025\"} 4\n",
            "engine_refresh_step_seconds_count{connector=\"demo\"} 4\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }

    #[test]
    fn resource_calls_are_counted_by_status_class() {
        let metrics = Metrics::default();
        for status in [200, 204, 404, 502, 503, 503] {
            metrics.called(status, Duration::from_millis(1));
        }
        let text = metrics.render();
        for line in [
            "engine_resource_calls_total{class=\"2xx\"} 2\n",
            "engine_resource_calls_total{class=\"3xx\"} 0\n",
            "engine_resource_calls_total{class=\"4xx\"} 1\n",
            "engine_resource_calls_total{class=\"5xx\"} 3\n",
            "engine_resource_call_seconds_count 6\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        // No census yet: the family is not shown rather than shown as zeros.
        assert!(!text.contains("engine_instances"), "{text}");
    }
}
