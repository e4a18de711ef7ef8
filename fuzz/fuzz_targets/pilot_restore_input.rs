//! The pilot's restore input (`spike operator restore` reads one shard line from the
//! terminal or standard input).

#![no_main]

use libfuzzer_sys::fuzz_target;
use spike_pilot::commands::operator::parse_restore_input;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(shard) = parse_restore_input(text) {
        assert_ne!(shard.id(), 0);
    }
});
