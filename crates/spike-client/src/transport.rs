//! [`HttpsClient`]: HTTP/1.1 over mTLS to one server, with bounded timeouts and a small
//! keep-alive pool.
//!
//! Each request runs under [`ClientOptions::request_timeout`]; inside it, opening a
//! connection is bounded by the connect and handshake timeouts and waiting for the response
//! head by the response-header timeout. Idle connections are reused for at most
//! [`ClientOptions::idle_timeout`]; a pooled connection that turns out to be closed before
//! the request was written is replaced transparently (the request was never sent).

use std::error::Error as StdError;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use rustls_pki_types::ServerName;
use serde::Serialize;
use spike_identity::{HandshakeError, Identity, MtlsConnector, PeerRejected, SpiffeId};
use spike_proto::ApiResponse;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::error::{
    ClientError, PHASE_CONNECT, PHASE_HANDSHAKE, PHASE_REQUEST, PHASE_RESPONSE_HEADERS,
};
use crate::url::BaseUrl;

/// Timeouts and limits of a client. Defaults follow SPIKE's Go clients (docs/protocol.md#limits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// Bound on opening the TCP connection (`SPIKE_HTTP_CLIENT_DIALER_TIMEOUT`, 30 s).
    pub connect_timeout: Duration,
    /// Bound on the TLS handshake (`SPIKE_HTTP_CLIENT_TLS_HANDSHAKE_TIMEOUT`, 10 s).
    pub handshake_timeout: Duration,
    /// Bound on waiting for the response head after sending
    /// (`SPIKE_HTTP_CLIENT_RESPONSE_HEADER_TIMEOUT`, 10 s).
    pub response_header_timeout: Duration,
    /// Bound on the whole request, including connecting and reading the body
    /// (`SPIKE_HTTP_CLIENT_TIMEOUT`, 60 s).
    pub request_timeout: Duration,
    /// How long an idle connection may be reused (`SPIKE_HTTP_CLIENT_IDLE_CONN_TIMEOUT`, 30 s).
    pub idle_timeout: Duration,
    /// Most idle connections kept (`SPIKE_HTTP_CLIENT_MAX_IDLE_CONNS_PER_HOST`, 10);
    /// 0 opens a new connection per request, as Go's per-call clients effectively do.
    pub max_idle_connections: usize,
    /// Largest accepted response body.
    pub max_response_bytes: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            response_header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(30),
            max_idle_connections: 10,
            max_response_bytes: 32 * 1024 * 1024,
        }
    }
}

impl ClientOptions {
    /// Options with every timeout set to `timeout` (handy for tests and one-shot tools).
    pub fn with_timeout(timeout: Duration) -> Self {
        Self {
            connect_timeout: timeout,
            handshake_timeout: timeout,
            response_header_timeout: timeout,
            request_timeout: timeout,
            ..Self::default()
        }
    }
}

/// A response as received: status, content type and body.
#[derive(Debug)]
pub struct RawResponse {
    /// The HTTP status code.
    pub status: u16,
    /// The `Content-Type` header, if present and valid text.
    pub content_type: Option<String>,
    /// The whole body.
    pub body: Vec<u8>,
}

/// How long to wait for a connection to become reusable after a response.
const REUSE_WAIT: Duration = Duration::from_millis(250);

/// How far one request got, so that an expired request timeout names the phase it stopped
/// in: a request that never reached a connection was certainly not sent
/// ([`ClientError::is_unsent`]).
struct Progress(AtomicU8);

impl Progress {
    const CONNECTING: u8 = 0;
    const HANDSHAKING: u8 = 1;
    const SENDING: u8 = 2;

    fn new() -> Self {
        Self(AtomicU8::new(Self::CONNECTING))
    }

    fn set(&self, stage: u8) {
        self.0.store(stage, Ordering::Relaxed);
    }

    /// The [`ClientError::Timeout`] phase for a request timeout that expired now.
    fn timeout_phase(&self) -> &'static str {
        match self.0.load(Ordering::Relaxed) {
            Self::CONNECTING => PHASE_CONNECT,
            Self::HANDSHAKING => PHASE_HANDSHAKE,
            _ => PHASE_REQUEST,
        }
    }
}

struct Idle {
    sender: SendRequest<Full<Bytes>>,
    since: Instant,
}

struct Inner {
    base: BaseUrl,
    connector: MtlsConnector,
    server_name: ServerName<'static>,
    options: ClientOptions,
    idle: Mutex<Vec<Idle>>,
    /// The last server SPIFFE ID our authorizer refused (for error messages).
    rejected: Arc<Mutex<Option<String>>>,
}

/// An mTLS HTTP/1.1 client for one SPIKE server (one base URL).
///
/// Cheap to clone; clones share the connection pool. The server is authenticated by its
/// X.509-SVID and must satisfy the authorizer given to [`HttpsClient::new`]; the host name
/// in the URL is used only to connect and for SNI.
#[derive(Clone)]
pub struct HttpsClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for HttpsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsClient")
            .field("base", &self.inner.base.as_str())
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

enum SendError {
    /// The request was not written; here it is back.
    NotSent(Request<Full<Bytes>>),
    /// The request failed.
    Failed(ClientError),
}

impl HttpsClient {
    /// A client for `base` presenting `identity`'s SVID and accepting only servers whose
    /// SPIFFE ID satisfies `authorize`.
    ///
    /// # Errors
    /// [`ClientError::Identity`] if the TLS configuration cannot be built.
    pub fn new(
        identity: &Identity,
        base: BaseUrl,
        authorize: impl Fn(&SpiffeId) -> bool + Send + Sync + 'static,
        options: ClientOptions,
    ) -> Result<Self, ClientError> {
        let rejected = Arc::new(Mutex::new(None));
        let slot = Arc::clone(&rejected);
        let authorizer = move |id: &SpiffeId| {
            let ok = authorize(id);
            if !ok {
                *slot.lock() = Some(id.to_string());
            }
            ok
        };
        let config = identity
            .client_config(authorizer)
            .map_err(ClientError::Identity)?;
        let server_name = ServerName::try_from(base.host().to_owned())
            .unwrap_or(ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
        Ok(Self {
            inner: Arc::new(Inner {
                connector: MtlsConnector::new(config, options.handshake_timeout),
                base,
                server_name,
                options,
                idle: Mutex::new(Vec::new()),
                rejected,
            }),
        })
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &BaseUrl {
        &self.inner.base
    }

    /// The client's options.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    /// Number of idle pooled connections (for tests and metrics).
    pub fn idle_connections(&self) -> usize {
        self.inner.idle.lock().len()
    }

    /// Sends one request and reads the whole response, whatever its status.
    ///
    /// `path` is a route path (`/v1/...`), joined onto the base URL; `action` becomes
    /// `?action=<action>`.
    ///
    /// # Errors
    /// Connection, TLS, timeout and transport errors; the status is *not* checked here.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        action: Option<&str>,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<RawResponse, ClientError> {
        let target = self.inner.base.request_target(path, action);
        let url = self.inner.base.full_url(&target);
        let mut builder = Request::builder()
            .method(method)
            .uri(target.as_str())
            .header(header::HOST, self.inner.base.authority());
        if let Some(ct) = content_type {
            builder = builder.header(header::CONTENT_TYPE, ct);
        }
        let request = builder
            .body(Full::new(body))
            .map_err(|_| ClientError::InvalidUrl {
                url: url.clone(),
                reason: "cannot form a request target",
            })?;
        let timeout = self.inner.options.request_timeout;
        let progress = Progress::new();
        match tokio::time::timeout(timeout, self.exchange(&url, request, &progress)).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Timeout {
                url,
                phase: progress.timeout_phase(),
                after: timeout,
            }),
        }
    }

    /// POSTs `req` as JSON and decodes a typed response (docs/protocol.md#conventions status mapping).
    ///
    /// # Errors
    /// As [`HttpsClient::request`], plus the status mapping, [`ClientError::Decode`] and
    /// [`ClientError::Api`] for a non-empty `err` in a 200 body.
    pub async fn post_json<Req, Resp>(
        &self,
        path: &str,
        action: Option<&str>,
        req: &Req,
    ) -> Result<Resp, ClientError>
    where
        Req: Serialize + ?Sized,
        Resp: ApiResponse,
    {
        let target = self.inner.base.request_target(path, action);
        let body = serde_json::to_vec(req).map_err(|source| ClientError::Encode {
            url: self.inner.base.full_url(&target),
            source,
        })?;
        let raw = self
            .request(
                Method::POST,
                path,
                action,
                Some("application/json"),
                Bytes::from(body),
            )
            .await?;
        decode_json(&self.inner.base.full_url(&target), raw)
    }

    async fn exchange(
        &self,
        url: &str,
        mut request: Request<Full<Bytes>>,
        progress: &Progress,
    ) -> Result<RawResponse, ClientError> {
        // Pooled connections first; a dead one hands the request back unsent.
        while let Some(sender) = self.take_idle() {
            progress.set(Progress::SENDING);
            match self.send(url, sender, request).await {
                Ok(resp) => return Ok(resp),
                Err(SendError::NotSent(req)) => request = req,
                Err(SendError::Failed(err)) => return Err(err),
            }
        }
        progress.set(Progress::CONNECTING);
        let (sender, conn_end) = self.connect(url, progress).await?;
        progress.set(Progress::SENDING);
        let err = match self.send(url, sender, request).await {
            Ok(resp) => return Ok(resp),
            Err(SendError::Failed(err @ ClientError::Timeout { .. })) => return Err(err),
            Err(SendError::Failed(err)) => err,
            Err(SendError::NotSent(_)) => ClientError::ConnectionClosed {
                url: url.to_owned(),
            },
        };
        // A fresh connection that fails at once often died of a TLS alert: with TLS 1.3 the
        // server checks our certificate after our handshake already completed.
        if let Ok(Ok(Some(alert))) = tokio::time::timeout(REUSE_WAIT, conn_end).await {
            return Err(ClientError::RejectedByServer {
                url: self.inner.base.to_string(),
                alert,
            });
        }
        Err(err)
    }

    fn take_idle(&self) -> Option<SendRequest<Full<Bytes>>> {
        let max_age = self.inner.options.idle_timeout;
        let mut idle = self.inner.idle.lock();
        while let Some(entry) = idle.pop() {
            if entry.since.elapsed() < max_age
                && !entry.sender.is_closed()
                && entry.sender.is_ready()
            {
                return Some(entry.sender);
            }
        }
        None
    }

    fn put_idle(&self, sender: SendRequest<Full<Bytes>>) {
        let max = self.inner.options.max_idle_connections;
        let mut idle = self.inner.idle.lock();
        idle.retain(|e| !e.sender.is_closed());
        if idle.len() < max {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    /// Opens a connection; the receiver yields the TLS alert that ended it, if any.
    async fn connect(
        &self,
        url: &str,
        progress: &Progress,
    ) -> Result<(SendRequest<Full<Bytes>>, oneshot::Receiver<Option<String>>), ClientError> {
        let opts = &self.inner.options;
        let base = &self.inner.base;
        let tcp = match tokio::time::timeout(
            opts.connect_timeout,
            TcpStream::connect((base.host(), base.port())),
        )
        .await
        {
            Err(_) => {
                return Err(ClientError::Timeout {
                    url: url.to_owned(),
                    phase: PHASE_CONNECT,
                    after: opts.connect_timeout,
                });
            }
            Ok(Err(source)) => {
                return Err(ClientError::Connect {
                    url: base.to_string(),
                    source,
                });
            }
            Ok(Ok(tcp)) => tcp,
        };
        // Small request/response exchanges: do not wait for Nagle.
        let _ = tcp.set_nodelay(true);
        *self.inner.rejected.lock() = None;
        progress.set(Progress::HANDSHAKING);
        let (tls, peer) = self
            .inner
            .connector
            .connect(self.inner.server_name.clone(), tcp)
            .await
            .map_err(|e| self.handshake_error(e))?;
        tracing::debug!(url = %base, server = %peer, "mTLS connection established");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|source| self.transport_error(url, source))?;
        let base_str = base.to_string();
        let (end_tx, end_rx) = oneshot::channel();
        tokio::spawn(async move {
            let alert = match conn.await {
                Ok(()) => None,
                Err(err) => {
                    tracing::debug!(url = %base_str, error = %err, "connection ended with an error");
                    match find_rustls_error(&err) {
                        Some(rustls::Error::AlertReceived(alert)) => Some(format!("{alert:?}")),
                        _ => None,
                    }
                }
            };
            let _ = end_tx.send(alert);
        });
        Ok((sender, end_rx))
    }

    async fn send(
        &self,
        url: &str,
        mut sender: SendRequest<Full<Bytes>>,
        request: Request<Full<Bytes>>,
    ) -> Result<RawResponse, SendError> {
        let opts = &self.inner.options;
        let sent = tokio::time::timeout(
            opts.response_header_timeout,
            sender.try_send_request(request),
        )
        .await;
        let response = match sent {
            Err(_) => {
                return Err(SendError::Failed(ClientError::Timeout {
                    url: url.to_owned(),
                    phase: PHASE_RESPONSE_HEADERS,
                    after: opts.response_header_timeout,
                }));
            }
            Ok(Err(mut err)) => {
                if let Some(req) = err.take_message() {
                    return Err(SendError::NotSent(req));
                }
                return Err(SendError::Failed(
                    self.transport_error(url, err.into_error()),
                ));
            }
            Ok(Ok(response)) => response,
        };
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let keep_alive = !response
            .headers()
            .get(header::CONNECTION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let limited = Limited::new(response.into_body(), opts.max_response_bytes);
        let body = match limited.collect().await {
            Ok(collected) => Vec::from(collected.to_bytes()),
            Err(err) => {
                return Err(SendError::Failed(match err.downcast::<hyper::Error>() {
                    Ok(source) => self.transport_error(url, *source),
                    Err(_) => ClientError::ResponseTooLarge {
                        url: url.to_owned(),
                        limit: opts.max_response_bytes,
                    },
                }));
            }
        };
        if keep_alive
            && opts.max_idle_connections > 0
            && let Ok(Ok(())) = tokio::time::timeout(REUSE_WAIT, sender.ready()).await
        {
            self.put_idle(sender);
        }
        Ok(RawResponse {
            status,
            content_type,
            body,
        })
    }

    fn handshake_error(&self, err: HandshakeError) -> ClientError {
        let url = self.inner.base.to_string();
        match err {
            HandshakeError::Timeout(after) => ClientError::Timeout {
                url,
                phase: PHASE_HANDSHAKE,
                after,
            },
            HandshakeError::Tls(io) => {
                let presented = self.inner.rejected.lock().take();
                match find_rustls_error(&io) {
                    Some(rustls::Error::AlertReceived(alert)) => ClientError::RejectedByServer {
                        url,
                        alert: format!("{alert:?}"),
                    },
                    Some(rustls::Error::InvalidCertificate(cert_err)) => {
                        ClientError::ServerRejected {
                            url,
                            presented,
                            reason: describe_cert_error(cert_err),
                        }
                    }
                    _ => ClientError::Handshake {
                        url,
                        source: HandshakeError::Tls(io),
                    },
                }
            }
            other => ClientError::Handshake { url, source: other },
        }
    }

    fn transport_error(&self, url: &str, source: hyper::Error) -> ClientError {
        match find_rustls_error(&source) {
            Some(rustls::Error::AlertReceived(alert)) => ClientError::RejectedByServer {
                url: self.inner.base.to_string(),
                alert: format!("{alert:?}"),
            },
            _ => ClientError::Transport {
                url: url.to_owned(),
                source,
            },
        }
    }
}

/// Decodes a typed JSON response after mapping the status like Go clients (docs/protocol.md#conventions).
///
/// The body buffer is zeroized afterwards (it may carry shards or secrets).
///
/// # Errors
/// The status errors, [`ClientError::Decode`] and [`ClientError::Api`].
pub fn decode_json<Resp: ApiResponse>(url: &str, raw: RawResponse) -> Result<Resp, ClientError> {
    let RawResponse {
        status, mut body, ..
    } = raw;
    let result = check_status(url, status).and_then(|()| {
        serde_json::from_slice::<Resp>(&body).map_err(|source| ClientError::Decode {
            url: url.to_owned(),
            source,
        })
    });
    wipe(&mut body);
    let resp = result?;
    if let Some(code) = resp.error_code() {
        return Err(ClientError::Api {
            url: url.to_owned(),
            code: code.clone(),
        });
    }
    Ok(resp)
}

/// Maps a non-200 status to its error (docs/protocol.md#conventions); `Ok` for 200.
///
/// # Errors
/// [`ClientError::NotFound`], [`ClientError::Unauthorized`], [`ClientError::BadRequest`],
/// [`ClientError::NotReady`] or [`ClientError::Peer`].
pub fn check_status(url: &str, status: u16) -> Result<(), ClientError> {
    let url = url.to_owned();
    match status {
        200 => Ok(()),
        404 => Err(ClientError::NotFound { url }),
        401 => Err(ClientError::Unauthorized { url }),
        400 => Err(ClientError::BadRequest { url }),
        503 => Err(ClientError::NotReady { url }),
        status => Err(ClientError::Peer { url, status }),
    }
}

/// Overwrites a buffer with zeros (best effort; hyper's own buffers are out of reach).
pub(crate) fn wipe(buf: &mut [u8]) {
    for b in buf.iter_mut() {
        // A volatile-free wipe is fine here: the buffer is dropped right after and the
        // compiler cannot prove it unobserved through the slice reference.
        *b = 0;
    }
    std::hint::black_box(&*buf);
}

/// Finds a rustls error in an error's source chain (through `io::Error` wrappers).
fn find_rustls_error<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut current: Option<&'a (dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(r) = inner.downcast_ref::<rustls::Error>()
        {
            return Some(r);
        }
        current = e.source();
    }
    None
}

fn describe_cert_error(err: &rustls::CertificateError) -> String {
    if let rustls::CertificateError::Other(other) = err
        && let Some(rejected) = other.0.downcast_ref::<PeerRejected>()
    {
        return rejected.0.to_owned();
    }
    format!("{err:?}")
}
