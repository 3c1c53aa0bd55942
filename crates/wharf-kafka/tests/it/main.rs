//! Tests of the Kafka front-end against an in-process broker on an ephemeral port, with
//! kafka-protocol's client side: one test binary, one module per area.

mod admin;
mod captured;
mod framing;
mod groups;
mod idempotence;
mod produce_fetch;
mod replay;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use wharf_core::{Broker, BrokerConfig};
use wharf_kafka::{KafkaConfig, KafkaListener};
use wharf_log::batch::{Record, RecordBatchBuilder};

// As in the `wharf` binary: hostile array lengths must not abort the test process.
#[global_allocator]
static ALLOC: wharf_kafka::LazyHugeAlloc = wharf_kafka::LazyHugeAlloc;

/// Generous bound on any single exchange, so a broken broker fails a test instead of
/// hanging it.
const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// A broker on a temporary directory with a Kafka listener on 127.0.0.1:0. Dropping it
/// stops the listener and the broker.
pub struct TestBroker {
    pub addr: SocketAddr,
    pub broker: Arc<Broker>,
    stop: Option<oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl TestBroker {
    pub async fn start() -> TestBroker {
        TestBroker::start_with(KafkaConfig::default()).await
    }

    pub async fn start_with(config: KafkaConfig) -> TestBroker {
        let dir = tempfile::tempdir().unwrap();
        let broker = Arc::new(Broker::open(BrokerConfig::new(dir.path())).await.unwrap());
        let listener = KafkaListener::bind("127.0.0.1:0".parse().unwrap(), broker.clone(), config)
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel();
        let served = tokio::spawn(listener.serve(async {
            let _ = rx.await;
        }));
        TestBroker {
            addr,
            broker,
            stop: Some(tx),
            served: Some(served),
            _dir: dir,
        }
    }

    pub async fn connect(&self) -> Client {
        Client {
            stream: TcpStream::connect(self.addr).await.unwrap(),
            next_correlation: 1,
        }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(served) = self.served.take() {
            let _ = served.await;
        }
        self.broker.shutdown().await.unwrap();
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// A raw Kafka connection.
pub struct Client {
    pub stream: TcpStream,
    next_correlation: i32,
}

impl Client {
    /// Sends `req` at `version` and returns its correlation id.
    pub async fn send<R: Request>(&mut self, req: &R, version: i16) -> i32 {
        let (correlation_id, frame) = self.encode(req, version);
        self.write_all(&frame).await;
        correlation_id
    }

    /// The frame (size prefix included) for `req` at `version`, with the next
    /// correlation id, without sending it.
    pub fn encode<R: Request>(&mut self, req: &R, version: i16) -> (i32, Vec<u8>) {
        let correlation_id = self.next_correlation;
        self.next_correlation += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("wharf-test")));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, R::header_version(version))
            .unwrap();
        req.encode(&mut body, version).unwrap();
        let mut frame = Vec::with_capacity(body.len() + 4);
        frame.extend_from_slice(&(body.len() as i32).to_be_bytes());
        frame.extend_from_slice(&body);
        (correlation_id, frame)
    }

    /// Writes bytes as they are (whole frames, several at once).
    pub async fn write_all(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Writes `body` with its size prefix.
    pub async fn send_raw(&mut self, body: &[u8]) {
        let mut frame = BytesMut::new();
        frame.put_i32(body.len() as i32);
        frame.put_slice(body);
        self.stream.write_all(&frame).await.unwrap();
    }

    /// Reads one response frame (without the size), or `None` if the broker closed the
    /// connection.
    pub async fn recv_frame(&mut self) -> Option<Bytes> {
        tokio::time::timeout(IO_TIMEOUT, async {
            let mut size = [0u8; 4];
            self.stream.read_exact(&mut size).await.ok()?;
            let mut buf = vec![0u8; i32::from_be_bytes(size) as usize];
            self.stream.read_exact(&mut buf).await.ok()?;
            Some(Bytes::from(buf))
        })
        .await
        .expect("no response within the timeout")
    }

    /// Reads the response to a request of type `R` sent at `version`.
    pub async fn recv<R: Request>(&mut self, version: i16, correlation_id: i32) -> R::Response {
        let mut frame = self.recv_frame().await.expect("connection closed");
        let api = ApiKey::try_from(R::KEY).unwrap();
        let header =
            ResponseHeader::decode(&mut frame, api.response_header_version(version)).unwrap();
        assert_eq!(header.correlation_id, correlation_id);
        let resp = R::Response::decode(&mut frame, version).unwrap();
        assert!(
            !frame.has_remaining(),
            "{} bytes left over",
            frame.remaining()
        );
        resp
    }

    pub async fn call<R: Request>(&mut self, req: &R, version: i16) -> R::Response {
        let id = self.send(req, version).await;
        self.recv::<R>(version, id).await
    }

    /// True once the broker has closed the connection (reads EOF or a reset).
    pub async fn is_closed(&mut self) -> bool {
        let mut buf = [0u8; 1];
        matches!(
            tokio::time::timeout(IO_TIMEOUT, self.stream.read(&mut buf)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

/// A record's key and value, either of which may be null.
pub type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// One uncompressed RecordBatch v2 with these records.
pub fn batch(records: &[KeyValue<'_>]) -> Vec<u8> {
    let mut b = RecordBatchBuilder::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for (key, value) in records {
        b.push(&Record {
            key: *key,
            value: *value,
            headers: vec![("h", Some(b"v"))],
            timestamp: now,
        });
    }
    b.build()
}

pub fn topic(name: &str) -> kafka_protocol::messages::TopicName {
    kafka_protocol::messages::TopicName(StrBytes::from_string(name.to_string()))
}
