//! Command line, environment and config file, merged into one [`ServeConfig`].
//!
//! Precedence, highest first: command line, environment (`WHARF_*`), the TOML file given
//! by `--config`, built-in default. Clap merges the first two (a flag beats its `env`);
//! no clap `default_value` is set, so "not given" stays visible and the file and the
//! built-in default can be applied below it.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{anyhow, Context};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, Parser, Subcommand};
use serde::Deserialize;
use wharf_log::FlushPolicy;

pub const DEFAULT_DATA_DIR: &str = "./wharf-data";
pub const DEFAULT_KAFKA_ADDR: &str = "127.0.0.1:9092";
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8080";
pub const DEFAULT_KAFKA_MAX_REQUEST_BYTES: u32 = wharf_kafka::DEFAULT_MAX_REQUEST_BYTES;
pub const DEFAULT_AUTO_CREATE_TOPICS: bool = true;
pub const DEFAULT_METRICS_PARTITION_LABELS: bool = false;
pub const DEFAULT_HISTORY_WINDOW_MS: u64 = wharf_core::history::DEFAULT_HISTORY_WINDOW_MS;
pub const DEFAULT_HISTORY_MAX_MESSAGES: usize = wharf_core::history::DEFAULT_HISTORY_MAX_MESSAGES;

const SETTINGS_HELP: &str = "\
Settings of `wharf serve`, each from the command line, else the environment, else the
--config TOML file, else the default:

  --data-dir <DIR>        env WHARF_DATA_DIR, file key data_dir, default ./wharf-data
      Where the topic registry and all partition data live; locked, one broker at a time.
  --kafka-addr <IP:PORT>  env WHARF_KAFKA_ADDR, file key kafka_addr, default 127.0.0.1:9092
      Kafka listener address; port 0 picks one.
  --kafka-advertised-addr <HOST:PORT>
                          env WHARF_KAFKA_ADVERTISED_ADDR, file key kafka_advertised_addr,
                          default: the bound Kafka address
      Where Metadata tells Kafka clients to connect.
  --kafka-max-request-bytes <BYTES>
                          env WHARF_KAFKA_MAX_REQUEST_BYTES, file key kafka_max_request_bytes,
                          default 104857600 (100 MiB)
      Largest Kafka request accepted; a client sending a larger one is disconnected.
  --auto-create-topics <BOOL>
                          env WHARF_AUTO_CREATE_TOPICS, file key auto_create_topics, default true
      Create unknown topics (1 partition) on Kafka Metadata and Produce requests.
  --http-addr <IP:PORT>   env WHARF_HTTP_ADDR, file key http_addr, default 127.0.0.1:8080
      HTTP API address (GET /health), bound once the broker is open; port 0 picks one.
  --flush <POLICY>        env WHARF_FLUSH, file key flush, default always
      When data is fsync'd: always (no acknowledged loss), interval:<ms>, or never.
  --log-format <FORMAT>   env WHARF_LOG_FORMAT, file key log_format, default text
      Log lines on stderr: text (for people) or json (one JSON object per line).
  --otlp-endpoint <URL>   env WHARF_OTLP_ENDPOINT, file key otlp_endpoint, no default
      OpenTelemetry collector (OTLP over gRPC, e.g. http://127.0.0.1:4317) that receives
      the spans of traced messages; without it nothing is traced.
  --metrics-partition-labels <BOOL>
                          env WHARF_METRICS_PARTITION_LABELS, file key
                          metrics_partition_labels, default false
      Also export per-partition series (high watermark, group lag) at GET /metrics.
  --history-window-ms <MS>
                          env WHARF_HISTORY_WINDOW_MS, file key history_window_ms,
                          default 3600000 (1 hour)
      How long queue message events are kept for GET …/messages/{p}/{o}/history and
      `wharf trace` (in memory, lost on restart); 0 turns history off.
  --history-max-messages <N>
                          env WHARF_HISTORY_MAX_MESSAGES, file key history_max_messages,
                          default 100000
      Most messages whose history is kept; the oldest is forgotten first.
  --config <FILE>         env WHARF_CONFIG, no default
      TOML file with any of the keys above.

Run `wharf serve --help` for details. Logs go to stderr; RUST_LOG sets the level
(default info; e.g. RUST_LOG=debug or RUST_LOG=wharf_core=debug).";

/// Wharf: durable queues and publish/subscribe in one small binary.
#[derive(Debug, Parser)]
#[command(name = "wharf", version, after_help = SETTINGS_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the life of one message: published, delivered, acked, nacked, dead-lettered,
    /// redriven.
    ///
    /// Asks a running broker's HTTP API
    /// (`GET /v1/topics/{topic}/messages/{partition}/{offset}/history`) and prints the
    /// message and its events as a timeline, or the JSON answer with --json. Events are
    /// kept in the broker's memory for its --history-window-ms (default 1 hour) and lost
    /// when it restarts.
    Trace(TraceArgs),
    /// Start a broker on a data directory and serve it until SIGINT or SIGTERM.
    ///
    /// Opens (creating if needed) the data directory, takes its lock so no second broker
    /// can use it, recovers every topic, then serves the HTTP API. On SIGINT or SIGTERM
    /// it stops accepting connections, syncs and closes every partition log, and exits
    /// with status 0.
    ///
    /// Every setting can come from the command line, the environment or a TOML file
    /// (`--config`), in that order of precedence, else its built-in default.
    Serve(ServeArgs),
}

/// Options of `wharf serve`. `None` means "not on the command line nor in the
/// environment".
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Directory holding the topic registry and all partition data [default: ./wharf-data]
    ///
    /// Created if missing. Only one broker may use a directory at a time: it is locked
    /// through `<DIR>/.lock`, and a second `wharf serve` on it exits at once with an
    /// error. A relative path is taken from the current directory, also when it comes
    /// from the config file. Config file key: `data_dir`.
    #[arg(long, env = "WHARF_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Address for Kafka clients, IP:PORT [default: 127.0.0.1:9092]
    ///
    /// Bound once the broker has opened, before the HTTP API. Use 0.0.0.0:9092 to accept
    /// clients from other machines (and set --kafka-advertised-addr to a name they can
    /// reach). Port 0 picks a free port; the address actually bound is logged. Config
    /// file key: `kafka_addr`.
    #[arg(long, env = "WHARF_KAFKA_ADDR", value_name = "IP:PORT")]
    pub kafka_addr: Option<SocketAddr>,

    /// Address Kafka clients are told to connect to, HOST:PORT [default: the bound address]
    ///
    /// Metadata responses name this host and port as the broker's. Needed when clients
    /// reach Wharf under another name than the address it binds (0.0.0.0, containers,
    /// NAT). Config file key: `kafka_advertised_addr`.
    #[arg(long, env = "WHARF_KAFKA_ADVERTISED_ADDR", value_name = "HOST:PORT")]
    pub kafka_advertised_addr: Option<AdvertisedAddr>,

    /// Largest Kafka request accepted, in bytes [default: 104857600 (100 MiB)]
    ///
    /// Checked against the size prefix before anything is allocated: a client that
    /// announces a larger request is disconnected (with one log line). Must be at least
    /// 8. Config file key: `kafka_max_request_bytes`.
    #[arg(long, env = "WHARF_KAFKA_MAX_REQUEST_BYTES", value_name = "BYTES", value_parser = clap::value_parser!(u32).range(8..))]
    pub kafka_max_request_bytes: Option<u32>,

    /// Create unknown topics on Kafka Metadata and Produce requests: true or false [default: true]
    ///
    /// As Kafka's `auto.create.topics.enable`: a topic a client names is created with 1
    /// partition and the default settings. Config file key: `auto_create_topics`.
    #[arg(long, env = "WHARF_AUTO_CREATE_TOPICS", value_name = "BOOL", action = clap::ArgAction::Set)]
    pub auto_create_topics: Option<bool>,

    /// Address of the HTTP API (GET /health), IP:PORT [default: 127.0.0.1:8080]
    ///
    /// Bound only once the broker has opened, so an answer from /health means the broker
    /// is ready. Port 0 picks a free port; the address actually bound is logged. Config
    /// file key: `http_addr`.
    #[arg(long, env = "WHARF_HTTP_ADDR", value_name = "IP:PORT")]
    pub http_addr: Option<SocketAddr>,

    /// When appended data is fsync'd: always, interval:<ms> or never [default: always]
    ///
    /// `always`: a write is acknowledged only after an fdatasync covering it (concurrent
    /// writes share one), so no acknowledged message is lost even on power failure.
    /// `interval:<ms>`: acknowledged once written; a flusher syncs every <ms>
    /// milliseconds, so a machine crash loses up to that much (a process crash loses
    /// nothing). `never`: the kernel writes back when it likes; fastest, and a machine
    /// crash can lose any unsynced data. Config file key: `flush`.
    #[arg(long, env = "WHARF_FLUSH", value_name = "POLICY")]
    pub flush: Option<FlushPolicy>,

    /// Format of the log lines on stderr: text or json [default: text]
    ///
    /// `text` is for people (colours on a terminal); `json` writes one JSON object per
    /// line (`timestamp`, `level`, `target`, `fields` with `message` and the event's
    /// fields), for log shippers. Levels come from RUST_LOG in either case. Config file
    /// key: `log_format`.
    #[arg(long, env = "WHARF_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    /// OpenTelemetry collector to send spans to, over OTLP/gRPC, e.g. http://127.0.0.1:4317
    ///
    /// With it, a message that carries a W3C `traceparent` header (a Kafka record header
    /// or an HTTP message header) gets broker spans in its producer's trace: publish,
    /// persist, deliver, ack, nack, redelivery, dead-lettering. Sampling follows the
    /// producer's sampled flag. Spans are batched and sent in the background; when the
    /// collector is slow or away they are dropped, never held. Without it (the default)
    /// nothing is traced and no header is looked at. Config file key: `otlp_endpoint`.
    #[arg(long, env = "WHARF_OTLP_ENDPOINT", value_name = "URL", value_parser = parse_otlp_endpoint)]
    pub otlp_endpoint: Option<String>,
    /// Per-partition series at GET /metrics: true or false [default: false]
    ///
    /// Adds `wharf_partition_high_watermark` and `wharf_partition_group_lag`, labelled
    /// with `partition`. Off by default: a series per partition (per group) multiplies
    /// what Prometheus stores; the per-topic sums are always there. Config file key:
    /// `metrics_partition_labels`.
    #[arg(long, env = "WHARF_METRICS_PARTITION_LABELS", value_name = "BOOL", action = clap::ArgAction::Set)]
    pub metrics_partition_labels: Option<bool>,
    /// How long queue message events are kept, in milliseconds; 0 turns history off [default: 3600000 (1 hour)]
    ///
    /// Each delivery, ack, nack (with its reason), expired lease, dead letter and redrive
    /// of a queue message is kept this long, in memory only (lost on restart), for
    /// `GET /v1/topics/{topic}/messages/{partition}/{offset}/history` and `wharf trace`.
    /// With 0 nothing is recorded and the pull and ack paths pay nothing for it. Config
    /// file key: `history_window_ms`.
    #[arg(long, env = "WHARF_HISTORY_WINDOW_MS", value_name = "MS")]
    pub history_window_ms: Option<u64>,

    /// Most messages whose history is kept [default: 100000]
    ///
    /// Past this many, the oldest (first seen longest ago) is forgotten first. A message
    /// takes about 250 bytes with two events, 80 more per further event. Config file
    /// key: `history_max_messages`.
    #[arg(long, env = "WHARF_HISTORY_MAX_MESSAGES", value_name = "N")]
    pub history_max_messages: Option<usize>,

    /// TOML file with any of the keys data_dir, kafka_addr, http_addr, flush, …
    ///
    /// Values in the file apply where neither the command line nor the environment set
    /// one. Unknown keys are an error, so a typo does not go unnoticed. Example:
    ///
    ///     data_dir = "/var/lib/wharf"
    ///     http_addr = "0.0.0.0:8080"
    ///     flush = "interval:100"
    #[arg(long, env = "WHARF_CONFIG", value_name = "FILE", verbatim_doc_comment)]
    pub config: Option<PathBuf>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("expected text or json, got {s:?}")),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// An OTLP/gRPC endpoint: an `http://` or `https://` URL with a host.
fn parse_otlp_endpoint(s: &str) -> Result<String, String> {
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
        .ok_or_else(|| format!("expected an http:// or https:// URL, got {s:?}"))?;
    if rest.is_empty() || rest.starts_with('/') || rest.starts_with(':') {
        return Err(format!("expected a URL with a host, got {s:?}"));
    }
    Ok(s.to_string())
}

/// Arguments of `wharf trace`.
#[derive(Debug, Args)]
pub struct TraceArgs {
    /// The message's topic.
    pub topic: String,
    /// Its partition.
    pub partition: u32,
    /// Its offset.
    pub offset: u64,
    /// The broker's HTTP API, HOST:PORT [default: 127.0.0.1:8080]
    #[arg(long, env = "WHARF_HTTP_ADDR", value_name = "HOST:PORT")]
    pub http_addr: Option<String>,
    /// Print the API's JSON answer instead of the timeline.
    #[arg(long)]
    pub json: bool,
}

/// Where a setting's value came from; logged at startup to make precedence visible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    CommandLine,
    Environment,
    ConfigFile,
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::CommandLine => "flag",
            Source::Environment => "env",
            Source::ConfigFile => "file",
            Source::Default => "default",
        })
    }
}

/// The merged settings of `wharf serve`, each with where it came from.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub data_dir: (PathBuf, Source),
    pub kafka_addr: (SocketAddr, Source),
    pub http_addr: (SocketAddr, Source),
    pub flush: (FlushPolicy, Source),
    /// `None`: advertise the bound address.
    pub kafka_advertised_addr: (Option<AdvertisedAddr>, Source),
    pub kafka_max_request_bytes: (u32, Source),
    pub auto_create_topics: (bool, Source),
    pub log_format: (LogFormat, Source),
    /// `None`: no tracing.
    pub otlp_endpoint: (Option<String>, Source),
    pub metrics_partition_labels: (bool, Source),
    /// 0: history off.
    pub history_window_ms: (u64, Source),
    pub history_max_messages: (usize, Source),
    pub config_file: Option<PathBuf>,
}

/// A `HOST:PORT` Kafka clients can connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdvertisedAddr {
    pub host: String,
    pub port: u16,
}

impl FromStr for AdvertisedAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("expected HOST:PORT, got {s:?}"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("expected HOST:PORT, got {s:?}: the host is empty"));
        }
        let port = port
            .parse()
            .map_err(|_| format!("expected HOST:PORT, got {s:?}: bad port {port:?}"))?;
        Ok(AdvertisedAddr {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for AdvertisedAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// The `--config` file. Every key optional; unknown keys rejected.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    kafka_addr: Option<String>,
    http_addr: Option<String>,
    flush: Option<String>,
    kafka_advertised_addr: Option<String>,
    kafka_max_request_bytes: Option<u32>,
    auto_create_topics: Option<bool>,
    log_format: Option<String>,
    otlp_endpoint: Option<String>,
    metrics_partition_labels: Option<bool>,
    history_window_ms: Option<u64>,
    history_max_messages: Option<usize>,
}

fn load_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        // toml's message spans several lines with a source excerpt; keep it on one.
        let msg = e.message().to_string();
        // Quote the offending line: toml's message alone may not name the key.
        let at = e
            .span()
            .map(|s| {
                let start = s.start.min(text.len());
                let line_no = text[..start].matches('\n').count() + 1;
                let line = text.lines().nth(line_no - 1).unwrap_or_default().trim();
                format!(", line {line_no} `{line}`")
            })
            .unwrap_or_default();
        anyhow!("config file {}{at}: {msg}", path.display())
    })
}

fn parse_file_value<T>(path: &Path, key: &str, value: &str) -> anyhow::Result<T>
where
    T: std::str::FromStr,
    T::Err: fmt::Display,
{
    value
        .parse()
        .map_err(|e| anyhow!("config file {}: {key} = {value:?}: {e}", path.display()))
}

fn source_of(matches: Option<&ArgMatches>, id: &str) -> Source {
    match matches.and_then(|m| m.value_source(id)) {
        Some(ValueSource::EnvVariable) => Source::Environment,
        _ => Source::CommandLine,
    }
}

impl ServeConfig {
    /// Merges `args` (command line and environment, as parsed by clap from `matches`)
    /// with the config file and the defaults.
    pub fn resolve(args: &ServeArgs, matches: Option<&ArgMatches>) -> anyhow::Result<Self> {
        let file = match &args.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        let path = args.config.as_deref().unwrap_or(Path::new(""));

        let data_dir = match (&args.data_dir, &file.data_dir) {
            (Some(d), _) => (d.clone(), source_of(matches, "data_dir")),
            (None, Some(d)) => (d.clone(), Source::ConfigFile),
            (None, None) => (PathBuf::from(DEFAULT_DATA_DIR), Source::Default),
        };
        let kafka_addr = match (args.kafka_addr, &file.kafka_addr) {
            (Some(a), _) => (a, source_of(matches, "kafka_addr")),
            (None, Some(a)) => (parse_file_value(path, "kafka_addr", a)?, Source::ConfigFile),
            (None, None) => (parse_default(DEFAULT_KAFKA_ADDR)?, Source::Default),
        };
        let http_addr = match (args.http_addr, &file.http_addr) {
            (Some(a), _) => (a, source_of(matches, "http_addr")),
            (None, Some(a)) => (parse_file_value(path, "http_addr", a)?, Source::ConfigFile),
            (None, None) => (parse_default(DEFAULT_HTTP_ADDR)?, Source::Default),
        };
        let flush = match (args.flush, &file.flush) {
            (Some(f), _) => (f, source_of(matches, "flush")),
            (None, Some(f)) => (parse_file_value(path, "flush", f)?, Source::ConfigFile),
            (None, None) => (FlushPolicy::default(), Source::Default),
        };
        let kafka_advertised_addr = match (&args.kafka_advertised_addr, &file.kafka_advertised_addr)
        {
            (Some(a), _) => (Some(a.clone()), source_of(matches, "kafka_advertised_addr")),
            (None, Some(a)) => (
                Some(parse_file_value(path, "kafka_advertised_addr", a)?),
                Source::ConfigFile,
            ),
            (None, None) => (None, Source::Default),
        };
        let kafka_max_request_bytes =
            match (args.kafka_max_request_bytes, file.kafka_max_request_bytes) {
                (Some(n), _) => (n, source_of(matches, "kafka_max_request_bytes")),
                (None, Some(n)) if n < 8 => {
                    return Err(anyhow!(
                        "config file {}: kafka_max_request_bytes = {n}: must be at least 8",
                        path.display()
                    ))
                }
                (None, Some(n)) => (n, Source::ConfigFile),
                (None, None) => (DEFAULT_KAFKA_MAX_REQUEST_BYTES, Source::Default),
            };
        let auto_create_topics = match (args.auto_create_topics, file.auto_create_topics) {
            (Some(b), _) => (b, source_of(matches, "auto_create_topics")),
            (None, Some(b)) => (b, Source::ConfigFile),
            (None, None) => (DEFAULT_AUTO_CREATE_TOPICS, Source::Default),
        };
        let log_format = match (args.log_format, &file.log_format) {
            (Some(f), _) => (f, source_of(matches, "log_format")),
            (None, Some(f)) => (parse_file_value(path, "log_format", f)?, Source::ConfigFile),
            (None, None) => (LogFormat::default(), Source::Default),
        };
        let otlp_endpoint =
            match (&args.otlp_endpoint, &file.otlp_endpoint) {
                (Some(e), _) => (Some(e.clone()), source_of(matches, "otlp_endpoint")),
                (None, Some(e)) => (
                    Some(parse_otlp_endpoint(e).map_err(|m| {
                        anyhow!("config file {}: otlp_endpoint: {m}", path.display())
                    })?),
                    Source::ConfigFile,
                ),
                (None, None) => (None, Source::Default),
            };
        let metrics_partition_labels =
            match (args.metrics_partition_labels, file.metrics_partition_labels) {
                (Some(b), _) => (b, source_of(matches, "metrics_partition_labels")),
                (None, Some(b)) => (b, Source::ConfigFile),
                (None, None) => (DEFAULT_METRICS_PARTITION_LABELS, Source::Default),
            };
        let history_window_ms = match (args.history_window_ms, file.history_window_ms) {
            (Some(n), _) => (n, source_of(matches, "history_window_ms")),
            (None, Some(n)) => (n, Source::ConfigFile),
            (None, None) => (DEFAULT_HISTORY_WINDOW_MS, Source::Default),
        };
        let history_max_messages = match (args.history_max_messages, file.history_max_messages) {
            (Some(n), _) => (n, source_of(matches, "history_max_messages")),
            (None, Some(n)) => (n, Source::ConfigFile),
            (None, None) => (DEFAULT_HISTORY_MAX_MESSAGES, Source::Default),
        };
        Ok(ServeConfig {
            log_format,
            otlp_endpoint,
            data_dir,
            kafka_addr,
            http_addr,
            flush,
            kafka_advertised_addr,
            kafka_max_request_bytes,
            auto_create_topics,
            metrics_partition_labels,
            history_window_ms,
            history_max_messages,
            config_file: args.config.clone(),
        })
    }
}

fn parse_default(addr: &str) -> anyhow::Result<SocketAddr> {
    addr.parse()
        .with_context(|| format!("built-in default address {addr}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn args(data_dir: Option<&str>, config: Option<PathBuf>) -> ServeArgs {
        ServeArgs {
            data_dir: data_dir.map(PathBuf::from),
            kafka_addr: None,
            http_addr: None,
            flush: None,
            kafka_advertised_addr: None,
            kafka_max_request_bytes: None,
            auto_create_topics: None,
            log_format: None,
            otlp_endpoint: None,
            metrics_partition_labels: None,
            history_window_ms: None,
            history_max_messages: None,
            config,
        }
    }

    #[test]
    fn defaults_apply_when_nothing_is_given() {
        let c = ServeConfig::resolve(&args(None, None), None).unwrap();
        assert_eq!(
            c.data_dir,
            (PathBuf::from(DEFAULT_DATA_DIR), Source::Default)
        );
        assert_eq!(c.kafka_addr.0.to_string(), DEFAULT_KAFKA_ADDR);
        assert_eq!(c.http_addr.0.to_string(), DEFAULT_HTTP_ADDR);
        assert_eq!(c.flush, (FlushPolicy::Always, Source::Default));
        assert_eq!(c.metrics_partition_labels, (false, Source::Default));
    }

    #[test]
    fn metrics_partition_labels_come_from_the_file_unless_given() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "metrics_partition_labels = true").unwrap();
        let c = ServeConfig::resolve(&args(None, Some(f.path().into())), None).unwrap();
        assert_eq!(c.metrics_partition_labels, (true, Source::ConfigFile));
        let mut a = args(None, Some(f.path().into()));
        a.metrics_partition_labels = Some(false);
        let c = ServeConfig::resolve(&a, None).unwrap();
        assert_eq!(c.metrics_partition_labels, (false, Source::CommandLine));
    }

    #[test]
    fn file_fills_what_the_command_line_leaves_open() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            f,
            "data_dir = \"/from/file\"\nflush = \"never\"\nkafka_addr = \"0.0.0.0:19092\""
        )
        .unwrap();
        let c =
            ServeConfig::resolve(&args(Some("/from/flag"), Some(f.path().into())), None).unwrap();
        assert_eq!(
            c.data_dir,
            (PathBuf::from("/from/flag"), Source::CommandLine)
        );
        assert_eq!(c.flush, (FlushPolicy::Never, Source::ConfigFile));
        assert_eq!(c.kafka_addr.0.to_string(), "0.0.0.0:19092");
        assert_eq!(c.http_addr.1, Source::Default);
    }

    #[test]
    fn history_settings_come_from_the_file_or_default() {
        let c = ServeConfig::resolve(&args(None, None), None).unwrap();
        assert_eq!(c.history_window_ms, (3_600_000, Source::Default));
        assert_eq!(c.history_max_messages, (100_000, Source::Default));
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "history_window_ms = 0\nhistory_max_messages = 5").unwrap();
        let mut a = args(None, Some(f.path().into()));
        let c = ServeConfig::resolve(&a, None).unwrap();
        assert_eq!(c.history_window_ms, (0, Source::ConfigFile));
        assert_eq!(c.history_max_messages, (5, Source::ConfigFile));
        a.history_window_ms = Some(60_000);
        let c = ServeConfig::resolve(&a, None).unwrap();
        assert_eq!(c.history_window_ms, (60_000, Source::CommandLine));
    }

    #[test]
    fn advertised_addresses_parse_host_names_and_ipv6() {
        for (text, host, port) in [
            ("kafka.example.com:9092", "kafka.example.com", 9092),
            ("10.0.0.5:19092", "10.0.0.5", 19092),
            ("[::1]:9092", "::1", 9092),
        ] {
            let a: AdvertisedAddr = text.parse().unwrap();
            assert_eq!((a.host.as_str(), a.port), (host, port));
            assert_eq!(a.to_string(), text);
        }
        for bad in ["kafka", ":9092", "host:", "host:99999", "host:x"] {
            assert!(bad.parse::<AdvertisedAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_file_values_name_the_file_and_key() {
        for (body, needle) in [
            ("kafka_addr = \"localhost\"", "kafka_addr"),
            ("flush = \"sometimes\"", "flush"),
            ("data_dri = \"x\"", "data_dri"),
            ("data_dir = 5", "data_dir"),
            ("not toml at all [", "line 1"),
            ("log_format = \"xml\"", "log_format"),
            ("otlp_endpoint = \"collector:4317\"", "otlp_endpoint"),
        ] {
            let mut f = tempfile::NamedTempFile::new().unwrap();
            write!(f, "{body}").unwrap();
            let err = ServeConfig::resolve(&args(None, Some(f.path().into())), None).unwrap_err();
            let msg = format!("{err:#}");
            assert!(msg.contains(needle), "{body}: {msg}");
            assert!(
                msg.contains(&f.path().display().to_string()),
                "{body}: {msg}"
            );
            assert!(!msg.contains('\n'), "one line: {msg}");
        }
    }
}
