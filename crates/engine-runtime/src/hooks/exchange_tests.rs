//! Property test of the hook exchange: arbitrary inputs, configuration, caller's `where`,
//! previous answers and hook answers (returned by real hooks, through the sandbox) never panic
//! and each side ends within its budget.

use std::time::{Duration, Instant};

use engine_spec::{Connector, SourceFile, validate};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::{Site, after, before};
use crate::prepared_request::{PreparedRequest, RequestBody};
use crate::redact::Redactor;
use crate::request::Inputs;
use crate::transport::VendorResponse;

/// Hooks that answer what the configuration says (`answer`, `after`), and one that works on
/// every input the way exports do (parse, iterate, lodash).
fn connector() -> Connector {
    let hook = |kind: &str, body: &str| json!({"type": kind, "mimeType": "application/javascript", "body": body});
    let text = json!({
        "authentication": {"type": "custom"},
        "hooks": [
            hook("preRequest", "done(JSON.parse(configuration.answer));"),
            hook("postRequest", "done(JSON.parse(configuration.after));"),
        ],
        "resources": [{
            "name": "it", "type": "api", "method": "POST", "path": "/things/{id}/{other}",
            "vendorMethod": "POST", "vendorPath": "/things",
            "hooks": [hook("preRequest", "let parsed = null;\n\
                try { parsed = JSON.parse(request_body); } catch (e) { parsed = e.message; }\n\
                let n = Object.keys(configuration).length + Object.keys(request_path_variables).length;\n\
                for (const clause of request_expression || []) { n += String(clause.value).length; }\n\
                const _ = require('lodash');\n\
                const merged = _.merge({}, request_body_map, {parsed}, request_previous_response_headers);\n\
                done({request_vendor_headers: {'X-N': String(n + _.size(merged))}});")],
        }],
    })
    .to_string();
    validate(SourceFile::new("c.json", text))
        .into_connector()
        .expect("valid")
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        (-1e12..1e12_f64).prop_map(|n| json!(n)),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// A hook's answer: keys of the contract (and others) with any values.
fn answer() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("continue".to_owned()),
        Just("request_vendor_headers".to_owned()),
        Just("request_vendor_parameters".to_owned()),
        Just("request_vendor_path".to_owned()),
        Just("request_vendor_url".to_owned()),
        Just("request_vendor_body".to_owned()),
        Just("request_vendor_method".to_owned()),
        Just("response_body".to_owned()),
        Just("response_headers".to_owned()),
        Just("response_status_code".to_owned()),
        Just("response_error".to_owned()),
        Just("configuration".to_owned()),
        "[a-z_]{1,10}",
    ];
    let value = prop_oneof![
        json_value(),
        "(/|https?://127\\.0\\.0\\.1/|\\{id\\}|[a-z{}%?&=/:. ]){0,12}".prop_map(Value::String),
        (0..1200_u64).prop_map(|status| json!(status)),
    ];
    prop::collection::btree_map(key, value, 0..5)
        .prop_map(|map| Value::Object(map.into_iter().collect()))
}

fn pairs() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec(("[a-zA-Z-]{1,8}", ".{0,12}"), 0..4)
}

proptest! {
    // 48 cases keep the suite fast; `PROPTEST_CASES=5000` searches longer.
    #![proptest_config(crate::properties::config(48))]

    #[test]
    fn any_inputs_and_answers_end_cleanly_within_the_budget(
        configuration in prop::collection::btree_map("[a-z.]{1,10}", json_value(), 0..5),
        pre in answer(),
        post in answer(),
        params in pairs(),
        where_text in ".{0,24}",
        headers in pairs(),
        body in json_value(),
        previous in json_value(),
        previous_headers in pairs(),
        status in 100..600_u16,
        response_body in json_value(),
        response_headers in pairs(),
    ) {
        let connector = connector();
        let resource = connector.find_resource("it").expect("declared");
        let mut params = params;
        params.push(("where".to_owned(), where_text));
        let inputs = Inputs {
            params,
            headers,
            body: Some(body.clone()),
            body_text: Some(body.to_string()),
            files: Vec::new(),
        };
        let mut configuration: Map<String, Value> = configuration.into_iter().collect();
        configuration.insert("answer".to_owned(), Value::String(pre.to_string()));
        configuration.insert("after".to_owned(), Value::String(post.to_string()));
        let budget = Duration::from_millis(250);
        let mut site = Site {
            connector: &connector,
            tenant: "instance".to_owned(),
            resource,
            inputs: &inputs,
            bound: &[],
            previous: Some(&previous),
            previous_headers: Some(&previous_headers),
            configuration,
            now_ms: 1_700_000_000_000,
            budget,
        };
        let request = PreparedRequest {
            resource: "it".into(),
            method: "POST".into(),
            url: url::Url::parse("http://127.0.0.1:9/things?a=1").expect("a URL"),
            headers: vec![("Accept".to_owned(), "application/json".to_owned())],
            body: RequestBody::Json(body),
            lifecycle: false,
            secrets: Vec::new(),
        };
        let redactor = Redactor::for_state(&connector, &engine_store::State::new());
        // Generous against a loaded machine: the budget bounds each hook, three run per side.
        let bound = budget * 3 + Duration::from_secs(5);
        let started = Instant::now();
        let Ok(made) = before(&mut site, request, &redactor) else {
            prop_assert!(started.elapsed() < bound);
            return Ok(());
        };
        prop_assert!(started.elapsed() < bound);
        let response = made
            .skipped
            .unwrap_or_else(|| VendorResponse::new(status, response_headers, response_body));
        let started = Instant::now();
        let _ = after(&mut site, &made.request, response, &redactor);
        prop_assert!(started.elapsed() < bound);
    }
}
