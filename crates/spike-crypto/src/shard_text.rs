//! The recovery-shard text format `spike:<id>:<64 lowercase hex>` (docs/protocol.md#root-key-shards-and-recovery-files).
//!
//! `spike operator recover` writes one such line per file (no newline);
//! `spike operator restore` reads one back.

use core::fmt::Write as _;

use zeroize::Zeroizing;

use crate::error::ShardTextError;
use crate::secret::{KEY_SIZE, Shard, ShardId, ShardValue};

/// The prefix written before the id. [`parse`] accepts any first part, as Go does.
pub const PREFIX: &str = "spike";

/// Formats a shard as `spike:<id>:<64 lowercase hex>` (no trailing newline).
pub fn format(shard: &Shard) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(PREFIX.len() + 8 + 2 * KEY_SIZE));
    out.push_str(PREFIX);
    out.push(':');
    // Writing into a String cannot fail.
    let _ = write!(out, "{}", shard.id());
    out.push(':');
    for byte in shard.expose_secret() {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// Parses a recovery line like Go's `spike operator restore`.
///
/// Surrounding whitespace is trimmed, the input is split into at most three
/// parts on `:`, the first part is not checked, the id must be a positive
/// decimal integer (an optional leading `+` is accepted, as Go's `Atoi` does)
/// that fits a [`ShardId`], and the value must be exactly 64 hex characters
/// (either case).
pub fn parse(input: &str) -> Result<Shard, ShardTextError> {
    let mut parts = input.trim().splitn(3, ':');
    let (Some(_prefix), Some(id), Some(value)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(ShardTextError::MissingParts);
    };

    if value.len() != 2 * KEY_SIZE {
        return Err(ShardTextError::InvalidValueLength { len: value.len() });
    }
    let mut bytes = Zeroizing::new([0u8; KEY_SIZE]);
    hex::decode_to_slice(value, bytes.as_mut_slice()).map_err(|_| ShardTextError::InvalidHex)?;

    let id = parse_id(id)?;
    Ok(Shard::new(id, ShardValue::new(*bytes)))
}

fn parse_id(text: &str) -> Result<ShardId, ShardTextError> {
    let digits = text.strip_prefix('+').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ShardTextError::InvalidId);
    }
    match digits.parse::<ShardId>() {
        Ok(id) if id > 0 => Ok(id),
        _ => Err(ShardTextError::InvalidId),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn format_then_parse_round_trips() {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(HEX, &mut bytes).unwrap();
        let shard = Shard::new(2, ShardValue::new(bytes));
        let text = format(&shard);
        assert_eq!(text.as_str(), format!("spike:2:{HEX}"));
        assert_eq!(parse(&text).unwrap(), shard);
    }

    #[test]
    fn parse_is_lenient_like_go() {
        let shard = parse(&format!("  \n other:+07:{}\r\n", HEX.to_uppercase())).unwrap();
        assert_eq!(shard.id(), 7);
        assert_eq!(hex::encode(shard.expose_secret()), HEX);
    }

    #[test]
    fn parse_errors() {
        use ShardTextError::*;
        let cases: Vec<(String, ShardTextError)> = vec![
            (String::new(), MissingParts),
            ("spike".into(), MissingParts),
            (format!("spike{HEX}"), MissingParts),
            ("spike:1".into(), MissingParts),
            (format!("spike:0:{HEX}"), InvalidId),
            (format!("spike:-1:{HEX}"), InvalidId),
            (format!("spike::{HEX}"), InvalidId),
            (format!("spike:x:{HEX}"), InvalidId),
            (format!("spike: 1:{HEX}"), InvalidId),
            (format!("spike:65536:{HEX}"), InvalidId),
            (
                format!("spike:1:{}", &HEX[..62]),
                InvalidValueLength { len: 62 },
            ),
            (format!("spike:1:{HEX}00"), InvalidValueLength { len: 66 }),
            (format!("spike:1:{HEX}:x"), InvalidValueLength { len: 66 }),
            (format!("spike:1:{}zz", &HEX[..62]), InvalidHex),
            // Length is counted in bytes, like Go's `len`: 62 hex + 2-byte char.
            (format!("spike:1:{}é", &HEX[..62]), InvalidHex),
            (
                format!("spike:1:{}é", &HEX[..63]),
                InvalidValueLength { len: 65 },
            ),
        ];
        for (input, want) in cases {
            assert_eq!(parse(&input), Err(want), "input {input:?}");
        }
    }
}
