"""Share groups (KIP-932, Kafka's queues) with the Java client's KafkaShareConsumer
(kafka-clients 4.x, `java/ShareMember.java`, explicit acknowledgements) and its Admin
(`java/ShareAdmin.java`, `java/ShareOffsets.java`).

What each member reports (record lines with partition, offset and delivery count; acked
lines with the outcome of its commitSync) is the evidence: members on one partition share
its records, each delivered to one member at a time; RELEASE and an acquisition lock that
times out redeliver with a higher delivery count; REJECT archives; a kill -9 of the broker
loses no acknowledgement (nothing acknowledged is delivered again) and no record (every
record is delivered until acknowledged). Dead letters (KIP-1191): rejected records and those
at the delivery count limit are written to the group's dead-letter topic, with Kafka's
context headers, exactly once across a kill -9, read back with confluent-kafka. The groups
read from the earliest offset (`share.auto.offset.reset`, a group config set with
IncrementalAlterConfigs). Every wait has a deadline.
"""

import json
import os
import signal
import subprocess
import time
import uuid

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                   NewTopic, ResourceType)

from client_helpers import CK_COMMON, EventProcess, Msg, ck_consume, ck_produce, ck_watermarks
from conftest import TARGET
from segment_tools import read_valid_prefix, valid_batches

TIMEOUT_S = 90
LOCK_MS = 2000

pytestmark = pytest.mark.skipif(TARGET == "kafka", reason="broker options are Spate's")


@pytest.fixture(scope="module")
def java_share():
    """The classpath to run java/ShareMember.java and ShareAdmin.java, or a skip."""
    from java_build import compile_java

    return compile_java("ShareMember", "ShareAdmin", "ShareOffsets")


@pytest.fixture
def broker(spate_factory):
    return spate_factory("--group-share-record-lock-duration-ms", str(LOCK_MS),
                         "--group-share-heartbeat-interval-ms", "500",
                         "--group-share-session-timeout-ms", "6000")


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def create_topic(broker, partitions=1):
    topic = unique("share")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap, **CK_COMMON})
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions,
                                            replication_factor=1)])
    for future in futures.values():
        future.result(timeout=TIMEOUT_S)
    return topic


def read_from_earliest(broker, group):
    """The group config `share.auto.offset.reset=earliest` (Kafka's way to read a topic's
    existing records with a share group)."""
    admin = AdminClient({"bootstrap.servers": broker.bootstrap, **CK_COMMON})
    entry = ConfigEntry("share.auto.offset.reset", "earliest",
                        incremental_operation=AlterConfigOpType.SET)
    resource = ConfigResource(ResourceType.GROUP, group, incremental_configs=[entry])
    admin.incremental_alter_configs([resource])[resource].result(timeout=TIMEOUT_S)


def produce(broker, topic, count, tag="r", **conf):
    msgs = [Msg(b"k", f"{tag}-{i}".encode(), partition=0) for i in range(count)]
    ck_produce(broker.bootstrap, topic, msgs, **conf)
    return [m.value.decode() for m in msgs]


def wait_until(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class ShareMember(EventProcess):
    """A KafkaShareConsumer process and the events it reported."""

    def __init__(self, classpath, broker, group, topic, mode, tmp_path, conf=None):
        cmd = ["java", "-cp", classpath, "ShareMember", broker.bootstrap, group, topic, mode,
               *(f"{k}={v}" for k, v in (conf or {}).items())]
        super().__init__(cmd, tmp_path / f"share-member-{uuid.uuid4().hex[:8]}.err")

    def records(self):
        """(offset, delivery count, value, when) of every record delivered to it."""
        return [(e["offset"], e["delivery"], e["value"], e["at"]) for e in self.snapshot()
                if e["event"] == "record"]

    def confirmed(self, field="offset"):
        """Offsets (or another field of the records, such as "value") whose acknowledgement
        commitSync confirmed without error."""
        out, pending = set(), []
        for event in self.snapshot():
            if event["event"] == "record":
                pending.append(event[field])
            elif event["event"] == "acked":
                if not event["errors"]:
                    out.update(pending)
                pending = []
        return out

    def in_doubt(self):
        """Offsets whose acknowledgement commitSync answered with an error. A broker killed
        after it wrote an acknowledgement and before it answered leaves the client with an
        error for an acknowledgement that holds: such a record is either never delivered
        again, or delivered again (when the acknowledgement was lost) and acknowledged then."""
        out, pending = set(), []
        for event in self.snapshot():
            if event["event"] == "record":
                pending.append(event["offset"])
            elif event["event"] == "acked":
                if event["errors"]:
                    out.update(pending)
                pending = []
        return out - self.confirmed()

    def settled(self):
        """Offsets acknowledged for sure (`confirmed`) or possibly (`in_doubt`)."""
        return self.confirmed() | self.in_doubt()

    def log(self):
        return self.stderr_path.read_text(errors="replace")[-3000:]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.reader.join(timeout=5)

    def kill(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


@pytest.fixture
def share_members(java_share, tmp_path):
    started = []

    def start(broker, group, topic, mode, conf=None):
        member = ShareMember(java_share, broker, group, topic, mode, tmp_path, conf)
        started.append(member)
        return member

    yield start
    for member in started:
        member.kill()


def share_admin(java_share, broker, group):
    """(listed share groups, the group's description), or (None, None) when the Admin
    client failed (a group not known yet)."""
    done = subprocess.run(["java", "-cp", java_share, "ShareAdmin", broker.bootstrap, group],
                          capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        return None, None
    listed, described, offsets, lags = [json.loads(line) for line in done.stdout.splitlines()[:4]]
    described["offsets"] = offsets["offsets"]
    described["lags"] = lags["lags"]
    return listed["listed"], described


def share_start(java_share, broker, group, partition=0):
    """The share partition's start offset as the Admin client lists it (None: not known)."""
    offsets = (share_admin(java_share, broker, group)[1] or {}).get("offsets") or {}
    return offsets.get(str(partition))


@pytest.mark.timeout(300)
def test_two_share_consumers_on_one_partition_share_its_records(broker, share_members,
                                                                 java_share):
    """Two KafkaShareConsumers on a one-partition topic: both are assigned the partition,
    each record is delivered to exactly one of them (delivery count 1), both get some, and
    the Admin client lists and describes the share group."""
    topic, group = create_topic(broker), unique("sg")
    read_from_earliest(broker, group)
    conf = {"max.poll.records": "10"}
    a = share_members(broker, group, topic, "accept", conf)
    b = share_members(broker, group, topic, "accept", conf)
    wait_until(lambda: all(any(e["event"] == "ready" for e in m.snapshot()) for m in (a, b)),
               TIMEOUT_S, "both members to start")
    wait_until(lambda: len((share_admin(java_share, broker, group)[1] or {}).get("members", ()))
               == 2, TIMEOUT_S, "both members to join")
    values = []
    for round_ in range(10):  # records keep coming while both consume
        # A batch per record: a batch goes to one member whole, and 30 in one batch could
        # all go to whichever member asked first, every round.
        values += produce(broker, topic, 30, tag=f"r{round_}", **{"batch.num.messages": 1})
        time.sleep(0.2)
    wait_until(lambda: len(a.records()) + len(b.records()) >= len(values), TIMEOUT_S,
               "every record to be delivered")
    time.sleep(LOCK_MS / 1000 + 1)  # a record delivered twice would show up now
    delivered = [(o, d, v) for m in (a, b) for o, d, v, _ in m.records()]
    offsets = [o for o, _, _ in delivered]
    assert len(offsets) == len(set(offsets)) == len(values), "a record went to both or none"
    assert sorted(v for _, _, v in delivered) == sorted(values)
    assert {d for _, d, _ in delivered} == {1}
    assert a.records() and b.records(), "one member got every record"
    listed, described = share_admin(java_share, broker, group)
    assert [group, "Share", "Stable"] in listed, listed  # GroupType.toString()
    assert described["state"] == "Stable"
    assert sorted(p for _, partitions in described["members"] for p in partitions) == [0, 0]
    # Everything accepted: the share partition starts after the last record.
    assert described["offsets"] == {"0": len(values)}, described


def stored_batches(broker, topic):
    """(first, last) offset of each batch in partition 0's first segment, as stored."""
    path = broker.partition_dir(topic, 0) / "00000000000000000000.log"
    return [(b.base_offset, b.last_offset) for b in valid_batches(read_valid_prefix(path))]


@pytest.mark.timeout(300)
def test_a_batch_goes_to_one_member_whole(broker, share_members, java_share):
    """Kafka's batch-optimized acquisition: MaxRecords (the client's max.poll.records, 10
    here) decides whether a batch is begun, and one begun goes to one member whole. Three
    batches of 100 lz4 records are produced while two members wait: each batch's records
    all go to one member, once each (cut at 10, each batch went to both members, and each
    received and decompressed all of it to keep its part)."""
    topic, group = create_topic(broker), unique("sg")
    read_from_earliest(broker, group)
    conf = {"max.poll.records": "10"}
    a = share_members(broker, group, topic, "accept", conf)
    b = share_members(broker, group, topic, "accept", conf)
    wait_until(lambda: len((share_admin(java_share, broker, group)[1] or {}).get("members", ()))
               == 2, TIMEOUT_S, "both members to join")
    batches = []
    for n in range(3):
        msgs = [Msg(b"k", f"b{n}-{i}".encode(), partition=0) for i in range(100)]
        # One flush of records produced within the linger: one batch.
        placed = ck_produce(broker.bootstrap, topic, msgs, compression="lz4",
                            **{"linger.ms": 2000})
        batches.append({offset for _, offset in placed})
        time.sleep(0.5)
    assert [min(x) for x in batches] == [0, 100, 200], batches
    wait_until(lambda: len(a.records()) + len(b.records()) >= 300, TIMEOUT_S,
               "every record to be delivered")
    time.sleep(LOCK_MS / 1000 + 1)  # a record delivered twice would show up now
    got = {name: {o for o, d, _, _ in m.records()} for name, m in (("a", a), ("b", b))}
    assert sorted(o for m in (a, b) for o, _, _, _ in m.records()) == list(range(300))
    for n, batch in enumerate(batches):
        holders = [name for name, offsets in got.items() if offsets & batch]
        assert len(holders) == 1, (f"batch {n} went to {holders}: {got}; batches stored: "
                                   f"{stored_batches(broker, topic)}")


@pytest.mark.timeout(240)
def test_a_backlog_is_read_from_the_segment_files_intact(spate_factory, share_members):
    """With the batch cache off and 256 KiB segments, every ShareFetch reads segment files:
    only the batch headers are read, and the batches go out as file regions with sendfile
    (those that follow each other in a file as one). A member gets each of 2,000 records of
    lz4 and uncompressed batches across several segments once, with its value intact."""
    broker = spate_factory("--batch-cache-bytes", "0", "--segment-bytes", "262144")
    topic, group = create_topic(broker), unique("sg")
    read_from_earliest(broker, group)
    values = []
    for tag, codec in (("lz4", "lz4"), ("none", "none")):
        msgs = [Msg(b"k", f"{tag}-{i}-{'x' * 1500}".encode(), partition=0) for i in range(1000)]
        ck_produce(broker.bootstrap, topic, msgs, compression=codec)
        values += [m.value.decode() for m in msgs]
    segments = list(broker.partition_dir(topic, 0).glob("*.log"))
    assert len(segments) >= 3, segments
    member = share_members(broker, group, topic, "accept")
    wait_until(lambda: len(member.confirmed()) >= len(values), TIMEOUT_S,
               "every record to be acknowledged")
    got = sorted((o, v) for o, _, v, _ in member.records())
    assert [o for o, _ in got] == list(range(len(values)))
    assert [v for _, v in got] == values


@pytest.mark.timeout(240)
def test_a_released_record_comes_back_with_a_higher_delivery_count(broker, share_members):
    """RELEASE: each record is delivered a second time, with delivery count 2, then accepted
    and never delivered again."""
    topic, group = create_topic(broker), unique("sg")
    read_from_earliest(broker, group)
    values = produce(broker, topic, 20)
    member = share_members(broker, group, topic, "release")
    wait_until(lambda: len(member.records()) >= 40, TIMEOUT_S, "every record twice")
    time.sleep(LOCK_MS / 1000 + 1)
    deliveries = {}
    for offset, count, _, _ in member.records():
        deliveries.setdefault(offset, []).append(count)
    assert sorted(deliveries) == list(range(len(values))), member.log()
    assert all(counts == [1, 2] for counts in deliveries.values()), deliveries


@pytest.mark.timeout(240)
def test_a_lock_timeout_hands_the_records_to_another_member(broker, share_members):
    """A member that takes records and crashes (kill -9) without acknowledging them holds
    them until their acquisition lock ends (2 s here, well before its session times out);
    then another member gets them with delivery count 2. Nothing is lost and nothing is
    delivered twice to the second member."""
    topic, group = create_topic(broker), unique("sg")
    read_from_earliest(broker, group)
    values = produce(broker, topic, 20)
    holder = share_members(broker, group, topic, "hold")
    wait_until(lambda: holder.records(), TIMEOUT_S, "the holder to get records")
    held_at = holder.records()[0][3]
    holder.kill()
    held = {o for o, _, _, _ in holder.records()}
    taker = share_members(broker, group, topic, "accept")
    wait_until(lambda: {o for o, _, _, _ in taker.records()} >= set(range(len(values))),
               TIMEOUT_S, "the taker to get every record")
    redelivered = [(o, d, at) for o, d, _, at in taker.records() if o in held]
    assert {o for o, _, _ in redelivered} == held
    assert all(d == 2 for _, d, _ in redelivered), redelivered
    first_redelivery = min(at for _, _, at in redelivered)
    assert first_redelivery - held_at >= LOCK_MS / 1000 * 0.7, "redelivered before the lock ended"
    offsets = [o for o, _, _, _ in taker.records()]
    assert len(offsets) == len(set(offsets)), "the taker got a record twice"


@pytest.mark.timeout(240)
def test_rejected_records_are_archived(broker, share_members):
    """REJECT: the records are never delivered again, to anyone; newer records are."""
    topic, group = create_topic(broker), unique("sg")
    read_from_earliest(broker, group)
    produce(broker, topic, 10)
    rejecter = share_members(broker, group, topic, "reject")
    wait_until(lambda: len(rejecter.records()) >= 10 and rejecter.confirmed() >= set(range(10)),
               TIMEOUT_S, "the rejections to be acknowledged")
    rejecter.stop()
    taker = share_members(broker, group, topic, "accept")
    wait_until(lambda: any(e["event"] == "ready" for e in taker.snapshot()), TIMEOUT_S,
               "the taker to start")
    time.sleep(3)
    assert taker.records() == []
    produce(broker, topic, 5, tag="new")
    wait_until(lambda: len(taker.records()) >= 5, TIMEOUT_S, "the new records")
    time.sleep(1)
    assert sorted(o for o, _, _, _ in taker.records()) == list(range(10, 15))


@pytest.mark.timeout(300)
def test_kill9_of_the_broker_loses_no_acknowledgement_and_no_record(broker, share_members,
                                                                     java_share):
    """A member accepts records ten at a time; the broker is killed (-9) half-way and
    restarted. Every record is delivered and in the end acknowledged (the share partition's
    start offset reaches the end); none whose acknowledgement commitSync confirmed is
    delivered again; the ones delivered again are those in flight at the crash (their
    delivery count then is 2 or more).

    An acknowledgement in flight at the kill may have been written before it (the client then
    reports an error for it, but it holds: `in_doubt`). Under load the kill lands there often;
    waiting for every acknowledgement to be confirmed made this test time out."""
    topic, group = create_topic(broker), unique("sg")
    read_from_earliest(broker, group)
    values = produce(broker, topic, 200)
    member = share_members(broker, group, topic, "accept", {"max.poll.records": "10"})
    wait_until(lambda: len(member.confirmed()) >= 60, TIMEOUT_S, "some acknowledgements")
    confirmed_before = member.confirmed()
    delivered_before = len(member.records())
    broker.kill9()
    broker.start()
    wait_until(lambda: member.settled() >= set(range(len(values))), TIMEOUT_S * 2,
               "every record to be acknowledged after the restart")
    wait_until(lambda: share_start(java_share, broker, group) == len(values), TIMEOUT_S,
               "the share partition's start offset to reach the end")
    after = member.records()[delivered_before:]
    again = [(o, d) for o, d, _, _ in after if o in confirmed_before]
    assert again == [], f"acknowledged records delivered again: {again}"
    seen = [o for o, _, _, _ in member.records()]
    twice = {o for o in seen if seen.count(o) > 1}
    counts = {o: d for o, d, _, _ in after if o in twice}
    assert all(d >= 2 for d in counts.values()), counts


# --- dead letters (KIP-1191) ------------------------------------------------------------------

INVALID_CONFIG = 40
GROUP_CONFIG_SOURCE = 8  # Kafka's ConfigSource.GROUP_CONFIG


def alter_configs(broker, resource_type, name, configs):
    """IncrementalAlterConfigs SET of `configs` on one resource: None, or the error code."""
    admin = AdminClient({"bootstrap.servers": broker.bootstrap, **CK_COMMON})
    entries = [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
               for k, v in configs.items()]
    resource = ConfigResource(resource_type, name, incremental_configs=entries)
    try:
        admin.incremental_alter_configs([resource])[resource].result(timeout=TIMEOUT_S)
        return None
    except KafkaException as e:
        return e.args[0].code()


def describe_configs(broker, resource_type, name):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap, **CK_COMMON})
    resource = ConfigResource(resource_type, name)
    return admin.describe_configs([resource])[resource].result(timeout=TIMEOUT_S)


def create_dead_letter_topic(broker, partitions=1, enable=True):
    topic = unique("dlq.share")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap, **CK_COMMON})
    config = {"errors.deadletterqueue.group.enable": "true" if enable else "false"}
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions,
                                            replication_factor=1, config=config)])
    for future in futures.values():
        future.result(timeout=TIMEOUT_S)
    return topic


def end_offset(broker, topic):
    """The end of the topic's partition 0; -1 while the topic is not there (or the broker
    is restarting)."""
    try:
        return ck_watermarks(broker.bootstrap, topic, timeout=5)[1]
    except KafkaException:
        return -1


def dead_letters(broker, topic, count, timeout=TIMEOUT_S):
    """The `count` records of the dead-letter topic's partition 0 once they are all there
    (more than `count` fails), each as (key, value, headers as a dict of str)."""
    wait_until(lambda: end_offset(broker, topic) >= count, timeout,
               f"{count} dead letters in {topic}")
    low, high = ck_watermarks(broker.bootstrap, topic)
    assert (low, high) == (0, count), (low, high)
    records = ck_consume(broker.bootstrap, topic, 0, 0, count)
    return [(r.key, r.value, {k: v.decode() for k, v in r.headers}) for r in records]


def produce_keyed(broker, topic, count, tag="r"):
    msgs = [Msg(f"k{i}".encode(), f"{tag}-{i}".encode(), headers=(("h", b"x"),), partition=0)
            for i in range(count)]
    ck_produce(broker.bootstrap, topic, msgs)
    return msgs


@pytest.mark.timeout(240)
def test_rejected_records_are_written_to_the_dead_letter_topic(broker, share_members, java_share):
    """A group with `errors.deadletterqueue.topic.name` (a `dlq.` topic that allows it) and
    `errors.deadletterqueue.copy.record.enable=true`: each REJECTed record is written once to
    the dead-letter topic with its key and value and Kafka's context headers (source topic,
    partition, offset, group, delivery count, reason), then archived (the share partition's
    start moves past it). DescribeConfigs shows the group's values."""
    topic, group = create_topic(broker), unique("sg")
    dlq = create_dead_letter_topic(broker)
    read_from_earliest(broker, group)
    assert alter_configs(broker, ResourceType.GROUP, group, {
        "errors.deadletterqueue.topic.name": dlq,
        "errors.deadletterqueue.copy.record.enable": "true"}) is None
    described = describe_configs(broker, ResourceType.GROUP, group)
    assert described["errors.deadletterqueue.topic.name"].value == dlq
    assert described["errors.deadletterqueue.topic.name"].source == GROUP_CONFIG_SOURCE
    assert described["errors.deadletterqueue.copy.record.enable"].value == "true"
    msgs = produce_keyed(broker, topic, 10)
    rejecter = share_members(broker, group, topic, "reject")
    wait_until(lambda: rejecter.confirmed() >= set(range(10)), TIMEOUT_S,
               "the rejections to be acknowledged")
    letters = dead_letters(broker, dlq, 10)
    for offset, (key, value, headers) in enumerate(letters):
        assert (key, value) == (msgs[offset].key, msgs[offset].value)
        assert headers == {
            "__dlq.errors.topic": topic, "__dlq.errors.partition": "0",
            "__dlq.errors.offset": str(offset), "__dlq.errors.group": group,
            "__dlq.errors.delivery.count": "1",
            "__dlq.errors.message": "Offset rejected by client."}, headers
    wait_until(lambda: (share_admin(java_share, broker, group)[1] or {}).get("offsets")
               == {"0": 10}, TIMEOUT_S, "the share partition to start after the dead letters")


@pytest.mark.timeout(240)
def test_the_delivery_count_limit_sends_records_to_an_auto_created_dead_letter_topic(
        broker, share_members):
    """With `share.delivery.count.limit=2`, a member that RELEASEs every record gets each
    twice; then it is archived and its dead letter (headers only: the record is not copied
    by default) goes to the group's dead-letter topic, which the broker creates
    (`errors.deadletterqueue.auto.create.topics.enable=true`) with
    `errors.deadletterqueue.group.enable=true`."""
    topic, group = create_topic(broker), unique("sg")
    dlq = unique("dlq.auto")
    assert alter_configs(broker, ResourceType.BROKER, "1", {  # this broker (node id 1)
        "errors.deadletterqueue.auto.create.topics.enable": "true"}) is None
    read_from_earliest(broker, group)
    assert alter_configs(broker, ResourceType.GROUP, group, {
        "share.delivery.count.limit": "2", "errors.deadletterqueue.topic.name": dlq}) is None
    produce(broker, topic, 5)
    bouncer = share_members(broker, group, topic, "bounce")
    letters = dead_letters(broker, dlq, 5)
    assert [(k, v) for k, v, _ in letters] == [(None, None)] * 5
    assert [h["__dlq.errors.offset"] for _, _, h in letters] == [str(o) for o in range(5)]
    assert {h["__dlq.errors.delivery.count"] for _, _, h in letters} == {"2"}
    assert {h["__dlq.errors.message"] for _, _, h in letters} == {
        "Offset delivery count exceeded the threshold."}
    deliveries = {}
    for offset, count, _, _ in bouncer.records():
        deliveries.setdefault(offset, []).append(count)
    assert deliveries == {o: [1, 2] for o in range(5)}, deliveries
    created = describe_configs(broker, ResourceType.TOPIC, dlq)
    assert created["errors.deadletterqueue.group.enable"].value == "true"


@pytest.mark.timeout(300)
def test_dead_letters_survive_a_kill9_exactly_once(broker, share_members):
    """A member rejects 300 records ten at a time; the broker is killed (-9) while the dead
    letters are being written, and restarted. In the end the dead-letter topic holds exactly
    one dead letter per record: none lost, none written twice. (A rejection in flight at the
    kill may hold although the client saw an error: see the test above.)"""
    topic, group = create_topic(broker), unique("sg")
    dlq = create_dead_letter_topic(broker)
    read_from_earliest(broker, group)
    assert alter_configs(broker, ResourceType.GROUP, group, {
        "errors.deadletterqueue.topic.name": dlq}) is None
    count = 300
    produce(broker, topic, count)
    rejecter = share_members(broker, group, topic, "reject", {"max.poll.records": "10"})
    wait_until(lambda: end_offset(broker, dlq) >= 40, TIMEOUT_S, "some dead letters")
    broker.kill9()
    broker.start()
    wait_until(lambda: rejecter.settled() >= set(range(count)), TIMEOUT_S * 2,
               "every rejection to be acknowledged after the restart")
    letters = dead_letters(broker, dlq, count, timeout=TIMEOUT_S * 2)
    time.sleep(2)  # a repeated write would land now
    assert end_offset(broker, dlq) == count
    offsets = [int(h["__dlq.errors.offset"]) for _, _, h in letters]
    assert sorted(offsets) == list(range(count)), "a dead letter lost or written twice"


@pytest.mark.timeout(240)
def test_dead_letter_configs_are_checked(broker, share_members, java_share):
    """IncrementalAlterConfigs on a GROUP refuses a dead-letter topic named like an internal
    topic and a copy flag that is not a boolean (INVALID_CONFIG, Kafka's checks). A name
    without the broker's prefix (`dlq.`) and a topic that does not allow dead letters are
    refused when records are archived, as in Kafka: the records are archived without dead
    letters and nothing is written."""
    group = unique("sg")
    assert alter_configs(broker, ResourceType.GROUP, group, {
        "errors.deadletterqueue.topic.name": "__consumer_offsets"}) == INVALID_CONFIG
    assert alter_configs(broker, ResourceType.GROUP, group, {
        "errors.deadletterqueue.copy.record.enable": "maybe"}) == INVALID_CONFIG
    described = describe_configs(broker, ResourceType.GROUP, group)
    assert described["errors.deadletterqueue.topic.name"].value in ("", None)
    assert described["errors.deadletterqueue.copy.record.enable"].value == "false"
    topic = create_topic(broker)
    closed = create_dead_letter_topic(broker, enable=False)
    unprefixed = unique("letters")
    read_from_earliest(broker, group)
    assert alter_configs(broker, ResourceType.GROUP, group, {
        "errors.deadletterqueue.topic.name": closed}) is None
    produce(broker, topic, 3)
    rejecter = share_members(broker, group, topic, "reject")
    wait_until(lambda: (share_admin(java_share, broker, group)[1] or {}).get("offsets")
               == {"0": 3}, TIMEOUT_S, "the rejected records to be archived")
    assert alter_configs(broker, ResourceType.GROUP, group, {
        "errors.deadletterqueue.topic.name": unprefixed}) is None
    produce(broker, topic, 3, tag="more")
    wait_until(lambda: (share_admin(java_share, broker, group)[1] or {}).get("offsets")
               == {"0": 6}, TIMEOUT_S, "the next rejected records to be archived")
    assert ck_watermarks(broker.bootstrap, closed) == (0, 0)
    assert len(rejecter.records()) == 6
    admin = AdminClient({"bootstrap.servers": broker.bootstrap, **CK_COMMON})
    assert unprefixed not in admin.list_topics(timeout=TIMEOUT_S).topics


# --- AlterShareGroupOffsets and DeleteShareGroupOffsets --------------------------------------


def share_offsets(java_share, broker, group, action, *args):
    """The Java Admin client's alterShareGroupOffsets ("alter", "topic:partition=offset" ...)
    or deleteShareGroupOffsets ("delete", topic ...): {partition or topic: "ok" or the
    exception's class name, "all": ...}."""
    done = subprocess.run(["java", "-cp", java_share, "ShareOffsets", broker.bootstrap, group,
                           action, *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


def wait_empty(java_share, broker, group):
    wait_until(lambda: (share_admin(java_share, broker, group)[1] or {}).get("members") == [],
               TIMEOUT_S, "the group to have no members")


def consume_all(share_members, broker, group, topic, count):
    """A member that accepts until `count` acknowledgements are confirmed, then leaves:
    the (offset, delivery count) it got."""
    member = share_members(broker, group, topic, "accept")
    wait_until(lambda: len(member.confirmed()) >= count, TIMEOUT_S, f"{count} acknowledgements")
    time.sleep(1)  # anything more would show up now
    member.stop()
    return sorted((o, d) for o, d, _, _ in member.records())


@pytest.mark.timeout(300)
def test_alter_share_group_offsets_resets_the_start_durably(broker, share_members, java_share):
    """alterShareGroupOffsets: refused (GroupNotEmptyException) while the group has a member;
    once empty it sets the share partition's start, which survives a kill -9, and the next
    member gets exactly the records from there (delivery count 1: the in-flight state starts
    anew). A topic or partition that does not exist fails alone. A group that does not
    exist yet is created with its offsets (Kafka 4.2+), so its first member starts there."""
    topic, group = create_topic(broker), unique("sg")
    read_from_earliest(broker, group)
    produce(broker, topic, 30)
    member = share_members(broker, group, topic, "accept")
    wait_until(lambda: len(member.confirmed()) >= 30, TIMEOUT_S, "every acknowledgement")
    busy = share_offsets(java_share, broker, group, "alter", f"{topic}:0=0")
    assert busy["all"] == "GroupNotEmptyException", busy
    member.stop()
    wait_empty(java_share, broker, group)
    assert share_admin(java_share, broker, group)[1]["offsets"] == {"0": 30}
    done = share_offsets(java_share, broker, group, "alter", f"{topic}:0=10", f"{topic}:5=0",
                         "no-such-topic:0=0")
    assert done[f"{topic}:0"] == "ok", done
    assert done[f"{topic}:5"] == "UnknownTopicOrPartitionException", done
    assert done["no-such-topic:0"] == "UnknownTopicOrPartitionException", done
    assert share_admin(java_share, broker, group)[1]["offsets"] == {"0": 10}
    broker.kill9()
    broker.start()
    assert share_admin(java_share, broker, group)[1]["offsets"] == {"0": 10}
    assert consume_all(share_members, broker, group, topic, 20) == [(o, 1) for o in range(10, 30)]
    # A new group: its offsets are set before any member comes.
    fresh = unique("sg")
    assert share_offsets(java_share, broker, fresh, "alter", f"{topic}:0=25")["all"] == "ok"
    assert consume_all(share_members, broker, fresh, topic, 5) == [(o, 1) for o in range(25, 30)]


@pytest.mark.timeout(300)
def test_list_share_group_offsets_reports_each_partitions_lag(broker, share_members,
                                                               java_share):
    """listShareGroupOffsets of the Java Admin 4.3.1 gets the lag (DescribeShareGroupOffsets
    v1, Kafka 4.2's KIP-1226): the records below the high watermark whose delivery is not
    complete. 0 once a member accepted all 30; 12 after 12 more are produced; a record in
    flight counts until it is accepted (a member holding 5 leaves the lag at 12); the
    records REJECTed by a second member are complete too; after an alter to 10 the lag is
    everything from there to the end; the same after a kill -9."""
    topic, group = create_topic(broker), unique("sg")
    read_from_earliest(broker, group)
    produce(broker, topic, 30)
    member = share_members(broker, group, topic, "accept")
    wait_until(lambda: len(member.confirmed()) >= 30, TIMEOUT_S, "every acknowledgement")
    member.stop()
    wait_empty(java_share, broker, group)
    described = share_admin(java_share, broker, group)[1]
    assert (described["offsets"], described["lags"]) == ({"0": 30}, {"0": 0}), described
    produce(broker, topic, 12)
    assert share_admin(java_share, broker, group)[1]["lags"] == {"0": 12}
    holder = share_members(broker, group, topic, "hold", {"max.poll.records": "5"})
    wait_until(lambda: len(holder.records()) >= 5, TIMEOUT_S, "five records held")
    assert share_admin(java_share, broker, group)[1]["lags"] == {"0": 12}
    holder.stop()  # its close releases the five
    rejecter = share_members(broker, group, topic, "reject")
    wait_until(lambda: len(rejecter.confirmed()) >= 12, TIMEOUT_S, "12 rejections")
    rejecter.stop()
    wait_empty(java_share, broker, group)
    described = share_admin(java_share, broker, group)[1]
    assert (described["offsets"], described["lags"]) == ({"0": 42}, {"0": 0}), described
    assert share_offsets(java_share, broker, group, "alter", f"{topic}:0=10")["all"] == "ok"
    assert share_admin(java_share, broker, group)[1]["lags"] == {"0": 32}
    broker.kill9()
    broker.start()
    described = share_admin(java_share, broker, group)[1]
    assert (described["offsets"], described["lags"]) == ({"0": 10}, {"0": 32}), described


@pytest.mark.timeout(300)
def test_delete_share_group_offsets_starts_the_topic_again_durably(broker, share_members,
                                                                    java_share):
    """deleteShareGroupOffsets: refused while the group has a member; once empty the topic's
    share state goes (the offsets list is empty), across a kill -9, so the next member
    starts by `share.auto.offset.reset` (earliest here) and gets every record again with
    delivery count 1. A topic the group has no state for, or one that does not exist, is
    UnknownTopicOrPartitionException; a group that does not exist GroupIdNotFoundException."""
    topic, other, group = create_topic(broker), create_topic(broker), unique("sg")
    read_from_earliest(broker, group)
    produce(broker, topic, 20)
    member = share_members(broker, group, topic, "accept")
    wait_until(lambda: len(member.confirmed()) >= 20, TIMEOUT_S, "every acknowledgement")
    busy = share_offsets(java_share, broker, group, "delete", topic)
    assert busy["all"] == "GroupNotEmptyException", busy
    member.stop()
    wait_empty(java_share, broker, group)
    done = share_offsets(java_share, broker, group, "delete", topic, other, "no-such-topic")
    assert done[topic] == "ok", done
    assert done[other] == "UnknownTopicOrPartitionException", done
    assert done["no-such-topic"] == "UnknownTopicOrPartitionException", done
    assert share_admin(java_share, broker, group)[1]["offsets"] == {}
    broker.kill9()
    broker.start()
    assert consume_all(share_members, broker, group, topic, 20) == [(o, 1) for o in range(20)]
    missing = share_offsets(java_share, broker, unique("sg"), "delete", topic)
    assert missing["all"] == "GroupIdNotFoundException", missing


@pytest.mark.timeout(300)
def test_a_share_group_at_its_max_size_refuses_a_new_member(spate_factory, share_members,
                                                            java_share):
    """`--group-share-max-size 1` (Kafka's group.share.max.size): a second KafkaShareConsumer
    gets GroupMaxSizeReachedException (GROUP_MAX_SIZE_REACHED, fatal in the client) and no
    record while the first consumes; once the first leaves, a new member is taken."""
    broker = spate_factory("--group-share-max-size", "1")
    topic, group = create_topic(broker), unique("sg")
    read_from_earliest(broker, group)
    produce(broker, topic, 10)
    first = share_members(broker, group, topic, "accept")
    wait_until(lambda: len(first.confirmed()) >= 10, TIMEOUT_S, "the first member's records")
    second = share_members(broker, group, topic, "accept")
    error = "GroupMaxSizeReachedException"
    wait_until(lambda: error in second.stderr_path.read_text(errors="replace"), TIMEOUT_S,
               "the second member's error")
    assert second.records() == []
    first.stop()
    wait_empty(java_share, broker, group)
    produce(broker, topic, 5, tag="later")
    third = share_members(broker, group, topic, "accept")
    wait_until(lambda: len(third.confirmed()) >= 5, TIMEOUT_S, "the third member's records")
    assert sorted(o for o, _, _, _ in third.records()) == list(range(10, 15))


# --- redelivery back-off (spate.share.redelivery.backoff.ms) ---------------------------------

BACKOFF = "spate.share.redelivery.backoff.ms"


def bounce_gaps(broker, share_members, topic, group, count):
    """A member that RELEASEs every record of `count` until `share.delivery.count.limit` (3)
    archives it: per offset, the delivery counts and the seconds between deliveries."""
    assert alter_configs(broker, ResourceType.GROUP, group,
                         {"share.delivery.count.limit": "3"}) is None
    bouncer = share_members(broker, group, topic, "bounce")
    wait_until(lambda: len(bouncer.records()) >= 3 * count, TIMEOUT_S, "three deliveries each")
    deliveries = {}
    for offset, delivery, _, at in bouncer.records():
        deliveries.setdefault(offset, []).append((delivery, at))
    counts = {o: [d for d, _ in ds] for o, ds in deliveries.items()}
    assert counts == {o: [1, 2, 3] for o in range(count)}, counts
    gaps = [[b - a for (_, a), (_, b) in zip(ds, ds[1:])] for ds in deliveries.values()]
    return [g[0] for g in gaps], [g[1] for g in gaps]


def summary(gaps):
    ordered = sorted(gaps)
    return (f"min {ordered[0]:.2f} s, median {ordered[len(ordered) // 2]:.2f} s, "
            f"max {ordered[-1]:.2f} s")


@pytest.mark.timeout(240)
def test_the_redelivery_backoff_holds_released_records(broker, share_members):
    """`spate.share.redelivery.backoff.ms=1000,4000`: a record released after its first
    delivery is not handed out again for 1 s, after its second for 4 s (measured over 20
    records, from the member's own view of each delivery: only lower bounds, with 0.5 s for
    the member's reporting). Without the config the same member gets them back at once:
    its median wait is below the back-off's shortest."""
    topic = create_topic(broker)
    produce(broker, topic, 20)
    slow, fast = unique("sg"), unique("sg")
    for group in (slow, fast):
        read_from_earliest(broker, group)
    assert alter_configs(broker, ResourceType.GROUP, slow, {BACKOFF: "1000,4000"}) is None
    first, second = bounce_gaps(broker, share_members, topic, slow, 20)
    print(f"back-off 1000,4000: first redelivery {summary(first)}; second {summary(second)}")
    assert min(first) >= 1.0 - 0.5, sorted(first)
    assert min(second) >= 4.0 - 0.5, sorted(second)
    first_fast, second_fast = bounce_gaps(broker, share_members, topic, fast, 20)
    print(f"no back-off: first redelivery {summary(first_fast)}; second {summary(second_fast)}")
    both = sorted(first_fast + second_fast)
    assert both[len(both) // 2] < min(first), (both, sorted(first))


@pytest.mark.timeout(300)
def test_the_redelivery_backoff_survives_a_kill9(broker, share_members):
    """Back-offs are stored with the share state: 10 records RELEASEd once under a 30 s
    back-off, then a kill -9 of the broker and a restart. A new member gets a record
    produced after the restart first (the back-off still holds the 10), and the 10 only
    once 30 s from their first delivery passed, with delivery count 2. (Before, a restart
    made every in-flight record Available at once.)"""
    topic, group = create_topic(broker), unique("sg")
    read_from_earliest(broker, group)
    assert alter_configs(broker, ResourceType.GROUP, group, {BACKOFF: "30000"}) is None
    produce(broker, topic, 10)
    releaser = share_members(broker, group, topic, "release")
    wait_until(lambda: len(releaser.confirmed()) >= 10, TIMEOUT_S, "ten releases")
    releaser.stop()
    first = {o: at for o, d, _, at in releaser.records() if d == 1}
    assert sorted(first) == list(range(10)), releaser.records()
    broker.kill9()
    broker.start()
    produce(broker, topic, 1, tag="fresh")
    member = share_members(broker, group, topic, "accept")
    wait_until(lambda: len(member.confirmed()) >= 11, TIMEOUT_S, "every record accepted")
    got = member.records()
    fresh_at = next(at for o, _, _, at in got if o == 10)
    # The restart must come well within the back-off for the order to say anything.
    assert fresh_at < min(first.values()) + 30.0, (fresh_at, first)
    assert [o for o, _, _, _ in got][0] == 10, got
    again = {o: (d, at) for o, d, _, at in got if o < 10}
    assert sorted(again) == list(range(10)), got
    for offset, (delivery, at) in again.items():
        assert delivery == 2, got
        assert at >= first[offset] + 30.0 - 0.5, (offset, at - first[offset])


@pytest.mark.timeout(120)
def test_the_redelivery_backoff_config_is_checked(broker):
    """The back-off is a comma list of at most 10 values from 0 to 3600000 ms: anything else
    is INVALID_CONFIG on IncrementalAlterConfigs of the group; a good list is described."""
    group = unique("sg")
    for bad in ("soon", "1000,-5", "1000,,2000", "3600001", ",".join(["1"] * 11)):
        assert alter_configs(broker, ResourceType.GROUP, group, {BACKOFF: bad}) \
            == INVALID_CONFIG, bad
    assert alter_configs(broker, ResourceType.GROUP, group, {BACKOFF: "1000, 10000,60000"}) \
        is None
    described = describe_configs(broker, ResourceType.GROUP, group)
    assert described[BACKOFF].value == "1000, 10000,60000"
