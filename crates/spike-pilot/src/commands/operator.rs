//! `spike operator recover|restore` (docs/protocol.md#root-key-shards-and-recovery-files).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use spike_crypto::shard_text;
use spike_crypto::{Shard, ShardId, ShardTextError, ShardValue};
use spike_proto::ShardBytes;
use spike_proto::operator::RestoreResponse;
use zeroize::{Zeroize as _, Zeroizing};

use super::{say, tell, write_stdout};
use crate::Io;
use crate::cli::OperatorCmd;
use crate::config::EnvSource;
use crate::errors::{PilotError, is_connection_failure, is_sealed};
use crate::session::Session;

/// `SPIKE_PILOT_RECOVERY_DIR`.
pub const ENV_RECOVERY_DIR: &str = "SPIKE_PILOT_RECOVERY_DIR";
/// Most bytes read from non-terminal standard input by `restore`.
pub const MAX_SHARD_INPUT: u64 = 4096;
/// Where SPIKE documents recovery.
pub const DOCS_URL: &str = "https://spike.ist/operations/recovery/";

/// Runs one operator command.
///
/// # Errors
/// Local file errors, bad shard input, API errors.
pub async fn run(
    cmd: OperatorCmd,
    session: &mut Session,
    io: &mut Io<'_>,
    env: &dyn EnvSource,
) -> Result<(), PilotError> {
    match cmd {
        OperatorCmd::Recover => {
            let dir = recovery_dir(env)?;
            prepare_dir(&dir, env.non_empty(ENV_RECOVERY_DIR).is_some())?;
            // Recovering stores nothing: any unsealed instance gives the same shards.
            let shards = session
                .read(|nexus| async move { nexus.recover().await })
                .await
                .map_err(|e| match e {
                    PilotError::Api { ref source, .. }
                        if !(is_connection_failure(source) || is_sealed(source)) =>
                    {
                        PilotError::failed(format!(
                            "Error: Failed to retrieve recovery shards.\n{}",
                            e.message()
                        ))
                    }
                    e => e,
                })?;
            let written = write_recovery_files(&dir, &shards)?;
            say(io, &recover_guidance(&dir, written.len()))
        }
        OperatorCmd::Restore => {
            // The shards collect in one instance's memory: never spread them over several.
            session.require_single_url("spike operator restore")?;
            let input = read_shard_input(io)?;
            let shard = parse_restore_input(&input)?;
            drop(input);
            let shard = &shard;
            let status = session
                .write(|nexus| async move {
                    nexus
                        .restore(
                            i64::from(shard.id()),
                            ShardBytes::new(*shard.expose_secret()),
                        )
                        .await
                })
                .await
                .map_err(|e| match e {
                    PilotError::Api { ref source, .. } if !is_connection_failure(source) => {
                        PilotError::failed(format!(
                            "Error: Failed to communicate with SPIKE Nexus.\n{}",
                            e.message()
                        ))
                    }
                    e => e,
                })?;
            write_stdout(io, restore_message(&status).as_bytes())
        }
    }
}

/// The recovery directory: `$SPIKE_PILOT_RECOVERY_DIR/recover`, else `~/.spike/recover`,
/// else `/tmp/.spike-$USER/recover` (docs/config.md). Paths with `..` are refused.
///
/// # Errors
/// A failure naming the variable when the directory is not acceptable.
pub fn recovery_dir(env: &dyn EnvSource) -> Result<PathBuf, PilotError> {
    let base = if let Some(dir) = env.non_empty(ENV_RECOVERY_DIR) {
        let dir = PathBuf::from(dir.trim());
        if !dir.is_absolute() || dir.components().any(|c| c == Component::ParentDir) {
            return Err(PilotError::failed(format!(
                "Error: {ENV_RECOVERY_DIR} must be an absolute path without '..' (got {})",
                dir.display()
            )));
        }
        dir
    } else if let Some(home) = env.non_empty("HOME") {
        PathBuf::from(home).join(".spike")
    } else {
        let user = env.non_empty("USER").unwrap_or_else(|| "spike".to_owned());
        PathBuf::from(format!("/tmp/.spike-{user}"))
    };
    Ok(base.join("recover"))
}

/// Creates the recovery directory `dir` (mode 0700) and its parent when they
/// are missing, and refuses them when they exist but are not private: a
/// symlink, not a directory, not owned by the current user, or (for `dir`,
/// and for a parent Pilot itself chose: `~/.spike`, `/tmp/.spike-$USER`)
/// accessible by group or others; a parent named by
/// `SPIKE_PILOT_RECOVERY_DIR` must not be writable by group or others.
/// Each directory is created with one `mkdir(2)` at mode 0700, so it is
/// never briefly open to others; one that already exists is checked with
/// `lstat(2)`, without following a symlink.
fn prepare_dir(dir: &Path, parent_is_operator_chosen: bool) -> Result<(), PilotError> {
    let euid = nix::unistd::geteuid().as_raw();
    if let Some(parent) = dir.parent() {
        if let Some(grandparent) = parent.parent() {
            // Above the directories Pilot owns (e.g. $HOME): create when
            // missing, as before, but do not judge.
            if !grandparent.exists() {
                create_dir(grandparent, true)?;
            }
        }
        let parent_rule = if parent_is_operator_chosen {
            DirRule::NotWritableByOthers
        } else {
            DirRule::Private
        };
        create_dir(parent, false)?;
        check_dir(parent, euid, parent_rule)?;
    }
    create_dir(dir, false)?;
    check_dir(dir, euid, DirRule::Private)
}

/// How strict [`check_dir`] is about the mode.
#[derive(Clone, Copy, PartialEq, Eq)]
enum DirRule {
    /// No access at all for group and others.
    Private,
    /// No write access for group and others.
    NotWritableByOthers,
}

fn create_dir(dir: &Path, recursive: bool) -> Result<(), PilotError> {
    use std::os::unix::fs::DirBuilderExt as _;
    match std::fs::DirBuilder::new()
        .recursive(recursive)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(PilotError::io(
            format!("create the recovery directory {}", dir.display()),
            e,
        )),
    }
}

fn check_dir(dir: &Path, euid: u32, rule: DirRule) -> Result<(), PilotError> {
    use std::os::unix::fs::MetadataExt as _;
    let refuse = |why: &str, fix: &str| {
        PilotError::failed(format!(
            "Error: refusing to use {} for recovery shards: {why}. {fix} \
             (or set {ENV_RECOVERY_DIR} to a private directory).",
            dir.display()
        ))
    };
    let meta = std::fs::symlink_metadata(dir).map_err(|e| {
        PilotError::io(
            format!("inspect the recovery directory {}", dir.display()),
            e,
        )
    })?;
    if meta.file_type().is_symlink() {
        return Err(refuse("it is a symbolic link", "Remove the link"));
    }
    if !meta.is_dir() {
        return Err(refuse("it is not a directory", "Remove it"));
    }
    if meta.uid() != euid {
        return Err(refuse(
            &format!("it is owned by uid {}, not by you (uid {euid})", meta.uid()),
            "Remove it",
        ));
    }
    let mode = meta.mode() & 0o777;
    let (mask, fix) = match rule {
        DirRule::Private => (0o077, format!("Run `chmod 700 {}`", dir.display())),
        DirRule::NotWritableByOthers => (0o022, format!("Run `chmod go-w {}`", dir.display())),
    };
    if mode & mask != 0 {
        return Err(refuse(
            &format!("its mode {mode:03o} lets group or others in"),
            &fix,
        ));
    }
    Ok(())
}

/// Writes one `spike.recovery.<id>.txt` per shard (mode 0600, content
/// `spike:<id>:<64 lowercase hex>` without newline) after deleting old recovery files.
///
/// # Errors
/// An all-zero shard, an id outside `1..=65535`, or a file error; nothing is deleted or
/// written when the shards are invalid.
pub fn write_recovery_files(
    dir: &Path,
    shards: &BTreeMap<i64, ShardBytes>,
) -> Result<Vec<PathBuf>, PilotError> {
    if shards.is_empty() {
        return Err(PilotError::failed(
            "Error: Failed to retrieve recovery shards: SPIKE Nexus returned none.",
        ));
    }
    let mut parsed = Vec::with_capacity(shards.len());
    for (id, bytes) in shards {
        let id = ShardId::try_from(*id)
            .ok()
            .filter(|id| *id > 0)
            .ok_or_else(|| {
                PilotError::failed(format!(
                    "Error: SPIKE Nexus returned an invalid shard id {id}."
                ))
            })?;
        if bytes.is_zero() {
            return Err(PilotError::failed(format!(
                "Error: SPIKE Nexus returned an empty shard (id {id})."
            )));
        }
        parsed.push(Shard::new(id, ShardValue::new(*bytes.as_bytes())));
    }
    remove_old_files(dir)?;
    let mut written = Vec::with_capacity(parsed.len());
    for shard in &parsed {
        let path = dir.join(format!("spike.recovery.{}.txt", shard.id()));
        let text = shard_text::format(shard);
        write_private(&path, text.as_bytes())?;
        written.push(path);
    }
    Ok(written)
}

fn remove_old_files(dir: &Path) -> Result<(), PilotError> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| PilotError::io(format!("list {}", dir.display()), e))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("spike.recovery") && name.ends_with(".txt") {
            std::fs::remove_file(entry.path())
                .map_err(|e| PilotError::io(format!("remove {}", entry.path().display()), e))?;
        }
    }
    Ok(())
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), PilotError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(data).and_then(|()| f.sync_all()))
        .map_err(|e| PilotError::io(format!("write {}", path.display()), e))
}

fn recover_guidance(dir: &Path, count: usize) -> String {
    format!(
        "SPIKE recovery shards saved to {} ({count} files, spike.recovery.<id>.txt).\n\
         \n\
         Please make sure that:\n\
         \x20 1. You encrypt these files and store them safely, offline.\n\
         \x20 2. You keep the shards apart (for example with different custodians).\n\
         \x20 3. You securely erase the plaintext files once they are safe.\n\
         \n\
         Any threshold of these shards restores SPIKE Nexus with `spike operator restore`.\n\
         See {DOCS_URL}",
        dir.display()
    )
}

/// The output of one restore step.
pub fn restore_message(status: &RestoreResponse) -> String {
    if status.restored {
        format!("SPIKE is now restored and ready to use.\nSee {DOCS_URL} for next steps.\n")
    } else {
        format!(
            "Shards collected:  {}\nShards remaining:  {}\nPlease run `spike operator restore` \
             again to provide the remaining shards.\n",
            status.collected, status.remaining
        )
    }
}

/// Reads one shard: hidden input on a terminal, else at most 4096 bytes of standard input.
///
/// # Errors
/// Read failures.
pub fn read_shard_input(io: &mut Io<'_>) -> Result<Zeroizing<String>, PilotError> {
    let mut buf = Zeroizing::new(Vec::with_capacity(256));
    if io.stdin_is_terminal {
        tell(
            io,
            "(your input will be hidden as you paste/type it)\nEnter recovery shard: ",
        );
        let guard = EchoOff::new();
        let mut byte = [0u8; 1];
        while (buf.len() as u64) < MAX_SHARD_INPUT {
            match io.stdin.read(&mut byte) {
                Ok(0) => break,
                Ok(_) if byte[0] == b'\n' => break,
                Ok(_) => buf.push(byte[0]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(PilotError::io("read the recovery shard", e)),
            }
        }
        byte.zeroize();
        drop(guard);
        tell(io, "\n");
    } else {
        io.stdin
            .take(MAX_SHARD_INPUT)
            .read_to_end(&mut buf)
            .map_err(|e| PilotError::io("read the recovery shard from standard input", e))?;
    }
    let text = std::str::from_utf8(&buf)
        .map_err(|_| PilotError::failed("Error: The recovery shard is not valid text."))?;
    Ok(Zeroizing::new(text.trim().to_owned()))
}

/// Parses `spike:<id>:<64 hex>` (whitespace around it is ignored).
///
/// # Errors
/// A message saying which part is wrong (never echoing the secret).
pub fn parse_restore_input(input: &str) -> Result<Shard, PilotError> {
    shard_text::parse(input).map_err(|e| {
        let msg = match e {
            ShardTextError::MissingParts => {
                "Error: Invalid shard format. Expected spike:<id>:<64 hex characters>."
            }
            ShardTextError::InvalidId => "Error: Invalid shard ID: expected a positive integer.",
            ShardTextError::InvalidValueLength { .. } => {
                "Error: Invalid shard: the value must be exactly 64 hex characters."
            }
            ShardTextError::InvalidHex => "Error: Invalid shard: the value is not valid hex.",
            _ => "Error: Invalid shard.",
        };
        PilotError::failed(msg)
    })
}

/// Turns terminal echo off on standard input until dropped.
struct EchoOff {
    saved: Option<nix::sys::termios::Termios>,
}

impl EchoOff {
    fn new() -> Self {
        use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let Ok(saved) = tcgetattr(&stdin) else {
            return Self { saved: None };
        };
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        quiet.local_flags.insert(LocalFlags::ECHONL);
        if tcsetattr(&stdin, SetArg::TCSANOW, &quiet).is_err() {
            return Self { saved: None };
        }
        Self { saved: Some(saved) }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(saved) = self.saved.take() {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                &saved,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;
    use crate::config::MapEnv;

    const HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    fn shard_bytes(fill: u8) -> ShardBytes {
        let mut b = [fill; 32];
        b[0] = 0xab;
        ShardBytes::new(b)
    }

    #[test]
    fn recovery_dir_resolution() {
        let env = MapEnv::from_pairs([(ENV_RECOVERY_DIR, "/srv/spike"), ("HOME", "/home/op")]);
        assert_eq!(
            recovery_dir(&env).unwrap(),
            PathBuf::from("/srv/spike/recover")
        );
        let env = MapEnv::from_pairs([("HOME", "/home/op")]);
        assert_eq!(
            recovery_dir(&env).unwrap(),
            PathBuf::from("/home/op/.spike/recover")
        );
        let env = MapEnv::from_pairs([("USER", "ops")]);
        assert_eq!(
            recovery_dir(&env).unwrap(),
            PathBuf::from("/tmp/.spike-ops/recover")
        );
        let env = MapEnv::default();
        assert_eq!(
            recovery_dir(&env).unwrap(),
            PathBuf::from("/tmp/.spike-spike/recover")
        );
        for bad in ["relative/dir", "/srv/../etc"] {
            let env = MapEnv::from_pairs([(ENV_RECOVERY_DIR, bad)]);
            assert!(recovery_dir(&env).is_err(), "{bad}");
        }
    }

    /// Issue 12 L6: a pre-existing recovery directory (or Pilot's own parent,
    /// e.g. `/tmp/.spike-$USER`) that is a symlink, not private, or not ours
    /// is refused with its name and the fix; missing ones are created 0700.
    #[test]
    fn recovery_dir_must_be_private_and_ours() {
        let root = tempfile::tempdir().unwrap();
        let mode_of = |p: &Path| std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777;

        // Fallback layout (/tmp/.spike-$USER/recover): both created 0700.
        let base = root.path().join(".spike-ops");
        let rec = base.join("recover");
        prepare_dir(&rec, false).unwrap();
        assert_eq!((mode_of(&base), mode_of(&rec)), (0o700, 0o700));
        prepare_dir(&rec, false).unwrap();

        // A group-readable recovery directory.
        std::fs::set_permissions(&rec, std::fs::Permissions::from_mode(0o750)).unwrap();
        let err = prepare_dir(&rec, false).unwrap_err().message();
        assert!(err.contains(&rec.display().to_string()), "{err}");
        assert!(err.contains("chmod 700"), "{err}");
        std::fs::set_permissions(&rec, std::fs::Permissions::from_mode(0o700)).unwrap();

        // A world-accessible parent chosen by Pilot (someone else's /tmp/.spike-$USER).
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = prepare_dir(&rec, false).unwrap_err().message();
        assert!(err.contains(&base.display().to_string()), "{err}");
        // The operator's own SPIKE_PILOT_RECOVERY_DIR may be readable, not writable.
        prepare_dir(&rec, true).unwrap();
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(prepare_dir(&rec, true).is_err());
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o700)).unwrap();

        // A symlink planted where the directory goes.
        let target = root.path().join("elsewhere");
        std::fs::create_dir(&target).unwrap();
        let linked = root.path().join(".spike-link");
        std::os::unix::fs::symlink(&target, &linked).unwrap();
        let err = prepare_dir(&linked.join("recover"), false)
            .unwrap_err()
            .message();
        assert!(err.contains("symbolic link"), "{err}");
        assert!(!target.join("recover").exists());

        // A file where the directory goes.
        let file_base = root.path().join(".spike-file");
        std::fs::create_dir(&file_base).unwrap();
        std::fs::set_permissions(&file_base, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::write(file_base.join("recover"), "x").unwrap();
        let err = prepare_dir(&file_base.join("recover"), false)
            .unwrap_err()
            .message();
        assert!(err.contains("not a directory"), "{err}");

        // Owned by someone else (needs root to set up).
        if nix::unistd::geteuid().is_root() {
            let theirs = root.path().join(".spike-theirs");
            prepare_dir(&theirs.join("recover"), false).unwrap();
            std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
            let err = prepare_dir(&theirs.join("recover"), false)
                .unwrap_err()
                .message();
            assert!(err.contains("owned by uid 65534"), "{err}");
        }
    }

    #[test]
    fn recovery_files_names_modes_content() {
        let dir = tempfile::tempdir().unwrap();
        let rec = dir.path().join("recover");
        prepare_dir(&rec, true).unwrap();
        let mode = std::fs::metadata(&rec).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::write(rec.join("spike.recovery.9.txt"), "old").unwrap();
        std::fs::write(rec.join("keep.txt"), "keep").unwrap();

        let mut shards = BTreeMap::new();
        shards.insert(1, shard_bytes(0x01));
        shards.insert(2, shard_bytes(0xfe));
        shards.insert(3, ShardBytes::new(hex_bytes(HEX)));
        let written = write_recovery_files(&rec, &shards).unwrap();
        assert_eq!(written.len(), 3);
        assert!(!rec.join("spike.recovery.9.txt").exists());
        assert!(rec.join("keep.txt").exists());
        for id in 1..=3 {
            let path = rec.join(format!("spike.recovery.{id}.txt"));
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", path.display());
            let content = std::fs::read_to_string(&path).unwrap();
            assert!(content.starts_with(&format!("spike:{id}:")), "{content}");
            assert!(!content.ends_with('\n'));
            assert_eq!(content.len(), format!("spike:{id}:").len() + 64);
        }
        assert_eq!(
            std::fs::read_to_string(rec.join("spike.recovery.3.txt")).unwrap(),
            format!("spike:3:{HEX}")
        );
        assert_eq!(
            std::fs::read_to_string(rec.join("spike.recovery.1.txt")).unwrap(),
            format!("spike:1:ab{}", "01".repeat(31))
        );
        // Files round-trip through the restore parser.
        let shard = parse_restore_input(
            &std::fs::read_to_string(rec.join("spike.recovery.3.txt")).unwrap(),
        )
        .unwrap();
        assert_eq!(shard.id(), 3);
        assert_eq!(hex::encode(shard.expose_secret()), HEX);

        // Rewriting replaces the files.
        let mut fewer = BTreeMap::new();
        fewer.insert(1, shard_bytes(0x07));
        write_recovery_files(&rec, &fewer).unwrap();
        assert!(!rec.join("spike.recovery.2.txt").exists());
    }

    #[test]
    fn invalid_recovery_shards_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("spike.recovery.1.txt"), "old").unwrap();
        let mut zero = BTreeMap::new();
        zero.insert(1, ShardBytes::new([0; 32]));
        assert!(write_recovery_files(dir.path(), &zero).is_err());
        let mut bad_id = BTreeMap::new();
        bad_id.insert(0, shard_bytes(1));
        assert!(write_recovery_files(dir.path(), &bad_id).is_err());
        assert!(write_recovery_files(dir.path(), &BTreeMap::new()).is_err());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("spike.recovery.1.txt")).unwrap(),
            "old"
        );
    }

    fn hex_bytes(h: &str) -> [u8; 32] {
        let mut b = [0u8; 32];
        hex::decode_to_slice(h, &mut b).unwrap();
        b
    }

    #[test]
    fn restore_input_parsing() {
        let good = parse_restore_input(&format!("  spike:2:{HEX}\n")).unwrap();
        assert_eq!(good.id(), 2);
        let cases = [
            (format!("spike:x:{HEX}"), "Invalid shard ID"),
            (format!("spike:0:{HEX}"), "Invalid shard ID"),
            (format!("spike:1:{}zz", &HEX[..62]), "not valid hex"),
            (format!("spike:1:{}", &HEX[..60]), "exactly 64 hex"),
            ("spike:1".to_owned(), "Invalid shard format"),
            (String::new(), "Invalid shard format"),
        ];
        for (input, want) in cases {
            let err = parse_restore_input(&input).unwrap_err();
            let msg = err.message();
            assert!(msg.contains(want), "{input:?}: {msg}");
            assert!(!msg.contains(&HEX[..60]), "the secret must not be echoed");
            assert_eq!(err.exit_code(), crate::EXIT_FAILURE);
        }
    }

    #[test]
    fn restore_reads_trimmed_bounded_stdin() {
        let text = format!("\n  spike:1:{HEX}  \r\n");
        let mut stdin = text.as_bytes();
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let mut io = Io::new(&mut stdin, &mut stdout, &mut stderr);
        let got = read_shard_input(&mut io).unwrap();
        assert_eq!(got.as_str(), format!("spike:1:{HEX}"));

        let long = vec![b'a'; 10_000];
        let mut stdin = long.as_slice();
        let mut io = Io::new(&mut stdin, &mut stdout, &mut stderr);
        assert_eq!(read_shard_input(&mut io).unwrap().len(), 4096);
        assert!(
            stdout.is_empty() && stderr.is_empty(),
            "no prompt without a TTY"
        );
    }

    #[test]
    fn restore_progress_messages() {
        let partial = RestoreResponse {
            collected: 1,
            remaining: 1,
            restored: false,
            err: None,
        };
        assert_eq!(
            restore_message(&partial),
            "Shards collected:  1\nShards remaining:  1\nPlease run `spike operator restore` \
             again to provide the remaining shards.\n"
        );
        let done = RestoreResponse {
            collected: 2,
            remaining: 0,
            restored: true,
            err: None,
        };
        assert!(restore_message(&done).starts_with("SPIKE is now restored and ready to use.\n"));
    }
}
