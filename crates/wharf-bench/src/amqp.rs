//! The AMQP 0-9-1 driver: `lapin` on the driver's own tokio runtime, for RabbitMQ.
//!
//! The mapping:
//! - a topic is a durable `fanout` exchange named after the topic (partitions and
//!   keys do not apply: a fanout exchange ignores routing keys);
//! - a group is a durable queue named after the group, bound to the topic's exchange,
//!   declared by [`Driver::prepare_group`] (and again, idempotently, by
//!   [`Driver::consumer`]). Consumers of one group compete for its queue; every group's
//!   queue gets its own copy of every message. An exchange drops what no queue is
//!   bound to (and confirms it at once), so a producer to a topic without any group
//!   first declares a queue named after the topic, so that `produce` measures stored
//!   messages too;
//! - "acknowledged" is a publisher confirm (`confirm.select`) for a persistent message
//!   (`delivery_mode` 2). RabbitMQ's confirms guide: "for persistent messages routed to
//!   durable queues, this means persisting to disk"; a classic queue's message store
//!   writes (and syncs) in batches, so confirms come in batches too, and a persistent
//!   message that every queue delivered and had acked before it was written may be
//!   confirmed without ever reaching the disk (the 2011 announcement of confirms: "a
//!   persistent message is confirmed when it is persisted to disk or when it is
//!   consumed on every queue"). A quorum queue (`--amqp-queue-type quorum`) confirms
//!   once a quorum of its replicas (here: the one node) has the message in its Raft
//!   log, and Ra fsyncs that log before acting on an entry (Ra's log design notes:
//!   "all data needs to be safely persisted and fsync-ed to disk before it can be
//!   actioned"). A nack or a return (mandatory publish that no queue took) counts as
//!   a failure. `--acks 0` publishes transient messages without confirm mode; they
//!   count once written to the socket. `--acks 1` is the same as `all`: AMQP has no
//!   leader-only acknowledgement.
//!
//! Producers keep many publishes in flight: `send` hands the message to lapin (which
//! queues its frames in order) and returns; a task per message waits for its confirm.
//! A window bounds what is unconfirmed ([`WINDOW_PERMITS`]). `linger_ms`,
//! `batch_bytes` and `compression` are Kafka client settings with no AMQP equivalent
//! and are ignored.
//!
//! Consumers use manual acks and a prefetch window (`basic.qos`); each `poll` acks what
//! it handed out with one `basic.ack(multiple)`. AMQP has no committed positions, so
//! [`Consumer::commit`] returns `None`: an acked message is gone from the queue, and
//! what is left cannot be told apart from what was never routed there.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Waker};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{FutureExt, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use tokio::runtime::Runtime;
use tokio::sync::{Semaphore, TryAcquireError};

use crate::driver::{Acks, Consumer, Driver, Producer, ProducerOpts};

/// The queue type of the groups' queues (`x-queue-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    /// A classic durable queue: persistent messages are confirmed once written by the
    /// message store (in batches).
    Classic,
    /// A quorum queue (Raft): confirmed once fsynced to its log.
    Quorum,
}

impl QueueType {
    fn as_str(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
        }
    }
}

pub struct AmqpOpts {
    pub queue_type: QueueType,
    /// `basic.qos` prefetch count of every consumer.
    pub prefetch: u16,
}

pub struct AmqpDriver {
    url: String,
    opts: AmqpOpts,
    rt: Arc<Runtime>,
    /// Declares and deletes exchanges and queues.
    admin: Channel,
    _admin_conn: Connection,
    /// The queues declared for each topic, deleted with it.
    queues: Mutex<HashMap<String, Vec<String>>>,
}

const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Unconfirmed publishes a producer may have: a message takes one permit per
/// [`PERMIT_BYTES`] of payload (at least one), so up to 4096 small messages or 64 MiB
/// are in flight, whichever comes first. RabbitMQ confirms in batches as its store
/// writes them; a few thousand keep it busy without letting memory grow unbounded.
const WINDOW_PERMITS: u32 = 4096;
const PERMIT_BYTES: usize = 16 * 1024;

/// At most this many deliveries per `poll` call, so callers check their stop condition.
const POLL_BATCH: usize = 1000;

fn timed<T>(
    what: &str,
    f: impl Future<Output = lapin::Result<T>>,
) -> impl Future<Output = Result<T>> {
    let what = what.to_owned();
    async move {
        match tokio::time::timeout(ADMIN_TIMEOUT, f).await {
            Ok(r) => r.with_context(|| what.clone()),
            Err(_) => Err(anyhow!("{what}: no answer within {ADMIN_TIMEOUT:?}")),
        }
    }
}

async fn connect(url: &str) -> Result<Connection> {
    timed(
        &format!("connecting to {url}"),
        Connection::connect(url, ConnectionProperties::default()),
    )
    .await
}

impl AmqpDriver {
    /// Connects to `url` (`amqp://user:pass@host:port/vhost`), so a wrong address fails
    /// before the run starts.
    pub fn new(url: String, opts: AmqpOpts) -> Result<AmqpDriver> {
        // Two workers: lapin's I/O loops and the confirm tasks; the workload threads
        // stay outside and enter with `block_on`.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("amqp")
            .enable_all()
            .build()
            .context("starting the AMQP driver's runtime")?;
        let (conn, admin) = rt.block_on(async {
            let conn = connect(&url).await?;
            let admin = timed("opening a channel", conn.create_channel()).await?;
            anyhow::Ok((conn, admin))
        })?;
        Ok(AmqpDriver {
            url,
            opts,
            rt: Arc::new(rt),
            admin,
            _admin_conn: conn,
            queues: Mutex::new(HashMap::new()),
        })
    }

    fn queue_args(&self) -> FieldTable {
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString(self.opts.queue_type.as_str().into()),
        );
        args
    }

    /// Declares the durable queue `queue` bound to `topic`'s exchange, on `channel`.
    async fn declare_queue(&self, channel: &Channel, topic: &str, queue: &str) -> Result<()> {
        timed(
            &format!("declaring queue {queue}"),
            channel.queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                self.queue_args(),
            ),
        )
        .await?;
        timed(
            &format!("binding queue {queue} to exchange {topic}"),
            channel.queue_bind(
                queue.into(),
                topic.into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            ),
        )
        .await?;
        Ok(())
    }

    /// Remembers `queue` for `delete_topic`; true if it is the topic's first.
    fn remember(&self, topic: &str, queue: &str) -> bool {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        let list = queues.entry(topic.to_owned()).or_default();
        let first = list.is_empty();
        if !list.iter().any(|q| q == queue) {
            list.push(queue.to_owned());
        }
        first
    }

    fn has_queues(&self, topic: &str) -> bool {
        let queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        queues.get(topic).is_some_and(|l| !l.is_empty())
    }
}

impl Driver for AmqpDriver {
    fn name(&self) -> &'static str {
        "amqp"
    }

    fn create_topic(&self, topic: &str, _partitions: i32) -> Result<()> {
        self.rt.block_on(timed(
            &format!("declaring exchange {topic}"),
            self.admin.exchange_declare(
                topic.into(),
                ExchangeKind::Fanout,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            ),
        ))
    }

    fn delete_topic(&self, topic: &str) -> Result<()> {
        let queues = self
            .queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(topic)
            .unwrap_or_default();
        self.rt.block_on(async {
            for queue in &queues {
                timed(
                    &format!("deleting queue {queue}"),
                    self.admin
                        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default()),
                )
                .await?;
            }
            timed(
                &format!("deleting exchange {topic}"),
                self.admin
                    .exchange_delete(topic.into(), ExchangeDeleteOptions::default()),
            )
            .await
        })
    }

    fn producer(
        &self,
        topic: &str,
        opts: &ProducerOpts,
        acks: Arc<Acks>,
    ) -> Result<Box<dyn Producer>> {
        if !self.has_queues(topic) {
            // Nothing would store the messages: see the module docs.
            self.rt
                .block_on(self.declare_queue(&self.admin, topic, topic))?;
            self.remember(topic, topic);
        }
        let confirm = opts.acks != "0";
        let (conn, channel) = self.rt.block_on(async {
            let conn = connect(&self.url).await?;
            let channel = timed("opening a channel", conn.create_channel()).await?;
            if confirm {
                timed(
                    "enabling publisher confirms",
                    channel.confirm_select(ConfirmSelectOptions::default()),
                )
                .await?;
            }
            anyhow::Ok((conn, channel))
        })?;
        let mut props = BasicProperties::default();
        if confirm {
            props = props.with_delivery_mode(2);
        }
        Ok(Box::new(AmqpProducer {
            rt: self.rt.clone(),
            conn,
            channel,
            exchange: topic.into(),
            props,
            // A return of an unroutable message is a failure only when confirms tell
            // which message it was.
            publish: BasicPublishOptions {
                mandatory: confirm,
                ..BasicPublishOptions::default()
            },
            window: Arc::new(Semaphore::new(WINDOW_PERMITS as usize)),
            acks,
        }))
    }

    fn prepare_group(&self, topic: &str, group: &str) -> Result<()> {
        self.rt
            .block_on(self.declare_queue(&self.admin, topic, group))?;
        self.remember(topic, group);
        Ok(())
    }

    fn consumer(&self, topic: &str, group: &str) -> Result<Box<dyn Consumer>> {
        let (conn, channel, deliveries) = self.rt.block_on(async {
            let conn = connect(&self.url).await?;
            let channel = timed("opening a channel", conn.create_channel()).await?;
            self.declare_queue(&channel, topic, group).await?;
            timed(
                "setting the prefetch count",
                channel.basic_qos(self.opts.prefetch, BasicQosOptions::default()),
            )
            .await?;
            let deliveries = timed(
                &format!("consuming from queue {group}"),
                channel.basic_consume(
                    group.into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                ),
            )
            .await?;
            anyhow::Ok((conn, channel, deliveries))
        })?;
        self.remember(topic, group);
        Ok(Box::new(AmqpConsumer {
            rt: self.rt.clone(),
            conn,
            channel,
            deliveries,
            queue: group.to_owned(),
        }))
    }
}

/// Closes `conn` politely (the broker then requeues what was delivered and not acked),
/// without waiting long for a broker that is gone.
fn close(rt: &Runtime, conn: &Connection) {
    // `timeout` needs the runtime's timer when it is made: inside `block_on`.
    let _ = rt.block_on(async {
        tokio::time::timeout(CLOSE_TIMEOUT, conn.close(200, "wharf-bench done".into())).await
    });
}

struct AmqpProducer {
    rt: Arc<Runtime>,
    conn: Connection,
    channel: Channel,
    exchange: ShortString,
    props: BasicProperties,
    publish: BasicPublishOptions,
    window: Arc<Semaphore>,
    acks: Arc<Acks>,
}

fn permits_for(len: usize) -> u32 {
    u32::try_from(len.div_ceil(PERMIT_BYTES))
        .unwrap_or(u32::MAX)
        .clamp(1, WINDOW_PERMITS)
}

impl Producer for AmqpProducer {
    fn send(&mut self, _key: Option<&[u8]>, payload: &[u8]) -> Result<()> {
        if !self.channel.status().connected() {
            bail!(
                "publishing to exchange {}: the channel is closed ({:?})",
                self.exchange,
                self.channel.status()
            );
        }
        let n = permits_for(payload.len());
        let permit = match self.window.clone().try_acquire_many_owned(n) {
            Ok(p) => p,
            Err(TryAcquireError::NoPermits) => self
                .rt
                .block_on(self.window.clone().acquire_many_owned(n))
                .map_err(|_| anyhow!("the publish window is closed"))?,
            Err(TryAcquireError::Closed) => bail!("the publish window is closed"),
        };
        let channel = self.channel.clone();
        let exchange = self.exchange.clone();
        let props = self.props.clone();
        let options = self.publish;
        let acks = self.acks.clone();
        let data = payload.to_vec();
        let publish = async move {
            let len = data.len() as u64;
            let res = match channel
                .basic_publish(exchange.clone(), "".into(), options, &data, props)
                .await
            {
                Ok(confirm) => confirm.await,
                Err(e) => Err(e),
            };
            match res {
                Ok(Confirmation::Ack(None) | Confirmation::NotRequested) => acks.ok(len),
                Ok(Confirmation::Ack(Some(ret))) => acks.fail(format!(
                    "exchange {exchange}: returned ({} {})",
                    ret.reply_code, ret.reply_text
                )),
                Ok(Confirmation::Nack(_)) => acks.fail(format!("exchange {exchange}: nacked")),
                Err(e) => acks.fail(format!("exchange {exchange}: {e}")),
            }
            drop(permit);
        };
        // Poll once here, on the caller's thread: that runs `basic_publish` up to where
        // its frames are queued, so messages go out in the order they were sent. The
        // rest (the socket write, the confirm) is left to a task.
        let _entered = self.rt.enter();
        let mut publish = Box::pin(publish);
        let mut cx = TaskContext::from_waker(Waker::noop());
        if publish.as_mut().poll(&mut cx).is_pending() {
            self.rt.spawn(publish);
        }
        Ok(())
    }

    fn flush(&mut self, timeout: Duration) -> Result<()> {
        // Every permit back: nothing is waiting for its confirm any more.
        let all = self.rt.block_on(async {
            tokio::time::timeout(timeout, self.window.acquire_many(WINDOW_PERMITS)).await
        });
        match all {
            Ok(Ok(_all)) => Ok(()),
            Ok(Err(_)) => bail!("the publish window is closed"),
            Err(_) => bail!(
                "flushing the producer of exchange {}: confirms still missing after {timeout:?}",
                self.exchange
            ),
        }
    }
}

impl Drop for AmqpProducer {
    fn drop(&mut self) {
        close(&self.rt, &self.conn);
    }
}

struct AmqpConsumer {
    rt: Arc<Runtime>,
    conn: Connection,
    channel: Channel,
    deliveries: lapin::Consumer,
    queue: String,
}

impl Consumer for AmqpConsumer {
    fn poll(&mut self, timeout: Duration, each: &mut dyn FnMut(&[u8])) -> Result<usize> {
        let AmqpConsumer {
            rt,
            channel,
            deliveries,
            queue,
            ..
        } = self;
        rt.block_on(async {
            let mut next = match tokio::time::timeout(timeout, deliveries.next()).await {
                Ok(next) => next,
                Err(_) => return Ok(0),
            };
            let mut n = 0;
            let mut last = None;
            loop {
                match next {
                    Some(Ok(delivery)) => {
                        each(&delivery.data);
                        n += 1;
                        last = Some(delivery.delivery_tag);
                    }
                    Some(Err(e)) => return Err(anyhow!("consuming from queue {queue}: {e}")),
                    None if n == 0 => {
                        bail!("consuming from queue {queue}: the broker cancelled the consumer")
                    }
                    // Ended after some deliveries: ack those; the next poll reports it.
                    None => break,
                }
                if n >= POLL_BATCH {
                    break;
                }
                // Only what is already there: the first delivery was waited for.
                next = match deliveries.next().now_or_never() {
                    Some(next) => next,
                    None => break,
                };
            }
            if let Some(tag) = last {
                channel
                    .basic_ack(tag, BasicAckOptions { multiple: true })
                    .await
                    .with_context(|| format!("acking deliveries of queue {queue}"))?;
            }
            Ok(n)
        })
    }

    /// `basic.consume` returned: the broker delivers from now on.
    fn ready(&self) -> bool {
        true
    }

    fn commit(&mut self) -> Result<Option<u64>> {
        Ok(None)
    }
}

impl Drop for AmqpConsumer {
    fn drop(&mut self) {
        close(&self.rt, &self.conn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_messages_take_one_permit_and_large_ones_their_share_of_the_window() {
        assert_eq!(permits_for(0), 1);
        assert_eq!(permits_for(1024), 1);
        assert_eq!(permits_for(PERMIT_BYTES + 1), 2);
        assert_eq!(permits_for(1_000_000), 62);
        assert_eq!(permits_for(100_000_000), WINDOW_PERMITS);
    }
}
