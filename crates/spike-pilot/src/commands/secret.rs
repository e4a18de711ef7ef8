//! `spike secret put|get|delete|undelete|list|metadata get` (docs/compatibility.md#pilot-spike, docs/protocol.md#secrets).

use std::collections::BTreeMap;

use spike_proto::validate;

use super::{say, write_stdout};
use crate::Io;
use crate::cli::{MetadataCmd, SecretCmd};
use crate::errors::PilotError;
use crate::output::{self, Format};
use crate::session::Session;

/// Runs one secret command.
///
/// # Errors
/// Validation errors before contacting Nexus; API errors after.
pub async fn run(cmd: SecretCmd, session: &mut Session, io: &mut Io<'_>) -> Result<(), PilotError> {
    match cmd {
        SecretCmd::Put { path, pairs } => {
            check_path(&path)?;
            let values = parse_pairs(&pairs)?;
            let nexus = session.nexus().await?;
            nexus
                .put_secret(&path, values)
                .await
                .map_err(|e| session.api_error(e))?;
            say(io, "OK")
        }
        SecretCmd::Get {
            path,
            key,
            version,
            format,
        } => {
            let format = Format::parse(&format.format)?;
            check_path(&path)?;
            let nexus = session.nexus().await?;
            let data = nexus
                .get_secret(&path, version)
                .await
                .map_err(|e| session.api_error(e))?;
            let text = output::secret_data(&data, key.as_deref(), format)?;
            write_stdout(io, text.as_bytes())
        }
        SecretCmd::Delete { path, versions } => {
            let versions = parse_versions(&versions)?;
            check_path(&path)?;
            let nexus = session.nexus().await?;
            nexus
                .delete_secret(&path, &versions)
                .await
                .map_err(|e| session.api_error(e))?;
            say(io, "OK")
        }
        SecretCmd::Undelete { path, versions } => {
            let versions = parse_versions(&versions)?;
            check_path(&path)?;
            let nexus = session.nexus().await?;
            nexus
                .undelete_secret(&path, &versions)
                .await
                .map_err(|e| session.api_error(e))?;
            say(io, "OK")
        }
        SecretCmd::List { format } => {
            let format = Format::parse(&format.format)?;
            let nexus = session.nexus().await?;
            let keys = nexus
                .list_secrets()
                .await
                .map_err(|e| session.api_error(e))?;
            write_stdout(io, output::secret_list(&keys, format).as_bytes())
        }
        SecretCmd::Metadata {
            cmd:
                MetadataCmd::Get {
                    path,
                    version,
                    format,
                },
        } => {
            let format = Format::parse(&format.format)?;
            let nexus = session.nexus().await?;
            let meta = nexus
                .secret_metadata(&path, version)
                .await
                .map_err(|e| session.api_error(e))?;
            write_stdout(io, output::secret_metadata(&meta, format).as_bytes())
        }
    }
}

/// Client-side path check (same pattern as Nexus).
///
/// # Errors
/// `Error: Invalid secret path: <path>`.
pub fn check_path(path: &str) -> Result<(), PilotError> {
    validate::secret_path(path)
        .map_err(|_| PilotError::failed(format!("Error: Invalid secret path: {path}")))
}

/// Parses `key=value` arguments, splitting at the first `=`.
///
/// Unlike SPIKE (which skips malformed pairs and may print `OK` without writing anything),
/// any malformed pair or invalid key rejects the whole command, so nothing partial is written.
///
/// # Errors
/// One `Error: Invalid key-value pair: <kv>` / `Error: Invalid key name: <k>` line per bad
/// argument.
pub fn parse_pairs(pairs: &[String]) -> Result<BTreeMap<String, String>, PilotError> {
    let mut values = BTreeMap::new();
    let mut errors = Vec::new();
    for kv in pairs {
        match kv.split_once('=') {
            None => errors.push(format!("Error: Invalid key-value pair: {kv}")),
            Some((key, _)) if validate::name(key).is_err() => errors.push(format!(
                "Error: Invalid key name: '{key}' (letters, digits, '-', '_' and spaces only)"
            )),
            Some((key, value)) => {
                values.insert(key.to_owned(), value.to_owned());
            }
        }
    }
    if errors.is_empty() {
        Ok(values)
    } else {
        errors.push("Error: Nothing was written.".to_owned());
        Err(PilotError::failed(errors.join("\n")))
    }
}

/// Parses `--versions "1,2,3"` like SPIKE.
///
/// # Errors
/// `Error: Invalid version number: x` or `Error: Negative version number: x`.
pub fn parse_versions(text: &str) -> Result<Vec<i64>, PilotError> {
    text.split(',')
        .map(|part| {
            let part = part.trim();
            let n: i64 = part.parse().map_err(|_| {
                PilotError::failed(format!("Error: Invalid version number: {part}"))
            })?;
            if n < 0 {
                return Err(PilotError::failed(format!(
                    "Error: Negative version number: {part}"
                )));
            }
            Ok(n)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(parse_versions("0").unwrap(), vec![0]);
        assert_eq!(parse_versions("1, 2,3").unwrap(), vec![1, 2, 3]);
        assert_eq!(
            parse_versions("1,x").unwrap_err().message(),
            "Error: Invalid version number: x"
        );
        assert_eq!(
            parse_versions("-2").unwrap_err().message(),
            "Error: Negative version number: -2"
        );
        assert_eq!(
            parse_versions("").unwrap_err().message(),
            "Error: Invalid version number: "
        );
    }

    #[test]
    fn pairs() {
        let ok = parse_pairs(&["user=admin".into(), "pass=a=b".into(), "e=".into()]).unwrap();
        assert_eq!(ok["pass"], "a=b");
        assert_eq!(ok["e"], "");
        assert_eq!(ok.len(), 3);
        let err = parse_pairs(&["novalue".into(), "a.b=1".into(), "ok=1".into()]).unwrap_err();
        let msg = err.message();
        assert!(
            msg.contains("Error: Invalid key-value pair: novalue"),
            "{msg}"
        );
        assert!(msg.contains("Error: Invalid key name: 'a.b'"), "{msg}");
        assert_eq!(err.exit_code(), crate::EXIT_FAILURE);
    }

    #[test]
    fn paths() {
        assert!(check_path("tenants/demo/db").is_ok());
        assert_eq!(
            check_path("bad path").unwrap_err().message(),
            "Error: Invalid secret path: bad path"
        );
    }
}
