"""ListOffsets by time, and the admin API: topics and their configs."""

import time

import kafka
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewPartitions, NewTopic

from clients import confluent_produce, create_topic


def test_list_offsets_by_time_earliest_latest(wharf, topic_name):
    create_topic(wharf.bootstrap, topic_name)
    first = confluent_produce(wharf.bootstrap, topic_name, [(None, b"early", None, 0)] * 10)
    time.sleep(0.05)
    mid = int(time.time() * 1000)
    time.sleep(0.05)
    confluent_produce(wharf.bootstrap, topic_name, [(None, b"late", None, 0)] * 10)
    c = Consumer({"bootstrap.servers": wharf.bootstrap, "group.id": "compat-offsets"})
    try:
        (tp,) = c.offsets_for_times([TopicPartition(topic_name, 0, mid)], timeout=10)
        assert tp.offset == 10, "first offset at or after the timestamp"
        (tp,) = c.offsets_for_times([TopicPartition(topic_name, 0, int(time.time() * 1000) + 60_000)], timeout=10)
        assert tp.offset == -1, "no message that recent"
        low, high = c.get_watermark_offsets(TopicPartition(topic_name, 0), timeout=10, cached=False)
        assert (low, high) == (0, 20)
    finally:
        c.close()
    assert [o for _, o in first] == list(range(10))
    # The same through kafka-python.
    kc = kafka.KafkaConsumer(bootstrap_servers=wharf.bootstrap)
    try:
        tp = kafka.TopicPartition(topic_name, 0)
        assert kc.offsets_for_times({tp: mid})[tp].offset == 10
        assert kc.beginning_offsets([tp])[tp] == 0
        assert kc.end_offsets([tp])[tp] == 20
    finally:
        kc.close()


# AlterConfigs is deprecated in clients in favour of IncrementalAlterConfigs, but
# clients still send it and Wharf answers both.
@pytest.mark.filterwarnings("ignore:alter_configs has been deprecated")
def test_admin_create_describe_alter_delete_topics(wharf, topic_name):
    admin = AdminClient({"bootstrap.servers": wharf.bootstrap})
    fs = admin.create_topics([NewTopic(topic_name, num_partitions=2, config={"retention.ms": "3600000"})])
    fs[topic_name].result(timeout=30)
    # Creating it again fails with TOPIC_ALREADY_EXISTS.
    again = admin.create_topics([NewTopic(topic_name, num_partitions=2)])
    try:
        again[topic_name].result(timeout=30)
        raise AssertionError("duplicate create succeeded")
    except Exception as e:  # KafkaException
        assert "TOPIC_ALREADY_EXISTS" in str(e) or "already exists" in str(e).lower()
    md = admin.list_topics(timeout=10)
    assert topic_name in md.topics and len(md.topics[topic_name].partitions) == 2

    res = ConfigResource(ConfigResource.Type.TOPIC, topic_name)
    configs = admin.describe_configs([res])[res].result(timeout=30)
    assert configs["retention.ms"].value == "3600000"
    assert configs["cleanup.policy"].value == "delete"

    res = ConfigResource(ConfigResource.Type.TOPIC, topic_name, set_config={"retention.ms": "7200000"})
    admin.alter_configs([res])[res].result(timeout=30)
    configs = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, topic_name)])
    (fut,) = configs.values()
    assert fut.result(timeout=30)["retention.ms"].value == "7200000"

    admin.create_partitions([NewPartitions(topic_name, 3)])[topic_name].result(timeout=30)
    assert len(admin.list_topics(topic_name, timeout=10).topics[topic_name].partitions) == 3
    confluent_produce(wharf.bootstrap, topic_name, [(None, b"x", None, 2)])

    admin.delete_topics([topic_name])[topic_name].result(timeout=30)
    assert topic_name not in admin.list_topics(timeout=10).topics


def test_kafka_python_admin(wharf, topic_name):
    admin = kafka.KafkaAdminClient(bootstrap_servers=wharf.bootstrap)
    try:
        admin.create_topics([kafka.admin.NewTopic(topic_name, num_partitions=3, replication_factor=1)])
        assert topic_name in admin.list_topics()
        (desc,) = admin.describe_topics([topic_name])
        assert len(desc["partitions"]) == 3
        admin.delete_topics([topic_name])
        deadline = time.monotonic() + 10
        while topic_name in admin.list_topics() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert topic_name not in admin.list_topics()
    finally:
        admin.close()


def test_list_offsets_by_time_finds_the_record_inside_a_batch(wharf, topic_name):
    # Ten records in one batch (linger), stamped 1000, 2000, ... 10000 by the producer:
    # the answer is the first record at or after the time, not the batch's first offset.
    create_topic(wharf.bootstrap, topic_name)
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": wharf.bootstrap, "linger.ms": 200, "acks": "all"})
    for i in range(10):
        p.produce(topic_name, value=f"{i}".encode(), partition=0, timestamp=(i + 1) * 1000)
    assert p.flush(30) == 0
    c = Consumer({"bootstrap.servers": wharf.bootstrap, "group.id": "compat-offsets-batch"})
    try:
        for when, expect in [(0, 0), (1000, 0), (1001, 1), (5500, 5), (10000, 9), (10001, -1)]:
            (tp,) = c.offsets_for_times([TopicPartition(topic_name, 0, when)], timeout=10)
            assert tp.offset == expect, f"time {when}: offset {tp.offset}, expected {expect}"
    finally:
        c.close()
