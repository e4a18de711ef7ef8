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
        .env("SPIKE_NEXUS_BACKEND_STORE", "mysql")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("mysql"));

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

#[test]
fn check_config_warns_about_threshold_one_and_role_only_keepers() {
    let out = nexus()
        .arg("check-config")
        .env(
            "SPIKE_NEXUS_KEEPER_PEERS",
            "https://k1:8443,https://k2:8443,https://k3:8443",
        )
        .env("SPIKE_NEXUS_SHAMIR_THRESHOLD", "1")
        .env("SPIKE_NEXUS_KEEPER_IDENTITY", "role")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: shamir_threshold = 1") && stderr.contains("by role alone"),
        "{stderr}"
    );
}

#[test]
fn check_config_checks_the_postgres_credential_when_it_is_at_hand() {
    let dir = tempfile::tempdir().unwrap();
    let postgres = || {
        let mut cmd = nexus();
        cmd.arg("check-config")
            .env("SPIKE_NEXUS_BACKEND_STORE", "postgres")
            .env(
                "SPIKE_NEXUS_KEEPER_PEERS",
                "https://k1:8443,https://k2:8443,https://k3:8443",
            );
        cmd
    };
    // No credential at hand (a build sandbox): nothing more to check.
    let out = postgres().output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Under the unit: the credential is read and its rules checked, without connecting.
    let cred = dir.path().join("nexus-db");
    std::fs::write(&cred, "host=db.example password=hunter2 sslmode=disable").unwrap();
    let out = postgres()
        .env("CREDENTIALS_DIRECTORY", dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("sslmode=require"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
    std::fs::write(&cred, "host=/run/postgresql dbname=spike user=spike-nexus").unwrap();
    let out = postgres()
        .env("CREDENTIALS_DIRECTORY", dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_file(&cred).unwrap();
    let out = postgres()
        .env("CREDENTIALS_DIRECTORY", dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("LoadCredential=nexus-db:FILE"), "{stderr}");
}
