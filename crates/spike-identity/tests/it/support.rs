//! Shared helpers: identities from the testkit, handshakes over in-memory pipes and raw
//! rustls peers presenting arbitrary (bad) certificates.

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, ServerConfig, SignatureScheme};
use spike_identity::{
    HandshakeError, Identity, IdentityOptions, MtlsAcceptor, MtlsConnector, PeerId,
};
use spike_testkit::{Svid, TestPki, WorkloadApiServer};

pub(crate) const NEXUS: &str = "spiffe://spike.test/spike/nexus";
pub(crate) const KEEPER: &str = "spiffe://spike.test/spike/keeper";
pub(crate) const PILOT: &str = "spiffe://spike.test/spike/pilot/role/superuser";

pub(crate) const TIMEOUT: Duration = Duration::from_secs(5);

/// A Workload API server for `id` and an identity connected to it.
pub(crate) async fn identity(pki: &TestPki, id: &str) -> (WorkloadApiServer, Identity) {
    identity_with(pki, id, IdentityOptions::default()).await
}

pub(crate) async fn identity_with(
    pki: &TestPki,
    id: &str,
    options: IdentityOptions,
) -> (WorkloadApiServer, Identity) {
    let server = WorkloadApiServer::start_in_tempdir(pki, &[id]).unwrap();
    let identity = Identity::connect_with(IdentityOptions {
        endpoint: Some(server.endpoint()),
        timeout: TIMEOUT,
        ..options
    })
    .await
    .unwrap();
    (server, identity)
}

pub(crate) fn server_name() -> ServerName<'static> {
    ServerName::try_from("localhost").unwrap()
}

pub(crate) struct Outcome {
    /// What the server saw: the client's ID or the error.
    pub server: Result<PeerId, HandshakeError>,
    /// What the client saw: the server's ID and leaf, or the error.
    pub client: Result<(PeerId, CertificateDer<'static>), HandshakeError>,
}

/// Runs one handshake over an in-memory pipe.
pub(crate) async fn handshake(server: Arc<ServerConfig>, client: Arc<ClientConfig>) -> Outcome {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let acceptor = MtlsAcceptor::new(server, TIMEOUT);
    let connector = MtlsConnector::new(client, TIMEOUT);
    let server_side = async move {
        let (mut stream, peer) = acceptor.accept(a).await?;
        // Keep the stream alive until the client read its side; then close.
        use tokio::io::AsyncWriteExt as _;
        let _ = stream.write_all(b"ok").await;
        let _ = stream.shutdown().await;
        Ok(peer)
    };
    let client_side = async move {
        let (mut stream, peer) = connector.connect(server_name(), b).await?;
        let leaf = stream.get_ref().1.peer_certificates().unwrap()[0]
            .clone()
            .into_owned();
        use tokio::io::AsyncReadExt as _;
        let mut buf = Vec::new();
        let _ = stream.read_to_end(&mut buf).await;
        Ok((peer, leaf))
    };
    let (server, client) = tokio::join!(server_side, client_side);
    Outcome { server, client }
}

/// A plain rustls client presenting `svid` (whatever it is) and accepting any server.
pub(crate) fn raw_client(svid: &Svid) -> Arc<ClientConfig> {
    let config = ClientConfig::builder_with_provider(spike_identity::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServer))
        .with_client_auth_cert(svid.cert_chain().to_vec(), svid.private_key())
        .unwrap();
    Arc::new(config)
}

/// A plain rustls client presenting no certificate at all.
pub(crate) fn raw_anonymous_client() -> Arc<ClientConfig> {
    let config = ClientConfig::builder_with_provider(spike_identity::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServer))
        .with_no_client_auth();
    Arc::new(config)
}

/// A plain rustls server presenting `svid` and asking for no client certificate.
pub(crate) fn raw_server(svid: &Svid) -> Arc<ServerConfig> {
    let config = ServerConfig::builder_with_provider(spike_identity::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(svid.cert_chain().to_vec(), svid.private_key())
        .unwrap();
    Arc::new(config)
}

#[derive(Debug)]
struct AcceptAnyServer;

impl ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &spike_identity::crypto_provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &spike_identity::crypto_provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        spike_identity::crypto_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The serial number of a DER certificate.
pub(crate) fn serial(der: &[u8]) -> Vec<u8> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    cert.raw_serial().to_vec()
}
