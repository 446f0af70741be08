//! Durations on the command line: `--timeout`, `--lock-timeout` and the like take `30s`, `5m`,
//! `1h 30m` (humantime), or a plain number of seconds (`30`, `2.5`), as they always did.

use std::time::Duration;

/// The largest timeout: a day.
const MAX_TIMEOUT: Duration = Duration::from_hours(24);

/// A duration (`30s`, `5m`) or a number of seconds, more than 0 and at most a day.
pub(crate) fn parse_timeout(text: &str) -> Result<Duration, String> {
    let problem = || {
        "expected a duration such as `30s` or `5m`, or a number of seconds, more than 0 and at most a day (`24h`)".to_owned()
    };
    let text = text.trim();
    let duration = match text.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && seconds >= 0.0 => {
            Duration::try_from_secs_f64(seconds).map_err(|_| problem())?
        }
        Ok(_) => return Err(problem()),
        Err(_) => humantime::parse_duration(text).map_err(|_| problem())?,
    };
    if duration.is_zero() || duration > MAX_TIMEOUT {
        return Err(problem());
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::parse_timeout;

    #[test]
    fn seconds_and_durations() {
        assert_eq!(parse_timeout("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_timeout("2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_timeout("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_timeout("5m"), Ok(Duration::from_mins(5)));
        assert_eq!(parse_timeout("1h 30m"), Ok(Duration::from_mins(90)));
        for wrong in ["0", "0s", "-1", "25h", "soon", "", "NaN", "inf"] {
            assert!(parse_timeout(wrong).is_err(), "{wrong}");
        }
    }
}
