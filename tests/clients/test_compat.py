"""Client defaults and resource costs that real deployments meet.

The clients' own defaults (kafka-python and the Java client produce idempotently unless told
otherwise) and the disk a partition costs before it holds any data.
"""

import os

from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaProducer

from client_helpers import CK_COMMON, Msg, ck_consume, ck_produce, unique_topic

MIB = 1024 * 1024


def test_kafka_python_producer_with_its_defaults(broker):
    """kafka-python 3 with no settings at all (idempotent, acks=all) produces and the records
    read back in order; this is what a user who changes nothing gets."""
    topic = unique_topic("kp-default")
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    try:
        futures = [producer.send(topic, key=b"k", value=b"v%d" % i) for i in range(100)]
        producer.flush(timeout=30)
        offsets = [f.get(timeout=30).offset for f in futures]
    finally:
        producer.close(timeout=10)
    assert offsets == list(range(100))
    assert [r.value for r in ck_consume(broker.bootstrap, topic, 0, 0, 100)] == [
        b"v%d" % i for i in range(100)]


def test_confluent_idempotent_producer(broker):
    """confluent-kafka with enable.idempotence=true (the Java client's default) produces with
    producer ids and sequence numbers, and the records read back once each, in order."""
    topic = unique_topic("idempotent")
    msgs = [Msg(b"k", b"v%d" % i) for i in range(300)]
    offsets = ck_produce(broker.bootstrap, topic, msgs, **{"enable.idempotence": True})
    assert offsets == [(0, i) for i in range(300)]
    assert [r.value for r in ck_consume(broker.bootstrap, topic, 0, 0, 300)] == [
        m.value for m in msgs]


def allocated_bytes(path):
    """Disk blocks actually allocated under `path` (preallocation counts, holes do not)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            total += os.stat(os.path.join(root, name)).st_blocks * 512
    return total


def test_empty_partitions_cost_little_disk(broker):
    """A topic of 8 partitions that never received a record takes a bounded amount of disk
    (here at most 64 MiB per partition). Kafka preallocates nothing by default
    (preallocate=false; its index files are sparse), so thousands of partitions fit on a
    small disk; reserving a whole 1 GiB segment per partition up front would need 8 GiB here
    and a terabyte for a thousand partitions."""
    topic = unique_topic("empty")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap, **CK_COMMON})
    futures = admin.create_topics([NewTopic(topic, num_partitions=8, replication_factor=1)],
                                  operation_timeout=30)
    futures[topic].result(timeout=30)
    ck_produce(broker.bootstrap, topic, [Msg(b"k", b"v", partition=0)])
    used = sum(allocated_bytes(broker.partition_dir(topic, p)) for p in range(8))
    assert used <= 8 * 64 * MIB, f"8 nearly empty partitions take {used // MIB} MiB of disk"
