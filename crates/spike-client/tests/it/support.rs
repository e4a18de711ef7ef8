//! A tiny mTLS HTTP/1.1 server and testkit identities.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use spike_client::{BaseUrl, ClientOptions};
use spike_identity::{Identity, IdentityOptions, MtlsAcceptor, SpiffeId};
use spike_proto::{TrustRoot, TrustRoots};
use spike_testkit::{TestPki, WorkloadApiServer};
use tokio::net::TcpListener;

pub(crate) const NEXUS: &str = "spiffe://spike.test/spike/nexus";
pub(crate) const KEEPER: &str = "spiffe://spike.test/spike/keeper";
pub(crate) const PILOT: &str = "spiffe://spike.test/spike/pilot/role/superuser";
pub(crate) const BOOTSTRAP: &str = "spiffe://spike.test/spike/bootstrap";

pub(crate) fn roots() -> TrustRoots {
    TrustRoots::uniform(TrustRoot::new("spike.test").unwrap())
}

pub(crate) fn options() -> ClientOptions {
    ClientOptions::with_timeout(Duration::from_secs(5))
}

/// One Workload API server for all test identities.
pub(crate) struct Ids {
    _pki: TestPki,
    _server: WorkloadApiServer,
    pub(crate) nexus: Identity,
    pub(crate) keeper: Identity,
    pub(crate) pilot: Identity,
    pub(crate) bootstrap: Identity,
}

pub(crate) async fn ids() -> Ids {
    let pki = TestPki::new().unwrap();
    let server =
        WorkloadApiServer::start_in_tempdir(&pki, &[NEXUS, KEEPER, PILOT, BOOTSTRAP]).unwrap();
    let connect = |id: &str| {
        Identity::connect_with(IdentityOptions {
            endpoint: Some(server.endpoint()),
            timeout: Duration::from_secs(5),
            expected_id: Some(SpiffeId::new(id).unwrap()),
            trust_domains: None,
        })
    };
    let nexus = connect(NEXUS).await.unwrap();
    let keeper = connect(KEEPER).await.unwrap();
    let pilot = connect(PILOT).await.unwrap();
    let bootstrap = connect(BOOTSTRAP).await.unwrap();
    Ids {
        _pki: pki,
        _server: server,
        nexus,
        keeper,
        pilot,
        bootstrap,
    }
}

/// What the server saw of one request.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) method: String,
    pub(crate) target: String,
    pub(crate) content_type: Option<String>,
    pub(crate) body: Vec<u8>,
    pub(crate) peer: String,
}

/// The canned answer: status, content type, body.
pub(crate) type Answer = (u16, &'static str, Vec<u8>);

pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    pub(crate) seen: Arc<Mutex<Vec<Seen>>>,
    pub(crate) answer: Arc<Mutex<Answer>>,
    pub(crate) connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    pub(crate) fn url(&self) -> BaseUrl {
        BaseUrl::parse(&format!("https://127.0.0.1:{}", self.addr.port())).unwrap()
    }

    pub(crate) fn set(&self, status: u16, body: &str) {
        *self.answer.lock() = (status, "application/json", body.as_bytes().to_vec());
    }

    pub(crate) fn last(&self) -> Seen {
        self.seen.lock().last().cloned().unwrap()
    }

    /// Serves `identity` over mTLS, accepting clients that pass `authorize`.
    pub(crate) async fn start(
        identity: &Identity,
        authorize: impl Fn(&SpiffeId) -> bool + Send + Sync + 'static,
    ) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = MtlsAcceptor::new(
            identity.server_config(authorize).unwrap(),
            Duration::from_secs(5),
        );
        let seen = Arc::new(Mutex::new(Vec::new()));
        let answer = Arc::new(Mutex::new((200, "application/json", b"{}".to_vec())));
        let connections = Arc::new(AtomicUsize::new(0));
        let (s, a, c) = (seen.clone(), answer.clone(), connections.clone());
        let task = tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let acceptor = acceptor.clone();
                let (seen, answer, conns) = (s.clone(), a.clone(), c.clone());
                tokio::spawn(async move {
                    let Ok((tls, peer)) = acceptor.accept(tcp).await else {
                        return;
                    };
                    conns.fetch_add(1, Ordering::SeqCst);
                    let service =
                        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                            let seen = seen.clone();
                            let answer = answer.clone();
                            let peer = peer.to_string();
                            async move {
                                let method = req.method().to_string();
                                let target = req.uri().to_string();
                                let content_type = req
                                    .headers()
                                    .get("content-type")
                                    .map(|v| v.to_str().unwrap().to_owned());
                                let body =
                                    req.into_body().collect().await.unwrap().to_bytes().to_vec();
                                seen.lock().push(Seen {
                                    method,
                                    target,
                                    content_type,
                                    body,
                                    peer,
                                });
                                let (status, ct, body) = answer.lock().clone();
                                let resp = Response::builder()
                                    .status(status)
                                    .header("content-type", ct)
                                    .body(Full::new(Bytes::from(body)))
                                    .unwrap();
                                Ok::<_, Infallible>(resp)
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        TestServer {
            addr,
            seen,
            answer,
            connections,
            task,
        }
    }
}
