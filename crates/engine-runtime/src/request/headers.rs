//! Headers: the caller's headers no parameter takes, and the check that every header can go
//! out as HTTP.

use engine_spec::Parameter;
use engine_spec::kinds::ParameterKind;

use crate::run_error::{RunError, RunErrorKind};

/// Adds the caller's headers (`--header`) that no `header` parameter takes: they go out as they
/// are.
pub(super) fn add_caller_headers(
    headers: &mut Vec<(String, String)>,
    caller: &[(String, String)],
    parameters: &[&Parameter],
) {
    for (name, value) in caller {
        let taken = parameters.iter().any(|parameter| {
            parameter.kind() == ParameterKind::Header && parameter.name().eq_ignore_ascii_case(name)
        });
        if !taken {
            headers.push((name.clone(), value.clone()));
        }
    }
}

/// Checks that every header can go out as HTTP: a name that is a token (RFC 9110), a value
/// without line breaks or other control characters (a `\r\n` would end the header and start
/// another). `caller` are the `--header` inputs, to say where a bad one came from.
///
/// Fails with [`RunErrorKind::InvalidHeader`], naming the header but never showing its value.
pub(crate) fn check_headers(
    headers: &[(String, String)],
    caller: &[(String, String)],
) -> Result<(), RunError> {
    for (name, value) in headers {
        // Every header of every request passes here (twice): the common case in one pass over
        // bytes, without a branch per byte.
        if !name.is_empty() && is_token(name) && !holds_control(value) {
            continue;
        }
        let from_caller = caller.iter().any(|(input, _)| input == name);
        if let Some(bad) = name
            .char_indices()
            .find(|(_, character)| !is_token_character(*character))
        {
            let (at, character) = bad;
            let character = match character {
                ' ' => "a space".to_owned(),
                ':' => "`:`".to_owned(),
                other if other.is_control() => format!("`{}`", other.escape_default()),
                other => format!("`{other}`"),
            };
            return Err(RunErrorKind::InvalidHeader {
                shown: format!("name `{}…`", &name[..at]),
                problem: format!("a header name cannot hold {character}"),
                from_caller,
            }
            .into());
        }
        if name.is_empty() {
            return Err(RunErrorKind::InvalidHeader {
                shown: "``".to_owned(),
                problem: "a header needs a name".to_owned(),
                from_caller,
            }
            .into());
        }
        if holds_control(value) {
            return Err(RunErrorKind::InvalidHeader {
                shown: format!("`{name}`"),
                problem: "its value holds a line break or another control character, which a header value cannot hold (the value is not shown: it may hold a secret)".to_owned(),
                from_caller,
            }
            .into());
        }
    }
    Ok(())
}

/// A character of an HTTP token (RFC 9110 5.6.2): what a header name is made of.
fn is_token_character(character: char) -> bool {
    u8::try_from(character).is_ok_and(is_token_byte)
}

/// A byte of an HTTP token.
fn is_token_byte(byte: u8) -> bool {
    TOKEN[usize::from(byte)]
}

/// Which bytes are those of an HTTP token, by value.
static TOKEN: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        #[expect(clippy::cast_possible_truncation, reason = "below 256")]
        let character = byte as u8;
        table[byte] = character.is_ascii_alphanumeric();
        byte += 1;
    }
    let others = b"!#$%&'*+-.^_`|~";
    let mut index = 0;
    while index < others.len() {
        table[others[index] as usize] = true;
        index += 1;
    }
    table
};

/// True when every byte of `name` is a token's.
fn is_token(name: &str) -> bool {
    name.bytes()
        .fold(true, |token, byte| token & is_token_byte(byte))
}

/// True when `value` holds a line break or another control character (a tab is allowed).
#[expect(
    clippy::needless_bitwise_bool,
    reason = "no branch per byte: the bytes are checked many at a time"
)]
fn holds_control(value: &str) -> bool {
    // Without an early exit, so that the bytes are checked many at a time.
    value.bytes().fold(false, |found, byte| {
        found | ((byte < b' ') & (byte != b'\t')) | (byte == 0x7f)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_that_http_would_misread_are_refused_without_their_value() {
        let header = |name: &str, value: &str| vec![(name.to_owned(), value.to_owned())];
        assert!(check_headers(&header("X-A", "a b\tc é"), &[]).is_ok());
        for (name, value, message) in [
            (
                "X-A",
                "a\r\nB: 1",
                "header `X-A` cannot be sent: its value holds a line break",
            ),
            (
                "X-A",
                "a\u{0}",
                "header `X-A` cannot be sent: its value holds a line break",
            ),
            (
                "Bad Name",
                "1",
                "header name `Bad…` cannot be sent: a header name cannot hold a space",
            ),
            (
                "Authorization: Bearer s3cr3t",
                "=",
                "header name `Authorization…` cannot be sent: a header name cannot hold `:`",
            ),
            (
                "X\nY",
                "1",
                "header name `X…` cannot be sent: a header name cannot hold `\\n`",
            ),
        ] {
            let error = check_headers(&header(name, value), &header(name, value)).unwrap_err();
            let text = error.to_string();
            assert!(text.starts_with(message), "{text}");
            assert!(!text.contains("s3cr3t") && !text.contains("B: 1"), "{text}");
            assert!(matches!(
                error.kind(),
                RunErrorKind::InvalidHeader {
                    from_caller: true,
                    ..
                }
            ));
        }
    }
}
