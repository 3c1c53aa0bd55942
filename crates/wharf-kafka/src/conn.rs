//! One client connection: read a frame, answer it, repeat; answers leave in request
//! order.
//!
//! Produce requests are pipelined: once a produce request's batches are written (in
//! arrival order), the connection reads and starts the next request while the first
//! waits for its fsync, so a client with several produce requests in flight (librdkafka
//! sends up to `max.in.flight`) gets them covered by shared fsyncs (group commit)
//! instead of one fsync each, one after the other. Any other request first waits until
//! every earlier answer is sent, then runs alone, as on a Kafka broker.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::{debug, info, warn};
use wharf_core::Broker;

use crate::api::{self, Reply, Started};
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
    /// The client id of the connection's first request (clients send the same one on
    /// every request of a connection), for logs and traces.
    pub client_id: Option<Arc<str>>,
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

/// Produce requests a connection may have written and waiting for their fsync before it
/// stops reading (and so, through TCP, slows the client down). librdkafka's idempotent
/// producers keep at most 5 in flight; others may send more.
pub const MAX_PRODUCES_IN_FLIGHT: usize = 32;

type Reader = BufReader<OwnedReadHalf>;
type ReadOutcome = (Reader, Result<Option<Bytes>, FrameError>);

/// Reads the next frame, handing the reader back: a future that owns its reader, so
/// waiting for answers meanwhile never cancels a read halfway through a frame.
async fn next_frame(mut rd: Reader, max: u32) -> ReadOutcome {
    let frame = read_frame(&mut rd, max).await;
    (rd, frame)
}

/// What a connection waits for between requests.
enum Next {
    Answer(Result<Reply, ConnError>),
    Frame(ReadOutcome),
    Stop,
}

/// A produce answer in flight. Only the oldest is polled: the work it waits for (the
/// append's task on the blocking pool) goes on by itself, and answers leave in order.
type Answer = Pin<Box<dyn Future<Output = Result<Reply, ConnError>> + Send>>;

/// The oldest answer in flight (pending forever when there is none).
async fn oldest(in_flight: &mut VecDeque<Answer>) -> Result<Reply, ConnError> {
    match in_flight.front_mut() {
        Some(answer) => answer.await,
        None => std::future::pending().await,
    }
}

async fn send(wr: &mut OwnedWriteHalf, reply: Reply) -> Result<(), ConnError> {
    match reply {
        Reply::Send(bytes) => wr.write_all(&bytes).await?,
        Reply::None => {}
    }
    Ok(())
}

/// Sends every answer in flight, in order.
async fn drain(wr: &mut OwnedWriteHalf, in_flight: &mut VecDeque<Answer>) -> Result<(), ConnError> {
    while !in_flight.is_empty() {
        send_oldest(wr, in_flight).await?;
    }
    Ok(())
}

/// Waits for the oldest answer in flight and sends it.
async fn send_oldest(
    wr: &mut OwnedWriteHalf,
    in_flight: &mut VecDeque<Answer>,
) -> Result<(), ConnError> {
    let reply = oldest(in_flight).await;
    in_flight.pop_front();
    send(wr, reply?).await
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

/// Counts a connection in the metrics while it is open, also when its task is aborted.
struct OpenConnection;

impl OpenConnection {
    fn new() -> OpenConnection {
        let m = &crate::metrics::METRICS;
        m.connections_accepted.increment(1);
        m.connections_open.increment(1.0);
        OpenConnection
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        crate::metrics::METRICS.connections_open.decrement(1.0);
    }
}

pub async fn run(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: Arc<Ctx>,
    mut stop: watch::Receiver<bool>,
) {
    debug!(%peer, "Kafka connection accepted");
    let opened = Instant::now();
    let _open = OpenConnection::new();
    let mut ctx = Arc::new(Ctx {
        peer: Some(peer),
        ..Ctx::clone(&ctx)
    });
    let mut requests: u64 = 0;
    let (rd, mut wr) = stream.into_split();
    let max = ctx.config.max_request_bytes;
    let mut reading: Pin<Box<dyn Future<Output = ReadOutcome> + Send>> =
        Box::pin(next_frame(BufReader::new(rd), max));
    let mut in_flight: VecDeque<Answer> = VecDeque::new();
    let result: Result<(), ConnError> = async {
        loop {
            let next = tokio::select! {
                biased;
                reply = oldest(&mut in_flight), if !in_flight.is_empty() => Next::Answer(reply),
                read = &mut reading => Next::Frame(read),
                _ = stop.wait_for(|s| *s) => Next::Stop,
            };
            let (rd, frame) = match next {
                Next::Answer(reply) => {
                    in_flight.pop_front();
                    send(&mut wr, reply?).await?;
                    continue;
                }
                Next::Frame(read) => read,
                // Produces already written are answered; nothing new is started.
                Next::Stop => return drain(&mut wr, &mut in_flight).await,
            };
            // A bad frame or request closes the connection, but the produce requests
            // before it are written: answer them first, so their producer does not
            // send them again.
            let frame = match frame {
                Ok(Some(frame)) => {
                    if requests == 0 {
                        // One line per connection, once the client has said who it is.
                        let client_id: Arc<str> = client_id_of(&frame).into();
                        info!(%peer, client_id = %client_id, "Kafka connection opened");
                        ctx = Arc::new(Ctx {
                            client_id: Some(client_id),
                            ..Ctx::clone(&ctx)
                        });
                    }
                    requests += 1;
                    frame
                }
                Ok(None) => return drain(&mut wr, &mut in_flight).await,
                Err(e) => {
                    drain(&mut wr, &mut in_flight).await?;
                    return Err(e.into());
                }
            };
            if api::pipelines(&frame) {
                // Written in arrival order; the answer waits for the fsync meanwhile.
                let started = match api::start(&ctx, frame).await {
                    Ok(started) => started,
                    Err(e) => {
                        drain(&mut wr, &mut in_flight).await?;
                        return Err(e);
                    }
                };
                match started {
                    Started::Pending(answer) => in_flight.push_back(answer),
                    Started::Done(reply) => {
                        drain(&mut wr, &mut in_flight).await?;
                        send(&mut wr, reply).await?;
                    }
                }
                while in_flight.len() >= MAX_PRODUCES_IN_FLIGHT {
                    send_oldest(&mut wr, &mut in_flight).await?;
                }
            } else {
                // Anything else runs alone, after every earlier answer is sent.
                drain(&mut wr, &mut in_flight).await?;
                // A request in hand is finished even during a stop (bounded by the
                // listener's drain timeout), so a produce that reached the log is
                // answered; only a waiting fetch, which changes nothing, is dropped at once.
                let waits = api::only_waits(&frame) || parks(&frame);
                let handling = api::handle(&ctx, frame);
                tokio::pin!(handling);
                let reply = tokio::select! {
                    reply = &mut handling => reply?,
                    _ = stop.wait_for(|s| *s), if waits => return Ok(()),
                };
                send(&mut wr, reply).await?;
            }
            reading = Box::pin(next_frame(rd, max));
        }
    }
    .await;
    let client_id = ctx.client_id.as_deref().unwrap_or("");
    let open_ms = u64::try_from(opened.elapsed().as_millis()).unwrap_or(u64::MAX);
    match result {
        // A connection that never sent a request (a port probe) is not worth a line.
        Ok(()) if requests == 0 => debug!(%peer, "Kafka connection closed before any request"),
        Ok(()) => info!(%peer, %client_id, requests, open_ms, "Kafka connection closed"),
        // A client going away (reset, broken pipe) is routine, not worth a warning.
        Err(ConnError::Write(e)) | Err(ConnError::Frame(FrameError::Io(e))) => {
            info!(%peer, %client_id, requests, open_ms, error = %e, "Kafka connection lost")
        }
        Err(e) => {
            warn!(%peer, %client_id, requests, open_ms, error = %e, "closing Kafka connection")
        }
    }
}

/// The client id in a request header (v1 and later: after the API key, version and
/// correlation id, an INT16 length, -1 for null, and that many bytes). Empty when the
/// frame has none or it is not UTF-8; at most 256 characters are kept.
fn client_id_of(frame: &[u8]) -> String {
    let Some(&[hi, lo]) = frame.get(8..10) else {
        return String::new();
    };
    let Ok(len) = usize::try_from(i16::from_be_bytes([hi, lo])) else {
        return String::new();
    };
    let Some(bytes) = frame.get(10..10 + len) else {
        return String::new();
    };
    let id = String::from_utf8_lossy(bytes);
    id.chars().take(256).collect()
}

#[cfg(test)]
mod tests {
    use super::client_id_of;

    #[test]
    fn client_id_is_read_from_the_request_header() {
        let mut frame = vec![0, 1, 0, 11, 0, 0, 0, 7];
        frame.extend_from_slice(&6i16.to_be_bytes());
        frame.extend_from_slice(b"rdkafka");
        assert_eq!(client_id_of(&frame), "rdkafk");
        let mut null = vec![0, 1, 0, 11, 0, 0, 0, 7];
        null.extend_from_slice(&(-1i16).to_be_bytes());
        assert_eq!(client_id_of(&null), "");
        assert_eq!(client_id_of(&[0, 1, 0]), "");
        let mut short = vec![0, 1, 0, 11, 0, 0, 0, 7, 0, 50];
        short.extend_from_slice(b"abc");
        assert_eq!(client_id_of(&short), "");
    }
}
