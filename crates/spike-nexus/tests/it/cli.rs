//! The `spike-nexus` binary: `--version`, `check-config`, config errors exit 64.

use std::process::Command;

fn nexus() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_spike-nexus"));
    cmd.env_clear();
    cmd
}

#[test]
fn version_prints_version_and_build() {
    let out = nexus().arg("--version").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(&format!(
            "spike-nexus {} (build ",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
}

#[test]
fn check_config_accepts_valid_and_rejects_invalid() {
    let out = nexus()
        .arg("check-config")
        .env("SPIKE_NEXUS_BACKEND_STORE", "memory")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = nexus()
        .arg("check-config")
        .env("SPIKE_NEXUS_BACKEND_STORE", "postgres")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("postgres"));

    // sqlite (the default) without keepers is a config error, as is a missing file
    let out = nexus().arg("check-config").output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SPIKE_NEXUS_KEEPER_PEERS"));
    let out = nexus()
        .args(["--config", "/nonexistent/nexus.toml", "check-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}
