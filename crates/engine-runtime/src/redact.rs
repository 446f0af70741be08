//! Secrets never reach output: [`Secret`] hides a value by type, and [`Redactor`] masks every
//! known secret value in any text (messages, vendor bodies, URLs) before it leaves the runtime.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use engine_spec::Connector;
use engine_store::State;

/// What a masked value is shown as.
pub const MASK: &str = "****";

/// A value that must never be printed: `Debug` and `Display` show `****`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

pub use engine_spec::is_secret_name;

/// Masks known secret values in text. Its `Debug` says how many secrets it knows, never which.
#[derive(Clone, Default)]
pub struct Redactor {
    /// What it knows; shared by clones until one learns a secret of its own (a run starts from
    /// the redactor of its instance's snapshot, `snapshot.rs`).
    known: Arc<Known>,
}

/// The secrets a [`Redactor`] knows.
#[derive(Clone)]
struct Known {
    /// Each known secret with the forms it may appear in.
    secrets: Vec<Arc<Forms>>,
    /// The length of the shortest form: a shorter text holds no secret.
    shortest: usize,
    /// The pairs of bytes the forms start with, as bits ([`pair_bit`]): a text that has none
    /// of them where a form could start holds no secret.
    starts: [u64; PAIR_WORDS],
}

impl Default for Known {
    fn default() -> Self {
        Self {
            secrets: Vec::new(),
            shortest: 0,
            starts: [0; PAIR_WORDS],
        }
    }
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor")
            .field("secrets", &self.known.secrets.len())
            .finish_non_exhaustive()
    }
}

/// The words of [`Known::starts`]: 4,096 bits, 512 bytes per set of secrets.
const PAIR_WORDS: usize = 64;

/// The word and bit of [`Known::starts`] for a form starting with `first`, `second`: the pair
/// hashed (Fibonacci hashing, the top 12 bits of the product), so that the pairs of text, which
/// differ in few bits, spread over the whole set. Pairs may share a bit: that only sends a place
/// to the comparison with the forms.
fn pair_bit(first: u8, second: u8) -> (usize, u64) {
    let pair = (u32::from(first) << 8 | u32::from(second)).wrapping_mul(0x9E37_79B1) >> 20;
    let pair = pair as usize;
    (pair >> 6, 1 << (pair & 63))
}

/// The texts a secret may appear as (no `Debug`: they are the secret).
struct Forms {
    /// The secret itself first, then its percent-encoded, JSON-escaped and form-encoded forms
    /// (those that differ from it and have at least 4 characters).
    texts: Vec<String>,
    /// Base64 of the secret, the part only the secret decides: the whole base64 text around
    /// one is masked, as its ends encode the secret's first and last bytes too.
    base64: Vec<String>,
    /// The length of the shortest of `texts` and `base64`.
    shortest: usize,
}

impl Forms {
    /// The forms of `secret`, computed once per thread and secret: a run learns the same
    /// secrets as the one before it on the same instance.
    fn of(secret: &str) -> Arc<Self> {
        /// Distinct secrets remembered per thread before the cache starts again.
        const CAPACITY: usize = 4096;
        thread_local! {
            static CACHE: RefCell<HashMap<Box<str>, Arc<Forms>, foldhash::fast::RandomState>> =
                RefCell::new(HashMap::default());
        }
        CACHE.with_borrow_mut(|cache| {
            if let Some(forms) = cache.get(secret) {
                return forms.clone();
            }
            if cache.len() >= CAPACITY {
                cache.clear();
            }
            let forms = Arc::new(Self::compute(secret));
            cache.insert(secret.into(), forms.clone());
            forms
        })
    }

    fn compute(secret: &str) -> Self {
        let mut texts = vec![secret.to_owned()];
        // The forms the engine writes it in: percent-encoded (URLs), JSON-escaped (a JSON body,
        // a vendor's echo of one), form-encoded (`+` for a space).
        if let std::borrow::Cow::Owned(encoded) = engine_spec::template::percent_encode(secret) {
            texts.push(encoded);
        }
        if let Ok(quoted) = serde_json::to_string(secret) {
            texts.push(quoted[1..quoted.len() - 1].to_owned());
        }
        texts.push(url::form_urlencoded::byte_serialize(secret.as_bytes()).collect());
        let mut unique: Vec<String> = Vec::with_capacity(texts.len());
        for text in texts {
            if text.len() >= 4 && !unique.contains(&text) {
                unique.push(text);
            }
        }
        // Base64 of a text holding it (`CE.b64`, `{{base64 ...}}`): the part that only the
        // secret decides, for each of the three alignments (8 bytes or more, so that the part
        // is at least 8 characters).
        let mut base64 = Vec::new();
        if secret.len() >= 8 {
            use base64::Engine as _;
            for skip in 0..3 {
                let bytes = &secret.as_bytes()[skip..];
                let whole = bytes.len() / 3 * 3;
                let core = base64::engine::general_purpose::STANDARD.encode(&bytes[..whole]);
                if !base64.contains(&core) {
                    base64.push(core);
                }
            }
        }
        let shortest = unique
            .iter()
            .chain(&base64)
            .map(String::len)
            .min()
            .unwrap_or(usize::MAX);
        Self {
            texts: unique,
            base64,
            shortest,
        }
    }
}

impl Redactor {
    /// A redactor that knows the secret values of `state`: `PASSWORD` properties, the reserved
    /// secret keys, every key a response parameter saves, and keys named like secrets.
    /// The connector's literal credentials too ([`Redactor::learn_connector`]).
    pub fn for_state(connector: &Connector, state: &State) -> Self {
        let mut redactor = Self::default();
        redactor.learn_connector(connector);
        redactor.learn_state(connector, state);
        redactor
    }

    /// Learns the literal credentials written in the connector's parameters
    /// ([`engine_spec::Parameter::is_literal_credential`]): the whole value, and the part after
    /// a `Bearer`/`Basic` scheme word.
    pub fn learn_connector(&mut self, connector: &Connector) {
        for parameter in connector.all_parameters() {
            if !parameter.is_literal_credential() {
                continue;
            }
            let value = parameter.name();
            self.learn(value);
            if let Some((_, credential)) = value.split_once(' ') {
                self.learn(credential.trim());
            }
        }
    }

    /// Learns the secret values of `state` (see [`Redactor::for_state`]).
    pub fn learn_state(&mut self, connector: &Connector, state: &State) {
        for (key, value) in state {
            if connector.is_secret_key(key) {
                match value {
                    serde_json::Value::String(text) => self.learn(text),
                    serde_json::Value::Null => {}
                    other => self.learn(&other.to_string()),
                }
            }
        }
    }

    /// Learns one secret value. Values shorter than 4 characters are not masked (they would
    /// mask half of every message) and cannot be secrets worth the name.
    pub fn learn(&mut self, secret: &str) {
        if secret.len() < 4
            || self
                .known
                .secrets
                .iter()
                .any(|known| known.texts[0] == secret)
        {
            return;
        }
        let forms = Forms::of(secret);
        let known = Arc::make_mut(&mut self.known);
        known.shortest = if known.secrets.is_empty() {
            forms.shortest
        } else {
            known.shortest.min(forms.shortest)
        };
        // Every form has at least 4 bytes.
        for form in forms.texts.iter().chain(&forms.base64) {
            let (word, bit) = pair_bit(form.as_bytes()[0], form.as_bytes()[1]);
            known.starts[word] |= bit;
        }
        known.secrets.push(forms);
    }

    fn texts(&self) -> impl Iterator<Item = &str> {
        self.known
            .secrets
            .iter()
            .flat_map(|known| known.texts.iter().map(String::as_str))
    }

    fn base64_cores(&self) -> impl Iterator<Item = &str> {
        self.known
            .secrets
            .iter()
            .flat_map(|known| known.base64.iter().map(String::as_str))
    }

    /// True when `text` holds a known secret, that is when [`Redactor::redact`] may change it.
    ///
    /// One pass over the places a form could start: where the pair of bytes there is one a form
    /// starts with ([`Known::starts`]), the forms are compared with the text at that place.
    /// Most places of an answer have no such pair, and a text is read once however many forms
    /// there are (a search per form read a long text once per form).
    pub(crate) fn finds_secret(&self, text: &str) -> bool {
        let known = &*self.known;
        // Most texts of an answer (ids, names, flags) are shorter than any secret.
        if known.secrets.is_empty() || text.len() < known.shortest {
            return false;
        }
        let bytes = text.as_bytes();
        // The pairs at every place a form could start: a form longer than the shortest cannot
        // start later either.
        let pairs = &bytes[..bytes.len() - known.shortest + 2];
        for (at, pair) in pairs.windows(2).enumerate() {
            let (word, bit) = pair_bit(pair[0], pair[1]);
            if known.starts[word] & bit != 0 && self.starts_at(&bytes[at..]) {
                return true;
            }
        }
        false
    }

    /// True when `rest` starts with a form of a known secret.
    #[inline(never)]
    fn starts_at(&self, rest: &[u8]) -> bool {
        self.texts()
            .chain(self.base64_cores())
            .any(|form| rest.starts_with(form.as_bytes()))
    }

    /// `text` with every known secret replaced by `****`.
    pub fn redact(&self, text: &str) -> String {
        let mut text = text.to_owned();
        // Longest first, so a secret that contains another is masked whole.
        let mut texts: Vec<&str> = self.texts().collect();
        texts.sort_by_key(|known| std::cmp::Reverse(known.len()));
        for secret in texts {
            if secret.len() <= text.len() && text.contains(secret) {
                text = text.replace(secret, MASK);
            }
        }
        for core in self.base64_cores() {
            if text.contains(core) {
                text = mask_base64_runs(&text, core);
            }
        }
        text
    }

    /// A header value as it may be shown: masked whole when the name is secret-like (keeping an
    /// `Bearer`/`Basic` scheme word), else with known secrets masked.
    pub fn header(&self, name: &str, value: &str) -> String {
        if is_secret_name(name) || name.eq_ignore_ascii_case("x-api-key") {
            match value.split_once(' ') {
                Some((scheme, _)) if scheme.len() <= 10 && !scheme.is_empty() => {
                    format!("{scheme} {MASK}")
                }
                _ => MASK.to_owned(),
            }
        } else {
            self.redact(value)
        }
    }
}

/// `text` with every run of base64 characters that holds `core` replaced by `****`.
fn mask_base64_runs(text: &str, core: &str) -> String {
    let base64 = |byte: u8| byte.is_ascii_alphanumeric() || matches!(byte, b'+' | b'/' | b'=');
    let bytes = text.as_bytes();
    let mut masked = String::with_capacity(text.len());
    let mut copied = 0;
    while let Some(found) = text[copied..].find(core) {
        let mut start = copied + found;
        while start > copied && base64(bytes[start - 1]) {
            start -= 1;
        }
        let mut end = copied + found + core.len();
        while end < bytes.len() && base64(bytes[end]) {
            end += 1;
        }
        masked.push_str(&text[copied..start]);
        masked.push_str(MASK);
        copied = end;
    }
    masked.push_str(&text[copied..]);
    masked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_names_no_secret() {
        let mut redactor = Redactor::default();
        redactor.learn("s3cr3t-value-123");
        let shown = format!("{redactor:?} {:?}", redactor.clone());
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("secrets: 1"), "{shown}");
    }

    #[test]
    fn secrets_never_show_in_debug_or_display() {
        let secret = Secret::new("hunter22");
        assert_eq!(format!("{secret} {secret:?}"), "**** ****");
        assert_eq!(secret.expose(), "hunter22");
    }

    mod properties {
        //! For any secret, in every encoding the engine itself produces, inside any text, the
        //! secret does not survive masking.
        use base64::Engine as _;
        use proptest::prelude::*;

        use super::super::*;

        /// Secrets of 4 to 32 characters: ASCII punctuation (JSON and URL specials included),
        /// spaces, letters, digits and non-ASCII letters. Not `*`: a secret made of the mask's
        /// own character could be re-formed around a mask.
        const SECRET: &str =
            "[a-zA-Z0-9 !\"#$%&'()+,./:;<=>?@\\\\\\[\\]^_`{|}~\u{e9}\u{20ac}-]{4,32}";
        const CONTEXT: &str = "[a-zA-Z0-9 =&:,{}\"]{0,16}";

        fn redactor(secret: &str) -> Redactor {
            let mut redactor = Redactor::default();
            redactor.learn(secret);
            redactor
        }

        fn json_escaped(secret: &str) -> String {
            let quoted = serde_json::to_string(secret).unwrap();
            quoted[1..quoted.len() - 1].to_owned()
        }

        fn form_encoded(secret: &str) -> String {
            url::form_urlencoded::byte_serialize(secret.as_bytes()).collect()
        }

        proptest! {
            #![proptest_config(crate::properties::config(256))]

            #[test]
            fn raw_json_form_and_percent_forms_are_masked(
                secret in SECRET, before in CONTEXT, after in CONTEXT
            ) {
                let redactor = redactor(&secret);
                for encoded in [
                    secret.clone(),
                    json_escaped(&secret),
                    form_encoded(&secret),
                    engine_spec::template::percent_encode(&secret).into_owned(),
                ] {
                    let text = format!("{before}{encoded}{after}");
                    let masked = redactor.redact(&text);
                    prop_assert!(!masked.contains(&encoded), "{encoded:?} survived in {masked:?}");
                    prop_assert!(masked.contains(MASK));
                }
                // A JSON body holding it, as the engine serialises one.
                let body = serde_json::json!({"before": before, "password": secret}).to_string();
                prop_assert!(!redactor.redact(&body).contains(&json_escaped(&secret)));
            }

            #[test]
            fn a_secret_is_found_where_masking_changes_the_text(
                secret in SECRET, other in SECRET, before in CONTEXT, after in CONTEXT,
                form in 0..5_usize,
            ) {
                let mut redactor = redactor(&secret);
                redactor.learn(&other);
                let engine = base64::engine::general_purpose::STANDARD;
                let encoded = match form {
                    0 => secret.clone(),
                    1 => json_escaped(&secret),
                    2 => form_encoded(&secret),
                    3 => engine.encode(format!("{before}{secret}")),
                    _ => String::new(),
                };
                for text in [format!("{before}{encoded}{after}"), before.clone(), after.clone()] {
                    prop_assert_eq!(
                        redactor.finds_secret(&text),
                        redactor.redact(&text) != text,
                        "{:?}", text
                    );
                }
            }

            #[test]
            fn base64_of_a_text_holding_the_secret_is_masked(
                secret in "[a-zA-Z0-9 !:@%&/+=\u{e9}-]{8,32}", before in CONTEXT, after in CONTEXT
            ) {
                let redactor = redactor(&secret);
                let engine = base64::engine::general_purpose::STANDARD;
                let encoded = engine.encode(format!("{before}{secret}{after}"));
                let masked = redactor.redact(&encoded);
                // Whatever is left does not decode back to the secret.
                let decoded = engine.decode(&masked).unwrap_or_default();
                prop_assert!(
                    !String::from_utf8_lossy(&decoded).contains(&secret),
                    "{masked:?} decodes to the secret"
                );
                prop_assert!(masked.contains(MASK), "{masked:?}");
                // The whole base64 text goes: its ends encode the secret's ends too.
                let in_header = redactor.redact(&format!("X-Account: {encoded}"));
                prop_assert_eq!(in_header, format!("X-Account: {MASK}"));
            }
        }
    }

    #[test]
    fn masks_values_and_their_encoded_forms() {
        let mut redactor = Redactor::default();
        redactor.learn("s3cr3t/+value");
        redactor.learn("abc");
        assert_eq!(
            redactor.redact("x=s3cr3t%2F%2Bvalue y=s3cr3t/+value abc"),
            "x=**** y=**** abc"
        );
        assert_eq!(
            redactor.header("Authorization", "Bearer xyz"),
            "Bearer ****"
        );
        assert_eq!(
            redactor.header("Accept", "application/json"),
            "application/json"
        );
    }
}
