//! One client connection: read a frame, answer it, repeat.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::{debug, warn};
use wharf_core::Broker;

use crate::api::{self, Reply};
use crate::frame::{read_frame, FrameError};
use crate::KafkaConfig;

/// What every request handler can see.
#[derive(Clone)]
pub struct Ctx {
    pub broker: Arc<Broker>,
    pub config: KafkaConfig,
    /// Host and port returned by Metadata, DescribeCluster and FindCoordinator.
    pub advertised: (String, i32),
    /// The client's address (a connection's own copy of the context carries it), shown
    /// as a group member's `client_host`.
    pub peer: Option<SocketAddr>,
}

/// Why a connection is dropped.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("undecodable {api} v{version} request: {reason}")]
    Decode {
        api: &'static str,
        version: i16,
        reason: String,
    },
    #[error("encoding the {api} v{version} response failed: {reason}")]
    Encode {
        api: &'static str,
        version: i16,
        reason: String,
    },
    #[error("writing to the socket: {0}")]
    Write(#[from] std::io::Error),
}

/// Whether the request is a JoinGroup or SyncGroup, which may wait for a whole
/// rebalance: like a waiting fetch, it is dropped unanswered when the broker stops (the
/// client rejoins after reconnecting), so a parked member cannot hold up a shutdown.
fn parks(frame: &bytes::Bytes) -> bool {
    use kafka_protocol::messages::ApiKey;
    let [hi, lo, ..] = frame[..] else {
        return false;
    };
    let key = i16::from_be_bytes([hi, lo]);
    key == ApiKey::JoinGroup as i16 || key == ApiKey::SyncGroup as i16
}

pub async fn run(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: Arc<Ctx>,
    mut stop: watch::Receiver<bool>,
) {
    debug!(%peer, "Kafka connection opened");
    let ctx = Arc::new(Ctx {
        peer: Some(peer),
        ..Ctx::clone(&ctx)
    });
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let result: Result<(), ConnError> = async {
        loop {
            let frame = tokio::select! {
                f = read_frame(&mut rd, ctx.config.max_request_bytes) => f?,
                _ = stop.wait_for(|s| *s) => return Ok(()),
            };
            let Some(frame) = frame else { return Ok(()) };
            // A request in hand is finished even during a stop (bounded by the
            // listener's drain timeout), so a produce that reached the log is answered;
            // only a waiting fetch, which changes nothing, is dropped at once.
            let waits = api::only_waits(&frame) || parks(&frame);
            let handling = api::handle(&ctx, frame);
            tokio::pin!(handling);
            let reply = tokio::select! {
                reply = &mut handling => reply?,
                _ = stop.wait_for(|s| *s), if waits => return Ok(()),
            };
            match reply {
                Reply::Send(bytes) => wr.write_all(&bytes).await?,
                Reply::None => {}
            }
        }
    }
    .await;
    match result {
        Ok(()) => debug!(%peer, "Kafka connection closed"),
        // A client going away (reset, broken pipe) is routine, not worth a warning.
        Err(ConnError::Write(e)) | Err(ConnError::Frame(FrameError::Io(e))) => {
            debug!(%peer, error = %e, "Kafka connection lost")
        }
        Err(e) => warn!(%peer, error = %e, "closing Kafka connection"),
    }
}
