//! `spike policy create|apply|list|get|delete` (docs/compatibility.md#pilot-spike, docs/protocol.md#policy-routes). Policy files are parsed by
//! [`crate::policy_yaml`].

use std::io::Read;
use std::path::Path;

use spike_proto::policy::{Permission, PolicyPutRequest};
use spike_proto::validate;

use super::{say, tell, write_stdout};
use crate::Io;
use crate::cli::{PolicyCmd, PolicyFields};
use crate::errors::PilotError;
use crate::output::{self, Format};
// Re-exported: the parser used to live here (the fuzz-style tests import it from this path).
pub use crate::policy_yaml::{PolicyDoc, parse_policy_yaml};
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
            let existing = session
                .read(|nexus| async move { nexus.list_policies("", "").await })
                .await?;
            if existing.iter().any(|p| p.name == policy.name) {
                return Err(PilotError::failed(format!(
                    "Error: Policy '{}' already exists.",
                    policy.name
                )));
            }
            let policy = &policy;
            session
                .write(|nexus| async move { nexus.put_policy(policy).await })
                .await?;
            say(io, "Policy created successfully.")
        }
        PolicyCmd::Apply { fields, file } => {
            let policy = match file {
                Some(path) => policy_from_file(&path)?,
                None => policy_from_fields(&fields)?,
            };
            let policy_ref = &policy;
            session
                .write(|nexus| async move { nexus.put_policy(policy_ref).await })
                .await?;
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
            let spiffeid_pattern = spiffeid_pattern.as_deref().unwrap_or("");
            let path_pattern = path_pattern.as_deref().unwrap_or("");
            let items =
                session
                    .read(|nexus| async move {
                        nexus.list_policies(spiffeid_pattern, path_pattern).await
                    })
                    .await?;
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
            let name = &name;
            let policy = session
                .read(|nexus| async move { nexus.get_policy(name).await })
                .await?;
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
            let name = &name;
            session
                .write(|nexus| async move { nexus.delete_policy(name).await })
                .await?;
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
    let items = session
        .read(|nexus| async move { nexus.list_policies("", "").await })
        .await?;
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
