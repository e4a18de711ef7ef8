//! [`NexusClient`]: one typed method per Nexus route (docs/protocol.md, from Secrets to Cipher) plus the health extension.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::Method;
use spike_identity::{Identity, SpiffeId};
use spike_proto::bootstrap::{BootstrapVerifyRequest, BootstrapVerifyResponse};
use spike_proto::cipher::{
    CipherDecryptRequest, CipherDecryptResponse, CipherEncryptRequest, CipherEncryptResponse,
    STREAM_CONTENT_TYPE,
};
use spike_proto::operator::{RecoverRequest, RecoverResponse, RestoreRequest, RestoreResponse};
use spike_proto::paths::{
    ACTION_DELETE, ACTION_GET, ACTION_LIST, ACTION_UNDELETE, NEXUS_BOOTSTRAP_VERIFY,
    NEXUS_CIPHER_DECRYPT, NEXUS_CIPHER_ENCRYPT, NEXUS_OPERATOR_RECOVER, NEXUS_OPERATOR_RESTORE,
    NEXUS_POLICY, NEXUS_SECRETS, NEXUS_SECRETS_METADATA,
};
use spike_proto::policy::{
    PolicyDeleteRequest, PolicyDeleteResponse, PolicyListItem, PolicyListRequest,
    PolicyListResponse, PolicyPutRequest, PolicyPutResponse, PolicyReadRequest, PolicyReadResponse,
};
use spike_proto::secrets::{
    SecretDeleteRequest, SecretDeleteResponse, SecretGetRequest, SecretGetResponse,
    SecretListRequest, SecretListResponse, SecretMetadataRequest, SecretMetadataResponse,
    SecretPutRequest, SecretPutResponse, SecretUndeleteRequest, SecretUndeleteResponse,
};
use spike_proto::{ShardBytes, TrustRoots};

use crate::error::ClientError;
use crate::transport::{ClientOptions, HttpsClient, check_status, wipe};
use crate::url::BaseUrl;

/// The health extension route (not part of SPIKE 0.8; a Go Nexus answers it with 400).
pub const HEALTH_PATH: &str = "/v1/sys/health";

/// The answer of `GET /v1/sys/health`, whatever the status.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthResponse {
    /// The HTTP status: 200 unsealed, 501 never bootstrapped, 503 sealed; a Go Nexus
    /// (no health route) answers 400 (or 404 behind some proxies).
    pub status: u16,
    /// The JSON body, `Value::Null` when the body is empty or not JSON.
    pub body: serde_json::Value,
}

impl HealthResponse {
    /// A boolean field of the body, if present.
    pub fn flag(&self, name: &str) -> Option<bool> {
        self.body.get(name).and_then(serde_json::Value::as_bool)
    }

    /// Whether the server implements the health extension (a status from its contract).
    pub fn is_supported(&self) -> bool {
        matches!(self.status, 200 | 429 | 472 | 473 | 501 | 503)
    }
}

/// A typed client for SPIKE Nexus.
///
/// The server must present a Nexus SPIFFE ID (`IsNexus` under the given trust roots).
/// Methods follow the Go SDK: status codes map to [`ClientError`] variants (docs/protocol.md#conventions), a
/// non-empty `err` in a 200 body is [`ClientError::Api`], and the two list methods turn a
/// 404 into an empty list as the SDK does.
#[derive(Clone, Debug)]
pub struct NexusClient {
    http: HttpsClient,
}

impl NexusClient {
    /// A client for the Nexus at `base` that requires the server to be a Nexus under `roots`.
    ///
    /// # Errors
    /// [`ClientError::Identity`] if the TLS configuration cannot be built.
    pub fn new(
        identity: &Identity,
        base: BaseUrl,
        roots: &TrustRoots,
        options: ClientOptions,
    ) -> Result<Self, ClientError> {
        let roots = roots.clone();
        Self::with_authorizer(
            identity,
            base,
            move |id: &SpiffeId| roots.is_nexus(id.to_string().as_str()),
            options,
        )
    }

    /// A client with a custom server authorizer.
    ///
    /// # Errors
    /// [`ClientError::Identity`] if the TLS configuration cannot be built.
    pub fn with_authorizer(
        identity: &Identity,
        base: BaseUrl,
        authorize: impl Fn(&SpiffeId) -> bool + Send + Sync + 'static,
        options: ClientOptions,
    ) -> Result<Self, ClientError> {
        Ok(Self {
            http: HttpsClient::new(identity, base, authorize, options)?,
        })
    }

    /// The underlying HTTP client (raw requests, base URL, pool).
    pub fn http(&self) -> &HttpsClient {
        &self.http
    }

    /// The Nexus base URL.
    pub fn base_url(&self) -> &BaseUrl {
        self.http.base_url()
    }

    // ----- secrets (docs/protocol.md#secrets)

    /// `POST /v1/store/secrets`: creates a new version of the secret at `path`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn put_secret(
        &self,
        path: &str,
        values: BTreeMap<String, String>,
    ) -> Result<(), ClientError> {
        let mut req = SecretPutRequest {
            path: path.to_owned(),
            values,
        };
        let result = self
            .http
            .post_json::<_, SecretPutResponse>(NEXUS_SECRETS, None, &req)
            .await
            .map(drop);
        // The values are secrets: wipe them (the encoded request body is hyper's).
        req.values.values_mut().for_each(zeroize::Zeroize::zeroize);
        result
    }

    /// `?action=get`: the data of `version` (0 = current).
    ///
    /// # Errors
    /// [`ClientError::NotFound`] for an unknown path or a missing/deleted version.
    pub async fn get_secret(
        &self,
        path: &str,
        version: i64,
    ) -> Result<BTreeMap<String, String>, ClientError> {
        let req = SecretGetRequest {
            path: path.to_owned(),
            version,
        };
        let mut resp: SecretGetResponse = self
            .http
            .post_json(NEXUS_SECRETS, Some(ACTION_GET), &req)
            .await?;
        Ok(resp.data.take().unwrap_or_default())
    }

    /// `?action=delete`: soft-deletes `versions` (empty = current; `0` = current).
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn delete_secret(&self, path: &str, versions: &[i64]) -> Result<(), ClientError> {
        let req = SecretDeleteRequest {
            path: path.to_owned(),
            versions: Some(versions.to_vec()),
        };
        self.http
            .post_json::<_, SecretDeleteResponse>(NEXUS_SECRETS, Some(ACTION_DELETE), &req)
            .await
            .map(drop)
    }

    /// `?action=undelete`: restores soft-deleted `versions` (empty = current).
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn undelete_secret(&self, path: &str, versions: &[i64]) -> Result<(), ClientError> {
        let req = SecretUndeleteRequest {
            path: path.to_owned(),
            versions: Some(versions.to_vec()),
        };
        self.http
            .post_json::<_, SecretUndeleteResponse>(NEXUS_SECRETS, Some(ACTION_UNDELETE), &req)
            .await
            .map(drop)
    }

    /// `?action=list`: every secret path, sorted; a 404 reads as an empty list (as the SDK).
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn list_secrets(&self) -> Result<Vec<String>, ClientError> {
        let resp: Result<SecretListResponse, _> = self
            .http
            .post_json(NEXUS_SECRETS, Some(ACTION_LIST), &SecretListRequest {})
            .await;
        match resp {
            Ok(resp) => Ok(resp.keys.unwrap_or_default()),
            Err(ClientError::NotFound { .. }) => Ok(Vec::new()),
            Err(err) => Err(err),
        }
    }

    /// `POST /v1/store/secrets/metadata?action=get`.
    ///
    /// # Errors
    /// [`ClientError::NotFound`] under the same conditions as [`NexusClient::get_secret`].
    pub async fn secret_metadata(
        &self,
        path: &str,
        version: i64,
    ) -> Result<SecretMetadataResponse, ClientError> {
        let req = SecretMetadataRequest {
            path: path.to_owned(),
            version,
        };
        self.http
            .post_json(NEXUS_SECRETS_METADATA, Some(ACTION_GET), &req)
            .await
    }

    // ----- policies (docs/protocol.md#policy-routes)

    /// `POST /v1/acl/policy`: creates or updates (upsert by name).
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn put_policy(&self, policy: &PolicyPutRequest) -> Result<(), ClientError> {
        self.http
            .post_json::<_, PolicyPutResponse>(NEXUS_POLICY, None, policy)
            .await
            .map(drop)
    }

    /// `?action=get`: the policy named `name`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn get_policy(&self, name: &str) -> Result<PolicyReadResponse, ClientError> {
        let req = PolicyReadRequest {
            id: name.to_owned(),
        };
        self.http
            .post_json(NEXUS_POLICY, Some(ACTION_GET), &req)
            .await
    }

    /// `?action=delete`: deletes the policy named `name`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn delete_policy(&self, name: &str) -> Result<(), ClientError> {
        let req = PolicyDeleteRequest {
            id: name.to_owned(),
        };
        self.http
            .post_json::<_, PolicyDeleteResponse>(NEXUS_POLICY, Some(ACTION_DELETE), &req)
            .await
            .map(drop)
    }

    /// `?action=list` with exact-match filters (`""` = no filter); a 404 reads as empty.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn list_policies(
        &self,
        spiffe_id_pattern: &str,
        path_pattern: &str,
    ) -> Result<Vec<PolicyListItem>, ClientError> {
        let req = PolicyListRequest {
            spiffe_id_pattern: spiffe_id_pattern.to_owned(),
            path_pattern: path_pattern.to_owned(),
        };
        let resp: Result<PolicyListResponse, _> = self
            .http
            .post_json(NEXUS_POLICY, Some(ACTION_LIST), &req)
            .await;
        match resp {
            Ok(resp) => Ok(resp.policies.unwrap_or_default()),
            Err(ClientError::NotFound { .. }) => Ok(Vec::new()),
            Err(err) => Err(err),
        }
    }

    // ----- cipher (docs/protocol.md#cipher)

    /// JSON-mode encrypt: returns version, nonce and ciphertext.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn encrypt(&self, plaintext: &[u8]) -> Result<CipherEncryptResponse, ClientError> {
        let mut req = CipherEncryptRequest {
            plaintext: Some(plaintext.to_vec()),
            algorithm: String::new(),
        };
        let resp = self.http.post_json(NEXUS_CIPHER_ENCRYPT, None, &req).await;
        if let Some(p) = req.plaintext.as_mut() {
            wipe(p);
        }
        resp
    }

    /// JSON-mode decrypt: returns the plaintext.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn decrypt(
        &self,
        version: u8,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, ClientError> {
        let req = CipherDecryptRequest {
            version,
            nonce: Some(nonce.to_vec()),
            ciphertext: Some(ciphertext.to_vec()),
            algorithm: String::new(),
        };
        let mut resp: CipherDecryptResponse = self
            .http
            .post_json(NEXUS_CIPHER_DECRYPT, None, &req)
            .await?;
        Ok(resp.plaintext.take().unwrap_or_default())
    }

    /// Stream-mode encrypt: body = raw plaintext; returns `0x01 ‖ nonce ‖ ciphertext`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn encrypt_stream(&self, plaintext: Bytes) -> Result<Vec<u8>, ClientError> {
        self.stream(NEXUS_CIPHER_ENCRYPT, plaintext).await
    }

    /// Stream-mode decrypt: body = `0x01 ‖ nonce ‖ ciphertext`; returns the plaintext.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn decrypt_stream(&self, data: Bytes) -> Result<Vec<u8>, ClientError> {
        self.stream(NEXUS_CIPHER_DECRYPT, data).await
    }

    async fn stream(&self, path: &str, body: Bytes) -> Result<Vec<u8>, ClientError> {
        let raw = self
            .http
            .request(Method::POST, path, None, Some(STREAM_CONTENT_TYPE), body)
            .await?;
        let url = self.http.base_url().full_url(path);
        check_status(&url, raw.status)?;
        Ok(raw.body)
    }

    // ----- operator (docs/protocol.md#root-key-shards-and-recovery-files)

    /// `POST /v1/operator/recover`: every recovery shard keyed by share id (recover role).
    ///
    /// # Errors
    /// See [`ClientError`]; [`ClientError::MissingField`] if a 200 body has no shards.
    pub async fn recover(&self) -> Result<BTreeMap<i64, ShardBytes>, ClientError> {
        let mut resp: RecoverResponse = self
            .http
            .post_json(NEXUS_OPERATOR_RECOVER, None, &RecoverRequest {})
            .await?;
        resp.shards.take().ok_or_else(|| ClientError::MissingField {
            url: self.http.base_url().full_url(NEXUS_OPERATOR_RECOVER),
            field: "shards",
        })
    }

    /// `POST /v1/operator/restore`: submits one recovery shard (restore role).
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn restore(
        &self,
        id: i64,
        shard: ShardBytes,
    ) -> Result<RestoreResponse, ClientError> {
        let req = RestoreRequest {
            id,
            shard: Some(shard),
        };
        self.http
            .post_json(NEXUS_OPERATOR_RESTORE, None, &req)
            .await
    }

    // ----- bootstrap (docs/protocol.md#bootstrap-and-keepers)

    /// `POST /v1/bootstrap/verify`: returns Nexus's hex SHA-256 of the decrypted text.
    ///
    /// # Errors
    /// See [`ClientError`]; a 503 ([`ClientError::NotReady`]) means Nexus is still unsealing.
    pub async fn bootstrap_verify(
        &self,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<String, ClientError> {
        let req = BootstrapVerifyRequest {
            nonce: Some(nonce.to_vec()),
            ciphertext: Some(ciphertext.to_vec()),
        };
        let resp: BootstrapVerifyResponse = self
            .http
            .post_json(NEXUS_BOOTSTRAP_VERIFY, None, &req)
            .await?;
        Ok(resp.hash)
    }

    // ----- extensions

    /// `GET /v1/sys/health`: the status and JSON body, whatever the status.
    ///
    /// # Errors
    /// Only connection-level errors; every status is returned in [`HealthResponse`].
    pub async fn health(&self) -> Result<HealthResponse, ClientError> {
        let raw = self
            .http
            .request(Method::GET, HEALTH_PATH, None, None, Bytes::new())
            .await?;
        let body = serde_json::from_slice(&raw.body).unwrap_or(serde_json::Value::Null);
        Ok(HealthResponse {
            status: raw.status,
            body,
        })
    }
}
