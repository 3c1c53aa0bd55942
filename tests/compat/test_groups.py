"""Consumer groups: sharing partitions, commits, take-over, resuming after a restart."""

import time

import kafka
import pytest
from confluent_kafka import Consumer, TopicPartition

from clients import confluent_produce, create_topic


def group_consumer(bootstrap, group, **conf):
    return Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
        **conf,
    })


def poll_until(consumers, seen, want, timeout=60.0, commit=True):
    """Polls every consumer in turn until `want` distinct values are seen; records
    (consumer index, value) pairs in `seen`."""
    deadline = time.monotonic() + timeout
    while len({v for _, v in seen}) < want and time.monotonic() < deadline:
        for i, c in enumerate(consumers):
            msg = c.poll(0.2)
            if msg is None or msg.error():
                continue
            seen.append((i, int(msg.value())))
            if commit:
                c.commit(message=msg, asynchronous=False)


@pytest.mark.parametrize(
    "assignor,static",
    [("range", False), ("cooperative-sticky", False), ("roundrobin", True)],
    ids=["eager-range", "cooperative-sticky", "static-members"],
)
def test_two_consumers_share_four_partitions_without_loss_or_duplicates(wharf, topic_name, assignor, static):
    create_topic(wharf.bootstrap, topic_name, partitions=4)
    n = 400
    confluent_produce(wharf.bootstrap, topic_name, [(f"k{i}".encode(), f"{i}".encode(), None, i % 4) for i in range(n)])
    group = f"g-{topic_name}"
    conf = {"partition.assignment.strategy": assignor}
    a = group_consumer(wharf.bootstrap, group, **conf, **({"group.instance.id": "a"} if static else {}))
    b = group_consumer(wharf.bootstrap, group, **conf, **({"group.instance.id": "b"} if static else {}))
    try:
        a.subscribe([topic_name])
        b.subscribe([topic_name])
        seen = []
        poll_until([a, b], seen, n)
        values = [v for _, v in seen]
        assert sorted(values) == list(range(n)), "every message exactly once"
        # Both members got work: partitions were shared.
        assert {i for i, _ in seen} == {0, 1}
        assignments = [sorted(tp.partition for tp in c.assignment()) for c in (a, b)]
        assert sorted(assignments[0] + assignments[1]) == [0, 1, 2, 3]
        assert assignments[0] and assignments[1]
        # Commits are visible to the group.
        committed = a.committed([TopicPartition(topic_name, p) for p in range(4)], timeout=10)
        assert sorted(tp.offset for tp in committed) == [n // 4] * 4
    finally:
        a.close()
        b.close()


def test_a_consumer_leaving_hands_its_partitions_to_the_other(wharf, topic_name):
    create_topic(wharf.bootstrap, topic_name, partitions=4)
    group = f"g-{topic_name}"
    confluent_produce(wharf.bootstrap, topic_name, [(None, f"{i}".encode(), None, i % 4) for i in range(200)])
    a, b = group_consumer(wharf.bootstrap, group), group_consumer(wharf.bootstrap, group)
    a.subscribe([topic_name])
    b.subscribe([topic_name])
    seen = []
    try:
        poll_until([a, b], seen, 200)
        a.close()  # LeaveGroup: b takes over every partition
        confluent_produce(wharf.bootstrap, topic_name, [(None, f"{i}".encode(), None, i % 4) for i in range(200, 400)])
        later = []
        poll_until([b], later, 200)
        assert sorted(v for _, v in later) == list(range(200, 400))
        assert sorted(tp.partition for tp in b.assignment()) == [0, 1, 2, 3]
    finally:
        b.close()


def test_consumer_resumes_at_committed_offset_after_broker_restart(wharf, topic_name):
    create_topic(wharf.bootstrap, topic_name, partitions=2)
    group = f"g-{topic_name}"
    confluent_produce(wharf.bootstrap, topic_name, [(None, f"{i}".encode(), None, i % 2) for i in range(100)])
    c = group_consumer(wharf.bootstrap, group)
    c.subscribe([topic_name])
    seen = []
    poll_until([c], seen, 100)
    c.close()
    wharf.restart()
    confluent_produce(wharf.bootstrap, topic_name, [(None, f"{i}".encode(), None, i % 2) for i in range(100, 150)])
    c = group_consumer(wharf.bootstrap, group)
    c.subscribe([topic_name])
    later = []
    try:
        poll_until([c], later, 50)
        # Only what came after the commits: nothing from before the restart again.
        assert sorted(v for _, v in later) == list(range(100, 150))
    finally:
        c.close()


def test_kafka_python_group_commit_and_fetch(wharf, topic_name):
    create_topic(wharf.bootstrap, topic_name, partitions=2)
    group = f"kp-{topic_name}"
    confluent_produce(wharf.bootstrap, topic_name, [(None, f"{i}".encode(), None, i % 2) for i in range(60)])
    c = kafka.KafkaConsumer(
        topic_name, bootstrap_servers=wharf.bootstrap, group_id=group,
        auto_offset_reset="earliest", enable_auto_commit=False, consumer_timeout_ms=20000,
    )
    got = []
    for msg in c:
        got.append(int(msg.value))
        if len(got) == 60:
            break
    c.commit()
    committed = {p: c.committed(kafka.TopicPartition(topic_name, p)) for p in (0, 1)}
    c.close()
    assert sorted(got) == list(range(60))
    assert committed == {0: 30, 1: 30}
