//! Argument, usage and validation errors: exit codes and stream discipline, in-process.

use spike_pilot::{EXIT_CONNECTION, EXIT_FAILURE, EXIT_OK, EXIT_USAGE};

use crate::support::{hermetic_env, run_in_process, run_with};

#[test]
fn clap_usage_errors_exit_2_on_stderr() {
    for args in [
        &[][..],
        &["secret"],
        &["secret", "put", "a/b"],
        &["secret", "get"],
        &["secret", "get", "a", "--bogus"],
        &["secret", "get", "a", "-v", "x"],
        &[
            "policy",
            "list",
            "--path-pattern",
            "a",
            "--spiffeid-pattern",
            "b",
        ],
        &["policy", "get", "web", "--name", "web"],
        &["policy", "apply", "--file", "p.yaml", "--name", "x"],
        &["cipher", "encrypt", "--plaintext", "aGk=", "-f", "in"],
        &["cipher", "decrypt", "--version", "256"],
        &["completions", "tcsh"],
        &["frobnicate"],
    ] {
        let out = run_in_process(args, b"");
        assert_eq!(out.code, EXIT_USAGE, "{args:?}: {}", out.stderr);
        assert!(out.stdout.is_empty(), "{args:?} wrote to stdout");
        assert!(!out.stderr.is_empty(), "{args:?} printed no error");
    }
}

#[test]
fn help_and_version_go_to_stdout() {
    let out = run_in_process(&["--help"], b"");
    assert_eq!(out.code, EXIT_OK);
    let help = out.stdout_text();
    assert!(help.contains("Exit status:"), "{help}");
    assert!(
        help.contains("3  SPIKE Nexus or the SPIFFE Workload API"),
        "{help}"
    );
    assert!(out.stderr.is_empty());

    let out = run_in_process(&["--version"], b"");
    assert_eq!(out.code, EXIT_OK);
    assert_eq!(
        out.stdout_text(),
        format!("spike {}\n", env!("CARGO_PKG_VERSION"))
    );

    let out = run_in_process(&["secret", "get", "--help"], b"");
    assert_eq!(out.code, EXIT_OK);
    assert!(out.stdout_text().contains("--format"));
}

#[test]
fn flag_defaults_and_aliases() {
    // `-o json` is an alias of `--format json`; bad values get SPIKE's message and exit 2.
    let out = run_in_process(&["secret", "list", "-o", "xml"], b"");
    assert_eq!(out.code, EXIT_USAGE);
    assert_eq!(
        out.stderr,
        "Error: invalid format 'xml'. Valid formats are: human/h/plain/p, json/j, yaml/y\n"
    );
    assert!(out.stdout.is_empty());
    for args in [
        &["secret", "get", "a/b", "-f", "table"][..],
        &["secret", "metadata", "get", "a/b", "--format", "csv"],
        &["policy", "list", "-f", "x"],
        &["policy", "get", "web", "-o", "x"],
        &["status", "-f", "x"],
    ] {
        let out = run_in_process(args, b"");
        assert_eq!(out.code, EXIT_USAGE, "{args:?}");
        assert!(out.stderr.starts_with("Error: invalid format"), "{args:?}");
    }
}

#[test]
fn validation_errors_exit_1_before_connecting() {
    let cases: [(&[&str], &str); 7] = [
        (
            &["secret", "delete", "a/b", "-v", "1,x"],
            "Error: Invalid version number: x\n",
        ),
        (
            &["secret", "undelete", "a/b", "--versions", "-3"],
            "Error: Negative version number: -3\n",
        ),
        (
            &["secret", "put", "bad path", "k=v"],
            "Error: Invalid secret path: bad path\n",
        ),
        (
            &["secret", "get", "bad path"],
            "Error: Invalid secret path: bad path\n",
        ),
        (
            &["secret", "put", "a/b", "novalue"],
            "Error: Invalid key-value pair: novalue\nError: Nothing was written.\n",
        ),
        (
            &[
                "policy",
                "create",
                "--name",
                "web",
                "--path-pattern",
                "^a$",
                "--spiffeid-pattern",
                "^spiffe://spike.test/a$",
                "--permissions",
                "read,admin",
            ],
            "Error: Invalid permission 'admin'. Valid permissions are: read, write, list, \
             execute, super\n",
        ),
        (
            &[
                "cipher",
                "decrypt",
                "--nonce",
                "not base64!",
                "--ciphertext",
                "aGk=",
            ],
            "Error: --nonce is not valid base64 (standard alphabet with padding).\n",
        ),
    ];
    for (args, want) in cases {
        let out = run_in_process(args, b"");
        assert_eq!(out.stderr, want, "{args:?}");
        assert_eq!(out.code, EXIT_FAILURE, "{args:?}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn missing_policy_flags_are_listed() {
    let out = run_in_process(&["policy", "create", "--name", "web"], b"");
    assert_eq!(out.code, EXIT_USAGE);
    assert_eq!(
        out.stderr,
        "Error: all policy flags are required; missing: --path-pattern, --spiffeid-pattern, \
         --permissions\n"
    );
    let out = run_in_process(&["policy", "delete"], b"");
    assert_eq!(out.code, EXIT_USAGE);
    assert!(out.stderr.contains("policy name is required"));
    let out = run_in_process(&["cipher", "decrypt", "--nonce", "aGk="], b"");
    assert_eq!(out.code, EXIT_USAGE);
    assert!(out.stderr.contains("--ciphertext"));
}

#[test]
fn restore_rejects_bad_shards_before_connecting() {
    let hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    for (input, want) in [
        (format!("spike:abc:{hex}\n"), "Invalid shard ID"),
        (format!("spike:1:{}\n", &hex[..10]), "exactly 64 hex"),
        (format!("spike:1:{}xx", &hex[..62]), "not valid hex"),
        ("garbage".to_owned(), "Invalid shard format"),
    ] {
        let out = run_in_process(&["operator", "restore"], input.as_bytes());
        assert_eq!(out.code, EXIT_FAILURE, "{input}: {}", out.stderr);
        assert!(out.stderr.contains(want), "{input}: {}", out.stderr);
        assert!(out.stdout.is_empty());
    }
    // A good shard passes parsing and then needs an identity: exit 3 naming the socket.
    let out = run_in_process(
        &["operator", "restore"],
        format!("spike:1:{hex}\n").as_bytes(),
    );
    assert_eq!(out.code, EXIT_CONNECTION, "{}", out.stderr);
    assert!(out.stderr.contains("No SPIFFE identity"), "{}", out.stderr);
    assert!(!out.stderr.contains(hex), "the shard must not be echoed");
}

#[test]
fn missing_workload_api_fails_fast_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let env = hermetic_env(dir.path());
    let out = run_with(&["secret", "list"], b"", &env);
    assert_eq!(out.code, EXIT_CONNECTION);
    assert!(
        out.stderr.starts_with(&format!(
            "No SPIFFE identity: the Workload API at unix:{}/no-agent.sock does not exist",
            dir.path().display()
        )),
        "{}",
        out.stderr
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn configuration_errors_exit_2() {
    let out = run_in_process(
        &["--config", "/nonexistent/pilot.toml", "secret", "list"],
        b"",
    );
    assert_eq!(out.code, EXIT_USAGE);
    assert!(
        out.stderr.contains("/nonexistent/pilot.toml"),
        "{}",
        out.stderr
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pilot.toml");
    std::fs::write(&file, "timeout = \"soon\"\n").unwrap();
    let out = run_in_process(&["--config", file.to_str().unwrap(), "secret", "list"], b"");
    assert_eq!(out.code, EXIT_USAGE);
    assert!(out.stderr.contains("timeout"), "{}", out.stderr);

    let mut env = hermetic_env(dir.path());
    env.insert("SPIKE_NEXUS_API_URL", "http://nexus:8553");
    let out = run_with(&["secret", "list"], b"", &env);
    assert_eq!(out.code, EXIT_USAGE);
    assert!(out.stderr.contains("SPIKE_NEXUS_API_URL"), "{}", out.stderr);
}

#[test]
fn completions_and_man_page() {
    for (shell, marker) in [
        ("bash", "_spike()"),
        ("zsh", "#compdef spike"),
        ("fish", "complete -c spike"),
    ] {
        let out = run_in_process(&["completions", shell], b"");
        assert_eq!(out.code, EXIT_OK, "{shell}");
        assert!(out.stdout_text().contains(marker), "{shell}");
        assert!(out.stdout_text().contains("secret"), "{shell}");
    }
    let out = run_in_process(&["man"], b"");
    assert_eq!(out.code, EXIT_OK);
    let man = out.stdout_text();
    assert!(man.contains(".TH spike"), "{man}");
    assert!(man.contains("Exit status"), "{man}");
}

#[test]
fn bad_nexus_url_lists_are_usage_errors_naming_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let env = hermetic_env(dir.path());
    for (list, want) in [
        (
            "https://a:1,,https://b:2",
            "entry 2 of the comma-separated list is empty",
        ),
        (
            "https://a:1, ",
            "entry 2 of the comma-separated list is empty",
        ),
        (
            "https://a:1, https://A:1",
            "entry 2 (\"https://A:1\") repeats entry 1",
        ),
        ("https://a:1,http://b:2", "the scheme must be https"),
    ] {
        let out = run_with(&["--nexus-url", list, "secret", "list"], b"", &env);
        assert_eq!(out.code, EXIT_USAGE, "{list}: {}", out.stderr);
        assert!(out.stdout.is_empty());
        assert!(
            out.stderr.contains(&format!("{list:?}"))
                && out.stderr.contains("--nexus-url")
                && out.stderr.contains(want),
            "{list}: {}",
            out.stderr
        );
        // The same through the environment.
        let mut with = env.clone();
        with.insert("SPIKE_NEXUS_API_URL", list);
        let out = run_with(&["secret", "list"], b"", &with);
        assert_eq!(out.code, EXIT_USAGE, "{list}: {}", out.stderr);
        assert!(
            out.stderr.contains("SPIKE_NEXUS_API_URL") && out.stderr.contains(want),
            "{}",
            out.stderr
        );
    }
    let many: Vec<String> = (0..17).map(|i| format!("https://n{i}:8553")).collect();
    let out = run_with(&["--nexus-url", &many.join(","), "status"], b"", &env);
    assert_eq!(out.code, EXIT_USAGE, "{}", out.stderr);
    assert!(out.stderr.contains("at most 16"), "{}", out.stderr);
}

#[test]
fn restore_refuses_several_urls_before_reading_a_shard() {
    let dir = tempfile::tempdir().unwrap();
    let env = hermetic_env(dir.path());
    let out = run_with(
        &[
            "--nexus-url",
            "https://a:1,https://b:2",
            "operator",
            "restore",
        ],
        b"spike:1:00",
        &env,
    );
    assert_eq!(out.code, EXIT_USAGE, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("2 URLs are configured (https://a:1, https://b:2)")
            && out.stderr.contains("--nexus-url"),
        "{}",
        out.stderr
    );
}
