//! The `wharf` binary: parses settings, opens the broker, serves the front-ends, and
//! shuts everything down cleanly on SIGINT or SIGTERM.

mod config;
mod http;
mod metrics;
mod telemetry;
mod trace;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::serve::ListenerExt;
use clap::{CommandFactory, FromArgMatches};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tracing::{error, info, warn};
use wharf_core::history::MessageHistory;
use wharf_core::observe::QueueObserver;
use wharf_core::queue::Queues;
use wharf_core::{Broker, BrokerConfig};
use wharf_kafka::{KafkaConfig, KafkaListener};

use crate::config::{Cli, Command, ServeConfig};
use crate::telemetry::Tracing;

/// Survives the huge array reservations a hostile Kafka request can cause (see
/// `wharf_kafka::LazyHugeAlloc`).
#[global_allocator]
static ALLOC: wharf_kafka::LazyHugeAlloc = wharf_kafka::LazyHugeAlloc;

/// How long in-flight HTTP requests get to finish after a shutdown signal.
const HTTP_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    // Usage errors and --help/--version exit here, with clap's own messages and codes.
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let result = match &cli.command {
        Command::Serve(args) => ServeConfig::resolve(args, matches.subcommand_matches("serve"))
            .and_then(|config| {
                telemetry::init_logging(config.log_format.0);
                run_serve(config)
            }),
        Command::Trace(args) => {
            telemetry::init_logging(config::LogFormat::Text);
            trace::run(args)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, with the cause chain: "wharf: error: data directory … is locked: …"
            eprintln!("wharf: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_serve(config: ServeConfig) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("wharf-worker")
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(serve(config));
    // Everything the broker runs has been stopped by `serve`; do not hang on a stray
    // blocking task at exit.
    runtime.shutdown_timeout(Duration::from_secs(5));
    result
}

async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    // Install the handlers before anything slow, so a signal during recovery is not
    // fatal: it is noticed once the broker is open, which then shuts down cleanly.
    let stop = watch_for_shutdown_signals()?;

    let (data_dir, data_dir_from) = &config.data_dir;
    let (kafka_addr, kafka_from) = config.kafka_addr;
    let (http_addr, http_from) = config.http_addr;
    let (flush, flush_from) = config.flush;
    let (advertised, advertised_from) = config.kafka_advertised_addr.clone();
    let (max_request, max_request_from) = config.kafka_max_request_bytes;
    let (auto_create, auto_create_from) = config.auto_create_topics;
    let (log_format, log_format_from) = config.log_format;
    let (otlp_endpoint, otlp_endpoint_from) = config.otlp_endpoint.clone();
    let (partition_labels, partition_labels_from) = config.metrics_partition_labels;
    info!(
        version = env!("CARGO_PKG_VERSION"),
        data_dir = %data_dir.display(),
        data_dir_from = %data_dir_from,
        kafka_addr = %kafka_addr,
        kafka_addr_from = %kafka_from,
        http_addr = %http_addr,
        http_addr_from = %http_from,
        flush = %flush,
        flush_from = %flush_from,
        kafka_advertised_addr = %advertised.as_ref().map_or_else(|| "bound".to_string(), ToString::to_string),
        kafka_advertised_addr_from = %advertised_from,
        kafka_max_request_bytes = max_request,
        kafka_max_request_bytes_from = %max_request_from,
        auto_create_topics = auto_create,
        auto_create_topics_from = %auto_create_from,
        log_format = %log_format,
        log_format_from = %log_format_from,
        otlp_endpoint = otlp_endpoint.as_deref().unwrap_or("none"),
        otlp_endpoint_from = %otlp_endpoint_from,
        metrics_partition_labels = partition_labels,
        metrics_partition_labels_from = %partition_labels_from,
        config_file = ?config.config_file,
        "starting wharf"
    );

    // Metrics: the recorder goes in before the broker opens, so the handles the
    // libraries take (per topic, per log) are live ones.
    let metrics =
        Arc::new(metrics::install(partition_labels).context("installing the metrics recorder")?);
    metrics.spawn_upkeep();

    let mut broker_config = BrokerConfig::new(data_dir.clone());
    broker_config.flush = flush;
    let tracing = otlp_endpoint.as_deref().map(Tracing::start).transpose()?;
    let broker = Arc::new(Broker::open(broker_config).await?);
    if let Some(t) = &tracing {
        broker.set_tracer(Arc::clone(&t.tracer));
    }
    let topics = broker.list_topics();
    let partitions: u32 = topics.iter().map(|t| t.partitions).sum();
    info!(
        topics = topics.len(),
        partitions,
        names = ?topics.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        "topics recovered"
    );

    let kafka_config = KafkaConfig {
        max_request_bytes: max_request,
        advertised_addr: advertised.map(|a| (a.host, a.port)),
        auto_create_topics: auto_create,
        ..KafkaConfig::default()
    };
    let queues = Queues::open(Arc::clone(&broker)).await?;
    if let Some(t) = &tracing {
        queues.add_observer(Arc::clone(&t.tracer) as Arc<dyn QueueObserver>);
    }
    let history = message_history(&config, &queues);
    let state = http::AppState {
        broker: Arc::clone(&broker),
        queues: queues.clone(),
        history,
        metrics,
    };
    let served = serve_listeners(state, kafka_addr, kafka_config, http_addr, stop).await;
    queues.close().await;
    let closed = broker
        .shutdown()
        .await
        .context("shutting down the broker (some data may not have been synced)");
    if let Some(t) = tracing {
        t.shutdown().await;
    }
    match (served, closed) {
        (Ok(()), Ok(())) => {
            info!("wharf stopped");
            Ok(())
        }
        (Err(e), closed) => {
            if let Err(c) = closed {
                error!("{c:#}");
            }
            Err(e)
        }
        (Ok(()), Err(c)) => Err(c),
    }
}

/// The queue message history (`--history-window-ms`, `--history-max-messages`),
/// registered as an observer of the queues unless it is off.
fn message_history(config: &ServeConfig, queues: &Queues) -> Arc<MessageHistory> {
    let (window_ms, window_from) = config.history_window_ms;
    let (max_messages, max_from) = config.history_max_messages;
    let history = Arc::new(MessageHistory::new(window_ms, max_messages));
    if history.enabled() {
        queues.add_observer(history.clone());
    }
    info!(
        history_window_ms = window_ms,
        history_window_ms_from = %window_from,
        history_max_messages = max_messages,
        history_max_messages_from = %max_from,
        "queue message history {}",
        if history.enabled() { "on (in memory, lost on restart)" } else { "off" }
    );
    history
}

/// Binds the Kafka listener, then the HTTP listener (so an answering `/health` means
/// every listener is up), and serves both until `stop`.
async fn serve_listeners(
    state: http::AppState,
    kafka_addr: std::net::SocketAddr,
    kafka_config: KafkaConfig,
    http_addr: std::net::SocketAddr,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let kafka = KafkaListener::bind(kafka_addr, Arc::clone(&state.broker), kafka_config)
        .await
        .with_context(|| format!("binding the Kafka listener on {kafka_addr}"))?;
    let bound = kafka
        .local_addr()
        .with_context(|| format!("reading the address bound for {kafka_addr}"))?;
    let (host, port) = kafka.advertised_addr();
    info!(kafka_addr = %bound, advertised = %format!("{host}:{port}"), "Kafka listener listening");
    if bound.ip().is_unspecified() && host == bound.ip().to_string() {
        warn!(
            kafka_addr = %bound,
            "Kafka clients are told to connect to {host}:{port}, which they cannot reach; set --kafka-advertised-addr to a name they can"
        );
    }
    // Stopped when the HTTP server returns: after the shutdown signal, or at once when
    // the HTTP listener cannot be bound.
    let (kafka_stop, kafka_stopped) = watch::channel(false);
    let kafka_task = tokio::spawn(kafka.serve(stopped(kafka_stopped)));
    let http = serve_http(http_addr, state, stop).await;
    let _ = kafka_stop.send(true);
    if let Err(e) = kafka_task.await {
        error!(error = %e, "the Kafka listener task failed");
    }
    http
}

/// Binds the HTTP listener (only now that the broker is open) and serves until `stop`.
async fn serve_http(
    http_addr: std::net::SocketAddr,
    state: http::AppState,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(http_addr)
        .await
        .with_context(|| format!("binding the HTTP listener on {http_addr}"))?;
    let bound = listener
        .local_addr()
        .with_context(|| format!("reading the address bound for {http_addr}"))?;
    info!(http_addr = %bound, "HTTP API listening");
    info!("wharf ready");

    // Small requests and answers (a publish, an ack) go out at once rather than wait
    // for the peer's ACK of the previous segment (Nagle).
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            warn!(error = %e, "could not set TCP_NODELAY on an HTTP connection");
        }
    });
    let server =
        axum::serve(listener, http::router(state)).with_graceful_shutdown(stopped(stop.clone()));
    let mut server = tokio::spawn(async move { server.await });
    tokio::select! {
        joined = &mut server => {
            joined.context("the HTTP server task failed")?.context("serving HTTP")?;
        }
        () = async { stopped(stop).await; tokio::time::sleep(HTTP_DRAIN_TIMEOUT).await } => {
            warn!("HTTP requests still open {HTTP_DRAIN_TIMEOUT:?} after the shutdown signal; closing them");
            server.abort();
        }
    }
    Ok(())
}

/// Resolves once a shutdown was requested.
async fn stopped(mut stop: watch::Receiver<bool>) {
    // An error means the sender is gone, which only happens at exit: stop too.
    let _ = stop.wait_for(|s| *s).await;
}

/// Turns the first SIGINT or SIGTERM into `true` on the returned watch.
fn watch_for_shutdown_signals() -> anyhow::Result<watch::Receiver<bool>> {
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        info!("{name} received: stopping (no new connections, then flush and close)");
        let _ = tx.send(true);
        // Keep the handlers installed, so a second signal does not kill the process
        // halfway through closing the logs.
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            warn!("already shutting down");
        }
    });
    Ok(rx)
}
