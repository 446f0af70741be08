//! Decoding of `application/x-www-form-urlencoded` text and HTTP Basic credentials.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use percent_encoding::percent_decode_str;

/// Decodes one form component: `+` is a space, `%XX` is a byte, invalid UTF-8 is replaced.
fn decode_component(text: &str) -> String {
    let spaced = text.replace('+', " ");
    percent_decode_str(&spaced).decode_utf8_lossy().into_owned()
}

/// Returns the name/value pairs of a query string or form body, in order.
///
/// Empty segments (`a=1&&b=2`) are skipped and a segment without `=` has an empty value.
pub(crate) fn parse_pairs(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|segment| !segment.is_empty())
        .map(|segment| {
            let (name, value) = segment.split_once('=').unwrap_or((segment, ""));
            (decode_component(name), decode_component(value))
        })
        .collect()
}

/// Returns the client id and secret of an `Authorization: Basic …` header.
///
/// Returns `None` when the header is absent or uses another scheme, and `Some(Err(()))` when it is
/// Basic but does not decode to `id:secret`. Both halves are form-decoded, as RFC 6749 §2.3.1 asks.
pub(crate) fn basic_credentials(headers: &HeaderMap) -> Option<Result<(String, String), ()>> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| ());
    let text = decoded.and_then(|bytes| String::from_utf8(bytes).map_err(|_| ()));
    Some(text.and_then(|text| {
        let (id, secret) = text.split_once(':').ok_or(())?;
        Ok((decode_component(id), decode_component(secret)))
    }))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn pairs_are_decoded_in_order() {
        assert_eq!(
            parse_pairs("b=2&a=hello+world%21&&flag"),
            vec![
                ("b".to_owned(), "2".to_owned()),
                ("a".to_owned(), "hello world!".to_owned()),
                ("flag".to_owned(), String::new()),
            ]
        );
    }

    #[test]
    fn basic_credentials_decode() {
        let mut headers = HeaderMap::new();
        assert_eq!(basic_credentials(&headers), None);
        let encoded = STANDARD.encode("demo-client:demo-secret");
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {encoded}")).unwrap(),
        );
        assert_eq!(
            basic_credentials(&headers),
            Some(Ok(("demo-client".to_owned(), "demo-secret".to_owned())))
        );
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Basic !!!"));
        assert_eq!(basic_credentials(&headers), Some(Err(())));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer at_x"));
        assert_eq!(basic_credentials(&headers), None);
    }
}
