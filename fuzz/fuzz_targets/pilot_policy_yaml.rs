//! The pilot's policy-file parser (`spike policy apply --file`): flat YAML with quoted
//! scalars, block and flow sequences and comments.

#![no_main]

use libfuzzer_sys::fuzz_target;
use spike_pilot::commands::policy::parse_policy_yaml;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(doc) = parse_policy_yaml(text) {
        assert!(!doc.name.is_empty());
        assert!(!doc.spiffe_id_pattern.is_empty());
        assert!(!doc.path_pattern.is_empty());
        assert!(!doc.permissions.is_empty());
    }
});
