//! Every `spike_proto::validate` rule, SPIFFE-ID helpers, base64, RFC 3339 and error codes
//! on arbitrary strings.

#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use spike_proto::serde_helpers::{decode_base64, encode_base64, parse_rfc3339};
use spike_proto::spiffe_id::{TrustRoot, TrustRoots};
use spike_proto::{ErrorCode, validate};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = validate::name(s);
    let _ = validate::secret_path(s);
    let _ = validate::spiffe_id_pattern(s);
    let _ = validate::path_pattern(s);
    let _ = validate::peer_spiffe_id(s);
    let perms: Vec<&str> = s.split(',').collect();
    let _ = validate::permissions(&perms);
    let mut values = BTreeMap::new();
    for key in s.split('\n') {
        values.insert(key.to_owned(), String::new());
    }
    let _ = validate::secret_value_keys(&values);
    if let Ok(id) = s.parse::<i64>() {
        let _ = validate::restore_id(id, 1000);
    }

    if let Ok(root) = TrustRoot::new(s) {
        let roots = TrustRoots::uniform(root);
        let _ = roots.role_of(s);
        let _ = roots.trust_domain_names(&[]);
    }
    let _ = TrustRoots::default().role_of(s);

    if let Ok(bytes) = decode_base64(s) {
        assert_eq!(decode_base64(&encode_base64(&bytes)).ok(), Some(bytes));
    }
    let _ = parse_rfc3339(s);
    let code = ErrorCode::from_wire(s);
    let _ = code.http_status();
    assert_eq!(code.as_str(), s);
});
