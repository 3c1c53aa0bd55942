//! `wharf serve`: readiness, signals, the data directory lock, config precedence.

use std::fs;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::{field, locked, run_bounded, wharf, Server};

/// `wharf serve` on `dir`, with the HTTP and Kafka listeners on free ports.
pub fn serve_on(dir: &std::path::Path) -> std::process::Command {
    let mut cmd = wharf();
    cmd.args([
        "serve",
        "--http-addr",
        "127.0.0.1:0",
        "--kafka-addr",
        "127.0.0.1:0",
        "--data-dir",
    ])
    .arg(dir);
    cmd
}

#[test]
fn health_answers_200_with_json() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(serve_on(dir.path()));
    let (status, body) = server.get("/health");
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["status"], "ok");
    assert_eq!(json["version"], env!("CARGO_PKG_VERSION"));

    let (status, body) = server.get("/no/such/thing");
    assert_eq!(status, 404);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["error"]["code"], "not_found");
    assert!(json["error"]["message"]
        .as_str()
        .unwrap()
        .contains("/no/such/thing"));
    server.stop();
}

#[test]
fn sigterm_and_sigint_stop_the_broker_with_status_0() {
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        let dir = tempfile::tempdir().unwrap();
        let mut server = Server::start(serve_on(dir.path()));
        assert_eq!(server.get("/health").0, 200);
        let sent = Instant::now();
        server.signal(sig);
        let status = server
            .wait_timeout(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("no exit after {sig}:\n{}", server.stderr()));
        assert!(status.success(), "{sig}: {status}\n{}", server.stderr());
        assert!(
            sent.elapsed() < Duration::from_secs(5),
            "{sig} took {:?}",
            sent.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
        let log = server.stderr();
        assert!(log.contains("broker shut down"), "{log}");
    }
}

#[test]
fn a_second_serve_on_the_same_data_dir_fails_fast_mentioning_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let first = Server::start(serve_on(dir.path()));
    let started = Instant::now();
    let out = run_bounded(&mut serve_on(dir.path()), Duration::from_secs(5));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("wharf: error: "), "{stderr}");
    assert!(last.contains("lock"), "{stderr}");
    assert!(last.contains(&dir.path().display().to_string()), "{stderr}");
    // The first broker is unharmed.
    assert_eq!(first.get("/health").0, 200);
    let (status, _) = first.stop();
    assert!(status.success());
}

/// Starts a broker with `cmd`, returns its log, and stops it.
fn run_once(cmd: std::process::Command) -> String {
    let server = Server::start(cmd);
    assert_eq!(server.get("/health").0, 200);
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
    log
}

fn startup_line(log: &str) -> &str {
    log.lines()
        .find(|l| l.contains("starting wharf"))
        .unwrap_or_else(|| panic!("no startup line in:\n{log}"))
}

#[test]
fn settings_come_from_flag_then_env_then_file_then_default() {
    let root = tempfile::tempdir().unwrap();
    let [from_file, from_env, from_flag] = ["file", "env", "flag"].map(|n| root.path().join(n));
    let config = root.path().join("wharf.toml");
    fs::write(
        &config,
        format!(
            "data_dir = {:?}\nhttp_addr = \"127.0.0.1:0\"\nkafka_addr = \"127.0.0.1:0\"\nflush = \"never\"\nkafka_max_request_bytes = 1000\n",
            from_file.display().to_string()
        ),
    )
    .unwrap();

    // File alone.
    let mut cmd = wharf();
    cmd.arg("serve").arg("--config").arg(&config);
    let log = run_once(cmd);
    let line = startup_line(&log);
    assert!(locked(&from_file), "{log}");
    assert_eq!(field(line, "flush"), Some("never"), "{line}");
    assert_eq!(field(line, "data_dir_from"), Some("file"), "{line}");
    assert_eq!(field(line, "http_addr_from"), Some("file"), "{line}");
    assert_eq!(
        field(line, "kafka_max_request_bytes"),
        Some("1000"),
        "{line}"
    );
    assert_eq!(
        field(line, "kafka_max_request_bytes_from"),
        Some("file"),
        "{line}"
    );

    // The environment beats the file.
    let mut cmd = wharf();
    cmd.arg("serve")
        .env("WHARF_CONFIG", &config)
        .env("WHARF_DATA_DIR", &from_env)
        .env("WHARF_FLUSH", "interval:100")
        .env("WHARF_KAFKA_MAX_REQUEST_BYTES", "2000");
    let log = run_once(cmd);
    let line = startup_line(&log);
    assert!(locked(&from_env), "{log}");
    assert_eq!(
        field(line, "kafka_max_request_bytes"),
        Some("2000"),
        "{line}"
    );
    assert_eq!(
        field(line, "kafka_max_request_bytes_from"),
        Some("env"),
        "{line}"
    );
    assert_eq!(field(line, "flush"), Some("interval:100"), "{line}");
    assert_eq!(field(line, "data_dir_from"), Some("env"), "{line}");
    assert_eq!(field(line, "http_addr_from"), Some("file"), "{line}");

    // The command line beats both.
    let mut cmd = wharf();
    cmd.arg("serve")
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(&from_flag)
        .args(["--flush", "always"])
        .env("WHARF_DATA_DIR", &from_env)
        .env("WHARF_FLUSH", "interval:100");
    let log = run_once(cmd);
    let line = startup_line(&log);
    assert!(locked(&from_flag), "{log}");
    assert_eq!(field(line, "flush"), Some("always"), "{line}");
    assert_eq!(field(line, "data_dir_from"), Some("flag"), "{line}");

    // Nothing given: ./wharf-data in the working directory, `always`.
    let cwd = root.path().join("cwd");
    fs::create_dir(&cwd).unwrap();
    let mut cmd = wharf();
    // The Kafka port is the one setting not left at its default (9092 may be taken on a
    // shared machine); its default is checked by the config unit tests.
    cmd.current_dir(&cwd)
        .args(["serve", "--http-addr", "127.0.0.1:0"])
        .env("WHARF_KAFKA_ADDR", "127.0.0.1:0");
    let log = run_once(cmd);
    let line = startup_line(&log);
    assert!(locked(&cwd.join("wharf-data")), "{log}");
    assert_eq!(field(line, "flush"), Some("always"), "{line}");
    assert_eq!(field(line, "data_dir_from"), Some("default"), "{line}");
    assert_eq!(
        field(line, "kafka_max_request_bytes_from"),
        Some("default"),
        "{line}"
    );
    assert_eq!(field(line, "auto_create_topics"), Some("true"), "{line}");
}

#[test]
fn the_kafka_listener_is_bound_before_health_answers_and_logged() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(serve_on(dir.path()));
    let kafka = server
        .kafka
        .expect("Kafka address logged before the HTTP one");
    assert_ne!(kafka.port(), 0);
    std::net::TcpStream::connect(kafka).expect("the Kafka port accepts connections");
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
    assert!(log.contains("Kafka listener stopped"), "{log}");
}

#[test]
fn a_kafka_port_in_use_fails_cleanly_and_releases_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap().to_string();
    let mut cmd = wharf();
    cmd.args(["serve", "--http-addr", "127.0.0.1:0", "--kafka-addr", &addr])
        .arg("--data-dir")
        .arg(dir.path());
    let out = run_bounded(&mut cmd, Duration::from_secs(10));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("wharf: error: binding the Kafka listener"),
        "{stderr}"
    );
    assert!(last.contains(&addr), "{stderr}");
    assert!(stderr.contains("broker shut down"), "{stderr}");
}

#[test]
fn an_http_port_in_use_fails_cleanly_and_releases_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap().to_string();
    let mut cmd = wharf();
    cmd.args([
        "serve",
        "--kafka-addr",
        "127.0.0.1:0",
        "--http-addr",
        &addr,
        "--data-dir",
    ])
    .arg(dir.path());
    let out = run_bounded(&mut cmd, Duration::from_secs(10));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("wharf: error: binding the HTTP listener"),
        "{stderr}"
    );
    assert!(last.contains(&addr), "{stderr}");
    assert!(
        stderr.contains("broker shut down"),
        "the broker was closed: {stderr}"
    );
    // The lock went with the process: a broker starts on the directory again.
    drop(held);
    let (status, _) = Server::start(serve_on(dir.path())).stop();
    assert!(status.success());
}
