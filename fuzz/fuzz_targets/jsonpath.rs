//! JSONPath compile and evaluation: the first line is the path, the rest a JSON document.
#![no_main]

use engine_spec::jsonpath::JsonPath;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (path, document) = text.split_once('\n').unwrap_or((text, "{}"));
    let Ok(path) = JsonPath::compile(path) else {
        return;
    };
    let Ok(document) = serde_json::from_str::<serde_json::Value>(document) else {
        return;
    };
    let _ = path.select(&document);
    let _ = path.find(&document);
});
