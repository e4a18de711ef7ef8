//! The binary's offline commands.

use std::process::Command;

fn keeper() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_spike-keeper"));
    cmd.env_clear();
    cmd
}

#[test]
fn version_and_check_config() {
    let out = keeper().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));

    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "listen = \"127.0.0.1:9443\"\nrequire_mlock = false\n",
    )
    .unwrap();
    let out = keeper()
        .args(["check-config", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("127.0.0.1:9443"));

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "listen = \":1\"\nshard_dir = \"/tmp\"\n").unwrap();
    let out = keeper()
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("shard_dir"));

    let out = keeper()
        .arg("check-config")
        .env("SPIKE_KEEPER_TLS_PORT", "nonsense")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen"));
}
