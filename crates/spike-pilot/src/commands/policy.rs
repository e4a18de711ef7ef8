//! `spike policy create|apply|list|get|delete` (§11, §2.5), and the policy YAML file parser.

use std::io::Read;
use std::path::Path;

use spike_proto::policy::{Permission, PolicyPutRequest};
use spike_proto::validate;

use super::{say, tell, write_stdout};
use crate::Io;
use crate::cli::{PolicyCmd, PolicyFields};
use crate::errors::PilotError;
use crate::output::{self, Format};
use crate::session::Session;

/// Largest policy file read.
const MAX_POLICY_FILE: u64 = 1024 * 1024;

/// Runs one policy command.
///
/// # Errors
/// Validation errors before contacting Nexus; API errors after.
pub async fn run(cmd: PolicyCmd, session: &mut Session, io: &mut Io<'_>) -> Result<(), PilotError> {
    match cmd {
        PolicyCmd::Create { fields } => {
            let policy = policy_from_fields(&fields)?;
            let nexus = session.nexus().await?;
            let existing = nexus
                .list_policies("", "")
                .await
                .map_err(|e| session.api_error(e))?;
            if existing.iter().any(|p| p.name == policy.name) {
                return Err(PilotError::failed(format!(
                    "Error: Policy '{}' already exists.",
                    policy.name
                )));
            }
            nexus
                .put_policy(&policy)
                .await
                .map_err(|e| session.api_error(e))?;
            say(io, "Policy created successfully.")
        }
        PolicyCmd::Apply { fields, file } => {
            let policy = match file {
                Some(path) => policy_from_file(&path)?,
                None => policy_from_fields(&fields)?,
            };
            let nexus = session.nexus().await?;
            nexus
                .put_policy(&policy)
                .await
                .map_err(|e| session.api_error(e))?;
            say(
                io,
                &format!("Policy '{}' applied successfully", policy.name),
            )
        }
        PolicyCmd::List {
            path_pattern,
            spiffeid_pattern,
            format,
        } => {
            let format = Format::parse(&format.format)?;
            let nexus = session.nexus().await?;
            let items = nexus
                .list_policies(
                    spiffeid_pattern.as_deref().unwrap_or(""),
                    path_pattern.as_deref().unwrap_or(""),
                )
                .await
                .map_err(|e| session.api_error(e))?;
            write_stdout(io, output::policy_list(&items, format).as_bytes())
        }
        PolicyCmd::Get {
            name,
            name_flag,
            format,
        } => {
            let format = Format::parse(&format.format)?;
            let name = required_name(name, name_flag)?;
            require_existing(session, &name).await?;
            let nexus = session.nexus().await?;
            let policy = nexus
                .get_policy(&name)
                .await
                .map_err(|e| session.api_error(e))?;
            write_stdout(io, output::policy_details(&policy, format).as_bytes())
        }
        PolicyCmd::Delete {
            name,
            name_flag,
            yes,
        } => {
            let name = required_name(name, name_flag)?;
            require_existing(session, &name).await?;
            if !yes {
                tell(
                    io,
                    &format!("Are you sure you want to delete policy '{name}'? (y/N): "),
                );
                if !confirmed(io)? {
                    return say(io, "Operation canceled.");
                }
            }
            let nexus = session.nexus().await?;
            nexus
                .delete_policy(&name)
                .await
                .map_err(|e| session.api_error(e))?;
            say(io, "Policy deleted successfully.")
        }
    }
}

fn required_name(arg: Option<String>, flag: Option<String>) -> Result<String, PilotError> {
    arg.or(flag).filter(|n| !n.is_empty()).ok_or_else(|| {
        PilotError::Usage(
            "Error: a policy name is required (as an argument or with --name)".to_owned(),
        )
    })
}

async fn require_existing(session: &mut Session, name: &str) -> Result<(), PilotError> {
    let nexus = session.nexus().await?;
    let items = nexus
        .list_policies("", "")
        .await
        .map_err(|e| session.api_error(e))?;
    if items.iter().any(|p| p.name == name) {
        Ok(())
    } else {
        Err(PilotError::failed(format!(
            "Error: Policy '{name}' not found."
        )))
    }
}

/// Reads one answer line; `y` or `Y` confirms.
fn confirmed(io: &mut Io<'_>) -> Result<bool, PilotError> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 256 {
        match io.stdin.read(&mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(PilotError::io("read the confirmation", e)),
        }
    }
    let answer = String::from_utf8_lossy(&line);
    Ok(matches!(answer.trim(), "y" | "Y"))
}

/// Builds a policy from the four flags; all are required.
///
/// # Errors
/// [`PilotError::Usage`] naming every missing flag; validation errors for bad values.
pub fn policy_from_fields(fields: &PolicyFields) -> Result<PolicyPutRequest, PilotError> {
    let mut missing = Vec::new();
    let mut take = |value: &Option<String>, flag: &str| match value {
        Some(v) if !v.is_empty() => v.clone(),
        _ => {
            missing.push(flag.to_owned());
            String::new()
        }
    };
    let name = take(&fields.name, "--name");
    let path_pattern = take(&fields.path_pattern, "--path-pattern");
    let spiffe_id_pattern = take(&fields.spiffeid_pattern, "--spiffeid-pattern");
    let permissions = take(&fields.permissions, "--permissions");
    if !missing.is_empty() {
        return Err(PilotError::Usage(format!(
            "Error: all policy flags are required; missing: {}",
            missing.join(", ")
        )));
    }
    let permissions = parse_permissions(&permissions)?;
    build_policy(name, spiffe_id_pattern, path_pattern, permissions)
}

fn build_policy(
    name: String,
    spiffe_id_pattern: String,
    path_pattern: String,
    permissions: Vec<String>,
) -> Result<PolicyPutRequest, PilotError> {
    if validate::name(&name).is_err() {
        return Err(PilotError::failed(format!(
            "Error: Invalid policy name: '{name}' (1-250 letters, digits, '-', '_' or spaces)"
        )));
    }
    if validate::spiffe_id_pattern(&spiffe_id_pattern).is_err() {
        return Err(PilotError::failed(format!(
            "Error: Invalid SPIFFE ID pattern: '{spiffe_id_pattern}' (must start with spiffe:// \
             or ^spiffe://)"
        )));
    }
    if validate::path_pattern(&path_pattern).is_err() {
        return Err(PilotError::failed(format!(
            "Error: Invalid path pattern: '{path_pattern}'"
        )));
    }
    Ok(PolicyPutRequest {
        name,
        spiffe_id_pattern,
        path_pattern,
        permissions,
    })
}

/// Parses `--permissions "read, write"`: elements trimmed, empty elements ignored, at least
/// one required, each one of read, write, list, execute, super.
///
/// # Errors
/// `Error: Invalid permission '<p>'. ...` or `Error: No permissions given.`
pub fn parse_permissions(text: &str) -> Result<Vec<String>, PilotError> {
    let perms: Vec<String> = text
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    check_permissions(&perms)?;
    Ok(perms)
}

fn check_permissions(perms: &[String]) -> Result<(), PilotError> {
    if perms.is_empty() {
        return Err(PilotError::failed(
            "Error: No permissions given. Valid permissions are: read, write, list, execute, \
             super",
        ));
    }
    for p in perms {
        if Permission::from_wire(p).is_none() {
            return Err(PilotError::failed(format!(
                "Error: Invalid permission '{p}'. Valid permissions are: read, write, list, \
                 execute, super"
            )));
        }
    }
    Ok(())
}

/// Reads a policy YAML file (`name`, `spiffeidPattern`, `pathPattern`, `permissions`).
///
/// # Errors
/// A message naming the file and the problem.
pub fn policy_from_file(path: &Path) -> Result<PolicyPutRequest, PilotError> {
    let file = std::fs::File::open(path)
        .map_err(|e| PilotError::io(format!("read the policy file {}", path.display()), e))?;
    let mut text = String::new();
    file.take(MAX_POLICY_FILE)
        .read_to_string(&mut text)
        .map_err(|e| PilotError::io(format!("read the policy file {}", path.display()), e))?;
    let fail = |msg: String| {
        PilotError::failed(format!(
            "Error: Invalid policy file {}: {msg}",
            path.display()
        ))
    };
    let doc = parse_policy_yaml(&text).map_err(fail)?;
    check_permissions(&doc.permissions)?;
    build_policy(
        doc.name,
        doc.spiffe_id_pattern,
        doc.path_pattern,
        doc.permissions,
    )
}

/// The fields of a policy file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyDoc {
    /// `name`.
    pub name: String,
    /// `spiffeidPattern`.
    pub spiffe_id_pattern: String,
    /// `pathPattern`.
    pub path_pattern: String,
    /// `permissions`.
    pub permissions: Vec<String>,
}

/// Parses the flat YAML SPIKE uses for policies: top-level `key: value` pairs (plain,
/// single- or double-quoted scalars), `permissions` as a block (`- read`) or flow
/// (`[read, write]`) sequence, `#` comments and an optional `---`. Unknown keys are ignored
/// (as Go's YAML decoder does); every field is required. Values are kept verbatim (e.g. a
/// trailing `/` in a path pattern).
///
/// # Errors
/// A description of the first problem (with its line number) or the missing fields.
pub fn parse_policy_yaml(text: &str) -> Result<PolicyDoc, String> {
    let mut doc = PolicyDoc::default();
    let mut seen = [false; 4];
    let mut in_permissions = false;
    for (index, raw) in text.lines().enumerate() {
        let lineno = index + 1;
        let line = strip_comment(raw);
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed == "---" {
            continue;
        }
        if let Some(item) = trimmed
            .strip_prefix('-')
            .filter(|_| trimmed == "-" || trimmed.starts_with("- ") || trimmed.starts_with("-\t"))
        {
            if !in_permissions {
                return Err(format!("line {lineno}: unexpected list item"));
            }
            doc.permissions
                .push(parse_scalar(item.trim()).map_err(|e| format!("line {lineno}: {e}"))?);
            continue;
        }
        if line.starts_with([' ', '\t']) {
            return Err(format!("line {lineno}: unexpected indentation"));
        }
        in_permissions = false;
        let Some((key, value)) = split_key(trimmed) else {
            return Err(format!("line {lineno}: expected `key: value`"));
        };
        let value = value.trim();
        let slot = match key {
            "name" => 0,
            "spiffeidPattern" => 1,
            "pathPattern" => 2,
            "permissions" => 3,
            _ => continue,
        };
        if seen[slot] {
            return Err(format!("line {lineno}: duplicate key {key}"));
        }
        seen[slot] = true;
        if slot == 3 {
            if value.is_empty() {
                in_permissions = true;
            } else if let Some(inner) = value.strip_prefix('[').and_then(|v| v.strip_suffix(']')) {
                for item in split_flow(inner) {
                    let item = item.trim();
                    if !item.is_empty() {
                        doc.permissions
                            .push(parse_scalar(item).map_err(|e| format!("line {lineno}: {e}"))?);
                    }
                }
            } else {
                return Err(format!(
                    "line {lineno}: permissions must be a list (`- read` lines or `[read, write]`)"
                ));
            }
            continue;
        }
        let value = parse_scalar(value).map_err(|e| format!("line {lineno}: {e}"))?;
        match slot {
            0 => doc.name = value,
            1 => doc.spiffe_id_pattern = value,
            _ => doc.path_pattern = value,
        }
    }
    let mut missing = Vec::new();
    for (present, key) in [
        (!doc.name.is_empty(), "name"),
        (!doc.spiffe_id_pattern.is_empty(), "spiffeidPattern"),
        (!doc.path_pattern.is_empty(), "pathPattern"),
        (!doc.permissions.is_empty(), "permissions"),
    ] {
        if !present {
            missing.push(key);
        }
    }
    if !missing.is_empty() {
        return Err(format!("missing required fields: {}", missing.join(", ")));
    }
    Ok(doc)
}

/// Removes a `#` comment that starts a line or follows whitespace, outside quotes.
fn strip_comment(line: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut prev_space = true;
    for (i, c) in line.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '#' && prev_space => return line.get(..i).unwrap_or(line),
            None => {}
        }
        prev_space = c == ' ' || c == '\t';
    }
    line
}

/// Splits `key: value` at the first `:` followed by a space or the end, outside quotes.
fn split_key(line: &str) -> Option<(&str, &str)> {
    let (key, rest) = if let Some(stripped) = line.strip_prefix('"') {
        let end = stripped.find('"')?;
        (stripped.get(..end)?, stripped.get(end + 1..)?)
    } else {
        let mut idx = None;
        for (i, c) in line.char_indices() {
            if c == ':' {
                let next = line.get(i + 1..)?.chars().next();
                if next.is_none() || next == Some(' ') || next == Some('\t') {
                    idx = Some(i);
                    break;
                }
            }
        }
        let i = idx?;
        (line.get(..i)?.trim_end(), line.get(i..)?)
    };
    let value = rest.trim_start().strip_prefix(':')?;
    Some((key, value))
}

/// Splits a flow sequence body at commas outside quotes.
fn split_flow(inner: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut quote: Option<char> = None;
    let mut start = 0;
    for (i, c) in inner.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == ',' => {
                parts.push(inner.get(start..i).unwrap_or(""));
                start = i + 1;
            }
            None => {}
        }
    }
    parts.push(inner.get(start..).unwrap_or(""));
    parts
}

/// A plain, `'single'` or `"double"` quoted scalar.
fn parse_scalar(text: &str) -> Result<String, String> {
    if let Some(body) = text.strip_prefix('\'') {
        let body = body
            .strip_suffix('\'')
            .ok_or_else(|| format!("unterminated quoted value {text}"))?;
        return Ok(body.replace("''", "'"));
    }
    if let Some(body) = text.strip_prefix('"') {
        let body = body
            .strip_suffix('"')
            .ok_or_else(|| format!("unterminated quoted value {text}"))?;
        let mut out = String::with_capacity(body.len());
        let mut chars = body.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('"') => out.push('"'),
                Some('\\') => out.push('\\'),
                Some('/') => out.push('/'),
                Some(other) => return Err(format!("unsupported escape \\{other}")),
                None => return Err("dangling backslash".to_owned()),
            }
        }
        return Ok(out);
    }
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(n: &str, p: &str, s: &str, perms: &str) -> PolicyFields {
        let opt = |v: &str| (!v.is_empty()).then(|| v.to_owned());
        PolicyFields {
            name: opt(n),
            path_pattern: opt(p),
            spiffeid_pattern: opt(s),
            permissions: opt(perms),
        }
    }

    #[test]
    fn permissions() {
        assert_eq!(
            parse_permissions(" read , write,list ").unwrap(),
            vec!["read", "write", "list"]
        );
        assert_eq!(parse_permissions("read,read").unwrap().len(), 2);
        for bad in ["delete", "admin", "create", "reed", "read,admin"] {
            let err = parse_permissions(bad).unwrap_err().message();
            assert!(err.starts_with("Error: Invalid permission"), "{bad}: {err}");
        }
        assert!(parse_permissions("").is_err());
        assert!(parse_permissions(" , ").is_err());
    }

    #[test]
    fn flags_all_required() {
        let err = policy_from_fields(&fields("web", "", "", "read")).unwrap_err();
        assert_eq!(err.exit_code(), crate::EXIT_USAGE);
        assert_eq!(
            err.message(),
            "Error: all policy flags are required; missing: --path-pattern, --spiffeid-pattern"
        );
        let p = policy_from_fields(&fields(
            "web",
            "^tenants/web/.*$",
            "^spiffe://spike.test/web/.*$",
            "read,list",
        ))
        .unwrap();
        assert_eq!(p.permissions, vec!["read", "list"]);
        assert_eq!(p.spiffe_id_pattern, "^spiffe://spike.test/web/.*$");
        let err = policy_from_fields(&fields("web", "^a$", "web", "read")).unwrap_err();
        assert!(err.message().contains("SPIFFE ID pattern"));
    }

    #[test]
    fn yaml_block_and_flow() {
        let doc = parse_policy_yaml(
            "# policy\n---\nname: \"web app\"\nspiffeidPattern: '^spiffe://spike.test/web/.*$'\n\
             pathPattern: tenants/web/   # trailing slash kept\npermissions:\n  - read\n  - \"list\"\n",
        )
        .unwrap();
        assert_eq!(doc.name, "web app");
        assert_eq!(doc.spiffe_id_pattern, "^spiffe://spike.test/web/.*$");
        assert_eq!(doc.path_pattern, "tenants/web/");
        assert_eq!(doc.permissions, vec!["read", "list"]);

        let doc = parse_policy_yaml(
            "name: db\nspiffeidPattern: spiffe://spike.test/db\npathPattern: \"db/#1\"\n\
             permissions: [read, 'write', \"super\"]\nextra: ignored\n",
        )
        .unwrap();
        assert_eq!(doc.permissions, vec!["read", "write", "super"]);
        assert_eq!(doc.path_pattern, "db/#1");
        assert_eq!(doc.spiffe_id_pattern, "spiffe://spike.test/db");

        let doc = parse_policy_yaml(
            "name: x\nspiffeidPattern: spiffe://a/b\npathPattern: p\npermissions:\n- read\n",
        )
        .unwrap();
        assert_eq!(doc.permissions, vec!["read"]);
    }

    #[test]
    fn yaml_errors() {
        let err = parse_policy_yaml("name: x\npermissions: []\n").unwrap_err();
        assert_eq!(
            err,
            "missing required fields: spiffeidPattern, pathPattern, permissions"
        );
        assert!(
            parse_policy_yaml("name: 'x\n")
                .unwrap_err()
                .contains("unterminated")
        );
        assert!(
            parse_policy_yaml("- read\n")
                .unwrap_err()
                .contains("line 1")
        );
        assert!(
            parse_policy_yaml("name: a\nname: b\n")
                .unwrap_err()
                .contains("duplicate")
        );
        assert!(
            parse_policy_yaml("permissions: read\n")
                .unwrap_err()
                .contains("must be a list")
        );
        assert!(
            parse_policy_yaml("just text\n")
                .unwrap_err()
                .contains("key: value")
        );
    }

    #[test]
    fn policy_file_validates_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.yaml");
        std::fs::write(
            &path,
            "name: x\nspiffeidPattern: spiffe://a/b\npathPattern: p\npermissions: [admin]\n",
        )
        .unwrap();
        let err = policy_from_file(&path).unwrap_err().message();
        assert!(err.contains("Invalid permission 'admin'"), "{err}");
        let err = policy_from_file(&dir.path().join("missing.yaml"))
            .unwrap_err()
            .message();
        assert!(err.contains("missing.yaml"), "{err}");
    }
}
