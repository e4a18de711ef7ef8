//! SPIFFE identity: Workload API X.509 source, rustls configs, peer SPIFFE IDs.
//!
//! [`Identity::connect`] obtains the workload's X.509-SVID from the SPIFFE Workload API
//! (SPIRE agent) with a bounded wait; the SVID and trust bundles then rotate in the
//! background; [`Identity::fetch_once`] fetches them once and keeps no stream open (for the
//! short-lived CLI). Every SVID rotation is logged at `info` with the SPIFFE ID and the new
//! expiry. [`Identity::server_config`] and [`Identity::client_config`] build rustls
//! configurations (ring provider only) that read the current SVID and bundles on every
//! handshake, verify the peer's X.509-SVID against its trust domain's bundle and run a
//! [`PeerAuthorizer`] on the peer's SPIFFE ID. [`MtlsAcceptor`] / [`MtlsConnector`] run
//! handshakes with a timeout and return the peer's [`PeerId`].
//!
//! # Layout
//!
//! - `identity`: [`Identity`], [`IdentityOptions`], endpoint resolution.
//! - `tls`: SVID resolvers, SPIFFE verifiers, [`PeerAuthorizer`], config builders.
//! - `peer`: [`PeerId`], [`peer_spiffe_id`], [`MtlsAcceptor`], [`MtlsConnector`].
//! - `error`: [`IdentityError`], [`HandshakeError`].

mod error;
mod identity;
mod peer;
mod tls;

pub use error::{HandshakeError, IdentityError};
pub use identity::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_ENDPOINT, ENDPOINT_ENV, Identity, IdentityOptions,
    IdentityUpdates, parse_trust_domains, resolve_endpoint,
};
pub use peer::{
    DEFAULT_HANDSHAKE_TIMEOUT, MtlsAcceptor, MtlsConnector, PeerId, peer_certificate_expiry,
    peer_spiffe_id,
};
pub use tls::{PeerAuthorizer, PeerRejected, allow_any, allow_ids, crypto_provider};

/// Re-exported so callers name the same types this crate uses.
pub use spiffe::{SpiffeId, TrustDomain};
