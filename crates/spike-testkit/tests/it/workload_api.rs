//! `spiffe::X509Source` and `WorkloadApiClient` against the in-process Workload API server.

use std::time::Duration;

use spiffe::{SpiffeId, TrustDomain, WorkloadApiClient, X509Source};
use spike_testkit::{ServeMode, TestPki, TestkitError, WorkloadApiServer, fetch_x509_svid_raw};

const NEXUS: &str = "spiffe://spike.test/spike/nexus";

async fn source(server: &WorkloadApiServer) -> Result<X509Source, spiffe::X509SourceError> {
    X509Source::builder()
        .endpoint(server.endpoint())
        .initial_sync_timeout(Duration::from_secs(2))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .build()
        .await
}

fn serial_of(svid: &spiffe::X509Svid) -> Vec<u8> {
    // The testkit's serial encoding is 9 bytes; compare the raw leaf instead of parsing.
    svid.leaf().as_bytes().to_vec()
}

#[tokio::test]
async fn x509_source_obtains_the_served_svid_and_bundle() {
    let pki = TestPki::new().unwrap();
    let server = WorkloadApiServer::start_in_tempdir(&pki, &[NEXUS]).unwrap();
    let source = source(&server).await.unwrap();

    let svid = source.svid().unwrap();
    assert_eq!(svid.spiffe_id(), &SpiffeId::new(NEXUS).unwrap());
    assert_eq!(
        svid.leaf().as_bytes(),
        server.current_svids()[0].leaf().as_ref()
    );
    let td = TrustDomain::new("spike.test").unwrap();
    let bundle = source.try_bundle_for_trust_domain(&td).unwrap();
    assert_eq!(
        bundle.authorities()[0].as_bytes(),
        pki.ca().root_der().as_ref()
    );
    assert!(server.fetch_count() >= 1);
    source.shutdown().await;
}

#[tokio::test]
async fn rotation_is_pushed_to_the_source() {
    let pki = TestPki::new().unwrap();
    let server = WorkloadApiServer::start_in_tempdir(&pki, &[NEXUS]).unwrap();
    let source = source(&server).await.unwrap();
    let before = serial_of(&source.svid().unwrap());
    let mut updates = source.updated();

    let rotated = server.rotate().unwrap();
    tokio::time::timeout(Duration::from_secs(5), updates.changed())
        .await
        .expect("no update within 5s")
        .unwrap();

    let after = source.svid().unwrap();
    assert_ne!(serial_of(&after), before);
    assert_eq!(after.leaf().as_bytes(), rotated[0].leaf().as_ref());
    source.shutdown().await;
}

#[tokio::test]
async fn set_svids_switches_identity() {
    let pki = TestPki::new().unwrap();
    let server = WorkloadApiServer::start_in_tempdir(&pki, &[NEXUS]).unwrap();
    let source = source(&server).await.unwrap();
    let mut updates = source.updated();

    let keeper = "spiffe://spike.test/spike/keeper";
    server.set_svids(&[keeper, NEXUS]).unwrap();
    tokio::time::timeout(Duration::from_secs(5), updates.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(source.svid().unwrap().spiffe_id().to_string(), keeper);
    assert_eq!(source.x509_context().unwrap().svids().len(), 2);
    source.shutdown().await;
}

#[tokio::test]
async fn missing_security_header_is_rejected() {
    let pki = TestPki::new().unwrap();
    let server = WorkloadApiServer::start_in_tempdir(&pki, &[NEXUS]).unwrap();

    let err = fetch_x509_svid_raw(server.socket_path(), false)
        .await
        .unwrap_err();
    match err {
        TestkitError::Status(status) => {
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert!(status.message().contains("security header"));
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert_eq!(server.rejected_count(), 1);

    let ok = fetch_x509_svid_raw(server.socket_path(), true)
        .await
        .unwrap();
    assert_eq!(ok.svids.len(), 1);
    assert_eq!(ok.svids[0].spiffe_id, NEXUS);
    assert_eq!(server.rejected_count(), 1);
}

#[tokio::test]
async fn bundles_rpc_serves_the_trust_domain_root() {
    let pki = TestPki::new().unwrap();
    let server = WorkloadApiServer::start_in_tempdir(&pki, &[NEXUS]).unwrap();
    server.set_federated(true).unwrap();
    let client = WorkloadApiClient::connect_to(server.endpoint())
        .await
        .unwrap();
    let set = client.fetch_x509_bundles().await.unwrap();
    let own = set.get(&TrustDomain::new("spike.test").unwrap()).unwrap();
    assert_eq!(
        own.authorities()[0].as_bytes(),
        pki.ca().root_der().as_ref()
    );
    let foreign = set.get(&TrustDomain::new("other.test").unwrap()).unwrap();
    assert_eq!(
        foreign.authorities()[0].as_bytes(),
        pki.foreign_ca().root_der().as_ref()
    );
}

#[tokio::test]
async fn foreign_mode_serves_the_foreign_trust_domain() {
    let pki = TestPki::new().unwrap();
    let server = WorkloadApiServer::start_in_tempdir(&pki, &[NEXUS]).unwrap();
    server.set_mode(ServeMode::ForeignTrustDomain).unwrap();
    let source = source(&server).await.unwrap();
    assert_eq!(
        source.svid().unwrap().spiffe_id().to_string(),
        "spiffe://other.test/spike/nexus"
    );
    source.shutdown().await;
}

#[tokio::test]
async fn bad_modes_never_yield_a_source() {
    let pki = TestPki::new().unwrap();
    for mode in [
        ServeMode::Expired,
        ServeMode::NoUriSan,
        ServeMode::NoIdentity,
    ] {
        let server = WorkloadApiServer::start_in_tempdir(&pki, &[NEXUS]).unwrap();
        server.set_mode(mode).unwrap();
        let result = X509Source::builder()
            .endpoint(server.endpoint())
            .initial_sync_timeout(Duration::from_millis(500))
            .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(100))
            .build()
            .await;
        assert!(result.is_err(), "{mode:?} produced a source");
    }
}

#[tokio::test]
async fn stop_ends_streams_and_removes_the_socket() {
    let pki = TestPki::new().unwrap();
    let server = WorkloadApiServer::start_in_tempdir(&pki, &[NEXUS]).unwrap();
    let path = server.socket_path().to_owned();
    let source = source(&server).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), server.stop())
        .await
        .expect("stop hung");
    assert!(!path.exists());
    // The source keeps its last material after the agent goes away.
    assert!(source.svid().is_ok());
    source.shutdown().await;
}
