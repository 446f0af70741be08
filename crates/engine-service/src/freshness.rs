//! An instance's freshness, as every front end reports it: the runtime's own check (the one a
//! run makes) on the effective configuration.

use engine_runtime::Freshness;
use engine_spec::Connector;
use engine_store::State;
use serde_json::{Map, Value};

/// The runtime's freshness check of `state` at `now_ms` (epoch milliseconds), on the effective
/// configuration: the instance's values over the connector's defaults. Returns whether the token
/// is fresh (and until when), or why the next run refreshes it.
pub fn freshness(connector: &Connector, state: &State, now_ms: u64) -> Freshness {
    let mut values: Map<String, Value> = state.clone();
    for property in connector.configuration() {
        if let Some(default) = property.default_value() {
            values
                .entry(property.key().to_owned())
                .or_insert_with(|| Value::from(default));
        }
    }
    engine_runtime::check_fresh(connector, &values, now_ms)
}
