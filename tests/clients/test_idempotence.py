"""Idempotent producers: real clients through broker restarts and crashes, and the wire-level
rules (duplicates answered with their original offsets, OUT_OF_ORDER_SEQUENCE_NUMBER,
INVALID_PRODUCER_EPOCH, epoch bumps, per-partition errors) checked with hand-framed requests.

The Java client test needs Java 17 and Maven; it is skipped when Maven cannot fetch
kafka-clients (no network, no cache).
"""

import shutil
import socket
import struct
import subprocess
import threading
import time

import pytest
from confluent_kafka.admin import AdminClient, NewTopic
from kafka.record.default_records import DefaultRecordBatchBuilder

from client_helpers import CK_COMMON, ck_consume_all, ck_producer, unique_topic
from java_build import compile_java

NONE = 0
OUT_OF_ORDER_SEQUENCE_NUMBER = 45
INVALID_PRODUCER_EPOCH = 47
INVALID_REQUEST = 42


def create_topic(bootstrap, topic, partitions):
    admin = AdminClient({"bootstrap.servers": bootstrap, **CK_COMMON})
    futures = admin.create_topics([NewTopic(topic, partitions, 1)], request_timeout=15)
    futures[topic].result(timeout=20)


# ---------------------------------------------------------------------------------------------
# confluent-kafka with enable.idempotence=true through a restart and a crash

PARTITIONS = 4
RECORDS = 12000


def produce_through(broker, interrupt, records=RECORDS):
    """Produces `records` values "0".."N-1", value i to partition i % PARTITIONS, at a steady
    pace, while `interrupt(broker)` stops and starts the broker in the middle. Then checks
    that every partition holds exactly its values, in order, at offsets 0.., once each."""
    topic = unique_topic("idem")
    create_topic(broker.bootstrap, topic, PARTITIONS)
    failures = []
    acked = [0]
    fatal = []

    def on_delivery(err, msg):
        if err:
            failures.append(err)
        else:
            acked[0] += 1

    def on_error(err):
        if err.fatal():
            fatal.append(err)

    producer = ck_producer(broker.bootstrap, **{
        "enable.idempotence": True,
        "linger.ms": 5,
        "message.timeout.ms": 120000,
        "request.timeout.ms": 10000,
        "retry.backoff.ms": 50,
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 500,
        "error_cb": on_error,
    })

    def send_all():
        for i in range(records):
            while True:
                try:
                    producer.produce(topic, value=str(i).encode(), partition=i % PARTITIONS,
                                     on_delivery=on_delivery)
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
            if i % 200 == 199:
                time.sleep(0.05)  # about 4000 records/s: the run spans the interruption

    sender = threading.Thread(target=send_all)
    sender.start()
    time.sleep(1.0)
    # Taken as the interruption starts: on a loaded machine a long one (two crashes and a
    # restart) can outlast the sending, and the records still queued then go through it.
    before, sending = acked[0], sender.is_alive()
    interrupt(broker)
    assert sending and before < records, "the interruption came after the last one"
    sender.join(timeout=60)
    assert not sender.is_alive(), "the producer thread did not finish"
    remaining = producer.flush(90)
    assert remaining == 0, f"{remaining} records not delivered"
    assert not fatal, f"fatal producer error: {fatal}"
    assert not failures, f"delivery failed: {failures[:5]}"
    assert acked[0] == records
    for partition in range(PARTITIONS):
        stored = ck_consume_all(broker.bootstrap, topic, partition, timeout=60)
        values = [int(r.value) for r in stored]
        expected = list(range(partition, records, PARTITIONS))
        duplicates = len(values) - len(set(values))
        missing = sorted(set(expected) - set(values))[:10]
        assert duplicates == 0, f"partition {partition}: {duplicates} duplicates"
        assert not missing, f"partition {partition}: missing values, first: {missing}"
        assert values == expected, f"partition {partition}: records out of order"
        assert [r.offset for r in stored] == list(range(len(expected)))


@pytest.mark.timeout(240)
def test_idempotent_producer_through_a_clean_restart(broker):
    def restart(b):
        b.restart()

    produce_through(broker, restart)


@pytest.mark.timeout(240)
def test_idempotent_producer_through_kill9(broker):
    def crash(b):
        b.kill9()
        time.sleep(0.5)
        b.start()

    produce_through(broker, crash)


def kill_broker_connections(broker):
    """Closes every established connection on the broker's port from the broker's side (the
    kernel aborts the broker's sockets, as `ss -K` does; the client sees a reset). Returns how
    many sockets it closed."""
    port = broker.bootstrap.rsplit(":", 1)[1]
    done = subprocess.run(["ss", "-K", "-t", "-n", "-H", "state", "established",
                           f"( sport = :{port} )"],
                          capture_output=True, text=True, timeout=10, check=True)
    return len([line for line in done.stdout.splitlines() if line.strip()])


@pytest.mark.timeout(240)
def test_idempotent_producer_through_connection_drops(broker):
    """The broker side drops the producer's connections again and again while requests are
    in flight: retried batches that the broker had already written are answered as
    duplicates, so nothing is lost, doubled or reordered."""
    if shutil.which("ss") is None:
        pytest.skip("needs ss (iproute2)")
    killed = []

    def drops(b):
        # For 3 s (well within the ~6 s the sender takes), close each connection as soon as
        # the producer has made it again.
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            killed.append(kill_broker_connections(b))
            time.sleep(0.02)

    produce_through(broker, drops, records=2 * RECORDS)
    assert sum(killed) >= 3, f"the drops closed too few connections: {killed}"


@pytest.mark.timeout(300)
def test_idempotent_producer_through_two_crashes_and_a_restart(broker):
    def storm(b):
        b.kill9()
        b.start()
        time.sleep(0.7)
        b.restart()
        time.sleep(0.7)
        b.kill9()
        b.start()

    produce_through(broker, storm)


# ---------------------------------------------------------------------------------------------
# The rules on the wire, with hand-framed requests

class Wire:
    """One connection that sends hand-framed requests and reads their responses."""

    def __init__(self, bootstrap):
        host, port = bootstrap.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=15)
        self.correlation_id = 0

    def close(self):
        self.sock.close()

    def call(self, api_key, version, body, flexible=False):
        self.correlation_id += 1
        client_id = b"spate-wire-test"
        header = struct.pack(">hhih", api_key, version, self.correlation_id, len(client_id))
        header += client_id
        if flexible:
            header += b"\x00"  # request header v2: no tagged fields
        frame = header + body
        self.sock.sendall(struct.pack(">i", len(frame)) + frame)
        size = struct.unpack(">i", self._read(4))[0]
        response = self._read(size)
        correlation_id = struct.unpack(">i", response[:4])[0]
        assert correlation_id == self.correlation_id
        return response[5:] if flexible else response[4:]

    def _read(self, count):
        out = b""
        while len(out) < count:
            chunk = self.sock.recv(count - len(out))
            assert chunk, "the broker closed the connection"
            out += chunk
        return out

    def init_producer_id(self, transactional_id=None, producer_id=-1, epoch=-1):
        """InitProducerId v3 (flexible): returns (error_code, producer_id, epoch)."""
        if transactional_id is None:
            body = b"\x00"  # compact nullable string: null
        else:
            encoded = transactional_id.encode()
            length, body = len(encoded) + 1, b""  # compact string: unsigned varint length + 1
            while length >= 0x80:
                body += bytes([length & 0x7F | 0x80])
                length >>= 7
            body += bytes([length]) + encoded
        body += struct.pack(">iqh", 60000, producer_id, epoch) + b"\x00"
        response = self.call(22, 3, body, flexible=True)
        _throttle, error, pid, got_epoch = struct.unpack(">ihqh", response[:16])
        return error, pid, got_epoch

    def init_producer_id_v0(self):
        body = struct.pack(">hi", -1, 60000)
        response = self.call(22, 0, body)
        _throttle, error, pid, epoch = struct.unpack(">ihqh", response[:16])
        return error, pid, epoch

    def produce(self, topic, batches):
        """Produce v3, acks=-1; `batches` maps partition -> record batch bytes.
        Returns {partition: (error_code, base_offset)}."""
        name = topic.encode()
        body = struct.pack(">hhi", -1, -1, 15000)  # null transactional id, acks, timeout
        body += struct.pack(">i", 1) + struct.pack(">h", len(name)) + name
        body += struct.pack(">i", len(batches))
        for partition, records in batches.items():
            body += struct.pack(">ii", partition, len(records)) + records
        response = self.call(0, 3, body)
        at = 0
        (topics,) = struct.unpack_from(">i", response, at)
        at += 4
        out = {}
        for _ in range(topics):
            (length,) = struct.unpack_from(">h", response, at)
            at += 2 + length
            (partitions,) = struct.unpack_from(">i", response, at)
            at += 4
            for _ in range(partitions):
                partition, error, base_offset, _append_time = struct.unpack_from(
                    ">ihqq", response, at)
                at += 22
                out[partition] = (error, base_offset)
        return out


def batch(producer_id, epoch, sequence, values):
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False,
                                        producer_id=producer_id, producer_epoch=epoch,
                                        base_sequence=sequence, batch_size=1 << 20)
    for offset, value in enumerate(values):
        builder.append(offset, timestamp=int(time.time() * 1000), key=None, value=value, headers=[])
    return bytes(builder.build())


@pytest.mark.timeout(120)
def test_wire_rules_of_idempotent_produce(broker):
    topic = unique_topic("wire")
    create_topic(broker.bootstrap, topic, 2)
    wire = Wire(broker.bootstrap)
    try:
        error, pid, epoch = wire.init_producer_id()
        assert (error, epoch) == (NONE, 0) and pid >= 0
        error, other, _ = wire.init_producer_id_v0()
        assert error == NONE and other not in (pid, -1), "every producer gets its own id"

        first = batch(pid, 0, 0, [b"a0", b"a1", b"a2"])
        assert wire.produce(topic, {0: first}) == {0: (NONE, 0)}
        # The same batch again (a retry whose answer was lost): its original offset.
        assert wire.produce(topic, {0: first}) == {0: (NONE, 0)}
        second = batch(pid, 0, 3, [b"b3", b"b4"])
        assert wire.produce(topic, {0: second}) == {0: (NONE, 3)}
        assert wire.produce(topic, {0: first}) == {0: (NONE, 0)}
        assert wire.produce(topic, {0: second}) == {0: (NONE, 3)}
        # A gap, and a step back that is not one of the last batches.
        gap = batch(pid, 0, 9, [b"gap"])
        assert wire.produce(topic, {0: gap}) == {0: (OUT_OF_ORDER_SEQUENCE_NUMBER, -1)}
        overlap = batch(pid, 0, 4, [b"overlap"])
        assert wire.produce(topic, {0: overlap}) == {0: (OUT_OF_ORDER_SEQUENCE_NUMBER, -1)}

        # Errors are per partition: partition 1 succeeds in the same request.
        mixed = wire.produce(topic, {0: gap, 1: batch(pid, 0, 0, [b"p1"])})
        assert mixed == {0: (OUT_OF_ORDER_SEQUENCE_NUMBER, -1), 1: (NONE, 0)}

        # KIP-360: bumping the epoch fences the old one; the new epoch starts at 0.
        error, same, bumped = wire.init_producer_id(producer_id=pid, epoch=0)
        assert (error, same, bumped) == (NONE, pid, 1)
        not_zero = batch(pid, 1, 5, [b"c5"])
        assert wire.produce(topic, {0: not_zero}) == {0: (OUT_OF_ORDER_SEQUENCE_NUMBER, -1)}
        assert wire.produce(topic, {0: batch(pid, 1, 0, [b"c0"])}) == {0: (NONE, 5)}
        zombie = batch(pid, 0, 5, [b"zombie"])
        assert wire.produce(topic, {0: zombie}) == {0: (INVALID_PRODUCER_EPOCH, -1)}
        assert wire.produce(topic, {0: first}) == {0: (INVALID_PRODUCER_EPOCH, -1)}

        # A transactional id goes to the transaction coordinator: a fresh id, epoch 0.
        error, txn_pid, txn_epoch = wire.init_producer_id("txn-1")
        assert (error, txn_epoch) == (NONE, 0) and txn_pid not in (-1, pid)
        assert wire.init_producer_id("")[0] == INVALID_REQUEST
        # Longer than the transaction log's int16-length strings can hold.
        assert wire.init_producer_id("t" * 40000)[0] == INVALID_REQUEST
        assert wire.init_producer_id("t" * 32767)[0] == NONE
        assert wire.init_producer_id(producer_id=pid, epoch=-1)[0] == INVALID_REQUEST
    finally:
        wire.close()

    values = [r.value for r in ck_consume_all(broker.bootstrap, topic, 0)]
    assert values == [b"a0", b"a1", b"a2", b"b3", b"b4", b"c0"], "nothing written twice"

    # After a crash the state is rebuilt from the log: the retry is still a duplicate.
    broker.kill9()
    broker.start()
    wire = Wire(broker.bootstrap)
    try:
        assert wire.produce(topic, {0: batch(pid, 1, 0, [b"c0"])}) == {0: (NONE, 5)}
        assert wire.produce(topic, {0: zombie}) == {0: (INVALID_PRODUCER_EPOCH, -1)}
        assert wire.produce(topic, {0: batch(pid, 1, 1, [b"c1"])}) == {0: (NONE, 6)}
        # Producer ids stay unique across restarts.
        error, after_crash, _ = wire.init_producer_id()
        assert error == NONE and after_crash > max(pid, other)
    finally:
        wire.close()


# ---------------------------------------------------------------------------------------------
# The Java client with default settings (idempotence is on by default since Kafka 3.0)


@pytest.mark.timeout(420)
def test_java_producer_with_default_settings(broker):
    run_classpath = compile_java("IdempotentProducer", "ProducerSetup")
    topic = unique_topic("java")
    done = subprocess.run(
        ["java", "-cp", run_classpath, "IdempotentProducer",
         broker.bootstrap, topic, "1000"], capture_output=True, timeout=120)
    output = done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
    assert done.returncode == 0, output[-3000:]
    assert "acknowledged 1000" in output, output[-3000:]
    records = ck_consume_all(broker.bootstrap, topic, 0)
    assert [r.value for r in records] == [f"value-{i}".encode() for i in range(1000)]
