//! An in-process SPIFFE Workload API server over a unix socket.
//!
//! It speaks the real gRPC protocol (`SpiffeWorkloadAPI/FetchX509SVID` and
//! `FetchX509Bundles`, both server-streaming), so `spiffe::X509Source` pointed at
//! [`WorkloadApiServer::endpoint`] talks to it unchanged. Like SPIRE's agent it rejects
//! requests without the `workload.spiffe.io: true` metadata header (`InvalidArgument`).
//!
//! Every change ([`WorkloadApiServer::set_svids`], [`WorkloadApiServer::rotate`],
//! [`WorkloadApiServer::set_mode`], ...) re-issues certificates and pushes one new message
//! to every connected stream.

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::StreamExt as _;
use parking_lot::Mutex;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{UnixListenerStream, WatchStream};
use tokio_util::sync::CancellationToken;
use tonic::codegen::{BoxFuture, BoxStream};
use tonic::server::{Grpc, NamedService, ServerStreamingService};
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;

use crate::ca::{Svid, SvidKind, TestCa, TestPki, foreign_id};
use crate::error::TestkitError;
use crate::proto::{
    FETCH_X509_BUNDLES, FETCH_X509_SVID, SECURITY_HEADER, SERVICE, X509BundlesRequest,
    X509BundlesResponse, X509Svid, X509SvidRequest, X509SvidResponse,
};

/// Name of the socket file inside the server's directory.
pub const SOCKET_NAME: &str = "agent.sock";

/// What the server hands out for the configured SPIFFE IDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ServeMode {
    /// Valid SVIDs from the trust domain under test.
    #[default]
    Valid,
    /// Expired SVIDs signed by the trusted CA.
    Expired,
    /// Valid SVIDs for the same paths in the foreign trust domain, with its bundle.
    ForeignTrustDomain,
    /// Leaf certificates without a URI SAN (the `spiffe_id` field is still set).
    NoUriSan,
    /// No identity: streams answer `PermissionDenied` like an agent with no entry.
    NoIdentity,
}

#[derive(Debug)]
struct State {
    ids: Vec<String>,
    mode: ServeMode,
    federate: bool,
}

#[derive(Clone, Debug)]
struct Published {
    /// `None` in [`ServeMode::NoIdentity`].
    svids: Option<Arc<X509SvidResponse>>,
    bundles: Arc<X509BundlesResponse>,
    issued: Arc<Vec<Svid>>,
}

#[derive(Debug)]
struct Shared {
    pki: TestPki,
    state: Mutex<State>,
    tx: watch::Sender<Published>,
    cancel: CancellationToken,
    fetches: AtomicUsize,
    rejected: AtomicUsize,
}

impl Shared {
    fn build(pki: &TestPki, state: &State) -> Result<Published, TestkitError> {
        let (own_ca, other_ca): (&TestCa, &TestCa) = match state.mode {
            ServeMode::ForeignTrustDomain => (pki.foreign_ca(), pki.ca()),
            _ => (pki.ca(), pki.foreign_ca()),
        };
        let mut issued = Vec::with_capacity(state.ids.len());
        for id in &state.ids {
            let svid = match state.mode {
                ServeMode::Valid | ServeMode::NoIdentity => pki.ca().issue(id)?,
                ServeMode::Expired => pki.ca().issue_with(id, SvidKind::Expired)?,
                ServeMode::NoUriSan => pki.ca().issue_with(id, SvidKind::NoUriSan)?,
                ServeMode::ForeignTrustDomain => pki.foreign_ca().issue(&foreign_id(id))?,
            };
            issued.push(svid);
        }
        let mut federated = HashMap::new();
        if state.federate {
            federated.insert(
                other_ca.trust_domain_id(),
                Bytes::copy_from_slice(other_ca.root_der()),
            );
        }
        let svids = (state.mode != ServeMode::NoIdentity).then(|| {
            Arc::new(X509SvidResponse {
                svids: issued
                    .iter()
                    .map(|s| X509Svid {
                        spiffe_id: s.spiffe_id().to_owned(),
                        x509_svid: Bytes::from(s.chain_der_concat()),
                        x509_svid_key: Bytes::copy_from_slice(s.key_pkcs8_der()),
                        bundle: Bytes::copy_from_slice(s.bundle()),
                        hint: String::new(),
                    })
                    .collect(),
                crl: Vec::new(),
                federated_bundles: federated.clone(),
            })
        });
        let mut bundles = federated;
        bundles.insert(
            own_ca.trust_domain_id(),
            Bytes::copy_from_slice(own_ca.root_der()),
        );
        Ok(Published {
            svids,
            bundles: Arc::new(X509BundlesResponse {
                crl: Vec::new(),
                bundles,
            }),
            issued: Arc::new(issued),
        })
    }

    /// Applies `change` to the state, re-issues and publishes; returns the new SVIDs.
    fn update(&self, change: impl FnOnce(&mut State)) -> Result<Vec<Svid>, TestkitError> {
        let published = {
            let mut state = self.state.lock();
            change(&mut state);
            Self::build(&self.pki, &state)?
        };
        let issued = published.issued.as_ref().clone();
        self.tx.send_replace(published);
        Ok(issued)
    }

    fn check_header<T>(&self, request: &Request<T>) -> Result<(), Status> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let ok = request
            .metadata()
            .get(SECURITY_HEADER)
            .is_some_and(|v| v.as_bytes() == b"true");
        if ok {
            Ok(())
        } else {
            self.rejected.fetch_add(1, Ordering::Relaxed);
            Err(Status::invalid_argument(
                "security header missing from request",
            ))
        }
    }
}

fn no_identity() -> Status {
    Status::permission_denied("no identity issued")
}

/// Handle to a running in-process Workload API server; dropping it stops the server.
#[derive(Debug)]
pub struct WorkloadApiServer {
    shared: Arc<Shared>,
    socket_path: PathBuf,
    task: Option<JoinHandle<()>>,
    _tempdir: Option<tempfile::TempDir>,
}

impl WorkloadApiServer {
    /// Starts a server on `<dir>/agent.sock` serving valid SVIDs for `spiffe_ids` (the first
    /// one is the default SVID) issued by `pki`. Must be called inside a Tokio runtime.
    ///
    /// # Errors
    /// [`TestkitError::Io`] if the socket cannot be bound, or a certificate error.
    pub fn start(dir: &Path, pki: &TestPki, spiffe_ids: &[&str]) -> Result<Self, TestkitError> {
        Self::start_inner(dir, pki, spiffe_ids, None)
    }

    /// Like [`Self::start`], in a fresh temporary directory owned by the returned handle.
    ///
    /// # Errors
    /// As [`Self::start`].
    pub fn start_in_tempdir(pki: &TestPki, spiffe_ids: &[&str]) -> Result<Self, TestkitError> {
        let dir = tempfile::Builder::new().prefix("spike-wl-").tempdir()?;
        let path = dir.path().to_owned();
        Self::start_inner(&path, pki, spiffe_ids, Some(dir))
    }

    fn start_inner(
        dir: &Path,
        pki: &TestPki,
        spiffe_ids: &[&str],
        tempdir: Option<tempfile::TempDir>,
    ) -> Result<Self, TestkitError> {
        let state = State {
            ids: spiffe_ids.iter().map(|s| (*s).to_owned()).collect(),
            mode: ServeMode::Valid,
            federate: false,
        };
        let published = Shared::build(pki, &state)?;
        let (tx, _rx) = watch::channel(published);
        let shared = Arc::new(Shared {
            pki: pki.clone(),
            state: Mutex::new(state),
            tx,
            cancel: CancellationToken::new(),
            fetches: AtomicUsize::new(0),
            rejected: AtomicUsize::new(0),
        });
        let socket_path = dir.join(SOCKET_NAME);
        let listener = UnixListener::bind(&socket_path)?;
        let incoming = UnixListenerStream::new(listener);
        let service = WorkloadApiService {
            shared: Arc::clone(&shared),
        };
        let shutdown = shared.cancel.clone().cancelled_owned();
        let task = tokio::spawn(async move {
            // A serve error only ends the test server; clients then see a dead socket.
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await;
        });
        Ok(Self {
            shared,
            socket_path,
            task: Some(task),
            _tempdir: tempdir,
        })
    }

    /// Path of the unix socket.
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// `unix:<absolute socket path>`, for `X509Source` / `SPIFFE_ENDPOINT_SOCKET`.
    pub fn endpoint(&self) -> String {
        format!("unix:{}", self.socket_path.display())
    }

    /// The PKI the server issues from.
    pub fn pki(&self) -> &TestPki {
        &self.shared.pki
    }

    /// Serves SVIDs for exactly these SPIFFE IDs (first = default), freshly issued, and
    /// pushes them to connected clients. Returns the new SVIDs.
    ///
    /// # Errors
    /// A certificate error if an ID is not a valid URI.
    pub fn set_svids(&self, spiffe_ids: &[&str]) -> Result<Vec<Svid>, TestkitError> {
        self.shared
            .update(|s| s.ids = spiffe_ids.iter().map(|s| (*s).to_owned()).collect())
    }

    /// Re-issues the current SVIDs (new keys, new serials) and pushes them.
    ///
    /// # Errors
    /// A certificate error.
    pub fn rotate(&self) -> Result<Vec<Svid>, TestkitError> {
        self.shared.update(|_| {})
    }

    /// Switches what kind of SVIDs are served, re-issues and pushes.
    ///
    /// # Errors
    /// A certificate error.
    pub fn set_mode(&self, mode: ServeMode) -> Result<Vec<Svid>, TestkitError> {
        self.shared.update(|s| s.mode = mode)
    }

    /// Includes (or not) the other trust domain's root as a federated bundle.
    ///
    /// # Errors
    /// A certificate error.
    pub fn set_federated(&self, federate: bool) -> Result<Vec<Svid>, TestkitError> {
        self.shared.update(|s| s.federate = federate)
    }

    /// The SVIDs currently served (empty list when no ID is configured).
    pub fn current_svids(&self) -> Vec<Svid> {
        self.shared.tx.borrow().issued.as_ref().clone()
    }

    /// Number of `Fetch*` calls received, accepted or not.
    pub fn fetch_count(&self) -> usize {
        self.shared.fetches.load(Ordering::Relaxed)
    }

    /// Number of calls rejected for a missing security header.
    pub fn rejected_count(&self) -> usize {
        self.shared.rejected.load(Ordering::Relaxed)
    }

    /// Stops the server: ends all streams, closes the listener and waits for the task.
    /// The socket file is removed so that a restart on the same path can bind.
    pub async fn stop(mut self) {
        self.shared.cancel.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        let _ = std::fs::remove_file(&self.socket_path);
    }
}

impl Drop for WorkloadApiServer {
    fn drop(&mut self) {
        self.shared.cancel.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The tower service routing the two Workload API methods, shaped like tonic's codegen.
#[derive(Clone, Debug)]
struct WorkloadApiService {
    shared: Arc<Shared>,
}

impl NamedService for WorkloadApiService {
    const NAME: &'static str = SERVICE;
}

impl tower::Service<http::Request<tonic::body::Body>> for WorkloadApiService {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let shared = Arc::clone(&self.shared);
        match req.uri().path() {
            FETCH_X509_SVID => Box::pin(async move {
                let mut grpc =
                    Grpc::new(ProstCodec::<X509SvidResponse, X509SvidRequest>::default());
                Ok(grpc.server_streaming(FetchX509Svid(shared), req).await)
            }),
            FETCH_X509_BUNDLES => Box::pin(async move {
                let mut grpc =
                    Grpc::new(ProstCodec::<X509BundlesResponse, X509BundlesRequest>::default());
                Ok(grpc.server_streaming(FetchX509Bundles(shared), req).await)
            }),
            _ => Box::pin(async move { Ok(Status::unimplemented("").into_http()) }),
        }
    }
}

struct FetchX509Svid(Arc<Shared>);

impl ServerStreamingService<X509SvidRequest> for FetchX509Svid {
    type Response = X509SvidResponse;
    type ResponseStream = BoxStream<X509SvidResponse>;
    type Future = BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: Request<X509SvidRequest>) -> Self::Future {
        let shared = Arc::clone(&self.0);
        Box::pin(async move {
            shared.check_header(&request)?;
            let rx = shared.tx.subscribe();
            if rx.borrow().svids.is_none() {
                return Err(no_identity());
            }
            let stream = WatchStream::new(rx)
                .map(|p| match p.svids {
                    Some(resp) => Ok(resp.as_ref().clone()),
                    None => Err(no_identity()),
                })
                .take_until(shared.cancel.clone().cancelled_owned());
            Ok(Response::new(Box::pin(stream) as Self::ResponseStream))
        })
    }
}

struct FetchX509Bundles(Arc<Shared>);

impl ServerStreamingService<X509BundlesRequest> for FetchX509Bundles {
    type Response = X509BundlesResponse;
    type ResponseStream = BoxStream<X509BundlesResponse>;
    type Future = BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: Request<X509BundlesRequest>) -> Self::Future {
        let shared = Arc::clone(&self.0);
        Box::pin(async move {
            shared.check_header(&request)?;
            let stream = WatchStream::new(shared.tx.subscribe())
                .map(|p| Ok(p.bundles.as_ref().clone()))
                .take_until(shared.cancel.clone().cancelled_owned());
            Ok(Response::new(Box::pin(stream) as Self::ResponseStream))
        })
    }
}

/// Opens a gRPC channel to a Workload API unix socket.
async fn channel(socket_path: &Path) -> Result<tonic::transport::Channel, TestkitError> {
    let path = socket_path.to_owned();
    // The URI is required by tonic but unused: the connector always dials the socket.
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let path = path.clone();
            async move {
                let stream = UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await?;
    Ok(channel)
}

/// Calls `FetchX509SVID` without the `spiffe` crate and returns the first message; with
/// `with_header == false` the security header is omitted (to test the rejection).
///
/// # Errors
/// [`TestkitError::Status`] with the server's status, or a transport error.
pub async fn fetch_x509_svid_raw(
    socket_path: &Path,
    with_header: bool,
) -> Result<X509SvidResponse, TestkitError> {
    let mut grpc = tonic::client::Grpc::new(channel(socket_path).await?);
    grpc.ready().await?;
    let mut request = Request::new(X509SvidRequest {});
    if with_header {
        request.metadata_mut().insert(
            SECURITY_HEADER,
            tonic::metadata::MetadataValue::from_static("true"),
        );
    }
    let response = grpc
        .server_streaming(
            request,
            http::uri::PathAndQuery::from_static(FETCH_X509_SVID),
            ProstCodec::<X509SvidRequest, X509SvidResponse>::default(),
        )
        .await?;
    response
        .into_inner()
        .message()
        .await?
        .ok_or(TestkitError::EmptyStream)
}
