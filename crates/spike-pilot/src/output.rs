//! Output formats of the read commands: human (SPIKE's text layout), JSON and YAML (docs/compatibility.md#pilot-spike).
//!
//! Every function returns the complete text for standard output, ending in a newline.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use spike_proto::Timestamp;
use spike_proto::policy::{PolicyListItem, PolicyReadResponse};
use spike_proto::secrets::SecretMetadataResponse;
use time::OffsetDateTime;

use crate::errors::PilotError;

/// 50 dashes, SPIKE's metadata separator.
pub const SEPARATOR: &str = "--------------------------------------------------";

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// SPIKE's human-readable text.
    Human,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

impl Format {
    /// Parses a `--format` value like SPIKE: `human|h|plain|p|""`, `json|j`, `yaml|y`.
    ///
    /// # Errors
    /// [`PilotError::Usage`] with SPIKE's message.
    pub fn parse(value: &str) -> Result<Self, PilotError> {
        match value {
            "human" | "h" | "plain" | "p" | "" => Ok(Self::Human),
            "json" | "j" => Ok(Self::Json),
            "yaml" | "y" => Ok(Self::Yaml),
            other => Err(PilotError::Usage(format!(
                "Error: invalid format '{other}'. Valid formats are: human/h/plain/p, json/j, \
                 yaml/y"
            ))),
        }
    }
}

/// JSON with `indent` spaces and a trailing newline.
pub fn json_indented<T: Serialize + ?Sized>(value: &T, indent: usize) -> String {
    let spaces = vec![b' '; indent];
    let formatter = serde_json::ser::PrettyFormatter::with_indent(&spaces);
    let mut buf = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, formatter);
    if value.serialize(&mut ser).is_err() {
        return "null\n".to_owned();
    }
    let mut text = String::from_utf8(buf).unwrap_or_default();
    text.push('\n');
    text
}

fn to_value<T: Serialize + ?Sized>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// `spike secret get`: all keys, or the value of `key`.
///
/// # Errors
/// `Error: Secret has no data.` for an empty secret, `Error: Key not found.` for a missing key.
pub fn secret_data(
    data: &BTreeMap<String, String>,
    key: Option<&str>,
    format: Format,
) -> Result<String, PilotError> {
    if data.is_empty() {
        return Err(PilotError::failed("Error: Secret has no data."));
    }
    if let Some(key) = key {
        let value = data
            .get(key)
            .ok_or_else(|| PilotError::failed("Error: Key not found."))?;
        return Ok(match format {
            Format::Human => format!("{value}\n"),
            Format::Json => json_indented(value, 4),
            Format::Yaml => to_yaml(&Value::String(value.clone())),
        });
    }
    Ok(match format {
        Format::Human => data.iter().map(|(k, v)| format!("{k}: {v}\n")).collect(),
        Format::Json => json_indented(data, 4),
        Format::Yaml => to_yaml(&to_value(data)),
    })
}

/// `spike secret list`.
pub fn secret_list(keys: &[String], format: Format) -> String {
    match format {
        Format::Human if keys.is_empty() => "No secrets found.\n".to_owned(),
        Format::Human => keys.iter().map(|k| format!("- {k}\n")).collect(),
        Format::Json if keys.is_empty() => "[]\n".to_owned(),
        Format::Json => json_indented(keys, 2),
        Format::Yaml => to_yaml(&to_value(keys)),
    }
}

/// `spike secret metadata get`.
pub fn secret_metadata(resp: &SecretMetadataResponse, format: Format) -> String {
    match format {
        Format::Json => json_indented(resp, 2),
        Format::Yaml => to_yaml(&to_value(resp)),
        Format::Human => {
            let m = &resp.metadata;
            let mut out = String::new();
            out.push_str("Metadata:\n");
            out.push_str(SEPARATOR);
            out.push('\n');
            out.push_str(&format!("Current Version: {}\n", m.current_version));
            out.push_str(&format!("Oldest Version: {}\n", m.oldest_version));
            out.push_str(&format!("Created Time: {}\n", human_time(m.created_time)));
            out.push_str(&format!("Last Updated: {}\n", human_time(m.updated_time)));
            out.push_str(&format!("Max Versions: {}\n", m.max_versions));
            out.push_str(SEPARATOR);
            out.push_str("\n\nSecret Versions:\n");
            out.push_str(SEPARATOR);
            out.push('\n');
            for (number, v) in &resp.versions {
                out.push_str(&format!("Version {number}:\n"));
                out.push_str(&format!("  Created: {}\n", human_time(v.created_time)));
                if let Some(deleted) = v.deleted_time {
                    out.push_str(&format!("  Deleted: {}\n", human_time(deleted)));
                }
                out.push_str(SEPARATOR);
                out.push('\n');
            }
            out
        }
    }
}

/// `spike policy list`.
pub fn policy_list(items: &[PolicyListItem], format: Format) -> String {
    match format {
        Format::Human if items.is_empty() => "No policies found.\n".to_owned(),
        Format::Human => {
            let mut out = String::from("POLICIES\n========\n\n");
            for item in items {
                out.push_str(&format!("Name: {}\n--------\n\n", item.name));
            }
            out
        }
        Format::Json if items.is_empty() => "[]\n".to_owned(),
        Format::Json => json_indented(items, 2),
        Format::Yaml => to_yaml(&to_value(items)),
    }
}

/// `spike policy get`. JSON and YAML use the wire field names (`spiffiedPattern`).
pub fn policy_details(policy: &PolicyReadResponse, format: Format) -> String {
    match format {
        Format::Json => json_indented(policy, 2),
        Format::Yaml => to_yaml(&to_value(policy)),
        Format::Human => {
            let permissions: Vec<&str> = policy
                .permissions
                .iter()
                .flatten()
                .map(|p| p.as_str())
                .collect();
            let mut out = String::from("POLICY DETAILS\n=============\n\n");
            out.push_str(&format!("Name: {}\n", policy.name));
            out.push_str(&format!(
                "SPIFFE ID Pattern: {}\n",
                policy.spiffe_id_pattern
            ));
            out.push_str(&format!("Path Pattern: {}\n", policy.path_pattern));
            out.push_str(&format!("Permissions: {}\n", permissions.join(", ")));
            out.push_str(&format!("Created At: {}\n", rfc3339(policy.created_at)));
            if !policy.updated_at.is_zero() {
                out.push_str(&format!("Updated At: {}\n", rfc3339(policy.updated_at)));
            }
            out
        }
    }
}

/// What `spike status` reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusReport {
    /// The Nexus URL asked.
    pub nexus_url: String,
    /// The HTTP status of `/v1/sys/health`.
    pub http_status: u16,
    /// Whether Nexus was ever bootstrapped.
    pub initialized: Option<bool>,
    /// Whether the root key is absent from memory.
    pub sealed: Option<bool>,
    /// Nexus version.
    pub nexus_version: Option<String>,
    /// Nexus build id.
    pub nexus_build: Option<String>,
    /// Shards collected towards unsealing.
    pub shards_collected: Option<u64>,
    /// Shards needed.
    pub threshold: Option<u64>,
    /// Keepers that answered Nexus's last probe.
    pub keepers_reachable: Option<u64>,
    /// Whether the database holds data.
    pub has_data: Option<bool>,
    /// Why Nexus cannot open its store, when it cannot (absent from older Nexus answers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_error: Option<String>,
    /// Set while keepers hold shards that do not fit one root key (Nexus pushes no shard):
    /// which keepers, and the way out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keepers_disagree: Option<String>,
    /// This CLI's version.
    pub pilot_version: String,
}

impl StatusReport {
    /// Builds the report from a health answer.
    pub fn from_health(nexus_url: &str, status: u16, body: &Value) -> Self {
        let flag = |k: &str| body.get(k).and_then(Value::as_bool);
        let num = |k: &str| body.get(k).and_then(Value::as_u64);
        let text = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_owned);
        Self {
            nexus_url: nexus_url.to_owned(),
            http_status: status,
            initialized: flag("initialized"),
            sealed: flag("sealed"),
            nexus_version: text("version"),
            nexus_build: text("build"),
            shards_collected: num("shards_collected"),
            threshold: num("threshold"),
            keepers_reachable: num("keepers_reachable"),
            has_data: flag("has_data"),
            store_error: text("store_error").filter(|e| !e.trim().is_empty()),
            keepers_disagree: text("keepers_disagree").filter(|e| !e.trim().is_empty()),
            pilot_version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}

impl StatusReport {
    /// `None` while Nexus is unsealed and serving; otherwise why it is sealed and the way out,
    /// starting with `sealed`. Used by `spike status` and by every command that gets
    /// `state_not_ready`.
    pub fn sealed_state(&self) -> Option<String> {
        fn show(v: Option<u64>) -> String {
            v.map_or_else(|| "?".to_owned(), |v| v.to_string())
        }
        if let Some(cause) = &self.store_error {
            return Some(format!("sealed: Nexus cannot open its store: {cause}"));
        }
        let (k, n) = (show(self.shards_collected), show(self.threshold));
        if self.sealed == Some(true)
            && let Some(disagree) = &self.keepers_disagree
        {
            return Some(format!("sealed: {disagree}"));
        }
        match (self.initialized, self.sealed) {
            (Some(false), _) => Some(format!(
                "sealed: waiting for bootstrap ({k}/{n} shards). SPIKE Bootstrap has not \
                 delivered the root key to the keepers yet; check it with journalctl -u \
                 spike-bootstrap"
            )),
            (_, Some(false)) => None,
            (Some(true), Some(true))
                if self.has_data == Some(true)
                    && self.shards_collected.unwrap_or(0) < self.threshold.unwrap_or(u64::MAX) =>
            {
                Some(format!(
                    "sealed: Nexus has data but its root key is not in memory ({k}/{n} shards \
                     from keepers). After a power cut, restore it from the recovery shards: \
                     spike-operator restore DIR (as root; see docs/operations.md)"
                ))
            }
            (_, Some(true)) => Some(format!(
                "sealed: waiting for the keepers ({k}/{n} shards collected, {} keepers \
                 reachable)",
                show(self.keepers_reachable)
            )),
            (_, None) if self.http_status == 200 => None,
            (_, None) => Some("sealed (its root key is not in memory)".to_owned()),
        }
    }

    /// Whether Nexus is unsealed and serving (`spike status` exits 0).
    pub fn is_serving(&self) -> bool {
        self.sealed_state().is_none()
    }
}

/// `spike status`.
pub fn status(report: &StatusReport, format: Format) -> String {
    match format {
        Format::Json => json_indented(report, 2),
        Format::Yaml => to_yaml(&to_value(report)),
        Format::Human => {
            fn show<T: ToString>(v: Option<T>) -> String {
                v.map_or_else(|| "unknown".to_owned(), |v| v.to_string())
            }
            let state = report
                .sealed_state()
                .unwrap_or_else(|| "ready (unsealed and serving)".to_owned());
            let mut out = String::new();
            out.push_str(&format!("SPIKE Nexus:       {}\n", report.nexus_url));
            out.push_str(&format!("State:             {state}\n"));
            out.push_str(&format!(
                "Initialized:       {}\n",
                show(report.initialized)
            ));
            out.push_str(&format!("Sealed:            {}\n", show(report.sealed)));
            out.push_str(&format!(
                "Shards collected:  {} of {}\n",
                show(report.shards_collected),
                show(report.threshold)
            ));
            out.push_str(&format!(
                "Keepers reachable: {}\n",
                show(report.keepers_reachable)
            ));
            out.push_str(&format!("Has data:          {}\n", show(report.has_data)));
            if let Some(cause) = &report.store_error {
                out.push_str(&format!("Store error:       {cause}\n"));
            }
            if let Some(disagree) = &report.keepers_disagree {
                out.push_str(&format!("Keepers disagree:  {disagree}\n"));
            }
            out.push_str(&format!(
                "Nexus version:     {} (build {})\n",
                show(report.nexus_version.clone()),
                show(report.nexus_build.clone())
            ));
            out.push_str(&format!("Pilot version:     {}\n", report.pilot_version));
            out
        }
    }
}

/// A time as Go's `2006-01-02 15:04:05 MST` (UTC shows `UTC`, other offsets `+hhmm`).
pub fn human_time(ts: Timestamp) -> String {
    format_time(ts, ' ', " ", "UTC", "")
}

/// A time as RFC 3339 without fractional seconds (Go's `time.RFC3339`).
pub fn rfc3339(ts: Timestamp) -> String {
    format_time(ts, 'T', "", "Z", ":")
}

/// `YYYY-MM-DD<sep>hh:mm:ss<gap><zone>`; the zone is `utc` or `±hh<colon>mm`.
fn format_time(ts: Timestamp, sep: char, gap: &str, utc: &str, colon: &str) -> String {
    let t: OffsetDateTime = ts.get();
    let offset = t.offset();
    let zone = if offset.is_utc() {
        utc.to_owned()
    } else {
        let (h, m, _) = offset.as_hms();
        let sign = if offset.is_negative() { '-' } else { '+' };
        format!(
            "{sign}{:02}{colon}{:02}",
            h.unsigned_abs(),
            m.unsigned_abs()
        )
    };
    format!(
        "{:04}-{:02}-{:02}{sep}{:02}:{:02}:{:02}{gap}{zone}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

// ----- a small YAML emitter (block style; strings quoted when a plain scalar is unsafe)

/// Renders a JSON value as YAML (block style, two-space indent, trailing newline).
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => emit_map(map, 0, &mut out),
        Value::Array(items) if !items.is_empty() => emit_seq(items, 0, &mut out),
        other => {
            out.push_str(&yaml_scalar(other));
            out.push('\n');
        }
    }
    out
}

fn is_block(value: &Value) -> bool {
    match value {
        Value::Object(m) => !m.is_empty(),
        Value::Array(a) => !a.is_empty(),
        _ => false,
    }
}

fn emit_map(map: &serde_json::Map<String, Value>, indent: usize, out: &mut String) {
    for (key, value) in map {
        out.push_str(&" ".repeat(indent));
        out.push_str(&yaml_string(key));
        out.push(':');
        match value {
            Value::Object(m) if !m.is_empty() => {
                out.push('\n');
                emit_map(m, indent + 2, out);
            }
            Value::Array(a) if !a.is_empty() => {
                out.push('\n');
                emit_seq(a, indent + 2, out);
            }
            scalar => {
                out.push(' ');
                out.push_str(&yaml_scalar(scalar));
                out.push('\n');
            }
        }
    }
}

fn emit_seq(items: &[Value], indent: usize, out: &mut String) {
    for item in items {
        if is_block(item) {
            let mut inner = String::new();
            match item {
                Value::Object(m) => emit_map(m, indent + 2, &mut inner),
                Value::Array(a) => emit_seq(a, indent + 2, &mut inner),
                _ => {}
            }
            out.push_str(&" ".repeat(indent));
            out.push_str("- ");
            out.push_str(inner.get(indent + 2..).unwrap_or_default());
        } else {
            out.push_str(&" ".repeat(indent));
            out.push_str("- ");
            out.push_str(&yaml_scalar(item));
            out.push('\n');
        }
    }
}

fn yaml_scalar(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => yaml_string(s),
        Value::Array(_) => "[]".to_owned(),
        Value::Object(_) => "{}".to_owned(),
    }
}

/// A string as a YAML scalar: plain when unambiguous, else double-quoted (JSON escapes are
/// valid YAML escapes).
pub fn yaml_string(s: &str) -> String {
    if is_plain_safe(s) {
        s.to_owned()
    } else {
        serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
    }
}

fn is_plain_safe(s: &str) -> bool {
    const RESERVED: [&str; 12] = [
        "true", "false", "yes", "no", "on", "off", "null", "y", "n", "~", ".inf", ".nan",
    ];
    let Some(first) = s.chars().next() else {
        return false;
    };
    let allowed = |c: char| c.is_ascii_alphanumeric() || "_-./+()^$\\: *?|".contains(c);
    !(RESERVED.contains(&s.to_ascii_lowercase().as_str())
        || !s.chars().all(allowed)
        || !(first.is_ascii_alphabetic() || "_./(^$\\".contains(first))
        || s.ends_with(' ')
        || s.ends_with(':')
        || s.contains(": ")
        || s.parse::<f64>().is_ok()
        || s.starts_with("0x")
        || s.starts_with("0o"))
}

#[cfg(test)]
mod tests {
    use spike_proto::policy::Permission;
    use spike_proto::secrets::{SecretMetadataContent, SecretVersionInfo};

    use super::*;

    fn ts(s: &str) -> Timestamp {
        Timestamp::parse_rfc3339(s).unwrap()
    }

    fn data() -> BTreeMap<String, String> {
        [("user", "admin"), ("pass", "s3cr:et \"q\"")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    #[test]
    fn a_disagreement_is_the_sealed_state_and_a_line_of_its_own() {
        let text = "keepers disagree: keeper 1 holds a shard that does not fit …";
        let sealed = StatusReport::from_health(
            "https://n",
            503,
            &serde_json::json!({"initialized": true, "sealed": true, "keepers_disagree": text}),
        );
        assert_eq!(sealed.sealed_state().unwrap(), format!("sealed: {text}"));
        let unsealed = StatusReport::from_health(
            "https://n",
            200,
            &serde_json::json!({"initialized": true, "sealed": false, "keepers_disagree": text}),
        );
        assert!(unsealed.is_serving());
        assert!(status(&unsealed, Format::Human).contains(&format!("Keepers disagree:  {text}")));
    }

    #[test]
    fn formats_parse_like_spike() {
        for (v, f) in [
            ("human", Format::Human),
            ("h", Format::Human),
            ("plain", Format::Human),
            ("p", Format::Human),
            ("", Format::Human),
            ("json", Format::Json),
            ("j", Format::Json),
            ("yaml", Format::Yaml),
            ("y", Format::Yaml),
        ] {
            assert_eq!(Format::parse(v).unwrap(), f, "{v}");
        }
        let err = Format::parse("xml").unwrap_err();
        assert_eq!(
            err.message(),
            "Error: invalid format 'xml'. Valid formats are: human/h/plain/p, json/j, yaml/y"
        );
        assert_eq!(err.exit_code(), crate::EXIT_USAGE);
    }

    #[test]
    fn secret_get_formats() {
        let d = data();
        assert_eq!(
            secret_data(&d, None, Format::Human).unwrap(),
            "pass: s3cr:et \"q\"\nuser: admin\n"
        );
        assert_eq!(
            secret_data(&d, None, Format::Json).unwrap(),
            "{\n    \"pass\": \"s3cr:et \\\"q\\\"\",\n    \"user\": \"admin\"\n}\n"
        );
        assert_eq!(
            secret_data(&d, None, Format::Yaml).unwrap(),
            "pass: \"s3cr:et \\\"q\\\"\"\nuser: admin\n"
        );
        assert_eq!(
            secret_data(&d, Some("user"), Format::Human).unwrap(),
            "admin\n"
        );
        assert_eq!(
            secret_data(&d, Some("user"), Format::Json).unwrap(),
            "\"admin\"\n"
        );
        assert_eq!(
            secret_data(&d, Some("user"), Format::Yaml).unwrap(),
            "admin\n"
        );
        assert_eq!(
            secret_data(&d, Some("nope"), Format::Human)
                .unwrap_err()
                .message(),
            "Error: Key not found."
        );
        assert_eq!(
            secret_data(&BTreeMap::new(), None, Format::Json)
                .unwrap_err()
                .message(),
            "Error: Secret has no data."
        );
    }

    #[test]
    fn secret_list_formats() {
        let keys = vec!["a/b".to_owned(), "c".to_owned()];
        assert_eq!(secret_list(&keys, Format::Human), "- a/b\n- c\n");
        assert_eq!(
            secret_list(&keys, Format::Json),
            "[\n  \"a/b\",\n  \"c\"\n]\n"
        );
        assert_eq!(secret_list(&keys, Format::Yaml), "- a/b\n- c\n");
        assert_eq!(secret_list(&[], Format::Human), "No secrets found.\n");
        assert_eq!(secret_list(&[], Format::Json), "[]\n");
        assert_eq!(secret_list(&[], Format::Yaml), "[]\n");
    }

    fn metadata() -> SecretMetadataResponse {
        let mut versions = BTreeMap::new();
        versions.insert(
            1,
            SecretVersionInfo {
                created_time: ts("2026-01-02T15:04:05Z"),
                version: 1,
                deleted_time: Some(ts("2026-01-03T00:00:00Z")),
            },
        );
        versions.insert(
            2,
            SecretVersionInfo {
                created_time: ts("2026-01-02T16:00:00.5-08:00"),
                version: 2,
                deleted_time: None,
            },
        );
        SecretMetadataResponse {
            versions,
            metadata: SecretMetadataContent {
                current_version: 2,
                oldest_version: 1,
                created_time: ts("2026-01-02T15:04:05Z"),
                updated_time: ts("2026-01-02T16:00:00.5-08:00"),
                max_versions: 10,
            },
            err: None,
        }
    }

    #[test]
    fn metadata_formats() {
        let m = metadata();
        let human = secret_metadata(&m, Format::Human);
        let want = format!(
            "Metadata:\n{SEPARATOR}\nCurrent Version: 2\nOldest Version: 1\n\
             Created Time: 2026-01-02 15:04:05 UTC\nLast Updated: 2026-01-02 16:00:00 -0800\n\
             Max Versions: 10\n{SEPARATOR}\n\nSecret Versions:\n{SEPARATOR}\n\
             Version 1:\n  Created: 2026-01-02 15:04:05 UTC\n  Deleted: 2026-01-03 00:00:00 UTC\n\
             {SEPARATOR}\nVersion 2:\n  Created: 2026-01-02 16:00:00 -0800\n{SEPARATOR}\n"
        );
        assert_eq!(human, want);
        assert_eq!(SEPARATOR.len(), 50);

        let json: Value = serde_json::from_str(&secret_metadata(&m, Format::Json)).unwrap();
        assert_eq!(json["metadata"]["currentVersion"], 2);
        assert_eq!(json["versions"]["1"]["deletedTime"], "2026-01-03T00:00:00Z");
        assert_eq!(json["versions"]["2"]["deletedTime"], Value::Null);
        assert!(secret_metadata(&m, Format::Json).starts_with("{\n  \"versions\""));

        let yaml = secret_metadata(&m, Format::Yaml);
        assert!(
            yaml.contains("versions:\n  \"1\":\n    createdTime: \"2026-01-02T15:04:05Z\"\n"),
            "{yaml}"
        );
        assert!(yaml.contains("\n    deletedTime: null\n"), "{yaml}");
        // YAML keys come out sorted (serde_json maps are ordered by key).
        assert!(
            yaml.starts_with(
                "metadata:\n  createdTime: \"2026-01-02T15:04:05Z\"\n  currentVersion: 2\n"
            ),
            "{yaml}"
        );
    }

    fn policy() -> PolicyReadResponse {
        PolicyReadResponse {
            id: String::new(),
            name: "web".into(),
            spiffe_id_pattern: "^spiffe://spike.test/web/.*$".into(),
            path_pattern: "^tenants/web/.*$".into(),
            permissions: Some(vec![Permission::Read, Permission::List]),
            created_at: ts("2026-01-02T15:04:05.123Z"),
            updated_at: Timestamp::ZERO,
            err: None,
        }
    }

    #[test]
    fn policy_formats() {
        let p = policy();
        assert_eq!(
            policy_details(&p, Format::Human),
            "POLICY DETAILS\n=============\n\nName: web\n\
             SPIFFE ID Pattern: ^spiffe://spike.test/web/.*$\nPath Pattern: ^tenants/web/.*$\n\
             Permissions: read, list\nCreated At: 2026-01-02T15:04:05Z\n"
        );
        let mut updated = policy();
        updated.updated_at = ts("2026-02-01T00:00:00+01:00");
        assert!(
            policy_details(&updated, Format::Human)
                .ends_with("Updated At: 2026-02-01T00:00:00+01:00\n")
        );
        let json: Value = serde_json::from_str(&policy_details(&p, Format::Json)).unwrap();
        assert_eq!(json["spiffiedPattern"], "^spiffe://spike.test/web/.*$");
        assert_eq!(json["permissions"], serde_json::json!(["read", "list"]));
        assert!(json.get("err").is_none());
        let yaml = policy_details(&p, Format::Yaml);
        assert!(
            yaml.contains("spiffiedPattern: ^spiffe://spike.test/web/.*$\n"),
            "{yaml}"
        );
        assert!(
            yaml.contains("permissions:\n  - read\n  - list\n"),
            "{yaml}"
        );
        assert!(yaml.contains("id: \"\"\n"), "{yaml}");

        let items = vec![PolicyListItem::named("web"), PolicyListItem::named("db")];
        assert_eq!(
            policy_list(&items, Format::Human),
            "POLICIES\n========\n\nName: web\n--------\n\nName: db\n--------\n\n"
        );
        assert_eq!(policy_list(&[], Format::Human), "No policies found.\n");
        assert_eq!(policy_list(&[], Format::Json), "[]\n");
        assert_eq!(
            policy_list(&items[..1], Format::Json),
            "[\n  {\n    \"id\": \"\",\n    \"name\": \"web\"\n  }\n]\n"
        );
        assert_eq!(
            policy_list(&items, Format::Yaml),
            "- id: \"\"\n  name: web\n- id: \"\"\n  name: db\n"
        );
    }

    #[test]
    fn status_formats() {
        let body = serde_json::json!({
            "initialized": true, "sealed": false, "version": "0.1.0", "build": "dev",
            "shards_collected": 0, "threshold": 2, "keepers_reachable": 3, "has_data": true
        });
        let r = StatusReport::from_health("https://n:1", 200, &body);
        let human = status(&r, Format::Human);
        assert!(
            human.contains("State:             ready (unsealed and serving)\n"),
            "{human}"
        );
        assert!(r.is_serving());
        assert!(human.contains("Shards collected:  0 of 2\n"), "{human}");
        assert!(
            human.contains("Nexus version:     0.1.0 (build dev)\n"),
            "{human}"
        );
        let json: Value = serde_json::from_str(&status(&r, Format::Json)).unwrap();
        assert_eq!(json["keepers_reachable"], 3);
        assert_eq!(json["pilot_version"], env!("CARGO_PKG_VERSION"));
        assert!(status(&r, Format::Yaml).contains("sealed: false\n"));
        let sealed = StatusReport::from_health(
            "https://n:1",
            503,
            &serde_json::json!({"initialized": true, "sealed": true}),
        );
        assert!(
            status(&sealed, Format::Human)
                .contains("State:             sealed: waiting for the keepers"),
            "{}",
            status(&sealed, Format::Human)
        );
        assert!(!sealed.is_serving());
        assert!(json.get("store_error").is_none(), "{json}");
    }

    fn report(body: Value, http: u16) -> StatusReport {
        StatusReport::from_health("https://n:1", http, &body)
    }

    #[test]
    fn sealed_states_name_the_way_out() {
        let fresh = report(
            serde_json::json!({"initialized": false, "sealed": true, "shards_collected": 0,
                "threshold": 2, "has_data": false}),
            501,
        );
        let state = fresh.sealed_state().unwrap();
        assert!(
            state.starts_with("sealed: waiting for bootstrap (0/2 shards)"),
            "{state}"
        );

        let power_cut = report(
            serde_json::json!({"initialized": true, "sealed": true, "shards_collected": 1,
                "threshold": 2, "keepers_reachable": 3, "has_data": true}),
            503,
        );
        let state = power_cut.sealed_state().unwrap();
        assert_eq!(
            state,
            "sealed: Nexus has data but its root key is not in memory (1/2 shards from keepers). \
             After a power cut, restore it from the recovery shards: spike-operator restore DIR \
             (as root; see docs/operations.md)"
        );
        assert!(!state.contains("not initialized"));
        let human = status(&power_cut, Format::Human);
        assert!(human.contains("spike-operator restore DIR"), "{human}");
        assert!(!human.contains("not initialized"), "{human}");

        let store = report(
            serde_json::json!({"initialized": true, "sealed": true, "has_data": true,
                "shards_collected": 0, "threshold": 2,
                "store_error": "unable to open database file"}),
            503,
        );
        assert_eq!(
            store.sealed_state().unwrap(),
            "sealed: Nexus cannot open its store: unable to open database file"
        );
        let json: Value = serde_json::from_str(&status(&store, Format::Json)).unwrap();
        assert_eq!(json["store_error"], "unable to open database file");
        assert!(status(&store, Format::Human).contains("Store error:       unable to open"));

        // Tolerant parsing: wrong type or empty is no store error.
        let odd = report(
            serde_json::json!({"initialized": true, "sealed": false, "store_error": 5}),
            200,
        );
        assert_eq!(odd.store_error, None);
        assert!(odd.is_serving());
        let empty = report(
            serde_json::json!({"initialized": true, "sealed": false, "store_error": ""}),
            200,
        );
        assert!(empty.is_serving());

        // An answer without the flags: the HTTP status decides.
        assert!(report(Value::Null, 200).is_serving());
        assert_eq!(
            report(Value::Null, 503).sealed_state().as_deref(),
            Some("sealed (its root key is not in memory)")
        );
    }

    #[test]
    fn yaml_quoting() {
        for plain in ["admin", "a/b/c", "^tenants/.*$", "x-y_z", "spiffe://a/b"] {
            assert_eq!(yaml_string(plain), plain);
        }
        for quoted in [
            "",
            "true",
            "No",
            "123",
            "1.5",
            "- x",
            "a: b",
            "#c",
            "a #b",
            " x",
            "x ",
            "{x}",
            "a\nb",
            "null",
            "*",
            "@x",
            "x:",
            "2026-01-02",
            "|x",
            "?x",
        ] {
            assert!(yaml_string(quoted).starts_with('"'), "{quoted:?}");
        }
        assert_eq!(to_yaml(&serde_json::json!({})), "{}\n");
        assert_eq!(
            to_yaml(&serde_json::json!([[1, 2], {"a": []}])),
            "- - 1\n  - 2\n- a: []\n"
        );
    }
}
