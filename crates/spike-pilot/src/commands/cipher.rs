//! `spike cipher encrypt|decrypt` in stream and JSON modes (docs/compatibility.md#pilot-spike, docs/protocol.md#cipher).
//!
//! Stream mode reads all input (a file, or standard input) and writes the raw result
//! (`0x01 ‖ nonce ‖ ciphertext` when encrypting) byte-exactly to a file or standard output.
//! JSON encrypt (`--plaintext <base64>`) prints `{"version","nonce","ciphertext"}` so that
//! `cipher decrypt --version --nonce --ciphertext` can reverse it (SPIKE's Go CLI prints only
//! the raw ciphertext there; docs/compatibility.md row 7).

use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::Serialize;
use spike_proto::cipher::CIPHER_VERSION;
use spike_proto::serde_helpers::{decode_base64, encode_base64};
use zeroize::Zeroizing;

use super::secret::read_zeroizing;
use super::write_stdout;
use crate::Io;
use crate::cli::CipherCmd;
use crate::errors::PilotError;
use crate::session::Session;

/// Largest input read (Nexus rejects more than 64 KiB anyway; this bounds memory).
pub const MAX_INPUT: u64 = 16 * 1024 * 1024;

/// Runs one cipher command.
///
/// # Errors
/// Input/output errors, bad base64, API errors.
pub async fn run(cmd: CipherCmd, session: &mut Session, io: &mut Io<'_>) -> Result<(), PilotError> {
    match cmd {
        CipherCmd::Encrypt {
            file,
            out,
            plaintext: Some(b64),
            algorithm: _,
        } => {
            let _ = file;
            let plaintext = json_plaintext(io, &b64)?;
            // Encrypting stores nothing: a read under the failover rule.
            let plaintext = &plaintext;
            let resp = session
                .read(|nexus| async move { nexus.encrypt(plaintext).await })
                .await?;
            let doc = JsonCiphertext {
                version: resp.version,
                nonce: encode_base64(resp.nonce.as_deref().unwrap_or_default()),
                ciphertext: encode_base64(resp.ciphertext.as_deref().unwrap_or_default()),
            };
            let mut text = serde_json::to_string(&doc).map_err(|e| {
                PilotError::failed(format!("Error: cannot encode the ciphertext: {e}"))
            })?;
            text.push('\n');
            write_output(io, out.as_deref(), text.as_bytes())
        }
        CipherCmd::Encrypt {
            file,
            out,
            plaintext: None,
            algorithm: _,
        } => {
            let input = read_input(io, file.as_deref())?;
            let data = Bytes::copy_from_slice(&input);
            let sealed = session
                .read(|nexus| {
                    let data = data.clone();
                    async move { nexus.encrypt_stream(data).await }
                })
                .await?;
            drop(data);
            drop(input);
            write_output(io, out.as_deref(), &sealed)
        }
        CipherCmd::Decrypt {
            file,
            out,
            version,
            nonce,
            ciphertext,
            algorithm: _,
        } => {
            if version.is_some() || nonce.is_some() || ciphertext.is_some() {
                let (Some(nonce), Some(ciphertext)) = (nonce, ciphertext) else {
                    return Err(PilotError::Usage(
                        "Error: JSON-mode decryption needs both --nonce and --ciphertext \
                         (base64)"
                            .to_owned(),
                    ));
                };
                if file.is_some() {
                    return Err(PilotError::Usage(
                        "Error: --file cannot be combined with --version/--nonce/--ciphertext"
                            .to_owned(),
                    ));
                }
                let nonce = decode_b64("--nonce", &nonce)?;
                let ciphertext = decode_b64("--ciphertext", &ciphertext)?;
                let version = version.unwrap_or(CIPHER_VERSION);
                let (nonce, ciphertext) = (&nonce, &ciphertext);
                let plaintext = Zeroizing::new(
                    session
                        .read(
                            |nexus| async move { nexus.decrypt(version, nonce, ciphertext).await },
                        )
                        .await?,
                );
                write_output(io, out.as_deref(), &plaintext)
            } else {
                let input = read_input(io, file.as_deref())?;
                let data = Bytes::copy_from_slice(&input);
                let plaintext = Zeroizing::new(
                    session
                        .read(|nexus| {
                            let data = data.clone();
                            async move { nexus.decrypt_stream(data).await }
                        })
                        .await?,
                );
                drop(data);
                write_output(io, out.as_deref(), &plaintext)
            }
        }
    }
}

#[derive(Serialize)]
struct JsonCiphertext {
    version: u8,
    nonce: String,
    ciphertext: String,
}

fn decode_b64(flag: &str, text: &str) -> Result<Vec<u8>, PilotError> {
    decode_base64(text.trim()).map_err(|_| {
        PilotError::failed(format!(
            "Error: {flag} is not valid base64 (standard alphabet with padding)."
        ))
    })
}

/// Reads the whole input: `file` (`-` or none = standard input), at most [`MAX_INPUT`] bytes.
///
/// # Errors
/// [`PilotError::Io`] naming the file; a failure when the input is too large.
pub fn read_input(io: &mut Io<'_>, file: Option<&Path>) -> Result<Zeroizing<Vec<u8>>, PilotError> {
    let (what, result) = match file {
        Some(path) if path != Path::new("-") => (
            format!("read {}", path.display()),
            std::fs::File::open(path).and_then(|mut f| read_zeroizing(&mut f, MAX_INPUT)),
        ),
        _ => (
            "read standard input".to_owned(),
            read_zeroizing(io.stdin, MAX_INPUT),
        ),
    };
    result.map_err(|e| PilotError::io(what, e))?.ok_or_else(|| {
        PilotError::failed(format!("Error: input is larger than {MAX_INPUT} bytes."))
    })
}

/// The JSON-mode plaintext of `--plaintext ARG`: `-` reads the raw plaintext from standard
/// input and `@FILE` from the file (the safe forms: an argument is visible to every local
/// user in `/proc/<pid>/cmdline`); anything else is the base64 plaintext itself (base64
/// never starts with `@` and is never `-`).
///
/// # Errors
/// As [`read_input`]; bad base64; `@` without a file name.
fn json_plaintext(io: &mut Io<'_>, arg: &str) -> Result<Zeroizing<Vec<u8>>, PilotError> {
    if arg == "-" {
        read_input(io, None)
    } else if let Some(file) = arg.strip_prefix('@') {
        if file.is_empty() {
            return Err(PilotError::Usage(
                "Error: --plaintext @ names no file (use --plaintext @FILE, or --plaintext - \
                 for standard input)"
                    .to_owned(),
            ));
        }
        read_input(io, Some(Path::new(file)))
    } else {
        Ok(Zeroizing::new(decode_b64("--plaintext", arg)?))
    }
}

/// Writes the result to `out` (created or truncated, mode 0600 when created) or stdout.
///
/// # Errors
/// [`PilotError::Io`] naming the file.
pub fn write_output(io: &mut Io<'_>, out: Option<&Path>, data: &[u8]) -> Result<(), PilotError> {
    match out {
        Some(path) if path != Path::new("-") => {
            let open = || {
                use std::os::unix::fs::OpenOptionsExt as _;
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(path)
            };
            open()
                .and_then(|mut f| f.write_all(data).and_then(|()| f.flush()))
                .map_err(|e| PilotError::io(format!("write {}", PathBuf::from(path).display()), e))
        }
        _ => write_stdout(io, data),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_from_stdin_and_file() {
        let mut stdin: &[u8] = b"\x00binary\xffdata\n";
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let mut io = Io::new(&mut stdin, &mut stdout, &mut stderr);
        assert_eq!(
            &**read_input(&mut io, None).unwrap(),
            b"\x00binary\xffdata\n"
        );

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.bin");
        std::fs::write(&path, b"file bytes").unwrap();
        assert_eq!(&**read_input(&mut io, Some(&path)).unwrap(), b"file bytes");
        let err = read_input(&mut io, Some(&dir.path().join("none")))
            .unwrap_err()
            .message();
        assert!(err.contains("none"), "{err}");
    }

    /// Issue 12 L2: the JSON-mode plaintext from standard input or a file.
    #[test]
    fn json_plaintext_from_stdin_file_or_base64() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pt");
        std::fs::write(&path, b"file plaintext").unwrap();
        let mut stdin: &[u8] = b"stdin plaintext";
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let mut io = Io::new(&mut stdin, &mut stdout, &mut stderr);
        assert_eq!(&**json_plaintext(&mut io, "-").unwrap(), b"stdin plaintext");
        let at = format!("@{}", path.display());
        assert_eq!(&**json_plaintext(&mut io, &at).unwrap(), b"file plaintext");
        assert_eq!(&**json_plaintext(&mut io, "aGk=").unwrap(), b"hi");
        assert!(json_plaintext(&mut io, "@").is_err());
        assert!(json_plaintext(&mut io, "not base64!").is_err());
    }

    #[test]
    fn output_to_stdout_and_private_file() {
        use std::os::unix::fs::PermissionsExt as _;
        let mut stdin: &[u8] = b"";
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        {
            let mut io = Io::new(&mut stdin, &mut stdout, &mut stderr);
            write_output(&mut io, None, b"\x01\x02raw").unwrap();
            write_output(&mut io, Some(&path), b"secret").unwrap();
        }
        assert_eq!(stdout, b"\x01\x02raw");
        assert!(stderr.is_empty());
        assert_eq!(std::fs::read(&path).unwrap(), b"secret");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn base64_flags() {
        assert_eq!(decode_b64("--nonce", "aGk=").unwrap(), b"hi");
        assert!(
            decode_b64("--nonce", "aGk")
                .unwrap_err()
                .message()
                .contains("--nonce")
        );
    }
}
