//! Tests of the real `wharf` binary: one test binary, one module per area.

mod cli;
mod groups;
mod history;
mod http_publish;
mod http_queues;
mod http_topics;
mod kcat;
mod metrics;
mod rdkafka_client;
mod serve;
mod tracing;

pub use serve::serve_on;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How long a broker may take to come up on a loaded 2-core CI machine.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// `wharf` with a clean environment: no `WHARF_*` from the caller, logs at info.
fn wharf() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wharf"));
    for var in [
        "WHARF_DATA_DIR",
        "WHARF_KAFKA_ADDR",
        "WHARF_HTTP_ADDR",
        "WHARF_FLUSH",
        "WHARF_CONFIG",
        "WHARF_KAFKA_ADVERTISED_ADDR",
        "WHARF_KAFKA_MAX_REQUEST_BYTES",
        "WHARF_AUTO_CREATE_TOPICS",
        "WHARF_LOG_FORMAT",
        "WHARF_OTLP_ENDPOINT",
        "WHARF_METRICS_PARTITION_LABELS",
        "WHARF_HISTORY_WINDOW_MS",
        "WHARF_HISTORY_MAX_MESSAGES",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("RUST_LOG", "info");
    cmd
}

/// A running `wharf serve`. Killed on drop, so a failing test never leaves a broker
/// behind.
struct Server {
    child: Child,
    /// Every stderr line so far.
    lines: Arc<Mutex<Vec<String>>>,
    new_line: mpsc::Receiver<String>,
    pub http: SocketAddr,
    /// The Kafka address it bound.
    pub kafka: Option<SocketAddr>,
}

impl Server {
    /// Starts `cmd` (a `wharf serve …` with `--http-addr` or a config making it port 0)
    /// and waits until it logs the HTTP address it bound.
    fn start(mut cmd: Command) -> Server {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn wharf");
        let mut server = Server::adopt(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let line = server.next_line(deadline).unwrap_or_else(|| {
                panic!(
                    "wharf did not report its HTTP address; stderr:\n{}",
                    server.stderr()
                )
            });
            if line.contains("Kafka listener listening") {
                server.kafka = field(&line, "kafka_addr").and_then(|a| a.parse().ok());
            }
            if let Some(addr) = field(&line, "http_addr") {
                if line.contains("HTTP API listening") {
                    server.http = addr.parse().expect("bound address");
                    return server;
                }
            }
        }
    }

    fn adopt(mut child: Child) -> Server {
        let stderr = child.stderr.take().expect("piped stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        Server {
            child,
            lines,
            new_line: rx,
            http: "0.0.0.0:0".parse().unwrap(),
            kafka: None,
        }
    }

    fn next_line(&self, deadline: Instant) -> Option<String> {
        let left = deadline.checked_duration_since(Instant::now())?;
        self.new_line.recv_timeout(left).ok()
    }

    fn stderr(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), sig).expect("send signal");
    }

    /// Waits for exit up to `timeout`; `None` if still running.
    fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then the exit status (within 10 s) and the whole stderr.
    fn stop(mut self) -> (ExitStatus, String) {
        self.signal(Signal::SIGTERM);
        let status = self
            .wait_timeout(Duration::from_secs(10))
            .unwrap_or_else(|| {
                panic!(
                    "wharf did not exit after SIGTERM; stderr:\n{}",
                    self.stderr()
                )
            });
        // Let the reader thread drain the last lines.
        std::thread::sleep(Duration::from_millis(50));
        (status, self.stderr())
    }

    /// `GET path` with the status and body, whatever the status.
    fn get(&self, path: &str) -> (u16, String) {
        get(self.http, path)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut resp = agent
        .get(&format!("http://{addr}{path}"))
        .call()
        .expect("HTTP request");
    let status = resp.status().as_u16();
    let body = resp.body_mut().read_to_string().expect("body");
    (status, body)
}

/// Runs `cmd` to completion, killing it (and failing the test) if it takes longer than
/// `timeout`: a command expected to fail must never hang the suite or leave a broker up.
fn run_bounded(cmd: &mut Command, timeout: Duration) -> std::process::Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wharf");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => out.expect("wait for wharf"),
        Err(_) => {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            panic!(
                "wharf {:?} still running after {timeout:?}",
                cmd.get_args().collect::<Vec<_>>()
            );
        }
    }
}

/// The value of `key=value` in a log line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {key}="))? + key.len() + 2;
    line[start..].split_whitespace().next()
}

fn locked(dir: &Path) -> bool {
    dir.join(".lock").exists()
}
