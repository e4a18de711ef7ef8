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

#[test]
fn check_config_prints_deprecated_keys_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old.toml");
    std::fs::write(
        &old,
        "max_body_bytes = 4096\nshutdown_grace_period = \"2s\"\n",
    )
    .unwrap();
    let out = keeper()
        .args(["check-config", "--config"])
        .arg(&old)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("`max_body_bytes`") && stderr.contains("`request_body_limit`"),
        "{stderr}"
    );
    assert!(stderr.contains("`shutdown_grace`"), "{stderr}");

    let both = dir.path().join("both.toml");
    std::fs::write(&both, "max_body_bytes = 4096\nrequest_body_limit = 4096\n").unwrap();
    let out = keeper()
        .args(["check-config", "--config"])
        .arg(&both)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`max_body_bytes`") && stderr.contains("`request_body_limit`"),
        "{stderr}"
    );
}
