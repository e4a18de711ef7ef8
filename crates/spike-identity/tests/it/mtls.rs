//! Mutual TLS between identities: mutual ID checks, rejections and rotation.

use std::time::Duration;

use spike_identity::{IdentityOptions, SpiffeId, allow_any, allow_ids, parse_trust_domains};
use spike_testkit::TestPki;

use crate::support::{
    KEEPER, NEXUS, PILOT, handshake, identity, identity_with, raw_anonymous_client, raw_client,
    raw_server, serial,
};

fn id(s: &str) -> SpiffeId {
    SpiffeId::new(s).unwrap()
}

#[tokio::test]
async fn both_ends_authenticate_each_other() {
    let pki = TestPki::new().unwrap();
    let (_wk, keeper) = identity(&pki, KEEPER).await;
    let (_wn, nexus) = identity(&pki, NEXUS).await;

    let server = keeper.server_config(allow_ids([id(NEXUS)])).unwrap();
    let client = nexus.client_config(allow_ids([id(KEEPER)])).unwrap();
    let out = handshake(server, client).await;

    assert_eq!(out.server.unwrap().spiffe_id(), &id(NEXUS));
    let (server_peer, leaf) = out.client.unwrap();
    assert_eq!(server_peer.to_string(), KEEPER);
    assert_eq!(
        leaf.as_ref(),
        keeper.current_svid().unwrap().leaf().as_bytes()
    );
}

#[tokio::test]
async fn server_rejects_an_unexpected_client_id() {
    let pki = TestPki::new().unwrap();
    let (_wk, keeper) = identity(&pki, KEEPER).await;
    let (_wp, pilot) = identity(&pki, PILOT).await;

    let server = keeper.server_config(allow_ids([id(NEXUS)])).unwrap();
    let client = pilot.client_config(allow_any()).unwrap();
    let out = handshake(server, client).await;
    let err = out.server.unwrap_err();
    assert!(err.to_string().contains("not authorized"), "{err}");
    // The accept loop's log line names the rejected client's SPIFFE ID and the reason.
    assert_eq!(
        err.describe(),
        format!("client {PILOT} rejected: SPIFFE ID not authorized")
    );
    let rejected = spike_identity::PeerRejected::find(&err).unwrap();
    assert_eq!(
        rejected.1.as_ref().map(ToString::to_string).as_deref(),
        Some(PILOT)
    );
}

#[tokio::test]
async fn client_rejects_an_unexpected_server_id() {
    let pki = TestPki::new().unwrap();
    let (_wn, nexus) = identity(&pki, NEXUS).await;
    let (_wp, pilot) = identity(&pki, PILOT).await;

    // Pilot expects Nexus but reaches a server presenting Pilot's own kind of ID.
    let (_wx, impostor) = identity(&pki, "spiffe://spike.test/spike/impostor").await;
    let server = impostor.server_config(allow_any()).unwrap();
    let client = pilot.client_config(allow_ids([id(NEXUS)])).unwrap();
    let out = handshake(server, client).await;
    let err = out.client.unwrap_err().to_string();
    assert!(err.contains("not authorized"), "{err}");
    assert!(out.server.is_err());

    // The same client accepts the real Nexus.
    let server = nexus.server_config(allow_any()).unwrap();
    let client = pilot.client_config(allow_ids([id(NEXUS)])).unwrap();
    assert!(handshake(server, client).await.client.is_ok());
}

#[tokio::test]
async fn expired_client_svid_is_rejected() {
    let pki = TestPki::new().unwrap();
    let (_wn, nexus) = identity(&pki, NEXUS).await;
    let server = nexus.server_config(allow_any()).unwrap();

    let out = handshake(
        server.clone(),
        raw_client(&pki.expired_svid(PILOT).unwrap()),
    )
    .await;
    let err = out.server.unwrap_err().to_string();
    assert!(err.to_lowercase().contains("expired"), "{err}");

    // Control: a valid SVID from the same CA passes the same server.
    let out = handshake(server, raw_client(&pki.svid(PILOT).unwrap())).await;
    assert_eq!(out.server.unwrap().to_string(), PILOT);
}

#[tokio::test]
async fn expired_server_svid_is_rejected() {
    let pki = TestPki::new().unwrap();
    let (_wp, pilot) = identity(&pki, PILOT).await;
    let client = pilot.client_config(allow_any()).unwrap();
    let out = handshake(raw_server(&pki.expired_svid(NEXUS).unwrap()), client).await;
    let err = out.client.unwrap_err().to_string();
    assert!(err.to_lowercase().contains("expired"), "{err}");
}

#[tokio::test]
async fn other_trust_domain_is_rejected_even_with_its_bundle_present() {
    let pki = TestPki::new().unwrap();
    let (wn, nexus) = identity(&pki, NEXUS).await;
    // The agent also delivers the foreign root as a federated bundle.
    let mut updates = nexus.updates();
    wn.set_federated(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), updates.changed())
        .await
        .unwrap()
        .unwrap();

    let foreign = pki.foreign_svid(PILOT).unwrap();
    let server = nexus.server_config(allow_any()).unwrap();
    let out = handshake(server, raw_client(&foreign)).await;
    let err = out.server.unwrap_err().to_string();
    assert!(err.contains("trust domain not accepted"), "{err}");

    let client = nexus.client_config(allow_any()).unwrap();
    let out = handshake(raw_server(&foreign), client).await;
    assert!(out.client.is_err());
}

#[tokio::test]
async fn foreign_svid_signed_by_the_wrong_ca_is_rejected() {
    // A cert claiming the local trust domain but signed by the foreign root.
    let pki = TestPki::new().unwrap();
    let (_wn, nexus) = identity(&pki, NEXUS).await;
    let forged = pki.foreign_ca().issue(PILOT).unwrap();
    let out = handshake(
        nexus.server_config(allow_any()).unwrap(),
        raw_client(&forged),
    )
    .await;
    let err = out.server.unwrap_err().to_string();
    assert!(
        err.contains("UnknownIssuer") || err.contains("unknown"),
        "{err}"
    );
}

#[tokio::test]
async fn accepted_trust_domains_can_include_a_federated_one() {
    let pki = TestPki::new().unwrap();
    let options = IdentityOptions {
        trust_domains: Some(parse_trust_domains(["spike.test", "other.test"]).unwrap()),
        ..IdentityOptions::default()
    };
    let (wn, nexus) = identity_with(&pki, NEXUS, options).await;
    let mut updates = nexus.updates();
    wn.set_federated(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), updates.changed())
        .await
        .unwrap()
        .unwrap();

    let foreign = pki.foreign_svid(PILOT).unwrap();
    let out = handshake(
        nexus.server_config(allow_any()).unwrap(),
        raw_client(&foreign),
    )
    .await;
    assert_eq!(
        out.server.unwrap().to_string(),
        "spiffe://other.test/spike/pilot/role/superuser"
    );
}

#[tokio::test]
async fn svid_without_uri_san_is_rejected() {
    let pki = TestPki::new().unwrap();
    let (_wn, nexus) = identity(&pki, NEXUS).await;
    let bad = pki.no_uri_san_svid(PILOT).unwrap();

    let out = handshake(nexus.server_config(allow_any()).unwrap(), raw_client(&bad)).await;
    let err = out.server.unwrap_err().to_string();
    assert!(err.contains("SPIFFE ID"), "{err}");

    let out = handshake(raw_server(&bad), nexus.client_config(allow_any()).unwrap()).await;
    let err = out.client.unwrap_err().to_string();
    assert!(err.contains("SPIFFE ID"), "{err}");
}

#[tokio::test]
async fn client_without_certificate_is_rejected() {
    let pki = TestPki::new().unwrap();
    let (_wn, nexus) = identity(&pki, NEXUS).await;
    let out = handshake(
        nexus.server_config(allow_any()).unwrap(),
        raw_anonymous_client(),
    )
    .await;
    assert!(out.server.is_err());
}

#[tokio::test]
async fn rotation_is_used_by_new_handshakes_without_rebuilding_configs() {
    let pki = TestPki::new().unwrap();
    let (wn, nexus) = identity(&pki, NEXUS).await;
    let (_wp, pilot) = identity(&pki, PILOT).await;
    let server = nexus.server_config(allow_any()).unwrap();
    let client = pilot.client_config(allow_ids([id(NEXUS)])).unwrap();

    let (_, before) = handshake(server.clone(), client.clone())
        .await
        .client
        .unwrap();
    assert_eq!(serial(&before), serial(wn.current_svids()[0].leaf()));

    let mut updates = nexus.updates();
    let rotated = wn.rotate().unwrap();
    tokio::time::timeout(Duration::from_secs(5), updates.changed())
        .await
        .unwrap()
        .unwrap();

    let (peer, after) = handshake(server, client).await.client.unwrap();
    assert_eq!(peer.to_string(), NEXUS);
    assert_ne!(serial(&after), serial(&before));
    assert_eq!(serial(&after), serial(rotated[0].leaf()));
    assert_eq!(serial(&after), rotated[0].serial());
}
