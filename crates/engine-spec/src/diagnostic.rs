//! Diagnostics: what `engine validate` reports, each with a stable code and a location.

use std::fmt;

use crate::source::Location;

/// How bad a [`Diagnostic`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The engine would run the connector, but part of it is ignored or suspicious.
    Warning,
    /// The connector cannot be run as written.
    Error,
}

impl Severity {
    /// `error` or `warning`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Warning => "warning",
            Self::Error => "error",
        }
    }
}

macro_rules! codes {
    ($( $(#[doc = $doc:literal])* $variant:ident = $code:literal, $severity:ident, $slug:literal; )+) => {
        /// A stable diagnostic code. The number never changes meaning; `docs/diagnostics.md`
        /// explains each one.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum Code {
            $( $(#[doc = $doc])* $variant ),+
        }

        impl Code {
            /// Every code, in order.
            pub const ALL: &'static [Code] = &[$(Code::$variant),+];

            /// The code as printed, e.g. `E0101`.
            pub fn as_str(self) -> &'static str {
                match self { $( Code::$variant => $code ),+ }
            }

            /// A short kebab-case name, used for fixture file names.
            pub fn slug(self) -> &'static str {
                match self { $( Code::$variant => $slug ),+ }
            }

            /// The severity a diagnostic with this code has.
            pub fn severity(self) -> Severity {
                match self { $( Code::$variant => Severity::$severity ),+ }
            }
        }
    };
}

codes! {
    /// The file is not valid JSON.
    InvalidJson = "E0001", Error, "invalid-json";
    /// A value has the wrong JSON type, or a required field is missing.
    Schema = "E0002", Error, "schema";
    /// A resource, parameter, vendor or configuration type the engine does not know.
    UnknownKind = "E0003", Error, "unknown-kind";
    /// A JSON document that is not a connector: no `resources`.
    NotAConnector = "E0004", Error, "not-a-connector";
    /// A misspelled field whose correct spelling is absent: its value is certainly lost.
    MisspelledField = "E0005", Error, "misspelled-field";
    /// A `vendorPath` refers to a key that nothing declares, reserves or saves: the request
    /// cannot be sent.
    UndeclaredKey = "E0101", Error, "undeclared-key";
    /// A template that does not parse.
    InvalidTemplate = "E0103", Error, "invalid-template";
    /// A JSONPath that does not compile.
    InvalidJsonPath = "E0104", Error, "invalid-jsonpath";
    /// A JavaScript hook whose body does not parse.
    InvalidHook = "E0105", Error, "invalid-hook";
    /// `expires_in` is saved but no resource can refresh the token.
    NoRefresh = "E0201", Error, "no-refresh";
    /// `session.management` is `fixed` but `session.timeout` is missing.
    SessionTimeoutMissing = "E0203", Error, "session-timeout-missing";
    /// The authentication type lacks what it needs (for example `oauth2` without `oauth.token.url`).
    AuthIncomplete = "E0204", Error, "auth-incomplete";
    /// Two resources have the same name.
    DuplicateResource = "E0301", Error, "duplicate-resource";
    /// `nextResource` names no resource.
    UnknownNextResource = "E0302", Error, "unknown-next-resource";
    /// `nextResource` chains loop back.
    ChainCycle = "E0303", Error, "chain-cycle";
    /// A `nextResource` chain is longer than 5.
    ChainTooLong = "E0304", Error, "chain-too-long";
    /// Part of the file that the engine accepts but never executes (`event` hooks, converters,
    /// webhook resources, OAuth 1, JDBC, events, bulk).
    NotExecuted = "W0501", Warning, "not-executed";
    /// A field the engine does not know, next to the ones it does (probably a typo).
    UnknownField = "W0502", Warning, "unknown-field";
    /// A parameter reads a key that nothing declares, reserves or saves: it is sent only when
    /// the instance has a value.
    UnknownKey = "W0503", Warning, "unknown-key";
    /// A `{placeholder}` in `vendorPath` that no parameter and no path variable fills.
    UnfilledPlaceholder = "W0504", Warning, "unfilled-placeholder";
    /// The token is saved only by an `ON PROVISION` resource, which never sets `authentication.time`.
    TokenOnProvision = "W0505", Warning, "token-on-provision";
    /// A `value` parameter that looks like a credential written in clear.
    SecretInValue = "W0506", Warning, "secret-in-value";
    /// A `PASSWORD` property with a default value.
    PasswordDefault = "W0507", Warning, "password-default";
    /// A template calls a `CE.*` function the engine does not know.
    UnknownFunction = "W0508", Warning, "unknown-function";
    /// A `vendorMethod` or `method` that is not an HTTP method.
    UnknownMethod = "W0509", Warning, "unknown-method";
    /// A `dataType` that is neither a known type nor a model of the connector: sent as text.
    UnknownDataType = "W0510", Warning, "unknown-data-type";
    /// A `path` parameter of a resource whose `vendorName` is no placeholder: it fills nothing.
    UnusedPathParameter = "W0511", Warning, "unused-path-parameter";
    /// An object that has the same key twice: the last value wins and the first is lost.
    DuplicateKey = "W0512", Warning, "duplicate-key";
    /// A JSONPath with two or more descendant segments (`$..a..b`): its cost grows with the
    /// size of the response to the power of their number, and it may go over the budget.
    DescendantChain = "W0513", Warning, "descendant-chain";
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem found in a connector file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The stable code.
    pub code: Code,
    /// Error or warning (follows from the code).
    pub severity: Severity,
    /// What is wrong: lowercase, no trailing period, literals in backticks.
    pub message: String,
    /// Where.
    pub location: Location,
    /// A short note printed under the caret.
    pub label: Option<String>,
    /// What to do, or "did you mean".
    pub help: Option<String>,
}

impl Diagnostic {
    /// A diagnostic with `code`'s severity.
    pub fn new(code: Code, location: Location, message: impl Into<String>) -> Self {
        Self {
            code,
            severity: code.severity(),
            message: message.into(),
            location,
            label: None,
            help: None,
        }
    }

    /// Adds the note printed under the caret.
    #[must_use]
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// Adds a hint.
    #[must_use]
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Adds a hint only when there is one.
    #[must_use]
    pub fn with_help_opt(mut self, help: Option<String>) -> Self {
        self.help = help;
        self
    }
}
