//! Hand-written prost messages of the SPIFFE Workload API (`workload.proto`), X.509 part.
//!
//! Field numbers follow the SPIFFE Workload API specification; the `spiffe` crate's own
//! generated module is private, so the testkit keeps its copy here.

use std::collections::HashMap;

use bytes::Bytes;

/// gRPC service name.
pub const SERVICE: &str = "SpiffeWorkloadAPI";
/// Path of the `FetchX509SVID` server-streaming method.
pub const FETCH_X509_SVID: &str = "/SpiffeWorkloadAPI/FetchX509SVID";
/// Path of the `FetchX509Bundles` server-streaming method.
pub const FETCH_X509_BUNDLES: &str = "/SpiffeWorkloadAPI/FetchX509Bundles";
/// The metadata key every Workload API request must carry (value `true`).
pub const SECURITY_HEADER: &str = "workload.spiffe.io";

/// `X509SVIDRequest {}`.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct X509SvidRequest {}

/// `X509SVIDResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct X509SvidResponse {
    /// `repeated X509SVID svids = 1`.
    #[prost(message, repeated, tag = "1")]
    pub svids: Vec<X509Svid>,
    /// `repeated bytes crl = 2`.
    #[prost(bytes = "bytes", repeated, tag = "2")]
    pub crl: Vec<Bytes>,
    /// `map<string, bytes> federated_bundles = 3`.
    #[prost(map = "string, bytes", tag = "3")]
    pub federated_bundles: HashMap<String, Bytes>,
}

/// `X509SVID`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct X509Svid {
    /// `string spiffe_id = 1`.
    #[prost(string, tag = "1")]
    pub spiffe_id: String,
    /// `bytes x509_svid = 2`: DER chain, leaf first, concatenated.
    #[prost(bytes = "bytes", tag = "2")]
    pub x509_svid: Bytes,
    /// `bytes x509_svid_key = 3`: PKCS#8 DER.
    #[prost(bytes = "bytes", tag = "3")]
    pub x509_svid_key: Bytes,
    /// `bytes bundle = 4`: DER certificates of the trust domain, concatenated.
    #[prost(bytes = "bytes", tag = "4")]
    pub bundle: Bytes,
    /// `string hint = 5`.
    #[prost(string, tag = "5")]
    pub hint: String,
}

/// `X509BundlesRequest {}`.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct X509BundlesRequest {}

/// `X509BundlesResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct X509BundlesResponse {
    /// `repeated bytes crl = 1`.
    #[prost(bytes = "bytes", repeated, tag = "1")]
    pub crl: Vec<Bytes>,
    /// `map<string, bytes> bundles = 2`, keyed by trust domain SPIFFE ID.
    #[prost(map = "string, bytes", tag = "2")]
    pub bundles: HashMap<String, Bytes>,
}
