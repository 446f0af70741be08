//! The instance configuration a run sees: this run's pending values (saved, not yet written) over
//! the stored state over the connector's declared defaults. A view over the three layers: looking
//! a key up copies nothing, and the stored state is the store's shared snapshot.

use std::sync::{Arc, LazyLock};

use engine_spec::Connector;
use engine_spec::kinds::ConfigType;
use engine_spec::template::Values;
use engine_store::State;
use serde_json::{Map, Value};

/// The effective configuration of one run.
#[derive(Debug, Clone)]
pub(crate) struct Configuration<'c> {
    connector: &'c Connector,
    stored: Arc<State>,
    pending: State,
}

impl<'c> Configuration<'c> {
    /// The configuration of a stored state, with nothing pending.
    pub(crate) fn new(connector: &'c Connector, stored: Arc<State>) -> Self {
        Self {
            connector,
            stored,
            pending: State::new(),
        }
    }

    /// The value of `key`: pending, else stored, else the declared default. A null value counts
    /// as none, so that the next layer shows through. A `BOOLEAN_YESNO` property's `true` or
    /// `false` (boolean or text) reads as `yes` or `no`, as the vendor expects it.
    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        let present = |value: &&Value| !value.is_null();
        let value = lookup(&self.pending, key)
            .filter(present)
            .or_else(|| lookup(&self.stored, key).filter(present))
            .or_else(|| lookup(self.connector.defaults(), key))?;
        Some(self.yes_no(key, value).unwrap_or(value))
    }

    /// `yes` or `no` for a boolean value of a `BOOLEAN_YESNO` property; `None` otherwise. The
    /// property is looked up only for boolean values.
    fn yes_no(&self, key: &str, value: &Value) -> Option<&'static Value> {
        static YES_NO: LazyLock<[Value; 2]> =
            LazyLock::new(|| [Value::from("yes"), Value::from("no")]);
        let truth = match value {
            Value::Bool(truth) => *truth,
            Value::String(text) if text.eq_ignore_ascii_case("true") => true,
            Value::String(text) if text.eq_ignore_ascii_case("false") => false,
            _ => return None,
        };
        let property = self.connector.property(key)?;
        (property.kind() == ConfigType::BooleanYesNo).then(|| &YES_NO[usize::from(!truth)])
    }

    /// Every key with its value, the layers merged (`BOOLEAN_YESNO` values as `yes`/`no`).
    pub(crate) fn to_map(&self) -> State {
        let mut map = self.connector.defaults().clone();
        for layer in [&*self.stored, &self.pending] {
            for (key, value) in layer {
                if !value.is_null() {
                    map.insert(key.clone(), value.clone());
                }
            }
        }
        for (key, value) in &mut map {
            if let Some(yes_no) = self.yes_no(key, value) {
                *value = yes_no.clone();
            }
        }
        map
    }

    /// The values this run saved that are not written yet.
    pub(crate) fn pending(&self) -> &State {
        &self.pending
    }

    /// Records saved values (they stay pending until written).
    pub(crate) fn save(&mut self, saved: &State) {
        self.pending.extend(
            saved
                .iter()
                .map(|(key, value)| (key.clone(), value.clone())),
        );
    }

    /// Takes the pending values, to be written.
    pub(crate) fn take_pending(&mut self) -> State {
        std::mem::take(&mut self.pending)
    }

    /// Puts back pending values taken by [`Configuration::take_pending`] or saved aside.
    pub(crate) fn restore_pending(&mut self, pending: State) {
        self.pending = pending;
    }

    /// The stored state the configuration is based on, without the pending values.
    pub(crate) fn stored(&self) -> &State {
        &self.stored
    }

    /// True when the stored state is `state` itself (the same allocation).
    pub(crate) fn is_based_on(&self, state: &Arc<State>) -> bool {
        Arc::ptr_eq(&self.stored, state)
    }

    /// Bases the configuration on a state just read from or written to the store; pending
    /// values stay on top.
    pub(crate) fn rebase(&mut self, stored: Arc<State>) {
        self.stored = stored;
    }
}

/// Up to this many keys, a key is found by comparing it with each (lengths first) rather than by
/// hashing it: cheaper for the handful of keys an instance holds.
const SCAN_UP_TO: usize = 16;

/// `map.get(key)`, scanning a small map instead of hashing the key.
fn lookup<'m>(map: &'m State, key: &str) -> Option<&'m Value> {
    if map.len() <= SCAN_UP_TO {
        map.iter()
            .find_map(|(known, value)| (known == key).then_some(value))
    } else {
        map.get(key)
    }
}

impl Values for Configuration<'_> {
    fn value(&self, key: &str) -> Option<&Value> {
        self.get(key)
    }

    fn to_map(&self) -> Map<String, Value> {
        Configuration::to_map(self)
    }
}

#[cfg(test)]
mod tests {
    use engine_spec::SourceFile;
    use serde_json::json;

    use super::*;

    fn connector() -> Connector {
        let text = r#"{
          "name": "Layers", "key": "layers",
          "configuration": [
            {"key": "base.url", "type": "TEXTFIELD_1000", "defaultValue": "https://api.example.com"},
            {"key": "region", "type": "TEXTFIELD_32", "defaultValue": "eu"},
            {"key": "token", "type": "TEXTFIELD_1000"}
          ],
          "resources": [{"name": "me", "type": "API", "method": "GET", "path": "/me",
                         "vendorMethod": "GET", "vendorPath": "/me"}]
        }"#;
        engine_spec::validate(SourceFile::new("layers.json", text))
            .into_connector()
            .expect("a valid connector")
    }

    fn state(value: Value) -> State {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn pending_over_stored_over_defaults_and_null_shows_through() {
        let connector = connector();
        let stored = state(json!({"region": "us", "base.url": null, "token": "t1"}));
        let mut configuration = Configuration::new(&connector, Arc::new(stored));
        assert_eq!(configuration.get("region"), Some(&json!("us")));
        assert_eq!(
            configuration.get("base.url"),
            Some(&json!("https://api.example.com"))
        );
        assert_eq!(configuration.get("missing"), None);

        configuration.save(&state(json!({"token": "t2", "region": null})));
        assert_eq!(configuration.get("token"), Some(&json!("t2")));
        assert_eq!(configuration.get("region"), Some(&json!("us")));
        assert_eq!(
            configuration.to_map(),
            state(json!({"base.url": "https://api.example.com", "region": "us", "token": "t2"}))
        );

        configuration.rebase(Arc::new(state(json!({"token": "t3", "extra": 1}))));
        assert_eq!(configuration.get("token"), Some(&json!("t2")));
        assert_eq!(configuration.get("extra"), Some(&json!(1)));
        assert_eq!(configuration.get("region"), Some(&json!("eu")));
        assert_eq!(
            configuration.take_pending(),
            state(json!({"token": "t2", "region": null}))
        );
        assert_eq!(configuration.get("token"), Some(&json!("t3")));
    }

    #[test]
    fn boolean_yes_no_properties_read_as_yes_and_no() {
        let text = r#"{
          "name": "YesNo", "key": "yesno",
          "configuration": [
            {"key": "sandbox", "type": "BOOLEAN_YESNO", "defaultValue": "false"},
            {"key": "plain", "type": "BOOLEAN"}
          ],
          "resources": [{"name": "me", "type": "API", "method": "GET", "path": "/me",
                         "vendorMethod": "GET", "vendorPath": "/me"}]
        }"#;
        let connector = engine_spec::validate(SourceFile::new("yesno.json", text))
            .into_connector()
            .expect("a valid connector");
        let configuration = Configuration::new(&connector, Arc::new(State::new()));
        assert_eq!(configuration.get("sandbox"), Some(&json!("no")));
        for (stored, shown) in [
            (json!(true), "yes"),
            (json!("TRUE"), "yes"),
            (json!(false), "no"),
        ] {
            let stored = state(json!({"sandbox": stored, "plain": true}));
            let configuration = Configuration::new(&connector, Arc::new(stored));
            assert_eq!(configuration.get("sandbox"), Some(&json!(shown)));
            assert_eq!(configuration.get("plain"), Some(&json!(true)));
            assert_eq!(configuration.to_map()["sandbox"], json!(shown));
        }
        let stored = state(json!({"sandbox": "maybe"}));
        let configuration = Configuration::new(&connector, Arc::new(stored));
        assert_eq!(configuration.get("sandbox"), Some(&json!("maybe")));
    }

    #[test]
    fn small_and_large_states_answer_alike() {
        let connector = connector();
        for count in [0, 1, SCAN_UP_TO, SCAN_UP_TO + 1, 3 * SCAN_UP_TO] {
            let stored: State = (0..count)
                .map(|index| (format!("key.{index}"), json!(index)))
                .collect();
            let configuration = Configuration::new(&connector, Arc::new(stored));
            for index in 0..count {
                assert_eq!(
                    configuration.get(&format!("key.{index}")),
                    Some(&json!(index))
                );
            }
            assert_eq!(configuration.get(&format!("key.{count}")), None);
            assert_eq!(configuration.get("region"), Some(&json!("eu")));
        }
    }
}
