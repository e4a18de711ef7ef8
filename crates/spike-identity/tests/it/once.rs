//! `Identity::fetch_once`: one Workload API call, closed after its answer, usable for mTLS.

use std::time::Duration;

use spike_identity::{Identity, IdentityError, IdentityOptions, SpiffeId, allow_any, allow_ids};
use spike_testkit::{ServeMode, TestPki, WorkloadApiServer};

use crate::support::{KEEPER, NEXUS, PILOT, TIMEOUT, handshake, identity};

fn options(server: &WorkloadApiServer) -> IdentityOptions {
    IdentityOptions {
        endpoint: Some(server.endpoint()),
        timeout: TIMEOUT,
        ..IdentityOptions::default()
    }
}

#[tokio::test]
async fn one_call_and_no_stream_left_open() {
    let pki = TestPki::new().unwrap();
    let server = WorkloadApiServer::start_in_tempdir(&pki, &[PILOT]).unwrap();
    let pilot = Identity::fetch_once(options(&server)).await.unwrap();
    assert_eq!(pilot.own_id().to_string(), PILOT);
    assert!(pilot.x509_source().is_none());
    assert!(pilot.is_healthy());
    // Exactly one Fetch call, and nothing in the background opens another (an
    // X509Source opens a second, watching stream right after its first answer).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.fetch_count(), 1);
    // A one-shot identity never changes.
    assert!(pilot.updates().changed().await.is_err());
    pilot.shutdown().await;

    // For contrast: the long-lived source makes a second call that stays open.
    let live = Identity::connect_with(options(&server)).await.unwrap();
    tokio::time::timeout(TIMEOUT, async {
        while server.fetch_count() < 3 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the X509Source opens its watching stream");
    live.shutdown().await;
}

#[tokio::test]
async fn one_shot_identity_does_mtls_with_a_live_one() {
    let pki = TestPki::new().unwrap();
    let (_wn, nexus) = identity(&pki, NEXUS).await;
    let wp = WorkloadApiServer::start_in_tempdir(&pki, &[PILOT]).unwrap();
    let pilot = Identity::fetch_once(options(&wp)).await.unwrap();
    let server = nexus.server_config(allow_any()).unwrap();
    let client = pilot
        .client_config(allow_ids([SpiffeId::new(NEXUS).unwrap()]))
        .unwrap();
    let out = handshake(server, client).await;
    assert_eq!(out.server.unwrap().spiffe_id().to_string(), PILOT);
    assert_eq!(out.client.unwrap().0.spiffe_id().to_string(), NEXUS);
}

#[tokio::test]
async fn expected_id_and_bounded_failures() {
    let pki = TestPki::new().unwrap();
    let server = WorkloadApiServer::start_in_tempdir(&pki, &[KEEPER, NEXUS]).unwrap();
    let nexus = Identity::fetch_once(IdentityOptions {
        expected_id: Some(SpiffeId::new(NEXUS).unwrap()),
        ..options(&server)
    })
    .await
    .unwrap();
    assert_eq!(nexus.own_id().to_string(), NEXUS);

    // Expired SVIDs never yield an identity: a timeout naming the endpoint.
    server.set_mode(ServeMode::Expired).unwrap();
    let err = Identity::fetch_once(IdentityOptions {
        timeout: Duration::from_millis(500),
        ..options(&server)
    })
    .await
    .unwrap_err();
    assert!(matches!(err, IdentityError::Timeout { .. }), "{err:?}");
    assert!(err.to_string().contains(&server.endpoint()), "{err}");

    let err = Identity::fetch_once(IdentityOptions {
        endpoint: Some("http://not-a-socket".into()),
        ..IdentityOptions::default()
    })
    .await
    .unwrap_err();
    assert!(
        matches!(err, IdentityError::InvalidEndpoint { .. }),
        "{err:?}"
    );
}
