//! [`KeeperClient`]: the two Keeper routes (docs/protocol.md#bootstrap-and-keepers), as Nexus and Bootstrap call them.

use spike_identity::{Identity, SpiffeId};
use spike_proto::keeper::{ShardGetRequest, ShardGetResponse, ShardPutRequest, ShardPutResponse};
use spike_proto::paths::{KEEPER_CONTRIBUTE, KEEPER_SHARD};
use spike_proto::{ShardBytes, TrustRoots};

use crate::error::ClientError;
use crate::transport::{ClientOptions, HttpsClient};
use crate::url::BaseUrl;

/// A typed client for one SPIKE Keeper.
///
/// The server must present a Keeper SPIFFE ID (`IsKeeper` under the given trust roots) and,
/// when the client is pinned ([`KeeperClient::pinned`]), exactly the expected ID. The check
/// runs in the TLS handshake, before any request (and so any shard) is sent.
#[derive(Clone, Debug)]
pub struct KeeperClient {
    http: HttpsClient,
    expected: Option<SpiffeId>,
}

impl KeeperClient {
    /// A client for the keeper at `base` that requires the server to be a Keeper under
    /// `roots`.
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
            move |id: &SpiffeId| roots.is_keeper(id.to_string().as_str()),
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
            expected: None,
        })
    }

    /// A client for the keeper at `base` that requires the server to present exactly
    /// `expected` (which must also be a Keeper under `roots`); with `None`, any Keeper ID, as
    /// [`KeeperClient::new`].
    ///
    /// # Errors
    /// [`ClientError::Identity`] if the TLS configuration cannot be built.
    pub fn pinned(
        identity: &Identity,
        base: BaseUrl,
        expected: Option<SpiffeId>,
        roots: &TrustRoots,
        options: ClientOptions,
    ) -> Result<Self, ClientError> {
        let Some(expected) = expected else {
            return Self::new(identity, base, roots, options);
        };
        let roots = roots.clone();
        let want = expected.clone();
        let mut client = Self::with_authorizer(
            identity,
            base,
            move |id: &SpiffeId| *id == want && roots.is_keeper(id.to_string().as_str()),
            options,
        )?;
        client.expected = Some(expected);
        Ok(client)
    }

    /// The SPIFFE ID this client requires of the keeper, when pinned.
    pub fn expected_id(&self) -> Option<&SpiffeId> {
        self.expected.as_ref()
    }

    /// A sentence for logs when `err` is the keeper presenting the wrong SPIFFE ID; `None`
    /// for any other error.
    pub fn identity_mismatch(&self, err: &ClientError) -> Option<String> {
        let ClientError::ServerRejected { presented, .. } = err else {
            return None;
        };
        let presented = presented.as_deref().unwrap_or("no SPIFFE ID");
        Some(match &self.expected {
            Some(want) => format!(
                "the server at {} presented {presented} but keeper_peers pins this URL to {want}; \
                 nothing was sent to it",
                self.base_url()
            ),
            None => format!(
                "the server at {} presented {presented}, which is not a Keeper ID; nothing was \
                 sent to it",
                self.base_url()
            ),
        })
    }

    /// The underlying HTTP client.
    pub fn http(&self) -> &HttpsClient {
        &self.http
    }

    /// The keeper's base URL.
    pub fn base_url(&self) -> &BaseUrl {
        self.http.base_url()
    }

    /// `POST /v1/store/contribute`: hands the keeper its shard (overwriting any previous).
    ///
    /// # Errors
    /// [`ClientError::BadRequest`] for a null/all-zero shard, [`ClientError::Unauthorized`],
    /// connection errors.
    pub async fn contribute(&self, shard: ShardBytes) -> Result<(), ClientError> {
        let req = ShardPutRequest { shard: Some(shard) };
        self.http
            .post_json::<_, ShardPutResponse>(KEEPER_CONTRIBUTE, None, &req)
            .await
            .map(drop)
    }

    /// `POST /v1/store/shard`: the keeper's shard (Nexus only).
    ///
    /// # Errors
    /// [`ClientError::BadRequest`] when the keeper holds no shard yet,
    /// [`ClientError::Unauthorized`] for a non-Nexus caller, [`ClientError::MissingField`]
    /// for a 200 without a shard.
    pub async fn shard(&self) -> Result<ShardBytes, ClientError> {
        let mut resp: ShardGetResponse = self
            .http
            .post_json(KEEPER_SHARD, None, &ShardGetRequest {})
            .await?;
        resp.shard.take().ok_or_else(|| ClientError::MissingField {
            url: self.http.base_url().full_url(KEEPER_SHARD),
            field: "shard",
        })
    }
}
