"""Data survives restarts and crashes, and a damaged log tail is repaired on start.

Each test writes through real clients, stops the broker (SIGTERM or SIGKILL), sometimes damages
files in the data directory the way a crash or a bad disk would, starts the broker again on the
same data directory and checks every record, offset and timestamp through real clients.
"""

import json
import random
import re
import shutil
import subprocess
import threading
import time

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from client_helpers import (CK_COMMON, CODECS, Msg, ck_consume, ck_consume_all, ck_consumer,
                            ck_partition_count, ck_producer, ck_produce, ck_watermarks,
                            kp_produce, unique_topic)
from conftest import TARGET
from kafka_wire import connect, produce_v3, produce_v3_result, read_response, record_batch
from segment_tools import active_segment, read_valid_prefix, segment_files, valid_batches

TIMEOUT_S = 30


def admin(broker):
    return AdminClient({"bootstrap.servers": broker.bootstrap, **CK_COMMON})


def snapshot(broker, topics):
    """Every record of every partition of `topics`, and the topics' partition counts."""
    state = {}
    for topic in topics:
        count = ck_partition_count(broker.bootstrap, topic)
        state[topic] = {p: ck_consume_all(broker.bootstrap, topic, p) for p in range(count)}
    return state


def cluster_id(broker):
    client = admin(broker)
    return client.describe_cluster(request_timeout=TIMEOUT_S).result(timeout=TIMEOUT_S).cluster_id


def create_topics(broker, *new_topics):
    client = admin(broker)
    futures = client.create_topics(list(new_topics), operation_timeout=TIMEOUT_S)
    for future in futures.values():
        future.result(timeout=TIMEOUT_S)


def test_restart_keeps_records_offsets_and_topics(spate_factory):
    """After a clean stop (SIGTERM, exit code 0) and a start on the same data dir, every
    record is at its offset with its key, value, headers and timestamp; partition counts,
    topic configs, the cluster id and an empty topic survive; new records continue at the
    old end offsets. A second restart, after more writes, changes nothing either."""
    broker = spate_factory("--default-partitions", "4")
    busy, configured, empty = (unique_topic(n) for n in ("busy", "configured", "empty"))
    create_topics(broker,
                  NewTopic(configured, num_partitions=2, replication_factor=1,
                           config={"retention.ms": "86400000"}),
                  NewTopic(empty, num_partitions=3, replication_factor=1))
    rng = random.Random(5)
    for codec in CODECS:
        ck_produce(broker.bootstrap, busy, [
            Msg(f"k{i}".encode(), rng.randbytes(200), (("codec", codec.encode()),),
                timestamp=1_600_000_000_000 + i) for i in range(100)], compression=codec)
    kp_produce(broker.bootstrap, configured, [Msg(b"kp", b"%d" % i) for i in range(50)],
               compression="snappy")
    before = snapshot(broker, [busy, configured, empty])
    cluster = cluster_id(broker)

    for round_ in range(2):
        broker.restart()
        assert snapshot(broker, [busy, configured, empty]) == before
        assert cluster_id(broker) == cluster
        resource = ConfigResource(ResourceType.TOPIC, configured)
        client = admin(broker)
        configs = client.describe_configs([resource])[resource].result(TIMEOUT_S)
        assert configs["retention.ms"].value == "86400000"
        for partition, records in before[busy].items():
            end = records[-1].offset + 1 if records else 0
            [(p, offset)] = ck_produce(broker.bootstrap, busy,
                                       [Msg(b"new", b"r%d" % round_, partition=partition)])
            assert (p, offset) == (partition, end)
        before = snapshot(broker, [busy, configured, empty])


def test_kill9_during_acks_all_produce(spate_factory):
    """kill -9 while an acks=all producer runs flat out, twice. After each restart every
    acknowledged record is in the log exactly once, at the offset its delivery report gave;
    the log holds nothing that was not produced, and offsets are dense from 0.

    The producer does not retry (retries=0), so an unacknowledged record can appear at most
    once and an acknowledged one exactly once.
    """
    broker = spate_factory("--default-partitions", "2")
    topic = unique_topic("crash")
    acked = {}
    produced = set()

    def produce_until(stop, round_):
        producer = ck_producer(broker.bootstrap, **{
            "retries": 0, "linger.ms": 2, "message.timeout.ms": 5000,
            "compression.type": "lz4", "enable.idempotence": False,
            "reconnect.backoff.max.ms": 200})

        def on_delivery(err, msg):
            if err is None:
                acked[msg.value()] = (msg.partition(), msg.offset())

        seq = 0
        while not stop.is_set():
            value = f"{round_}-{seq:08d}".encode() + b"x" * (seq % 300)
            try:
                producer.produce(topic, key=b"%d" % (seq % 13), value=value,
                                 on_delivery=on_delivery)
                produced.add(value)
                seq += 1
            except BufferError:
                producer.poll(0.05)
            producer.poll(0)
        producer.flush(15)

    for round_ in range(2):
        stop = threading.Event()
        thread = threading.Thread(target=produce_until, args=(stop, round_), daemon=True)
        acked_before = len(acked)
        thread.start()
        deadline = time.monotonic() + 60
        while len(acked) < acked_before + 3000 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(acked) >= acked_before + 3000, "the producer made no progress"
        broker.kill9()
        time.sleep(0.5)
        stop.set()
        thread.join(timeout=60)
        assert not thread.is_alive()
        broker.start()

        log = {}
        for partition in range(2):
            records = ck_consume_all(broker.bootstrap, topic, partition, timeout=60)
            assert [r.offset for r in records] == list(range(len(records)))
            for rec in records:
                log[(partition, rec.offset)] = rec.value
        values = list(log.values())
        assert len(values) == len(set(values)), "a record is in the log twice"
        assert set(values) <= produced, "the log holds records nobody produced"
        missing = [(v, at) for v, at in acked.items() if log.get(at) != v]
        assert not missing, f"{len(missing)} acknowledged records lost or moved: {missing[:5]}"


def write_batches(broker, topic, batches=5, per_batch=10):
    """Produces `batches` separate batches of `per_batch` records; returns the messages."""
    # Created first: a producer's retries while a topic is auto-created may reorder records.
    create_topics(broker, NewTopic(topic, num_partitions=1, replication_factor=1))
    msgs = []
    for b in range(batches):
        chunk = [Msg(b"k%d" % b, f"batch-{b}-record-{r}".encode() * 3) for r in range(per_batch)]
        offsets = ck_produce(broker.bootstrap, topic, chunk, **{"linger.ms": 50})
        assert offsets == [(0, len(msgs) + r) for r in range(per_batch)]
        msgs.extend(chunk)
    return msgs


def tear(path, damage):
    """Damages the tail of a segment file; returns how many records stay valid.

    Whatever follows the valid batches (a preallocated zero tail) is dropped first."""
    data = read_valid_prefix(path)
    batches = valid_batches(data)
    assert len(batches) >= 3, f"expected batches in {path.name}, parsed {len(batches)}"
    last, end = batches[-1], batches[-1].end
    all_records, all_but_last = last.last_offset + 1, last.base_offset
    rng = random.Random(3)
    if damage == "cut-tail":
        data, survivors = data[:end - 7], all_but_last
    elif damage == "cut-header":
        data, survivors = data[:last.position + 30], all_but_last
    elif damage == "garbage":
        data, survivors = data[:end] + rng.randbytes(333), all_records
    elif damage == "zeros":
        data, survivors = data[:end] + bytes(8192), all_records
    elif damage == "bad-crc":
        flipped = bytearray(data[:end])
        flipped[last.position + 70] ^= 0xFF
        data, survivors = bytes(flipped), all_but_last
    elif damage == "fake-batch":
        # A well-formed header that claims more bytes than the file holds.
        header = bytearray(data[last.position:last.position + 61])
        header[0:8] = all_records.to_bytes(8, "big")
        header[8:12] = (4000).to_bytes(4, "big")
        data, survivors = data[:end] + bytes(header) + rng.randbytes(100), all_records
    else:
        raise ValueError(damage)
    path.write_bytes(data)
    return survivors


DAMAGES = ["cut-tail", "cut-header", "garbage", "zeros", "bad-crc", "fake-batch"]


# Serial: in one parallel run at load average 17-22, two of these on two workers at the same
# moment hung in start-up after a clean stop (no line after "starting spate" for 30 s);
# unexplained, see docs/ARCHITECTURE.md, Known gaps.
@pytest.mark.serial
@pytest.mark.parametrize("stop", ["sigterm", "kill9"])
@pytest.mark.parametrize("damage", DAMAGES)
def test_torn_segment_tail_recovered(broker, damage, stop):
    """The active segment's tail is cut, padded with garbage or zeros, or its last batch's
    CRC broken, while the broker is down. On start, every complete valid batch is readable,
    the damaged tail is gone, and the next produce gets the offset right after the last good
    record; a further restart keeps all of it.

    Spate validates the tail on every start (DESIGN.md); Kafka only after an unclean
    shutdown, so the SIGTERM variants are Spate-only.
    """
    if stop == "sigterm" and TARGET == "kafka":
        pytest.skip("Kafka trusts its clean-shutdown marker and skips recovery")
    topic = unique_topic("torn")
    msgs = write_batches(broker, topic)
    if stop == "sigterm":
        assert broker.stop() == 0
    else:
        broker.kill9()
    survivors = tear(active_segment(broker.partition_dir(topic, 0)), damage)
    broker.start()

    assert ck_watermarks(broker.bootstrap, topic) == (0, survivors)
    records = ck_consume_all(broker.bootstrap, topic)
    assert [(r.offset, r.value) for r in records] == [
        (i, m.value) for i, m in enumerate(msgs[:survivors])]
    assert ck_produce(broker.bootstrap, topic, [Msg(b"k", b"after")]) == [(0, survivors)]

    broker.restart()
    records = ck_consume_all(broker.bootstrap, topic)
    assert [r.value for r in records] == [m.value for m in msgs[:survivors]] + [b"after"]


@pytest.mark.parametrize("damage", ["deleted", "empty", "garbage"])
def test_indexes_rebuilt(broker, damage):
    """Offset and time indexes that are missing, empty or full of garbage are rebuilt on
    start: seeks into every segment and offsets_for_times still land on the right record.

    Kafka rebuilds missing indexes only; it takes an empty or garbage index of an older
    segment at face value (an empty time index hides the segment from offsets_for_times), so
    those variants are Spate-only (DESIGN.md: rebuild indexes that are missing or damaged).
    """
    if damage != "deleted" and TARGET == "kafka":
        pytest.skip("Kafka does not check the indexes of older segments")
    topic = unique_topic("index")
    create_topics(broker, NewTopic(topic, num_partitions=1, replication_factor=1, config={
        "segment.bytes": str(1024 * 1024), "max.message.bytes": str(512 * 1024)}))
    rng = random.Random(9)
    base_ts = 1_650_000_000_000
    msgs = [Msg(None, rng.randbytes(3000), timestamp=base_ts + 10 * i) for i in range(1200)]
    for chunk in range(0, len(msgs), 50):
        ck_produce(broker.bootstrap, topic, msgs[chunk:chunk + 50])
    assert broker.stop() == 0
    partition_dir = broker.partition_dir(topic, 0)
    assert len(segment_files(partition_dir)) >= 3
    for index in [*partition_dir.glob("*.index"), *partition_dir.glob("*.timeindex")]:
        if damage == "deleted":
            index.unlink()
        elif damage == "empty":
            index.write_bytes(b"")
        else:
            size = index.stat().st_size or 4096
            index.write_bytes(rng.randbytes(size))
    broker.start()

    for start in (0, 1, 333, 600, 901, 1199):
        [rec] = ck_consume(broker.bootstrap, topic, 0, start, 1)
        assert (rec.offset, rec.value) == (start, msgs[start].value)
    consumer = ck_consumer(broker.bootstrap)
    try:
        for target in (0, 333, 600, 1199):
            [tp] = consumer.offsets_for_times(
                [TopicPartition(topic, 0, base_ts + 10 * target - 5)], timeout=15)
            assert tp.offset == target
    finally:
        consumer.close()


def test_empty_first_file_then_catch_up_reads(broker):
    """The glommio pitfall in DESIGN.md: if the first O_DIRECT file opened is empty, every
    later DMA read fails. Topics whose segments are empty (sorted first in the data dir) sit
    next to one with data; after a restart, reads from offset 0 must come from the files, and
    the empty topics take writes."""
    empty = "aaa-" + unique_topic("empty")
    full = "zzz-" + unique_topic("full")
    create_topics(broker, NewTopic(empty, num_partitions=2, replication_factor=1))
    rng = random.Random(1)
    msgs = [Msg(b"k", rng.randbytes(5000)) for _ in range(600)]
    ck_produce(broker.bootstrap, full, msgs)
    for stop in ("sigterm", "kill9"):
        if stop == "sigterm":
            assert broker.stop() == 0
        else:
            broker.kill9()
        broker.start()
        records = ck_consume(broker.bootstrap, full, 0, 0, len(msgs), timeout=60)
        assert [r.value for r in records] == [m.value for m in msgs]
    assert ck_produce(broker.bootstrap, empty, [Msg(b"k", b"v", partition=1)]) == [(1, 0)]
    assert [r.value for r in ck_consume(broker.bootstrap, empty, 1, 0, 1)] == [b"v"]


def test_restart_with_another_core_count(spate_factory):
    """Partition ownership follows the core count; data written with --cores 2 is all there
    after a restart with --cores 1, and writes continue at the right offsets."""
    if TARGET == "kafka":
        pytest.skip("Spate-only flag")
    broker = spate_factory("--default-partitions", "4")
    topic = unique_topic("cores")
    msgs = [Msg(b"k%d" % i, b"v%d" % i, partition=i % 4) for i in range(200)]
    ck_produce(broker.bootstrap, topic, msgs)
    before = snapshot(broker, [topic])
    assert broker.stop() == 0
    broker.extra_args = ["--default-partitions", "4", "--cores", "1"]
    broker.start()
    assert snapshot(broker, [topic]) == before
    for partition in range(4):
        [(p, offset)] = ck_produce(broker.bootstrap, topic, [Msg(b"n", b"n", partition=partition)])
        assert (p, offset) == (partition, 50)


def io_fields(broker):
    """The partition logs' I/O counts (writes, fdatasyncs, dir_syncs), from the line a clean
    shutdown logs (the broker runs with --log-format json)."""
    for line in reversed(broker.log_text().splitlines()):
        if "partition log I/O since start" in line:
            return json.loads(line)["fields"]
    raise AssertionError("no I/O totals in the broker's log:\n" + broker.log_tail())


def io_totals(broker):
    """(writes, fdatasyncs) of the partition logs since start."""
    fields = io_fields(broker)
    return fields["writes"], fields["fdatasyncs"]


@pytest.mark.parametrize("durability", ["fsync", "write"])
def test_durability_policy_decides_the_fdatasyncs(spate_factory, durability):
    """Under --durability fsync a log's flusher follows every write with an fdatasync (the
    produces waiting on one write share it: group commit); under write, a segment is flushed
    only when it is sealed or its log closed. kill -9 cannot tell the two apart (the page
    cache outlives the process), and glommio's fdatasync goes through io_uring where strace
    cannot see it, so the broker counts them and logs the totals at a clean shutdown.

    K records produced one at a time with acks=all take a write each: under fsync there must
    be at least as many fdatasyncs as writes, under write a handful. The records are all
    there after a restart either way."""
    if TARGET == "kafka":
        pytest.skip("Spate-only flag and log line")
    records = 100
    broker = spate_factory("--durability", durability, "--log-format", "json")
    topic = unique_topic(durability)
    ck_produce(broker.bootstrap, topic, [Msg(b"k", b"first")])
    values = [b"first"]
    with connect(broker.port) as sock:
        for i in range(records):
            values.append(b"v%d" % i)
            sock.sendall(produce_v3(topic.encode(), 0, record_batch([values[-1]]), i))
            correlation_id, response = read_response(sock)
            assert correlation_id == i
            assert produce_v3_result(response) == (0, i + 1)
    assert broker.stop() == 0
    writes, fdatasyncs = io_totals(broker)
    assert writes >= records, f"{writes} writes for {records} produces one at a time"
    if durability == "fsync":
        assert fdatasyncs >= writes, f"{writes} writes, only {fdatasyncs} fdatasyncs"
    else:
        # None per write; a clean stop syncs the file system once instead of each log.
        assert fdatasyncs <= records // 10, f"{fdatasyncs} fdatasyncs for {writes} writes"
    broker.start()
    assert [r.value for r in ck_consume_all(broker.bootstrap, topic)] == values


# Serial: the idle flusher gets one second to write its zeros; other tests' disk writes would
# take it from it.
@pytest.mark.serial
@pytest.mark.parametrize("durability", ["fsync", "write"])
def test_fsync_writes_zeros_ahead_of_the_data_while_idle(spate_factory, durability):
    """Under --durability fsync an idle log's flusher writes (and syncs) zeros over the
    preallocated blocks ahead of its data, so that the next appends overwrite written blocks
    and their fdatasync commits no extent conversion. Checked with filefrag: right after the
    data, the segment's extents are written, not unwritten; and no acknowledged record is
    touched. Under write nothing of the kind happens."""
    if TARGET == "kafka":
        pytest.skip("Spate-only flag and log line")
    if shutil.which("filefrag") is None:
        pytest.skip("needs filefrag (e2fsprogs)")
    broker = spate_factory("--durability", durability, "--log-format", "json")
    topic = unique_topic("zeros-" + durability)
    values = [b"z%d" % i + b"." * 1000 for i in range(200)]
    with connect(broker.port) as sock:
        for i, value in enumerate(values):
            sock.sendall(produce_v3(topic.encode(), 0, record_batch([value]), i))
            assert produce_v3_result(read_response(sock)[1]) == (0, i)
    time.sleep(1)  # idle: the flusher writes its zeros now
    segment = broker.partition_dir(topic, 0) / "00000000000000000000.log"
    extents = subprocess.run(["filefrag", "-v", str(segment)], capture_output=True,
                             text=True, check=True).stdout
    rows = [line for line in extents.splitlines() if re.match(r"\s*\d+:", line)]
    unwritten = [row for row in rows if "unwritten" in row]
    data_blocks = -(-sum(len(v) + 70 for v in values) // 4096)
    if durability == "fsync":
        # The first unwritten extent, if any, starts well past the data's last block.
        for row in unwritten:
            first_block = int(row.split(":")[1].split("..")[0])
            assert first_block >= data_blocks + 64, extents
    else:
        assert unwritten, f"expected preallocated (unwritten) extents:\n{extents}"
    assert broker.stop() == 0
    zero_writes = io_fields(broker)["zero_writes"]
    assert (zero_writes > 0) == (durability == "fsync"), zero_writes
    broker.start()
    assert [r.value for r in ck_consume_all(broker.bootstrap, topic)] == values


@pytest.mark.parametrize("durability", ["fsync", "write"])
def test_fsync_makes_the_names_of_new_segments_durable(spate_factory, durability):
    """fdatasync of a new segment file makes its bytes durable but not its name: under
    --durability fsync the broker also fsyncs the partition directory when a segment file
    appears in it (a new log, a roll) and the data dir when a partition directory appears,
    before a write to it is acknowledged; under write it does neither. Counted by the broker
    (the fsyncs go through the blocking pool) and compared with the segment files on disk."""
    if TARGET == "kafka":
        pytest.skip("Spate-only flag and log line")
    broker = spate_factory("--durability", durability, "--log-format", "json")
    topic = unique_topic("names-" + durability)
    create_topics(broker, NewTopic(topic, num_partitions=2, replication_factor=1, config={
        "segment.bytes": str(1024 * 1024)}))
    value = random.randbytes(48 * 1024)
    ck_produce(broker.bootstrap, topic, [Msg(b"k", value, partition=0) for _ in range(70)])
    ck_produce(broker.bootstrap, topic, [Msg(b"k", value, partition=1)])
    segments = [len(segment_files(broker.partition_dir(topic, p))) for p in range(2)]
    assert segments[0] >= 3 and segments[1] == 1, segments  # 3.3 MiB in 1 MiB segments
    assert broker.stop() == 0
    dir_syncs = io_fields(broker)["dir_syncs"]
    if durability == "fsync":
        # One per segment file of the topic's logs, one per partition directory created.
        assert dir_syncs >= sum(segments) + 2, f"{dir_syncs} dir fsyncs for {segments}"
    else:
        assert dir_syncs == 0, dir_syncs
    broker.start()
    assert [len(ck_consume_all(broker.bootstrap, topic, p)) for p in range(2)] == [70, 1]


def test_clean_stop_record_is_used_by_one_start_only(spate_factory):
    """A clean stop records every log's state in one file per shard instead of writing index
    and snapshot files per log; the next start resumes the logs from it and deletes it before
    it serves. Records written after that start then survive a kill -9 through the logs' own
    recovery, and idempotent producer state survives both kinds of restart."""
    if TARGET == "kafka":
        pytest.skip("Spate's clean-stop record")
    broker = spate_factory("--default-partitions", "4")
    topic = unique_topic("clean")
    create_topics(broker, NewTopic(topic, num_partitions=4, replication_factor=1))
    first = [Msg(b"k%d" % i, b"first-%d" % i, partition=i % 4) for i in range(80)]
    ck_produce(broker.bootstrap, topic, first, **{"enable.idempotence": True})
    assert broker.stop() == 0
    meta = broker.data_dir / "__spate_meta"
    assert sorted(p.name for p in meta.glob("clean-stop-*")) == ["clean-stop-0", "clean-stop-1"]
    written = [p.name for p in broker.data_dir.glob(f"{topic}-*/*")]
    assert written and all(name.endswith(".log") for name in written), written

    broker.start()
    assert not list(meta.glob("clean-stop-*")), "the record outlived the start that read it"
    text = re.sub(r"\x1b\[[0-9;]*m", "", broker.log_text())
    resumed = [int(re.search(r"resumed=(\d+)", line).group(1))
               for line in text.splitlines() if "recovered partitions" in line]
    assert sum(resumed[-2:]) == 4, resumed
    second = [Msg(b"k%d" % i, b"second-%d" % i, partition=i % 4) for i in range(80)]
    ck_produce(broker.bootstrap, topic, second, **{"enable.idempotence": True})
    broker.kill9()
    broker.start()
    for partition in range(4):
        records = ck_consume_all(broker.bootstrap, topic, partition)
        expected = [m.value for m in first + second if m.partition == partition]
        assert [r.value for r in records] == expected
        assert [r.offset for r in records] == list(range(len(expected)))


def test_damage_before_the_last_index_entry_is_answered_corrupt_message(spate_factory):
    """Start-up checks a segment's batches only after its last index entry (Kafka checks even
    less after a clean shutdown). Bytes damaged before it are found by the fetch that lands
    there: the broker answers CORRUPT_MESSAGE (librdkafka: "Invalid message") instead of an
    empty answer that the consumer would fetch again for ever, and reads that start after the
    damage are served as before."""
    if TARGET == "kafka":
        pytest.skip("Spate's segment layout and start-up checks")
    broker = spate_factory("--cores", "1")
    topic = unique_topic("corrupt")
    create_topics(broker, NewTopic(topic, num_partitions=1, replication_factor=1))
    values = [b"v%03d-" % i + bytes(1000) for i in range(200)]
    with connect(broker.port) as sock:
        for i, value in enumerate(values):
            sock.sendall(produce_v3(topic.encode(), 0, record_batch([value]), i))
            assert produce_v3_result(read_response(sock)[1]) == (0, i)
    assert broker.stop() == 0
    segment = active_segment(broker.partition_dir(topic, 0))
    data = bytearray(segment.read_bytes())
    data[:4096] = bytes(4096)
    segment.write_bytes(bytes(data))
    broker.start()

    # Fetch again soon after an error, as an impatient client would.
    consumer = ck_consumer(broker.bootstrap, **{"enable.partition.eof": True,
                                                "fetch.error.backoff.ms": 10})
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        errors, deadline = [], time.monotonic() + 20
        while not errors and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error():
                errors.append(msg.error())
        assert errors, "no error for a fetch of the damaged bytes"
        assert "Invalid message" in str(errors[0]), errors[0]
        # The consumer keeps fetching the damaged place; the broker's error line is throttled
        # to about one a second, with a count, not one per fetch.
        fetches_from = time.monotonic()
        while time.monotonic() - fetches_from < 3:
            consumer.poll(0.1)
            consumer.seek(TopicPartition(topic, 0, 0))
        lines = [line for line in broker.log_text().splitlines() if "read failed" in line]
        assert 1 <= len(lines) <= 6, f"{len(lines)} error lines:\n" + "\n".join(lines[:8])
    finally:
        consumer.close()
    # Past the damaged block (1 KiB batches: offset 10 starts after byte 4096), all is served.
    records = ck_consume(broker.bootstrap, topic, 0, 10, 190)
    assert [r.value for r in records] == values[10:]
