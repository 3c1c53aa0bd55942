"""A producer with acks=all keeps sending while the broker is SIGKILLed and restarted:
every message the client saw acknowledged is there afterwards."""

import threading
import time

from confluent_kafka import Producer

from clients import confluent_consume, create_topic


def test_acknowledged_messages_survive_broker_sigkill(wharf, topic_name):
    create_topic(wharf.bootstrap, topic_name)
    acked = set()
    lock = threading.Lock()
    stop = threading.Event()

    def on_delivery(err, msg):
        if err is None:
            with lock:
                acked.add(int(msg.value()))

    p = Producer({
        "bootstrap.servers": wharf.bootstrap,
        "acks": "all",
        "linger.ms": 2,
        "message.timeout.ms": 120_000,
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 500,
    })

    def produce_forever():
        i = 0
        while not stop.is_set():
            try:
                p.produce(topic_name, value=str(i).encode(), partition=0, on_delivery=on_delivery)
                i += 1
            except BufferError:
                pass
            p.poll(0.001)

    t = threading.Thread(target=produce_forever)
    t.start()
    try:
        for _ in range(5):
            time.sleep(0.7)
            wharf.kill()
            time.sleep(0.2)
            wharf.start()
        time.sleep(0.7)
    finally:
        stop.set()
        t.join()
    assert p.flush(120) == 0
    with lock:
        acked_now = set(acked)
    assert len(acked_now) > 100, f"only {len(acked_now)} acknowledged: the test proves little"
    # Read everything stored; every acknowledged value must be among it.
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": wharf.bootstrap, "group.id": "compat-durability"})
    low, high = c.get_watermark_offsets(TopicPartition(topic_name, 0), timeout=10, cached=False)
    c.close()
    stored = {int(m.value()) for m in confluent_consume(wharf.bootstrap, topic_name, [0], high - low)}
    missing = acked_now - stored
    assert not missing, f"{len(missing)} acknowledged messages lost, e.g. {sorted(missing)[:10]}"
