//! `wharf-bench --driver amqp` against a real RabbitMQ node: every workload, briefly,
//! with its numbers checked through the `--json` report.
//!
//! The node is Debian's `rabbitmq-server` (scripts/test and .ci/run install it), started
//! by hand on free ports with its own data, log and home directories (no systemd, no
//! plugins), and stopped on drop. It takes seconds to boot, so one test runs the
//! workloads in sequence against one node.
//!
//! epmd (the Erlang port mapper, port 4369) is started by the node when none runs;
//! it is stopped with `epmd -kill` after the node if this test started it (epmd
//! refuses while other nodes are still registered, so another user's node keeps it).

use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use super::{bench_report, check_latency, u};

/// Boot on a loaded 2-core machine (about 6 s when idle).
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The Debian package's scripts. `/usr/sbin/rabbitmq-server` is a wrapper that
/// switches to the `rabbitmq` user (and its home and cookie) when run as root; these
/// run as whoever calls them, with the environment given.
const SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
const CTL: &str = "/usr/lib/rabbitmq/bin/rabbitmqctl";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn epmd_running() -> bool {
    TcpStream::connect_timeout(&"127.0.0.1:4369".parse().unwrap(), Duration::from_secs(1)).is_ok()
}

/// A RabbitMQ node of its own; stopped (SIGTERM: the start script stops the node
/// cleanly, as `rabbitmqctl stop` would; then SIGKILL to its process group if it
/// hangs) on drop, so a failing test never leaves a node behind.
struct RabbitMq {
    child: Child,
    node: String,
    port: u16,
    dir: tempfile::TempDir,
    started_epmd: bool,
}

impl RabbitMq {
    fn start() -> RabbitMq {
        assert!(
            Path::new(SERVER).exists(),
            "RabbitMQ is not installed ({SERVER} is missing): install the Debian package \
             rabbitmq-server (`apt-get install rabbitmq-server`; scripts/test and .ci/run do)"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home).expect("home dir");
        let cookie = home.join(".erlang.cookie");
        std::fs::write(&cookie, format!("wharfbench{}", std::process::id())).expect("cookie");
        std::fs::set_permissions(&cookie, std::fs::Permissions::from_mode(0o400))
            .expect("cookie mode");
        std::fs::write(dir.path().join("enabled_plugins"), "[].\n").expect("plugins file");
        let port = free_port();
        std::fs::write(
            dir.path().join("rabbitmq.conf"),
            format!("listeners.tcp.default = {port}\n"),
        )
        .expect("rabbitmq.conf");
        let node = format!("wharfbench-{}@localhost", std::process::id());
        let started_epmd = !epmd_running();
        let log = std::fs::File::create(dir.path().join("server.log")).expect("server log");
        let child = Command::new(SERVER)
            .envs(node_env(dir.path(), &node))
            .env("RABBITMQ_NODE_PORT", port.to_string())
            .env("RABBITMQ_DIST_PORT", free_port().to_string())
            .env("RABBITMQ_MNESIA_BASE", dir.path().join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.path().join("log"))
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                dir.path().join("enabled_plugins"),
            )
            .env("RABBITMQ_CONFIG_FILE", dir.path().join("rabbitmq.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            // Its own process group, so that drop can kill the VM and its helpers.
            .process_group(0)
            .spawn()
            .expect("spawn rabbitmq-server");
        let mut node = RabbitMq {
            child,
            node,
            port,
            dir,
            started_epmd,
        };
        let started = Instant::now();
        loop {
            if let Some(status) = node.child.try_wait().expect("try_wait") {
                panic!(
                    "rabbitmq-server exited ({status}) while booting:\n{}",
                    node.log_tail()
                );
            }
            // The AMQP listener opens last, once the node has booted.
            let addr = format!("127.0.0.1:{port}").parse().unwrap();
            if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
                eprintln!("RabbitMQ booted in {:.1?}", started.elapsed());
                return node;
            }
            assert!(
                started.elapsed() < BOOT_TIMEOUT,
                "RabbitMQ did not open port {port} within {BOOT_TIMEOUT:?}:\n{}",
                node.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// `rabbitmqctl <args>` against this node; its stdout.
    fn ctl(&self, args: &[&str]) -> String {
        let out = Command::new(CTL)
            .envs(node_env(self.dir.path(), &self.node))
            .arg("-n")
            .arg(&self.node)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run rabbitmqctl");
        assert!(
            out.status.success(),
            "rabbitmqctl {args:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `wharf-bench --driver amqp <args> --json FILE` against this node.
    fn bench(&self, args: &[&str]) -> Value {
        let url = self.url();
        let all = args
            .iter()
            .copied()
            .chain(["--driver", "amqp", "--brokers", &url]);
        bench_report(all, &self.dir.path().join("report.json"))
    }
}

/// What both the server and rabbitmqctl need to find the node: its name, and a home
/// with the shared Erlang cookie.
fn node_env(dir: &Path, node: &str) -> Vec<(&'static str, PathBuf)> {
    vec![
        ("HOME", dir.join("home")),
        ("RABBITMQ_NODENAME", PathBuf::from(node)),
    ]
}

impl Drop for RabbitMq {
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        // The whole group: the VM and its port helpers, even if the script is gone.
        let _ = killpg(pid, Signal::SIGKILL);
        let _ = self.child.wait();
        if self.started_epmd {
            let _ = Command::new("epmd")
                .arg("-kill")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The fields every report carries, and a positive rate.
fn check_common(r: &Value, workload: &str) {
    assert_eq!(r["workload"], workload, "{r:#}");
    assert_eq!(r["driver"], "amqp", "{r:#}");
    assert_eq!(u(r, "failed"), 0, "{r:#}");
    assert!(r["msgs_per_s"].as_f64().unwrap() > 0.0, "{r:#}");
    assert!(r["mb_per_s"].as_f64().unwrap() > 0.0, "{r:#}");
    assert_eq!(u(&r["params"]["run"], "size"), 1024, "{r:#}");
    assert!(r["params"]["amqp"]["queue_type"].is_string(), "{r:#}");
}

fn names(listing: &str) -> Vec<String> {
    listing
        .lines()
        .map(|l| l.split_whitespace().next().unwrap_or("").to_owned())
        .filter(|n| n.starts_with("wharf-bench-"))
        .collect()
}

#[test]
fn amqp_driver_runs_every_workload_against_rabbitmq_and_cleans_up() {
    let node = RabbitMq::start();

    // Two producers, confirms on persistent messages; no group, so the driver
    // declares a queue named after the topic to store them.
    let r = node.bench(&["produce", "--messages", "3000", "--producers", "2"]);
    check_common(&r, "produce");
    assert_eq!(u(&r, "sent"), 3000, "{r:#}");
    assert_eq!(u(&r, "acked"), 3000, "{r:#}");
    assert_eq!(u(&r, "messages"), 3000, "{r:#}");
    assert_eq!(r["params"]["amqp"]["queue_type"], "classic", "{r:#}");

    // No confirms: counted once written.
    let r = node.bench(&["produce", "--messages", "1000", "--acks", "0"]);
    check_common(&r, "produce");
    assert_eq!(u(&r, "acked"), 1000, "{r:#}");

    // Two competing consumers drain one group's queue; AMQP has no committed positions.
    let r = node.bench(&["consume", "--messages", "3000", "--consumers", "2"]);
    check_common(&r, "consume");
    assert_eq!(u(&r, "acked"), 3000, "{r:#}");
    assert_eq!(u(&r, "received"), 3000, "{r:#}");
    assert!(r["committed"].is_null(), "{r:#}");

    let r = node.bench(&["e2e", "--messages", "3000"]);
    check_common(&r, "e2e");
    assert_eq!(u(&r, "acked"), 3000, "{r:#}");
    assert_eq!(u(&r, "received"), u(&r, "acked"), "{r:#}");
    check_latency(&r);

    let r = node.bench(&["latency", "--rate", "1000", "--duration", "1.5"]);
    check_common(&r, "latency");
    let received = u(&r, "received");
    assert_eq!(received, u(&r, "acked"), "{r:#}");
    assert!((1400..=1501).contains(&received), "{r:#}");
    check_latency(&r);

    // Every group's queue gets every message.
    let r = node.bench(&["fanout", "--groups", "3", "--messages", "2000"]);
    check_common(&r, "fanout");
    assert_eq!(u(&r, "acked"), 2000, "{r:#}");
    assert_eq!(u(&r, "received"), 3 * 2000, "{r:#}");
    assert_eq!(u(&r, "messages"), 3 * 2000, "{r:#}");
    check_latency(&r);

    let r = node.bench(&[
        "e2e",
        "--messages",
        "1000",
        "--amqp-queue-type",
        "quorum",
        "--amqp-prefetch",
        "100",
    ]);
    check_common(&r, "e2e");
    assert_eq!(r["params"]["amqp"]["queue_type"], "quorum", "{r:#}");
    assert_eq!(u(&r["params"]["amqp"], "prefetch"), 100, "{r:#}");
    assert_eq!(u(&r, "acked"), 1000, "{r:#}");
    assert_eq!(u(&r, "received"), 1000, "{r:#}");

    // --keep leaves the exchange and its queue; the others deleted theirs.
    let r = node.bench(&["produce", "--messages", "100", "--keep"]);
    let kept = r["topic"].as_str().unwrap().to_owned();
    let queues = names(&node.ctl(&["list_queues", "-q", "name"]));
    let exchanges = names(&node.ctl(&["list_exchanges", "-q", "name"]));
    assert_eq!(queues, [kept.as_str()], "queues left: {queues:?}");
    assert_eq!(exchanges, [kept.as_str()], "exchanges left: {exchanges:?}");
}
