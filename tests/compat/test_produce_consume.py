"""Produce and consume with real clients, checking contents and order."""

import collections
import os

import pytest

from clients import confluent_consume, confluent_produce, create_topic, kp_consume, kp_producer

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


def sample_messages():
    """Keys, headers (including a null header value), null key, null value, binary."""
    return [
        (b"k1", b"hello", [("h1", b"v1"), ("h2", b"")], None),
        (None, b"no key", None, None),
        (b"k2", None, [("trace", None)], None),
        (b"", b"", None, None),
        (bytes(range(256)), bytes(reversed(range(256))) * 4, [("bin", bytes(range(10)))], None),
    ]


def headers_of(msg):
    return [(k, v) for k, v in (msg.headers() or [])]


def test_confluent_round_trip_keys_headers_nulls(wharf, topic_name):
    create_topic(wharf.bootstrap, topic_name)
    sent = sample_messages()
    reports = confluent_produce(wharf.bootstrap, topic_name, sent)
    assert [o for _, o in reports] == list(range(len(sent)))
    got = confluent_consume(wharf.bootstrap, topic_name, [0], len(sent))
    for (key, value, headers, _), msg in zip(sent, got):
        assert msg.key() == key
        assert msg.value() == value
        assert headers_of(msg) == (headers or [])
    assert [m.offset() for m in got] == list(range(len(sent)))


def test_kafka_python_round_trip_keys_headers_nulls(wharf, topic_name):
    create_topic(wharf.bootstrap, topic_name)
    # kafka-python's API takes no null header value; everything else is the same sample.
    sent = [
        (k, v, [(hk, hv if hv is not None else b"") for hk, hv in h] if h else h, p)
        for k, v, h, p in sample_messages()
    ]
    p = kp_producer(wharf.bootstrap)
    offsets = [
        p.send(topic_name, key=k, value=v, headers=h or [], partition=0).get(timeout=30).offset
        for k, v, h, _ in sent
    ]
    p.close()
    assert offsets == list(range(len(sent)))
    got = kp_consume(wharf.bootstrap, topic_name, [0], len(sent))
    for (key, value, headers, _), msg in zip(sent, got):
        assert msg.key == key
        assert msg.value == value
        assert list(msg.headers) == (headers or [])


@pytest.mark.parametrize("codec", CODECS)
def test_confluent_each_compression_codec(wharf, topic_name, codec):
    create_topic(wharf.bootstrap, topic_name)
    sent = [(f"k{i}".encode(), (f"value {i} " * 50).encode(), None, None) for i in range(500)]
    confluent_produce(wharf.bootstrap, topic_name, sent, **{"compression.type": codec})
    got = confluent_consume(wharf.bootstrap, topic_name, [0], len(sent))
    assert [(m.key(), m.value()) for m in got] == [(k, v) for k, v, _, _ in sent]


@pytest.mark.parametrize("codec", CODECS)
def test_kafka_python_each_compression_codec(wharf, topic_name, codec):
    create_topic(wharf.bootstrap, topic_name)
    p = kp_producer(wharf.bootstrap, compression_type=None if codec == "none" else codec, linger_ms=5)
    futures = [p.send(topic_name, key=f"k{i}".encode(), value=(f"v{i} " * 40).encode(), partition=0) for i in range(300)]
    p.flush(30)
    assert all(f.get(timeout=30) for f in futures)
    p.close()
    # Read back with the other client too: both must see what either wrote.
    got = confluent_consume(wharf.bootstrap, topic_name, [0], 300)
    assert [m.value() for m in got] == [(f"v{i} " * 40).encode() for i in range(300)]


def test_one_mebibyte_message(wharf, topic_name):
    # Kafka's default max.message.bytes admits a 1 MiB record plus batch overhead only
    # with a raised topic limit, as on Kafka.
    create_topic(wharf.bootstrap, topic_name, config={"max.message.bytes": str(2 * 1024 * 1024)})
    big = os.urandom(1024 * 1024)
    confluent_produce(wharf.bootstrap, topic_name, [(b"big", big, None, None)], **{"message.max.bytes": 4 * 1024 * 1024})
    got = confluent_consume(wharf.bootstrap, topic_name, [0], 1, **{"fetch.max.bytes": 4 * 1024 * 1024})
    assert got[0].value() == big
    got = kp_consume(wharf.bootstrap, topic_name, [0], 1, max_partition_fetch_bytes=4 * 1024 * 1024)
    assert got[0].value == big


def test_ten_thousand_keyed_messages_keep_per_partition_order(wharf, topic_name):
    create_topic(wharf.bootstrap, topic_name, partitions=3)
    n = 10_000
    sent = [(f"key-{i % 97}".encode(), f"{i}".encode(), None, None) for i in range(n)]
    reports = confluent_produce(wharf.bootstrap, topic_name, sent)
    # Same key, same partition, always.
    partition_of = {}
    for (key, _, _, _), (partition, _) in zip(sent, reports):
        assert partition_of.setdefault(key, partition) == partition
    assert len(set(partition_of.values())) == 3, "keys should spread over all partitions"
    got = confluent_consume(wharf.bootstrap, topic_name, [0, 1, 2], n)
    by_partition = collections.defaultdict(list)
    for m in got:
        by_partition[m.partition()].append(int(m.value()))
    for partition, values in by_partition.items():
        # Within a partition, messages come back in the order they were sent.
        expected = [int(v) for (k, v, _, _), (p, _) in zip(sent, reports) if p == partition]
        assert values == expected
        offsets = [m.offset() for m in got if m.partition() == partition]
        assert offsets == list(range(len(offsets)))
    assert sum(len(v) for v in by_partition.values()) == n


def test_idempotent_producer_stores_each_message_once_in_order(wharf, topic_name):
    create_topic(wharf.bootstrap, topic_name)
    n = 2_000
    sent = [(None, f"{i}".encode(), None, 0) for i in range(n)]
    reports = confluent_produce(
        wharf.bootstrap, topic_name, sent,
        **{"enable.idempotence": True, "max.in.flight.requests.per.connection": 5, "linger.ms": 1},
    )
    assert [o for _, o in reports] == list(range(n))
    got = confluent_consume(wharf.bootstrap, topic_name, [0], n)
    assert [int(m.value()) for m in got] == list(range(n))
