//! Shard sealing: the keeper's shard kept across restarts, encrypted at rest under a
//! per-keeper sealing key that systemd seals to the machine (docs/security.md, "Shard
//! sealing").
//!
//! - [`ShardSealing`] and [`SealingSettings`]: the `shard_sealing` and `shard_sealing_pcrs`
//!   keys, and the TPM2 reachability check `check-config` and the key provisioning share.
//! - [`SealedShardFile`]: the file `$STATE_DIRECTORY/shard.sealed` in the format of
//!   [`spike_crypto::shard_seal`]: read once at start ([`SealedShardFile::load`]), replaced
//!   atomically on every new shard ([`SealedShardFile::persist`]).
//!
//! The keeper process never touches the TPM or the host key: systemd decrypts the sealing key
//! credential (`LoadCredentialEncrypted=`) into the unit's private credentials directory,
//! and [`crate::provision`] creates that credential in a separate root oneshot.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use spike_crypto::ShardValue;
use spike_crypto::shard_seal::{self, SealError, SealingKey};
use spike_daemon::EnvSource;

/// The credential name of the sealing key: embedded in the credential by
/// `systemd-creds encrypt --name=` and the file name under `$CREDENTIALS_DIRECTORY`.
pub const CREDENTIAL_NAME: &str = "shard-sealing-key";
/// The sealed shard's file name in the keeper's state directory.
pub const SEALED_SHARD_FILE: &str = "shard.sealed";
/// The highest TPM2 PCR index.
pub const MAX_PCR: u8 = 23;

/// The `shard_sealing` key: how (and whether) a keeper keeps its shard across restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum ShardSealing {
    /// SPIKE's model: the shard lives in RAM only; a restarted keeper is empty.
    #[default]
    #[serde(rename = "off")]
    Off,
    /// Sealing key encrypted with the systemd host key (`/var/lib/systemd/credential.secret`).
    #[serde(rename = "host")]
    Host,
    /// Sealing key sealed to the TPM2 (optionally to PCR values).
    #[serde(rename = "tpm2")]
    Tpm2,
    /// Both: the host key and the TPM2 are needed.
    #[serde(rename = "host+tpm2")]
    HostTpm2,
    /// `host+tpm2` when a TPM2 is reachable when the key is created, `host` otherwise.
    #[serde(rename = "auto")]
    Auto,
}

impl ShardSealing {
    /// The name as written in the config and passed to `systemd-creds --with-key=`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Host => "host",
            Self::Tpm2 => "tpm2",
            Self::HostTpm2 => "host+tpm2",
            Self::Auto => "auto",
        }
    }

    /// Whether the shard is kept at all.
    pub fn is_on(self) -> bool {
        self != Self::Off
    }

    /// Whether this mode needs a TPM2 whatever the machine has.
    pub fn needs_tpm2(self) -> bool {
        matches!(self, Self::Tpm2 | Self::HostTpm2)
    }

    /// Whether PCRs can apply to this mode.
    pub fn may_use_tpm2(self) -> bool {
        matches!(self, Self::Tpm2 | Self::HostTpm2 | Self::Auto)
    }
}

impl fmt::Display for ShardSealing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The validated sealing settings of a keeper.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SealingSettings {
    /// The mode.
    pub mode: ShardSealing,
    /// TPM2 PCRs the sealing key is bound to (sorted, unique; empty: none).
    pub pcrs: Vec<u8>,
}

impl SealingSettings {
    /// Validates the two keys together.
    ///
    /// # Errors
    /// `(key, message)` naming the key.
    pub fn parse(mode: ShardSealing, pcrs: &[u32]) -> Result<Self, (&'static str, String)> {
        let mut checked = Vec::with_capacity(pcrs.len());
        for &pcr in pcrs {
            match u8::try_from(pcr) {
                Ok(p) if p <= MAX_PCR => checked.push(p),
                _ => {
                    return Err((
                        "shard_sealing_pcrs",
                        format!("PCR {pcr} does not exist: TPM2 PCRs are 0..={MAX_PCR}"),
                    ));
                }
            }
        }
        checked.sort_unstable();
        if checked.windows(2).any(|w| w[0] == w[1]) {
            return Err(("shard_sealing_pcrs", "a PCR is listed twice".to_owned()));
        }
        if !checked.is_empty() && !mode.may_use_tpm2() {
            return Err((
                "shard_sealing_pcrs",
                format!(
                    "PCRs bind a TPM2 seal, and shard_sealing = \"{mode}\" uses no TPM2; \
                     remove them or use \"tpm2\", \"host+tpm2\" or \"auto\""
                ),
            ));
        }
        Ok(Self {
            mode,
            pcrs: checked,
        })
    }

    /// The PCR list as `systemd-creds --tpm2-pcrs=` takes it (`7+11`), empty for none.
    pub fn pcr_list(&self) -> String {
        self.pcrs
            .iter()
            .map(u8::to_string)
            .collect::<Vec<_>>()
            .join("+")
    }

    /// Refuses a mode this machine cannot provide: `tpm2` or `host+tpm2` with no TPM2.
    ///
    /// # Errors
    /// A message naming the mode, what is missing and the way out.
    pub fn check_supported(&self, env: &dyn EnvSource) -> Result<(), String> {
        if self.mode.needs_tpm2() && tpm2_device(env).is_none() {
            return Err(format!(
                "shard_sealing = \"{}\" needs a TPM2, and none is reachable here (no /dev/tpmrm0, \
                 SYSTEMD_TPM2_DEVICE unset); use \"host\" (or \"auto\", which falls back to it), or \"off\"",
                self.mode
            ));
        }
        Ok(())
    }

    /// The `systemd-creds --with-key=` this machine seals with: `auto` resolved.
    pub fn resolved_mode(&self, env: &dyn EnvSource) -> ShardSealing {
        match self.mode {
            ShardSealing::Auto if tpm2_device(env).is_some() => ShardSealing::HostTpm2,
            ShardSealing::Auto => ShardSealing::Host,
            other => other,
        }
    }
}

/// The TPM2 systemd would use, if one is reachable: `SYSTEMD_TPM2_DEVICE` (a device path or a
/// TSS2 TCTI such as `swtpm:path=...`), else the kernel's resource manager `/dev/tpmrm0`.
pub fn tpm2_device(env: &dyn EnvSource) -> Option<String> {
    if let Some(device) = env.var("SYSTEMD_TPM2_DEVICE").filter(|d| d != "auto") {
        let path = match device.split_once(':') {
            Some((_, params)) => params
                .split(',')
                .find_map(|p| p.strip_prefix("path="))
                .map(str::to_owned),
            None => Some(device.clone()),
        };
        return match path {
            Some(p) if !Path::new(&p).exists() => None,
            _ => Some(device),
        };
    }
    Path::new("/dev/tpmrm0")
        .exists()
        .then(|| "/dev/tpmrm0".to_owned())
}

/// What [`SealedShardFile::load`] found. Every variant but `Loaded` leaves the keeper empty
/// and the file untouched.
#[derive(Debug)]
pub enum LoadOutcome {
    /// No sealed shard yet.
    Absent,
    /// The shard was restored.
    Loaded(ShardValue),
    /// The file exists and does not open; the message names the cause.
    Unusable(String),
}

/// The sealed shard file of one keeper: its path, its keeper id (bound into the AAD), and the
/// sealing key.
pub struct SealedShardFile {
    path: PathBuf,
    keeper_id: String,
    key: SealingKey,
}

impl fmt::Debug for SealedShardFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedShardFile")
            .field("path", &self.path)
            .field("keeper_id", &self.keeper_id)
            .field("key", &self.key)
            .finish()
    }
}

/// Why the sealed shard file cannot be set up at start (a configuration error).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealingSetupError {
    /// No state directory is configured.
    #[error(
        "shard_sealing = \"{mode}\" but the keeper has no state directory: the unit needs \
         StateDirectory=spike-keeper/<id> (scripts/install.sh --shard-sealing writes it; on NixOS, \
         services.spike.keepers.shardSealing), or set `state_directory`"
    )]
    NoStateDirectory {
        /// The mode.
        mode: ShardSealing,
    },
    /// No credential was passed.
    #[error(
        "shard_sealing = \"{mode}\" but systemd passed no credential `{CREDENTIAL_NAME}` \
         ({detail}); the unit needs LoadCredentialEncrypted={CREDENTIAL_NAME}:/var/lib/spike-sealing/keeper-<id>/key.cred \
         (scripts/install.sh --shard-sealing writes it; on NixOS, services.spike.keepers.shardSealing \
         must say what keeper.toml says)"
    )]
    NoCredential {
        /// The mode.
        mode: ShardSealing,
        /// What was looked for.
        detail: String,
    },
    /// The credential is not a sealing key.
    #[error("the credential `{CREDENTIAL_NAME}` is not a sealing key: {0}")]
    BadCredential(SealError),
}

impl SealedShardFile {
    /// The sealed shard file in `state_directory` for `keeper_id`, with the sealing key read
    /// from `$CREDENTIALS_DIRECTORY/shard-sealing-key`.
    ///
    /// # Errors
    /// [`SealingSetupError`] naming what the unit lacks.
    pub fn from_credentials(
        mode: ShardSealing,
        state_directory: Option<&Path>,
        keeper_id: &str,
        env: &dyn EnvSource,
    ) -> Result<Self, SealingSetupError> {
        let dir = state_directory.ok_or(SealingSetupError::NoStateDirectory { mode })?;
        let creds =
            env.var("CREDENTIALS_DIRECTORY")
                .ok_or_else(|| SealingSetupError::NoCredential {
                    mode,
                    detail: "CREDENTIALS_DIRECTORY is unset".to_owned(),
                })?;
        let path = Path::new(&creds).join(CREDENTIAL_NAME);
        let bytes = zeroize::Zeroizing::new(fs::read(&path).map_err(|e| {
            SealingSetupError::NoCredential {
                mode,
                detail: format!("{}: {e}", path.display()),
            }
        })?);
        let key = SealingKey::from_slice(&bytes).map_err(SealingSetupError::BadCredential)?;
        Ok(Self::new(dir.join(SEALED_SHARD_FILE), keeper_id, key))
    }

    /// A sealed shard file at `path`.
    pub fn new(path: PathBuf, keeper_id: &str, key: SealingKey) -> Self {
        Self {
            path,
            keeper_id: keeper_id.to_owned(),
            key,
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads and opens the file. Never modifies it.
    pub fn load(&self) -> LoadOutcome {
        let bytes = match read_sealed_file(&self.path) {
            Ok(Some(b)) => b,
            Ok(None) => return LoadOutcome::Absent,
            Err(e) => return LoadOutcome::Unusable(format!("cannot read it: {e}")),
        };
        match shard_seal::open_shard(&self.key, &self.keeper_id, &bytes) {
            Ok(shard) => LoadOutcome::Loaded(shard),
            Err(e @ SealError::OtherKey { .. }) => LoadOutcome::Unusable(format!(
                "{e}: the sealing key was replaced, because the old credential no longer decrypted \
                 on this machine (the files come from another machine, the TPM was cleared or \
                 replaced, or the PCR state changed; the sealing unit's journal, \
                 `journalctl -u spike-keeper-sealing@{}`, has systemd-creds' own error)",
                self.keeper_id
            )),
            Err(e) => LoadOutcome::Unusable(e.to_string()),
        }
    }

    /// Replaces the file with `shard` sealed: a new file (mode 0600, never following a
    /// symlink), written and synced, renamed over the old one, and the directory synced.
    ///
    /// # Errors
    /// I/O errors; the old file is then untouched.
    pub fn persist(&self, shard: &ShardValue) -> io::Result<()> {
        let sealed = shard_seal::seal_shard(&self.key, &self.keeper_id, shard)
            .map_err(|e| io::Error::other(e.to_string()))?;
        let dir = self.path.parent().unwrap_or_else(|| Path::new("."));
        let tmp = dir.join(format!(".{SEALED_SHARD_FILE}.tmp"));
        // A temporary file left by a crash mid-write is ours to replace.
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let write = || -> io::Result<()> {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
                .open(&tmp)?;
            file.write_all(&sealed)?;
            file.sync_all()?;
            fs::rename(&tmp, &self.path)
        };
        write().inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })?;
        // The new file is in place: from here on it is the shard, so a failing directory
        // sync (the rename may not survive a power cut yet) is logged, not an error.
        if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot sync the directory of the sealed shard file");
        }
        Ok(())
    }
}

/// Reads a sealed shard file without trusting what is at `path`: never through a symlink,
/// never blocking (a FIFO), only a regular file, and at most one byte more than a sealed
/// shard. `None` when there is no file.
///
/// # Errors
/// What is there is not a regular file, or cannot be read.
pub fn read_sealed_file(path: &Path) -> io::Result<Option<Vec<u8>>> {
    use std::io::Read as _;
    let flags = nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK;
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits())
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if !file.metadata()?.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    let mut bytes = Vec::with_capacity(shard_seal::SEALED_SHARD_SIZE + 1);
    file.take(shard_seal::SEALED_SHARD_SIZE as u64 + 1)
        .read_to_end(&mut bytes)?;
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    use spike_daemon::MapEnv;

    use super::*;

    fn key(b: u8) -> SealingKey {
        SealingKey::from_slice(&[b; 32]).unwrap()
    }

    #[test]
    fn settings_are_validated_together() {
        let s = SealingSettings::parse(ShardSealing::HostTpm2, &[11, 7]).unwrap();
        assert_eq!(s.pcr_list(), "7+11");
        assert!(SealingSettings::parse(ShardSealing::Host, &[7]).is_err());
        assert!(SealingSettings::parse(ShardSealing::Off, &[7]).is_err());
        assert!(SealingSettings::parse(ShardSealing::Tpm2, &[24]).is_err());
        assert!(SealingSettings::parse(ShardSealing::Tpm2, &[7, 7]).is_err());
        assert_eq!(
            SealingSettings::parse(ShardSealing::Auto, &[])
                .unwrap()
                .pcr_list(),
            ""
        );
    }

    #[test]
    fn tpm_modes_need_a_reachable_tpm() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("sock");
        let none = MapEnv::new().with(
            "SYSTEMD_TPM2_DEVICE",
            format!("swtpm:path={}", sock.display()),
        );
        let tpm2 = SealingSettings::parse(ShardSealing::Tpm2, &[]).unwrap();
        let host = SealingSettings::parse(ShardSealing::Host, &[]).unwrap();
        let auto = SealingSettings::parse(ShardSealing::Auto, &[]).unwrap();
        if !Path::new("/dev/tpmrm0").exists() {
            let err = tpm2.check_supported(&none).unwrap_err();
            assert!(
                err.contains("needs a TPM2") && err.contains("\"host\""),
                "{err}"
            );
            assert_eq!(auto.resolved_mode(&none), ShardSealing::Host);
        }
        host.check_supported(&none).unwrap();
        fs::write(&sock, b"").unwrap();
        tpm2.check_supported(&none).unwrap();
        assert_eq!(auto.resolved_mode(&none), ShardSealing::HostTpm2);
        assert_eq!(tpm2.resolved_mode(&none), ShardSealing::Tpm2);
    }

    #[test]
    fn persist_then_load_and_every_failure_keeps_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SEALED_SHARD_FILE);
        let file = SealedShardFile::new(path.clone(), "1", key(1));
        assert!(matches!(file.load(), LoadOutcome::Absent));
        file.persist(&ShardValue::new([5; 32])).unwrap();
        assert!(matches!(file.load(), LoadOutcome::Loaded(s) if s.expose_secret() == &[5; 32]));
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&fs::metadata(&path).unwrap().permissions())
                & 0o777,
            0o600
        );
        // Replaced atomically; no temporary file left behind.
        file.persist(&ShardValue::new([6; 32])).unwrap();
        assert!(matches!(file.load(), LoadOutcome::Loaded(s) if s.expose_secret() == &[6; 32]));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        let before = fs::read(&path).unwrap();

        let replaced = SealedShardFile::new(path.clone(), "1", key(2));
        match replaced.load() {
            LoadOutcome::Unusable(why) => {
                assert!(why.contains("sealing key was replaced"), "{why}");
                assert!(why.contains("spike-keeper-sealing@1"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        let other_keeper = SealedShardFile::new(path.clone(), "2", key(1));
        match other_keeper.load() {
            LoadOutcome::Unusable(why) => assert!(why.contains("altered"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            fs::read(&path).unwrap(),
            before,
            "a failed load changed the file"
        );
    }

    #[test]
    fn persist_never_follows_a_planted_temporary_symlink_and_a_failure_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SEALED_SHARD_FILE);
        let file = SealedShardFile::new(path.clone(), "1", key(1));
        file.persist(&ShardValue::new([5; 32])).unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"keep").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join(".shard.sealed.tmp")).unwrap();
        file.persist(&ShardValue::new([6; 32])).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        assert!(matches!(file.load(), LoadOutcome::Loaded(s) if s.expose_secret() == &[6; 32]));

        let gone = SealedShardFile::new(dir.path().join("missing/shard.sealed"), "1", key(1));
        assert!(gone.persist(&ShardValue::new([7; 32])).is_err());
    }

    #[test]
    fn what_is_at_the_path_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SEALED_SHARD_FILE);
        let file = SealedShardFile::new(path.clone(), "1", key(1));
        // A symlink to a real sealed file is not followed.
        let real = dir.path().join("elsewhere");
        SealedShardFile::new(real.clone(), "1", key(1))
            .persist(&ShardValue::new([5; 32]))
            .unwrap();
        std::os::unix::fs::symlink(&real, &path).unwrap();
        assert!(matches!(file.load(), LoadOutcome::Unusable(why) if why.contains("cannot read")));
        // A FIFO does not block the start; a device or a huge file is never read whole.
        fs::remove_file(&path).unwrap();
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(
            matches!(file.load(), LoadOutcome::Unusable(why) if why.contains("not a regular file"))
        );
        fs::remove_file(&path).unwrap();
        fs::write(&path, vec![0u8; 1 << 20]).unwrap();
        assert_eq!(
            read_sealed_file(&path).unwrap().unwrap().len(),
            shard_seal::SEALED_SHARD_SIZE + 1
        );
        assert!(matches!(file.load(), LoadOutcome::Unusable(_)));
    }

    #[test]
    fn credentials_are_required_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let env = MapEnv::new();
        let err =
            SealedShardFile::from_credentials(ShardSealing::Host, Some(dir.path()), "1", &env)
                .unwrap_err()
                .to_string();
        assert!(
            err.contains("LoadCredentialEncrypted=shard-sealing-key"),
            "{err}"
        );
        let err = SealedShardFile::from_credentials(ShardSealing::Host, None, "1", &env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("StateDirectory="), "{err}");
        let creds = tempfile::tempdir().unwrap();
        let env = MapEnv::new().with("CREDENTIALS_DIRECTORY", creds.path().to_str().unwrap());
        fs::write(creds.path().join(CREDENTIAL_NAME), [1u8; 31]).unwrap();
        let err =
            SealedShardFile::from_credentials(ShardSealing::Host, Some(dir.path()), "1", &env)
                .unwrap_err()
                .to_string();
        assert!(err.contains("31 bytes"), "{err}");
        fs::write(creds.path().join(CREDENTIAL_NAME), [1u8; 32]).unwrap();
        let file =
            SealedShardFile::from_credentials(ShardSealing::Host, Some(dir.path()), "1", &env)
                .unwrap();
        assert_eq!(file.path(), dir.path().join(SEALED_SHARD_FILE));
        assert!(!format!("{file:?}").contains("0101"));
    }
}
