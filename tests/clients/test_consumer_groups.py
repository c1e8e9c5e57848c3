"""KIP-848 consumer groups (group.protocol=consumer) with real clients: the Java client
(kafka-clients 4.x, `java/GroupMember.java`) and confluent-kafka (librdkafka 2.12+).

What each member reports (group_member.py's event lines: added, revoked, assigned) is the
evidence: members share the partitions, a partition moves only after its owner revoked it
(checked on the timeline of every member's added/revoked events), leaves and crashes move
partitions, a static member comes back to its assignment, committed offsets survive a
restart and kill -9, and a classic member joins a consumer group as Kafka 4 lets it
(test_group_migration.py has the upgrade and downgrade between the protocols). OffsetCommit and OffsetFetch v10 (topics by id) are also sent by hand. The brokers
run with a 500 ms heartbeat interval and a 6 s session timeout so that the tests stay
short; every wait has a deadline.
"""

import itertools
import statistics
import struct
import time
import uuid

import pytest
from confluent_kafka import TopicCollection
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

import kafka_wire as wire
from client_helpers import CK_COMMON
from conftest import TARGET
from test_groups import (Member, committed, create_topic, java_members, members, produce,  # noqa: F401
                         unique, wait_balanced, wait_until)

TIMEOUT_S = 60
SESSION_MS = 6000
CONSUMER = {"group.protocol": "consumer"}

pytestmark = pytest.mark.skipif(TARGET == "kafka", reason="broker options are Spate's")


@pytest.fixture
def broker(spate_factory):
    return spate_factory("--default-partitions", "4",
                         "--group-consumer-heartbeat-interval-ms", "500",
                         "--group-consumer-session-timeout-ms", str(SESSION_MS))


def ownership_never_overlaps(group_members, partitions=4):
    """From each member's added/revoked events: no partition held by two members at once."""
    intervals = {p: [] for p in range(partitions)}
    now = time.monotonic()
    for member in group_members:
        held = {}
        for event in member.snapshot():
            if event["event"] == "added":
                for p in event["partitions"]:
                    held[p] = event["at"]
            elif event["event"] == "revoked":
                for p in event["partitions"]:
                    if p in held:
                        intervals[p].append((held.pop(p), event["at"], member.kind))
            elif event["event"] in ("closed", "crashed"):
                for p, start in held.items():
                    intervals[p].append((start, event["at"], member.kind))
                held = {}
        end = now if member.proc.poll() is None else member.snapshot()[-1]["at"]
        for p, start in held.items():
            intervals[p].append((start, end, member.kind))
    for p, spans in intervals.items():
        spans.sort()
        for (_, end, who), (start, _, other) in zip(spans, spans[1:]):
            assert start >= end, f"partition {p} held by {who} and {other} at once: {spans}"


def member_kinds():
    return [("java", "ck"), ("ck", "java")]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("first,second", member_kinds())
def test_members_share_partitions_with_revocation_before_assignment(broker, members,
                                                                   java_members, first,
                                                                   second):
    """The first member gets all 4 partitions, the second joins and gets half only after the
    first revoked them, the first leaves and the second gets everything."""
    topic, group = create_topic(broker), unique("kip848")
    a = members(first, broker, group, topic, conf=CONSUMER, java_classpath=java_members)
    wait_balanced([a], timeout=60)
    b = members(second, broker, group, topic, conf=CONSUMER, java_classpath=java_members)
    wait_balanced([a, b], timeout=30)
    produced = produce(broker, topic, per_partition=10)
    wait_until(lambda: len(a.records()) + len(b.records()) >= len(produced), TIMEOUT_S,
               "every record read")
    ownership_never_overlaps([a, b])
    seen = [(p, o) for m in (a, b) for p, o, _ in m.records()]
    assert len(seen) == len(set(seen)) == len(produced), "a record was read twice or missed"
    # No stop-the-world: when b joined, a gave up only what b was to get, never everything.
    revoked = [e["partitions"] for e in a.snapshot() if e["event"] == "revoked"
               and e["partitions"]]
    assert revoked and all(len(r) < 4 for r in revoked), revoked
    left_at = time.monotonic()
    a.leave()
    wait_balanced([b], timeout=20)
    assert time.monotonic() - left_at < 10, "a leave moves partitions within heartbeats"
    # ... and when a left, b only gained partitions (it kept consuming its own).
    lost = [e for e in b.events_after(left_at, "revoked") if e["partitions"]]
    assert not lost, lost
    ownership_never_overlaps([a, b])
    b.leave()
    assert committed(broker, group, topic) == {p: 10 for p in range(4)}


@pytest.mark.timeout(300)
def test_a_killed_member_loses_its_partitions_at_the_session_timeout(broker, members,
                                                                    java_members):
    topic, group = create_topic(broker), unique("kip848")
    a = members("ck", broker, group, topic, conf=CONSUMER)
    b = members("java", broker, group, topic, conf=CONSUMER, java_classpath=java_members)
    wait_balanced([a, b], timeout=60)
    killed_at = time.monotonic()
    b.kill()
    wait_balanced([a], timeout=SESSION_MS / 1000 + 20)
    took = time.monotonic() - killed_at
    print(f"partitions of a killed member moved after {took:.2f} s (session {SESSION_MS} ms)")
    assert SESSION_MS / 1000 - 1 < took < SESSION_MS / 1000 + 10, took
    ownership_never_overlaps([a, b])


@pytest.mark.timeout(300)
def test_a_static_member_restarts_into_its_assignment(spate_factory, members, java_members):
    """group.instance.id: the member closes (a static leave, epoch -2) and a new process with
    the same instance id gets the same partitions; the other member is never disturbed."""
    # The new process must be back within the session timeout, or the group lets the static
    # member go: a JVM's start on a loaded machine took longer than the 6 s of the others.
    broker = spate_factory("--default-partitions", "4",
                           "--group-consumer-heartbeat-interval-ms", "500",
                           "--group-consumer-session-timeout-ms", "30000")
    topic, group = create_topic(broker), unique("kip848")
    conf = lambda instance: {**CONSUMER, "group.instance.id": instance}  # noqa: E731
    a = members("java", broker, group, topic, conf=conf("a"), java_classpath=java_members)
    b = members("java", broker, group, topic, conf=conf("b"), java_classpath=java_members)
    wait_balanced([a, b], timeout=60)
    before_a, before_b = a.assignment(), b.assignment()
    moment = time.monotonic()
    a.leave()
    a2 = members("java", broker, group, topic, conf=conf("a"), java_classpath=java_members)
    wait_balanced([a2, b], timeout=60)
    assert a2.assignment() == before_a
    assert b.assignment() == before_b
    assert not b.events_after(moment, "revoked", "added"), b.events_after(moment, "revoked")


def refuse_a_third_member(broker, members, java_members, conf, prefix):
    """On a broker whose groups take 2 members: two Java members (`conf`) share a topic, a
    third fails with GroupMaxSizeReachedException (fatal) while the two keep their
    partitions, and once one leaves a fourth is taken. Returns the broker's configs as
    DescribeConfigs gives them."""
    topic, group = create_topic(broker), unique(prefix)
    start = lambda: members("java", broker, group, topic, conf=conf,  # noqa: E731
                            java_classpath=java_members)
    a, b = start(), start()
    wait_balanced([a, b], timeout=60)
    before = (a.assignment(), b.assignment())
    third = start()
    wait_until(lambda: third.crashed(), TIMEOUT_S, "the third member's error")
    assert "GroupMaxSizeReached" in third.crashed()[0]["error"], third.crashed()
    assert third.assignment() == ()
    assert (a.assignment(), b.assignment()) == before
    b.leave()
    fourth = start()
    wait_balanced([a, fourth], timeout=60)
    client = AdminClient({"bootstrap.servers": broker.bootstrap, **CK_COMMON})
    resource = ConfigResource(ResourceType.BROKER, "1")
    return client.describe_configs([resource])[resource].result(timeout=TIMEOUT_S)


@pytest.mark.timeout(300)
def test_a_consumer_group_at_its_max_size_refuses_a_new_member(spate_factory, members,
                                                               java_members):
    """`--group-consumer-max-size 2` (Kafka's group.consumer.max.size): a third member gets
    GROUP_MAX_SIZE_REACHED (the Java client's GroupMaxSizeReachedException, fatal) while the
    two keep their partitions; once one leaves, a new member is taken. DescribeConfigs shows
    the limit."""
    broker = spate_factory("--default-partitions", "4",
                           "--group-consumer-heartbeat-interval-ms", "500",
                           "--group-consumer-session-timeout-ms", str(SESSION_MS),
                           "--group-consumer-max-size", "2")
    described = refuse_a_third_member(broker, members, java_members, CONSUMER, "kip848")
    assert described["group.consumer.max.size"].value == "2"
    assert described["group.share.max.size"].value == "200"


@pytest.mark.timeout(300)
def test_a_classic_group_at_its_max_size_refuses_a_new_member(spate_factory, members,
                                                              java_members):
    """`--group-max-size 2` (Kafka's group.max.size, for classic groups): a third classic
    member (the Java client, eager protocol) gets GROUP_MAX_SIZE_REACHED
    (GroupMaxSizeReachedException, fatal) while the two keep their partitions, without a
    rebalance; once one leaves, a new member is taken. DescribeConfigs shows the limit."""
    broker = spate_factory("--default-partitions", "4", "--group-max-size", "2",
                           "--group-initial-rebalance-delay-ms", "0")
    classic = {"heartbeat.interval.ms": "500", "session.timeout.ms": str(SESSION_MS)}
    described = refuse_a_third_member(broker, members, java_members, classic, "classic")
    assert described["group.max.size"].value == "2"


@pytest.mark.timeout(300)
@pytest.mark.parametrize("how", ["restart", "kill9"])
def test_committed_offsets_and_the_group_survive_the_broker(broker, members, how):
    topic, group = create_topic(broker), unique("kip848")
    produce(broker, topic, per_partition=25)
    a = members("ck", broker, group, topic, conf=CONSUMER)
    wait_until(lambda: len(a.records()) >= 100, TIMEOUT_S, "every record read")
    time.sleep(0.5)
    assert committed(broker, group, topic) == {p: 25 for p in range(4)}
    a.kill()
    if how == "restart":
        broker.restart()
    else:
        broker.kill9()
        broker.start()
    assert committed(broker, group, topic) == {p: 25 for p in range(4)}
    client = admin(broker)  # kept alive until the future resolves
    listed = client.list_consumer_groups().result(timeout=TIMEOUT_S)
    found = [g for g in listed.valid if g.group_id == group]
    assert found and str(found[0].type).endswith("CONSUMER"), (listed.valid, listed.errors)
    # A new member resumes from the committed offsets: only new records.
    produce(broker, topic, per_partition=5, tag="after")
    b = members("ck", broker, group, topic, conf=CONSUMER)
    wait_until(lambda: len(b.records()) >= 20, TIMEOUT_S + SESSION_MS / 1000,
               "the new records")
    time.sleep(1)
    assert sorted(o for _, o, _ in b.records()) == sorted(list(range(25, 30)) * 4)
    assert all(v.startswith("after") for _, _, v in b.records())


def admin(broker):
    return AdminClient({"bootstrap.servers": broker.bootstrap, **CK_COMMON})


@pytest.mark.timeout(300)
@pytest.mark.parametrize("classic", ["ck", "java"])
def test_a_classic_member_joins_a_consumer_group(broker, members, java_members, classic):
    """A classic member (JoinGroup/SyncGroup, eager range) joining a consumer group with
    members is taken in as Kafka 4 takes it, under every migration policy: the broker's
    assignor gives it a share, it is told to rejoin (REBALANCE_IN_PROGRESS) when the
    assignment moves, no partition is held twice, and when it leaves the consumer-protocol
    member gets everything back. The group stays a consumer group throughout."""
    topic = create_topic(broker)
    group = unique("kip848")
    new = members("ck", broker, group, topic, conf=CONSUMER)
    wait_balanced([new], timeout=60)
    old = members(classic, broker, group, topic, java_classpath=java_members)
    wait_balanced([new, old], timeout=60)
    produced = produce(broker, topic, per_partition=10)
    wait_until(lambda: len(new.records()) + len(old.records()) >= len(produced), TIMEOUT_S,
               "every record read")
    ownership_never_overlaps([new, old])
    client = admin(broker)  # kept alive until the future resolves
    listed = client.list_consumer_groups().result(timeout=TIMEOUT_S)
    found = [g for g in listed.valid if g.group_id == group]
    assert found and str(found[0].type).endswith("CONSUMER"), (listed.valid, listed.errors)
    old.leave()
    wait_balanced([new], timeout=30)
    ownership_never_overlaps([new, old])


@pytest.mark.timeout(300)
def test_list_and_describe_show_the_group_type(broker, members):
    topic = create_topic(broker)
    new_group, old_group = unique("kip848"), unique("classic")
    a = members("ck", broker, new_group, topic, conf=CONSUMER)
    b = members("ck", broker, old_group, topic)
    wait_balanced([a], timeout=60)
    wait_balanced([b], timeout=60)
    client = admin(broker)
    listed = {g.group_id: g for g in client.list_consumer_groups().result(timeout=TIMEOUT_S).valid}
    assert str(listed[new_group].type).endswith("CONSUMER")
    assert str(listed[old_group].type).endswith("CLASSIC")
    described = client.describe_consumer_groups([new_group, old_group])
    new = described[new_group].result(timeout=TIMEOUT_S)
    old = described[old_group].result(timeout=TIMEOUT_S)
    assert str(new.type).endswith("CONSUMER") and str(old.type).endswith("CLASSIC")
    assert str(new.state).endswith("STABLE")
    assignment = sorted(tp.partition for m in new.members
                        for tp in m.assignment.topic_partitions)
    assert assignment == [0, 1, 2, 3]


def first_assignment_s(member, started, timeout):
    wait_until(lambda: member.assignment() or member.crashed(), timeout, "an assignment")
    assert not member.crashed(), member.crashed()
    first = next(e for e in member.snapshot() if e["event"] == "assigned" and e["partitions"])
    return first["at"] - started


@pytest.mark.timeout(600)
def test_measure_time_to_first_assignment_classic_against_consumer(spate_factory, members,
                                                                  java_members):
    """Not a pass/fail bound but the measurement (printed): a new member's time from process
    start to its first assignment, classic (Kafka's default 3 s initial rebalance delay) and
    consumer protocol, same broker, same run. The consumer protocol must not be slower."""
    broker = spate_factory("--default-partitions", "4")
    topic = create_topic(broker)
    results = {}
    for kind in ("ck", "java"):
        for protocol, conf in (("classic", {}), ("consumer", CONSUMER)):
            times = []
            for _ in range(3):
                started = time.monotonic()
                m = members(kind, broker, unique("measure"), topic, conf=conf,
                            java_classpath=java_members)
                times.append(first_assignment_s(m, started, 60))
                m.kill()
            results[(kind, protocol)] = times
    for (kind, protocol), times in results.items():
        print(f"first assignment {kind} {protocol}: median {statistics.median(times):.3f} s "
              f"{[round(t, 3) for t in times]}")
    for kind in ("ck", "java"):
        assert statistics.median(results[(kind, "consumer")]) < statistics.median(
            results[(kind, "classic")])


# ---------------------------------------------------------------------------------------------
# OffsetCommit and OffsetFetch v10 (KIP-848, Kafka 4.1): topics named by id, sent by hand.
# The Java client (4.x) uses v10 on its own once offered (the tests above commit through it);
# these check the layout and the answers for ids the broker does not know.

OFFSET_COMMIT, OFFSET_FETCH, UNKNOWN_TOPIC_ID = 8, 9, 100


def uvarint(value):
    out = b""
    while value >= 0x80:
        out += bytes([(value & 0x7F) | 0x80])
        value >>= 7
    return out + bytes([value])


def compact(text):
    return b"\x00" if text is None else uvarint(len(text.encode()) + 1) + text.encode()


def compact_array(items):
    return b"\x00" if items is None else uvarint(len(items) + 1) + b"".join(items)


class Flexible:
    """Reads a flexible response body: compact strings and arrays, uuids, tagged fields."""

    def __init__(self, data):
        self.data, self.at = data, wire.skip_tagged_fields(data, 0)  # the header's tags

    def take(self, fmt):
        (value,) = struct.unpack_from(fmt, self.data, self.at)
        self.at += struct.calcsize(fmt)
        return value

    def count(self):
        n, self.at = wire.read_uvarint(self.data, self.at)
        return n - 1

    def string(self):
        n = self.count()
        value = None if n < 0 else self.data[self.at:self.at + n].decode()
        self.at += max(n, 0)
        return value

    def uuid(self):
        value = uuid.UUID(bytes=self.data[self.at:self.at + 16])
        self.at += 16
        return value

    def tags(self):
        self.at = wire.skip_tagged_fields(self.data, self.at)


CORRELATION = itertools.count(1)


def call(sock, api_key, version, body):
    correlation = next(CORRELATION)
    header = wire.request_header(api_key, version, correlation, flexible=True)
    sock.sendall(wire.frame(header + body))
    answered, payload = wire.read_response(sock)
    assert answered == correlation
    return Flexible(payload)


def commit_v10(sock, group, offsets):
    """OffsetCommit v10 without membership: {topic_id: {partition: offset}} ->
    {(topic_id, partition): error}."""
    topics = [tid.bytes + compact_array(
        [struct.pack(">iqi", p, o, -1) + compact("m") + b"\x00" for p, o in parts.items()])
        + b"\x00" for tid, parts in offsets.items()]
    body = (compact(group) + struct.pack(">i", -1) + compact("") + compact(None)
            + compact_array(topics) + b"\x00")
    r = call(sock, OFFSET_COMMIT, 10, body)
    r.take(">i")  # throttle
    errors = {}
    for _ in range(r.count()):
        tid = r.uuid()
        for _ in range(r.count()):
            partition, error = r.take(">i"), r.take(">h")
            r.tags()
            errors[(tid, partition)] = error
        r.tags()
    return errors


def fetch_v10(sock, group, wanted):
    """OffsetFetch v10 of one group: {topic_id: [partitions]}, or None for every topic ->
    {(topic_id, partition): (offset, error)}."""
    topics = None if wanted is None else [
        tid.bytes + compact_array([struct.pack(">i", p) for p in parts]) + b"\x00"
        for tid, parts in wanted.items()]
    group_entry = (compact(group) + compact(None) + struct.pack(">i", -1)
                   + compact_array(topics) + b"\x00")
    r = call(sock, OFFSET_FETCH, 10, compact_array([group_entry]) + b"\x00" + b"\x00")
    r.take(">i")  # throttle
    answers = {}
    for _ in range(r.count()):
        r.string()
        for _ in range(r.count()):
            tid = r.uuid()
            for _ in range(r.count()):
                partition, offset, _epoch = r.take(">i"), r.take(">q"), r.take(">i")
                r.string()
                answers[(tid, partition)] = (offset, r.take(">h"))
                r.tags()
            r.tags()
        assert r.take(">h") == 0, "group error"
        r.tags()
    return answers


def topic_id(broker, topic):
    client = admin(broker)
    described = client.describe_topics(TopicCollection([topic]))[topic].result(timeout=TIMEOUT_S)
    tid = described.topic_id
    return uuid.UUID(bytes=struct.pack(">qq", tid.get_most_significant_bits(),
                                       tid.get_least_significant_bits()))


@pytest.mark.timeout(120)
def test_offset_commit_and_fetch_v10_name_topics_by_id(broker):
    topic, group = create_topic(broker), unique("v10")
    tid, unknown = topic_id(broker, topic), uuid.uuid4()
    sock = wire.connect(broker.port, timeout=TIMEOUT_S)
    deadline = time.monotonic() + TIMEOUT_S
    while True:  # the group's coordinator may still be loading right after the start
        errors = commit_v10(sock, group, {tid: {p: 10 + p for p in range(4)}, unknown: {0: 5}})
        if errors.get((tid, 0)) not in (14, 15, 16) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert errors == {**{(tid, p): 0 for p in range(4)}, (unknown, 0): UNKNOWN_TOPIC_ID}, errors
    # Stored under the topic's name: older versions (by name) read the same offsets.
    assert committed(broker, group, topic) == {p: 10 + p for p in range(4)}
    named = fetch_v10(sock, group, {tid: [0, 3], unknown: [1]})
    assert named == {(tid, 0): (10, 0), (tid, 3): (13, 0), (unknown, 1): (-1, UNKNOWN_TOPIC_ID)}
    assert fetch_v10(sock, group, None) == {(tid, p): (10 + p, 0) for p in range(4)}
    sock.close()
