"""Thin, bounded wrappers around the real clients, returning plain comparable values.

Every call here has a deadline: a broker that never answers fails the test instead of hanging.
Records read back are `Rec` tuples, so records read by confluent-kafka and by kafka-python can
be compared with `==`.
"""

import json
import subprocess
import threading
import time
import uuid
from typing import NamedTuple, Optional

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KpTopicPartition

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]

# librdkafka may resolve "localhost" to ::1; everything here talks IPv4 to 127.0.0.1.
CK_COMMON = {
    "broker.address.family": "v4",
    "socket.timeout.ms": 10000,
    "socket.connection.setup.timeout.ms": 10000,
    "topic.metadata.refresh.interval.ms": 5000,
}


class Msg(NamedTuple):
    """A record to produce."""
    key: Optional[bytes]
    value: Optional[bytes]
    headers: tuple = ()
    timestamp: Optional[int] = None
    partition: Optional[int] = None


class Rec(NamedTuple):
    """A record as read back, normalised across clients."""
    partition: int
    offset: int
    key: Optional[bytes]
    value: Optional[bytes]
    headers: tuple
    timestamp: int


def unique_topic(prefix="t"):
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def rss_bytes(pid, field="VmRSS"):
    """Resident memory of process `pid`, in bytes: now (VmRSS), or at its peak (VmHWM)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field}")


def wait_until(condition, seconds, what):
    """`condition()`'s first true result, checked every 0.1 s; fails after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        time.sleep(0.1)


def same_content(rec, msg):
    """True when a record read back carries exactly the produced key, value and headers."""
    return (rec.key, rec.value, rec.headers) == (msg.key, msg.value, tuple(msg.headers))


# ---------------------------------------------------------------------------------------------
# confluent-kafka (librdkafka)


def ck_producer(bootstrap, **conf):
    settings = {
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "linger.ms": 20,
        "message.timeout.ms": 30000,
        "request.timeout.ms": 15000,
        **CK_COMMON,
    }
    settings.update(conf)
    return Producer(settings)


def ck_produce(bootstrap, topic, msgs, compression="none", flush_timeout=60.0, **conf):
    """Produces `msgs` and returns their (partition, offset) in order; fails on any error."""
    producer = ck_producer(bootstrap, **{"compression.type": compression, **conf})
    results = [None] * len(msgs)

    def report(index):
        def on_delivery(err, msg):
            results[index] = err if err else (msg.partition(), msg.offset())
        return on_delivery

    for index, msg in enumerate(msgs):
        kwargs = {"key": msg.key, "value": msg.value, "on_delivery": report(index)}
        if msg.headers:
            kwargs["headers"] = list(msg.headers)
        if msg.timestamp is not None:
            kwargs["timestamp"] = msg.timestamp
        if msg.partition is not None:
            kwargs["partition"] = msg.partition
        producer.produce(topic, **kwargs)
        producer.poll(0)
    remaining = producer.flush(flush_timeout)
    assert remaining == 0, f"{remaining} records not delivered within {flush_timeout} s"
    errors = [r for r in results if isinstance(r, KafkaError)]
    assert not errors, f"delivery failed: {errors[:5]}"
    return results


def ck_consumer(bootstrap, **conf):
    # confluent-kafka insists on a group.id, but these consumers only assign partitions at
    # explicit offsets and never commit, so the group coordinator is never needed.
    settings = {
        "bootstrap.servers": bootstrap,
        "group.id": "spate-tests-" + uuid.uuid4().hex[:8],
        "enable.auto.commit": False,
        "enable.partition.eof": False,
        "fetch.wait.max.ms": 100,
        **CK_COMMON,
    }
    settings.update(conf)
    return Consumer(settings)


def ck_read(consumer, count, timeout=30.0):
    """Polls an assigned consumer until `count` records arrived; fails on errors and timeout."""
    records = []
    deadline = time.monotonic() + timeout
    while len(records) < count and time.monotonic() < deadline:
        msg = consumer.poll(0.2)
        if msg is None:
            continue
        assert not msg.error(), f"consume error: {msg.error()}"
        records.append(Rec(msg.partition(), msg.offset(), msg.key(), msg.value(),
                           tuple(msg.headers() or ()), msg.timestamp()[1]))
    assert len(records) == count, f"read {len(records)} of {count} records in {timeout} s"
    return records


def ck_consume(bootstrap, topic, partition=0, offset=0, count=1, timeout=30.0, **conf):
    """Reads `count` records from one partition starting at `offset`."""
    consumer = ck_consumer(bootstrap, **conf)
    try:
        consumer.assign([TopicPartition(topic, partition, offset)])
        return ck_read(consumer, count, timeout)
    finally:
        consumer.close()


# Errors a broker may answer while it loads its partitions after a start; clients retry them.
RETRIABLE = {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
             KafkaError._TRANSPORT, KafkaError.REQUEST_TIMED_OUT}


def ck_watermarks(bootstrap, topic, partition=0, timeout=10.0):
    """(earliest, latest) offsets of a partition, asked of the broker (ListOffsets).

    Retriable errors (a broker still loading its partitions) are retried until `timeout`,
    as clients do; any other error fails at once.
    """
    consumer = ck_consumer(bootstrap)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                return consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                      timeout=timeout, cached=False)
            except KafkaException as error:
                if error.args[0].code() not in RETRIABLE or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        consumer.close()


def ck_consume_all(bootstrap, topic, partition=0, timeout=30.0):
    """Every record of a partition, from the earliest offset to the latest."""
    low, high = ck_watermarks(bootstrap, topic, partition)
    if high == low:
        return []
    return ck_consume(bootstrap, topic, partition, low, high - low, timeout)


def ck_partition_count(bootstrap, topic, timeout=10.0):
    consumer = ck_consumer(bootstrap)
    try:
        metadata = consumer.list_topics(topic, timeout=timeout)
        meta = metadata.topics[topic]
        assert meta.error is None, f"metadata error for {topic}: {meta.error}"
        return len(meta.partitions)
    finally:
        consumer.close()


# ---------------------------------------------------------------------------------------------
# kafka-python (pure Python)

KP_CODEC = {"none": None, "gzip": "gzip", "snappy": "snappy", "lz4": "lz4", "zstd": "zstd"}


def kp_produce(bootstrap, topic, msgs, compression="none", timeout=60.0, **conf):
    """Produces `msgs` with kafka-python; returns their (partition, offset) in order."""
    settings = {
        "bootstrap_servers": bootstrap,
        "acks": "all",
        "linger_ms": 20,
        "compression_type": KP_CODEC[compression],
        "request_timeout_ms": 15000,
        "max_block_ms": 15000,
        "retries": 3,
        # kafka-python 3 is idempotent by default (InitProducerId), which is not part of the
        # broker foundation; test_compat.py covers the default separately.
        "enable_idempotence": False,
    }
    settings.update(conf)
    producer = KafkaProducer(**settings)
    try:
        futures = [producer.send(topic, key=m.key, value=m.value, headers=list(m.headers),
                                 timestamp_ms=m.timestamp, partition=m.partition)
                   for m in msgs]
        producer.flush(timeout=timeout)
        results = []
        for future in futures:
            meta = future.get(timeout=timeout)
            results.append((meta.partition, meta.offset))
        return results
    finally:
        producer.close(timeout=10)


def kp_consumer(bootstrap, **conf):
    settings = {
        "bootstrap_servers": bootstrap,
        "group_id": None,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "fetch_max_wait_ms": 100,
        "request_timeout_ms": 15000,
    }
    settings.update(conf)
    return KafkaConsumer(**settings)


def kp_consume(bootstrap, topic, partition=0, offset=0, count=1, timeout=30.0, **conf):
    """Reads `count` records from one partition starting at `offset` with kafka-python."""
    consumer = kp_consumer(bootstrap, **conf)
    try:
        tp = KpTopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, offset)
        records = []
        deadline = time.monotonic() + timeout
        while len(records) < count and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                for msg in batch:
                    records.append(Rec(msg.partition, msg.offset, msg.key, msg.value,
                                       tuple((k, v) for k, v in (msg.headers or ())),
                                       msg.timestamp))
        assert len(records) >= count, f"read {len(records)} of {count} records in {timeout} s"
        return records[:count]
    finally:
        consumer.close()


# ---------------------------------------------------------------------------------------------
# kcat (librdkafka 2.0.2 in Debian 12: the canary for old clients)


def kcat(bootstrap, *args, input_bytes=None, timeout=60.0):
    """Runs kcat against the broker; returns stdout, fails with stderr on a non-zero exit."""
    cmd = ["kcat", "-b", bootstrap, "-X", "broker.address.family=v4", *args]
    done = subprocess.run(cmd, input=input_bytes, capture_output=True, timeout=timeout)
    assert done.returncode == 0, (
        f"{' '.join(cmd)} exited {done.returncode}: {done.stderr.decode(errors='replace')}")
    return done.stdout


# ---------------------------------------------------------------------------------------------


def assert_healthy(bootstrap, timeout=30.0):
    """Proves the broker still serves: a fresh producer writes, a fresh consumer reads back."""
    topic = unique_topic("health")
    payload = uuid.uuid4().bytes
    [(partition, offset)] = ck_produce(bootstrap, topic, [Msg(b"k", payload)],
                                       flush_timeout=timeout)
    [rec] = ck_consume(bootstrap, topic, partition, offset, 1, timeout)
    assert rec.value == payload


class EventProcess:
    """A client process in its own session that reports JSON event lines on stdout (the
    group and share members: group_member.py, java/GroupMember.java, java/ShareMember.java).
    Each event gets the monotonic time it was read at (`at`); lines that are not JSON are
    skipped. Its stderr goes to `stderr_path`."""

    def __init__(self, cmd, stderr_path):
        self.stderr_path = stderr_path
        self.stderr = open(stderr_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.stderr, text=True,
                                     start_new_session=True)
        self.events = []
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            event["at"] = time.monotonic()
            with self.lock:
                self.events.append(event)

    def snapshot(self):
        """The events so far, in order."""
        with self.lock:
            return list(self.events)
