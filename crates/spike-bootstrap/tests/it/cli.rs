//! The binary: exit codes of offline paths.

use std::process::Command;

fn bootstrap() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_spike-bootstrap"));
    cmd.env_clear();
    cmd
}

fn with_peers(cmd: &mut Command, peers: &str, shares: &str, threshold: &str) {
    cmd.env("SPIKE_NEXUS_KEEPER_PEERS", peers)
        .env("SPIKE_NEXUS_SHAMIR_SHARES", shares)
        .env("SPIKE_NEXUS_SHAMIR_THRESHOLD", threshold);
}

#[test]
fn exit_codes_and_messages() {
    let out = bootstrap().arg("--version").output().unwrap();
    assert!(out.status.success());

    let three = "https://a:1,https://b:1,https://c:1";
    let mut cmd = bootstrap();
    cmd.arg("check-config");
    with_peers(&mut cmd, three, "3", "2");
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("3 keepers"));

    let mut cmd = bootstrap();
    cmd.arg("check-config");
    with_peers(&mut cmd, three, "4", "2");
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SPIKE_NEXUS_SHAMIR_SHARES"));

    let mut cmd = bootstrap();
    cmd.arg("-init");
    with_peers(&mut cmd, three, "3", "9");
    let out = cmd.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(4),
        "-init is accepted; the threshold is not"
    );

    // A present marker: exit 0 with the marker path, no network needed.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bootstrap.done"), "x").unwrap();
    let mut cmd = bootstrap();
    cmd.arg("-init").env("STATE_DIRECTORY", dir.path());
    with_peers(&mut cmd, three, "3", "2");
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("already bootstrapped (marker"), "{stdout}");
    assert!(stdout.contains("bootstrap.done"), "{stdout}");
}
