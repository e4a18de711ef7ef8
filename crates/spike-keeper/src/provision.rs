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
//! | a credential that decrypts, sealed otherwise (mode or PCRs changed; `auto` stays as it was first resolved) | the same key re-sealed as configured: the shard survives | 0 |
//! | a credential that no longer decrypts ([`seal_is_gone`]: another machine, a cleared TPM, a changed PCR, a damaged file) | logged with systemd-creds' error and the likely causes; kept as `key.cred.undecryptable-<unix time>`; then a key kept aside earlier that decrypts again and sealed the keeper's file is put back, else a new key | 0 |
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
use std::process::{Command, ExitCode, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use spike_crypto::shard_seal::{self, KeyId, SealingKey};
use spike_daemon::harden::{HardenPolicy, harden};
use spike_daemon::{EnvSource, ProcessEnv};
use zeroize::Zeroizing;

use crate::KeeperConfig;

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
    /// A key kept aside decrypts again and sealed the keeper's file: it was put back.
    Restored {
        /// The file it was kept in.
        from: PathBuf,
    },
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

/// What `key.cred.params` records. A TPM2 seal without PCRs is recorded as
/// `tpm2-pcrs=systemd-default`: systemd-creds then applies its own default (PCR 7 on systemd
/// 252).
fn params_text(with_key: ShardSealing, pcrs: &str) -> String {
    match (with_key, pcrs) {
        (ShardSealing::Host, _) => format!("with-key={with_key}"),
        (_, "") => format!("with-key={with_key} tpm2-pcrs=systemd-default"),
        (_, pcrs) => format!("with-key={with_key} tpm2-pcrs={pcrs}"),
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
/// machine's host key or TPM, a cleared TPM, a changed PCR, a damaged file (systemd 252 reports
/// a file that is not a credential as EINVAL, EPIPE or EBADMSG while reading it). Anything
/// else (a TPM in lockout, out of sessions, unreachable; an I/O error reading the host key)
/// may pass, and never costs the key.
const SEAL_GONE: &[&str] = &[
    "integrity check failed",
    "policy digest does not match",
    "incorrect key",
    "Failed to determine local credential key: No such file or directory",
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

/// Moves `cred` aside as `<cred>.undecryptable-<unix time>[-n]`, never over another file.
fn keep_aside(cred: &Path) -> Result<PathBuf, ProvisionError> {
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for n in 0..1000u32 {
        let mut kept = cred.as_os_str().to_owned();
        kept.push(format!(".undecryptable-{stamp}"));
        if n > 0 {
            kept.push(format!("-{n}"));
        }
        let kept = PathBuf::from(kept);
        if kept.symlink_metadata().is_err() {
            fs::rename(cred, &kept).map_err(io_err(cred))?;
            return Ok(kept);
        }
    }
    Err(io_err(cred)(io::Error::other(
        "no free name to keep it aside",
    )))
}

/// The credentials kept aside next to `cred`, newest first.
fn kept_aside(cred: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (cred.parent(), cred.file_name()) else {
        return Vec::new();
    };
    let prefix = format!("{}.undecryptable-", name.to_string_lossy());
    let mut kept: Vec<(SystemTime, PathBuf)> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
                .collect()
        })
        .unwrap_or_default();
    kept.sort_by_key(|k| std::cmp::Reverse(k.0));
    kept.into_iter().map(|(_, p)| p).collect()
}

/// The key id of the keeper's sealed shard file, if there is a readable one.
fn sealed_shard_key_id(path: &Path) -> Option<KeyId> {
    let bytes = crate::sealing::read_sealed_file(path).ok()??;
    shard_seal::sealed_key_id(&bytes).ok()
}

/// Creates, verifies, re-seals or restores the credential at `cred` for `settings`; `say`
/// receives each line for the journal. `sealed_shard` is the keeper's sealed shard file: a
/// key kept aside that decrypts again and sealed that file is put back.
///
/// # Errors
/// [`ProvisionError`]; see the module docs for the exit codes.
pub fn provision(
    settings: &SealingSettings,
    cred: &Path,
    sealed_shard: Option<&Path>,
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
    let params = params_path(cred);
    let had = fs::read_to_string(&params).unwrap_or_default();
    let had = had.trim().to_owned();
    let with_key = settings.resolved_mode(env);
    let pcrs = if with_key == ShardSealing::Host {
        String::new()
    } else {
        settings.pcr_list()
    };
    let wanted = params_text(with_key, &pcrs);

    if cred.exists() {
        match decrypt_patiently(creds, cred, say)? {
            Ok(key) => {
                // `auto` was resolved when the key was made, and stays so.
                if had == wanted || (settings.mode == ShardSealing::Auto && !had.is_empty()) {
                    say(&format!("sealing key {} verified ({had})", key.id()));
                    return Ok(Provisioned::Verified);
                }
                seal(creds, cred, &params, with_key, &pcrs, &wanted, &key)?;
                say(&format!(
                    "sealing key {} re-sealed: was {}, now {wanted} (the same key: the sealed shard \
                     stays valid; to change the key too, clear the keeper: docs/operations.md, \
                     \"Clear a keeper's sealed shard\")",
                    key.id(),
                    if had.is_empty() { "unrecorded" } else { &had }
                ));
                return Ok(Provisioned::Resealed {
                    from: had,
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
                let kept = keep_aside(cred)?;
                say(&format!(
                    "ERROR: the sealing key credential {} does not decrypt on this machine: {why}. \
                     Likely causes: the file comes from another machine, the TPM was cleared or \
                     replaced, or the PCR state changed (firmware, boot loader or Secure Boot \
                     update). Kept it as {} for forensics.",
                    cred.display(),
                    kept.display()
                ));
            }
        }
    }
    // A key kept aside earlier may decrypt again (the PCR state went back): if it sealed the
    // keeper's file, put it back rather than lose that shard.
    if let Some(shard_key) = sealed_shard.and_then(sealed_shard_key_id) {
        for kept in kept_aside(cred) {
            if let Ok(Ok(key)) = creds.decrypt(&kept)
                && key.id() == shard_key
            {
                seal(creds, cred, &params, with_key, &pcrs, &wanted, &key)?;
                say(&format!(
                    "restored sealing key {} from {}: it decrypts again, and the keeper's sealed \
                     shard was sealed under it ({wanted})",
                    key.id(),
                    kept.display()
                ));
                return Ok(Provisioned::Restored { from: kept });
            }
        }
    }
    let key = SealingKey::generate().map_err(|e| ProvisionError::Creds {
        verb: "encrypt",
        detail: e.to_string(),
    })?;
    seal(creds, cred, &params, with_key, &pcrs, &wanted, &key)?;
    if had.is_empty() {
        say(&format!(
            "created sealing key {} ({wanted}) at {}",
            key.id(),
            cred.display()
        ));
    } else {
        say(&format!(
            "created a new sealing key {} ({wanted}) at {}: the keeper starts empty, and Nexus \
             re-seeds it, or, if too few keepers hold shards, stays sealed until a restore \
             (docs/operations.md, \"When a seal no longer opens\")",
            key.id(),
            cred.display()
        ));
    }
    Ok(Provisioned::Created { with_key })
}

/// `spike-keeper sealing-key`: [`provision`] with the real `systemd-creds`, its lines on
/// stdout (the journal), the process hardened first (no core dump, not dumpable: the key
/// passes through it). Exit 0, 64 (a mode this machine cannot provide) or 1.
pub fn run_sealing_key(
    config: &KeeperConfig,
    credential: &Path,
    sealed_shard: Option<&Path>,
) -> ExitCode {
    let policy = HardenPolicy {
        lock_memory: false,
        require_mlock: false,
    };
    if let Err(err) = harden(policy) {
        eprintln!("spike-keeper: process hardening failed: {err}");
        return ExitCode::FAILURE;
    }
    let mut say = |line: &str| println!("{line}");
    match provision(
        &config.sealing,
        credential,
        sealed_shard,
        &Creds::default(),
        &ProcessEnv,
        &mut say,
    ) {
        Ok(_) => ExitCode::SUCCESS,
        Err(err @ ProvisionError::Unsupported(_)) => {
            eprintln!("spike-keeper: invalid configuration: key `shard_sealing`: {err}");
            ExitCode::from(64)
        }
        Err(err) => {
            eprintln!(
                "spike-keeper: cannot provide the shard sealing key: {err}; keeper not started \
                 (fix the TPM or the host key, or choose another shard_sealing mode)"
            );
            ExitCode::FAILURE
        }
    }
}

/// Seals `key` into `cred` as `with_key`/`pcrs`, then records `wanted` in `params`.
fn seal(
    creds: &Creds,
    cred: &Path,
    params: &Path,
    with_key: ShardSealing,
    pcrs: &str,
    wanted: &str,
    key: &SealingKey,
) -> Result<(), ProvisionError> {
    replace_file(cred, |tmp| creds.encrypt(with_key, pcrs, key, tmp))?;
    replace_file(params, |tmp| {
        fs::write(tmp, format!("{wanted}\n")).map_err(io_err(tmp))
    })
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
            provision(&off, &cred, None, &a, &env, &mut say).unwrap(),
            Provisioned::Off
        );
        assert!(!cred.exists());

        assert_eq!(
            provision(&host, &cred, None, &a, &env, &mut say).unwrap(),
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
            provision(&host, &cred, None, &a, &env, &mut say).unwrap(),
            Provisioned::Verified
        );
        assert_eq!(fs::read(&cred).unwrap(), first);
        // `auto` without a TPM2 seals with the host key: the same parameters.
        if !Path::new("/dev/tpmrm0").exists() {
            let auto = SealingSettings::parse(ShardSealing::Auto, &[]).unwrap();
            assert_eq!(
                provision(&auto, &cred, None, &a, &env, &mut say).unwrap(),
                Provisioned::Verified
            );
        }

        // On another machine (another host key) it does not decrypt: kept aside, a new key.
        let created = provision(&host, &cred, None, &b, &env, &mut say).unwrap();
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
    fn a_key_kept_aside_that_decrypts_again_and_sealed_the_shard_is_put_back() {
        let dir = tempfile::tempdir().unwrap();
        // Two host keys stand for two PCR states of one machine: "before" and "during".
        let Some(before) = machine(dir.path(), "state-before") else {
            return;
        };
        let during = machine(dir.path(), "state-during").unwrap();
        let cred = dir.path().join("key.cred");
        let shard_file = dir.path().join("shard.sealed");
        let env = MapEnv::new();
        let mut log = Vec::new();
        let mut say = |l: &str| log.push(l.to_owned());
        let host = SealingSettings::parse(ShardSealing::Host, &[]).unwrap();

        provision(&host, &cred, Some(&shard_file), &before, &env, &mut say).unwrap();
        let k1 = before.decrypt(&cred).unwrap().unwrap();
        crate::sealing::SealedShardFile::new(shard_file.clone(), "1", k1)
            .persist(&spike_crypto::ShardValue::new([8; 32]))
            .unwrap();

        // One boot in another state: K1 does not decrypt; nothing kept decrypts; a new K2.
        let during_boot = provision(&host, &cred, Some(&shard_file), &during, &env, &mut say);
        assert!(
            matches!(during_boot, Ok(Provisioned::Created { .. })),
            "{during_boot:?}"
        );
        // Back to the first state: K2 does not decrypt; K1, kept aside, does and sealed the
        // shard file: it is put back, and the shard opens again.
        let back = provision(&host, &cred, Some(&shard_file), &before, &env, &mut say).unwrap();
        assert!(matches!(back, Provisioned::Restored { .. }), "{back:?}");
        let key = before.decrypt(&cred).unwrap().unwrap();
        let file = crate::sealing::SealedShardFile::new(shard_file.clone(), "1", key);
        assert!(matches!(
            file.load(),
            crate::sealing::LoadOutcome::Loaded(s) if s.expose_secret() == &[8; 32]
        ));
        assert_eq!(kept_aside(&cred).len(), 2, "both failed keys stay kept");
        // Nothing matching: a new key, as before.
        std::fs::remove_file(&shard_file).unwrap();
        let again = provision(&host, &cred, Some(&shard_file), &during, &env, &mut say).unwrap();
        assert!(matches!(again, Provisioned::Created { .. }), "{again:?}");
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
            "Failed to determine local credential key: Input/output error",
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
            let err = provision(&tpm2, &cred, None, &Creds::default(), &env, &mut say).unwrap_err();
            assert!(matches!(err, ProvisionError::Unsupported(_)), "{err}");
        }
        let missing = Creds {
            program: dir.path().join("no-such-program").into(),
            env: Vec::new(),
        };
        let host = SealingSettings::parse(ShardSealing::Host, &[]).unwrap();
        let err = provision(&host, &cred, None, &missing, &env, &mut say)
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot run"), "{err}");
        assert!(!cred.exists());
    }
}
