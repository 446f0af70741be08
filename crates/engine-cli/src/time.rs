//! The one way every output prints a point in time: RFC 3339 in UTC, to the second
//! (`2026-11-26T09:00:05Z`), so that columns keep their width and two outputs agree.

/// A time as every output prints it.
pub(crate) fn format(time: jiff::Timestamp) -> String {
    time.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Epoch milliseconds as every output prints a time (the number itself when out of range).
pub(crate) fn format_ms(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map_or_else(|| ms.to_string(), format)
}

/// A stored RFC 3339 time (any precision) as every output prints it; the text itself when it
/// is not one.
pub(crate) fn format_text(text: &str) -> String {
    text.parse::<jiff::Timestamp>()
        .map_or_else(|_| text.to_owned(), format)
}

/// Now, as every output prints it.
pub(crate) fn now() -> String {
    format(jiff::Timestamp::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_time_has_the_same_width() {
        assert_eq!(format_ms(1_764_147_605_170), "2025-11-26T09:00:05Z");
        assert_eq!(format_ms(1_764_147_605_000), "2025-11-26T09:00:05Z");
        assert_eq!(format_ms(1_764_147_605_133), "2025-11-26T09:00:05Z");
        assert_eq!(
            format_text("2025-11-26T09:00:05.17Z"),
            "2025-11-26T09:00:05Z"
        );
        assert_eq!(format_text("not a time"), "not a time");
    }
}
