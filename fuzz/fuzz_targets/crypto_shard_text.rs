//! The `spike:<id>:<hex>` recovery-shard text (what `spike operator restore` reads).
//!
//! A line that parses must format back to a line that parses to the same shard.

#![no_main]

use libfuzzer_sys::fuzz_target;
use spike_crypto::shard_text;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(shard) = shard_text::parse(text) else {
        return;
    };
    let formatted = shard_text::format(&shard);
    match shard_text::parse(&formatted) {
        Ok(again) => assert!(again == shard, "format/parse round trip changed the shard"),
        Err(e) => panic!("formatted shard does not parse: {e}"),
    }
});
