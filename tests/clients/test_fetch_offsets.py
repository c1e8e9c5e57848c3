"""Partitions, large records, positioned reads and ListOffsets, with real clients.

Covers: per-key order across a 4-partition topic, a record batch of about 1 MiB (and the
MESSAGE_TOO_LARGE answer just above the limit), fetches that start in the middle of the log
(inside a batch, and across segment rolls), and ListOffsets by earliest, latest and timestamp.
"""

import random
import socket
import time
from collections import defaultdict

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec
from kafka import TopicPartition as KpTopicPartition

from client_helpers import (CK_COMMON, Msg, ck_consume, ck_consume_all, ck_consumer,
                            ck_partition_count, ck_produce, ck_producer, ck_watermarks,
                            kp_consume, kp_consumer, kp_produce, rss_bytes, unique_topic)
from kafka_wire import batch_offsets, connect, fetch_v4, fetch_v4_result, read_response

MIB = 1024 * 1024
# A batch of one record with a value this big stays below Kafka's default message.max.bytes
# (1048588) once the 61-byte batch header and the record's own framing are added.
ONE_MIB_VALUE_BYTES = MIB - 256


def create_topic(bootstrap, topic, partitions=1, config=None, timeout=30.0):
    admin = AdminClient({"bootstrap.servers": bootstrap, **CK_COMMON})
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions,
                                            replication_factor=1, config=config or {})],
                                  operation_timeout=timeout, request_timeout=timeout)
    futures[topic].result(timeout=timeout)


def test_auto_created_topic_gets_default_partitions(broker4):
    """With --default-partitions 4, a topic created on first produce has 4 partitions."""
    topic = unique_topic("auto4")
    ck_produce(broker4.bootstrap, topic, [Msg(b"k", b"v")])
    assert ck_partition_count(broker4.bootstrap, topic) == 4


@pytest.mark.parametrize("producer", ["confluent", "kafka-python"])
def test_per_key_order_across_four_partitions(broker4, producer):
    """Records with the same key land in one partition, in the order produced, and every
    partition of a 4-partition topic is used; offsets in delivery reports match the log."""
    topic = unique_topic("order")
    keys = [f"key-{i}".encode() for i in range(24)]
    msgs = [Msg(keys[i % len(keys)], f"{i}".encode()) for i in range(1200)]
    if producer == "confluent":
        delivered = ck_produce(broker4.bootstrap, topic, msgs, compression="lz4")
    else:
        delivered = kp_produce(broker4.bootstrap, topic, msgs, compression="gzip")

    partition_of_key = {}
    for msg, (partition, _) in zip(msgs, delivered):
        assert partition_of_key.setdefault(msg.key, partition) == partition
    assert set(partition_of_key.values()) == {0, 1, 2, 3}

    read = {}
    for partition in range(4):
        records = ck_consume_all(broker4.bootstrap, topic, partition)
        assert [r.offset for r in records] == list(range(len(records)))
        read[partition] = records
    assert sum(len(r) for r in read.values()) == len(msgs)

    delivered_at = {d: m for m, d in zip(msgs, delivered)}
    sequence_per_key = defaultdict(list)
    for partition, records in read.items():
        for rec in records:
            assert delivered_at[(partition, rec.offset)].value == rec.value
            sequence_per_key[rec.key].append(int(rec.value))
    for key, sequence in sequence_per_key.items():
        assert sequence == sorted(sequence), f"key {key!r} out of order"


@pytest.mark.parametrize("consumer", ["confluent", "kafka-python"])
def test_one_mib_record(broker, consumer):
    """A record of about 1 MiB (batch just under 1 MiB, below Kafka's default 1048588-byte
    limit) is accepted, and read back byte for byte."""
    topic = unique_topic("big")
    value = random.Random(7).randbytes(ONE_MIB_VALUE_BYTES)
    [(partition, offset)] = ck_produce(broker.bootstrap, topic, [Msg(b"big", value)],
                                       **{"message.max.bytes": 4 * MIB})
    small = ck_produce(broker.bootstrap, topic, [Msg(b"after", b"small")])
    assert small == [(partition, offset + 1)]
    if consumer == "confluent":
        records = ck_consume(broker.bootstrap, topic, partition, offset, 2)
    else:
        records = kp_consume(broker.bootstrap, topic, partition, offset, 2)
    assert records[0].value == value
    assert records[1].value == b"small"


def test_record_over_the_limit_is_refused(broker):
    """A 2 MiB record batch gets MESSAGE_TOO_LARGE from the broker (the client is allowed to
    send it), nothing is appended, and the partition keeps working."""
    topic = unique_topic("too-big")
    ck_produce(broker.bootstrap, topic, [Msg(b"k", b"before")])
    with pytest.raises(AssertionError, match="MSG_SIZE_TOO_LARGE"):
        ck_produce(broker.bootstrap, topic, [Msg(b"k", b"\x01" * (2 * MIB))],
                   **{"message.max.bytes": 8 * MIB, "message.send.max.retries": 0})
    assert ck_produce(broker.bootstrap, topic, [Msg(b"k", b"after")]) == [(0, 1)]
    assert [r.value for r in ck_consume(broker.bootstrap, topic, 0, 0, 2)] == [b"before",
                                                                              b"after"]


@pytest.mark.parametrize("codec", ["none", "zstd"])
def test_fetch_from_a_middle_offset(broker, codec):
    """assign + seek to an offset inside a multi-record batch and to a batch boundary: the
    first record a consumer returns is the one at that offset, for both clients."""
    topic = unique_topic("middle")
    msgs = [Msg(f"k{i}".encode(), f"value-{i}".encode()) for i in range(100)]
    # linger.ms makes the 100 records few batches; the second produce starts a new batch.
    ck_produce(broker.bootstrap, topic, msgs[:60], compression=codec, **{"linger.ms": 200})
    ck_produce(broker.bootstrap, topic, msgs[60:], compression=codec, **{"linger.ms": 200})
    for start in (37, 60, 99):
        by_confluent = ck_consume(broker.bootstrap, topic, 0, start, 100 - start)
        by_kafka_python = kp_consume(broker.bootstrap, topic, 0, start, 100 - start)
        for records in (by_confluent, by_kafka_python):
            assert [r.offset for r in records] == list(range(start, 100))
            assert [r.value for r in records] == [m.value for m in msgs[start:]]


def test_seek_across_segment_rolls(broker):
    """With segment.bytes at 1 MiB, 4 MiB of records roll several segments (Kafka's layout:
    20-digit base-offset file names); reads that start anywhere return the right records."""
    topic = unique_topic("segments")
    create_topic(broker.bootstrap, topic, config={"segment.bytes": str(MIB),
                                                  "max.message.bytes": str(MIB // 2)})
    rng = random.Random(11)
    msgs = [Msg(None, rng.randbytes(4000)) for _ in range(1000)]
    for chunk in range(0, 1000, 100):
        ck_produce(broker.bootstrap, topic, msgs[chunk:chunk + 100])

    logs = sorted(p.name for p in broker.partition_dir(topic, 0).glob("*.log"))
    assert len(logs) >= 3, f"expected several segments, found {logs}"
    assert all(len(name) == 24 and name[:20].isdigit() for name in logs), logs
    assert logs[0] == "00000000000000000000.log"

    for start in (0, 1, 255, 256, 500, 777, 998, 999):
        records = ck_consume(broker.bootstrap, topic, 0, start, min(50, 1000 - start))
        assert [r.offset for r in records] == list(range(start, start + len(records)))
        assert [r.value for r in records] == [m.value for m in msgs[start:start + len(records)]]
    everything = ck_consume(broker.bootstrap, topic, 0, 0, 1000, timeout=60)
    assert [r.value for r in everything] == [m.value for m in msgs]


def test_smallest_segment_bytes_with_default_max_message(broker):
    """Kafka accepts segment.bytes = 1 MiB (its minimum) on a topic that keeps the default
    max.message.bytes (1048588, a little larger): a batch bigger than a segment simply gets a
    segment of its own. Producing to the topic works."""
    topic = unique_topic("small-segments")
    create_topic(broker.bootstrap, topic, config={"segment.bytes": str(MIB)})
    assert ck_produce(broker.bootstrap, topic, [Msg(b"k", b"v")]) == [(0, 0)]


def test_list_offsets_earliest_and_latest(broker4):
    """ListOffsets earliest is 0 and latest is the next offset to be written, per partition,
    before and after producing (an empty partition answers 0 and 0)."""
    topic = unique_topic("watermarks")
    ck_produce(broker4.bootstrap, topic, [Msg(b"k", b"v", partition=1)] * 7)
    assert ck_watermarks(broker4.bootstrap, topic, 0) == (0, 0)
    assert ck_watermarks(broker4.bootstrap, topic, 1) == (0, 7)

    admin = AdminClient({"bootstrap.servers": broker4.bootstrap, **CK_COMMON})
    request = {TopicPartition(topic, 1): OffsetSpec.earliest()}
    result = admin.list_offsets(request, request_timeout=15)
    assert result[TopicPartition(topic, 1)].result(timeout=15).offset == 0
    request = {TopicPartition(topic, 1): OffsetSpec.latest()}
    result = admin.list_offsets(request, request_timeout=15)
    assert result[TopicPartition(topic, 1)].result(timeout=15).offset == 7

    consumer = kp_consumer(broker4.bootstrap)
    try:
        tp = KpTopicPartition(topic, 1)
        assert consumer.beginning_offsets([tp], timeout_ms=15000) == {tp: 0}
        assert consumer.end_offsets([tp], timeout_ms=15000) == {tp: 7}
    finally:
        consumer.close()


# Records with chosen CreateTime timestamps, 1000 ms apart, starting here.
BASE_TS = 1_700_000_000_000


def offsets_for_time(bootstrap, topic, timestamp):
    consumer = ck_consumer(bootstrap)
    try:
        [tp] = consumer.offsets_for_times([TopicPartition(topic, 0, timestamp)], timeout=15)
        assert tp.error is None, tp.error
        return tp.offset
    finally:
        consumer.close()


@pytest.mark.parametrize("layout", ["one-record-batches", "one-batch", "one-zstd-batch"])
def test_list_offsets_by_timestamp(broker, layout):
    """offsets_for_times returns the first offset whose timestamp is >= the target: exact
    hits, targets between two records, before all and after all (-1), whether each record is
    its own batch or all share one batch (compressed or not: the answer is the record's own
    offset, as Kafka gives it, not the batch's base offset)."""
    topic = unique_topic("by-time")
    msgs = [Msg(b"k", f"v{i}".encode(), timestamp=BASE_TS + 1000 * i) for i in range(20)]
    if layout == "one-record-batches":
        for msg in msgs:
            ck_produce(broker.bootstrap, topic, [msg], **{"linger.ms": 0})
    else:
        codec = "zstd" if layout == "one-zstd-batch" else "none"
        ck_produce(broker.bootstrap, topic, msgs, compression=codec, **{"linger.ms": 500})

    records = ck_consume(broker.bootstrap, topic, 0, 0, 20)
    assert [r.timestamp for r in records] == [m.timestamp for m in msgs]

    assert offsets_for_time(broker.bootstrap, topic, BASE_TS - 5000) == 0
    assert offsets_for_time(broker.bootstrap, topic, BASE_TS) == 0
    assert offsets_for_time(broker.bootstrap, topic, BASE_TS + 7000) == 7
    assert offsets_for_time(broker.bootstrap, topic, BASE_TS + 7001) == 8
    assert offsets_for_time(broker.bootstrap, topic, BASE_TS + 12500) == 13
    assert offsets_for_time(broker.bootstrap, topic, BASE_TS + 19000) == 19
    assert offsets_for_time(broker.bootstrap, topic, BASE_TS + 19001) == -1

    consumer = kp_consumer(broker.bootstrap)
    try:
        tp = KpTopicPartition(topic, 0)
        found = consumer.offsets_for_times({tp: BASE_TS + 4500}, timeout_ms=15000)
        assert found[tp].offset == 5 and found[tp].timestamp == BASE_TS + 5000
        assert consumer.offsets_for_times({tp: BASE_TS + 20000}, timeout_ms=15000)[tp] is None
    finally:
        consumer.close()

    admin = AdminClient({"bootstrap.servers": broker.bootstrap, **CK_COMMON})
    spec = {TopicPartition(topic, 0): OffsetSpec.for_timestamp(BASE_TS + 3000)}
    info = admin.list_offsets(spec, request_timeout=15)[TopicPartition(topic, 0)].result(15)
    assert (info.offset, info.timestamp) == (3, BASE_TS + 3000)


def test_fetch_waits_for_data(broker):
    """Fetch long-poll, on the wire: at the end of the log, a Fetch with max_wait_ms and
    min_bytes=1 is held until data arrives or max_wait_ms passes. With nothing produced it
    is answered after max_wait_ms (not at once), without an error or records; a record
    produced while it waits ends the wait early and comes back in the answer. Lower bounds on
    the time only, and an upper bound of seconds: machines are noisy."""
    topic = unique_topic("tail").encode()
    ck_produce(broker.bootstrap, topic.decode(), [Msg(b"k", b"first")])
    wait_ms = 1500
    with connect(broker.port, timeout=30) as sock:
        started = time.monotonic()
        sock.sendall(fetch_v4(topic, 0, 1, 1, max_wait_ms=wait_ms))
        correlation_id, response = read_response(sock)
        elapsed_s = time.monotonic() - started
    assert correlation_id == 1
    assert fetch_v4_result(response) == (0, 1, b"")
    assert elapsed_s >= wait_ms / 1000 - 0.1, f"answered after {elapsed_s:.3f} s"

    long_wait_ms = 20000
    with connect(broker.port, timeout=30) as sock:
        started = time.monotonic()
        sock.sendall(fetch_v4(topic, 0, 1, 2, max_wait_ms=long_wait_ms))
        sock.settimeout(1.0)
        try:
            early = sock.recv(1, socket.MSG_PEEK)
        except socket.timeout:
            early = b""
        assert not early, "answered before anything was produced"
        sock.settimeout(30)
        ck_produce(broker.bootstrap, topic.decode(), [Msg(b"k", b"second")])
        correlation_id, response = read_response(sock)
        elapsed_s = time.monotonic() - started
    assert correlation_id == 2
    error_code, high_watermark, records = fetch_v4_result(response)
    assert (error_code, high_watermark) == (0, 2)
    assert batch_offsets(records) == [(1, 1)]
    assert b"second" in records
    assert elapsed_s < long_wait_ms / 1000 / 2, f"the produce did not end the wait ({elapsed_s} s)"


def test_unknown_partition(broker):
    """Partition 5 of a 1-partition topic: ListOffsets answers UNKNOWN_TOPIC_OR_PARTITION and
    a consumer assigned to it gets no data, while the broker keeps serving partition 0."""
    topic = unique_topic("unknown-part")
    ck_produce(broker.bootstrap, topic, [Msg(b"k", b"v")])
    consumer = ck_consumer(broker.bootstrap)
    try:
        with pytest.raises(KafkaException) as raised:
            consumer.get_watermark_offsets(TopicPartition(topic, 5), timeout=10, cached=False)
        assert raised.value.args[0].code() in (KafkaError.UNKNOWN_TOPIC_OR_PART,
                                               KafkaError._UNKNOWN_PARTITION), raised.value
        consumer.assign([TopicPartition(topic, 5, 0)])
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            assert msg is None or msg.error(), f"data from a missing partition: {msg.value()}"
    finally:
        consumer.close()
    assert [r.value for r in ck_consume(broker.bootstrap, topic, 0, 0, 1)] == [b"v"]


@pytest.mark.parametrize("budget", [8 * MIB, 0], ids=["8MiB", "off"])
def test_the_batch_cache_is_one_budget_per_shard(spate_factory, budget):
    """64 partitions with 2 MiB written to each: the partitions of a shard share one cache
    budget (--batch-cache-bytes), so the broker's memory does not grow with the partition
    count (a cache per partition held all 128 MiB), and every record still reads back, from
    the cache or from the disk."""
    broker = spate_factory("--batch-cache-bytes", str(budget), "--segment-bytes", str(4 * MIB))
    topic = unique_topic("budget")
    partitions = 64
    create_topic(broker.bootstrap, topic, partitions)
    before = rss_bytes(broker.pid)
    value = bytes(range(256)) * 256  # 64 KiB
    # One request in flight: the connection's request window (up to 16 MiB of pipelined
    # requests, freed when answered) is not what this test measures.
    producer = ck_producer(
        broker.bootstrap,
        **{
            "linger.ms": 5,
            "compression.type": "none",
            "max.in.flight.requests.per.connection": 1,
        },
    )
    for partition in range(partitions):
        for i in range(32):
            producer.produce(topic, key=str(i).encode(), value=value, partition=partition)
        producer.poll(0)
    assert producer.flush(60) == 0
    grown = rss_bytes(broker.pid) - before
    # Two shards of at most `budget` each, plus slack for buffers and allocator; a cache per
    # partition would hold the whole 128 MiB.
    assert grown < 2 * budget + 48 * MIB, f"the broker grew by {grown / MIB:.0f} MiB"
    for partition in (0, 17, 42, 63):
        records = ck_consume_all(broker.bootstrap, topic, partition)
        assert len(records) == 32
        assert all(m.value == value for m in records)
