"""Crash trials (issue 18): a broker under load is killed with SIGKILL at a random moment,
restarted on the same data dir, and checked for what a user was promised: every record whose
delivery was acknowledged is present exactly once, in order, at the offset it was acknowledged
with; committed offsets are not below the last acknowledged commit; the broker serves again.

    python3 tests/clients/crash_trials.py [--trials N] [--seed S] [--durability write|fsync|both]
                                          [--spate-bin PATH] [--workdir DIR] [--cluster]

prints one line per trial, then the seed and the counts (`test_crash.py` runs a short seeded
form; `scripts/crash-trials.sh N` is the long form).

Each trial starts a broker (`--cores 2`, topics never auto-created, 64 KiB segments for the
committed-offsets logs) on a fresh port and data dir; trials alternate `--durability write`
and `fsync` (`--durability both`). While it lives, four clients run on their own threads:
- an idempotent acks=all producer (librdkafka) writes ~1,400 records/s to the 4 partitions of
  TOPIC (256 KiB segments: each partition rolls every second or two) and the 2 partitions of
  RETAINED (64 KiB segments, retention.ms 2000: the 5 s retention pass deletes segments).
  A value names its topic, partition and sequence number, so a duplicate, a gap or a reordering
  shows; librdkafka keeps retrying across the crash (message.timeout.ms 60 s);
- a consumer group member of GROUP subscribed to TOPIC, committing what it consumed with
  synchronous commits every 50 ms (each partition's last acknowledged commit is recorded);
- a committer of CHURN_GROUP (no members): offsets of all six partitions with 1 KiB of metadata
  each, every 40 ms, so that its shard's offsets log rolls and compacts (it spans four 64 KiB
  segments) every second or two;
- an AdminClient issuing DeleteRecords on a partition of TOPIC every 0.2-0.8 s, a third of the
  way from its low watermark to its last acknowledged offset.

The kill comes at one of these moments (MOMENTS, in turn over the trials): during steady load
at a random time; 0-3 ms after a segment roll of TOPIC was seen (a new .log file); after a
retention pass deleted a segment of RETAINED; after a compaction of an offsets log deleted a
segment; right after a DeleteRecords was sent or acknowledged; a random few ms after a SIGTERM,
while the broker drains, closes its logs and writes its clean-stop records (when the kill comes
after the clean exit, the restart is a clean one and resumes the logs from those records). A
third of the trials (at random) also kill the broker again during its start-up recovery, once
or twice, a random moment after it logged "starting spate" and within its usual start-up time,
before the start that must succeed; each such kill is reported as in recovery or after it.
Timing is random (seeded), so a seed replays the same plan, not the same interleaving.

After the restart the trial measures recovery (process start until a Metadata request lists
both topics with a leader for every partition), waits for the commits and DeleteRecords in
flight to settle (new ones are held while it checks), and checks: each partition's log end is
past every offset acknowledged before the kill; TOPIC's log start is at least the highest
acknowledged DeleteRecords low watermark and at most the highest one requested; each group's
committed offset is at least its last acknowledged commit, at most the highest it asked for
and (GROUP) at most the log end. Load resumes for a second, the producer is flushed, and every
partition is read back: an acknowledged record may be missing only below the partition's log
start, and then only if (TOPIC) a DeleteRecords requested it or (RETAINED) its timestamp is
older than retention.ms when the log start was read; anything else missing is lost, a value at
two offsets is duplicated, a value elsewhere than its acknowledged offset is moved, sequence
numbers that go down along the offsets are reordered. Every partition must have acknowledged
records after the restart (the broker serves produce), and the read back must reach the log
end (it serves fetches).

`--cluster` (issue 14) runs trials of another kind: three nodes (`--cores 1`, each a broker
and a controller voter, broker heartbeat 200 ms, session 1.5 s), a topic of 3 partitions of
replication factor 3 with min.insync.replicas 2 (256 KiB segments), an idempotent acks=all
producer writing ~600 records/s to its partitions in turn. After 0.3-4 s of load a node is
killed with SIGKILL: the role asked for goes round the trials (the leader of a random
partition; a follower, a node that leads nothing when there is one; the active controller),
and since a node often holds several the trial line says what the killed one held (with
`--durability both`, each round of the three roles runs in one mode, the next in the
other). It stays
down 0.2-3 s and is started again; a third of the trials (at random) kill a second node of a
random role 0-2 s after the first came back, while it catches up. Once every replica is back
in every ISR with all three nodes agreeing on one controller (within 90 s, else "not serving":
a failover that never completes), load goes on for a second, the producer is flushed, every
partition is read back as above (its log start must be 0) and the three replicas of each
partition must become byte for byte identical within 30 s ("replicas differ"); no node may
have logged that the metadata log made a replica in sync that lacked records below the
leader's high watermark ("behind the high watermark", the invariant acks=all rests on, which a
leader checks at every ISR change it applies: broken, a later election could lose
acknowledged records even where this trial lost none). Records whose
delivery failed (message.timeout.ms, 60 s) were never acknowledged and are not counted.

A kill -9 is a process crash, not a power loss: the page cache survives, so under both
durability modes nothing acknowledged may be lost (power loss is another test).
"""

import argparse
import collections
import os
import random
import re
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer  # noqa: E402
from confluent_kafka import TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

import conftest  # noqa: E402
from client_helpers import CK_COMMON  # noqa: E402
from conftest import CRASH_MARKS, Broker  # noqa: E402
from kafka_wire import connect, metadata_request_v1, read_response  # noqa: E402
from test_cluster import Node, agreed_leader, describe_quorum, metadata_v7  # noqa: E402

TOPIC = "crash"
PARTITIONS = 4
RETAINED = "crash-retained"
RETAINED_PARTITIONS = 2
RETENTION_MS = 2000
GROUP = "crash-member"
CHURN_GROUP = "crash-churn"
ALL_PARTITIONS = ([(TOPIC, p) for p in range(PARTITIONS)]
                  + [(RETAINED, p) for p in range(RETAINED_PARTITIONS)])
CLUSTER_TOPIC = "crash-replicated"
CLUSTER_PARTITIONS = 3
TAGS = {TOPIC: "m", RETAINED: "r", CLUSTER_TOPIC: "c"}

TOPIC_SEGMENT_BYTES = 256 * 1024
RETAINED_SEGMENT_BYTES = 64 * 1024
OFFSETS_SEGMENT_BYTES = 64 * 1024
VALUE_BYTES = 512
TICK_S = 0.01
RECORDS_PER_TICK = {TOPIC: 12, RETAINED: 2}
MEMBER_COMMIT_S = 0.05
CHURN_COMMIT_S = 0.04
CHURN_METADATA = "x" * 1024

MOMENTS = ("steady", "roll", "retention", "compaction", "delete-records", "shutdown")
MOMENT_WAIT_S = 20.0  # a moment that does not come (retention, compaction) kills anyway
STEADY_S = (0.3, 6.0)
SETTLE_S = 20.0
RESUME_S = 1.0
START_TIMEOUT_S = 60.0
READ_TIMEOUT_S = 60.0
PROBLEMS_KEPT = 40  # per trial; the counts are complete
SLOW_PHASE_S = 2.0  # a trial line names a phase after the restart that took longer

# Clients reconnect within half a second of the restart, not after librdkafka's 10 s back-off.
CLIENT = {**CK_COMMON, "reconnect.backoff.ms": 20, "reconnect.backoff.max.ms": 500,
          "log_level": 0}  # the crash makes every client log its refused connections

# What a trial can find; the first five are counted per record or offset, the others per check.
FAILURES = ("lost", "duplicated", "moved", "reordered", "wrong committed offsets",
            "log end below an acknowledged offset", "log start wrong", "not serving",
            "broker crashed", "replicas differ")


def value_of(topic, partition, seq):
    head = f"{TAGS[topic]}{partition}:{seq}:".encode()
    return (head * (VALUE_BYTES // len(head) + 1))[:VALUE_BYTES]


def seq_of(value):
    """(tag and partition, sequence number) of a value; (None, -1) when it is not ours."""
    try:
        tag, seq, _ = (value or b"").split(b":", 2)
        return tag.decode(), int(seq)
    except ValueError:
        return None, -1


class Load:
    """The clients of one trial, each on its own thread, and what the broker acknowledged.

    `hold` stops new commits and DeleteRecords (not produce) while a restart is checked;
    `settle` waits until those in flight have their answers.
    """

    def __init__(self, bootstrap, seed):
        self.bootstrap = bootstrap
        self.rng = random.Random(seed)
        self.lock = threading.Condition()
        self.stopping = threading.Event()
        self.held = threading.Event()
        self.in_flight = 0
        self.life = 0
        self.errors = []
        # (topic, partition) -> {seq: (offset, timestamp)}; acks per life (restart).
        self.acked = {tp: {} for tp in ALL_PARTITIONS}
        self.acked_in_life = collections.Counter()
        self.sent = 0
        self.delivery_failed = collections.Counter()
        # GROUP: partition -> last acknowledged commit, highest commit asked for.
        self.member_acked, self.member_asked = {}, {}
        # CHURN_GROUP: the commit number, the same for every partition.
        self.churn_acked, self.churn_asked = {}, {}
        # TOPIC: partition -> highest acknowledged low watermark, highest offset asked for.
        self.deleted_acked = dict.fromkeys(range(PARTITIONS), 0)
        self.deleted_asked = dict.fromkeys(range(PARTITIONS), 0)
        self.delete_sent = threading.Event()
        self.delete_done = threading.Event()
        self.member_assigned = threading.Event()
        self.threads = [threading.Thread(target=self._guard, args=(loop,), daemon=True)
                        for loop in (self._produce, self._member, self._churn, self._delete)]

    def start(self):
        for thread in self.threads:
            thread.start()

    def stop(self):
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=120)
        return not any(thread.is_alive() for thread in self.threads)

    def hold(self):
        self.held.set()

    def release(self):
        with self.lock:
            self.life += 1
        self.held.clear()

    def settle(self, timeout=SETTLE_S):
        """Waits until no commit or DeleteRecords is in flight; False on timeout."""
        with self.lock:
            return self.lock.wait_for(lambda: self.in_flight == 0, timeout)

    def acked_ends(self):
        """(topic, partition) -> one past the highest acknowledged offset (0: none)."""
        with self.lock:
            return {tp: max((o for o, _ in seqs.values()), default=-1) + 1
                    for tp, seqs in self.acked.items()}

    def _guard(self, loop):
        try:
            loop()
        except Exception as error:  # a client thread must not die silently
            self.errors.append(f"{loop.__name__}: {error!r}")

    def _call(self, fn):
        """Runs one commit or DeleteRecords unless held, counted as in flight."""
        with self.lock:
            if self.held.is_set():
                return None
            self.in_flight += 1
        try:
            return fn()
        finally:
            with self.lock:
                self.in_flight -= 1
                self.lock.notify_all()

    def _produce(self):
        producer = Producer({"bootstrap.servers": self.bootstrap, "enable.idempotence": True,
                             "acks": "all", "linger.ms": 5, "message.timeout.ms": 60000,
                             "request.timeout.ms": 10000, **CLIENT})
        seqs = collections.Counter()  # (topic, partition) -> next sequence number
        turn = collections.Counter()  # topic -> records produced, for the round robin

        def on_delivery(err, msg):
            tp = (msg.topic(), msg.partition())
            if err:
                self.delivery_failed[str(err)] += 1
                return
            _, seq = seq_of(msg.value())
            with self.lock:
                self.acked[tp][seq] = (msg.offset(), msg.timestamp()[1])
                self.acked_in_life[(self.life, tp)] += 1

        next_tick = time.monotonic()
        while not self.stopping.is_set():
            now_ms = int(time.time() * 1000)
            for topic, count in RECORDS_PER_TICK.items():
                partitions = PARTITIONS if topic == TOPIC else RETAINED_PARTITIONS
                for _ in range(count):
                    tp = (topic, turn[topic] % partitions)
                    try:
                        producer.produce(topic, value_of(*tp, seqs[tp]), partition=tp[1],
                                         timestamp=now_ms, on_delivery=on_delivery)
                    except BufferError:
                        break  # queue full while the broker is down: try at the next tick
                    seqs[tp] += 1
                    turn[topic] += 1
                    self.sent += 1
            producer.poll(0)
            next_tick += TICK_S
            time.sleep(max(0.0, next_tick - time.monotonic()))
        remaining = producer.flush(90)
        if remaining:
            self.errors.append(f"producer: {remaining} records neither delivered nor failed")

    def _member(self):
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": GROUP,
                             "enable.auto.commit": False, "auto.offset.reset": "earliest",
                             "session.timeout.ms": 10000, "heartbeat.interval.ms": 500,
                             **CLIENT})
        positions = {}

        def on_assign(_consumer, partitions):
            self.member_assigned.set()

        def on_revoke(_consumer, partitions):
            for tp in partitions:
                positions.pop(tp.partition, None)

        consumer.subscribe([TOPIC], on_assign=on_assign, on_revoke=on_revoke)
        last_commit, dirty = 0.0, False
        while not self.stopping.is_set():
            for msg in consumer.consume(num_messages=500, timeout=0.05):
                if not msg.error():
                    positions[msg.partition()] = msg.offset() + 1
                    dirty = True
            if dirty and time.monotonic() - last_commit >= MEMBER_COMMIT_S:
                asked = dict(positions)
                if self._call(lambda: self._member_commit(consumer, asked)) is not None:
                    last_commit, dirty = time.monotonic(), False
        consumer.close()

    def _member_commit(self, consumer, asked):
        with self.lock:
            for p, offset in asked.items():
                self.member_asked[p] = max(self.member_asked.get(p, -1), offset)
        try:
            answer = consumer.commit(
                offsets=[TopicPartition(TOPIC, p, o) for p, o in asked.items()],
                asynchronous=False)
        except KafkaException:
            return False
        with self.lock:
            for tp in answer:
                if tp.error is None:
                    self.member_acked[tp.partition] = tp.offset
        return True

    def _churn(self):
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": CHURN_GROUP,
                             "enable.auto.commit": False, **CLIENT})
        number = 0
        while not self.stopping.is_set():
            number += 1
            self._call(lambda: self._churn_commit(consumer, number))
            time.sleep(CHURN_COMMIT_S)
        consumer.close()

    def _churn_commit(self, consumer, number):
        with self.lock:
            for tp in ALL_PARTITIONS:
                self.churn_asked[tp] = number
        try:
            answer = consumer.commit(
                offsets=[TopicPartition(t, p, number, CHURN_METADATA) for t, p in ALL_PARTITIONS],
                asynchronous=False)
        except KafkaException:
            return False
        with self.lock:
            for tp in answer:
                if tp.error is None:
                    self.churn_acked[(tp.topic, tp.partition)] = tp.offset
        return True

    def _delete(self):
        admin = AdminClient({"bootstrap.servers": self.bootstrap, **CLIENT})
        while not self.stopping.wait(self.rng.uniform(0.2, 0.8)):
            partition = self.rng.randrange(PARTITIONS)
            self._call(lambda: self._delete_one(admin, partition))

    def _delete_one(self, admin, partition):
        with self.lock:
            low = self.deleted_acked[partition]
            end = max((o for o, _ in self.acked[(TOPIC, partition)].values()), default=-1) + 1
            if end - low < 30:
                return False
            target = low + self.rng.randint(1, (end - low) // 3)
            self.deleted_asked[partition] = max(self.deleted_asked[partition], target)
        future = admin.delete_records([TopicPartition(TOPIC, partition, target)],
                                      request_timeout=10)
        self.delete_sent.set()
        try:
            low_watermark = list(future.values())[0].result(timeout=30).low_watermark
        except KafkaException:
            return False
        with self.lock:
            self.deleted_acked[partition] = max(self.deleted_acked[partition], low_watermark)
        self.delete_done.set()
        return True


# ---------------------------------------------------------------------------------------------
# The broker: start without waiting, recovery time, kill moments.


def launch(broker):
    """Starts the broker's process without waiting for it (Broker.start waits)."""
    broker.starts += 1
    with open(broker.log_path, "ab") as log:
        log.write(f"\n===== start #{broker.starts}: {' '.join(broker.command())}\n".encode())
        log.flush()
        broker.proc = subprocess.Popen(broker.command(), stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
    return time.monotonic()


def start_log(broker, since):
    """The broker's log written after byte `since`, without colours."""
    with open(broker.log_path, "rb") as log:
        log.seek(since)
        return re.sub(rb"\x1b\[[0-9;]*m", b"", log.read())


def kill_in_start_up(broker, rng, window_s):
    """Starts the broker and kills it a random moment (up to `window_s`) after it logged
    "starting spate", while it opens and recovers its logs; returns (delay in ms, the phase
    it was in: "in recovery" or "after start-up", when it already accepted clients)."""
    since = broker.log_path.stat().st_size
    started = launch(broker)
    while (b"starting spate" not in start_log(broker, since) and broker.alive()
           and time.monotonic() - started < START_TIMEOUT_S):
        time.sleep(0.0005)
    delay = rng.uniform(0, window_s)
    time.sleep(delay)
    served = b"accepting clients" in start_log(broker, since)
    broker.kill9()
    return round(delay * 1000), "after start-up" if served else "in recovery"


def start_up_ms(broker):
    """How long the last start took from "starting spate" to "accepting clients", as the
    broker logged it (None if it did not)."""
    text = start_log(broker, 0).rsplit(b"===== start", 1)[-1]
    found = re.search(rb"accepting clients.*elapsed_ms=(\d+)", text)
    return int(found.group(1)) if found else None


def kill_in_shutdown(broker, rng, window_s):
    """SIGTERM, then SIGKILL a random moment (up to `window_s`) later, while the broker drains
    requests, closes its logs and writes its clean-stop records; returns (delay in ms, "in
    shutdown", or "after a clean stop" with how long the stop took)."""
    sent = time.monotonic()
    broker.proc.send_signal(signal.SIGTERM)
    delay = rng.uniform(0, window_s)
    while time.monotonic() - sent < delay and broker.alive():
        time.sleep(0.0005)
    stopped_s = None if broker.alive() else time.monotonic() - sent
    broker.kill9()
    if stopped_s is None:
        return round(delay * 1000), "in shutdown", None
    return round(delay * 1000), "after a clean stop", stopped_s


def leaders(port):
    """Metadata v1 for both topics: {topic: partitions with a leader}, or None unanswered."""
    try:
        with connect(port, timeout=1.0) as sock:
            sock.sendall(metadata_request_v1([TOPIC.encode(), RETAINED.encode()], 9))
            _, body = read_response(sock)
    except (OSError, AssertionError, struct.error):
        return None
    position = 0

    def take(fmt):
        nonlocal position
        values = struct.unpack_from(fmt, body, position)
        position += struct.calcsize(fmt)
        return values[0] if len(values) == 1 else values

    def skip_string():
        nonlocal position
        size = take(">h")
        position += max(size, 0)

    for _ in range(take(">i")):  # brokers: node id, host, port, rack
        take(">i")
        skip_string()
        take(">i")
        skip_string()
    take(">i")  # controller id
    found = {}
    for _ in range(take(">i")):
        error = take(">h")
        name = body[position + 2:position + 2 + struct.unpack_from(">h", body, position)[0]]
        skip_string()
        take(">b")  # is_internal
        led = 0
        for _ in range(take(">i")):
            partition_error, _, leader = take(">hii")
            for _ in range(2):  # replicas, isr
                count = take(">i")
                position += 4 * count
            led += partition_error == 0 and leader >= 0
        found[name.decode()] = led if error == 0 else 0
    return found


def wait_serving(broker, started):
    """Seconds from `started` until Metadata lists both topics with every partition led."""
    want = {TOPIC: PARTITIONS, RETAINED: RETAINED_PARTITIONS}
    while time.monotonic() - started < START_TIMEOUT_S:
        if not broker.alive():
            raise TrialFailed("broker crashed",
                              f"exited with code {broker.proc.returncode} during start-up")
        if leaders(broker.port) == want:
            return time.monotonic() - started
        time.sleep(0.005)
    raise TrialFailed("not serving", f"no leaders in Metadata within {START_TIMEOUT_S} s")


def log_names(data_dir, topic):
    """The .log files of every partition directory of `topic`."""
    names = set()
    for path in Path(data_dir).glob(f"{topic}-[0-9]*"):
        try:
            names.update(f"{path.name}/{n}" for n in os.listdir(path) if n.endswith(".log"))
        except FileNotFoundError:
            pass
    return names


def wait_for_moment(moment, broker, load, rng):
    """Returns when the broker should be killed for `moment`, and what was seen."""
    if moment in ("steady", "shutdown"):
        time.sleep(rng.uniform(*STEADY_S))
        return "steady load"
    time.sleep(rng.uniform(0.3, 4.0))
    watch = {"roll": TOPIC, "retention": RETAINED, "compaction": "__consumer_offsets"}
    deadline = time.monotonic() + MOMENT_WAIT_S
    if moment == "delete-records":
        event = load.delete_sent if rng.random() < 0.5 else load.delete_done
        event.clear()
        seen = event.wait(MOMENT_WAIT_S)
        what = "DeleteRecords sent" if event is load.delete_sent else "DeleteRecords acknowledged"
    else:
        topic = watch[moment]
        before = log_names(broker.data_dir, topic)
        seen = False
        while not seen and time.monotonic() < deadline:
            time.sleep(0.001)
            now = log_names(broker.data_dir, topic)
            seen = (now - before) if moment == "roll" else (before - now)
            before = now
        what = {"roll": "a segment roll of", "retention": "a retention delete in",
                "compaction": "a compaction of"}[moment]
        what = f"{what} {topic}"
    time.sleep(rng.uniform(0, 0.003))
    return what if seen else f"{what} not seen in {MOMENT_WAIT_S:.0f} s"


class TrialFailed(Exception):
    def __init__(self, kind, detail):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


# ---------------------------------------------------------------------------------------------
# One trial.


class Outcome:
    def __init__(self, durability):
        self.durability = durability
        self.acked = 0
        self.counts = collections.Counter()  # FAILURES -> how many
        self.problems = []
        self.recovery_s = None
        self.start_up_ms = None
        self.shutdown = None  # (ms after SIGTERM, phase, seconds a clean stop took)
        self.phases_s = {}  # how long the checks after the restart took, when slow
        self.recovery_kills = []
        self.kill_at_s = 0.0
        self.moment = ""

    def fail(self, kind, detail, count=1):
        self.counts[kind] += count
        if len(self.problems) < PROBLEMS_KEPT:
            self.problems.append(f"{kind}: {detail}")

    @property
    def ok(self):
        return not self.problems


def create_topics(bootstrap):
    admin = AdminClient({"bootstrap.servers": bootstrap, **CLIENT})
    futures = admin.create_topics([
        NewTopic(TOPIC, num_partitions=PARTITIONS, replication_factor=1,
                 config={"segment.bytes": str(TOPIC_SEGMENT_BYTES)}),
        NewTopic(RETAINED, num_partitions=RETAINED_PARTITIONS, replication_factor=1,
                 config={"segment.bytes": str(RETAINED_SEGMENT_BYTES),
                         "retention.ms": str(RETENTION_MS)})])
    for future in futures.values():
        future.result(timeout=30)


def watermarks(consumer, topic, partition):
    deadline = time.monotonic() + 30
    while True:
        try:
            return consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10,
                                                  cached=False)
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def committed(bootstrap, group, partitions):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, **CLIENT})
    try:
        answer = consumer.committed([TopicPartition(t, p) for t, p in partitions], timeout=30)
        return {(tp.topic, tp.partition): tp.offset for tp in answer}
    finally:
        consumer.close()


def check_restart(broker, load, acked_ends, outcome):
    """Right after the restart, with commits and DeleteRecords held and settled."""
    if not load.settle():
        outcome.fail("not serving", f"commits or DeleteRecords unanswered {SETTLE_S:.0f} s "
                                    "after the restart")
        return
    reader = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "crash-checker",
                       **CLIENT})
    try:
        marks = {tp: watermarks(reader, *tp) for tp in ALL_PARTITIONS}
    finally:
        reader.close()
    for tp, (low, high) in marks.items():
        if high < acked_ends[tp]:
            outcome.fail("log end below an acknowledged offset",
                         f"{tp}: log end {high}, acknowledged up to {acked_ends[tp] - 1}")
    with load.lock:
        deleted = [(load.deleted_acked[p], load.deleted_asked[p]) for p in range(PARTITIONS)]
        member = (dict(load.member_acked), dict(load.member_asked))
        churn = (dict(load.churn_acked), dict(load.churn_asked))
    for p, (acked, asked) in enumerate(deleted):
        low = marks[(TOPIC, p)][0]
        if not acked <= low <= asked:
            outcome.fail("log start wrong", f"{TOPIC}-{p}: log start {low}, DeleteRecords "
                                            f"acknowledged {acked}, asked for up to {asked}")
    got = committed(broker.bootstrap, GROUP, [(TOPIC, p) for p in range(PARTITIONS)])
    for (topic, p), offset in got.items():
        acked, asked = member[0].get(p), member[1].get(p, -1)
        unset = offset < 0 and acked is None
        if not unset and not (acked or 0) <= offset <= min(asked, marks[(topic, p)][1]):
            outcome.fail("wrong committed offsets",
                         f"{GROUP} {topic}-{p}: committed {offset}, last acknowledged {acked}, "
                         f"asked for up to {asked}, log end {marks[(topic, p)][1]}")
    got = committed(broker.bootstrap, CHURN_GROUP, ALL_PARTITIONS)
    for tp, offset in got.items():
        acked, asked = churn[0].get(tp), churn[1].get(tp, -1)
        unset = offset < 0 and acked is None
        if not unset and not (acked or 0) <= offset <= asked:
            outcome.fail("wrong committed offsets",
                         f"{CHURN_GROUP} {tp}: committed {offset}, last acknowledged {acked}, "
                         f"asked for up to {asked}")


def read_partition(bootstrap, topic, partition, low, high):
    """{offset: value} of the partition from `low` to `high`, and the errors seen."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "crash-reader",
                         "enable.auto.commit": False, "check.crcs": True,
                         "enable.partition.eof": True, "auto.offset.reset": "error", **CLIENT})
    consumer.assign([TopicPartition(topic, partition, low)])
    records, errors = {}, []
    deadline = time.monotonic() + READ_TIMEOUT_S
    try:
        while high > low and time.monotonic() < deadline:
            done = False
            for msg in consumer.consume(num_messages=1000, timeout=0.5):
                if msg.error():
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        done = True
                    else:
                        errors.append(msg.error())
                        done = True
                    continue
                records[msg.offset()] = msg.value()
            if done or max(records, default=low - 1) >= high - 1:
                break
    finally:
        consumer.close()
    return records, errors


def check_records(broker, load, restart_life, outcome):
    """Reads every partition back and compares it with what was acknowledged."""
    reader = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "crash-checker",
                       **CLIENT})
    try:
        for tp in ALL_PARTITIONS:
            check_partition(broker, load, restart_life, outcome, reader, tp)
    finally:
        reader.close()


def check_partition(broker, load, restart_life, outcome, reader, tp):
    """Reads one partition from its log start to its end and checks it (see the top)."""
    topic, partition = tp
    acked = load.acked[tp]
    outcome.acked += len(acked)
    if load.acked_in_life[(restart_life, tp)] == 0:
        outcome.fail("not serving", f"{tp}: nothing acknowledged after the restart")
    for attempt in range(3):
        low, high = watermarks(reader, topic, partition)
        now_ms = int(time.time() * 1000)
        records, errors = read_partition(broker.bootstrap, topic, partition, low, high)
        # A retention pass may delete segments of RETAINED between ListOffsets and the read.
        moved = any(e.code() == KafkaError._AUTO_OFFSET_RESET for e in errors)
        if not (topic == RETAINED and moved and attempt < 2):
            break
    if topic == TOPIC:
        acked_low, asked = load.deleted_acked[partition], load.deleted_asked[partition]
        if not acked_low <= low <= asked:
            outcome.fail("log start wrong", f"{tp} at the end: log start {low}, DeleteRecords "
                                            f"acknowledged {acked_low}, asked {asked}")
    if errors or len(records) != high - low:
        outcome.fail("not serving", f"{tp}: read {len(records)} of {high - low} records "
                                    f"from {low}: {errors[:2]}")
    at = collections.defaultdict(list)
    previous = -1
    for offset in sorted(records):
        tag, seq = seq_of(records[offset])
        if tag != f"{TAGS[topic]}{partition}" or records[offset] != value_of(*tp, seq):
            outcome.fail("moved", f"{tp} offset {offset}: foreign value "
                                  f"{records[offset][:24]!r}")
            continue
        at[seq].append(offset)
        if seq < previous:
            outcome.fail("reordered", f"{tp} offset {offset}: seq {seq} after {previous}")
        previous = seq
    for seq, offsets in at.items():
        if len(offsets) > 1:
            outcome.fail("duplicated", f"{tp} seq {seq} at offsets {offsets}",
                         len(offsets) - 1)
    young = now_ms - RETENTION_MS
    for seq, (offset, timestamp) in sorted(acked.items()):
        if offset < low:
            if topic == RETAINED and timestamp > young:
                outcome.fail("lost", f"{tp} seq {seq} at {offset}: below log start {low} "
                                     f"but only {now_ms - timestamp} ms old")
            elif topic not in (TOPIC, RETAINED):  # nothing deletes records there
                outcome.fail("lost", f"{tp} seq {seq} at {offset}: below log start {low}")
            continue  # below a DeleteRecords (its bounds are checked) or expired
        found = at.get(seq)
        if not found:
            outcome.fail("lost", f"{tp} seq {seq} acknowledged at {offset}, log "
                                 f"{low}..{high}")
        elif offset not in found:
            outcome.fail("moved", f"{tp} seq {seq} acknowledged at {offset}, found at "
                                  f"{found}")


def one_trial(index, seed, workdir, durability, moment, recovery_kills, hints):
    """Runs one trial; returns its Outcome and the Broker (its log and data dir)."""
    rng = random.Random(seed)
    outcome = Outcome(durability)
    shutil.rmtree(Path(workdir) / f"trial-{index}", ignore_errors=True)  # an earlier run's
    broker = Broker(Path(workdir) / f"trial-{index}",
                    ["--cores", "2", "--durability", durability, "--auto-create-topics", "false",
                     "--offsets-topic-segment-bytes", str(OFFSETS_SEGMENT_BYTES),
                     "--group-initial-rebalance-delay-ms", "0"], index)
    load = None
    try:
        broker.start()
        create_topics(broker.bootstrap)
        load = Load(broker.bootstrap, rng.randrange(1 << 32))
        load.start()
        if not load.member_assigned.wait(30):
            raise TrialFailed("not serving", "the group member got no assignment in 30 s")
        began = time.monotonic()
        outcome.moment = wait_for_moment(moment, broker, load, rng)
        acked_ends = load.acked_ends()
        load.hold()
        if moment == "shutdown":
            outcome.shutdown = kill_in_shutdown(broker, rng, hints["shutdown"])
        broker.kill9()
        outcome.kill_at_s = time.monotonic() - began
        for _ in range(recovery_kills):
            outcome.recovery_kills.append(kill_in_start_up(broker, rng, hints["start-up"]))
        outcome.recovery_s = wait_serving(broker, launch(broker))
        outcome.start_up_ms = start_up_ms(broker)
        served = time.monotonic()
        check_restart(broker, load, acked_ends, outcome)
        outcome.phases_s["restart checks"] = time.monotonic() - served
        restart_life = load.life + 1
        load.release()
        time.sleep(RESUME_S)
        stopping = time.monotonic()
        if not load.stop():
            raise TrialFailed("not serving", "the clients did not finish within 120 s")
        outcome.phases_s["clients' stop"] = time.monotonic() - stopping
        for error in load.errors:
            outcome.fail("not serving", error)
        check_records(broker, load, restart_life, outcome)
    except TrialFailed as failed:
        outcome.fail(failed.kind, failed.detail)
    except (AssertionError, KafkaException) as error:
        outcome.fail("not serving", str(error).splitlines()[0])
    finally:
        if load is not None:
            load.stopping.set()
        broker.kill9()
        if any(mark in broker.log_text() for mark in CRASH_MARKS):
            outcome.fail("broker crashed", f"a panic or an abort in {broker.log_path}")
    return outcome, broker


def describe(index, outcome):
    if outcome.shutdown:
        delay_ms, phase, stopped_s = outcome.shutdown
        again = (f", {delay_ms} ms after a SIGTERM (in shutdown)" if stopped_s is None else
                 f", after a SIGTERM and a clean stop in {stopped_s * 1000:.0f} ms")
    else:
        again = ""
    again += "".join(f", killed again {ms} ms into start-up ({phase})"
                    for ms, phase in outcome.recovery_kills)
    recovery = (f"recovered in {outcome.recovery_s * 1000:.0f} ms" if outcome.recovery_s
                else "did not recover")
    slow = "".join(f" ({name} took {seconds:.1f} s)" for name, seconds in
                   outcome.phases_s.items() if seconds > SLOW_PHASE_S)
    verdict = "ok" if outcome.ok else "FAILED: " + "; ".join(outcome.problems[:3])
    return (f"trial {index}: {outcome.durability}, killed at {outcome.kill_at_s:.2f} s after "
            f"{outcome.moment}{again}; {recovery}{slow}; {outcome.acked} acknowledged; "
            f"{verdict}")


def run(trials, seed, workdir, durability="both", say=print):
    """Runs `trials` trials; returns (the outcomes, the failing trials' descriptions)."""
    rng = random.Random(seed)
    modes = ["write", "fsync"] if durability == "both" else [durability]
    outcomes, failures = [], []
    # How long the broker's start-up and a clean stop under load take, measured as trials go:
    # the windows in which the kills of the start-up and the shutdown moments land.
    hints = {"start-up": 0.05, "shutdown": 0.8}
    for index in range(trials):
        # Every moment in turn; the modes alternate, and swap at each round of the moments so
        # that each moment meets each mode. A third of the trials, at random, are killed in
        # their start-up recovery too.
        cycle, moment = divmod(index, len(MOMENTS))
        mode = modes[(index + cycle) % len(modes)]
        recovery_kills = (1 + rng.randrange(2)) if rng.random() < 1 / 3 else 0
        outcome, broker = one_trial(index, rng.randrange(1 << 32), workdir, mode,
                                    MOMENTS[moment], recovery_kills,
                                    hints)
        outcomes.append(outcome)
        if outcome.start_up_ms:
            hints["start-up"] = statistics.median(
                o.start_up_ms for o in outcomes if o.start_up_ms) / 1000
        stops = [o.shutdown[2] for o in outcomes if o.shutdown and o.shutdown[2]]
        if stops:
            hints["shutdown"] = 1.5 * statistics.median(stops)
        say(describe(index, outcome))
        if outcome.ok:
            shutil.rmtree(broker.workdir, ignore_errors=True)
        else:
            failures.append(f"{describe(index, outcome)}\n  " + "\n  ".join(outcome.problems[:20])
                            + f"\n  broker log: {broker.log_path} (data dir kept: "
                            f"{broker.data_dir})")
    return outcomes, failures


def rate_line(seed, count, what, elapsed_s):
    """The summary's first line: how many trials, in how long."""
    return (f"seed {seed}: {count} {what} in {elapsed_s / 60:.1f} min "
            f"({count / max(elapsed_s / 60, 1e-9):.1f} trials/min)")


def by_durability(outcomes):
    """("all", every outcome), then each durability mode that has outcomes."""
    groups = [("all", outcomes)] + [
        (mode, [o for o in outcomes if o.durability == mode]) for mode in ("write", "fsync")]
    return [(name, group) for name, group in groups if group]


def summary(seed, outcomes, elapsed_s):
    """The counts, over all trials and per durability mode."""
    lines = [rate_line(seed, len(outcomes), "trials", elapsed_s)]
    for name, group in by_durability(outcomes):
        counts = sum((o.counts for o in group), collections.Counter())
        times = sorted(o.recovery_s * 1000 for o in group if o.recovery_s)
        kills = collections.Counter(phase for o in group for _, phase in o.recovery_kills)
        stops = collections.Counter(o.shutdown[1] for o in group if o.shutdown)
        recovery = (f"recovery p50 {statistics.median(times):.0f} ms, max {times[-1]:.0f} ms"
                    if times else "no recovery")
        lines.append(
            f"  {name:5s}: {len(group)} trials ({sum(not o.ok for o in group)} failed), "
            f"{sum(o.acked for o in group)} acknowledged, lost {counts['lost']}, "
            f"duplicated {counts['duplicated']}, moved {counts['moved']}, "
            f"reordered {counts['reordered']}, wrong committed offsets "
            f"{counts['wrong committed offsets']}, "
            f"{kills.get('in recovery', 0)} kills in start-up recovery "
            f"({kills.get('after start-up', 0)} more came after it), "
            f"{stops.get('in shutdown', 0)} in shutdown "
            f"({stops.get('after a clean stop', 0)} more after a clean stop); {recovery}")
        other = [f"{kind} {counts[kind]}" for kind in FAILURES[5:] if counts[kind]]
        if other:
            lines.append(f"         also: {', '.join(other)}")
    return lines


# ---------------------------------------------------------------------------------------------
# Cluster trials (issue 14): three nodes, a replicated topic, kills of a leader, a follower
# or the active controller.

CLUSTER_ROLES = ("leader", "follower", "controller")
CLUSTER_HEARTBEAT_MS = 200
CLUSTER_SESSION_MS = 1500
CLUSTER_MIN_INSYNC = 2
CLUSTER_RECORDS_PER_TICK = 6  # 600 records/s over the three partitions
CLUSTER_STEADY_S = (0.3, 4.0)  # load before a kill
CLUSTER_DOWN_S = (0.2, 3.0)  # a killed node stays down this long
CLUSTER_SECOND_KILL_S = (0.0, 2.0)  # after the first node's restart, while it catches up
CLUSTER_WHOLE_TIMEOUT_S = 90.0  # until every replica is back in every ISR
CLUSTER_IDENTICAL_TIMEOUT_S = 30.0


class ClusterLoad:
    """An idempotent acks=all producer on its own thread writing CLUSTER_TOPIC's partitions
    in turn, and what was acknowledged; the fields `check_partition` reads."""

    def __init__(self, bootstrap):
        self.bootstrap = bootstrap
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.life = 0
        self.errors = []
        self.acked = {(CLUSTER_TOPIC, p): {} for p in range(CLUSTER_PARTITIONS)}
        self.acked_in_life = collections.Counter()
        self.delivery_failed = collections.Counter()
        self.thread = threading.Thread(target=self._guard, daemon=True)

    def start(self):
        self.thread.start()

    def stop(self):
        self.stopping.set()
        self.thread.join(timeout=120)
        return not self.thread.is_alive()

    def next_life(self):
        with self.lock:
            self.life += 1
            return self.life

    def _guard(self):
        try:
            self._produce()
        except Exception as error:  # the thread must not die silently
            self.errors.append(f"producer: {error!r}")

    def _produce(self):
        producer = Producer({"bootstrap.servers": self.bootstrap, "enable.idempotence": True,
                             "acks": "all", "linger.ms": 5, "message.timeout.ms": 60000,
                             "request.timeout.ms": 10000, **CLIENT})
        seqs = collections.Counter()

        def on_delivery(err, msg):
            tp = (msg.topic(), msg.partition())
            if err:
                with self.lock:
                    self.delivery_failed[str(err)] += 1
                return
            _, seq = seq_of(msg.value())
            with self.lock:
                self.acked[tp][seq] = (msg.offset(), msg.timestamp()[1])
                self.acked_in_life[(self.life, tp)] += 1

        turn = 0
        next_tick = time.monotonic()
        while not self.stopping.is_set():
            now_ms = int(time.time() * 1000)
            for _ in range(CLUSTER_RECORDS_PER_TICK):
                tp = (CLUSTER_TOPIC, turn % CLUSTER_PARTITIONS)
                try:
                    producer.produce(CLUSTER_TOPIC, value_of(*tp, seqs[tp]), partition=tp[1],
                                     timestamp=now_ms, on_delivery=on_delivery)
                except BufferError:
                    break
                seqs[tp] += 1
                turn += 1
            producer.poll(0)
            next_tick += TICK_S
            time.sleep(max(0.0, next_tick - time.monotonic()))
        remaining = producer.flush(90)
        if remaining:
            self.errors.append(f"producer: {remaining} records neither delivered nor failed")


class Cluster:
    """Three voters, each a broker; `bootstrap` names all three."""

    def __init__(self, workdir, durability):
        ports = [conftest.free_port() for _ in range(3)]
        voters = ",".join(f"{i + 1}@127.0.0.1:{port}" for i, port in enumerate(ports))
        self.nodes = {}
        for i, port in enumerate(ports):
            broker = Broker(Path(workdir) / f"node{i + 1}", [
                "--cores", "1", "--min-free-bytes", "0", "--durability", durability,
                "--auto-create-topics", "false", "--node-id", str(i + 1),
                "--controller-listen", f"127.0.0.1:{port}",
                "--controller-quorum-voters", voters,
                "--broker-heartbeat-interval-ms", str(CLUSTER_HEARTBEAT_MS),
                "--broker-session-timeout-ms", str(CLUSTER_SESSION_MS)], i + 1)
            self.nodes[i + 1] = Node(i + 1, broker, port)
        self.bootstrap = ",".join(n.broker.bootstrap for n in self.nodes.values())

    def start(self):
        for node in self.nodes.values():
            node.broker.start()

    def kill_all(self):
        for node in self.nodes.values():
            node.broker.kill9(wait_for_port=False)

    def live(self):
        return [n for n in self.nodes.values() if n.broker.alive()]

    def states(self):
        """CLUSTER_TOPIC's partitions as a live node answers Metadata v7, or None."""
        for node in self.live():
            try:
                found = metadata_v7(node.broker.port, [CLUSTER_TOPIC.encode()])[1]
            except (OSError, AssertionError, struct.error):
                continue
            if found.get(CLUSTER_TOPIC):
                return found[CLUSTER_TOPIC]
        return None

    def controller(self):
        for node in self.live():
            try:
                answer = describe_quorum(node.broker.port)
            except (OSError, AssertionError, struct.error, IndexError):
                continue
            if not isinstance(answer, int) and answer[0] in self.nodes:
                return answer[0]
        return None

    def whole(self):
        """True when all three agree on one controller, every broker registered, and every
        node's Metadata gives every partition a leader and all three replicas in its ISR."""
        try:
            if not agreed_leader(list(self.nodes.values())):
                return False
            answers = [metadata_v7(n.broker.port, [CLUSTER_TOPIC.encode()])[1]
                       .get(CLUSTER_TOPIC) for n in self.nodes.values()]
        except (OSError, AssertionError, struct.error, IndexError):
            return False
        first = answers[0]
        return bool(first) and len(first) == CLUSTER_PARTITIONS and all(
            a == first for a in answers) and all(
            s[0] == 0 and s[1] > 0 and sorted(s[4]) == [1, 2, 3] for s in first.values())

    def wait_quorum(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if agreed_leader(list(self.nodes.values())):
                    return True
            except (OSError, AssertionError, struct.error, IndexError):
                pass
            time.sleep(0.05)
        return False

    def wait_whole(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.whole():
                return True
            time.sleep(0.05)
        return False

    def roles(self, node_id):
        """What `node_id` is now: the partitions it leads and whether it is the controller."""
        states = self.states() or {}
        led = sorted(p for p, s in states.items() if s[1] == node_id)
        held = [f"leader of {CLUSTER_TOPIC}-{p}" for p in led]
        if self.controller() == node_id:
            held.append("controller")
        return ", ".join(held) or "a follower only"

    def pick(self, role, rng):
        """A live node holding `role` now (None if none does)."""
        live = [n.node_id for n in self.live()]
        if role == "controller":
            return self.controller()
        states = self.states() or {}
        partition = rng.randrange(CLUSTER_PARTITIONS)
        leader = states.get(partition, (0, -1))[1]
        if role == "leader":
            return leader if leader in live else None
        followers = [n for n in live if n != leader]
        # Prefer a node that leads nothing, when there is one.
        idle = [n for n in followers if all(s[1] != n for s in states.values())]
        return rng.choice(idle or followers) if followers else None


def create_cluster_topic(bootstrap):
    admin = AdminClient({"bootstrap.servers": bootstrap, **CLIENT})
    futures = admin.create_topics([NewTopic(
        CLUSTER_TOPIC, num_partitions=CLUSTER_PARTITIONS, replication_factor=3,
        config={"min.insync.replicas": str(CLUSTER_MIN_INSYNC),
                "segment.bytes": str(TOPIC_SEGMENT_BYTES)})],
        operation_timeout=30, request_timeout=40)
    for future in futures.values():
        future.result(timeout=45)


def replica_bytes(node, partition):
    """A replica's records: its segment files in order, without preallocation's zeros."""
    directory = node.broker.partition_dir(CLUSTER_TOPIC, partition)
    data = b""
    try:
        for name in sorted(os.listdir(directory)):
            if name.endswith(".log"):
                data += (directory / name).read_bytes().rstrip(b"\0")
    except FileNotFoundError:
        return None
    return data


def replicas_differ(cluster):
    """Partitions whose three replicas are not byte for byte alike after a while."""
    deadline = time.monotonic() + CLUSTER_IDENTICAL_TIMEOUT_S
    while True:
        differ = []
        for partition in range(CLUSTER_PARTITIONS):
            copies = {n.node_id: replica_bytes(n, partition) for n in cluster.nodes.values()}
            if len(set(copies.values())) != 1:
                differ.append((partition, {i: len(c or b"") for i, c in copies.items()}))
        if not differ or time.monotonic() > deadline:
            return differ
        time.sleep(0.5)


class ClusterOutcome(Outcome):
    def __init__(self, durability):
        super().__init__(durability)
        self.kills = []  # (role asked, node id, what it held, seconds into the trial, down s)
        self.whole_s = None  # from the last restart until every replica in every ISR
        self.failed_deliveries = 0  # not acknowledged (message.timeout.ms): not counted lost


# A leader logs this when the metadata log makes a replica in sync whose last fetch lacked
# records below the high watermark (acknowledged, yet the controller could elect a replica
# without them): the invariant behind acks=all, checked even when no record was lost.
BEHIND_HIGH_WATERMARK = "an in-sync replica is behind the high watermark"


def kill_one(cluster, role, rng, began, outcome):
    """Kills the node holding `role` (or a random live one) with SIGKILL; returns it."""
    node_id = cluster.pick(role, rng) or rng.choice([n.node_id for n in cluster.live()])
    held = cluster.roles(node_id)
    cluster.nodes[node_id].broker.kill9(wait_for_port=False)
    outcome.kills.append([role, node_id, held, time.monotonic() - began, None])
    return cluster.nodes[node_id]


def restart(node):
    """Starts a killed node again; waits until it answers (its port, then ApiVersions)."""
    node.broker.kill9()  # its port gone
    node.broker.start()


def cluster_trial(index, seed, workdir, durability, role):
    """One cluster trial; returns its ClusterOutcome and the Cluster."""
    rng = random.Random(seed)
    outcome = ClusterOutcome(durability)
    shutil.rmtree(Path(workdir) / f"trial-{index}", ignore_errors=True)
    cluster = Cluster(Path(workdir) / f"trial-{index}", durability)
    load = None
    try:
        cluster.start()
        if not cluster.wait_quorum(30):
            raise TrialFailed("not serving", "no controller all three agree on in 30 s")
        create_cluster_topic(cluster.bootstrap)
        if not cluster.wait_whole(30):
            raise TrialFailed("not serving", "the topic not in sync on all three in 30 s")
        load = ClusterLoad(cluster.bootstrap)
        load.start()
        began = time.monotonic()
        time.sleep(rng.uniform(*CLUSTER_STEADY_S))
        # One kill, or (a third of the trials) a second one of any node a moment after the
        # first came back, while it catches up.
        roles = [role] + ([rng.choice(CLUSTER_ROLES)] if rng.random() < 1 / 3 else [])
        for number, asked in enumerate(roles):
            if number:
                time.sleep(rng.uniform(*CLUSTER_SECOND_KILL_S))
            victim = kill_one(cluster, asked, rng, began, outcome)
            down = rng.uniform(*CLUSTER_DOWN_S)
            time.sleep(down)
            restart(victim)
            outcome.kills[-1][4] = down
        restarted = time.monotonic()
        if not cluster.wait_whole(CLUSTER_WHOLE_TIMEOUT_S):
            raise TrialFailed("not serving", f"not every replica back in every ISR "
                                             f"{CLUSTER_WHOLE_TIMEOUT_S:.0f} s after the restart")
        outcome.whole_s = time.monotonic() - restarted
        restart_life = load.next_life()
        time.sleep(RESUME_S)
        if not load.stop():
            raise TrialFailed("not serving", "the producer did not finish within 120 s")
        for error in load.errors:
            outcome.fail("not serving", error)
        reader = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "crash-checker",
                           **CLIENT})
        try:
            for partition in range(CLUSTER_PARTITIONS):
                check_partition(cluster, load, restart_life, outcome, reader,
                                (CLUSTER_TOPIC, partition))
        finally:
            reader.close()
        for partition, sizes in replicas_differ(cluster):
            outcome.fail("replicas differ", f"{CLUSTER_TOPIC}-{partition}: replica bytes "
                                            f"{sizes} {CLUSTER_IDENTICAL_TIMEOUT_S:.0f} s after "
                                            "the last acknowledgement")
    except TrialFailed as failed:
        outcome.fail(failed.kind, failed.detail)
    except (AssertionError, KafkaException) as error:
        outcome.fail("not serving", str(error).splitlines()[0])
    finally:
        if load is not None:
            load.stopping.set()
        cluster.kill_all()
        for node in cluster.nodes.values():
            text = node.broker.log_text()
            if any(mark in text for mark in CRASH_MARKS):
                outcome.fail("broker crashed", f"a panic or an abort in {node.broker.log_path}")
            if BEHIND_HIGH_WATERMARK in text:
                # The lines themselves, with the ISR changes and leadership before them: the
                # logs may be gone by the time someone reads this (pytest keeps three runs).
                lines = text.splitlines()
                marks = [i for i, line in enumerate(lines) if BEHIND_HIGH_WATERMARK in line]
                context = [line for line in lines[:marks[0]]
                           if "isr" in line.lower() or "leader" in line.lower()][-12:]
                shown = "\n      ".join(context + [lines[i] for i in marks[:3]])
                outcome.fail("behind the high watermark",
                             f"an in-sync replica lacked acknowledged records: "
                             f"{node.broker.log_path}:\n      {shown}")
    if load is not None:
        outcome.failed_deliveries = sum(load.delivery_failed.values())
    return outcome, cluster


def describe_cluster_trial(index, outcome):
    kills = "; ".join(f"killed node {node_id} ({held}; asked for a {role}) at {at:.2f} s"
                      + (f", down {down:.2f} s" if down is not None else "")
                      for role, node_id, held, at, down in outcome.kills)
    whole = (f"every replica back in every ISR {outcome.whole_s:.2f} s after the restart"
             if outcome.whole_s is not None else "not whole again")
    failed = outcome.failed_deliveries
    verdict = "ok" if outcome.ok else "FAILED: " + "; ".join(outcome.problems[:3])
    return (f"trial {index}: {outcome.durability}, {kills or 'no kill'}; {whole}; "
            f"{outcome.acked} acknowledged"
            + (f" ({failed} deliveries failed)" if failed else "") + f"; {verdict}")


def run_cluster(trials, seed, workdir, durability="both", say=print):
    """Runs `trials` cluster trials; returns (the outcomes, the failing trials' descriptions).
    The role killed first goes round CLUSTER_ROLES, each round in one durability mode, the
    next in the other, so that each role meets each mode as often."""
    rng = random.Random(seed)
    modes = ["write", "fsync"] if durability == "both" else [durability]
    outcomes, failures = [], []
    for index in range(trials):
        cycle, turn = divmod(index, len(CLUSTER_ROLES))
        mode = modes[cycle % len(modes)]
        outcome, cluster = cluster_trial(index, rng.randrange(1 << 32), workdir, mode,
                                         CLUSTER_ROLES[turn])
        outcomes.append(outcome)
        say(describe_cluster_trial(index, outcome))
        if outcome.ok:
            shutil.rmtree(Path(workdir) / f"trial-{index}", ignore_errors=True)
        else:
            logs = ", ".join(str(n.broker.log_path) for n in cluster.nodes.values())
            failures.append(f"{describe_cluster_trial(index, outcome)}\n  "
                            + "\n  ".join(outcome.problems[:20])
                            + f"\n  broker logs (data dirs kept next to them): {logs}")
    return outcomes, failures


def cluster_summary(seed, outcomes, elapsed_s):
    """The counts, over all trials and per durability mode."""
    lines = [rate_line(seed, len(outcomes), "cluster trials", elapsed_s)]
    for name, group in by_durability(outcomes):
        counts = sum((o.counts for o in group), collections.Counter())
        kills = collections.Counter(role for o in group for role, *_ in o.kills)
        held = collections.Counter(
            part.split(" of ")[0] for o in group for _, _, roles, _, _ in o.kills
            for part in roles.split(", "))
        times = sorted(o.whole_s for o in group if o.whole_s is not None)
        whole = (f"back in every ISR p50 {statistics.median(times):.1f} s, max "
                 f"{times[-1]:.1f} s" if times else "never whole again")
        lines.append(
            f"  {name:5s}: {len(group)} trials ({sum(not o.ok for o in group)} failed), "
            f"{sum(len(o.kills) for o in group)} kills (asked: {dict(kills)}; the killed "
            f"nodes held: {dict(held)}), {sum(o.acked for o in group)} acknowledged, "
            f"lost {counts['lost']}, duplicated {counts['duplicated']}, moved "
            f"{counts['moved']}, reordered {counts['reordered']}; {whole}")
        other = [f"{kind} {counts[kind]}" for kind in counts
                 if kind not in ("lost", "duplicated", "moved", "reordered")]
        if other:
            lines.append(f"         also: {', '.join(other)}")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--durability", choices=["write", "fsync", "both"], default="both")
    parser.add_argument("--spate-bin", default=conftest.SPATE_BIN,
                        help="the broker binary (default: $SPATE_BIN or target/release/spate)")
    parser.add_argument("--workdir", default=None,
                        help="where trials keep their data dirs and logs (default: a new "
                             "temporary directory); passing trials' are removed")
    parser.add_argument("--cluster", action="store_true",
                        help="three-node trials: a replicated topic, kills of a leader, a "
                             "follower or the controller (see the top)")
    args = parser.parse_args()
    conftest.SPATE_BIN = args.spate_bin
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    workdir = args.workdir or tempfile.mkdtemp(prefix="spate-crash-")
    kind = "cluster crash trials" if args.cluster else "crash trials"
    print(f"{kind}: seed {seed}, {args.trials} trials, durability {args.durability}, "
          f"broker {args.spate_bin}, workdir {workdir}", flush=True)
    began = time.monotonic()
    outcomes, failures = (run_cluster if args.cluster else run)(
        args.trials, seed, workdir, args.durability, say=lambda line: print(line, flush=True))
    print()
    print("\n".join((cluster_summary if args.cluster else summary)(
        seed, outcomes, time.monotonic() - began)))
    for failure in failures:
        print(failure)
    if not failures and args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    main()
