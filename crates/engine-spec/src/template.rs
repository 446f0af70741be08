//! Templates: the one renderer behind every templated string of a connector.
//!
//! Three syntaxes are accepted and all become one handlebars template, compiled once at load:
//! - element.json's `${configuration.KEY}`: the key runs to the closing brace, dots included;
//! - handlebars `{{...}}`, where `configuration.KEY` names a (flat, dotted) configuration key and
//!   the helpers `base64`, `urlencode`, `concat` and `now` are available;
//! - in URL templates (`vendorPath`) only: `{name}`, filled (percent-encoded) by the `path`
//!   parameter whose `vendorName` is `name`;
//! - element.json's functions, outside `{{...}}`: `CE.b64(TEXT)` (base64 of the text, which may
//!   hold `${configuration.KEY}` references and other calls) and
//!   `CE.hmacSha256Base64(KEY, MESSAGE)` (HMAC-SHA256 of the message with the key, base64).
//!   A template that calls any other `CE.*` function still compiles; it fails when rendered
//!   (validation warns, see [`Template::unknown_functions`]).
//!
//! Rendering is strict (a missing value is an error) and never escapes HTML.
//!
//! Hostile templates are refused at compile time, so that rendering is bounded: a template nests
//! at most [`MAX_NESTING`] levels (parentheses of subexpressions and `CE.*` calls, and
//! `{{#block}}`s each count), and inline partials (`{{#*inline "p"}}`) may not call themselves,
//! directly or through others, nor open more than [`MAX_PARTIAL_DEPTH`] partials at once.
//!
//! ```
//! use engine_spec::template::{Template, TemplateContext, TemplateKind};
//!
//! let template = Template::compile("Bearer ${configuration.oauth.user.token}", TemplateKind::Text)?;
//! assert_eq!(template.keys().next(), Some("oauth.user.token"));
//! let configuration = serde_json::json!({"oauth.user.token": "abc"});
//! let context = TemplateContext::new(configuration.as_object().unwrap(), None);
//! assert_eq!(template.render(&context)?, "Bearer abc");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::borrow::Cow;
use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, LazyLock};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use handlebars::{
    Context, Handlebars, Helper, HelperResult, Output, RenderContext, RenderError,
    RenderErrorReason, Renderable, StringOutput,
};
use hmac::{KeyInit as _, Mac as _};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Map, Value};

/// Characters left as they are in percent-encoded values (RFC 3986 unreserved).
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes `text` so that it is one URL path segment or query value; borrowed when
/// there is nothing to encode.
pub fn percent_encode(text: &str) -> Cow<'_, str> {
    // The common case (ids, most tokens) first, without the encoder's machinery.
    let unreserved =
        |byte: u8| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~');
    if text.bytes().all(unreserved) {
        return Cow::Borrowed(text);
    }
    utf8_percent_encode(text, UNRESERVED).into()
}

mod helpers {
    //! Helpers made by `handlebars_helper!`, which cannot carry doc comments.
    #![allow(missing_docs)]
    use base64::Engine as _;

    use super::percent_encode;

    handlebars::handlebars_helper!(base64_helper: |text: str| base64::engine::general_purpose::STANDARD.encode(text));
    handlebars::handlebars_helper!(urlencode_helper: |text: str| percent_encode(text).into_owned());
}
use helpers::{base64_helper, urlencode_helper};

/// The key of the URL the vendor calls with webhooks: the platform's `{webhookCallbackUrl}`
/// (and `{{webhookCallbackUrl}}`) in a template reads it.
pub const WEBHOOK_CALLBACK_KEY: &str = "webhook.callback.url";

fn concat_helper(
    helper: &Helper<'_>,
    _: &Handlebars<'_>,
    _: &Context,
    _: &mut RenderContext<'_, '_>,
    out: &mut dyn Output,
) -> HelperResult {
    for param in helper.params() {
        match param.value() {
            Value::String(text) => out.write(text)?,
            other => out.write(&other.to_string())?,
        }
    }
    Ok(())
}

fn now_helper(
    helper: &Helper<'_>,
    _: &Handlebars<'_>,
    _: &Context,
    _: &mut RenderContext<'_, '_>,
    out: &mut dyn Output,
) -> HelperResult {
    let elapsed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let seconds = helper.param(0).and_then(|param| param.value().as_str()) == Some("s");
    let now = if seconds {
        elapsed.as_secs().to_string()
    } else {
        elapsed.as_millis().to_string()
    };
    out.write(&now)?;
    Ok(())
}

static REGISTRY: LazyLock<Handlebars<'static>> = LazyLock::new(|| {
    let mut registry = Handlebars::new();
    registry.set_strict_mode(true);
    registry.register_escape_fn(handlebars::no_escape);
    registry.register_helper("base64", Box::new(base64_helper));
    registry.register_helper("urlencode", Box::new(urlencode_helper));
    registry.register_helper("concat", Box::new(concat_helper));
    registry.register_helper("now", Box::new(now_helper));
    registry
});

/// The deepest a template may nest: each `(` (a handlebars subexpression, a `CE.*` call) and
/// each `{{#block}}` opens a level. Real templates use two or three; the limit keeps compiling
/// and rendering off the end of the stack.
pub const MAX_NESTING: usize = 32;

/// The most inline partials one render may have open at once (`{{> a}}` calling `{{> b}}`...).
/// A partial that calls itself, directly or through others, is refused whatever its depth.
pub const MAX_PARTIAL_DEPTH: usize = 8;

/// Which syntaxes a template accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateKind {
    /// Parameter values and headers: `${configuration.KEY}` and `{{...}}`.
    Text,
    /// `vendorPath` and `base.url`: also `{name}` placeholders, percent-encoded.
    Url,
}

/// A name a template refers to, with its byte range in the template text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The configuration key or placeholder name.
    pub name: String,
    /// First byte of the name in the template text.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

/// How many distinct texts of each [`TemplateKind`] [`Template::compile`] remembers per thread;
/// past that it starts again from none.
pub const CACHED_TEMPLATES: usize = 4096;

/// The `CE.*` functions templates may call, by name.
pub const FUNCTIONS: &[&str] = &["b64", "hmacSha256Base64"];

/// A compiled template: handlebars when it has `{{...}}`, plain segments otherwise (rendered
/// without building a handlebars context). Decided once, at compile time. Cloning is cheap: the
/// compiled parts are shared.
#[derive(Clone)]
pub struct Template {
    inner: Arc<Parts>,
}

/// What [`Template::compile`] makes of a text.
struct Parts {
    source: String,
    compiled: Option<handlebars::Template>,
    segments: Vec<Segment>,
    keys: Vec<Reference>,
    placeholders: Vec<Reference>,
    unknown_functions: Vec<Reference>,
}

/// A piece of a template without handlebars expressions.
#[derive(Clone)]
enum Segment {
    /// Literal text.
    Text(String),
    /// `${configuration.KEY}`.
    Key(String),
    /// `{name}`, percent-encoded.
    Placeholder(String),
    /// `CE.name(arguments)`; each argument is itself a list of segments.
    Call(String, Vec<Vec<Segment>>),
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Template").field(&self.inner.source).finish()
    }
}

/// A template that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TemplateError {
    /// What is wrong.
    pub message: String,
    /// Byte offset in the template text where the problem is.
    pub offset: usize,
}

/// Where a template reads its values by key: a configuration, or the placeholder values of a
/// URL template. A `serde_json` map is one; the runtime's layered configuration is another.
pub trait Values {
    /// The value of `key`, `None` when there is none.
    fn value(&self, key: &str) -> Option<&Value>;

    /// Every value as one map, for the handlebars context; made only when a template with
    /// `{{...}}` renders.
    fn to_map(&self) -> Map<String, Value>;
}

impl Values for Map<String, Value> {
    fn value(&self, key: &str) -> Option<&Value> {
        self.get(key)
    }

    fn to_map(&self) -> Map<String, Value> {
        self.clone()
    }
}

/// The values a template is rendered with: `configuration` (the flat map of keys) and `path`
/// (placeholder values). Build it once per request and render every template with it; the
/// handlebars context is made from it only when a template needs one.
pub struct TemplateContext<'a> {
    configuration: &'a dyn Values,
    path: Option<&'a dyn Values>,
    handlebars: OnceCell<Context>,
}

impl<'a> TemplateContext<'a> {
    /// The context of a configuration and, for URL templates, the placeholder values.
    pub fn new(configuration: &'a dyn Values, path: Option<&'a dyn Values>) -> Self {
        Self {
            configuration,
            path,
            handlebars: OnceCell::new(),
        }
    }

    fn handlebars(&self) -> &Context {
        self.handlebars.get_or_init(|| {
            let mut data = Map::with_capacity(2);
            data.insert(
                "configuration".to_owned(),
                Value::Object(self.configuration.to_map()),
            );
            if let Some(path) = self.path {
                data.insert("path".to_owned(), Value::Object(path.to_map()));
            }
            Context::from(Value::Object(data))
        })
    }
}

impl Template {
    /// Compiles `text`.
    ///
    /// Fails when a `${` or `{{` is not closed, or when the handlebars part does not parse; the
    /// error carries the byte offset in `text`.
    ///
    /// The same text (and kind) compiled again on the same thread gives the first result back,
    /// shared: connectors repeat the same templates across resources and files, and compiling
    /// handlebars is the costly part of loading one. Each thread remembers up to
    /// [`CACHED_TEMPLATES`] texts.
    pub fn compile(text: &str, kind: TemplateKind) -> Result<Self, TemplateError> {
        thread_local! {
            static CACHE: RefCell<[foldhash::HashMap<String, Result<Template, TemplateError>>; 2]> =
                RefCell::default();
        }
        let slot = usize::from(kind == TemplateKind::Url);
        if let Some(found) = CACHE.with_borrow(|cache| cache[slot].get(text).cloned()) {
            return found;
        }
        let compiled = Self::compile_uncached(text, kind);
        CACHE.with_borrow_mut(|cache| {
            if cache[slot].len() >= CACHED_TEMPLATES {
                cache[slot].clear();
            }
            cache[slot].insert(text.to_owned(), compiled.clone());
        });
        compiled
    }

    fn compile_uncached(text: &str, kind: TemplateKind) -> Result<Self, TemplateError> {
        check_nesting(text)?;
        let mut parser = Parser {
            text,
            kind,
            keys: Vec::new(),
            placeholders: Vec::new(),
            unknown_functions: Vec::new(),
            handlebars: false,
        };
        let mut translated = String::new();
        let segments = parser.segments(0, text.len(), Some(&mut translated))?;
        let compiled = if parser.handlebars {
            if let Some(call) = segments.iter().find_map(|segment| match segment {
                Segment::Call(name, _) => Some(name),
                _ => None,
            }) {
                return Err(TemplateError {
                    message: format!(
                        "`CE.{call}` cannot be used in a template that also has `{{{{...}}}}`: \
                         use the `base64` helper there"
                    ),
                    offset: text.find("CE.").unwrap_or(0),
                });
            }
            let compiled =
                handlebars::Template::compile(&translated).map_err(|error| TemplateError {
                    message: error.reason().to_string(),
                    offset: error
                        .pos()
                        .map_or(0, |(line, column)| offset_of(text, line, column)),
                })?;
            check_partials(&compiled, text)?;
            Some(compiled)
        } else {
            None
        };
        Ok(Self {
            inner: Arc::new(Parts {
                source: text.to_owned(),
                compiled,
                segments,
                keys: parser.keys,
                placeholders: parser.placeholders,
                unknown_functions: parser.unknown_functions,
            }),
        })
    }

    /// The template text as written.
    pub fn source(&self) -> &str {
        &self.inner.source
    }

    /// True when the template has nothing to fill in.
    pub fn is_literal(&self) -> bool {
        self.inner.compiled.is_none()
            && self
                .inner
                .segments
                .iter()
                .all(|segment| matches!(segment, Segment::Text(_)))
    }

    /// The `CE.*` calls to functions the engine does not know, with the byte range of each
    /// name: rendering the template fails.
    pub fn unknown_functions(&self) -> &[Reference] {
        &self.inner.unknown_functions
    }

    /// The configuration keys the template refers to.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.inner
            .keys
            .iter()
            .map(|reference| reference.name.as_str())
    }

    /// The configuration keys with their byte ranges in the template text.
    pub fn key_references(&self) -> &[Reference] {
        &self.inner.keys
    }

    /// The `{name}` placeholders of a URL template, with their byte ranges.
    pub fn placeholders(&self) -> &[Reference] {
        &self.inner.placeholders
    }

    /// The text the template renders as when it has nothing to fill in, a single literal
    /// (`application/json`): a runtime copies it instead of rendering it. `None` for any other
    /// template.
    pub fn literal_text(&self) -> Option<&str> {
        if self.inner.compiled.is_some() {
            return None;
        }
        match self.inner.segments.as_slice() {
            [Segment::Text(text)] => Some(text),
            _ => None,
        }
    }

    /// A URL template that is a literal directory followed by one `{placeholder}`
    /// (`/api/v1/contacts/{id}`): the directory, as rendered (ending in `/`), and the
    /// placeholder's name. It renders as the directory followed by the placeholder's value
    /// percent-encoded, so that a runtime may join the directory once and add only the value.
    /// `None` for any other template.
    pub fn directory_and_placeholder(&self) -> Option<(&str, &str)> {
        if self.inner.compiled.is_some() {
            return None;
        }
        match self.inner.segments.as_slice() {
            [Segment::Text(directory), Segment::Placeholder(name)] if directory.ends_with('/') => {
                Some((directory, name))
            }
            _ => None,
        }
    }

    /// Renders the template.
    ///
    /// Fails when a referenced value is missing from `context`, a helper gets a wrong argument,
    /// or the template calls an unknown `CE.*` function.
    pub fn render(&self, context: &TemplateContext) -> Result<String, RenderError> {
        let Some(compiled) = &self.inner.compiled else {
            let mut output = String::with_capacity(self.inner.source.len() + 32);
            render_segments(&self.inner.segments, context, &mut output)?;
            return Ok(output);
        };
        let mut render_context = RenderContext::new(None);
        let mut output = StringOutput::new();
        compiled.render(
            &REGISTRY,
            context.handlebars(),
            &mut render_context,
            &mut output,
        )?;
        output.into_string().map_err(RenderError::from)
    }
}

/// Renders plain segments: text, keys and placeholders as handlebars would (strict), and calls.
fn render_segments(
    segments: &[Segment],
    context: &TemplateContext<'_>,
    output: &mut String,
) -> Result<(), RenderError> {
    let missing =
        |name: &str| RenderError::from(RenderErrorReason::MissingVariable(Some(name.to_owned())));
    for segment in segments {
        match segment {
            Segment::Text(text) => output.push_str(text),
            Segment::Key(key) => match context.configuration.value(key) {
                None | Some(Value::Null) => {
                    return Err(missing(&format!("configuration.[{key}]")));
                }
                Some(Value::String(value)) => output.push_str(value),
                Some(value) => output.push_str(&value.to_string()),
            },
            Segment::Placeholder(name) => match context.path.and_then(|path| path.value(name)) {
                None | Some(Value::Null) => return Err(missing(&format!("path.[{name}]"))),
                Some(Value::String(value)) => output.push_str(&percent_encode(value)),
                Some(value) => output.push_str(&percent_encode(&value.to_string())),
            },
            Segment::Call(name, arguments) => {
                let mut values = Vec::with_capacity(arguments.len());
                for argument in arguments {
                    let mut value = String::new();
                    render_segments(argument, context, &mut value)?;
                    values.push(value);
                }
                let engine = base64::engine::general_purpose::STANDARD;
                match (name.as_str(), values.as_slice()) {
                    ("b64", [text]) => output.push_str(&engine.encode(text)),
                    ("hmacSha256Base64", [key, message]) => {
                        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes())
                            .expect("HMAC takes keys of any length");
                        mac.update(message.as_bytes());
                        output.push_str(&engine.encode(mac.finalize().into_bytes()));
                    }
                    _ => {
                        return Err(RenderErrorReason::HelperNotFound(format!(
                            "CE.{name} (with {} arguments)",
                            values.len()
                        ))
                        .into());
                    }
                }
            }
        }
    }
    Ok(())
}

/// Splits a template text into segments, recording references; translates it for handlebars
/// on the way (`translated`, top level only).
struct Parser<'a> {
    text: &'a str,
    kind: TemplateKind,
    keys: Vec<Reference>,
    placeholders: Vec<Reference>,
    unknown_functions: Vec<Reference>,
    /// True once a `{{...}}` expression was seen.
    handlebars: bool,
}

impl Parser<'_> {
    /// The segments of `text[start..end]`.
    fn segments(
        &mut self,
        start: usize,
        end: usize,
        mut translated: Option<&mut String>,
    ) -> Result<Vec<Segment>, TemplateError> {
        let text = self.text;
        let bytes = text.as_bytes();
        let mut segments = Vec::new();
        let mut rest = start;
        let mut index = start;
        let flush = |segments: &mut Vec<Segment>,
                     translated: &mut Option<&mut String>,
                     from: usize,
                     to: usize| {
            if from < to {
                segments.push(Segment::Text(text[from..to].to_owned()));
                if let Some(translated) = translated.as_deref_mut() {
                    translated.push_str(&escape_literal(&text[from..to]));
                }
            }
        };
        while index < end {
            let here = &text[index..end];
            // The platform's own variable: the URL its webhooks were received at, here the
            // configured `webhook.callback.url`.
            if let Some(literal) = ["{{webhookCallbackUrl}}", "{webhookCallbackUrl}"]
                .into_iter()
                .find(|literal| here.starts_with(literal))
            {
                let key = WEBHOOK_CALLBACK_KEY;
                flush(&mut segments, &mut translated, rest, index);
                segments.push(Segment::Key(key.to_owned()));
                if let Some(translated) = translated.as_deref_mut() {
                    translated.push_str("{{configuration.[");
                    translated.push_str(key);
                    translated.push_str("]}}");
                }
                self.keys.push(Reference {
                    name: key.to_owned(),
                    start: index,
                    end: index + literal.len(),
                });
                index += literal.len();
                rest = index;
            } else if here.starts_with("${configuration.") {
                let key_start = index + "${configuration.".len();
                let Some(length) = text[key_start..end].find('}') else {
                    return Err(TemplateError {
                        message: "`${` is not closed by `}`".into(),
                        offset: index,
                    });
                };
                let key = &text[key_start..key_start + length];
                flush(&mut segments, &mut translated, rest, index);
                segments.push(Segment::Key(key.to_owned()));
                if let Some(translated) = translated.as_deref_mut() {
                    translated.push_str("{{configuration.[");
                    translated.push_str(key);
                    translated.push_str("]}}");
                }
                self.keys.push(Reference {
                    name: key.to_owned(),
                    start: key_start,
                    end: key_start + length,
                });
                index = key_start + length + 1;
                rest = index;
            } else if here.starts_with("{{") {
                let Some(length) = here.find("}}") else {
                    return Err(TemplateError {
                        message: "`{{` is not closed by `}}`".into(),
                        offset: index,
                    });
                };
                let close = index + length + 2;
                flush(&mut segments, &mut translated, rest, index);
                self.handlebars = true;
                let mut expression = String::new();
                translate_expression(text, index, close, &mut expression, &mut self.keys);
                if let Some(translated) = translated.as_deref_mut() {
                    translated.push_str(&expression);
                }
                index = close;
                rest = index;
            } else if let Some((name, open)) = call_at(here) {
                let name_start = index + 3;
                let arguments_start = index + open + 1;
                let Some(close) = matching_parenthesis(text, arguments_start, end) else {
                    return Err(TemplateError {
                        message: format!("`CE.{name}(` is not closed by `)`"),
                        offset: index,
                    });
                };
                flush(&mut segments, &mut translated, rest, index);
                let arity = match name {
                    "b64" => Some(1),
                    "hmacSha256Base64" => Some(2),
                    _ => None,
                };
                if arity.is_none() {
                    self.unknown_functions.push(Reference {
                        name: name.to_owned(),
                        start: name_start,
                        end: name_start + name.len(),
                    });
                }
                let ranges = if arity == Some(1) {
                    vec![(arguments_start, close)]
                } else {
                    split_arguments(text, arguments_start, close)
                };
                let mut arguments = Vec::with_capacity(ranges.len());
                for (from, to) in ranges {
                    arguments.push(self.segments(from, to, None)?);
                }
                if let Some(expected) = arity
                    && arguments.len() != expected
                {
                    return Err(TemplateError {
                        message: format!(
                            "`CE.{name}` takes {expected} arguments, not {}",
                            arguments.len()
                        ),
                        offset: index,
                    });
                }
                segments.push(Segment::Call(name.to_owned(), arguments));
                index = close + 1;
                rest = index;
            } else if self.kind == TemplateKind::Url
                && bytes[index] == b'{'
                && let colon = usize::from(bytes.get(index + 1) == Some(&b':'))
                && let Some(length) = placeholder_at(&text[index + 1 + colon..end])
            {
                // `{:id}` (a route-style placeholder some exports write) is `{id}`.
                let brace = index;
                index += colon;
                let name = &text[index + 1..index + 1 + length];
                flush(&mut segments, &mut translated, rest, brace);
                segments.push(Segment::Placeholder(name.to_owned()));
                if let Some(translated) = translated.as_deref_mut() {
                    translated.push_str("{{urlencode path.[");
                    translated.push_str(name);
                    translated.push_str("]}}");
                }
                self.placeholders.push(Reference {
                    name: name.to_owned(),
                    start: index + 1,
                    end: index + 1 + length,
                });
                index += length + 2;
                rest = index;
            } else {
                index += here.chars().next().map_or(1, char::len_utf8);
            }
        }
        flush(&mut segments, &mut translated, rest, end);
        Ok(segments)
    }
}

/// Refuses a template nesting deeper than [`MAX_NESTING`], in one pass over its bytes.
fn check_nesting(text: &str) -> Result<(), TemplateError> {
    let bytes = text.as_bytes();
    let (mut parentheses, mut blocks) = (0_usize, 0_usize);
    for (index, &byte) in bytes.iter().enumerate() {
        let opens_block = |marker: u8| {
            bytes[index..].starts_with(b"{{")
                && (bytes.get(index + 2) == Some(&marker)
                    || (bytes.get(index + 2) == Some(&b'~')
                        && bytes.get(index + 3) == Some(&marker)))
        };
        match byte {
            b'(' => parentheses += 1,
            b')' => parentheses = parentheses.saturating_sub(1),
            b'{' if opens_block(b'#') => blocks += 1,
            b'{' if opens_block(b'/') => blocks = blocks.saturating_sub(1),
            _ => continue,
        }
        if parentheses + blocks > MAX_NESTING {
            return Err(TemplateError {
                message: format!(
                    "the template nests deeper than {MAX_NESTING} levels (subexpressions, \
                     `CE.*` calls and blocks)"
                ),
                offset: index,
            });
        }
    }
    Ok(())
}

/// The partials a compiled template defines inline and calls: refuses one that calls itself
/// (directly or through others), a call whose name is computed, and chains of calls deeper than
/// [`MAX_PARTIAL_DEPTH`].
fn check_partials(compiled: &handlebars::Template, text: &str) -> Result<(), TemplateError> {
    use handlebars::template::{Parameter, TemplateElement};

    /// Inline partials by name, with the names each one calls; and the calls of the top level.
    #[derive(Default)]
    struct Partials {
        calls: std::collections::BTreeMap<String, Vec<String>>,
        top: Vec<String>,
    }

    fn name_of(parameter: &Parameter) -> Option<String> {
        match parameter {
            Parameter::Literal(Value::String(name)) => Some(name.clone()),
            Parameter::Subexpression(_) | Parameter::Literal(_) => None,
            _ => parameter.as_name().map(str::to_owned),
        }
    }

    fn dynamic(text: &str) -> TemplateError {
        TemplateError {
            message: "a partial's name must be written out, not computed".into(),
            offset: text.find("{{>").or_else(|| text.find("{{#>")).unwrap_or(0),
        }
    }

    /// Records the calls in `template` as made by `caller` (`None`: the top level).
    fn walk(
        template: &handlebars::Template,
        caller: Option<&str>,
        partials: &mut Partials,
        text: &str,
    ) -> Result<(), TemplateError> {
        for element in &template.elements {
            match element {
                TemplateElement::HelperBlock(helper) => {
                    for inner in [&helper.template, &helper.inverse].into_iter().flatten() {
                        walk(inner, caller, partials, text)?;
                    }
                }
                TemplateElement::DecoratorBlock(decorator)
                    if decorator.name.as_name() == Some("inline") =>
                {
                    let name = decorator
                        .params
                        .first()
                        .and_then(name_of)
                        .ok_or_else(|| dynamic(text))?;
                    partials.calls.entry(name.clone()).or_default();
                    if let Some(inner) = &decorator.template {
                        walk(inner, Some(&name), partials, text)?;
                    }
                }
                TemplateElement::PartialExpression(partial)
                | TemplateElement::PartialBlock(partial) => {
                    let name = name_of(&partial.name).ok_or_else(|| dynamic(text))?;
                    if let Some(inner) = &partial.template {
                        // A partial block's content runs inside the partial it calls.
                        walk(inner, caller, partials, text)?;
                        walk(inner, Some(&name), partials, text)?;
                    }
                    if name != "@partial-block" {
                        match caller {
                            Some(caller) => partials
                                .calls
                                .entry(caller.to_owned())
                                .or_default()
                                .push(name),
                            None => partials.top.push(name),
                        }
                    }
                }
                TemplateElement::DecoratorBlock(decorator) => {
                    if let Some(inner) = &decorator.template {
                        walk(inner, caller, partials, text)?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The depth of the deepest chain of calls from `name`; an error on a cycle.
    fn depth(
        name: &str,
        partials: &Partials,
        open: &mut Vec<String>,
        done: &mut HashMap<String, usize>,
        text: &str,
    ) -> Result<usize, TemplateError> {
        let refuse = |message: String| TemplateError {
            offset: text
                .find(&format!("\"{name}\""))
                .or_else(|| text.find(&format!("{{{{> {name}")))
                .unwrap_or(0),
            message,
        };
        if open.iter().any(|caller| caller == name) {
            return Err(refuse(if open.last().map(String::as_str) == Some(name) {
                format!("partial `{name}` calls itself: partials may not recurse")
            } else {
                format!(
                    "partial `{name}` calls itself through `{}`: partials may not recurse",
                    open.last().map_or("", String::as_str)
                )
            }));
        }
        if let Some(&known) = done.get(name)
            && open.len() + known <= MAX_PARTIAL_DEPTH
        {
            return Ok(known);
        }
        if open.len() >= MAX_PARTIAL_DEPTH {
            return Err(refuse(format!(
                "partials call each other more than {MAX_PARTIAL_DEPTH} deep"
            )));
        }
        open.push(name.to_owned());
        let mut deepest = 0;
        for callee in partials.calls.get(name).into_iter().flatten() {
            deepest = deepest.max(depth(callee, partials, open, done, text)?);
        }
        open.pop();
        done.insert(name.to_owned(), deepest + 1);
        Ok(deepest + 1)
    }

    let mut partials = Partials::default();
    walk(compiled, None, &mut partials, text)?;
    // The calls the template makes first, so that a cycle is told from where it is entered.
    let names: Vec<String> = partials
        .top
        .iter()
        .chain(partials.calls.keys())
        .cloned()
        .collect();
    let mut done = HashMap::new();
    for name in names {
        depth(&name, &partials, &mut Vec::new(), &mut done, text)?;
    }
    Ok(())
}

/// `CE.name(` at the start of `text`: the name and the offset of `(`.
fn call_at(text: &str) -> Option<(&str, usize)> {
    let after = text.strip_prefix("CE.")?;
    let length = after
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(after.len());
    (length > 0 && after[length..].starts_with('(')).then(|| (&after[..length], 3 + length))
}

/// The offset of the `)` closing a parenthesis opened just before `start`, nested ones counted.
fn matching_parenthesis(text: &str, start: usize, end: usize) -> Option<usize> {
    let mut depth = 0_usize;
    for (offset, byte) in text.as_bytes()[start..end].iter().enumerate() {
        match byte {
            b'(' => depth += 1,
            b')' if depth == 0 => return Some(start + offset),
            b')' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// The byte ranges of the comma-separated arguments in `text[start..end]` (commas inside
/// parentheses belong to a nested call), each without surrounding blanks.
fn split_arguments(text: &str, start: usize, end: usize) -> Vec<(usize, usize)> {
    let mut ranges = Vec::new();
    let mut depth = 0_usize;
    let mut from = start;
    let trimmed = |from: usize, to: usize| {
        let piece = &text[from..to];
        let leading = piece.len() - piece.trim_start().len();
        (from + leading, from + piece.trim_end().len())
    };
    for (offset, byte) in text.as_bytes()[start..end].iter().enumerate() {
        match byte {
            b'(' => depth += 1,
            b')' => depth = depth.saturating_sub(1),
            b',' if depth == 0 => {
                ranges.push(trimmed(from, start + offset));
                from = start + offset + 1;
            }
            _ => {}
        }
    }
    if from < end || !ranges.is_empty() {
        ranges.push(trimmed(from, end));
    }
    ranges
}

/// Fills `{name}` placeholders of a URL known only at run time (an instance's `base.url`), with
/// percent-encoded values; unknown placeholders stay as written. Borrowed when there is none.
pub fn fill_placeholders(text: &str, value_of: impl Fn(&str) -> Option<String>) -> Cow<'_, str> {
    if !text.contains('{') {
        return Cow::Borrowed(text);
    }
    let mut output = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        if let Some(close) = placeholder_at(after) {
            output.push_str(&rest[..open]);
            match value_of(&after[..close]) {
                Some(value) => output.push_str(&percent_encode(&value)),
                None => output.push_str(&rest[open..=open + close + 1]),
            }
            rest = &after[close + 1..];
        } else {
            output.push_str(&rest[..=open]);
            rest = after;
        }
    }
    output.push_str(rest);
    Cow::Owned(output)
}

/// The length of the placeholder name at the start of `text` (just after a `{`) when a `}`
/// closes it. Looks no further than the name, so that a text of many `{` is read once.
fn placeholder_at(text: &str) -> Option<usize> {
    let length = text
        .bytes()
        .position(|byte| !(byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'.')))?;
    (length > 0 && text.as_bytes()[length] == b'}').then_some(length)
}

/// Literal text goes through handlebars unchanged except `\`, which escapes `{{`.
fn escape_literal(text: &str) -> String {
    text.replace('\\', "\\\\")
}

/// Copies a `{{...}}` expression, rewriting `configuration.KEY` to `configuration.[KEY]` so that a
/// dotted key is one flat key, and recording each key.
fn translate_expression(
    text: &str,
    start: usize,
    end: usize,
    translated: &mut String,
    keys: &mut Vec<Reference>,
) {
    const PREFIX: &str = "configuration.";
    let expression = &text[start..end];
    let mut copied = 0;
    let mut search = 0;
    while let Some(found) = expression[search..].find(PREFIX) {
        let at = search + found;
        let preceded_ok = at == 0
            || !expression[..at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
        let key_start = at + PREFIX.len();
        search = key_start;
        if !preceded_ok {
            continue;
        }
        let (key_start, key_end, bracketed) = if expression[key_start..].starts_with('[') {
            let Some(close) = expression[key_start..].find(']') else {
                continue;
            };
            (key_start + 1, key_start + close, true)
        } else {
            let length = expression[key_start..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
                .unwrap_or(expression.len() - key_start);
            let key = expression[key_start..key_start + length].trim_end_matches('.');
            (key_start, key_start + key.len(), false)
        };
        if key_start == key_end {
            continue;
        }
        keys.push(Reference {
            name: expression[key_start..key_end].to_owned(),
            start: start + key_start,
            end: start + key_end,
        });
        if !bracketed {
            translated.push_str(&expression[copied..key_start]);
            translated.push('[');
            translated.push_str(&expression[key_start..key_end]);
            translated.push(']');
            copied = key_end;
        }
        search = key_end;
    }
    translated.push_str(&expression[copied..]);
}

/// The byte offset of a 1-based line and column of `text` (handlebars reports positions in the
/// translated text; near enough for the original, which has the same lines).
fn offset_of(text: &str, line: usize, column: usize) -> usize {
    let line_start = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum::<usize>();
    (line_start + column.saturating_sub(1)).min(text.len())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn percent_encode_fast_path_agrees_with_the_encoder() {
        for byte in 0_u8..128 {
            let text = char::from(byte).to_string();
            let encoder: Cow<'_, str> = utf8_percent_encode(&text, UNRESERVED).into();
            assert_eq!(percent_encode(&text), encoder, "byte {byte}");
        }
        assert_eq!(percent_encode("a b/é"), "a%20b%2F%C3%A9");
    }

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!("an object"),
        }
    }

    fn configuration() -> Map<String, Value> {
        object(json!({"oauth.api.key": "id", "oauth.api.secret": "s&cret", "n": 3, "t": true}))
    }

    fn path() -> Map<String, Value> {
        object(json!({"id": "a b/c"}))
    }

    #[test]
    fn plain_templates_render_as_handlebars_would() {
        let (configuration, path) = (configuration(), path());
        let context = TemplateContext::new(&configuration, Some(&path));
        for (plain, handlebars) in [
            (
                "Bearer ${configuration.oauth.api.key}",
                "Bearer {{configuration.[oauth.api.key]}}",
            ),
            (
                "n=${configuration.n}&t=${configuration.t}",
                "n={{configuration.n}}&t={{configuration.t}}",
            ),
            ("/x/{id}/y", "/x/{{urlencode path.[id]}}/y"),
        ] {
            let plain = Template::compile(plain, TemplateKind::Url).unwrap();
            assert!(plain.inner.compiled.is_none());
            let handlebars = Template::compile(handlebars, TemplateKind::Url).unwrap();
            assert!(handlebars.inner.compiled.is_some());
            assert_eq!(
                plain.render(&context).unwrap(),
                handlebars.render(&context).unwrap()
            );
        }
    }

    #[test]
    fn renders_all_three_syntaxes_into_one() {
        let template = Template::compile(
            "/x/{id}?k=${configuration.oauth.api.key}&b={{base64 (concat configuration.oauth.api.key \":\" configuration.[oauth.api.secret])}}&n={{configuration.n}}",
            TemplateKind::Url,
        )
        .unwrap();
        assert_eq!(
            template.keys().collect::<Vec<_>>(),
            ["oauth.api.key", "oauth.api.key", "oauth.api.secret", "n"]
        );
        assert_eq!(template.placeholders()[0].name, "id");
        let (configuration, path) = (configuration(), path());
        assert_eq!(
            template
                .render(&TemplateContext::new(&configuration, Some(&path)))
                .unwrap(),
            "/x/a%20b%2Fc?k=id&b=aWQ6cyZjcmV0&n=3"
        );
    }

    #[test]
    fn a_directory_and_one_placeholder_are_told_apart_from_other_paths() {
        let shape = |text: &str| {
            let template = Template::compile(text, TemplateKind::Url).unwrap();
            template
                .directory_and_placeholder()
                .map(|(directory, name)| (directory.to_owned(), name.to_owned()))
        };
        assert_eq!(
            shape("/api/v1/contacts/{id}"),
            Some(("/api/v1/contacts/".to_owned(), "id".to_owned()))
        );
        for other in [
            "/contacts/{id}/notes",
            "/contacts/{id}.json",
            "/{a}/{b}",
            "{id}",
            "/x/${configuration.k}/{id}",
            "/x/{id}?q=1",
            "/x/{{id}}",
            "/contacts",
        ] {
            assert_eq!(shape(other), None, "{other}");
        }
    }

    #[test]
    fn reference_ranges_point_at_the_key() {
        let text = "Bearer ${configuration.authenticaton.time}";
        let template = Template::compile(text, TemplateKind::Text).unwrap();
        let reference = &template.key_references()[0];
        assert_eq!(&text[reference.start..reference.end], "authenticaton.time");
    }

    #[test]
    fn braces_are_literal_outside_urls() {
        let text = r#"{"grant_type": "client_credentials"}"#;
        let template = Template::compile(text, TemplateKind::Text).unwrap();
        assert!(template.is_literal());
        assert_eq!(template.literal_text(), Some(text));
        let configuration = configuration();
        assert_eq!(
            template
                .render(&TemplateContext::new(&configuration, None))
                .unwrap(),
            text
        );
    }

    #[test]
    fn strict_missing_value_is_an_error() {
        let template = Template::compile("${configuration.missing}", TemplateKind::Text).unwrap();
        let configuration = configuration();
        let error = template
            .render(&TemplateContext::new(&configuration, None))
            .unwrap_err();
        assert!(error.to_string().contains("missing"), "{error}");
    }

    #[test]
    fn unclosed_expressions_are_errors_with_offsets() {
        let error = Template::compile("a {{configuration.x", TemplateKind::Text).unwrap_err();
        assert_eq!(error.offset, 2);
        let error = Template::compile("{{#if x}}y", TemplateKind::Text).unwrap_err();
        assert!(!error.message.is_empty());
    }

    #[test]
    fn ce_functions_render_base64_and_hmac() {
        let configuration = object(json!({"username": "ada", "password": "p:w", "key": "key"}));
        let context = TemplateContext::new(&configuration, None);
        let render = |text: &str| {
            Template::compile(text, TemplateKind::Text)
                .unwrap()
                .render(&context)
                .map_err(|error| error.to_string())
        };
        assert_eq!(
            render("Basic CE.b64(${configuration.username}:${configuration.password})").unwrap(),
            "Basic YWRhOnA6dw=="
        );
        // RFC 4231-style known answer: HMAC-SHA256("key", "The quick brown fox ...").
        assert_eq!(
            render("CE.hmacSha256Base64(${configuration.key}, The quick brown fox jumps over the lazy dog)")
                .unwrap(),
            "97yD9DBThCSxMpjmqm+xQ+9NWaFJRhdZl0edvC0aPNg="
        );
        assert_eq!(render("CE.b64(CE.b64(a))").unwrap(), "WVE9PQ==");
        let template = Template::compile("CE.sha1(x)", TemplateKind::Text).unwrap();
        assert_eq!(template.unknown_functions()[0].name, "sha1");
        assert!(!template.is_literal());
        assert!(render("CE.sha1(x)").unwrap_err().contains("CE.sha1"));
        assert!(
            render("CE.b64(${configuration.missing})")
                .unwrap_err()
                .contains("missing")
        );
        assert!(Template::compile("CE.b64(x", TemplateKind::Text).is_err());
        assert!(Template::compile("CE.b64(x) {{now}}", TemplateKind::Text).is_err());
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let n = 5_000;
        for text in [
            format!(
                "{{{{concat {}\"a\"{}}}}}",
                "(concat ".repeat(n),
                ")".repeat(n)
            ),
            format!("{}a{}", "CE.b64(".repeat(n), ")".repeat(n)),
            format!("{}x{}", "{{#if a}}".repeat(n), "{{/if}}".repeat(n)),
        ] {
            let error = Template::compile(&text, TemplateKind::Text).unwrap_err();
            assert!(error.message.contains("nests deeper than 32"), "{error}");
        }
        // At the limit, it compiles.
        let text = format!(
            "{}a{}",
            "CE.b64(".repeat(MAX_NESTING),
            ")".repeat(MAX_NESTING)
        );
        Template::compile(&text, TemplateKind::Text).unwrap();
    }

    #[test]
    fn recursive_partials_are_refused() {
        for (text, message) in [
            (
                r#"{{#*inline "p"}}{{> p}}{{/inline}}{{> p}}"#,
                "partial `p` calls itself: partials may not recurse",
            ),
            (
                r#"{{#*inline "a"}}{{> b}}{{/inline}}{{#*inline "b"}}{{#if x}}{{> a}}{{/if}}{{/inline}}{{> a}}"#,
                "partial `a` calls itself through `b`: partials may not recurse",
            ),
            (
                r#"{{#*inline "p"}}{{#> p}}x{{/p}}{{/inline}}"#,
                "partial `p` calls itself: partials may not recurse",
            ),
            (
                r#"{{> (lookup this "p")}}"#,
                "a partial's name must be written out, not computed",
            ),
        ] {
            let error = Template::compile(text, TemplateKind::Text).unwrap_err();
            assert_eq!(error.message, message, "{text}");
        }
        let mut chain = String::new();
        for level in 0..=MAX_PARTIAL_DEPTH {
            let next = level + 1;
            chain.extend([
                format!(r#"{{{{#*inline "p{level}"}}}}"#),
                format!("{{{{> p{next}}}}}{{{{/inline}}}}"),
            ]);
        }
        let error = Template::compile(&chain, TemplateKind::Text).unwrap_err();
        assert!(error.message.contains("more than 8 deep"), "{error}");
        // A partial that calls no partial renders.
        let template = Template::compile(
            r#"{{#*inline "p"}}[{{configuration.n}}]{{/inline}}{{> p}}{{> p}}"#,
            TemplateKind::Text,
        )
        .unwrap();
        let configuration = configuration();
        assert_eq!(
            template
                .render(&TemplateContext::new(&configuration, None))
                .unwrap(),
            "[3][3]"
        );
    }

    #[test]
    fn unclosed_braces_are_read_once() {
        // 400,000 `{x` took 13 s when each `{` looked for a `}` to the end of the text.
        let text = "/{x".repeat(400_000);
        let template = Template::compile(&text, TemplateKind::Url).unwrap();
        assert!(template.placeholders().is_empty());
        let text = format!("{}/{{id}}", "{x".repeat(1_000));
        let template = Template::compile(&text, TemplateKind::Url).unwrap();
        assert_eq!(template.placeholders()[0].name, "id");
        assert_eq!(fill_placeholders("{x{a}", |_| Some("1".into())), "{x1");
    }

    #[test]
    fn fills_runtime_placeholders() {
        let url = fill_placeholders("https://{tenant}.example.com/{keep}", |name| {
            (name == "tenant").then(|| "a b".to_owned())
        });
        assert_eq!(url, "https://a%20b.example.com/{keep}");
    }
}
