//! `Identity::connect`: bounded waits with clear errors, SVID selection, rotation signal.

use std::time::Duration;

use spike_identity::{Identity, IdentityError, IdentityOptions, SpiffeId};
use spike_testkit::{ServeMode, TestPki, WorkloadApiServer};
use tokio::time::Instant;

use crate::support::{KEEPER, NEXUS, identity};

#[tokio::test]
async fn missing_socket_fails_in_bounded_time_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("unix:{}/nothing-here.sock", dir.path().display());
    let start = Instant::now();
    let err = Identity::connect(Some(&endpoint), Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(3));
    assert!(matches!(err, IdentityError::Timeout { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("nothing-here.sock"), "{msg}");
}

#[tokio::test]
async fn malformed_endpoint_is_reported_immediately() {
    let err = Identity::connect(Some("http://not-a-socket"), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(
        matches!(err, IdentityError::InvalidEndpoint { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("http://not-a-socket"));
}

#[tokio::test]
async fn expired_svids_from_the_agent_never_yield_an_identity() {
    let pki = TestPki::new().unwrap();
    let server = WorkloadApiServer::start_in_tempdir(&pki, &[NEXUS]).unwrap();
    server.set_mode(ServeMode::Expired).unwrap();
    let err = Identity::connect(Some(&server.endpoint()), Duration::from_millis(500))
        .await
        .unwrap_err();
    assert!(matches!(err, IdentityError::Timeout { .. }), "{err:?}");
    assert!(err.to_string().contains(&server.endpoint()));
}

#[tokio::test]
async fn expected_id_selects_among_several_svids() {
    let pki = TestPki::new().unwrap();
    let server = WorkloadApiServer::start_in_tempdir(&pki, &[KEEPER, NEXUS]).unwrap();
    let identity = Identity::connect_with(IdentityOptions {
        endpoint: Some(server.endpoint()),
        timeout: Duration::from_secs(5),
        expected_id: Some(SpiffeId::new(NEXUS).unwrap()),
        ..IdentityOptions::default()
    })
    .await
    .unwrap();
    assert_eq!(identity.own_id().to_string(), NEXUS);
    assert_eq!(
        identity.accepted_trust_domains()[0].to_string(),
        "spike.test"
    );

    // Without the expectation the first (default) SVID wins.
    let default = Identity::connect(Some(&server.endpoint()), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(default.own_id().to_string(), KEEPER);
}

#[tokio::test]
async fn expected_id_that_never_arrives_is_named_in_the_error() {
    let pki = TestPki::new().unwrap();
    let server = WorkloadApiServer::start_in_tempdir(&pki, &[KEEPER]).unwrap();
    let err = Identity::connect_with(IdentityOptions {
        endpoint: Some(server.endpoint()),
        timeout: Duration::from_millis(400),
        expected_id: Some(SpiffeId::new(NEXUS).unwrap()),
        ..IdentityOptions::default()
    })
    .await
    .unwrap_err();
    assert!(err.to_string().contains(NEXUS), "{err}");
}

#[tokio::test]
async fn updates_signal_rotation() {
    let pki = TestPki::new().unwrap();
    let (server, identity) = identity(&pki, NEXUS).await;
    let before = identity.current_svid().unwrap();
    let mut updates = identity.updates();
    server.rotate().unwrap();
    tokio::time::timeout(Duration::from_secs(5), updates.changed())
        .await
        .unwrap()
        .unwrap();
    let after = identity.current_svid().unwrap();
    assert_ne!(before.leaf(), after.leaf());
    assert!(identity.is_healthy());
    identity.shutdown().await;
}
