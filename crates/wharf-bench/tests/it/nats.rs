//! `wharf-bench --driver jetstream` and `--driver nats` against a real `nats-server -js`
//! (Debian's package), each workload briefly, its numbers checked through `--json`.
//!
//! The server is found at `$NATS_SERVER`, on the PATH or at `/usr/sbin/nats-server`;
//! without it these tests fail (`scripts/test` installs it).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use serde_json::Value;

use super::{bench_report, check_latency, run_bench, stderr_lines, u, START_TIMEOUT};

fn nats_server_bin() -> PathBuf {
    let candidates: Vec<PathBuf> = match std::env::var_os("NATS_SERVER") {
        Some(path) => vec![PathBuf::from(path)],
        None => std::env::var_os("PATH")
            .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .chain([PathBuf::from("/usr/sbin")])
            .map(|dir| dir.join("nats-server"))
            .collect(),
    };
    // Not skipped when missing: a run without it would pass without testing NATS.
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "nats-server not found (at $NATS_SERVER, else on the PATH or in /usr/sbin): \
                 install the Debian package `nats-server` (apt-get install -y nats-server; \
                 scripts/test does it)"
            )
        })
}

/// A running `nats-server -js` on an ephemeral port with its own store; killed on drop,
/// so a failing test never leaves a server behind.
struct NatsServer {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
}

impl NatsServer {
    fn start() -> NatsServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut child = Command::new(nats_server_bin())
            .arg("-js")
            .arg("-sd")
            .arg(dir.path().join("store"))
            // -1: the server picks a free port and logs it.
            .args(["-a", "127.0.0.1", "-p", "-1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nats-server");
        let rx = stderr_lines(&mut child);
        let mut server = NatsServer {
            child,
            url: String::new(),
            dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        let mut log = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                panic!(
                    "nats-server did not report its client port:\n{}",
                    log.join("\n")
                );
            };
            // "[INF] Listening for client connections on 127.0.0.1:PORT"
            if let Some(addr) = line.split("Listening for client connections on ").nth(1) {
                server.url = format!("nats://{}", addr.trim());
            }
            // Printed last: JetStream is up too.
            if line.contains("Server is ready") && !server.url.is_empty() {
                std::thread::spawn(move || while rx.recv().is_ok() {});
                return server;
            }
            log.push(line);
        }
    }

    /// Runs `wharf-bench --driver <driver> <args> --json FILE` against this server.
    fn bench(&self, driver: &str, args: &[&str]) -> Value {
        let all = ["--driver", driver, "--brokers", &self.url].into_iter();
        bench_report(all.chain(args.iter().copied()), &self.report())
    }

    fn report(&self) -> PathBuf {
        self.dir.path().join("report.json")
    }

    /// Runs `wharf-bench --driver <driver> <args> --json FILE`, whatever its outcome.
    fn run(&self, driver: &str, args: &[&str]) -> std::process::Output {
        let _ = std::fs::remove_file(self.report());
        let report = self.report();
        let all = ["--driver", driver, "--brokers", &self.url].into_iter();
        let all = all.chain(args.iter().copied()).map(OsStr::new);
        run_bench(all.chain([OsStr::new("--json"), report.as_os_str()]))
    }

    /// The directory of stream `name` in the JetStream store (global account).
    fn stream_dir(&self, name: &str) -> PathBuf {
        self.dir
            .path()
            .join("store/jetstream/$G/streams")
            .join(name)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn check_common(r: &Value, workload: &str, driver: &str) {
    assert_eq!(r["workload"], workload, "{r:#}");
    assert_eq!(r["driver"], driver, "{r:#}");
    assert_eq!(u(r, "failed"), 0, "{r:#}");
    assert!(r["msgs_per_s"].as_f64().unwrap() > 0.0, "{r:#}");
    assert!(r["duration_s"].as_f64().unwrap() > 0.0, "{r:#}");
    assert!(
        r["brokers"].as_str().unwrap().starts_with("nats://"),
        "{r:#}"
    );
}

fn exists(path: &Path) -> bool {
    path.try_exists().unwrap_or(false)
}

#[test]
fn jetstream_produce_counts_pub_acks_and_deletes_its_stream() {
    let nats = NatsServer::start();
    let r = nats.bench(
        "jetstream",
        &["produce", "--messages", "3000", "--producers", "2"],
    );
    check_common(&r, "produce", "jetstream");
    assert_eq!(u(&r, "sent"), 3000, "{r:#}");
    assert_eq!(u(&r, "acked"), 3000, "{r:#}");
    assert_eq!(u(&r, "messages"), 3000, "{r:#}");
    let topic = r["topic"].as_str().unwrap();
    assert!(
        !exists(&nats.stream_dir(topic)),
        "stream {topic} was not deleted"
    );

    // --keep leaves the stream; --acks 0 counts what a connection flush confirmed.
    let r = nats.bench(
        "jetstream",
        &["produce", "--messages", "500", "--acks", "0", "--keep"],
    );
    assert_eq!(u(&r, "acked"), 500, "{r:#}");
    let topic = r["topic"].as_str().unwrap();
    assert!(exists(&nats.stream_dir(topic)), "stream {topic} is gone");
}

#[test]
fn jetstream_consume_drains_the_stream_and_reads_the_ack_floor_back() {
    let nats = NatsServer::start();
    let r = nats.bench(
        "jetstream",
        &["consume", "--messages", "3000", "--consumers", "2"],
    );
    check_common(&r, "consume", "jetstream");
    assert_eq!(u(&r, "acked"), 3000, "{r:#}");
    assert_eq!(u(&r, "received"), 3000, "{r:#}");
    // The durable consumer's ack floor, shared by both consumers, counted once.
    assert_eq!(u(&r, "committed"), 3000, "{r:#}");
}

#[test]
fn jetstream_e2e_receives_every_acknowledged_message() {
    let nats = NatsServer::start();
    let r = nats.bench("jetstream", &["e2e", "--messages", "3000"]);
    check_common(&r, "e2e", "jetstream");
    assert_eq!(u(&r, "acked"), 3000, "{r:#}");
    assert_eq!(u(&r, "received"), 3000, "{r:#}");
    check_latency(&r);
}

#[test]
fn jetstream_latency_histogram_counts_every_message_received() {
    let nats = NatsServer::start();
    let r = nats.bench(
        "jetstream",
        &["latency", "--rate", "1000", "--duration", "1.5"],
    );
    check_common(&r, "latency", "jetstream");
    let received = u(&r, "received");
    assert_eq!(received, u(&r, "acked"), "{r:#}");
    assert!((1400..=1501).contains(&received), "{r:#}");
    check_latency(&r);
}

#[test]
fn jetstream_fanout_delivers_every_message_to_each_durable_consumer() {
    let nats = NatsServer::start();
    let r = nats.bench(
        "jetstream",
        &["fanout", "--groups", "3", "--messages", "2000"],
    );
    check_common(&r, "fanout", "jetstream");
    assert_eq!(u(&r, "acked"), 2000, "{r:#}");
    assert_eq!(u(&r, "received"), 3 * 2000, "{r:#}");
    check_latency(&r);
}

#[test]
fn core_nats_e2e_receives_every_flushed_message() {
    let nats = NatsServer::start();
    let r = nats.bench("nats", &["e2e", "--messages", "3000"]);
    check_common(&r, "e2e", "nats");
    assert_eq!(u(&r, "acked"), 3000, "{r:#}");
    assert_eq!(u(&r, "received"), 3000, "{r:#}");
    check_latency(&r);
}

#[test]
fn core_nats_fanout_delivers_every_message_to_each_queue_group() {
    let nats = NatsServer::start();
    let r = nats.bench("nats", &["fanout", "--groups", "3", "--messages", "2000"]);
    check_common(&r, "fanout", "nats");
    assert_eq!(u(&r, "acked"), 2000, "{r:#}");
    assert_eq!(u(&r, "received"), 3 * 2000, "{r:#}");
    check_latency(&r);
}

#[test]
fn core_nats_refuses_consume_for_lack_of_retention() {
    let nats = NatsServer::start();
    let out = nats.run("nats", &["consume", "--messages", "100"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("consume needs a broker that keeps messages"),
        "{stderr}"
    );
}
