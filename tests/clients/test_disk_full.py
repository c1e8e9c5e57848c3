"""Disk full is a state, not a crash (issue 20, item 5).

Each test makes a small ext4 file system of its own (a loop-mounted image), runs the broker
on it, fills the file system with a file of its own and produces until the broker refuses:
- with a free-space reserve (`--min-free-bytes`), Produce is refused with the retriable
  KAFKA_STORAGE_ERROR and a message, CreateTopics too, consumers are served, every
  acknowledged record is intact, one warning is logged, and writes resume by themselves once
  the test deletes its file, without a restart;
- retention keeps deleting below the reserve, and the space it frees reopens the gate;
- without a reserve (`--min-free-bytes 0`) the writes really meet ENOSPC: the broker keeps
  the batches and retries the write instead of exiting, and resumes the same way.

Needs root (mount); skipped with the reason otherwise.
"""

import errno
import os
import shutil
import subprocess
import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from client_helpers import CK_COMMON, ck_consume_all, ck_producer, unique_topic
from conftest import TARGET, machine_lock
from kafka_wire import connect, produce_v8, produce_v8_result, read_response, record_batch

pytestmark = pytest.mark.skipif(TARGET != "spate", reason="--min-free-bytes is Spate's option")

MIB = 1024 * 1024
FS_BYTES = 300 * MIB
VALUE_BYTES = 4096
PREALLOCATE_STEP = 16 * MIB  # constants::PREALLOCATE_STEP_BYTES
TIMEOUT_S = 30
KAFKA_STORAGE_ERROR = 56
GATE_CLOSED = "disk full or almost full"
GATE_OPENED = "writes are accepted again"
WRITE_MET_ENOSPC = "met a full disk"


@pytest.fixture
def small_fs(tmp_path):
    """A 300 MiB ext4 file system mounted for this test (no blocks reserved for root, so
    that the free space the broker sees is the free space there is)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    if shutil.which("mkfs.ext4") is None or shutil.which("mount") is None:
        pytest.skip("mkfs.ext4 or mount is missing")
    image = tmp_path / "fs.img"
    mount = tmp_path / "fs"
    mount.mkdir()
    with open(image, "wb") as file:
        file.truncate(FS_BYTES)
    made = subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)],
                          capture_output=True, timeout=60)
    if made.returncode != 0:
        pytest.skip(f"mkfs.ext4 failed: {made.stderr.decode(errors='replace')}")
    # Parallel workers: two `mount -o loop` at once can pick the same free loop device.
    with machine_lock("loop-devices"):
        mounted = subprocess.run(["mount", "-o", "loop", str(image), str(mount)],
                                 capture_output=True, timeout=60)
    if mounted.returncode != 0:
        pytest.skip(f"cannot loop-mount a file system: {mounted.stderr.decode(errors='replace')}")
    try:
        yield mount
    finally:
        # The broker is gone by now (spate_factory is torn down first).
        with machine_lock("loop-devices"):
            if subprocess.run(["umount", str(mount)], capture_output=True, timeout=60).returncode:
                subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=60)
        image.unlink(missing_ok=True)


def free_bytes(path):
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def fill(mount, leave_bytes):
    """Allocates a file that leaves `leave_bytes` free on the file system; returns its path."""
    filler = mount / "filler"
    size = free_bytes(mount) - leave_bytes
    assert size > 0, f"only {free_bytes(mount)} bytes free"
    with open(filler, "wb") as file:
        os.posix_fallocate(file.fileno(), 0, size)
    return filler


def fill_completely(mount):
    """Takes every block a write can get (a file grown until ENOSPC, as root)."""
    filler = fill(mount, MIB)
    with open(filler, "ab") as file:
        try:
            while True:
                file.write(bytes(4096))
                file.flush()
        except OSError as error:
            assert error.errno == errno.ENOSPC, error
    # What ext4 keeps back for its own metadata (a few MiB) is all that is left.
    assert free_bytes(mount) < 4096, free_bytes(mount)
    return filler


def value(tag, index):
    head = f"{tag}-{index}-".encode()
    return head + bytes((index + i) % 251 for i in range(VALUE_BYTES - len(head)))


def produce(bootstrap, topic, tag, count, timeout_s, **conf):
    """Produces `count` records (acks=all, idempotent); returns the acknowledged ones as
    {offset: value} and the delivery errors."""
    producer = ck_producer(bootstrap, **{"enable.idempotence": True, "linger.ms": 5,
                                         "message.timeout.ms": int(timeout_s * 1000),
                                         "request.timeout.ms": 5000, **conf})
    acked = {}
    errors = []

    def on_delivery(err, msg):
        if err:
            errors.append(err)
        else:
            acked[msg.offset()] = msg.value()

    for index in range(count):
        while True:
            try:
                producer.produce(topic, value=value(tag, index), partition=0,
                                 on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    remaining = producer.flush(timeout_s + 30)
    assert remaining == 0, f"{remaining} records neither delivered nor failed"
    return acked, errors


def produce_until_accepted(bootstrap, topic, tag, count, deadline_s):
    """Produces `count` records until every one is acknowledged (clients retry what a full
    disk refused); fails past `deadline_s`."""
    deadline = time.monotonic() + deadline_s
    while True:
        acked, errors = produce(bootstrap, topic, tag, count, 10)
        if not errors:
            return acked
        assert time.monotonic() < deadline, f"produce still refused: {errors[:3]}"
        time.sleep(0.5)


def raw_produce(broker, topic):
    """One Produce v8 of a small batch: (error_code, base_offset, error_message)."""
    with connect(broker.port) as sock:
        sock.sendall(produce_v8(topic.encode(), 0, record_batch([b"raw"]), 11))
        return produce_v8_result(read_response(sock)[1])


def check_intact(broker, topic, acked):
    """Every acknowledged record is in the partition at its offset, unchanged."""
    stored = {rec.offset: rec.value for rec in ck_consume_all(broker.bootstrap, topic,
                                                              timeout=60)}
    missing = [offset for offset in acked if offset not in stored]
    assert not missing, f"{len(missing)} acknowledged records missing, first {missing[:5]}"
    changed = [offset for offset, data in acked.items() if stored[offset] != data]
    assert not changed, f"{len(changed)} acknowledged records changed, first {changed[:5]}"
    return stored


def create_topic(broker, topic):
    client = AdminClient({"bootstrap.servers": broker.bootstrap, **CK_COMMON})
    future = client.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)],
                                  operation_timeout=TIMEOUT_S)[topic]
    return future.result(timeout=TIMEOUT_S)


def commit_error(broker, topic, offset):
    """The error code of a synchronous offset commit (None: committed)."""
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "disk-full",
                         "enable.auto.commit": False, **CK_COMMON})
    try:
        consumer.commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=False)
        return None
    except KafkaException as error:
        return error.args[0].code()
    finally:
        consumer.close()


def log_count(broker, text):
    return broker.log_text().count(text)


def wait_for(predicate, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_produce_refused_below_the_reserve_and_resumed_when_space_is_freed(small_fs,
                                                                            spate_factory):
    reserve = 64 * MIB
    data_dir = small_fs / "data"
    broker = spate_factory("--data-dir", str(data_dir), "--cores", "1",
                           "--min-free-bytes", str(reserve))
    pid = broker.pid
    topic = unique_topic("full")
    create_topic(broker, topic)
    filler = fill(small_fs, reserve + 40 * MIB)

    # About 60 MiB of records into 40 MiB above the reserve: the first ones are
    # acknowledged, the rest refused until the producer gives up on them.
    acked, errors = produce(broker.bootstrap, topic, "before", 15_000, 8)
    assert len(acked) > 4_000, f"only {len(acked)} records acknowledged"
    assert errors, "every record was acknowledged: the reserve was never reached"
    # Loosely kept: a segment's preallocation grows in 16 MiB steps, and a look at the file
    # system every 100 ms sees what the shard admitted since only as its estimate.
    assert free_bytes(small_fs) >= reserve - PREALLOCATE_STEP - 8 * MIB, \
        "the broker wrote deep into the reserve"

    # The refusal is Kafka's retriable storage error, with the numbers in its message.
    code, base_offset, message = raw_produce(broker, topic)
    assert (code, base_offset) == (KAFKA_STORAGE_ERROR, -1), (code, base_offset, message)
    assert message and "reserve" in message and "--min-free-bytes" in message, message
    # New topics are refused rather than half-created.
    with pytest.raises(KafkaException) as refused:
        create_topic(broker, unique_topic("refused"))
    assert refused.value.args[0].code() == KafkaError.KAFKA_STORAGE_ERROR, refused.value

    # Offset commits are refused with Kafka's answer to a coordinator's storage failure.
    assert commit_error(broker, topic, 5) == KafkaError.NOT_COORDINATOR
    # Consumers are served, and every acknowledged record is there, intact.
    check_intact(broker, topic, acked)
    assert log_count(broker, GATE_CLOSED) == 1, broker.log_tail(40)
    assert log_count(broker, GATE_OPENED) == 0

    # Space freed: produce resumes by itself, no restart.
    filler.unlink()
    after = produce_until_accepted(broker.bootstrap, topic, "after", 500, 60)
    assert len(after) == 500
    assert min(after) > max(acked)
    create_topic(broker, unique_topic("accepted"))
    assert commit_error(broker, topic, 5) is None
    check_intact(broker, topic, {**acked, **after})
    assert broker.alive() and broker.pid == pid and broker.starts == 1
    assert log_count(broker, GATE_CLOSED) == 1, broker.log_tail(40)
    assert log_count(broker, GATE_OPENED) == 1, broker.log_tail(40)
    assert "fatal" not in broker.log_text()


def test_a_write_that_meets_enospc_is_retried_not_fatal(small_fs, spate_factory):
    data_dir = small_fs / "data"
    broker = spate_factory("--data-dir", str(data_dir), "--cores", "1",
                           "--min-free-bytes", "0")
    pid = broker.pid
    topic = unique_topic("enospc")
    create_topic(broker, topic)
    filler = fill(small_fs, 30 * MIB)

    # About 48 MiB into 30 MiB: with no reserve the writes run into ENOSPC.
    acked, errors = produce(broker.bootstrap, topic, "before", 12_000, 10)
    assert errors, "every record was acknowledged: the disk never filled"
    assert len(acked) > 2_000, f"only {len(acked)} records acknowledged"
    wait_for(lambda: log_count(broker, WRITE_MET_ENOSPC) > 0, TIMEOUT_S, "the ENOSPC warning")
    assert broker.alive(), f"the broker exited on a full disk:\n{broker.log_tail(40)}"
    code, _, message = raw_produce(broker, topic)
    assert code == KAFKA_STORAGE_ERROR, (code, message)
    check_intact(broker, topic, acked)

    filler.unlink()
    after = produce_until_accepted(broker.bootstrap, topic, "after", 500, 60)
    stored = check_intact(broker, topic, {**acked, **after})
    # The write that met ENOSPC went through once space came back: offsets have no holes.
    assert sorted(stored) == list(range(len(stored)))
    assert broker.alive() and broker.pid == pid and broker.starts == 1
    assert log_count(broker, WRITE_MET_ENOSPC) == 1, broker.log_tail(40)
    assert log_count(broker, GATE_CLOSED) == 1, broker.log_tail(40)
    assert log_count(broker, GATE_OPENED) == 1, broker.log_tail(40)
    assert "fatal" not in broker.log_text()


def test_a_broker_starts_again_on_a_full_disk(small_fs, spate_factory):
    """A broker stopped on a file system with no space left starts again on it: it serves
    every acknowledged record, refuses produce with the retriable error, and takes writes
    once space is freed, with no further restart."""
    data_dir = small_fs / "data"
    broker = spate_factory("--data-dir", str(data_dir), "--cores", "1",
                           "--min-free-bytes", str(8 * MIB))
    topic = unique_topic("full-start")
    create_topic(broker, topic)
    acked, _ = produce(broker.bootstrap, topic, "before", 500, 20)
    assert broker.stop() == 0
    filler = fill_completely(small_fs)
    broker.start()
    check_intact(broker, topic, acked)
    code, _, message = raw_produce(broker, topic)
    assert code == KAFKA_STORAGE_ERROR, (code, message)
    filler.unlink()
    after = produce_until_accepted(broker.bootstrap, topic, "after", 100, 60)
    check_intact(broker, topic, {**acked, **after})
    assert "fatal" not in broker.log_text()


def test_retention_frees_space_below_the_reserve_and_writes_resume(small_fs, spate_factory):
    reserve = 64 * MIB
    broker = spate_factory("--data-dir", str(small_fs / "data"), "--cores", "1",
                           "--min-free-bytes", str(reserve), "--segment-bytes", str(4 * MIB))
    topic = unique_topic("retained")
    create_topic(broker, topic)
    fill(small_fs, reserve + 40 * MIB)
    acked, errors = produce(broker.bootstrap, topic, "before", 15_000, 8)
    assert errors and acked, (len(errors), len(acked))
    assert raw_produce(broker, topic)[0] == KAFKA_STORAGE_ERROR

    # Retention is not a client write: it goes on below the reserve, and what it frees is
    # enough for the gate to open again by itself (the test's own file stays).
    client = AdminClient({"bootstrap.servers": broker.bootstrap, **CK_COMMON})
    resource = ConfigResource(ResourceType.TOPIC, topic,
                              set_config={"retention.bytes": str(8 * MIB)})
    for future in client.alter_configs([resource]).values():
        future.result(timeout=TIMEOUT_S)
    wait_for(lambda: free_bytes(small_fs) > reserve + 24 * MIB, TIMEOUT_S,
             "retention to free space")
    after = produce_until_accepted(broker.bootstrap, topic, "after", 500, 60)
    stored = check_intact(broker, topic, after)
    assert min(stored) > 0, "retention deleted nothing"
    assert log_count(broker, GATE_CLOSED) == 1, broker.log_tail(40)
    assert log_count(broker, GATE_OPENED) == 1, broker.log_tail(40)
    assert broker.alive() and broker.starts == 1
