//! Adding and removing instances: [`import`] stores an instance's values with its connector
//! recorded and its schedule written, [`check_values`] checks values against a connector's
//! configuration (keys, types, required keys), and [`delete`] runs the connector's `onDelete`
//! resource before removing the instance.

use engine_runtime::{Engine, Inputs, NoObserver, RunError, RunRequest};
use engine_spec::Connector;
use engine_spec::kinds::{ConfigType, ResourceType};
use engine_store::{CONNECTOR_KEY, InstanceStore, Schedule, State, StoreErrorKind, VERSION_KEY};
use serde_json::Value;

use crate::{Error, ErrorKind, Opened};

/// An instance to store with [`import`].
#[derive(Debug)]
pub struct NewInstance<'a> {
    /// Its id.
    pub id: &'a str,
    /// The name its connector is found by later (a registry's name, or a file's path),
    /// recorded with it; `None` records none.
    pub connector_name: Option<&'a str>,
    /// The connector, when it is at hand: the schedule is then the connector's (else estimated
    /// from the keys alone). The caller seals the store with its secret rule.
    pub connector: Option<&'a Connector>,
    /// Its configuration values (tokens included), as an instance file holds them.
    pub values: State,
}

/// Stores a new instance: its values, the connector's name, and the runtime's schedule for its
/// token (`next_refresh_at`). A stored version in `values` is ignored. `store` is the store the
/// caller sealed for the connector ([`Opened::sealed`]), so that secrets are encrypted by its
/// rule. Returns the version written.
///
/// Fails with [`ErrorKind::InstanceExists`] when the id is taken, or the store's error.
pub async fn import(store: &dyn InstanceStore, new: NewInstance<'_>) -> Result<u64, Error> {
    let mut state = new.values;
    state.shift_remove(VERSION_KEY);
    if let Some(name) = new.connector_name {
        state.insert(CONNECTOR_KEY.to_owned(), name.into());
    }
    let previous = Schedule::read(&state);
    match new.connector {
        Some(connector) => engine_runtime::schedule_of(connector, new.id, &state, &previous),
        None => engine_runtime::estimated_schedule(new.id, &state, &previous),
    }
    .put(&mut state);
    match store.write(new.id, state, 0).await {
        Ok(version) => Ok(version),
        Err(error) if matches!(error.kind(), StoreErrorKind::Conflict { .. }) => {
            Err(ErrorKind::InstanceExists {
                id: new.id.to_owned(),
            }
            .into())
        }
        Err(error) => Err(error.into()),
    }
}

/// Checks `values` against the configuration of `connector` before they are stored: every key
/// is one the connector knows (declared, reserved such as `oauth.user.token`, or saved by a
/// response), none is the engine's own (`engine.`), each value fits its property's type, and
/// every required property without a default has a value (keys the engine maintains, such as
/// tokens and `expires_in`, aside).
///
/// Fails with [`ErrorKind::InvalidValue`] naming the first key at fault.
pub fn check_values(connector: &Connector, values: &State) -> Result<(), Error> {
    let invalid = |key: &str, problem: String| -> Error {
        ErrorKind::InvalidValue {
            key: key.to_owned(),
            problem,
        }
        .into()
    };
    for (key, value) in values {
        if key.starts_with("engine.") {
            return Err(invalid(
                key,
                "keys starting with `engine.` are the engine's own".to_owned(),
            ));
        }
        if !connector.keys().any(|known| known == key) {
            return Err(invalid(
                key,
                format!(
                    "connector `{}` has no such configuration key",
                    connector.name()
                ),
            ));
        }
        if let Some(property) = connector.property(key)
            && let Some(problem) = type_problem(property.kind(), value)
        {
            return Err(invalid(key, problem));
        }
    }
    for property in connector.configuration() {
        let key = property.key();
        let given = values.get(key).is_some_and(has_value);
        if property.required()
            && !maintained_by_engine(key)
            && property.default_value().is_none()
            && !given
        {
            return Err(invalid(key, "a value is required".to_owned()));
        }
    }
    Ok(())
}

/// What is wrong with `value` for a property of type `kind`, if anything. A null is no value.
fn type_problem(kind: ConfigType, value: &Value) -> Option<String> {
    let limit = match kind {
        ConfigType::Textfield32 => Some(32),
        ConfigType::Textfield64 => Some(64),
        ConfigType::Textfield128 => Some(128),
        ConfigType::Textfield256 => Some(256),
        ConfigType::Textfield512 => Some(512),
        ConfigType::Textfield1000 => Some(1000),
        _ => None,
    };
    let boolean = matches!(kind, ConfigType::Boolean | ConfigType::BooleanYesNo);
    let fits = match value {
        Value::Null => true,
        Value::Bool(_) => !matches!(kind, ConfigType::Number),
        Value::Number(_) => !boolean,
        Value::String(text) if boolean => matches!(text.as_str(), "true" | "false"),
        Value::String(text) if kind == ConfigType::Number => text.trim().parse::<f64>().is_ok(),
        Value::String(text) => {
            if let Some(limit) = limit.filter(|limit| text.chars().count() > *limit) {
                return Some(format!("longer than {limit} characters"));
            }
            true
        }
        Value::Object(_) | Value::Array(_) => kind == ConfigType::CodeEditor,
    };
    (!fits).then(|| {
        match kind {
            _ if boolean => "expected `true` or `false`",
            ConfigType::Number => "expected a number",
            _ => "expected text",
        }
        .to_owned()
    })
}

/// True when `value` counts as given: not null, not empty text.
fn has_value(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::String(text) => !text.trim().is_empty(),
        _ => true,
    }
}

/// Keys the engine maintains itself: never "missing" even when declared `required` (the
/// runtime's rule).
fn maintained_by_engine(key: &str) -> bool {
    matches!(key, "authentication.time" | "expires_in") || key.starts_with("oauth.user.")
}

/// The connector of an instance to [`delete`], as the caller found it.
#[derive(Debug, Clone, Copy)]
pub enum DeleteConnector<'a> {
    /// The instance records no connector: nothing to run.
    Unrecorded,
    /// The connector, loaded.
    Loaded(&'a Connector),
    /// The connector the instance names cannot be loaded (the caller said why).
    Unloadable {
        /// The name (or path) it was looked up by.
        name: &'a str,
    },
}

/// What happened to a deleted instance's `onDelete` call.
#[derive(Debug)]
#[non_exhaustive]
pub enum OnDelete {
    /// The connector has no `onDelete` resource, or the instance none recorded.
    None,
    /// It ran; the vendor answered with this status.
    Sent {
        /// The vendor's status.
        status: u16,
    },
    /// It failed; the instance was deleted anyway (`force`).
    FailedForced(RunError),
    /// The connector could not be loaded; the instance was deleted without it (`force`).
    Unloadable,
}

/// Deletes instance `id` of `opened`: first the `onDelete` resource of its connector (when it
/// has one) runs on it through `engine`, authenticated with its token (refreshed when due); a
/// failed call, or a connector that cannot be loaded, keeps the instance unless `force`. The
/// version there is after the call (which may have refreshed the token) is the one deleted. No
/// history is recorded: the instance and its history go.
///
/// Fails with [`ErrorKind::OnDeleteFailed`], [`ErrorKind::DeleteConnectorUnavailable`], or the
/// store's error (an unknown instance, a concurrent write).
pub async fn delete(
    opened: &Opened,
    id: &str,
    connector: DeleteConnector<'_>,
    engine: &Engine,
    force: bool,
) -> Result<OnDelete, Error> {
    let loaded = match connector {
        DeleteConnector::Loaded(connector) => Some(connector),
        _ => None,
    };
    let store = opened.sealed(loaded);
    let on_delete = match connector {
        DeleteConnector::Unloadable { .. } if force => OnDelete::Unloadable,
        DeleteConnector::Unloadable { name } => {
            return Err(ErrorKind::DeleteConnectorUnavailable {
                id: id.to_owned(),
                connector: name.to_owned(),
            }
            .into());
        }
        DeleteConnector::Loaded(connector)
            if connector.lifecycle(ResourceType::OnDelete).is_some() =>
        {
            let inputs = Inputs::default();
            let request = RunRequest {
                connector,
                selector: "onDelete",
                inputs: &inputs,
                instance: id,
            };
            match engine.run(&request, &*store, &NoObserver).await {
                Ok(output) => OnDelete::Sent {
                    status: output.status,
                },
                Err(error) if force => OnDelete::FailedForced(error),
                Err(error) => {
                    return Err(ErrorKind::OnDeleteFailed {
                        id: id.to_owned(),
                        error,
                    }
                    .into());
                }
            }
        }
        _ => OnDelete::None,
    };
    let read = store.load(id).await?;
    store.delete(id, read.version).await?;
    Ok(on_delete)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connector() -> Connector {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/run/stored/connector.json"
        );
        crate::load_connector(std::path::Path::new(path)).expect("the fixture loads")
    }

    fn values(value: &Value) -> State {
        value.as_object().cloned().expect("an object")
    }

    fn key_at_fault(value: &Value) -> Option<String> {
        check_values(&connector(), &values(value))
            .err()
            .map(|error| match error.into_kind() {
                ErrorKind::InvalidValue { key, .. } => key,
                other => panic!("not an invalid value: {other}"),
            })
    }

    #[test]
    fn values_are_checked_against_the_configuration() {
        let good = serde_json::json!({
            "base.url": "http://127.0.0.1:1",
            "client.id": "c",
            "client.secret": "s",
            "access.token": "t",
            "oauth.user.token": "t",
            "expires_in": 3600,
        });
        assert_eq!(key_at_fault(&good), None);
        let mut unknown = good.clone();
        unknown["colour"] = "blue".into();
        assert_eq!(key_at_fault(&unknown).as_deref(), Some("colour"));
        let mut engine_own = good.clone();
        engine_own["engine.status"] = "fresh".into();
        assert_eq!(key_at_fault(&engine_own).as_deref(), Some("engine.status"));
        let mut not_text = good.clone();
        not_text["client.id"] = serde_json::json!({"a": 1});
        assert_eq!(key_at_fault(&not_text).as_deref(), Some("client.id"));
        let mut too_long = good.clone();
        too_long["client.id"] = "x".repeat(129).into();
        assert_eq!(key_at_fault(&too_long).as_deref(), Some("client.id"));
        let mut missing = good;
        missing
            .as_object_mut()
            .unwrap()
            .shift_remove("client.secret");
        assert_eq!(key_at_fault(&missing).as_deref(), Some("client.secret"));
    }

    #[test]
    fn types_are_checked() {
        assert!(type_problem(ConfigType::Boolean, &Value::Bool(true)).is_none());
        assert!(type_problem(ConfigType::Boolean, &"yes".into()).is_some());
        assert!(type_problem(ConfigType::Number, &"12.5".into()).is_none());
        assert!(type_problem(ConfigType::Number, &"twelve".into()).is_some());
        assert!(type_problem(ConfigType::Textarea, &Value::Null).is_none());
    }
}
