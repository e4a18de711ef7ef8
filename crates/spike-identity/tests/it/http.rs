//! The peer ID of a connection reaches HTTP handlers as a request extension (hyper over TCP).

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use spike_identity::{
    DEFAULT_HANDSHAKE_TIMEOUT, MtlsAcceptor, MtlsConnector, PeerId, SpiffeId, allow_any, allow_ids,
};
use spike_testkit::TestPki;
use tokio::net::{TcpListener, TcpStream};

use crate::support::{NEXUS, PILOT, identity, server_name};

#[tokio::test]
async fn peer_id_is_a_request_extension() {
    let pki = TestPki::new().unwrap();
    let (_wn, nexus) = identity(&pki, NEXUS).await;
    let (_wp, pilot) = identity(&pki, PILOT).await;

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = MtlsAcceptor::new(
        nexus.server_config(allow_any()).unwrap(),
        DEFAULT_HANDSHAKE_TIMEOUT,
    );
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        // A real server spawns one task per connection and handshakes there.
        let (tls, peer) = acceptor.accept(tcp).await.unwrap();
        let service = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(peer.clone());
            async move {
                let who = req
                    .extensions()
                    .get::<PeerId>()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(who))))
            }
        });
        hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(tls), service)
            .await
            .unwrap();
    });

    let connector = MtlsConnector::new(
        pilot
            .client_config(allow_ids([SpiffeId::new(NEXUS).unwrap()]))
            .unwrap(),
        DEFAULT_HANDSHAKE_TIMEOUT,
    );
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (tls, server_peer) = connector.connect(server_name(), tcp).await.unwrap();
    assert_eq!(server_peer.to_string(), NEXUS);

    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let request = Request::get("/whoami")
        .header(http::header::HOST, "nexus")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), http::StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, PILOT.as_bytes());

    drop(sender);
    conn.await.unwrap().unwrap();
    server.await.unwrap();
}
