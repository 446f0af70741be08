//! The template compiler and renderer: the first byte picks the kind (text or URL), the rest is
//! the template, rendered with a small fixed configuration and path values.
#![no_main]

use engine_spec::template::{Template, TemplateContext, TemplateKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let kind = if first & 1 == 0 {
        TemplateKind::Text
    } else {
        TemplateKind::Url
    };
    let Ok(template) = Template::compile(text, kind) else {
        return;
    };
    let configuration = serde_json::json!({
        "a": "x", "b": "y/z é", "oauth.user.token": "t0k3n", "n": 3, "t": true
    });
    let path = serde_json::json!({"id": "a b", "a": "1", "x": "2"});
    let (Some(configuration), Some(path)) = (configuration.as_object(), path.as_object()) else {
        return;
    };
    let context = TemplateContext::new(configuration, Some(path));
    let _ = template.render(&context);
});
