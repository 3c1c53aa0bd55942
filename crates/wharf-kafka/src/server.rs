//! The TCP listener: one task per connection, stopped together on shutdown.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{info, warn};
use wharf_core::Broker;

use crate::conn::{self, Ctx};
use crate::KafkaConfig;

/// How long open connections get to finish the request in hand after a stop.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// A bound Kafka listener, not yet serving.
pub struct KafkaListener {
    listener: TcpListener,
    ctx: Arc<Ctx>,
}

impl KafkaListener {
    /// Binds `addr`. Port 0 picks a free port; see [`KafkaListener::local_addr`].
    pub async fn bind(
        addr: SocketAddr,
        broker: Arc<Broker>,
        config: KafkaConfig,
    ) -> io::Result<KafkaListener> {
        let listener = TcpListener::bind(addr).await?;
        // Register the connection and request metrics now, so a scrape shows them at 0
        // before the first client.
        LazyLock::force(&crate::metrics::METRICS);
        let bound = listener.local_addr()?;
        let advertised = match &config.advertised_addr {
            Some((host, port)) => (host.clone(), i32::from(*port)),
            None => (bound.ip().to_string(), i32::from(bound.port())),
        };
        Ok(KafkaListener {
            listener,
            ctx: Arc::new(Ctx {
                broker,
                config,
                advertised,
                peer: None,
                client_id: None,
            }),
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The host and port Metadata returns.
    pub fn advertised_addr(&self) -> (&str, i32) {
        (&self.ctx.advertised.0, self.ctx.advertised.1)
    }

    /// Accepts connections until `stop` resolves, then closes them: each gets
    /// [`DRAIN_TIMEOUT`] to finish the request in hand.
    pub async fn serve(self, stop: impl Future<Output = ()>) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut conns = JoinSet::new();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        conns.spawn(conn::run(stream, peer, Arc::clone(&self.ctx), stop_rx.clone()));
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off a little rather
                        // than spin.
                        warn!(error = %e, "accepting a Kafka connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                // Reap finished connections so the set does not grow without bound.
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
        drop(self.listener);
        let _ = stop_tx.send(true);
        let open = conns.len();
        if open > 0 {
            info!(connections = open, "closing Kafka connections");
        }
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
            while conns.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!("Kafka connections still busy {DRAIN_TIMEOUT:?} after the stop; closing them");
            conns.shutdown().await;
        }
        info!("Kafka listener stopped");
    }
}
