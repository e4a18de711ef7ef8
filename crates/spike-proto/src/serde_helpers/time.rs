//! `time.Time` as Go's `RFC3339Nano`.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::macros::datetime;
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

use crate::ProtoError;

/// A point in time with Go `time.Time` JSON semantics.
///
/// * Serializes as RFC 3339 with nanoseconds, trailing zeros trimmed (Go `RFC3339Nano`):
///   `2026-01-02T15:04:05.1234Z`, `2026-01-02T15:04:05-08:00`. The offset is kept.
/// * [`Timestamp::ZERO`] (the default) is Go's zero time `0001-01-01T00:00:00Z`.
/// * `Option<Timestamp>` is Go's `*time.Time`: `None` ⇄ `null`.
/// * Decoding a plain `Timestamp` from `null` yields the zero time, as Go does.
///
/// Equality and ordering compare instants (offsets are ignored), like Go's `Time.Equal`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Timestamp(OffsetDateTime);

impl Timestamp {
    /// Go's zero time, `0001-01-01T00:00:00Z`.
    pub const ZERO: Timestamp = Timestamp(datetime!(0001-01-01 0:00 UTC));

    /// Wraps a `time` value.
    pub fn new(t: OffsetDateTime) -> Self {
        Self(t)
    }

    /// The wrapped `time` value.
    pub fn get(self) -> OffsetDateTime {
        self.0
    }

    /// True for Go's zero time (at any offset).
    pub fn is_zero(self) -> bool {
        self == Self::ZERO
    }

    /// Formats as Go `RFC3339Nano`; fails outside years 0..=9999 like Go's `MarshalJSON`.
    pub fn to_rfc3339_nano(self) -> Result<String, ProtoError> {
        format_rfc3339_nano(self.0)
    }

    /// Parses RFC 3339 like Go's `time.Time.UnmarshalJSON` (see [`parse_rfc3339`]).
    pub fn parse_rfc3339(s: &str) -> Result<Self, ProtoError> {
        parse_rfc3339(s).map(Self)
    }
}

impl Default for Timestamp {
    fn default() -> Self {
        Self::ZERO
    }
}

impl From<OffsetDateTime> for Timestamp {
    fn from(t: OffsetDateTime) -> Self {
        Self(t)
    }
}

impl From<Timestamp> for OffsetDateTime {
    fn from(t: Timestamp) -> Self {
        t.0
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let s = format_rfc3339_nano(self.0).map_err(serde::ser::Error::custom)?;
        serializer.serialize_str(&s)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Option::<Cow<'de, str>>::deserialize(deserializer)? {
            None => Ok(Self::ZERO),
            Some(s) => parse_rfc3339(&s)
                .map(Self)
                .map_err(|_| serde::de::Error::custom("invalid RFC 3339 time")),
        }
    }
}

/// Formats like Go's `t.Format(time.RFC3339Nano)`: `Z` for a zero offset, otherwise
/// `±hh:mm`; the fraction has trailing zeros trimmed and is omitted when zero.
pub fn format_rfc3339_nano(t: OffsetDateTime) -> Result<String, ProtoError> {
    let year = t.year();
    if !(0..=9999).contains(&year) {
        return Err(ProtoError::TimeOutOfRange);
    }
    let mut out = String::with_capacity(35);
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "{year:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    let nanos = t.nanosecond();
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    let offset = t.offset();
    if offset.is_utc() {
        out.push('Z');
    } else {
        let total_minutes = offset.whole_minutes();
        let sign = if offset.is_negative() { '-' } else { '+' };
        let abs = total_minutes.unsigned_abs();
        let _ = write!(out, "{sign}{:02}:{:02}", abs / 60, abs % 60);
    }
    Ok(out)
}

/// Parses an RFC 3339 time the way Go's `time.Time.UnmarshalJSON` does:
/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±hh:mm)` with an uppercase `T` and `Z`, any number of
/// fraction digits (digits past the ninth are truncated), hours `< 24` in the offset.
pub fn parse_rfc3339(s: &str) -> Result<OffsetDateTime, ProtoError> {
    let bad = || ProtoError::Invalid {
        what: "RFC 3339 time",
    };
    let b = s.as_bytes();
    if b.len() < 20 {
        return Err(bad());
    }
    let num = |range: std::ops::Range<usize>| -> Result<u32, ProtoError> {
        let digits = b.get(range).ok_or_else(bad)?;
        digits.iter().try_fold(0u32, |acc, &d| {
            if d.is_ascii_digit() {
                Ok(acc * 10 + u32::from(d - b'0'))
            } else {
                Err(bad())
            }
        })
    };
    let sep = |i: usize, c: u8| if b[i] == c { Ok(()) } else { Err(bad()) };
    let year = num(0..4)?;
    sep(4, b'-')?;
    let month = num(5..7)?;
    sep(7, b'-')?;
    let day = num(8..10)?;
    sep(10, b'T')?;
    let hour = num(11..13)?;
    sep(13, b':')?;
    let minute = num(14..16)?;
    sep(16, b':')?;
    let second = num(17..19)?;

    let mut rest = &b[19..];
    let mut nanos = 0u32;
    if rest.first() == Some(&b'.') {
        let digits = rest[1..].iter().take_while(|d| d.is_ascii_digit()).count();
        if digits == 0 {
            return Err(bad());
        }
        for i in 0..9 {
            let d = if i < digits {
                u32::from(rest[1 + i] - b'0')
            } else {
                0
            };
            nanos = nanos * 10 + d;
        }
        rest = &rest[1 + digits..];
    }

    let offset = match rest {
        [b'Z'] => UtcOffset::UTC,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let digit = |c: u8| {
                if c.is_ascii_digit() {
                    Ok(i8::try_from(c - b'0').map_err(|_| bad())?)
                } else {
                    Err(bad())
                }
            };
            let hours = digit(*h1)? * 10 + digit(*h2)?;
            let minutes = digit(*m1)? * 10 + digit(*m2)?;
            if hours >= 24 || minutes >= 60 {
                return Err(bad());
            }
            let sign = if *sign == b'-' { -1 } else { 1 };
            UtcOffset::from_hms(sign * hours, sign * minutes, 0).map_err(|_| bad())?
        }
        _ => return Err(bad()),
    };

    let year = i32::try_from(year).map_err(|_| bad())?;
    let month = u8::try_from(month)
        .ok()
        .and_then(|m| Month::try_from(m).ok())
        .ok_or_else(bad)?;
    let small = |v: u32| u8::try_from(v).map_err(|_| bad());
    let date = Date::from_calendar_date(year, month, small(day)?).map_err(|_| bad())?;
    let time = Time::from_hms_nano(small(hour)?, small(minute)?, small(second)?, nanos)
        .map_err(|_| bad())?;
    Ok(PrimitiveDateTime::new(date, time).assume_offset(offset))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{datetime, offset};

    #[test]
    fn formats_like_go() {
        let cases = [
            (datetime!(0001-01-01 0:00 UTC), "0001-01-01T00:00:00Z"),
            (
                datetime!(2026-01-02 15:04:05.123456789 -8),
                "2026-01-02T15:04:05.123456789-08:00",
            ),
            (
                datetime!(2026-01-02 15:04:05.1 UTC),
                "2026-01-02T15:04:05.1Z",
            ),
            (
                datetime!(2026-01-02 15:04:05.000120 UTC),
                "2026-01-02T15:04:05.00012Z",
            ),
            (
                datetime!(2026-01-02 15:04:05 +5:30),
                "2026-01-02T15:04:05+05:30",
            ),
            (
                datetime!(2026-01-02 15:04:05 -0:30),
                "2026-01-02T15:04:05-00:30",
            ),
        ];
        for (t, want) in cases {
            assert_eq!(format_rfc3339_nano(t).unwrap(), want);
            assert_eq!(parse_rfc3339(want).unwrap(), t, "{want}");
            assert_eq!(parse_rfc3339(want).unwrap().offset(), t.offset(), "{want}");
        }
    }

    #[test]
    fn year_out_of_range_fails_like_go() {
        let t = datetime!(2026-01-01 0:00 UTC).replace_year(-1).unwrap();
        assert!(format_rfc3339_nano(t).is_err());
    }

    #[test]
    fn parse_truncates_extra_fraction_digits() {
        let t = parse_rfc3339("2026-01-02T15:04:05.1234567899Z").unwrap();
        assert_eq!(t.nanosecond(), 123_456_789);
        let t = parse_rfc3339("2026-01-02T15:04:05.5+01:00").unwrap();
        assert_eq!(t.offset(), offset!(+1));
    }

    #[test]
    fn parse_rejects_malformed() {
        for bad in [
            "",
            "2026-01-02",
            "2026-01-02 15:04:05Z",
            "2026-01-02t15:04:05Z",
            "2026-01-02T15:04:05z",
            "2026-01-02T15:04:05",
            "2026-01-02T15:04:05.Z",
            "2026-01-02T15:04:05+0800",
            "2026-01-02T15:04:05+24:00",
            "2026-01-02T15:04:60Z",
            "2026-02-30T15:04:05Z",
            "2026-13-02T15:04:05Z",
            "+026-01-02T15:04:05Z",
            "2026-01-02T15:04:05Zjunk",
            "2026-01-02T15:04:05\u{e9}Z",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn zero_and_null() {
        assert!(Timestamp::default().is_zero());
        let t: Timestamp = serde_json::from_str("null").unwrap();
        assert!(t.is_zero());
        let o: Option<Timestamp> = serde_json::from_str("null").unwrap();
        assert!(o.is_none());
        assert_eq!(
            serde_json::to_string(&Option::<Timestamp>::None).unwrap(),
            "null"
        );
        assert_eq!(
            serde_json::to_string(&Timestamp::ZERO).unwrap(),
            "\"0001-01-01T00:00:00Z\""
        );
    }
}
