//! `spike secret put|get|delete|undelete|list|metadata get` (docs/compatibility.md#pilot-spike, docs/protocol.md#secrets).

use std::collections::BTreeMap;
use std::io::Read;

use spike_proto::validate;
use zeroize::Zeroizing;

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
            // Wiped on every way out; the client wipes the map it is handed after sending.
            let values = WipedValues(parse_pairs(&pairs, io.stdin)?);
            let path = &path;
            session
                .write(|nexus| {
                    // A copy per attempt; the client wipes it after sending.
                    let copy = values.0.clone();
                    async move { nexus.put_secret(path, copy).await }
                })
                .await?;
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
            let path = &path;
            let data = session
                .read(|nexus| async move { nexus.get_secret(path, version).await })
                .await?;
            let text = output::secret_data(&data, key.as_deref(), format)?;
            write_stdout(io, text.as_bytes())
        }
        SecretCmd::Delete { path, versions } => {
            let versions = parse_versions(&versions)?;
            check_path(&path)?;
            let (path, versions) = (&path, &versions);
            session
                .write(|nexus| async move { nexus.delete_secret(path, versions).await })
                .await?;
            say(io, "OK")
        }
        SecretCmd::Undelete { path, versions } => {
            let versions = parse_versions(&versions)?;
            check_path(&path)?;
            let (path, versions) = (&path, &versions);
            session
                .write(|nexus| async move { nexus.undelete_secret(path, versions).await })
                .await?;
            say(io, "OK")
        }
        SecretCmd::List { format } => {
            let format = Format::parse(&format.format)?;
            let keys = session
                .read(|nexus| async move { nexus.list_secrets().await })
                .await?;
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
            let path = &path;
            let meta = session
                .read(|nexus| async move { nexus.secret_metadata(path, version).await })
                .await?;
            write_stdout(io, output::secret_metadata(&meta, format).as_bytes())
        }
    }
}

/// Secret values that are wiped when dropped.
struct WipedValues(BTreeMap<String, String>);

impl Drop for WipedValues {
    fn drop(&mut self) {
        self.0.values_mut().for_each(zeroize::Zeroize::zeroize);
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

/// Most bytes of one value read from a file or standard input.
pub const MAX_VALUE_BYTES: u64 = 1024 * 1024;

/// Where the value of a `KEY=VALUE` argument comes from.
enum Source<'a> {
    /// The argument itself (visible to every local user in `/proc/<pid>/cmdline`).
    Literal(&'a str),
    /// `KEY=-`: standard input.
    Stdin,
    /// `KEY=@FILE`: the file's content.
    File(&'a str),
}

impl<'a> Source<'a> {
    fn of(value: &'a str) -> Self {
        if value == "-" {
            Self::Stdin
        } else if let Some(file) = value.strip_prefix('@') {
            Self::File(file)
        } else {
            Self::Literal(value)
        }
    }
}

/// Parses `key=value` arguments, splitting at the first `=`. A value `-` is read from
/// standard input (`stdin`, to its end) and a value `@FILE` from the file, byte-exactly (a
/// trailing newline is kept) and as UTF-8 text of at most [`MAX_VALUE_BYTES`]: the safe forms,
/// since a value on the command line is visible to every local user in
/// `/proc/<pid>/cmdline`.
///
/// Unlike SPIKE (which skips malformed pairs and may print `OK` without writing anything),
/// any malformed pair or invalid key rejects the whole command, so nothing partial is written.
/// Ambiguous input is refused before anything is read: more than one `KEY=-` (standard input
/// can be read once) and `KEY=@` without a file name.
///
/// # Errors
/// One `Error: Invalid key-value pair: <kv>` / `Error: Invalid key name: <k>` line per bad
/// argument; a file or standard input that cannot be read, is too large or is not UTF-8.
/// Messages never quote a value.
pub fn parse_pairs(
    pairs: &[String],
    stdin: &mut dyn Read,
) -> Result<BTreeMap<String, String>, PilotError> {
    let mut parsed = Vec::with_capacity(pairs.len());
    let mut errors = Vec::new();
    let mut stdin_keys = Vec::new();
    for kv in pairs {
        match kv.split_once('=') {
            // Without '=', the argument is not a value: quote it (as SPIKE does).
            None => errors.push(format!("Error: Invalid key-value pair: {kv}")),
            Some((key, _)) if validate::name(key).is_err() => errors.push(format!(
                "Error: Invalid key name: '{key}' (letters, digits, '-', '_' and spaces only)"
            )),
            Some((key, value)) => {
                let source = Source::of(value);
                match source {
                    Source::Stdin => stdin_keys.push(key),
                    Source::File("") => errors.push(format!(
                        "Error: '{key}=@' names no file (use {key}=@FILE, or {key}=- for \
                         standard input)"
                    )),
                    _ => {}
                }
                parsed.push((key, source));
            }
        }
    }
    if stdin_keys.len() > 1 {
        errors.push(format!(
            "Error: more than one value reads standard input ({}); standard input can be read \
             once: give the others as KEY=@FILE",
            stdin_keys
                .iter()
                .map(|k| format!("{k}=-"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !errors.is_empty() {
        errors.push("Error: Nothing was written.".to_owned());
        return Err(PilotError::failed(errors.join("\n")));
    }
    let mut values = BTreeMap::new();
    for (key, source) in parsed {
        let value = match source {
            Source::Literal(v) => v.to_owned(),
            Source::Stdin => read_value(key, "standard input", stdin)?,
            Source::File(file) => {
                let mut f = std::fs::File::open(file).map_err(|e| {
                    PilotError::io(format!("read {file} (the value of '{key}')"), e)
                })?;
                read_value(key, file, &mut f)?
            }
        };
        values.insert(key.to_owned(), value);
    }
    Ok(values)
}

/// Reads one value (at most [`MAX_VALUE_BYTES`], UTF-8) into memory that is zeroized when
/// it is grown or dropped.
fn read_value(key: &str, what: &str, from: &mut dyn Read) -> Result<String, PilotError> {
    let bytes = read_zeroizing(from, MAX_VALUE_BYTES)
        .map_err(|e| PilotError::io(format!("read {what} (the value of '{key}')"), e))?
        .ok_or_else(|| {
            PilotError::failed(format!(
                "Error: the value of '{key}' ({what}) is larger than {MAX_VALUE_BYTES} bytes. \
                 Nothing was written."
            ))
        })?;
    // The one copy left unwiped here is the returned `String`, which the caller wipes.
    let text = std::str::from_utf8(&bytes).map_err(|_| {
        PilotError::failed(format!(
            "Error: the value of '{key}' ({what}) is not UTF-8 text (use `spike cipher` for \
             binary data). Nothing was written."
        ))
    })?;
    Ok(text.to_owned())
}

/// Reads `from` to its end into a buffer that is zeroized on drop and whenever it grows
/// (a grown `Vec` would leave the old copy in freed memory); `None` when more than `limit`
/// bytes arrive.
pub(crate) fn read_zeroizing(
    from: &mut dyn Read,
    limit: u64,
) -> std::io::Result<Option<Zeroizing<Vec<u8>>>> {
    let mut buf = Zeroizing::new(Vec::with_capacity(4096));
    let mut chunk = Zeroizing::new([0_u8; 4096]);
    loop {
        let n = match from.read(&mut chunk[..]) {
            Ok(0) => return Ok(Some(buf)),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if (buf.len() + n) as u64 > limit {
            return Ok(None);
        }
        if buf.len() + n > buf.capacity() {
            let mut bigger = Zeroizing::new(Vec::with_capacity((buf.len() + n) * 2));
            bigger.extend_from_slice(&buf);
            buf = bigger;
        }
        buf.extend_from_slice(&chunk[..n]);
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
        let ok = parse_pairs(
            &["user=admin".into(), "pass=a=b".into(), "e=".into()],
            &mut std::io::empty(),
        )
        .unwrap();
        assert_eq!(ok["pass"], "a=b");
        assert_eq!(ok["e"], "");
        assert_eq!(ok.len(), 3);
        let err = parse_pairs(
            &["novalue".into(), "a.b=1".into(), "ok=1".into()],
            &mut std::io::empty(),
        )
        .unwrap_err();
        let msg = err.message();
        assert!(
            msg.contains("Error: Invalid key-value pair: novalue"),
            "{msg}"
        );
        assert!(msg.contains("Error: Invalid key name: 'a.b'"), "{msg}");
        assert_eq!(err.exit_code(), crate::EXIT_FAILURE);
    }

    /// Issue 12 L2: values from standard input (`KEY=-`) and files (`KEY=@FILE`), exact
    /// bytes; ambiguous input refused before anything is read; no value in any message.
    #[test]
    fn pairs_from_stdin_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "from-file\n").unwrap();
        let at_file = format!("b=@{}", file.display());
        let mut stdin: &[u8] = b"from-stdin";
        let ok = parse_pairs(
            &["a=-".into(), at_file.clone(), "c=plain".into()],
            &mut stdin,
        )
        .unwrap();
        assert_eq!(ok["a"], "from-stdin");
        assert_eq!(ok["b"], "from-file\n");
        assert_eq!(ok["c"], "plain");
        assert!(stdin.is_empty());

        // Two readers of standard input: refused, and standard input is left alone.
        let mut stdin: &[u8] = b"secret-stdin";
        let err = parse_pairs(&["a=-".into(), "b=-".into()], &mut stdin).unwrap_err();
        let msg = err.message();
        assert!(
            msg.contains("more than one value reads standard input (a=-, b=-)"),
            "{msg}"
        );
        assert!(msg.contains("Nothing was written"), "{msg}");
        assert_eq!(stdin, b"secret-stdin");

        let msg = parse_pairs(&["a=@".into()], &mut std::io::empty())
            .unwrap_err()
            .message();
        assert!(msg.contains("'a=@' names no file"), "{msg}");

        let missing = format!("a=@{}", dir.path().join("nope").display());
        let msg = parse_pairs(&[missing], &mut std::io::empty())
            .unwrap_err()
            .message();
        assert!(msg.contains("the value of 'a'"), "{msg}");

        let mut not_utf8: &[u8] = &[0xff, 0xfe, b's', b'e', b'c'];
        let msg = parse_pairs(&["a=-".into()], &mut not_utf8)
            .unwrap_err()
            .message();
        assert!(msg.contains("not UTF-8"), "{msg}");
        assert!(!msg.contains("sec"), "{msg}");

        let big = vec![b'x'; usize::try_from(MAX_VALUE_BYTES).unwrap() + 1];
        let msg = parse_pairs(&["a=-".into()], &mut big.as_slice())
            .unwrap_err()
            .message();
        assert!(msg.contains("larger than"), "{msg}");
        let exact = vec![b'y'; usize::try_from(MAX_VALUE_BYTES).unwrap()];
        let ok = parse_pairs(&["a=-".into()], &mut exact.as_slice()).unwrap();
        assert_eq!(ok["a"].len(), exact.len());
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
