//! `wharf-bench otlp-sink`: the smallest OpenTelemetry collector, an OTLP/gRPC trace
//! endpoint that counts the spans it receives and drops them. It stands in for a real
//! collector when measuring what exporting traces costs a broker, without a collector's
//! own work (processing, storage) on the shared cores.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use serde::Serialize;

#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    spans: AtomicU64,
}

#[derive(Clone, Default)]
struct Sink(Arc<Counts>);

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans: usize = request
            .get_ref()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.0.requests.fetch_add(1, Ordering::Relaxed);
        self.0.spans.fetch_add(spans as u64, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// What the sink received, printed as JSON when it stops.
#[derive(Debug, Serialize)]
pub struct Received {
    pub export_requests: u64,
    pub spans: u64,
}

/// Serves on `addr` until SIGINT or SIGTERM, then returns what it received.
pub fn run(addr: SocketAddr) -> Result<Received> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let sink = Sink::default();
    let counts = Arc::clone(&sink.0);
    rt.block_on(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        let stop = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        };
        eprintln!("otlp-sink listening on {addr}");
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(sink))
            .serve_with_shutdown(addr, stop)
            .await
            .with_context(|| format!("serving OTLP on {addr}"))
    })?;
    Ok(Received {
        export_requests: counts.requests.load(Ordering::Relaxed),
        spans: counts.spans.load(Ordering::Relaxed),
    })
}
