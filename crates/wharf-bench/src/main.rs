//! `wharf-bench`: a load generator for Wharf and any broker speaking the same client
//! protocols. It never links the broker: it only talks to it over the network.

mod amqp;
mod disk;
mod driver;
mod http;
mod kafka;
mod loopback;
mod nats;
mod otlp_sink;
mod plot;
mod report;
mod workload;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

use driver::{Driver, ProducerOpts};
use workload::{Params, Progress, Stop};

/// Load generator for Wharf and other message brokers.
///
/// Each run creates its own topic (a unique name, with the partitions asked for),
/// runs one workload against it, prints a table on stdout (progress goes to stderr)
/// and deletes the topic unless --keep. Rates count only what the broker
/// acknowledged (produce) or what consumers received (the others). MB is 10^6 bytes
/// of payload.
#[derive(Debug, Parser)]
#[command(name = "wharf-bench", version)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    workload: Workload,
}

#[derive(Debug, Args, Serialize)]
struct Global {
    /// Client protocol to speak: kafka (librdkafka), amqp (AMQP 0-9-1 through lapin, for
    /// RabbitMQ), jetstream (NATS JetStream: a file-stored stream per topic, a durable
    /// pull consumer per group), nats (core NATS: no retention, so no `consume`; for
    /// e2e, latency and fanout) or http (Wharf's HTTP/JSON queue API: batched publishes,
    /// a subscription per group, long-polled pulls acknowledged before they count).
    #[arg(long, value_enum, default_value_t = DriverKind::Kafka, global = true)]
    driver: DriverKind,
    /// Where the broker is. Kafka: bootstrap servers (host:port[,host:port...]), by
    /// default 127.0.0.1:9092. AMQP: a URL, by default
    /// amqp://guest:guest@127.0.0.1:5672/%2f (%2f is the vhost "/"). jetstream and
    /// nats: a NATS URL, by default nats://127.0.0.1:4222. http: host:port (or a URL)
    /// of Wharf's HTTP API, by default 127.0.0.1:8080.
    #[arg(long, global = true)]
    brokers: Option<String>,
    /// AMQP: the type of the groups' queues. classic: durable, persistent messages
    /// confirmed once the message store wrote them; quorum: confirmed once fsynced to
    /// the queue's Raft log.
    #[arg(long, value_enum, default_value_t = amqp::QueueType::Classic, global = true)]
    amqp_queue_type: amqp::QueueType,
    /// AMQP: unacked deliveries the broker may push to each consumer (basic.qos).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u16).range(1..), global = true)]
    amqp_prefetch: u16,
    /// Also write the results, parameters and machine as JSON to FILE.
    #[arg(long, value_name = "FILE", global = true)]
    json: Option<PathBuf>,
    /// Also draw the run's latency percentiles (e2e, latency, fanout, partitions, queue) into
    /// FILE.png.
    #[arg(long, value_name = "FILE.png", global = true)]
    plot: Option<PathBuf>,
    /// Keep the topic after the run instead of deleting it.
    #[arg(long, global = true)]
    keep: bool,
    /// A librdkafka property for every client (producers, consumers, admin), e.g.
    /// `-X fetch.wait.max.ms=100`. Repeatable; applied after wharf-bench's own. Kafka
    /// only.
    #[arg(short = 'X', value_name = "KEY=VALUE", global = true)]
    property: Vec<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum DriverKind {
    Kafka,
    Amqp,
    Jetstream,
    Nats,
    Http,
}

impl Global {
    /// `--brokers`, or the driver's default address.
    fn brokers(&self) -> &str {
        match (&self.brokers, self.driver) {
            (Some(b), _) => b,
            (None, DriverKind::Kafka) => "127.0.0.1:9092",
            (None, DriverKind::Amqp) => "amqp://guest:guest@127.0.0.1:5672/%2f",
            (None, DriverKind::Jetstream | DriverKind::Nats) => "nats://127.0.0.1:4222",
            (None, DriverKind::Http) => "127.0.0.1:8080",
        }
    }
}

#[derive(Debug, Subcommand)]
enum Workload {
    /// N producers send as fast as the broker acknowledges: msgs/s and MB/s acknowledged
    /// (only delivery reports without error count), timed until the last one is in.
    Produce {
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        producer: ProducerArgs,
        /// Concurrent producers (one client and thread each).
        #[arg(long, default_value_t = 1)]
        producers: usize,
    },
    /// Fills a topic (not timed), then N consumers in one group drain it: msgs/s and MB/s
    /// from the first message received to the last (the group join is not timed).
    Consume {
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        producer: ProducerArgs,
        /// Consumers in the group.
        #[arg(long, default_value_t = 1)]
        consumers: usize,
    },
    /// 1 producer and 1 consumer at once (acks=all by default): throughput end to end,
    /// from the first send to the last message received.
    E2e {
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        producer: ProducerArgs,
    },
    /// 1 producer at a fixed rate and 1 consumer: end-to-end latency (from the scheduled
    /// send time carried in the payload to receipt) as p50/p90/p99/p99.9/max.
    Latency {
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        producer: ProducerArgs,
        /// Messages per second.
        #[arg(long, default_value_t = 1000)]
        rate: u64,
    },
    /// 1 producer, K consumer groups each receiving every message: deliveries/s.
    Fanout {
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        producer: ProducerArgs,
        /// Consumer groups (one consumer each).
        #[arg(long, default_value_t = 4)]
        groups: usize,
    },
    /// 1 producer spreading keyed messages over many partitions (--partitions, default
    /// 1000) while N consumers in one group read them all: end-to-end msgs/s.
    Partitions {
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        producer: ProducerArgs,
        /// Consumers in the group.
        #[arg(long, default_value_t = 1)]
        consumers: usize,
    },
    /// 1 producer and N consumers sharing one queue (a subscription; a consumer group on
    /// the other drivers) that acknowledge what they receive: msgs/s acknowledged by the
    /// consumers and end-to-end latency (send to acknowledgement with --driver http, to
    /// receipt elsewhere). For --driver http primarily; kafka (offsets committed at the
    /// end and checked), jetstream and amqp run it too for comparison.
    Queue {
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        producer: ProducerArgs,
        /// Consumers sharing the queue (the topic gets as many partitions unless
        /// --partitions, so every Kafka consumer has one).
        #[arg(long, default_value_t = 4)]
        consumers: usize,
        /// Send at this many messages per second (latency timed from when each was due,
        /// as in `latency`; --linger-ms defaults to 0) instead of as fast as acknowledged.
        #[arg(long)]
        rate: Option<u64>,
    },
    /// No broker: writes --size bytes and fdatasyncs them, --rate times a second, in a
    /// file under --dir, each write timed from when it was due (as `latency` times
    /// messages): the disk's own latency at that rate, the floor under any broker that
    /// syncs before it acknowledges.
    Disk {
        /// Directory for the scratch file (deleted afterwards): the broker's disk.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Writes per second.
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        /// Bytes per write.
        #[arg(long, default_value_t = 1024)]
        size: usize,
        /// Seconds to run.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// append: each write grows the file; overwrite: writes land in zeroed space
        /// written and synced first (as Wharf's preallocated segments).
        #[arg(long, value_enum, default_value_t = disk::Mode::Overwrite)]
        mode: disk::Mode,
        /// Write and sync on two threads, each sync covering every write made before it
        /// started (a broker's group commit), instead of one sync after each write.
        #[arg(long)]
        group_commit: bool,
    },
    /// No broker, no disk: --size byte messages over a loopback TCP connection from one
    /// thread to another, --rate a second, each timed from when it was due (as `latency`
    /// times messages): the least a trip costs on this machine, and how much of a tail
    /// the machine itself adds (a CPU taken away while a message is on its way)
    Loopback {
        /// Messages per second.
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        /// Bytes per message (at least 8: the due time).
        #[arg(long, default_value_t = 1024)]
        size: usize,
        /// Seconds to run.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
    },
    /// No broker: an OTLP/gRPC trace endpoint on --addr that counts the spans sent to it
    /// and drops them (a stand-in collector for measuring what exporting traces costs a
    /// broker), until SIGINT or SIGTERM; then prints what it received as JSON.
    OtlpSink {
        /// Address to listen on, IP:PORT.
        #[arg(long, default_value = "127.0.0.1:4317")]
        addr: std::net::SocketAddr,
    },
    /// Draws the latency percentiles of earlier runs (their --json reports) into one
    /// PNG, one curve each: `wharf-bench plot --out lat.png wharf=a.json rabbitmq=b.json`.
    Plot {
        /// The PNG to write.
        #[arg(long, value_name = "FILE.png")]
        out: PathBuf,
        /// The chart's title.
        #[arg(long, default_value = "End-to-end latency by percentile")]
        title: String,
        /// Reports to draw, as LABEL=FILE.json (or FILE.json, labelled by its name).
        #[arg(required = true, value_name = "LABEL=FILE.json")]
        reports: Vec<String>,
    },
}

#[derive(Debug, Clone, Args, Serialize)]
struct RunArgs {
    /// Payload size in bytes (at least 8: the send timestamp).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(8..=100_000_000))]
    size: u64,
    /// Partitions of the topic created for the run (default 1; 1000 for `partitions`;
    /// --consumers for `queue`). Kafka and http only: NATS subjects and AMQP exchanges
    /// have none.
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=100_000))]
    partitions: Option<i32>,
    /// Stop after this many messages (all producers together).
    #[arg(long, conflicts_with = "duration")]
    messages: Option<u64>,
    /// Stop producing after this many seconds (default 10 unless --messages).
    #[arg(long)]
    duration: Option<f64>,
    /// Distinct message keys, used round robin; 0 sends no keys (the client's
    /// partitioner spreads batches). Default 0; for `partitions`, 4 per partition.
    #[arg(long)]
    keys: Option<u64>,
    /// Also write every message's latency to FILE, a line each: when it was due (µs
    /// since the Unix epoch) and its latency (µs), in order of due time. For finding
    /// where a tail comes from: a periodic spike and a stall look different there.
    #[arg(long, value_name = "FILE")]
    latency_samples: Option<PathBuf>,
}

#[derive(Debug, Clone, Args, Serialize)]
struct ProducerArgs {
    /// Acknowledgements: all (durable), 1 (leader) or 0 (none). JetStream: all and 1 wait
    /// for the PubAck (stored, not fsynced), 0 counts what a connection flush confirms
    /// the server received; core NATS always the latter.
    #[arg(long, default_value = "all", value_parser = ["all", "1", "0"])]
    acks: String,
    /// Producer linger before a batch is sent, in ms (librdkafka linger.ms). Default 5,
    /// except 0 for `latency`, where waiting to fill a batch would be measured too.
    /// Kafka only, like --batch-size, --compression and --keys.
    #[arg(long)]
    linger_ms: Option<u64>,
    /// Largest producer batch in bytes (librdkafka batch.size).
    #[arg(long, default_value_t = 1_000_000)]
    batch_size: u64,
    /// Compression codec.
    #[arg(long, default_value = "none", value_parser = ["none", "gzip", "snappy", "lz4", "zstd"])]
    compression: String,
    /// Give every message a W3C `traceparent` record header of a new trace, with the
    /// sampled flag on this fraction of them, evenly spread (default 1: all; Kafka
    /// only): what a broker's message tracing costs when producers trace that much.
    #[arg(long, value_name = "SAMPLED", num_args = 0..=1, default_missing_value = "1",
          value_parser = parse_fraction)]
    traceparent: Option<f64>,
}

impl ProducerArgs {
    fn opts(&self) -> ProducerOpts {
        ProducerOpts {
            acks: self.acks.clone(),
            linger_ms: self.linger_ms.unwrap_or(5),
            batch_bytes: self.batch_size,
            compression: self.compression.clone(),
            traceparent: self.traceparent,
        }
    }
}

impl RunArgs {
    fn stop(&self) -> Result<Stop> {
        Ok(match (self.messages, self.duration) {
            (Some(n), _) => Stop::Count(n),
            (None, Some(s)) if s.is_finite() && s > 0.0 => Stop::Time(Duration::from_secs_f64(s)),
            (None, Some(s)) => bail!("--duration must be a positive number of seconds, not {s}"),
            (None, None) => Stop::Time(Duration::from_secs(10)),
        })
    }
}

/// A number from 0 to 1.
fn parse_fraction(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(format!("expected a fraction from 0 to 1, got {s:?}")),
    }
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("wharf-bench: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    if let Workload::OtlpSink { addr } = &cli.workload {
        let received = otlp_sink::run(*addr)?;
        println!("{}", serde_json::to_string(&received)?);
        return Ok(());
    }
    if let Workload::Plot {
        out,
        title,
        reports,
    } = &cli.workload
    {
        return plot_reports(out, title, reports);
    }
    if let Workload::Disk {
        dir,
        rate,
        size,
        duration,
        mode,
        group_commit,
    } = &cli.workload
    {
        if !(duration.is_finite() && *duration > 0.0) {
            bail!("--duration must be a positive number of seconds, not {duration}");
        }
        let report = disk::run(
            dir,
            *mode,
            *group_commit,
            *rate,
            *size,
            Duration::from_secs_f64(*duration),
        )?;
        let json = serde_json::to_string_pretty(&report)?;
        if let Some(path) = &cli.global.json {
            std::fs::write(path, &json).with_context(|| format!("writing {}", path.display()))?;
        }
        let (l, s) = (&report.latency, &report.sync);
        println!(
            "disk ({:?}{}, {} B at {}/s, {} syncs): from due p50 {} µs  p99 {} µs  p99.9 {} µs  \
             max {} µs; fdatasync alone p50 {} µs  p99 {} µs",
            report.mode,
            if report.group_commit {
                ", group commit"
            } else {
                ""
            },
            report.size,
            report.rate,
            report.syncs,
            l.p50_us,
            l.p99_us,
            l.p999_us,
            l.max_us,
            s.p50_us,
            s.p99_us
        );
        return Ok(());
    }
    if let Workload::Loopback {
        rate,
        size,
        duration,
    } = &cli.workload
    {
        if !(duration.is_finite() && *duration > 0.0) {
            bail!("--duration must be a positive number of seconds, not {duration}");
        }
        let report = loopback::run(*rate, *size, Duration::from_secs_f64(*duration))?;
        let json = serde_json::to_string_pretty(&report)?;
        if let Some(path) = &cli.global.json {
            std::fs::write(path, &json).with_context(|| format!("writing {}", path.display()))?;
        }
        let l = &report.latency;
        println!(
            "loopback ({} B at {}/s, {} messages): from due p50 {} µs  p99 {} µs  p99.9 {} µs  \
             max {} µs; over 1 ms {}, over 5 ms {}",
            report.size,
            report.rate,
            report.messages,
            l.p50_us,
            l.p99_us,
            l.p999_us,
            l.max_us,
            report.over_1ms,
            report.over_5ms
        );
        return Ok(());
    }
    let mut extra = Vec::new();
    for prop in &cli.global.property {
        let (k, v) = prop
            .split_once('=')
            .with_context(|| format!("-X {prop}: expected KEY=VALUE"))?;
        extra.push((k.to_owned(), v.to_owned()));
    }
    if !extra.is_empty() && !matches!(cli.global.driver, DriverKind::Kafka) {
        bail!("-X sets librdkafka properties: only for --driver kafka");
    }
    let driver: Box<dyn Driver> = match cli.global.driver {
        DriverKind::Kafka => Box::new(kafka::KafkaDriver::new(
            cli.global.brokers().to_owned(),
            extra,
        )),
        DriverKind::Amqp => Box::new(amqp::AmqpDriver::new(
            cli.global.brokers().to_owned(),
            amqp::AmqpOpts {
                queue_type: cli.global.amqp_queue_type,
                prefetch: cli.global.amqp_prefetch,
            },
        )?),
        DriverKind::Jetstream => Box::new(nats::NatsDriver::new(
            cli.global.brokers().to_owned(),
            nats::Flavor::JetStream,
        )?),
        DriverKind::Nats => Box::new(nats::NatsDriver::new(
            cli.global.brokers().to_owned(),
            nats::Flavor::Core,
        )?),
        DriverKind::Http => Box::new(http::HttpDriver::new(cli.global.brokers())),
    };
    let (name, run, producer) = match &cli.workload {
        Workload::Produce { run, producer, .. } => ("produce", run, producer),
        Workload::Consume { run, producer, .. } => ("consume", run, producer),
        Workload::E2e { run, producer } => ("e2e", run, producer),
        Workload::Latency { run, producer, .. } => ("latency", run, producer),
        Workload::Fanout { run, producer, .. } => ("fanout", run, producer),
        Workload::Partitions { run, producer, .. } => ("partitions", run, producer),
        Workload::Queue { run, producer, .. } => ("queue", run, producer),
        Workload::Plot { .. }
        | Workload::Disk { .. }
        | Workload::Loopback { .. }
        | Workload::OtlpSink { .. } => {
            unreachable!("handled above")
        }
    };
    let mut run = run.clone();
    let partitions = *run.partitions.get_or_insert(match &cli.workload {
        Workload::Partitions { .. } => 1000,
        Workload::Queue { consumers, .. } => (*consumers).clamp(1, 100_000) as i32,
        _ => 1,
    });
    if name == "queue" && !driver.retains() {
        bail!(
            "queue needs a broker that keeps messages until a consumer acknowledges them; \
             the {} driver does not (use http, kafka, jetstream or amqp)",
            driver.name()
        );
    }
    let keys = *run.keys.get_or_insert(if name == "partitions" {
        4 * partitions as u64
    } else {
        0
    });
    let mut producer = producer.clone();
    if name == "latency" || matches!(cli.workload, Workload::Queue { rate: Some(_), .. }) {
        producer.linger_ms.get_or_insert(0);
    }
    producer.linger_ms.get_or_insert(5);
    let stop = run.stop()?;
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let run_id = format!(
        "wharf-bench-{name}-{}-{}",
        started.as_millis(),
        std::process::id()
    );
    let topic = run_id.clone();
    let machine = report::Machine::probe();
    driver.create_topic(&topic, partitions)?;
    stop_on_interrupt();
    eprintln!(
        "{name}: topic {topic} ({} partitions) on {} ({})",
        partitions,
        cli.global.brokers(),
        driver.name()
    );

    let progress = Arc::new(Progress::default());
    let params = Params {
        driver: driver.as_ref(),
        topic: &topic,
        size: run.size as usize,
        keys,
        stop,
        producer: producer.opts(),
        progress: progress.clone(),
        samples: run.latency_samples.as_deref(),
    };
    let done = Arc::new(AtomicBool::new(false));
    let ticker = report::spawn_progress(name, stop, progress, done.clone());
    let outcome = match &cli.workload {
        Workload::Produce { producers, .. } => workload::produce(&params, (*producers).max(1)),
        Workload::Consume { consumers, .. } => {
            workload::consume(&params, (*consumers).max(1), &run_id)
        }
        Workload::E2e { .. } => workload::e2e(&params, &run_id),
        Workload::Latency { rate, .. } => workload::latency(&params, *rate, &run_id),
        Workload::Fanout { groups, .. } => workload::fanout(&params, (*groups).max(1), &run_id),
        Workload::Partitions { consumers, .. } => {
            workload::partitions(&params, (*consumers).max(1), &run_id)
        }
        Workload::Queue {
            consumers, rate, ..
        } => workload::queue(&params, (*consumers).max(1), *rate, &run_id),
        Workload::Plot { .. }
        | Workload::Disk { .. }
        | Workload::Loopback { .. }
        | Workload::OtlpSink { .. } => {
            unreachable!("handled above")
        }
    };
    done.store(true, Ordering::Relaxed);
    let _ = ticker.join();
    if !cli.global.keep {
        if let Err(e) = driver.delete_topic(&topic) {
            eprintln!("warning: {e:#}");
        }
    }
    if workload::INTERRUPTED.load(Ordering::Relaxed) {
        eprintln!("interrupted; no results");
        std::process::exit(130);
    }
    let outcome = outcome?;

    let extra = match &cli.workload {
        Workload::Produce { producers, .. } => serde_json::json!({ "producers": producers }),
        Workload::Consume { consumers, .. } => serde_json::json!({ "consumers": consumers }),
        Workload::E2e { .. } => serde_json::json!({}),
        Workload::Latency { rate, .. } => serde_json::json!({ "rate": rate }),
        Workload::Fanout { groups, .. } => serde_json::json!({ "groups": groups }),
        Workload::Partitions { consumers, .. } => serde_json::json!({ "consumers": consumers }),
        Workload::Queue {
            consumers, rate, ..
        } => serde_json::json!({ "consumers": consumers, "rate": rate }),
        Workload::Plot { .. }
        | Workload::Disk { .. }
        | Workload::Loopback { .. }
        | Workload::OtlpSink { .. } => {
            unreachable!("handled above")
        }
    };
    let mut params_json = serde_json::json!({ "run": run, "producer": producer });
    if let (DriverKind::Amqp, Some(all)) = (cli.global.driver, params_json.as_object_mut()) {
        all.insert(
            "amqp".to_owned(),
            serde_json::json!({
                "queue_type": cli.global.amqp_queue_type,
                "prefetch": cli.global.amqp_prefetch,
            }),
        );
    }
    if let (Some(all), serde_json::Value::Object(extra)) = (params_json.as_object_mut(), extra) {
        all.extend(extra);
    }
    let report = report::Report::new(
        name,
        &cli.global,
        &topic,
        started.as_secs(),
        params_json,
        &outcome,
        machine,
    );
    print!("{}", report.table());
    if let Some(path) = &cli.global.plot {
        let curve = report.latency.as_ref().map(|l| l.curve.clone());
        let Some(curve) = curve else {
            bail!("--plot: this run measured no latency (use e2e, latency, fanout, partitions or queue)");
        };
        let label = format!("{} {name}", report.driver);
        plot::draw(
            path,
            &format!("{name}: end-to-end latency by percentile"),
            &[plot::Series { label, curve }],
        )?;
    }
    if let Some(path) = &cli.global.json {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn plot_reports(out: &std::path::Path, title: &str, reports: &[String]) -> Result<()> {
    let mut series = Vec::new();
    for r in reports {
        let (label, file) = match r.split_once('=') {
            Some((label, file)) => (label.to_owned(), PathBuf::from(file)),
            None => {
                let file = PathBuf::from(r);
                let label = file
                    .file_stem()
                    .map_or_else(|| r.clone(), |s| s.to_string_lossy().into_owned());
                (label, file)
            }
        };
        series.push(plot::series_from_report(label, &file)?);
    }
    plot::draw(out, title, &series)
}

/// On Ctrl-C or SIGTERM, tells the workload to stop (it then returns, its clients are
/// closed and the topic is deleted as after any run); a second signal exits at once.
fn stop_on_interrupt() {
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            else {
                return;
            };
            for _ in 0..2 {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                if workload::INTERRUPTED.swap(true, Ordering::Relaxed) {
                    std::process::exit(130);
                }
                eprintln!("interrupted: stopping (again to exit at once)");
            }
        });
    });
}
