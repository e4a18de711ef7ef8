//! Go durations as SPIKE's environment variables and configuration files write them (`300ms`,
//! `1.5h`, `2h45m`): [`parse_go_duration`] reads exactly what Go's `time.ParseDuration` reads
//! (except negative durations) with integer nanosecond arithmetic, and [`format_go_duration`]
//! writes a string it reads back exactly. Shared by the daemons and the `spike` CLI.

use std::time::Duration;

/// Why a Go duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GoDurationError {
    /// The string was empty.
    #[error("empty duration")]
    Empty,
    /// The string is not a Go duration (`300ms`, `1.5h`, `2h45m`).
    #[error("invalid duration {input:?}: expected e.g. 300ms, 1.5h, 2h45m")]
    Invalid {
        /// The rejected input.
        input: String,
    },
    /// A number had no unit (`5`; only `0` may omit it).
    #[error("missing unit in duration {input:?} (units: ns, us, µs, ms, s, m, h)")]
    MissingUnit {
        /// The rejected input.
        input: String,
    },
    /// A unit other than ns, us, µs, ms, s, m, h.
    #[error("unknown unit {unit:?} in duration {input:?} (units: ns, us, µs, ms, s, m, h)")]
    UnknownUnit {
        /// The unit found.
        unit: String,
        /// The rejected input.
        input: String,
    },
    /// A negative duration, which has no meaning for timeouts and intervals.
    #[error("negative duration {input:?} is not allowed")]
    Negative {
        /// The rejected input.
        input: String,
    },
    /// Larger than Go's limit (about 292 years).
    #[error("duration {input:?} is too large")]
    Overflow {
        /// The rejected input.
        input: String,
    },
}

const NANOS_PER_SEC: u128 = 1_000_000_000;
/// Go's `time.Duration` is an int64 of nanoseconds.
const GO_MAX_NANOS: u128 = i64::MAX as u128;

fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => 1,
        "us" | "\u{00b5}s" | "\u{03bc}s" => 1_000,
        "ms" => 1_000_000,
        "s" => NANOS_PER_SEC,
        "m" => 60 * NANOS_PER_SEC,
        "h" => 3_600 * NANOS_PER_SEC,
        _ => return None,
    })
}

/// Parses a duration the way Go's `time.ParseDuration` does (`300ms`, `1.5h`, `2h45m`, `0`;
/// units ns, us, µs, ms, s, m, h), except that negative durations are rejected.
///
/// # Errors
///
/// A [`GoDurationError`] naming the input.
pub fn parse_go_duration(input: &str) -> Result<Duration, GoDurationError> {
    let invalid = || GoDurationError::Invalid {
        input: input.to_owned(),
    };
    let overflow = || GoDurationError::Overflow {
        input: input.to_owned(),
    };
    let mut s = input;
    let mut negative = false;
    if let Some(rest) = s.strip_prefix('-') {
        negative = true;
        s = rest;
    } else if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(if input.is_empty() {
            GoDurationError::Empty
        } else {
            invalid()
        });
    }
    let mut total: u128 = 0;
    while !s.is_empty() {
        // integer part
        let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
        let (int_digits, rest) = s.split_at(int_len);
        s = rest;
        let mut whole: u128 = 0;
        for d in int_digits.bytes() {
            whole = whole
                .checked_mul(10)
                .and_then(|w| w.checked_add(u128::from(d - b'0')))
                .filter(|w| *w <= GO_MAX_NANOS)
                .ok_or_else(overflow)?;
        }
        // fraction
        let (mut frac, mut scale, mut frac_len) = (0u128, 1u128, 0usize);
        if let Some(rest) = s.strip_prefix('.') {
            frac_len = rest.bytes().take_while(u8::is_ascii_digit).count();
            let (frac_digits, rest) = rest.split_at(frac_len);
            s = rest;
            // Digits beyond nanosecond precision of an hour cannot change the result.
            for d in frac_digits.bytes().take(20) {
                frac = frac * 10 + u128::from(d - b'0');
                scale *= 10;
            }
        }
        if int_len == 0 && frac_len == 0 {
            return Err(invalid());
        }
        // unit
        let unit_len = s
            .char_indices()
            .find(|(_, c)| *c == '.' || c.is_ascii_digit())
            .map_or(s.len(), |(i, _)| i);
        let (unit, rest) = s.split_at(unit_len);
        s = rest;
        if unit.is_empty() {
            return Err(GoDurationError::MissingUnit {
                input: input.to_owned(),
            });
        }
        let per = unit_nanos(unit).ok_or_else(|| GoDurationError::UnknownUnit {
            unit: unit.to_owned(),
            input: input.to_owned(),
        })?;
        let part = whole
            .checked_mul(per)
            .and_then(|p| p.checked_add(frac * per / scale))
            .ok_or_else(overflow)?;
        total = total
            .checked_add(part)
            .filter(|t| *t <= GO_MAX_NANOS)
            .ok_or_else(overflow)?;
    }
    if negative && total > 0 {
        return Err(GoDurationError::Negative {
            input: input.to_owned(),
        });
    }
    let secs = u64::try_from(total / NANOS_PER_SEC).map_err(|_| overflow())?;
    let nanos = u32::try_from(total % NANOS_PER_SEC).map_err(|_| overflow())?;
    Ok(Duration::new(secs, nanos))
}

/// Formats a duration so that [`parse_go_duration`] reads it back exactly (`1h30m`, `300ms`,
/// `1.5s`, `0s`).
#[must_use]
pub fn format_go_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_owned();
    }
    let nanos = d.subsec_nanos();
    let secs = d.as_secs();
    if secs == 0 {
        return if nanos.is_multiple_of(1_000_000) {
            format!("{}ms", nanos / 1_000_000)
        } else if nanos.is_multiple_of(1_000) {
            format!("{}us", nanos / 1_000)
        } else {
            format!("{nanos}ns")
        };
    }
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if nanos > 0 {
        let frac = format!("{nanos:09}");
        out.push_str(&format!("{s}.{}s", frac.trim_end_matches('0')));
    } else if s > 0 {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn go_durations_parse_like_go() {
        assert_eq!(parse_go_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("300ms"), Ok(ms(300)));
        assert_eq!(parse_go_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("2h45m"), Ok(Duration::from_secs(9900)));
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_go_duration("-0"), Ok(Duration::ZERO));
        assert_eq!(parse_go_duration("+5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_go_duration("1µs"), Ok(Duration::from_micros(1)));
        assert_eq!(parse_go_duration("1μs"), Ok(Duration::from_micros(1)));
        assert_eq!(parse_go_duration("7us"), Ok(Duration::from_micros(7)));
        assert_eq!(parse_go_duration("9ns"), Ok(Duration::from_nanos(9)));
        assert_eq!(parse_go_duration(".5s"), Ok(ms(500)));
        assert_eq!(parse_go_duration("1.5s"), Ok(ms(1500)));
        assert_eq!(
            parse_go_duration("0.1s"),
            Ok(ms(100)),
            "exact, not through a float"
        );
        assert_eq!(parse_go_duration("1.5ms"), Ok(Duration::from_micros(1500)));
        assert_eq!(parse_go_duration("1.s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_go_duration("1m0.25s"), Ok(ms(60_250)));
        assert_eq!(
            parse_go_duration("1.000000001s"),
            Ok(Duration::new(1, 1)),
            "nanosecond precision"
        );
        // Go's maximum: 2562047h47m16.854775807s
        assert_eq!(
            parse_go_duration("2562047h47m16.854775807s"),
            Ok(Duration::new(9_223_372_036, 854_775_807))
        );
    }

    #[test]
    fn go_duration_errors_are_typed() {
        assert_eq!(parse_go_duration(""), Err(GoDurationError::Empty));
        assert!(matches!(
            parse_go_duration("5"),
            Err(GoDurationError::MissingUnit { .. })
        ));
        assert!(matches!(
            parse_go_duration("5d"),
            Err(GoDurationError::UnknownUnit { ref unit, .. }) if unit == "d"
        ));
        assert!(matches!(
            parse_go_duration("-5s"),
            Err(GoDurationError::Negative { .. })
        ));
        assert!(matches!(
            parse_go_duration("2562048h"),
            Err(GoDurationError::Overflow { .. })
        ));
        assert!(matches!(
            parse_go_duration("99999999999999999999999999999999h"),
            Err(GoDurationError::Overflow { .. })
        ));
        for bad in ["-", "+", ".", "s", "1..5s", "1 s", " 1s"] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?} must be rejected");
        }
        let msg = parse_go_duration("5x").unwrap_err().to_string();
        assert!(msg.contains("\"5x\"") && msg.contains("\"x\""), "{msg}");
    }

    #[test]
    fn format_round_trips() {
        for d in [
            Duration::ZERO,
            ms(300),
            Duration::from_secs(5400),
            Duration::new(1, 500_000_000),
            Duration::new(3661, 1),
            Duration::from_micros(7),
            Duration::from_nanos(9),
            Duration::from_secs(60),
        ] {
            let s = format_go_duration(d);
            assert_eq!(parse_go_duration(&s), Ok(d), "{s}");
        }
        assert_eq!(format_go_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_go_duration(ms(1500)), "1.5s");
    }
}
