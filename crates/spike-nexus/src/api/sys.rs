//! Health extension routes (not in SPIKE; unknown to Go clients): `GET|HEAD /v1/sys/health`
//! and `/v1/sys/seal-status`, unauthenticated, Vault's status-code contract.
//!
//! `/v1/sys/health`: 200 unsealed, 501 never bootstrapped, 503 sealed; the query parameters
//! `activecode`, `uninitcode`, `sealedcode` override the codes, `standbyok` is accepted
//! (there is no standby). `/v1/sys/seal-status` always answers 200 (as Vault does) with the
//! same body plus `t`, `n`, `progress`. `HEAD` returns the status only.

use axum::body::Body;
use axum::response::Response;
use http::{Method, StatusCode};
use serde::Serialize;

use super::json_response;
use crate::state::NexusState;

/// The build id reported next to the version (`SPIKE_BUILD_ID` at compile time).
pub const BUILD_ID: &str = match option_env!("SPIKE_BUILD_ID") {
    Some(id) => id,
    None => "dev",
};

/// The crate version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The health body.
#[derive(Debug, Serialize)]
pub struct HealthBody {
    /// Bootstrapped at some point.
    pub initialized: bool,
    /// Root key not in memory.
    pub sealed: bool,
    /// Version.
    pub version: &'static str,
    /// Build id.
    pub build: &'static str,
    /// Shards collected towards unsealing.
    pub shards_collected: usize,
    /// Shards needed.
    pub threshold: u16,
    /// Keepers that answered the last probe.
    pub keepers_reachable: usize,
    /// The database exists and is not empty (PostgreSQL: the shared store was bootstrapped).
    pub has_data: bool,
    /// The store's database answers (false only for PostgreSQL when it does not; then
    /// `/v1/sys/health` answers 503 even while unsealed).
    pub backend_reachable: bool,
    /// Why the database does not answer; omitted when it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_error: Option<String>,
    /// Why the last unseal failed, when not for a wrong key (e.g. `cannot open the store
    /// /var/lib/spike-nexus/spike.db: storage full: database or disk is full`); omitted when
    /// there is none. Nexus retries by itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_error: Option<String>,
    /// Set while keepers hold shards that do not fit one root key: which keepers, and the
    /// commands that get out of it. No shard is pushed meanwhile. Omitted when they agree.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keepers_disagree: Option<String>,
}

#[derive(Debug, Serialize)]
struct SealStatusBody {
    #[serde(flatten)]
    health: HealthBody,
    t: u16,
    n: u16,
    progress: usize,
}

fn query_code(query: Option<&str>, name: &str) -> Option<StatusCode> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| v.parse::<u16>().ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
}

fn body_of(state: &NexusState) -> HealthBody {
    let h = state.health();
    HealthBody {
        initialized: h.initialized,
        sealed: h.sealed,
        version: VERSION,
        build: BUILD_ID,
        shards_collected: h.shards_collected,
        threshold: h.threshold,
        keepers_reachable: h.keepers_reachable,
        has_data: h.has_data,
        backend_reachable: h.backend_reachable,
        backend_error: h.backend_error,
        store_error: h.store_error,
        keepers_disagree: h.keepers_disagree,
    }
}

/// The health status code for `body` with the query overrides.
pub fn health_status(body: &HealthBody, query: Option<&str>) -> StatusCode {
    if !body.initialized {
        query_code(query, "uninitcode").unwrap_or(StatusCode::NOT_IMPLEMENTED)
    } else if body.sealed || !body.backend_reachable {
        query_code(query, "sealedcode").unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
    } else {
        query_code(query, "activecode").unwrap_or(StatusCode::OK)
    }
}

/// Serves one health request.
pub fn handle(state: &NexusState, method: &Method, path: &str, query: Option<&str>) -> Response {
    let body = body_of(state);
    let resp = if path == super::SYS_SEAL_STATUS {
        let config = state.config();
        let progress = body.shards_collected;
        json_response(
            StatusCode::OK,
            &SealStatusBody {
                health: body,
                t: config.threshold,
                n: config.shares,
                progress,
            },
        )
    } else {
        let status = health_status(&body, query);
        json_response(status, &body)
    };
    if method == Method::HEAD {
        let (parts, _) = resp.into_parts();
        return Response::from_parts(parts, Body::empty());
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(initialized: bool, sealed: bool) -> HealthBody {
        HealthBody {
            initialized,
            sealed,
            version: VERSION,
            build: BUILD_ID,
            shards_collected: 0,
            threshold: 2,
            keepers_reachable: 0,
            has_data: false,
            backend_reachable: true,
            backend_error: None,
            store_error: None,
            keepers_disagree: None,
        }
    }

    #[test]
    fn store_error_is_omitted_when_none() {
        let v = serde_json::to_value(body(true, true)).unwrap();
        assert!(v.get("store_error").is_none(), "{v}");
        let mut b = body(true, true);
        b.store_error = Some("cannot open the store /x/spike.db: disk I/O error".into());
        let v = serde_json::to_value(b).unwrap();
        assert_eq!(
            v["store_error"],
            "cannot open the store /x/spike.db: disk I/O error"
        );
    }

    #[test]
    fn vault_codes_and_overrides() {
        assert_eq!(health_status(&body(true, false), None), StatusCode::OK);
        assert_eq!(
            health_status(&body(false, true), None),
            StatusCode::NOT_IMPLEMENTED
        );
        assert_eq!(
            health_status(&body(true, true), None),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            health_status(&body(true, true), Some("standbyok=true&sealedcode=299")).as_u16(),
            299
        );
        assert_eq!(
            health_status(&body(false, true), Some("uninitcode=200")),
            StatusCode::OK
        );
        assert_eq!(
            health_status(&body(true, false), Some("activecode=204")),
            StatusCode::NO_CONTENT
        );
        assert_eq!(
            health_status(&body(true, false), Some("activecode=abc")),
            StatusCode::OK
        );
    }
}
