//! rustls configurations backed by an [`Identity`]: SVID resolvers and SPIFFE verifiers.
//!
//! Everything uses the `ring` provider explicitly. Per handshake:
//!
//! - the own certificate is the *current* SVID of the `X509Source` (converted once per
//!   rotation), so rotation is a value swap;
//! - the peer's leaf must carry exactly one SPIFFE ID URI SAN; its trust domain must be
//!   accepted ([`Identity::accepted_trust_domains`]); its chain must verify against that
//!   trust domain's *current* bundle (client certs need `clientAuth`, server certs
//!   `serverAuth`; expiry is checked); DNS names and the TLS server name are ignored;
//! - finally the [`PeerAuthorizer`] sees the peer's SPIFFE ID.
//!
//! A server rejected by a client is logged at `warn` once per (SPIFFE ID, reason) with the
//! trust roots it was checked against. A client rejected by a server is logged here at
//! `debug` only: the handshake error carries its SPIFFE ID ([`PeerRejected`],
//! [`crate::HandshakeError::describe`]) and the daemons' accept loops log it at `warn` with
//! the peer address, rate-limited per address. Session resumption is off on both sides, because rustls does not
//! re-run verifiers on a resumed session (an SVID could outlive its expiry or a revoked
//! authorization).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, Resumption};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{
    ClientHello, NoServerSessionStorage, ParsedCertificate, ResolvesServerCert,
    WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore,
    ServerConfig, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use spiffe::{SpiffeId, TrustDomain, X509Bundle, X509Svid};

use crate::error::IdentityError;
use crate::identity::Identity;

/// Decides whether an authenticated peer SPIFFE ID may complete the handshake.
///
/// Implemented for every `Fn(&SpiffeId) -> bool + Send + Sync + 'static`, so callers pass
/// role predicates (e.g. "is Nexus or Bootstrap") as closures.
pub trait PeerAuthorizer: Send + Sync + 'static {
    /// `true` to accept `peer`.
    fn authorize(&self, peer: &SpiffeId) -> bool;
}

impl<F> PeerAuthorizer for F
where
    F: Fn(&SpiffeId) -> bool + Send + Sync + 'static,
{
    fn authorize(&self, peer: &SpiffeId) -> bool {
        self(peer)
    }
}

/// An authorizer that accepts every authenticated peer (Nexus's handshake policy: per-route
/// authorization happens later).
pub fn allow_any() -> impl PeerAuthorizer + Clone {
    |_: &SpiffeId| true
}

/// An authorizer that accepts exactly the given IDs.
pub fn allow_ids(ids: impl IntoIterator<Item = SpiffeId>) -> impl PeerAuthorizer {
    let ids: HashSet<SpiffeId> = ids.into_iter().collect();
    move |peer: &SpiffeId| ids.contains(peer)
}

/// The ring provider, the only one this crate uses.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Most distinct (peer, reason) pairs remembered for once-only warnings; past that the
/// log falls back to `debug` so an attacker cannot grow memory or flood the journal.
const REJECT_LOG_CAPACITY: usize = 1024;

/// Remembers which rejected peers were already logged at `warn`.
#[derive(Debug, Default)]
pub(crate) struct RejectLog {
    seen: Mutex<HashSet<(String, &'static str)>>,
}

impl RejectLog {
    /// `true` the first time (peer, reason) is seen, while below capacity.
    fn first_time(&self, peer: &str, reason: &'static str) -> bool {
        let mut seen = self.seen.lock();
        if seen.len() >= REJECT_LOG_CAPACITY {
            return false;
        }
        seen.insert((peer.to_owned(), reason))
    }

    fn reject(
        &self,
        side: &'static str,
        peer: Option<&SpiffeId>,
        reason: &'static str,
        roots: &str,
    ) {
        let peer_str = peer.map_or_else(|| String::from("<no SPIFFE ID>"), ToString::to_string);
        if side == SERVER_SIDE {
            // The accept loop logs the failed handshake at `warn` with the peer address and
            // this SPIFFE ID (from [`PeerRejected`]), rate-limited per address; one line each.
            tracing::debug!(
                peer_spiffe_id = %peer_str,
                side,
                reason,
                trust_roots = %roots,
                "rejected TLS client {peer_str}: {reason} (accepted trust domains: {roots})"
            );
            return;
        }
        let first = self.first_time(&peer_str, reason);
        if first {
            tracing::warn!(
                peer_spiffe_id = %peer_str,
                side,
                reason,
                trust_roots = %roots,
                "rejected TLS peer {peer_str}: {reason} (accepted trust domains: {roots})"
            );
        } else {
            tracing::debug!(peer_spiffe_id = %peer_str, side, reason, "rejected TLS peer again");
        }
    }
}

fn reject_error(reason: &'static str, peer: Option<&SpiffeId>) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
        PeerRejected(reason, peer.cloned()),
    ))))
}

/// The reason attached to a handshake error when a peer is rejected by SPIFFE policy, and
/// the peer's SPIFFE ID when its certificate carried one.
#[derive(Debug, thiserror::Error)]
pub struct PeerRejected(pub &'static str, pub Option<SpiffeId>);

impl std::fmt::Display for PeerRejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.1 {
            Some(id) => write!(f, "peer {id} rejected: {}", self.0),
            None => write!(f, "peer without a SPIFFE ID rejected: {}", self.0),
        }
    }
}

impl PeerRejected {
    /// The `PeerRejected` inside a failed handshake's I/O error, if the peer was rejected by
    /// SPIFFE policy (as opposed to a protocol or I/O failure).
    pub fn find(err: &crate::HandshakeError) -> Option<&Self> {
        let crate::HandshakeError::Tls(io) = err else {
            return None;
        };
        let inner = io.get_ref()?;
        let rustls::Error::InvalidCertificate(CertificateError::Other(other)) =
            inner.downcast_ref::<rustls::Error>()?
        else {
            return None;
        };
        other.0.downcast_ref::<Self>()
    }
}

/// Converts the source's current SVID into a rustls `CertifiedKey`, once per rotation.
#[derive(Debug)]
struct SvidResolver {
    identity: Identity,
    cached: Mutex<Option<(Arc<X509Svid>, Arc<CertifiedKey>)>>,
}

impl SvidResolver {
    fn new(identity: Identity) -> Self {
        Self {
            identity,
            cached: Mutex::new(None),
        }
    }

    fn current(&self) -> Option<Arc<CertifiedKey>> {
        let svid = self.identity.inner.source.try_svid()?;
        let mut cached = self.cached.lock();
        if let Some((old, key)) = cached.as_ref()
            && Arc::ptr_eq(old, &svid)
        {
            return Some(Arc::clone(key));
        }
        let chain: Vec<CertificateDer<'static>> = svid
            .cert_chain()
            .iter()
            .map(|c| CertificateDer::from(c.as_bytes().to_vec()))
            .collect();
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(svid.private_key().as_bytes()));
        let signing_key = match rustls::crypto::ring::sign::any_supported_type(&key_der) {
            Ok(key) => key,
            Err(err) => {
                tracing::error!(spiffe_id = %svid.spiffe_id(), error = %err, "unusable SVID key");
                return None;
            }
        };
        let certified = Arc::new(CertifiedKey::new(chain, signing_key));
        tracing::debug!(spiffe_id = %svid.spiffe_id(), "presenting new X.509-SVID");
        *cached = Some((svid, Arc::clone(&certified)));
        Some(certified)
    }
}

impl ResolvesServerCert for SvidResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

impl ResolvesClientCert for SvidResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.current()
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Which side of the handshake a verifier runs on (for logs).
const SERVER_SIDE: &str = "server";
const CLIENT_SIDE: &str = "client";

/// A client-certificate verifier and the bundle it was built from.
type CachedClientVerifier = (Arc<X509Bundle>, Arc<dyn ClientCertVerifier>);

/// SPIFFE peer verification shared by both sides.
struct SpiffeVerifier {
    identity: Identity,
    authorizer: Arc<dyn PeerAuthorizer>,
    provider: Arc<CryptoProvider>,
    side: &'static str,
    /// Client-certificate verifiers per trust domain, rebuilt when the bundle changes.
    client_verifiers: Mutex<HashMap<TrustDomain, CachedClientVerifier>>,
}

impl std::fmt::Debug for SpiffeVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpiffeVerifier")
            .field("side", &self.side)
            .finish_non_exhaustive()
    }
}

impl SpiffeVerifier {
    fn new(identity: Identity, authorizer: Arc<dyn PeerAuthorizer>, side: &'static str) -> Self {
        Self {
            identity,
            authorizer,
            provider: crypto_provider(),
            side,
            client_verifiers: Mutex::new(HashMap::new()),
        }
    }

    fn algorithms(&self) -> &WebPkiSupportedAlgorithms {
        &self.provider.signature_verification_algorithms
    }

    fn roots_description(&self) -> String {
        let names: Vec<String> = self
            .identity
            .accepted_trust_domains()
            .iter()
            .map(ToString::to_string)
            .collect();
        names.join(",")
    }

    fn reject(&self, peer: Option<&SpiffeId>, reason: &'static str) -> rustls::Error {
        self.identity
            .inner
            .rejects
            .reject(self.side, peer, reason, &self.roots_description());
        reject_error(reason, peer)
    }

    /// Extracts the peer ID and returns the bundle of its (accepted) trust domain.
    fn peer_bundle(
        &self,
        end_entity: &CertificateDer<'_>,
    ) -> Result<(SpiffeId, Arc<X509Bundle>), rustls::Error> {
        let Ok(id) = spiffe::cert::spiffe_id_from_der(end_entity) else {
            return Err(self.reject(None, "leaf has no single SPIFFE ID URI SAN"));
        };
        let td = id.trust_domain();
        if !self.identity.accepted_trust_domains().contains(td) {
            return Err(self.reject(Some(&id), "trust domain not accepted"));
        }
        let Some(bundle) = self.identity.inner.source.try_bundle_for_trust_domain(td) else {
            return Err(self.reject(Some(&id), "no trust bundle for the peer's trust domain"));
        };
        Ok((id, bundle))
    }

    fn roots(bundle: &X509Bundle) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        for authority in bundle.authorities() {
            // An authority webpki cannot use is skipped; if none is usable, verification fails.
            let _ = roots.add(CertificateDer::from(authority.as_bytes().to_vec()));
        }
        roots
    }

    fn client_verifier(
        &self,
        td: &TrustDomain,
        bundle: Arc<X509Bundle>,
    ) -> Result<Arc<dyn ClientCertVerifier>, rustls::Error> {
        let mut cache = self.client_verifiers.lock();
        if let Some((cached_bundle, verifier)) = cache.get(td)
            && Arc::ptr_eq(cached_bundle, &bundle)
        {
            return Ok(Arc::clone(verifier));
        }
        let roots = Arc::new(Self::roots(&bundle));
        let verifier =
            WebPkiClientVerifier::builder_with_provider(roots, Arc::clone(&self.provider))
                .build()
                .map_err(|_| reject_error("trust bundle has no usable authority", None))?;
        cache.insert(td.clone(), (bundle, Arc::clone(&verifier)));
        Ok(verifier)
    }

    fn authorize(&self, id: &SpiffeId) -> Result<(), rustls::Error> {
        if self.authorizer.authorize(id) {
            Ok(())
        } else {
            Err(self.reject(Some(id), "SPIFFE ID not authorized"))
        }
    }

    fn chain_failed(&self, id: &SpiffeId, err: &rustls::Error) -> rustls::Error {
        let reason = match err {
            rustls::Error::InvalidCertificate(CertificateError::Expired)
            | rustls::Error::InvalidCertificate(CertificateError::ExpiredContext { .. }) => {
                "certificate expired"
            }
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
                "certificate not signed by the trust bundle"
            }
            _ => "certificate chain verification failed",
        };
        self.reject(Some(id), reason);
        err.clone()
    }
}

#[derive(Debug)]
struct ClientAuthVerifier(SpiffeVerifier);

impl ClientCertVerifier for ClientAuthVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let v = &self.0;
        let (id, bundle) = v.peer_bundle(end_entity)?;
        let verifier = v.client_verifier(id.trust_domain(), bundle)?;
        if let Err(err) = verifier.verify_client_cert(end_entity, intermediates, now) {
            return Err(v.chain_failed(&id, &err));
        }
        v.authorize(&id)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, self.0.algorithms())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, self.0.algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.algorithms().supported_schemes()
    }
}

#[derive(Debug)]
struct ServerAuthVerifier(SpiffeVerifier);

impl ServerCertVerifier for ServerAuthVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The server name is deliberately ignored: SPIFFE authenticates the URI SAN.
        let v = &self.0;
        let (id, bundle) = v.peer_bundle(end_entity)?;
        let roots = SpiffeVerifier::roots(&bundle);
        let parsed = ParsedCertificate::try_from(end_entity)?;
        if let Err(err) = rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &roots,
            intermediates,
            now,
            v.algorithms().all,
        ) {
            return Err(v.chain_failed(&id, &err));
        }
        v.authorize(&id)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, self.0.algorithms())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, self.0.algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.algorithms().supported_schemes()
    }
}

impl Identity {
    /// A server configuration: presents the current SVID, requires a client SVID that
    /// verifies against its trust domain's bundle, then asks `authorizer`.
    ///
    /// ALPN is empty; to add protocols clone the config (`(*cfg).clone()`), set
    /// `alpn_protocols` and wrap it again.
    ///
    /// # Errors
    /// [`IdentityError::Tls`] if rustls rejects the protocol versions (not expected).
    pub fn server_config(
        &self,
        authorizer: impl PeerAuthorizer,
    ) -> Result<Arc<ServerConfig>, IdentityError> {
        let verifier = ClientAuthVerifier(SpiffeVerifier::new(
            self.clone(),
            Arc::new(authorizer),
            SERVER_SIDE,
        ));
        let mut config = ServerConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(Arc::new(verifier))
            .with_cert_resolver(Arc::new(SvidResolver::new(self.clone())));
        config.session_storage = Arc::new(NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(Arc::new(config))
    }

    /// A client configuration: presents the current SVID as client certificate and accepts a
    /// server whose SVID verifies against its trust domain's bundle and satisfies
    /// `authorizer`. The TLS server name is ignored (any `ServerName` works).
    ///
    /// # Errors
    /// [`IdentityError::Tls`] if rustls rejects the protocol versions (not expected).
    pub fn client_config(
        &self,
        authorizer: impl PeerAuthorizer,
    ) -> Result<Arc<ClientConfig>, IdentityError> {
        let verifier = ServerAuthVerifier(SpiffeVerifier::new(
            self.clone(),
            Arc::new(authorizer),
            CLIENT_SIDE,
        ));
        let mut config = ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_cert_resolver(Arc::new(SvidResolver::new(self.clone())));
        config.resumption = Resumption::disabled();
        Ok(Arc::new(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reject_log_warns_once_per_peer_and_reason_and_is_bounded() {
        let log = RejectLog::default();
        assert!(log.first_time("spiffe://a/x", "expired"));
        assert!(!log.first_time("spiffe://a/x", "expired"));
        assert!(log.first_time("spiffe://a/x", "not authorized"));
        assert!(log.first_time("spiffe://a/y", "expired"));
        for i in 0..REJECT_LOG_CAPACITY * 2 {
            let _ = log.first_time(&format!("spiffe://a/{i}"), "expired");
        }
        assert_eq!(log.seen.lock().len(), REJECT_LOG_CAPACITY);
        assert!(!log.first_time("spiffe://a/new", "expired"));
    }

    #[test]
    fn authorizers() {
        let id = SpiffeId::new("spiffe://spike.test/spike/nexus").unwrap();
        let other = SpiffeId::new("spiffe://spike.test/spike/keeper").unwrap();
        assert!(allow_any().authorize(&id));
        let only = allow_ids([id.clone()]);
        assert!(only.authorize(&id));
        assert!(!only.authorize(&other));
        let closure = |p: &SpiffeId| p.path().starts_with("/spike/");
        assert!(closure.authorize(&other));
    }
}
