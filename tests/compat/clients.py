"""Thin helpers over the two Python clients, so each test reads as a scenario."""

import time

import confluent_kafka
import kafka
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def create_topic(bootstrap: str, topic: str, partitions: int = 1, config=None) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions, config=config or {})])
    futures[topic].result(timeout=30)


def confluent_produce(bootstrap: str, topic: str, messages, **conf):
    """Produces (key, value, headers, partition) tuples, waits for every delivery report,
    and returns [(partition, offset)] in send order. Raises on any delivery error."""
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5, **conf})
    reports = [None] * len(messages)
    errors = []

    def on_delivery(i):
        def cb(err, msg):
            if err is not None:
                errors.append((i, err))
            else:
                reports[i] = (msg.partition(), msg.offset())
        return cb

    for i, (key, value, headers, partition) in enumerate(messages):
        kw = {"key": key, "value": value, "on_delivery": on_delivery(i)}
        if headers is not None:
            kw["headers"] = headers
        if partition is not None:
            kw["partition"] = partition
        while True:
            try:
                p.produce(topic, **kw)
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    left = p.flush(60)
    assert left == 0, f"{left} messages not delivered"
    assert not errors, f"delivery errors: {errors[:5]}"
    return reports


def confluent_consume(bootstrap: str, topic: str, partitions, count: int, timeout: float = 60.0, **conf):
    """Reads `count` messages from the start of the given partitions by assign()."""
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "compat-assign",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        **conf,
    })
    try:
        c.assign([TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING) for p in partitions])
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < count and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            out.append(msg)
        assert len(out) == count, f"consumed {len(out)} of {count}"
        return out
    finally:
        c.close()


def kp_producer(bootstrap: str, **conf) -> kafka.KafkaProducer:
    return kafka.KafkaProducer(bootstrap_servers=bootstrap, acks="all", **conf)


def kp_consume(bootstrap: str, topic: str, partitions, count: int, timeout: float = 60.0, **conf):
    c = kafka.KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        consumer_timeout_ms=int(timeout * 1000),
        **conf,
    )
    try:
        tps = [kafka.TopicPartition(topic, p) for p in partitions]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        out = []
        for msg in c:
            out.append(msg)
            if len(out) >= count:
                break
        assert len(out) == count, f"consumed {len(out)} of {count}"
        return out
    finally:
        c.close()
