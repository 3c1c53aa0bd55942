//! Debian's kcat (librdkafka 2.0.2) against a real `wharf serve`: metadata, produce with
//! keys, headers and a null value, consume back checking content and order.
//!
//! kcat must be installed (`apt-get install -y kcat`; `.ci/run` does it). Without it
//! these tests fail rather than skip: a compatibility claim nobody checked is no claim.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::{serve_on, Server};

const KCAT_TIMEOUT: Duration = Duration::from_secs(60);

/// `kcat -b <addr>` plus `args`, failing with a clear message if kcat is missing.
pub(crate) fn kcat(addr: SocketAddr, args: &[&str]) -> Command {
    if Command::new("kcat")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        panic!(
            "kcat is not installed or not on PATH: these compatibility tests need it. \
             Install it with `apt-get install -y kcat` (.ci/run does this)"
        );
    }
    let mut cmd = Command::new("kcat");
    cmd.arg("-b").arg(addr.to_string()).args(args);
    cmd
}

/// Runs `cmd` with `input` on stdin; returns stdout, panicking (with stderr) on failure
/// or after [`KCAT_TIMEOUT`], so a broken broker cannot hang the suite.
pub(crate) fn run(mut cmd: Command, input: &str) -> String {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kcat");
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(input.as_bytes()).expect("write to kcat");
    drop(stdin);
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(KCAT_TIMEOUT) {
        Ok(out) => out.expect("wait for kcat"),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!(
                "kcat {:?} still running after {KCAT_TIMEOUT:?}",
                cmd.get_args().collect::<Vec<_>>()
            );
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "kcat {:?} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        cmd.get_args().collect::<Vec<_>>(),
        out.status
    );
    stdout
}

#[test]
fn kcat_produces_keyed_messages_with_headers_and_a_null_value_and_consumes_them_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(serve_on(dir.path()));
    let addr = server.kafka.expect("Kafka address");

    // -Z: an empty value is sent as NULL. The topic is auto-created by the producer.
    let mut input = String::new();
    for i in 0..50 {
        input.push_str(&format!("key-{i}:value-{i}\n"));
    }
    input.push_str("tombstone:\n");
    input.push_str("last:the end\n");
    run(
        kcat(
            addr,
            &[
                "-P",
                "-t",
                "kc",
                "-K:",
                "-Z",
                "-H",
                "app=wharf",
                "-H",
                "trace=abc=1",
            ],
        ),
        &input,
    );

    let out = run(
        kcat(
            addr,
            &[
                "-C",
                "-t",
                "kc",
                "-e",
                "-Z",
                "-o",
                "beginning",
                "-f",
                "%p|%o|%k|%s|%h\n",
            ],
        ),
        "",
    );
    let lines: Vec<&str> = out.lines().collect();
    let mut want: Vec<String> = (0..50)
        .map(|i| format!("0|{i}|key-{i}|value-{i}|app=wharf,trace=abc=1"))
        .collect();
    want.push("0|50|tombstone|NULL|app=wharf,trace=abc=1".into());
    want.push("0|51|last|the end|app=wharf,trace=abc=1".into());
    assert_eq!(lines, want, "{}", server.stderr());

    // Replay from an offset.
    let out = run(
        kcat(
            addr,
            &["-C", "-t", "kc", "-e", "-o", "50", "-Z", "-f", "%k=%s\n"],
        ),
        "",
    );
    assert_eq!(out, "tombstone=NULL\nlast=the end\n");
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
}

#[test]
fn kcat_lists_the_broker_and_topics_with_their_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(serve_on(dir.path()));
    let addr = server.kafka.expect("Kafka address");
    run(kcat(addr, &["-P", "-t", "listed"]), "one\n");
    let out = run(kcat(addr, &["-L"]), "");
    assert!(
        out.contains(&format!("broker 0 at {addr}")),
        "{out}\n{}",
        server.stderr()
    );
    assert!(out.contains("topic \"listed\" with 1 partitions"), "{out}");
    assert!(
        out.contains("partition 0, leader 0, replicas: 0, isrs: 0"),
        "{out}"
    );
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
}

#[test]
fn kcat_round_trips_every_compression_codec() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(serve_on(dir.path()));
    let addr = server.kafka.expect("Kafka address");
    let mut want = String::new();
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let input: String = (0..10).map(|i| format!("{codec}-{i}\n")).collect();
        run(kcat(addr, &["-P", "-t", "codecs", "-z", codec]), &input);
        want.push_str(&input);
    }
    let out = run(kcat(addr, &["-C", "-t", "codecs", "-e", "-f", "%s\n"]), "");
    assert_eq!(out, want, "{}", server.stderr());
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
}

#[test]
fn sigterm_stops_promptly_while_a_consumer_is_long_polling() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(serve_on(dir.path()));
    let addr = server.kafka.expect("Kafka address");
    run(kcat(addr, &["-P", "-t", "idle"]), "one\n");
    // A consumer at the end of the topic, asking the broker to hold each fetch 30 s.
    let mut consumer = kcat(
        addr,
        &[
            "-C",
            "-t",
            "idle",
            "-o",
            "end",
            "-X",
            "fetch.wait.max.ms=30000",
            "-q",
        ],
    );
    let consumer = KillOnDrop(
        consumer
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn kcat"),
    );
    std::thread::sleep(Duration::from_secs(2));
    let sent = std::time::Instant::now();
    server.signal(nix::sys::signal::Signal::SIGTERM);
    let status = server
        .wait_timeout(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no exit after SIGTERM:\n{}", server.stderr()));
    assert!(status.success(), "{}", server.stderr());
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "took {:?}:\n{}",
        sent.elapsed(),
        server.stderr()
    );
    drop(consumer);
}

/// A child process killed when the test ends, pass or fail.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
