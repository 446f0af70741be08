//! The wire types of a test file (`*.test.json`, `schemas/connector-test.schema.json`) and of a
//! cassette (`schemas/cassette.schema.json`): JSON as written, generated into the schemas.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A test of one connector: an instance, a start time, and steps run against scripted vendor
/// answers with a virtual clock. Nothing goes to the network.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Connector test")]
pub(crate) struct TestFile {
    /// The JSON Schema this file follows, for editors.
    #[serde(rename = "$schema", default, skip_serializing_if = "Option::is_none")]
    pub(crate) schema: Option<String>,
    /// The connector file, relative to this file.
    pub(crate) connector: String,
    /// The instance's configuration before the first step.
    #[serde(default)]
    pub(crate) instance: BTreeMap<String, Value>,
    /// The virtual clock's start, RFC 3339 (default `2030-01-01T00:00:00Z`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) now: Option<String>,
    /// The steps, in order.
    pub(crate) steps: Vec<Step>,
}

/// One step: run a resource, or move the clock.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Step {
    /// What the step checks, for the report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) name: Option<String>,
    /// Moves the virtual clock forward: `30s`, `55m`, `2h`, `1d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) advance: Option<String>,
    /// Runs a resource, as `engine run` would.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) run: Option<RunStep>,
    /// The requests the run must send, in order, each with the vendor's scripted answer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) exchanges: Vec<ExchangeSpec>,
    /// What must hold after the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) expect: Option<Expect>,
}

/// What to run.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunStep {
    /// A resource name, a lifecycle type, or `METHOD:/path`.
    pub(crate) resource: String,
    /// `--param` inputs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) params: BTreeMap<String, String>,
    /// `--header` inputs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) headers: BTreeMap<String, String>,
    /// The `--body`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) body: Option<Value>,
}

/// One expected request with its scripted answer, written inline or taken from a cassette.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub(crate) enum ExchangeSpec {
    /// An exchange of a cassette: `{"cassette": "demo.cassette.json", "run": 0, "exchange": 1}`.
    FromCassette(CassetteRef),
    /// An exchange written in the test.
    Inline(Box<Exchange>),
}

/// An exchange of a cassette file, by position.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CassetteRef {
    /// The cassette file, relative to the test file.
    pub(crate) cassette: String,
    /// The run of the cassette (from 0).
    #[serde(default)]
    pub(crate) run: usize,
    /// The exchange of that run (from 0).
    pub(crate) exchange: usize,
}

/// A request the run must send and the answer the vendor gives.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Exchange {
    /// What the request must be.
    pub(crate) request: RequestSpec,
    /// The vendor's answer.
    pub(crate) response: ResponseSpec,
}

/// What an outgoing request must be. Values may be `<any>` (anything), `<secret:KEY>` (the
/// instance's value of `KEY`) or `<token:N>` (the Nth distinct token a recorded run saw).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RequestSpec {
    /// The HTTP method.
    pub(crate) method: String,
    /// The whole URL, query included (its pairs in any order).
    pub(crate) url: String,
    /// Headers the request must carry (a subset; names in any case).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) headers: BTreeMap<String, String>,
    /// The body: a JSON object or form fields (as an object) the request's body must contain,
    /// or a text it must equal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) body: Option<Value>,
    /// `true`: the body must equal `body` exactly, not merely contain it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) exact_body: bool,
}

/// The vendor's scripted answer.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResponseSpec {
    /// The status (default 200).
    #[serde(default = "ok")]
    pub(crate) status: u16,
    /// Response headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) headers: BTreeMap<String, String>,
    /// The body (JSON, or a string for a text body).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub(crate) body: Value,
}

fn ok() -> u16 {
    200
}

/// What must hold after a step.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Expect {
    /// How the run ends (default `ok`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) exit: Option<ExitClass>,
    /// Checks on the run's output (stdout), by JSONPath.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) output: Vec<OutputCheck>,
    /// Checks on the instance after the step, by key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) instance: BTreeMap<String, KeyCheck>,
}

/// How a run ends: the exit codes of `engine run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum ExitClass {
    /// Exit 0.
    Ok,
    /// Exit 1: the vendor answered with an error status.
    VendorError,
    /// Exit 3: invalid connector, configuration or input; nothing was sent.
    Invalid,
    /// Exit 4: no valid token could be obtained or refreshed.
    AuthFailed,
    /// Exit 5: no response.
    Transport,
}

impl ExitClass {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::VendorError => "vendor-error",
            Self::Invalid => "invalid",
            Self::AuthFailed => "auth-failed",
            Self::Transport => "transport",
        }
    }
}

/// A check on the output: the value at `path` equals, exists, matches, or counts.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct OutputCheck {
    /// A JSONPath (`$.data[0].id`), a dotted path or a top-level name.
    pub(crate) path: String,
    /// The value must equal this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) equals: Option<Value>,
    /// The path must find something (`true`) or nothing (`false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) exists: Option<bool>,
    /// The value, as text, must match this regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) matches: Option<String>,
    /// The path must select this many values (an array's length for a singular path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) count: Option<usize>,
}

/// A check on one instance key after the step.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub(crate) enum KeyCheck {
    /// `"present"`, `"absent"`, `"changed"` or `"unchanged"` (against the step's start).
    State(KeyState),
    /// `{"equals": VALUE}`; `"<now>"` is the virtual clock in epoch milliseconds.
    Equals {
        /// The value the key must hold.
        equals: Value,
    },
}

/// What a key must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum KeyState {
    /// It has a value.
    Present,
    /// It has none.
    Absent,
    /// Its value is not the one it had before the step.
    Changed,
    /// Its value is the one it had before the step.
    Unchanged,
}

/// A cassette: the exchanges of recorded runs, secrets replaced by placeholders.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Cassette")]
pub(crate) struct Cassette {
    /// The JSON Schema this file follows, for editors.
    #[serde(rename = "$schema", default, skip_serializing_if = "Option::is_none")]
    pub(crate) schema: Option<String>,
    /// The recorded runs, oldest first; `engine run --record` appends one.
    #[serde(default)]
    pub(crate) runs: Vec<RecordedRun>,
}

/// One recorded `engine run`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RecordedRun {
    /// The resource that ran.
    pub(crate) resource: String,
    /// When the run started, RFC 3339.
    pub(crate) started: String,
    /// Its exchanges, in order.
    pub(crate) exchanges: Vec<RecordedExchange>,
}

/// One recorded exchange.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RecordedExchange {
    /// The request as sent, secrets replaced.
    pub(crate) request: RequestSpec,
    /// The answer as received, secrets replaced.
    pub(crate) response: ResponseSpec,
    /// How long the exchange took, in milliseconds.
    pub(crate) elapsed_ms: u64,
}

/// The JSON Schema of a test file (`schemas/connector-test.schema.json`) or of a cassette
/// (`schemas/cassette.schema.json`), generated from these types, as the checked-in files hold it.
#[cfg(test)]
pub(crate) fn schema_text(cassette: bool) -> String {
    let (mut schema, name) = if cassette {
        (schemars::schema_for!(Cassette).to_value(), "cassette")
    } else {
        (schemars::schema_for!(TestFile).to_value(), "connector-test")
    };
    if let Value::Object(object) = &mut schema {
        object.insert(
            "$id".into(),
            Value::String(format!(
                "https://github.com/connector-engine/engine/raw/main/schemas/{name}.schema.json"
            )),
        );
    }
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checked-in schemas are generated from the wire types; `ENGINE_BLESS=1` rewrites them.
    #[test]
    fn checked_in_schemas_have_not_drifted() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
        for (cassette, file) in [
            (false, "connector-test.schema.json"),
            (true, "cassette.schema.json"),
        ] {
            let path = dir.join(file);
            let expected = schema_text(cassette);
            if std::env::var_os("ENGINE_BLESS").is_some() {
                fs_err::write(&path, &expected).unwrap();
            }
            let actual = fs_err::read_to_string(&path).unwrap_or_default();
            assert!(
                actual == expected,
                "`schemas/{file}` is out of date: run `ENGINE_BLESS=1 cargo test -p engine-cli --lib` and commit it"
            );
        }
    }

    /// Every shipped test file and cassette decodes.
    #[test]
    fn shipped_tests_and_cassettes_decode() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../connectors");
        for entry in fs_err::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let text = fs_err::read_to_string(&path).unwrap();
            if name.ends_with(".test.json") {
                serde_json::from_str::<TestFile>(&text).unwrap();
            } else if name.ends_with(".cassette.json") {
                serde_json::from_str::<Cassette>(&text).unwrap();
            }
        }
    }
}
