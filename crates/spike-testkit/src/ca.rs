//! A test certificate authority per trust domain, issuing X.509-SVIDs with `rcgen`.
//!
//! [`TestCa`] is one self-signed root for one trust domain. [`TestPki`] bundles the root of
//! the trust domain under test with a second, *foreign* trust domain's root for negative
//! fixtures. Every issued [`Svid`] is a leaf signed directly by the root (no intermediates),
//! with key usage `digitalSignature`, extended key usages `serverAuth` + `clientAuth` and a
//! short validity, like SPIRE's defaults.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

use crate::error::TestkitError;

/// The trust domain a [`TestPki`] uses for the system under test unless told otherwise.
pub const DEFAULT_TRUST_DOMAIN: &str = "spike.test";
/// The trust domain of the foreign root in every [`TestPki`].
pub const FOREIGN_TRUST_DOMAIN: &str = "other.test";
/// Validity of a normal SVID issued by [`TestCa::issue`].
pub const SVID_VALIDITY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Serial numbers are unique across every CA in the process, so rotation is observable.
static NEXT_SERIAL: AtomicU64 = AtomicU64::new(1);

fn next_serial() -> SerialNumber {
    let n = NEXT_SERIAL.fetch_add(1, Ordering::Relaxed);
    // A leading non-zero byte keeps the DER INTEGER positive and the length stable.
    let mut bytes = vec![0x01];
    bytes.extend_from_slice(&n.to_be_bytes());
    SerialNumber::from_slice(&bytes)
}

/// What kind of leaf [`TestCa::issue_with`] produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SvidKind {
    /// A valid SVID: URI SAN present, valid from 5 minutes ago for [`SVID_VALIDITY`].
    Valid,
    /// A well-formed SVID whose validity ended an hour ago.
    Expired,
    /// A leaf certificate with the usual key usages but no URI SAN at all.
    NoUriSan,
}

/// A self-signed root CA for one trust domain.
pub struct TestCa {
    trust_domain: String,
    root_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa")
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

impl TestCa {
    /// Creates a new root for `trust_domain` (a bare name such as `spike.test`).
    ///
    /// # Errors
    /// [`TestkitError::Certificate`] if rcgen fails.
    pub fn new(trust_domain: &str) -> Result<Self, TestkitError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CountryName, "US");
        dn.push(DnType::OrganizationName, "SPIKE test");
        dn.push(DnType::CommonName, format!("{trust_domain} test root"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.subject_alt_names =
            vec![SanType::URI(format!("spiffe://{trust_domain}").try_into()?)];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(365);
        params.serial_number = Some(next_serial());
        let root = params.self_signed(&key)?;
        let root_der = root.der().clone();
        Ok(Self {
            trust_domain: trust_domain.to_owned(),
            root_der,
            issuer: Issuer::new(params, key),
        })
    }

    /// The trust domain name (without `spiffe://`).
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// `spiffe://<trust domain>` (how the Workload API keys bundles).
    pub fn trust_domain_id(&self) -> String {
        format!("spiffe://{}", self.trust_domain)
    }

    /// The root certificate (DER); this is the trust bundle of the trust domain.
    pub fn root_der(&self) -> &CertificateDer<'static> {
        &self.root_der
    }

    /// Issues a valid SVID for `spiffe_id` (a full `spiffe://...` URI).
    ///
    /// The ID is written as given, so a test may issue an ID outside this CA's trust domain.
    ///
    /// # Errors
    /// [`TestkitError::Certificate`] if rcgen rejects the input.
    pub fn issue(&self, spiffe_id: &str) -> Result<Svid, TestkitError> {
        self.issue_with(spiffe_id, SvidKind::Valid)
    }

    /// Issues a leaf of the given [`SvidKind`] for `spiffe_id`.
    ///
    /// # Errors
    /// [`TestkitError::Certificate`] if rcgen rejects the input.
    pub fn issue_with(&self, spiffe_id: &str, kind: SvidKind) -> Result<Svid, TestkitError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CountryName, "US");
        dn.push(DnType::OrganizationName, "SPIRE");
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        if kind != SvidKind::NoUriSan {
            params.subject_alt_names = vec![SanType::URI(spiffe_id.try_into()?)];
        }
        let now = OffsetDateTime::now_utc();
        let (not_before, not_after) = match kind {
            SvidKind::Expired => (now - Duration::hours(2), now - Duration::hours(1)),
            SvidKind::Valid | SvidKind::NoUriSan => (
                now - Duration::minutes(5),
                now + Duration::seconds(i64::try_from(SVID_VALIDITY.as_secs()).unwrap_or(3600)),
            ),
        };
        params.not_before = not_before;
        params.not_after = not_after;
        let serial = next_serial();
        params.serial_number = Some(serial.clone());
        let leaf = params.signed_by(&key, &self.issuer)?;
        Ok(Svid {
            spiffe_id: spiffe_id.to_owned(),
            chain: vec![leaf.der().clone()],
            key_pkcs8: key.serialize_der(),
            serial: serial.to_bytes(),
            bundle: self.root_der.clone(),
            trust_domain_id: self.trust_domain_id(),
        })
    }
}

/// An issued X.509-SVID: certificate chain (leaf first), PKCS#8 key and the issuer's bundle.
///
/// Test material only: the private key is not treated as a secret.
#[derive(Clone)]
pub struct Svid {
    spiffe_id: String,
    chain: Vec<CertificateDer<'static>>,
    key_pkcs8: Vec<u8>,
    serial: Vec<u8>,
    bundle: CertificateDer<'static>,
    trust_domain_id: String,
}

impl std::fmt::Debug for Svid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Svid")
            .field("spiffe_id", &self.spiffe_id)
            .field("serial", &self.serial)
            .finish_non_exhaustive()
    }
}

impl Svid {
    /// The SPIFFE ID the SVID was requested for (also for a [`SvidKind::NoUriSan`] leaf,
    /// whose certificate does not carry it).
    pub fn spiffe_id(&self) -> &str {
        &self.spiffe_id
    }

    /// The certificate chain, leaf first.
    pub fn cert_chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The leaf certificate.
    pub fn leaf(&self) -> &CertificateDer<'static> {
        // Invariant: `issue_with` always stores exactly one certificate.
        &self.chain[..1][0]
    }

    /// The chain as one concatenated DER blob (the Workload API `x509_svid` field).
    pub fn chain_der_concat(&self) -> Vec<u8> {
        self.chain
            .iter()
            .flat_map(|c| c.as_ref().to_vec())
            .collect()
    }

    /// The PKCS#8 DER private key bytes (the Workload API `x509_svid_key` field).
    pub fn key_pkcs8_der(&self) -> &[u8] {
        &self.key_pkcs8
    }

    /// The private key as a rustls type.
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_pkcs8.clone()))
    }

    /// The leaf's serial number (big-endian bytes as encoded).
    pub fn serial(&self) -> &[u8] {
        &self.serial
    }

    /// The issuing root (DER), i.e. the bundle of the issuer's trust domain.
    pub fn bundle(&self) -> &CertificateDer<'static> {
        &self.bundle
    }

    /// `spiffe://<trust domain>` of the issuing CA.
    pub fn issuer_trust_domain_id(&self) -> &str {
        &self.trust_domain_id
    }
}

/// The PKI of a test: the trust domain under test plus a foreign trust domain.
///
/// Cheap to clone; clones share the same roots, so several Workload API servers (one per
/// daemon under test) can serve SVIDs of one trust domain.
#[derive(Clone, Debug)]
pub struct TestPki {
    inner: Arc<PkiInner>,
}

#[derive(Debug)]
struct PkiInner {
    ca: TestCa,
    foreign: TestCa,
}

impl TestPki {
    /// A PKI for [`DEFAULT_TRUST_DOMAIN`] with a foreign root for [`FOREIGN_TRUST_DOMAIN`].
    ///
    /// # Errors
    /// [`TestkitError::Certificate`] if rcgen fails.
    pub fn new() -> Result<Self, TestkitError> {
        Self::with_trust_domain(DEFAULT_TRUST_DOMAIN)
    }

    /// A PKI for `trust_domain` with a foreign root for [`FOREIGN_TRUST_DOMAIN`].
    ///
    /// # Errors
    /// [`TestkitError::Certificate`] if rcgen fails.
    pub fn with_trust_domain(trust_domain: &str) -> Result<Self, TestkitError> {
        Ok(Self {
            inner: Arc::new(PkiInner {
                ca: TestCa::new(trust_domain)?,
                foreign: TestCa::new(FOREIGN_TRUST_DOMAIN)?,
            }),
        })
    }

    /// The CA of the trust domain under test.
    pub fn ca(&self) -> &TestCa {
        &self.inner.ca
    }

    /// The foreign trust domain's CA.
    pub fn foreign_ca(&self) -> &TestCa {
        &self.inner.foreign
    }

    /// The trust domain under test (bare name).
    pub fn trust_domain(&self) -> &str {
        self.inner.ca.trust_domain()
    }

    /// `spiffe://<trust domain><path>`; `path` must start with `/`.
    pub fn id(&self, path: &str) -> String {
        format!("spiffe://{}{path}", self.trust_domain())
    }

    /// A valid SVID for `spiffe_id`.
    ///
    /// # Errors
    /// [`TestkitError::Certificate`] if rcgen rejects the input.
    pub fn svid(&self, spiffe_id: &str) -> Result<Svid, TestkitError> {
        self.inner.ca.issue(spiffe_id)
    }

    /// An expired SVID for `spiffe_id`, signed by the trusted CA.
    ///
    /// # Errors
    /// [`TestkitError::Certificate`] if rcgen rejects the input.
    pub fn expired_svid(&self, spiffe_id: &str) -> Result<Svid, TestkitError> {
        self.inner.ca.issue_with(spiffe_id, SvidKind::Expired)
    }

    /// A valid SVID in the foreign trust domain with the same path as `spiffe_id`
    /// (`spiffe://other.test/<path>`), signed by the foreign CA.
    ///
    /// # Errors
    /// [`TestkitError::Certificate`] if rcgen rejects the input.
    pub fn foreign_svid(&self, spiffe_id: &str) -> Result<Svid, TestkitError> {
        let id = foreign_id(spiffe_id);
        self.inner.foreign.issue(&id)
    }

    /// A leaf without any URI SAN, signed by the trusted CA.
    ///
    /// # Errors
    /// [`TestkitError::Certificate`] if rcgen fails.
    pub fn no_uri_san_svid(&self, spiffe_id: &str) -> Result<Svid, TestkitError> {
        self.inner.ca.issue_with(spiffe_id, SvidKind::NoUriSan)
    }
}

/// Rewrites the trust domain of `spiffe_id` to [`FOREIGN_TRUST_DOMAIN`], keeping the path.
pub fn foreign_id(spiffe_id: &str) -> String {
    let rest = spiffe_id.strip_prefix("spiffe://").unwrap_or(spiffe_id);
    let path = rest.find('/').map_or("", |i| &rest[i..]);
    format!("spiffe://{FOREIGN_TRUST_DOMAIN}{path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_id_keeps_path() {
        assert_eq!(
            foreign_id("spiffe://spike.test/spike/nexus"),
            "spiffe://other.test/spike/nexus"
        );
        assert_eq!(foreign_id("spiffe://spike.test"), "spiffe://other.test");
    }

    #[test]
    fn serials_are_unique() {
        let pki = TestPki::new().unwrap();
        let a = pki.svid("spiffe://spike.test/a").unwrap();
        let b = pki.svid("spiffe://spike.test/a").unwrap();
        assert_ne!(a.serial(), b.serial());
        assert_eq!(a.cert_chain().len(), 1);
        assert_eq!(a.bundle(), pki.ca().root_der());
    }
}
