//! `spike-keeper sealing-key`: creates, verifies and re-seals a keeper's sealing key
//! credential with `systemd-creds`. Runs as root in `spike-keeper-sealing@N.service`, before
//! every start of keeper N (the keeper itself never touches the TPM or the host key).
//!
//! | Found | Done | Exit |
//! |---|---|---|
//! | `shard_sealing = "off"` | nothing | 0 |
//! | a mode this machine cannot provide (`tpm2` without a TPM2) | refused, with the way out | 64 |
//! | no credential | a new key: 32 random bytes → `systemd-creds encrypt` | 0 |
//! | a credential that decrypts, sealed as configured | nothing | 0 |
//! | a credential that decrypts, sealed otherwise (mode or PCRs changed) | the same key re-sealed as configured: the shard survives | 0 |
//! | a credential that no longer decrypts ([`seal_is_gone`]: another machine, a cleared TPM, a changed PCR, a damaged file) | logged with systemd-creds' error and the likely causes; kept as `key.cred.undecryptable-<unix time>`; a new key | 0 |
//! | a decryption error that may be temporary (TPM lockout, out of sessions, unreachable) | retried 5 times, 2 s apart; then the error, and the credential kept | 1 |
//! | `systemd-creds` missing or failing to encrypt | the error | 1 |
//!
//! The key travels to and from `systemd-creds` through pipes only, and is zeroized after.
//! Next to the credential, `key.cred.params` records what it was sealed with
//! (`with-key=host+tpm2 tpm2-pcrs=7`).

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use spike_crypto::shard_seal::SealingKey;
use spike_daemon::EnvSource;
use zeroize::Zeroizing;

use crate::sealing::{CREDENTIAL_NAME, SealingSettings, ShardSealing};

/// What `sealing-key` did (printed, and asserted by the tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provisioned {
    /// Sealing is off.
    Off,
    /// A new key was created (the first start, or after an undecryptable one).
    Created {
        /// The `--with-key=` used.
        with_key: ShardSealing,
    },
    /// The existing key decrypts and is sealed as configured.
    Verified,
    /// The existing key was re-sealed with new parameters.
    Resealed {
        /// The old parameters.
        from: String,
        /// The new ones.
        to: String,
    },
}

/// Why `sealing-key` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProvisionError {
    /// The configured mode cannot work on this machine (exit 64).
    #[error("{0}")]
    Unsupported(String),
    /// `systemd-creds` could not be run or failed to encrypt.
    #[error("systemd-creds {verb} failed: {detail}")]
    Creds {
        /// The verb (`encrypt`, `decrypt`).
        verb: &'static str,
        /// Its error output or the spawn error.
        detail: String,
    },
    /// A file operation on the credential failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// The `systemd-creds` program and the environment it runs with.
#[derive(Debug, Clone)]
pub struct Creds {
    /// The program (default `systemd-creds` on `PATH`).
    pub program: OsString,
    /// Variables added to its environment (tests point `SYSTEMD_CREDENTIAL_SECRET` at a host
    /// key of their own, to model two machines).
    pub env: Vec<(OsString, OsString)>,
}

impl Default for Creds {
    fn default() -> Self {
        Self {
            program: "systemd-creds".into(),
            env: Vec::new(),
        }
    }
}

impl Creds {
    fn encrypt(
        &self,
        with_key: ShardSealing,
        pcrs: &str,
        key: &SealingKey,
        out: &Path,
    ) -> Result<(), ProvisionError> {
        let mut cmd = self.command();
        cmd.arg("encrypt")
            .arg(format!("--with-key={}", with_key.as_str()))
            .arg(format!("--name={CREDENTIAL_NAME}"));
        if !pcrs.is_empty() {
            cmd.arg(format!("--tpm2-pcrs={pcrs}"));
        }
        cmd.arg("-").arg(out);
        let (status, _, stderr) = run(cmd, Some(key.expose_secret()), "encrypt")?;
        if !status {
            return Err(ProvisionError::Creds {
                verb: "encrypt",
                detail: stderr,
            });
        }
        Ok(())
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Decrypts `cred`: the key, or systemd-creds' error text.
    fn decrypt(&self, cred: &Path) -> Result<Result<SealingKey, String>, ProvisionError> {
        let mut cmd = self.command();
        cmd.arg("decrypt")
            .arg(format!("--name={CREDENTIAL_NAME}"))
            .arg(cred)
            .arg("-");
        let (ok, stdout, stderr) = run(cmd, None, "decrypt")?;
        if !ok {
            return Ok(Err(stderr));
        }
        Ok(SealingKey::from_slice(&stdout).map_err(|e| e.to_string()))
    }
}

/// Runs `cmd` with `input` on its stdin; returns (success, stdout, stderr text).
fn run(
    mut cmd: Command,
    input: Option<&[u8]>,
    verb: &'static str,
) -> Result<(bool, Zeroizing<Vec<u8>>, String), ProvisionError> {
    let program = cmd_name(&cmd);
    let spawn_err = |e: io::Error| ProvisionError::Creds {
        verb,
        detail: format!("cannot run {program}: {e}"),
    };
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(&spawn_err)?;
    if let Some(mut stdin) = child.stdin.take()
        && let Some(bytes) = input
    {
        stdin.write_all(bytes).map_err(&spawn_err)?;
    }
    let mut stdout = Zeroizing::new(Vec::with_capacity(64));
    if let Some(mut out) = child.stdout.take() {
        out.read_to_end(&mut stdout).map_err(&spawn_err)?;
    }
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut stderr);
    }
    let status = child.wait().map_err(&spawn_err)?;
    Ok((status.success(), stdout, stderr.trim().to_owned()))
}

fn cmd_name(cmd: &Command) -> String {
    cmd.get_program().to_string_lossy().into_owned()
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ProvisionError + '_ {
    move |source| ProvisionError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The sidecar recording how the credential at `cred` was sealed.
pub fn params_path(cred: &Path) -> PathBuf {
    let mut name = cred.as_os_str().to_owned();
    name.push(".params");
    PathBuf::from(name)
}

fn params_text(with_key: ShardSealing, pcrs: &str) -> String {
    if pcrs.is_empty() {
        format!("with-key={with_key}")
    } else {
        format!("with-key={with_key} tpm2-pcrs={pcrs}")
    }
}

/// Writes `content` to `path` atomically (temp file, sync, rename, sync the directory).
fn replace_file(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<(), ProvisionError>,
) -> Result<(), ProvisionError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err(&tmp)(e)),
        _ => {}
    }
    write(&tmp)?;
    File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))?;
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// systemd-creds' errors that mean the credential will never decrypt here again: another
/// machine's host key or TPM, a cleared TPM, a changed PCR, a damaged file. Anything else (a
/// TPM in lockout, out of sessions, unreachable) may pass, and never costs the key.
const SEAL_GONE: &[&str] = &[
    "integrity check failed",
    "policy digest does not match",
    "incorrect key",
    "Failed to determine local credential key",
    "Embedded credential name",
    "Encrypted file too short",
    "credential data: Invalid argument",
    "credential data: Broken pipe",
    "credential data: Bad message",
];

/// Whether systemd-creds' error `why` means the seal can no longer open on this machine.
pub fn seal_is_gone(why: &str) -> bool {
    SEAL_GONE.iter().any(|marker| why.contains(marker))
}

/// Attempts of a decrypt that fails with an error that may be temporary, and the pause between.
const DECRYPT_ATTEMPTS: u32 = 5;
const DECRYPT_PAUSE: std::time::Duration = std::time::Duration::from_secs(2);

fn decrypt_patiently(
    creds: &Creds,
    cred: &Path,
    say: &mut dyn FnMut(&str),
) -> Result<Result<SealingKey, String>, ProvisionError> {
    let mut attempt = 1;
    loop {
        match creds.decrypt(cred)? {
            Err(why) if !seal_is_gone(&why) && attempt < DECRYPT_ATTEMPTS => {
                say(&format!(
                    "decrypting the sealing key failed (attempt {attempt} of {DECRYPT_ATTEMPTS}, trying again): {why}"
                ));
                attempt += 1;
                std::thread::sleep(DECRYPT_PAUSE);
            }
            other => return Ok(other),
        }
    }
}

/// Creates, verifies or re-seals the credential at `cred` for `settings`; `say` receives
/// each line for the journal.
///
/// # Errors
/// [`ProvisionError`]; see the module docs for the exit codes.
pub fn provision(
    settings: &SealingSettings,
    cred: &Path,
    creds: &Creds,
    env: &dyn EnvSource,
    say: &mut dyn FnMut(&str),
) -> Result<Provisioned, ProvisionError> {
    if !settings.mode.is_on() {
        say("shard_sealing = \"off\": the shard stays in RAM only; no sealing key is needed");
        return Ok(Provisioned::Off);
    }
    settings
        .check_supported(env)
        .map_err(ProvisionError::Unsupported)?;
    let with_key = settings.resolved_mode(env);
    if settings.mode == ShardSealing::Auto {
        say(&format!(
            "shard_sealing = \"auto\" seals with --with-key={with_key} on this machine"
        ));
    }
    let pcrs = if with_key == ShardSealing::Host {
        String::new()
    } else {
        settings.pcr_list()
    };
    let wanted = params_text(with_key, &pcrs);
    let params = params_path(cred);

    if cred.exists() {
        match decrypt_patiently(creds, cred, say)? {
            Ok(key) => {
                let had = fs::read_to_string(&params).unwrap_or_default();
                let had = had.trim();
                if had == wanted {
                    say(&format!("sealing key {} verified ({wanted})", key.id()));
                    return Ok(Provisioned::Verified);
                }
                replace_file(cred, |tmp| creds.encrypt(with_key, &pcrs, &key, tmp))?;
                replace_file(&params, |tmp| {
                    fs::write(tmp, format!("{wanted}\n")).map_err(io_err(tmp))
                })?;
                say(&format!(
                    "sealing key {} re-sealed: was {}, now {wanted} (the sealed shard stays valid)",
                    key.id(),
                    if had.is_empty() { "unrecorded" } else { had }
                ));
                return Ok(Provisioned::Resealed {
                    from: had.to_owned(),
                    to: wanted,
                });
            }
            Err(why) if !seal_is_gone(&why) => {
                return Err(ProvisionError::Creds {
                    verb: "decrypt",
                    detail: format!(
                        "{why} (the sealing key credential {} is kept: this error may be temporary, \
                         e.g. a TPM in dictionary-attack lockout. If it persists, move the file aside \
                         and restart the keeper: a new key is made, and the keeper starts empty)",
                        cred.display()
                    ),
                });
            }
            Err(why) => {
                let stamp = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let mut kept = cred.as_os_str().to_owned();
                kept.push(format!(".undecryptable-{stamp}"));
                let kept = PathBuf::from(kept);
                fs::rename(cred, &kept).map_err(io_err(cred))?;
                say(&format!(
                    "ERROR: the sealing key credential {} does not decrypt on this machine: {why}. \
                     Likely causes: the file comes from another machine, the TPM was cleared or \
                     replaced, or the PCR state changed (firmware, boot loader or Secure Boot \
                     update). Kept it as {} for forensics. Creating a new sealing key: the keeper \
                     starts empty, and Nexus stays sealed until its keepers hold shards again \
                     (docs/operations.md, \"When a seal no longer opens\").",
                    cred.display(),
                    kept.display()
                ));
            }
        }
    }
    let key = SealingKey::generate().map_err(|e| ProvisionError::Creds {
        verb: "encrypt",
        detail: e.to_string(),
    })?;
    replace_file(cred, |tmp| creds.encrypt(with_key, &pcrs, &key, tmp))?;
    replace_file(&params, |tmp| {
        fs::write(tmp, format!("{wanted}\n")).map_err(io_err(tmp))
    })?;
    say(&format!(
        "created sealing key {} ({wanted}) at {}",
        key.id(),
        cred.display()
    ));
    Ok(Provisioned::Created { with_key })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use spike_daemon::MapEnv;

    use super::*;

    /// The real `systemd-creds` with a host key of its own: `machine` names a file of 4 KiB
    /// random bytes, mode 0400, so two names model two machines. `None` when this test host
    /// cannot run it (not root, or no systemd-creds): the nspawn scenarios cover it there.
    fn machine(dir: &Path, machine: &str) -> Option<Creds> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: systemd-creds needs root to read its host key");
            return None;
        }
        let secret = dir.join(format!("{machine}.secret"));
        if !secret.exists() {
            let mut bytes = vec![0u8; 4096];
            getrandom::fill(&mut bytes).unwrap();
            fs::write(&secret, &bytes).unwrap();
            fs::set_permissions(&secret, fs::Permissions::from_mode(0o400)).unwrap();
        }
        let creds = Creds {
            program: "systemd-creds".into(),
            env: vec![("SYSTEMD_CREDENTIAL_SECRET".into(), secret.into())],
        };
        Command::new(&creds.program)
            .arg("--version")
            .output()
            .ok()?;
        Some(creds)
    }

    #[test]
    fn create_verify_and_replace_an_undecryptable_key_with_the_real_systemd_creds() {
        let dir = tempfile::tempdir().unwrap();
        let Some(a) = machine(dir.path(), "machine-a") else {
            return;
        };
        let b = machine(dir.path(), "machine-b").unwrap();
        let cred = dir.path().join("key.cred");
        let env = MapEnv::new();
        let mut log = Vec::new();
        let mut say = |l: &str| log.push(l.to_owned());
        let host = SealingSettings::parse(ShardSealing::Host, &[]).unwrap();

        let off = SealingSettings::default();
        assert_eq!(
            provision(&off, &cred, &a, &env, &mut say).unwrap(),
            Provisioned::Off
        );
        assert!(!cred.exists());

        assert_eq!(
            provision(&host, &cred, &a, &env, &mut say).unwrap(),
            Provisioned::Created {
                with_key: ShardSealing::Host
            }
        );
        let first = fs::read(&cred).unwrap();
        let first_key = a.decrypt(&cred).unwrap().unwrap().id();
        assert_eq!(
            fs::read_to_string(params_path(&cred)).unwrap(),
            "with-key=host\n"
        );
        assert_eq!(
            provision(&host, &cred, &a, &env, &mut say).unwrap(),
            Provisioned::Verified
        );
        assert_eq!(fs::read(&cred).unwrap(), first);
        // `auto` without a TPM2 seals with the host key: the same parameters.
        if !Path::new("/dev/tpmrm0").exists() {
            let auto = SealingSettings::parse(ShardSealing::Auto, &[]).unwrap();
            assert_eq!(
                provision(&auto, &cred, &a, &env, &mut say).unwrap(),
                Provisioned::Verified
            );
        }

        // On another machine (another host key) it does not decrypt: kept aside, a new key.
        let created = provision(&host, &cred, &b, &env, &mut say).unwrap();
        assert_eq!(
            created,
            Provisioned::Created {
                with_key: ShardSealing::Host
            }
        );
        let kept: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("key.cred.undecryptable-"))
            .collect();
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert_eq!(fs::read(dir.path().join(&kept[0])).unwrap(), first);
        let second_key = b.decrypt(&cred).unwrap().unwrap().id();
        assert_ne!(first_key, second_key);
        assert!(a.decrypt(&cred).unwrap().is_err());
        let joined = log.join("\n");
        assert!(
            joined.contains("does not decrypt on this machine"),
            "{joined}"
        );
        assert!(joined.contains("another machine"), "{joined}");
        // The key never appears in what is said.
        assert!(!joined.contains(&hex::encode(
            b.decrypt(&cred).unwrap().unwrap().expose_secret()
        )));
    }

    #[test]
    fn only_errors_that_mean_the_seal_is_gone_cost_the_key() {
        // Verbatim systemd 252 messages (the nspawn scenarios and a swtpm probe).
        for gone in [
            "Failed to load HMAC key in TPM: tpm:parameter(1):integrity check failed",
            "Current policy digest does not match stored policy digest, cancelling TPM2 authentication attempt.",
            "Decryption failed (incorrect key?): error:00000000:lib(0)::reason(0)",
            "Failed to determine local credential key: No such file or directory",
            "Encrypted file too short.",
            "Failed to read encrypted credential data: Invalid argument",
        ] {
            assert!(seal_is_gone(gone), "{gone}");
        }
        for temporary in [
            "TPM2 device is in dictionary attack lockout mode.",
            "Failed to open session in TPM: tpm:warn(2.0): out of memory for session contexts",
            "Failed to initialize TCTI context: tcti:IO failure",
            "",
        ] {
            assert!(!seal_is_gone(temporary), "{temporary}");
        }
    }

    #[test]
    fn unsupported_modes_and_a_missing_program_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let cred = dir.path().join("key.cred");
        let env = MapEnv::new().with("SYSTEMD_TPM2_DEVICE", "swtpm:path=/nonexistent/sock");
        let tpm2 = SealingSettings::parse(ShardSealing::Tpm2, &[]).unwrap();
        let mut say = |_: &str| {};
        if !Path::new("/dev/tpmrm0").exists() {
            let err = provision(&tpm2, &cred, &Creds::default(), &env, &mut say).unwrap_err();
            assert!(matches!(err, ProvisionError::Unsupported(_)), "{err}");
        }
        let missing = Creds {
            program: dir.path().join("no-such-program").into(),
            env: Vec::new(),
        };
        let host = SealingSettings::parse(ShardSealing::Host, &[]).unwrap();
        let err = provision(&host, &cred, &missing, &env, &mut say)
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot run"), "{err}");
        assert!(!cred.exists());
    }
}
