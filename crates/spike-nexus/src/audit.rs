//! The audit stream: one structured event per API request on target
//! [`spike_daemon::logging::AUDIT_TARGET`].
//!
//! Fields: `request_id`, `peer_spiffe_id`, `action`, `path` (the resource path, never a
//! value), `status` (HTTP), `result` (`allowed`, `denied` or `error`), `duration_ms`.

use std::time::Duration;

use spike_daemon::logging::AUDIT_TARGET;

/// The outcome class of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditResult {
    /// Authorized and answered 2xx.
    Allowed,
    /// Refused by authorization (401).
    Denied,
    /// Any other non-2xx answer.
    Error,
}

impl AuditResult {
    /// From an HTTP status.
    pub fn from_status(status: u16) -> Self {
        match status {
            200..=299 => AuditResult::Allowed,
            401 | 403 => AuditResult::Denied,
            _ => AuditResult::Error,
        }
    }

    /// The field value.
    pub const fn as_str(self) -> &'static str {
        match self {
            AuditResult::Allowed => "allowed",
            AuditResult::Denied => "denied",
            AuditResult::Error => "error",
        }
    }
}

/// One audit event.
#[derive(Debug, Clone)]
pub struct AuditEvent<'a> {
    /// Random per-request id.
    pub request_id: &'a str,
    /// The caller's SPIFFE ID (empty if none).
    pub peer_spiffe_id: &'a str,
    /// The action name (`secret_get`, ... or `fallback`, `not_ready`).
    pub action: &'a str,
    /// The resource path (secret path, policy name, system path, or the URL path).
    pub path: &'a str,
    /// The HTTP status.
    pub status: u16,
    /// Time spent.
    pub duration: Duration,
}

/// Emits `event`.
pub fn emit(event: &AuditEvent<'_>) {
    let result = AuditResult::from_status(event.status);
    let duration_ms = u64::try_from(event.duration.as_millis()).unwrap_or(u64::MAX);
    tracing::info!(
        target: AUDIT_TARGET,
        request_id = event.request_id,
        peer_spiffe_id = event.peer_spiffe_id,
        action = event.action,
        path = event.path,
        status = event.status,
        result = result.as_str(),
        duration_ms,
        "audit"
    );
}

/// A fresh random request id (16 hex characters).
pub fn request_id() -> String {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        return "0000000000000000".to_owned();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_and_ids() {
        assert_eq!(AuditResult::from_status(200), AuditResult::Allowed);
        assert_eq!(AuditResult::from_status(401), AuditResult::Denied);
        assert_eq!(AuditResult::from_status(404), AuditResult::Error);
        assert_eq!(AuditResult::from_status(503), AuditResult::Error);
        let a = request_id();
        assert_eq!(a.len(), 16);
        assert_ne!(a, request_id());
    }
}
