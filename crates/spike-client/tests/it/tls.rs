//! Server authorization, rejections and timeouts.

use std::time::Duration;

use spike_client::{BaseUrl, ClientError, ClientOptions, KeeperClient, NexusClient};
use spike_identity::SpiffeId;
use spike_proto::ShardBytes;
use tokio::net::TcpListener;

use crate::support::{NEXUS, PILOT, TestServer, ids, options, roots};

#[tokio::test]
async fn wrong_server_spiffe_id_is_rejected() {
    let ids = ids().await;
    // A "keeper" URL served by a workload with the Pilot ID.
    let server = TestServer::start(&ids.pilot, |_: &SpiffeId| true).await;
    let keeper = KeeperClient::new(&ids.nexus, server.url(), &roots(), options()).unwrap();
    let err = keeper
        .contribute(ShardBytes::new([1; 32]))
        .await
        .unwrap_err();
    match &err {
        ClientError::ServerRejected {
            presented,
            reason,
            url,
        } => {
            assert_eq!(presented.as_deref(), Some(PILOT));
            assert!(reason.contains("not authorized"), "{reason}");
            assert!(url.contains("127.0.0.1"), "{url}");
        }
        other => panic!("expected ServerRejected, got {other:?}"),
    }
    assert!(err.is_tls_rejection());
    assert!(err.to_string().contains(PILOT), "{err}");
    assert!(
        server.seen.lock().is_empty(),
        "no request reached the server"
    );

    // The same server is fine for a client that expects exactly that ID.
    let pilot_id = SpiffeId::new(PILOT).unwrap();
    let ok = NexusClient::with_authorizer(
        &ids.nexus,
        server.url(),
        move |id| *id == pilot_id,
        options(),
    )
    .unwrap();
    ok.put_secret("x", Default::default()).await.unwrap();
}

#[tokio::test]
async fn server_rejecting_our_id_is_reported() {
    let ids = ids().await;
    let nexus_id = SpiffeId::new(NEXUS).unwrap();
    let server = TestServer::start(&ids.keeper, move |id: &SpiffeId| *id == nexus_id).await;
    let keeper = KeeperClient::new(&ids.pilot, server.url(), &roots(), options()).unwrap();
    let err = keeper
        .contribute(ShardBytes::new([1; 32]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::RejectedByServer { .. }),
        "expected RejectedByServer, got {err:?}"
    );
    assert!(err.is_tls_rejection());
    assert!(server.seen.lock().is_empty());
}

#[tokio::test]
async fn silent_servers_time_out() {
    let ids = ids().await;
    // Accepts TCP, never speaks TLS.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            held.push(tcp);
        }
    });
    let url = BaseUrl::parse(&format!("https://127.0.0.1:{port}")).unwrap();
    let mut opts = ClientOptions::with_timeout(Duration::from_secs(5));
    opts.handshake_timeout = Duration::from_millis(300);
    let nexus = NexusClient::new(&ids.pilot, url.clone(), &roots(), opts).unwrap();
    let start = tokio::time::Instant::now();
    let err = nexus.list_secrets().await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Timeout {
                phase: "TLS handshake",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(3));
    assert!(err.is_unreachable());
    assert!(err.is_unsent(), "nothing was sent: {err:?}");

    // The whole-request bound also applies; it names the phase it stopped in (the
    // handshake), so the caller knows the request was never sent.
    let mut opts = ClientOptions::with_timeout(Duration::from_secs(5));
    opts.request_timeout = Duration::from_millis(300);
    let nexus = NexusClient::new(&ids.pilot, url, &roots(), opts).unwrap();
    let err = nexus.list_secrets().await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Timeout {
                phase: "TLS handshake",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("timed out after 300ms"), "{err}");
    assert!(err.is_unsent(), "nothing was sent: {err:?}");
    hold.abort();
}

#[tokio::test]
async fn server_that_never_answers_times_out() {
    let ids = ids().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = spike_identity::MtlsAcceptor::new(
        ids.nexus.server_config(|_: &SpiffeId| true).unwrap(),
        Duration::from_secs(5),
    );
    // Completes the TLS handshake, then reads and never responds.
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            if let Ok((tls, _)) = acceptor.accept(tcp).await {
                held.push(tls);
            }
        }
    });
    let url = BaseUrl::parse(&format!("https://127.0.0.1:{port}")).unwrap();
    let mut opts = ClientOptions::with_timeout(Duration::from_secs(5));
    opts.response_header_timeout = Duration::from_millis(300);
    let nexus = NexusClient::new(&ids.pilot, url.clone(), &roots(), opts).unwrap();
    let err = nexus.get_secret("a", 0).await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Timeout {
                phase: "response headers",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_unsent(), "the request was sent: {err:?}");

    // The whole-request bound expiring after the request was sent is the request phase.
    let mut opts = ClientOptions::with_timeout(Duration::from_secs(5));
    opts.request_timeout = Duration::from_millis(300);
    let nexus = NexusClient::new(&ids.pilot, url, &roots(), opts).unwrap();
    let err = nexus.get_secret("a", 0).await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Timeout {
                phase: "request",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_unsent(), "the request was sent: {err:?}");
    hold.abort();
}

#[tokio::test]
async fn refused_connection_names_the_url() {
    let ids = ids().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let url = BaseUrl::parse(&format!("https://127.0.0.1:{port}")).unwrap();
    let nexus = NexusClient::new(&ids.pilot, url, &roots(), options()).unwrap();
    let err = nexus.list_secrets().await.unwrap_err();
    assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    assert!(err.is_unsent(), "{err:?}");
}

#[tokio::test]
async fn connection_cut_after_the_request_may_have_been_sent() {
    let ids = ids().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = spike_identity::MtlsAcceptor::new(
        ids.nexus.server_config(|_: &SpiffeId| true).unwrap(),
        Duration::from_secs(5),
    );
    // Completes the TLS handshake, reads the request, then closes without an answer.
    let hold = tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            if let Ok((mut tls, _)) = acceptor.accept(tcp).await {
                let mut buf = [0_u8; 4096];
                let _ = tokio::io::AsyncReadExt::read(&mut tls, &mut buf).await;
                drop(tls);
            }
        }
    });
    let url = BaseUrl::parse(&format!("https://127.0.0.1:{port}")).unwrap();
    let nexus = NexusClient::new(&ids.pilot, url, &roots(), options()).unwrap();
    let err = nexus.get_secret("a", 0).await.unwrap_err();
    assert!(matches!(err, ClientError::Transport { .. }), "{err:?}");
    assert!(!err.is_unsent(), "the request was sent: {err:?}");
    hold.abort();
}
