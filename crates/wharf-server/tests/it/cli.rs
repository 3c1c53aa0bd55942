//! The command line: help texts and bad input.

use std::time::{Duration, Instant};

use crate::{run_bounded, wharf};

const OPTIONS: [&str; 10] = [
    "--data-dir",
    "--kafka-addr",
    "--kafka-advertised-addr",
    "--kafka-max-request-bytes",
    "--auto-create-topics",
    "--http-addr",
    "--flush",
    "--history-window-ms",
    "--history-max-messages",
    "--config",
];
const ENV_VARS: [&str; 10] = [
    "WHARF_DATA_DIR",
    "WHARF_KAFKA_ADDR",
    "WHARF_KAFKA_ADVERTISED_ADDR",
    "WHARF_KAFKA_MAX_REQUEST_BYTES",
    "WHARF_AUTO_CREATE_TOPICS",
    "WHARF_HTTP_ADDR",
    "WHARF_FLUSH",
    "WHARF_HISTORY_WINDOW_MS",
    "WHARF_HISTORY_MAX_MESSAGES",
    "WHARF_CONFIG",
];
const DEFAULTS: [&str; 4] = ["./wharf-data", "127.0.0.1:9092", "127.0.0.1:8080", "always"];

fn stdout_of(args: &[&str]) -> String {
    let out = run_bounded(wharf().args(args), Duration::from_secs(10));
    assert!(out.status.success(), "wharf {args:?}: {}", out.status);
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn help_explains_every_option_with_its_default_and_env_var() {
    for args in [&["--help"][..], &["serve", "--help"], &["help", "serve"]] {
        let help = stdout_of(args);
        for needle in OPTIONS.iter().chain(&ENV_VARS).chain(&DEFAULTS) {
            assert!(
                help.contains(needle),
                "`wharf {args:?}` lacks {needle}:\n{help}"
            );
        }
    }
    let long = stdout_of(&["serve", "--help"]);
    for needle in [
        "interval:<ms>",
        "never",
        ".lock",
        "SIGTERM",
        "TOML",
        "/health",
    ] {
        assert!(
            long.contains(needle),
            "`wharf serve --help` lacks {needle}:\n{long}"
        );
    }
    assert!(stdout_of(&["--version"]).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn bad_settings_fail_at_once_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let bad_file = dir.path().join("bad.toml");
    std::fs::write(&bad_file, "data_dri = \"typo\"\n").unwrap();
    let bad_value = dir.path().join("bad-value.toml");
    std::fs::write(&bad_value, "kafka_addr = \"localhost\"\n").unwrap();

    /// Extra arguments, extra environment, what the error must mention.
    type Case<'a> = (Vec<String>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec!["--flush".into(), "sometimes".into()],
            vec![],
            "sometimes",
        ),
        (vec![], vec![("WHARF_FLUSH", "interval:0")], "interval:0"),
        (
            vec!["--kafka-max-request-bytes".into(), "4".into()],
            vec![],
            "--kafka-max-request-bytes",
        ),
        (
            vec!["--kafka-advertised-addr".into(), "no-port".into()],
            vec![],
            "--kafka-advertised-addr",
        ),
        (vec![], vec![("WHARF_AUTO_CREATE_TOPICS", "maybe")], "maybe"),
        (
            vec!["--http-addr".into(), "nowhere".into()],
            vec![],
            "--http-addr",
        ),
        (
            vec!["--config".into(), bad_file.display().to_string()],
            vec![],
            "data_dri",
        ),
        (
            vec!["--config".into(), bad_value.display().to_string()],
            vec![],
            "kafka_addr",
        ),
        (
            vec![
                "--config".into(),
                dir.path().join("missing.toml").display().to_string(),
            ],
            vec![],
            "missing.toml",
        ),
    ];
    for (args, envs, needle) in cases {
        let started = Instant::now();
        let mut cmd = wharf();
        cmd.arg("serve")
            .args(["--data-dir", &dir.path().join("data").display().to_string()])
            .args(&args)
            .envs(envs.iter().copied());
        if !args.iter().any(|a| a == "--http-addr") {
            // Should a bad setting slip through, do not take port 8080.
            cmd.env("WHARF_HTTP_ADDR", "127.0.0.1:0");
        }
        if needle != "kafka_addr" {
            // Nor port 9092 (the environment beats the file that sets a bad one).
            cmd.env("WHARF_KAFKA_ADDR", "127.0.0.1:0");
        }
        let out = run_bounded(&mut cmd, Duration::from_secs(5));
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(!out.status.success(), "{args:?} {envs:?} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{args:?} {envs:?}: {stderr}");
        assert!(!dir.path().join("data").exists(), "no broker was opened");
    }
}
