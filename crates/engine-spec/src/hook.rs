//! JavaScript hooks of element.json exports (docs/hooks.md): the model of one hook, the one way
//! a body is wrapped into a function, the syntax check `engine validate` runs, and the mapping
//! from a line and column inside a script to the line and column in the connector file.
//!
//! The runtime executes them (`engine-runtime/src/hooks/`); this crate only parses them, with the
//! same JavaScript engine, so that what validates is what runs.

use std::sync::Arc;

use rquickjs::context::{EvalOptions, intrinsic};
use rquickjs::{CatchResultExt, CaughtError, Context, Function, Runtime};

use crate::source::{Location, Position, SourceFile};
use crate::source_map::SourceMap;

/// When a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    /// Before the vendor call, on the built request.
    PreRequest,
    /// After the vendor call, on its answer.
    PostRequest,
    /// Turns a vendor's webhook payload into events (parsed and checked; run by a service).
    Event,
}

impl HookKind {
    /// The spelling in element.json (`preRequest`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PreRequest => "preRequest",
            Self::PostRequest => "postRequest",
            Self::Event => "event",
        }
    }

    /// The kind of a `type` as written.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "preRequest" => Some(Self::PreRequest),
            "postRequest" => Some(Self::PostRequest),
            "event" => Some(Self::Event),
            _ => None,
        }
    }
}

/// One hook: its kind, its script and where the script is written.
#[derive(Debug, Clone)]
pub struct Hook {
    pub(crate) kind: HookKind,
    pub(crate) body: Arc<str>,
    pub(crate) legacy: bool,
    pub(crate) location: Location,
}

impl Hook {
    /// When it runs.
    pub fn kind(&self) -> HookKind {
        self.kind
    }

    /// The script as written (decoded from its JSON string).
    pub fn body(&self) -> &Arc<str> {
        &self.body
    }

    /// `isLegacy`: the script ends with `return {...}` rather than calling `done({...})` (both
    /// are accepted either way).
    pub fn legacy(&self) -> bool {
        self.legacy
    }

    /// The hook's `body` string in the connector file.
    pub fn location(&self) -> &Location {
        &self.location
    }
}

/// The lines the wrapper adds before a hook's body.
const PROLOGUE: &str = "(function () {\n";

/// The function expression a hook's body is compiled as: the platform ran a body as a function
/// (a legacy script `return`s its answer). Line `n` of the body is line `n + 1` of the result.
pub fn wrap(body: &str) -> String {
    let mut wrapped = String::with_capacity(body.len() + PROLOGUE.len() + 3);
    wrapped.push_str(PROLOGUE);
    wrapped.push_str(body);
    wrapped.push_str("\n})");
    wrapped
}

/// The line of the body a line of [`wrap`]'s result is (`None` for the wrapper's own lines).
pub fn body_line(wrapped_line: usize) -> Option<usize> {
    wrapped_line.checked_sub(1).filter(|line| *line > 0)
}

/// A script that does not parse: the engine's message and where, in the body (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// What the parser said.
    pub message: String,
    /// The line in the body, from 1.
    pub line: usize,
    /// The column in the body, from 1.
    pub column: usize,
}

/// The name scripts are compiled under; error stacks say `at hook:LINE:COLUMN`.
pub const SCRIPT_NAME: &str = "hook";

/// Parses the first `hook:LINE:COLUMN` of a QuickJS stack into the body's line and column.
pub fn stack_position(stack: &str) -> Option<(usize, usize)> {
    let at = stack.find(&format!("{SCRIPT_NAME}:"))? + SCRIPT_NAME.len() + 1;
    let mut numbers = stack[at..]
        .split(|c: char| !c.is_ascii_digit())
        .take(2)
        .map(str::parse::<usize>);
    let line = numbers.next()?.ok()?;
    let column = numbers.next()?.ok()?;
    Some((body_line(line)?, column))
}

/// The built-ins a hook's sandbox has (docs/hooks.md): QuickJS's base objects (`Object`, `Array`,
/// `String`, `Math`, `Error`...) and these. Left out: typed arrays and `ArrayBuffer`, `Proxy`,
/// `WeakRef`, `performance` and `DOMException`, which no export's hook uses and whose objects the
/// sandbox would otherwise freeze at every start (most of a hook's per-process cost).
pub type Intrinsics = (
    intrinsic::Date,
    intrinsic::Eval,
    intrinsic::RegExpCompiler,
    intrinsic::RegExp,
    intrinsic::Json,
    intrinsic::MapSet,
    intrinsic::Promise,
);

/// What compiling needs: the base objects, the compiler and regular expression literals.
type CompileOnly = (intrinsic::Eval, intrinsic::RegExpCompiler);

/// Compiles hook bodies without running them: one QuickJS runtime for a whole file.
pub struct SyntaxChecker {
    context: Context,
}

impl SyntaxChecker {
    /// A checker; `None` when the JavaScript engine could not start (out of memory).
    pub fn new() -> Option<Self> {
        let runtime = Runtime::new().ok()?;
        runtime.set_memory_limit(32 << 20);
        let context = Context::custom::<CompileOnly>(&runtime).ok()?;
        Some(Self { context })
    }

    /// Parses `body` as a hook (the function is built, never called).
    pub fn check(&self, body: &str) -> Result<(), SyntaxError> {
        self.context.with(|ctx| {
            let mut options = EvalOptions::default();
            options.strict = false;
            options.filename = Some(SCRIPT_NAME.to_owned());
            match ctx
                .eval_with_options::<Function, _>(wrap(body), options)
                .catch(&ctx)
            {
                Ok(_) => Ok(()),
                Err(CaughtError::Exception(exception)) => {
                    let (line, column) = exception
                        .stack()
                        .as_deref()
                        .and_then(stack_position)
                        .unwrap_or((1, 1));
                    Err(SyntaxError {
                        message: exception
                            .message()
                            .unwrap_or_else(|| "syntax error".to_owned()),
                        line,
                        column,
                    })
                }
                Err(other) => Err(SyntaxError {
                    message: other.to_string(),
                    line: 1,
                    column: 1,
                }),
            }
        })
    }
}

/// The byte range, inside the JSON string of `location` as written between its quotes, of the
/// character at `line`:`column` of the decoded script (both from 1): escapes such as `\n` and
/// `\"` count as one character of the script.
pub fn written_offset(text: &str, location: &Location, line: usize, column: usize) -> usize {
    let map = SourceMap::for_locations(text, std::iter::once(location));
    let Some(span) = map.span(location) else {
        return 0;
    };
    let raw = &text[span.start..span.end];
    let inner = raw
        .strip_prefix('"')
        .and_then(|raw| raw.strip_suffix('"'))
        .unwrap_or(raw);
    let (mut at_line, mut at_column) = (1, 1);
    let mut chars = inner.char_indices().peekable();
    while let Some((offset, c)) = chars.next() {
        if at_line == line && at_column == column {
            return offset;
        }
        let decoded = if c == '\\' {
            match chars.next() {
                Some((_, 'n')) => '\n',
                Some((_, 'u')) => {
                    for _ in 0..4 {
                        chars.next();
                    }
                    'u'
                }
                Some((_, other)) => other,
                None => break,
            }
        } else {
            c
        };
        if decoded == '\n' {
            if at_line == line {
                // Past the end of the line: point at its end.
                return offset;
            }
            at_line += 1;
            at_column = 1;
        } else {
            at_column += 1;
        }
    }
    inner.len()
}

/// The position in the connector file of `line`:`column` of the hook written at `location`.
pub fn file_position(
    source: &SourceFile,
    location: &Location,
    line: usize,
    column: usize,
) -> Position {
    let offset = written_offset(source.text(), location, line, column);
    let map = SourceMap::for_locations(source.text(), std::iter::once(location));
    let start = map.span(location).map_or(0, |span| span.start + 1);
    source.position(start + offset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pointer::JsonPointer;

    #[test]
    fn a_syntax_error_is_placed_in_the_body() {
        let checker = SyntaxChecker::new().unwrap();
        assert_eq!(checker.check("done({a: 1});"), Ok(()));
        assert_eq!(checker.check("return {a: 1};"), Ok(()));
        let error = checker.check("var a = 1;\n  let b = ;").unwrap_err();
        assert_eq!((error.line, error.column), (2, 11));
        assert!(error.message.contains("unexpected token"), "{error:?}");
    }

    #[test]
    fn a_script_position_maps_through_escapes() {
        let text = r#"{"hooks": [{"body": "var a = \"x\";\n  let b = ;"}]}"#;
        let source = SourceFile::new("c.json", text);
        let location = Location::new("c.json", JsonPointer::parse("/hooks/0/body"));
        let position = file_position(&source, &location, 2, 11);
        let offset = source.offset(position);
        assert_eq!(&text[offset..=offset], ";");
        assert_eq!(position.line, 1);
    }
}
