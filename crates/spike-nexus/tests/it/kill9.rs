//! Durability under SIGKILL: every write the store acknowledged survives.
//!
//! The parent re-runs this test binary as a child writer (selected by an
//! environment variable), reads the paths it acknowledges on stdout, kills it
//! with SIGKILL mid-stream, reopens the database and checks every
//! acknowledged write.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use spike_crypto::RootKey;
use spike_nexus::model::SecretData;
use spike_nexus::store::{SqliteBackend, Store};

const CHILD_ENV: &str = "SPIKE_NEXUS_TEST_KILL9_CHILD_DB";
const ACK: &str = "ACK ";
const ACKS_BEFORE_KILL: usize = 200;

fn key() -> RootKey {
    RootKey::from_bytes(&[0x5a; 32]).unwrap()
}

fn open(db: &Path) -> Store {
    Store::new(Arc::new(SqliteBackend::open(db, &key()).unwrap()), 3).unwrap()
}

fn value_for(i: u64) -> String {
    format!("value-{i}")
}

/// The child writer; does nothing unless started by the parent test.
#[test]
#[ignore = "child process of kill9_acknowledged_writes_survive"]
fn kill9_child_writer() {
    let Some(db) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let store = open(Path::new(&db));
    let mut stdout = std::io::stdout().lock();
    for i in 0..100_000_u64 {
        let path = format!("kill9/{}", i % 40);
        let data: SecretData = [("v".to_owned(), value_for(i))].into_iter().collect();
        store.put_secret(&path, data).unwrap();
        writeln!(stdout, "{ACK}{i}").unwrap();
        stdout.flush().unwrap();
    }
}

#[test]
fn kill9_acknowledged_writes_survive() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("spike.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "kill9::kill9_child_writer",
            "--nocapture",
            "--ignored",
        ])
        .env(CHILD_ENV, &db)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut acked = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(i) = line.strip_prefix(ACK) {
            acked.push(i.parse::<u64>().unwrap());
            if acked.len() == ACKS_BEFORE_KILL {
                break;
            }
        }
    }
    assert_eq!(acked.len(), ACKS_BEFORE_KILL, "child stopped early");
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap());
    kill(pid, Signal::SIGKILL).unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success());

    // The newest acknowledged write of each path must be readable (a later,
    // unacknowledged write may have landed on top of it), and every older
    // acknowledged version within max_versions must still be there.
    let store = open(&db);
    let last = *acked.last().unwrap();
    for &i in &acked {
        let path = format!("kill9/{}", i % 40);
        let secret = store.secret_metadata(&path, 0).unwrap();
        let version = i / 40 + 1;
        if version + 3 > secret.metadata.current_version {
            let v = secret
                .versions
                .get(&version)
                .unwrap_or_else(|| panic!("acknowledged write {i} lost (last ack {last})"));
            assert_eq!(v.data.get("v"), Some(value_for(i).as_str()));
        }
        assert!(secret.metadata.current_version >= version);
    }
}
