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
/// The server must present a Keeper SPIFFE ID (`IsKeeper` under the given trust roots).
#[derive(Clone, Debug)]
pub struct KeeperClient {
    http: HttpsClient,
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
