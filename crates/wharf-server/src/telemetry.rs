//! Logs and traces of the `wharf` process: the log subscriber (text or JSON on stderr,
//! levels from `RUST_LOG`) and, with `--otlp-endpoint`, the OpenTelemetry SDK that
//! exports the spans of traced messages over OTLP/gRPC.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};
use opentelemetry_sdk::Resource;
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;
use wharf_core::otel::MessageTracer;

use crate::config::LogFormat;

/// How often batched spans leave for the collector (shorter rounds, smaller bursts of
/// export work on the broker's cores).
const EXPORT_EVERY: Duration = Duration::from_millis(200);
/// Spans waiting for export; past it new ones are dropped (the broker never waits for
/// a collector). The queue's slots are allocated up front: 8,192 cost a few MiB.
const EXPORT_QUEUE: usize = 8_192;
/// Spans per export request (about 0.5 MiB of OTLP; collectors take 4 MiB by default).
const EXPORT_BATCH: usize = 2048;
/// Time given to the last export at shutdown.
const EXPORT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Installs the log subscriber: `format` on stderr, filtered by `RUST_LOG` (default
/// `info`).
pub fn init_logging(format: LogFormat) {
    let filter = match EnvFilter::try_from_default_env() {
        Ok(f) => f,
        Err(e) => {
            if std::env::var_os("RUST_LOG").is_some() {
                eprintln!("wharf: ignoring RUST_LOG ({e}); logging at info");
            }
            EnvFilter::new("info")
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
}

/// The OpenTelemetry pipeline while tracing is on.
pub struct Tracing {
    provider: SdkTracerProvider,
    pub tracer: Arc<MessageTracer>,
}

impl Tracing {
    /// Starts exporting to `endpoint` (OTLP/gRPC). Must run inside the tokio runtime
    /// (the gRPC client lives there). The collector need not be up yet: the exporter
    /// connects when it first sends, and retries with each batch.
    pub fn start(endpoint: &str) -> anyhow::Result<Tracing> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(Duration::from_secs(5))
            .build()
            .with_context(|| format!("setting up the OTLP exporter for {endpoint}"))?;
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_scheduled_delay(EXPORT_EVERY)
                    .with_max_queue_size(EXPORT_QUEUE)
                    .with_max_export_batch_size(EXPORT_BATCH)
                    .build(),
            )
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            // A message's spans are sampled as its producer's were.
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
            .with_resource(
                Resource::builder()
                    .with_service_name("wharf")
                    .with_attribute(opentelemetry::KeyValue::new(
                        "service.version",
                        env!("CARGO_PKG_VERSION"),
                    ))
                    .build(),
            )
            .build();
        let tracer = BoxedTracer::new(Box::new(provider.tracer("wharf")));
        info!(
            otlp_endpoint = endpoint,
            "tracing messages that carry a traceparent header"
        );
        Ok(Tracing {
            provider,
            tracer: Arc::new(MessageTracer::new(tracer)),
        })
    }

    /// Sends what is still queued and stops the exporter.
    pub async fn shutdown(self) {
        let provider = self.provider;
        let done = tokio::task::spawn_blocking(move || {
            provider.shutdown_with_timeout(EXPORT_SHUTDOWN_TIMEOUT)
        })
        .await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "the last spans could not be exported"),
            Err(e) => warn!(error = %e, "stopping the span exporter failed"),
        }
    }
}
