//! Typed async mTLS client for the SPIKE Nexus and Keeper APIs.
//!
//! A client talks HTTP/1.1 over mutual TLS to one server. It presents the workload's
//! X.509-SVID (from [`spike_identity::Identity`]) and accepts the server only if its SVID
//! verifies against the trust bundle and its SPIFFE ID satisfies an authorizer: a Nexus
//! client requires `IsNexus`, a keeper client `IsKeeper` (under [`spike_proto::TrustRoots`]),
//! exactly as SPIKE's Go clients do (docs/protocol.md#conventions), and a pinned keeper client
//! ([`KeeperClient::pinned`]) exactly the SPIFFE ID its URL is pinned to. Every phase is bounded by a timeout
//! ([`ClientOptions`], defaults from docs/protocol.md#limits), so no call hangs. Responses are interpreted like
//! the Go SDK (docs/protocol.md#conventions): non-200 statuses map to [`ClientError`] variants by status alone, a
//! 200 body is decoded into its typed [`spike_proto`] response and a non-empty `err` becomes
//! [`ClientError::Api`].
//!
//! ```no_run
//! # async fn demo(identity: spike_identity::Identity) -> Result<(), spike_client::ClientError> {
//! use spike_client::{BaseUrl, ClientOptions, NexusClient};
//! let roots = spike_proto::TrustRoots::default();
//! let nexus = NexusClient::new(
//!     &identity,
//!     BaseUrl::parse("https://localhost:8553")?,
//!     &roots,
//!     ClientOptions::default(),
//! )?;
//! let data = nexus.get_secret("tenants/demo/db/creds", 0).await?;
//! # drop(data); Ok(()) }
//! ```
//!
//! # Layout
//!
//! - `url`: [`BaseUrl`], parsing `https://host:port` and joining route paths like Go's
//!   `url.JoinPath` plus `?action=`.
//! - `transport`: [`HttpsClient`] (connect, handshake, keep-alive pool, timeouts),
//!   [`ClientOptions`], [`RawResponse`], [`check_status`], [`decode_json`].
//! - `nexus`: [`NexusClient`], one method per Nexus route plus [`NexusClient::health`].
//! - `keeper`: [`KeeperClient`] (`contribute`, `shard`).
//! - `error`: [`ClientError`].

mod error;
mod keeper;
mod nexus;
mod transport;
mod url;

pub use error::{
    ClientError, PHASE_CONNECT, PHASE_HANDSHAKE, PHASE_REQUEST, PHASE_RESPONSE_HEADERS,
};
pub use keeper::KeeperClient;
pub use nexus::{HEALTH_PATH, HealthResponse, NexusClient};
pub use transport::{ClientOptions, HttpsClient, RawResponse, check_status, decode_json};
pub use url::BaseUrl;
