//! The test CA's fixtures parse (or fail to parse) as the `spiffe` crate expects.

use spiffe::{SpiffeId, X509Svid};
use spike_testkit::TestPki;

#[test]
fn valid_svid_parses_with_its_id() {
    let pki = TestPki::new().unwrap();
    let svid = pki.svid("spiffe://spike.test/spike/nexus").unwrap();
    let parsed = X509Svid::parse_from_der(&svid.chain_der_concat(), svid.key_pkcs8_der()).unwrap();
    assert_eq!(
        parsed.spiffe_id(),
        &SpiffeId::new("spiffe://spike.test/spike/nexus").unwrap()
    );
}

#[test]
fn no_uri_san_svid_is_rejected_by_the_parser() {
    let pki = TestPki::new().unwrap();
    let svid = pki.no_uri_san_svid("spiffe://spike.test/x").unwrap();
    assert!(X509Svid::parse_from_der(&svid.chain_der_concat(), svid.key_pkcs8_der()).is_err());
}

#[test]
fn foreign_svid_is_in_the_foreign_trust_domain() {
    let pki = TestPki::new().unwrap();
    let svid = pki
        .foreign_svid("spiffe://spike.test/spike/keeper")
        .unwrap();
    assert_eq!(svid.spiffe_id(), "spiffe://other.test/spike/keeper");
    assert_eq!(svid.bundle(), pki.foreign_ca().root_der());
    assert_ne!(svid.bundle(), pki.ca().root_der());
}

#[test]
fn expired_svid_is_past_its_validity() {
    let pki = TestPki::new().unwrap();
    let svid = pki.expired_svid("spiffe://spike.test/x").unwrap();
    // It still parses (expiry is checked by verifiers and by X509Source's picker).
    let parsed = X509Svid::parse_from_der(&svid.chain_der_concat(), svid.key_pkcs8_der()).unwrap();
    assert_eq!(parsed.spiffe_id().path(), "/x");
}
