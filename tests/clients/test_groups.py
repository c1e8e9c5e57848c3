"""Consumer groups with real clients: membership, rebalances, committed offsets, admin views.

Members run in their own processes (group_member.py), so a test can kill one as a crash
would. confluent-kafka (librdkafka) and kafka-python members share groups; kcat -G is the
old-librdkafka canary. Bad input is sent as hand-made requests (the clients never send it).

Every test is bounded: waits have deadlines and the suite's pytest timeout applies.
Run against Apache Kafka with SPATE_TEST_TARGET=kafka to check the tests themselves.
"""

import json
import os
import shutil
import signal
import struct
import sys
import threading
import time
import uuid

import pytest
from confluent_kafka import (ConsumerGroupState, ConsumerGroupTopicPartitions, KafkaException,
                             TopicPartition)
from confluent_kafka.admin import AdminClient, NewTopic

from client_helpers import (CK_COMMON, EventProcess, Msg, assert_healthy, ck_consumer, ck_produce, kcat,
                            wait_until)
from conftest import TARGET
from kafka_wire import connect, frame, read_response, request_header

TIMEOUT_S = 60
MEMBER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "group_member.py")
SESSION_MS = 6000  # Kafka's smallest allowed session timeout (group.min.session.timeout.ms)

# Kafka error codes
NONE = 0
UNKNOWN_SERVER_ERROR = -1
REBALANCE_IN_PROGRESS = 27
MEMBER_ID_REQUIRED = 79
ILLEGAL_GENERATION = 22
INVALID_GROUP_ID = 24
UNKNOWN_MEMBER_ID = 25
INVALID_SESSION_TIMEOUT = 26
NON_EMPTY_GROUP = 68
GROUP_ID_NOT_FOUND = 69
INVALID_TOPIC_EXCEPTION = 17
# Kafka answers these while it creates and loads __consumer_offsets on first use; Spate's
# coordinator is ready before the broker accepts clients.
COORDINATOR_NOT_READY = {14, 15, 16}


@pytest.fixture
def broker(spate_factory):
    """Topics auto-created with 4 partitions; new groups form at once (Kafka's test setting
    group.initial.rebalance.delay.ms=0, which the Kafka reference broker also uses)."""
    extra = [] if TARGET == "kafka" else ["--group-initial-rebalance-delay-ms", "0"]
    return spate_factory("--default-partitions", "4", *extra)


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def admin(broker):
    return AdminClient({"bootstrap.servers": broker.bootstrap, **CK_COMMON})


def create_topic(broker, partitions=4):
    topic = unique("groups")
    client = admin(broker)  # keep the handle alive until the futures resolve
    futures = client.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    for future in futures.values():
        future.result(timeout=TIMEOUT_S)
    return topic


def produce(broker, topic, per_partition, partitions=4, tag="r"):
    msgs = [Msg(f"k{p}".encode(), f"{tag}-{p}-{i}".encode(), partition=p)
            for i in range(per_partition) for p in range(partitions)]
    ck_produce(broker.bootstrap, topic, msgs)
    return msgs


class Member(EventProcess):
    """A group member process and the events it reported (see group_member.py)."""

    def __init__(self, kind, broker, group, topic, conf=None, commit=True, log_dir=None,
                 java_classpath=None):
        self.kind = kind
        if kind == "java":  # java/GroupMember.java: the same events, always commits
            cmd = ["java", "-cp", java_classpath, "GroupMember", broker.bootstrap, group, topic,
                   *(f"{key}={value}" for key, value in (conf or {}).items())]
        else:
            cmd = [sys.executable, MEMBER_SCRIPT, "--kind", kind, "--bootstrap",
                   broker.bootstrap, "--group", group, "--topic", topic, "--conf",
                   json.dumps(conf or {})]
        if not commit:
            cmd.append("--no-commit")
        super().__init__(cmd, os.path.join(log_dir or "/tmp",
                                           f"member-{uuid.uuid4().hex[:8]}.err"))

    def assignment(self):
        assigned = [e for e in self.snapshot() if e["event"] == "assigned"]
        return tuple(assigned[-1]["partitions"]) if assigned else ()

    def records(self):
        return [(e["partition"], e["offset"], e["value"]) for e in self.snapshot()
                if e["event"] == "record"]

    def events_after(self, moment, *kinds):
        return [e for e in self.snapshot() if e["at"] > moment and e["event"] in kinds]

    def crashed(self):
        return [e for e in self.snapshot() if e["event"] == "crashed"]

    def leave(self, timeout=30):
        """SIGTERM: the member closes its consumer (LeaveGroup) and exits."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=timeout)
        self.reader.join(timeout=5)

    def kill(self):
        """SIGKILL: no goodbye, as a crash."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def close(self):
        self.kill()
        self.stderr.close()


@pytest.fixture
def members(tmp_path):
    """Starts members; every one is killed at teardown."""
    started = []

    def start(kind, broker, group, topic, **kwargs):
        member = Member(kind, broker, group, topic, log_dir=str(tmp_path), **kwargs)
        started.append(member)
        return member

    yield start
    for member in started:
        # Shown by pytest when the test failed: what each member saw, in order.
        print(f"member {member.kind} events: {member.snapshot()}")
        member.close()


def balanced(members, partitions=4):
    """Every member holds a share, no partition twice, every partition once."""
    assignments = [m.assignment() for m in members]
    flat = [p for a in assignments for p in a]
    return all(assignments) and sorted(flat) == list(range(partitions))


def wait_balanced(members, partitions=4, timeout=TIMEOUT_S):
    wait_until(lambda: balanced(members, partitions) or any(m.crashed() for m in members),
               timeout, f"{len(members)} members to share {partitions} partitions: "
               f"{[m.assignment() for m in members]}")
    for member in members:
        assert not member.crashed(), member.crashed()


def committed(broker, group, topic, partitions=4):
    # librdkafka 2.16's admin client crashes (NULL cgrp in rd_kafka_handle_OffsetFetch) when
    # the coordinator answers "loading", which Kafka does after a restart: wait it out first.
    wire = Wire(broker)
    try:
        wire.wait_for_offsets(group, topic)
    finally:
        wire.close()
    client = admin(broker)
    futures = client.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p)
                                              for p in range(partitions)])])
    result = futures[group].result(timeout=TIMEOUT_S)
    return {tp.partition: tp.offset for tp in result.topic_partitions}


def describe(broker, group):
    client = admin(broker)
    return client.describe_consumer_groups([group])[group].result(timeout=TIMEOUT_S)


def listed(broker, states):
    client = admin(broker)
    result = client.list_consumer_groups(states=states).result(timeout=TIMEOUT_S)
    return {g.group_id: g.state for g in result.valid}


# ---------------------------------------------------------------------------------------------
# membership and rebalances


def test_two_clients_share_a_topic_and_read_every_record_once(broker, members):
    """Two confluent-kafka and two kafka-python members in one group on a 4-partition topic
    get one partition each, read every record exactly once, and commit where they stopped."""
    topic, group = create_topic(broker), unique("mixed")
    group_members = [members(kind, broker, group, topic) for kind in ("ck", "kp", "ck", "kp")]
    wait_balanced(group_members)
    # The group is stable: now every record has exactly one reader.
    produced = produce(broker, topic, per_partition=50)
    wait_until(lambda: sum(len(m.records()) for m in group_members) >= len(produced),
               TIMEOUT_S, "every record to be read")
    seen = [(p, o) for m in group_members for p, o, _ in m.records()]
    assert len(seen) == len(set(seen)) == len(produced), "a record was read twice or missed"
    assert sorted(v for m in group_members for _, _, v in m.records()) == \
        sorted(msg.value.decode() for msg in produced)
    for member in group_members:
        owned = set(member.assignment())
        assert {p for p, _, _ in member.records()} <= owned, f"{member.kind} read another's"
    for member in group_members:
        member.leave()
    assert committed(broker, group, topic) == {p: 50 for p in range(4)}


def test_a_member_that_dies_or_leaves_is_replaced(broker, members):
    """A killed member's partitions move to the others within the session timeout; a member
    that leaves (LeaveGroup) hands over at once; the survivor then reads everything new."""
    topic, group = create_topic(broker), unique("failover")
    victim = members("ck", broker, group, topic)
    leaver = members("kp", broker, group, topic)
    survivor = members("ck", broker, group, topic)
    wait_balanced([victim, leaver, survivor])
    killed_at = time.monotonic()
    victim.kill()
    wait_balanced([leaver, survivor], timeout=SESSION_MS / 1000 + 20)
    takeover_s = time.monotonic() - killed_at
    # Detection takes up to the session timeout; the rebalance itself a heartbeat or two.
    assert takeover_s < SESSION_MS / 1000 + 10, f"takeover after a crash took {takeover_s:.1f} s"
    left_at = time.monotonic()
    leaver.leave()
    wait_balanced([survivor], timeout=20)
    handover_s = time.monotonic() - left_at
    assert handover_s < SESSION_MS / 1000, f"handover after LeaveGroup took {handover_s:.1f} s"
    before = len(survivor.records())
    produced = produce(broker, topic, per_partition=10, tag="after")
    wait_until(lambda: len(survivor.records()) - before >= len(produced), TIMEOUT_S,
               "the survivor to read the new records")
    new = sorted(v for _, _, v in survivor.records()[before:])
    assert new == sorted(m.value.decode() for m in produced)


@pytest.mark.parametrize("stop", ["restart", "kill9"])
def test_committed_offsets_resume_exactly_after_the_broker_stops(broker, members, stop):
    """A member commits what it read and leaves; the broker is restarted (SIGTERM) or killed
    (SIGKILL); a member of another client then resumes exactly after the last commit."""
    topic, group = create_topic(broker), unique("resume")
    first = members("ck", broker, group, topic)
    old = produce(broker, topic, per_partition=15, tag="old")
    wait_until(lambda: len(first.records()) >= len(old), TIMEOUT_S, "the first member to read")
    first.leave()
    before = committed(broker, group, topic)
    assert before == {p: 15 for p in range(4)}
    if stop == "restart":
        broker.restart()
    else:
        broker.kill9()
        broker.start()
    assert committed(broker, group, topic) == before
    new = produce(broker, topic, per_partition=5, tag="new")
    second = members("kp", broker, group, topic)
    wait_until(lambda: len(second.records()) >= len(new), TIMEOUT_S, "the second member")
    time.sleep(1)  # anything read twice would show up now
    read = second.records()
    assert sorted(v for _, _, v in read) == sorted(m.value.decode() for m in new)
    assert all(offset >= 15 for _, offset, _ in read)
    second.leave()
    assert committed(broker, group, topic) == {p: 20 for p in range(4)}


def test_a_deleted_topics_committed_offsets_go_with_it(broker, members):
    """Deleting a topic drops every group's committed offsets of it (Kafka's onTopicsDeleted),
    through a restart too: a topic created again under the name is read from
    auto.offset.reset (earliest here), not from where the group was in the old one."""
    topic, group = create_topic(broker), unique("recreated")
    first = members("ck", broker, group, topic)
    old = produce(broker, topic, per_partition=5, tag="old")
    wait_until(lambda: len(first.records()) >= len(old), TIMEOUT_S, "the first member to read")
    first.leave()
    assert committed(broker, group, topic) == {p: 5 for p in range(4)}
    client = admin(broker)
    for future in client.delete_topics([topic]).values():
        future.result(timeout=TIMEOUT_S)
    wait_until(lambda: topic not in client.list_topics(timeout=10).topics, TIMEOUT_S,
               "the topic to go")
    assert committed(broker, group, topic) == {p: -1001 for p in range(4)}
    for future in client.create_topics(
            [NewTopic(topic, num_partitions=4, replication_factor=1)]).values():
        future.result(timeout=TIMEOUT_S)
    new = produce(broker, topic, per_partition=15, tag="new")
    broker.restart()
    assert committed(broker, group, topic) == {p: -1001 for p in range(4)}
    second = members("kp", broker, group, topic)
    wait_until(lambda: len(second.records()) >= len(new), TIMEOUT_S, "the second member")
    read = second.records()
    assert sorted(v for _, _, v in read) == sorted(m.value.decode() for m in new)
    second.leave()


def test_offsets_of_a_topic_the_catalog_lost_go_at_start(broker):
    """A crash between a topic's deletion (the catalog written) and its group state's
    tombstones leaves offsets of a topic that no longer exists: the next start drops them.
    Made here by taking the topic out of a stopped broker's catalog by hand."""
    topic, kept, group = create_topic(broker), create_topic(broker), unique("lost")
    wire = Wire(broker)
    try:
        wire.wait_for_offsets(group, topic)
        assert wire.commit(group, -1, "", topic, 7) == NONE
        assert wire.commit(group, -1, "", kept, 9) == NONE
    finally:
        wire.close()
    assert committed(broker, group, topic)[0] == 7
    broker.stop()
    catalog = broker.data_dir / "__spate_meta" / "topics.toml"
    blocks = catalog.read_text().split("[[topics]]")
    left = [b for b in blocks[1:] if f'name = "{topic}"' not in b]
    assert len(left) == len(blocks) - 2, "the topic's entry was found once"
    catalog.write_text("[[topics]]".join([blocks[0], *left]))
    for partition in range(4):
        shutil.rmtree(broker.partition_dir(topic, partition))
    broker.start()
    assert committed(broker, group, topic) == {p: -1001 for p in range(4)}
    assert committed(broker, group, kept)[0] == 9, "another topic's offset stays"
    assert "deleted topic's group state removed" in broker.log_text()


def test_cooperative_sticky_keeps_unaffected_partitions(broker, members):
    """With cooperative-sticky, a third member takes one partition; the first two never
    lose the partitions they keep (incremental rebalance, KIP-429)."""
    topic, group = create_topic(broker), unique("coop")
    conf = {"partition.assignment.strategy": "cooperative-sticky"}
    a = members("ck", broker, group, topic, conf=conf)
    b = members("ck", broker, group, topic, conf=conf)
    wait_balanced([a, b])
    kept_a, kept_b = set(a.assignment()), set(b.assignment())
    assert len(kept_a) == len(kept_b) == 2
    joined_at = time.monotonic()
    c = members("ck", broker, group, topic, conf=conf)
    wait_balanced([a, b, c])
    time.sleep(2)  # let any further rebalance round finish
    wait_balanced([a, b, c])
    revoked = [p for m in (a, b) for e in m.events_after(joined_at, "revoked")
               for p in e["partitions"]]
    assert sorted(revoked) == sorted(c.assignment()), f"revoked {revoked}, c has {c.assignment()}"
    assert set(a.assignment()) <= kept_a and set(b.assignment()) <= kept_b


def test_static_member_rejoins_without_a_rebalance(broker, members):
    """A static member (group.instance.id) that crashes and comes back within its session
    timeout gets its partitions back, and the other member never notices."""
    topic, group = create_topic(broker), unique("static")
    conf = {"session.timeout.ms": 10000}
    a = members("ck", broker, group, topic, conf={**conf, "group.instance.id": "static-a"})
    b = members("ck", broker, group, topic, conf={**conf, "group.instance.id": "static-b"})
    wait_balanced([a, b])
    owned = a.assignment()
    crash_at = time.monotonic()
    a.kill()
    again = members("ck", broker, group, topic, conf={**conf, "group.instance.id": "static-a"})
    wait_until(lambda: again.assignment(), TIMEOUT_S, "the static member to rejoin")
    assert again.assignment() == owned
    time.sleep(2)
    assert b.events_after(crash_at, "revoked", "added") == [], "the other member rebalanced"
    described = describe(broker, group)
    assert described.state == ConsumerGroupState.STABLE
    assert sorted(m.group_instance_id for m in described.members) == ["static-a", "static-b"]


def test_kcat_balanced_consumer(broker):
    """kcat -G (librdkafka 2.0.2) consumes a 4-partition topic as a group, commits on exit,
    and the next run resumes after what the first one read."""
    topic, group = create_topic(broker), unique("kcat")
    produce(broker, topic, per_partition=10)

    def run():
        out = kcat(broker.bootstrap, "-G", group, "-X", "auto.offset.reset=earliest",
                   "-X", "session.timeout.ms=6000", "-X", "heartbeat.interval.ms=500",
                   "-e", "-q", "-f", "%p %o\\n", topic, timeout=90)
        return [tuple(map(int, line.split())) for line in out.decode().splitlines() if line]

    first = run()
    assert sorted(first) == sorted((p, o) for p in range(4) for o in range(10))
    assert committed(broker, group, topic) == {p: 10 for p in range(4)}
    produce(broker, topic, per_partition=3, tag="more")
    assert sorted(run()) == sorted((p, o) for p in range(4) for o in range(10, 13))


def test_describe_and_list_groups_show_the_truth(broker, members):
    """DescribeGroups and ListGroups report state, members, client ids, hosts and
    assignments as they are, through a stable phase, an empty phase and deletion."""
    topic, group = create_topic(broker), unique("described")
    alpha = members("ck", broker, group, topic, conf={"client.id": "alpha"})
    beta = members("ck", broker, group, topic, conf={"client.id": "beta"})
    wait_balanced([alpha, beta])
    wait_until(lambda: describe(broker, group).state == ConsumerGroupState.STABLE, 20, "stable")
    described = describe(broker, group)
    assert described.is_simple_consumer_group is False
    assert described.partition_assignor == "range"
    assert sorted(m.client_id for m in described.members) == ["alpha", "beta"]
    assert all(m.host.lstrip("/") == "127.0.0.1" for m in described.members)
    by_client = {m.client_id: sorted(tp.partition for tp in m.assignment.topic_partitions)
                 for m in described.members}
    assert by_client == {"alpha": list(alpha.assignment()), "beta": list(beta.assignment())}
    assert listed(broker, {ConsumerGroupState.STABLE}).get(group) == ConsumerGroupState.STABLE
    assert group not in listed(broker, {ConsumerGroupState.EMPTY})
    alpha.leave()
    beta.leave()
    wait_until(lambda: describe(broker, group).state == ConsumerGroupState.EMPTY, 20, "empty")
    assert describe(broker, group).members == []
    assert listed(broker, {ConsumerGroupState.EMPTY}).get(group) == ConsumerGroupState.EMPTY
    assert group in listed(broker, set())
    client = admin(broker)
    client.delete_consumer_groups([group])[group].result(timeout=TIMEOUT_S)
    assert group not in listed(broker, set())
    try:
        state = describe(broker, group).state
    except Exception as error:  # DescribeGroups v6+: GROUP_ID_NOT_FOUND (KIP-1043)
        assert "GROUP_ID_NOT_FOUND" in str(error), error
    else:
        assert state == ConsumerGroupState.DEAD, f"a deleted group described as {state}"


def test_offsets_topic_stays_internal(broker):
    """Committed offsets live in an internal topic clients neither see nor write."""
    topic, group = create_topic(broker), unique("internal")
    consumer = ck_consumer(broker.bootstrap, **{"group.id": group})
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            try:
                consumer.commit(offsets=[TopicPartition(topic, 0, 3)], asynchronous=False)
                break
            except KafkaException as error:
                if error.args[0].code() not in COORDINATOR_NOT_READY or \
                        time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        names = consumer.list_topics(timeout=TIMEOUT_S).topics
    finally:
        consumer.close()
    assert committed(broker, group, topic)[0] == 3
    if TARGET == "spate":  # Kafka lists its internal topics (flagged internal)
        assert "__consumer_offsets" not in names
        client = admin(broker)
        # Both internal logs' names: a topic of that name would share their directories.
        for internal in ("__consumer_offsets", "__transaction_state"):
            futures = client.create_topics([NewTopic(internal, 1, 1)])
            with pytest.raises(Exception, match="INVALID_TOPIC|internal"):
                futures[internal].result(timeout=TIMEOUT_S)


# ---------------------------------------------------------------------------------------------
# bad input, sent by hand (old, non-flexible versions: the layout is simplest)

JOIN_GROUP, SYNC_GROUP, HEARTBEAT, LEAVE_GROUP = 11, 14, 12, 13
OFFSET_COMMIT, OFFSET_FETCH, DELETE_GROUPS, FIND_COORDINATOR = 8, 9, 42, 10


def string(text):
    data = text.encode()
    return struct.pack(">h", len(data)) + data


def blob(data):
    return struct.pack(">i", len(data)) + data


def array(items):
    return struct.pack(">i", len(items)) + b"".join(items)


class Reader:
    def __init__(self, data):
        self.data, self.at = data, 0

    def take(self, fmt):
        (value,) = struct.unpack_from(fmt, self.data, self.at)
        self.at += struct.calcsize(fmt)
        return value

    def string(self):
        size = self.take(">h")
        if size < 0:
            return None
        value = self.data[self.at:self.at + size].decode()
        self.at += size
        return value

    def blob(self):
        size = self.take(">i")
        value = self.data[self.at:self.at + max(size, 0)]
        self.at += max(size, 0)
        return value


def subscription(topic):
    """A consumer-protocol subscription (v0) to one topic."""
    return struct.pack(">h", 0) + array([string(topic)]) + blob(b"")


def assignment(topic, partitions):
    """A consumer-protocol assignment (v0)."""
    return struct.pack(">h", 0) + array(
        [string(topic) + array([struct.pack(">i", p) for p in partitions])]) + blob(b"")


class Wire:
    """One connection sending hand-made group requests; each call returns the body reader."""

    def __init__(self, broker):
        self.sock = connect(broker.port, timeout=TIMEOUT_S)
        self.correlation = 0

    def call(self, api_key, version, body):
        self.correlation += 1
        self.sock.sendall(frame(request_header(api_key, version, self.correlation) + body))
        correlation, payload = read_response(self.sock)
        assert correlation == self.correlation
        return Reader(payload)

    def coordinator(self, group):
        """FindCoordinator v0 until the coordinator is ready (Kafka creates its offsets topic
        on first use); returns the error code finally answered."""
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            error = self.call(FIND_COORDINATOR, 0, string(group)).take(">h")
            if error not in COORDINATOR_NOT_READY or time.monotonic() > deadline:
                return error
            time.sleep(0.2)

    def wait_for_offsets(self, group, topic):
        """Until OffsetFetch answers without a coordinator-not-ready error."""
        deadline = time.monotonic() + TIMEOUT_S
        self.coordinator(group)
        while self.fetch(group, topic)[1] in COORDINATOR_NOT_READY:
            assert time.monotonic() < deadline, "the group coordinator never became ready"
            time.sleep(0.2)

    def join(self, group, member="", topic="t", session_ms=SESSION_MS):
        body = (string(group) + struct.pack(">i", session_ms) + string(member)
                + string("consumer") + array([string("range") + blob(subscription(topic))]))
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            r = self.call(JOIN_GROUP, 0, body)
            error, generation = r.take(">h"), r.take(">i")
            if error not in COORDINATOR_NOT_READY or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        protocol, leader, member_id = r.string(), r.string(), r.string()
        peers = [(r.string(), r.blob()) for _ in range(r.take(">i"))]
        return {"error": error, "generation": generation, "protocol": protocol,
                "leader": leader, "member": member_id, "members": peers}

    def join_v5(self, group, member="", instance=None, topic="t", rebalance_ms=SESSION_MS):
        """JoinGroup v5 (group.instance.id, MEMBER_ID_REQUIRED): (error, generation, member)."""
        nullable = string(instance) if instance is not None else struct.pack(">h", -1)
        body = (string(group) + struct.pack(">ii", SESSION_MS, rebalance_ms) + string(member)
                + nullable + string("consumer")
                + array([string("range") + blob(subscription(topic))]))
        r = self.call(JOIN_GROUP, 5, body)
        r.take(">i")  # throttle
        error, generation = r.take(">h"), r.take(">i")
        r.string()
        r.string()
        return error, generation, r.string()

    def sync(self, group, generation, member, assignments=()):
        body = (string(group) + struct.pack(">i", generation) + string(member)
                + array([string(m) + blob(a) for m, a in assignments]))
        r = self.call(SYNC_GROUP, 0, body)
        return r.take(">h"), r.blob()

    def heartbeat(self, group, generation, member):
        body = string(group) + struct.pack(">i", generation) + string(member)
        return self.call(HEARTBEAT, 0, body).take(">h")

    def leave(self, group, member):
        return self.call(LEAVE_GROUP, 0, string(group) + string(member)).take(">h")

    def commit(self, group, generation, member, topic, offset, partition=0):
        body = (string(group) + struct.pack(">i", generation) + string(member)
                + struct.pack(">q", -1) + array([string(topic) + array(
                    [struct.pack(">iq", partition, offset) + string("meta")])]))
        r = self.call(OFFSET_COMMIT, 2, body)
        r.take(">i")
        r.string()
        r.take(">i")
        r.take(">i")
        return r.take(">h")

    def commit_many(self, group, topic, offsets):
        """OffsetCommit v2 for a simple group (no membership): {partition: offset}."""
        partitions = [struct.pack(">iq", p, o) + string("m") for p, o in offsets.items()]
        body = (string(group) + struct.pack(">i", -1) + string("") + struct.pack(">q", -1)
                + array([string(topic) + array(partitions)]))
        r = self.call(OFFSET_COMMIT, 2, body)
        r.take(">i")
        r.string()
        errors = [(r.take(">i"), r.take(">h"))[1] for _ in range(r.take(">i"))]
        assert errors == [NONE] * len(offsets), errors

    def fetch(self, group, topic, partition=0):
        body = string(group) + array([string(topic) + array([struct.pack(">i", partition)])])
        r = self.call(OFFSET_FETCH, 1, body)
        r.take(">i")
        r.string()
        r.take(">i")
        r.take(">i")
        offset = r.take(">q")
        r.string()
        return offset, r.take(">h")

    def delete(self, group):
        r = self.call(DELETE_GROUPS, 0, array([string(group)]))
        r.take(">i")
        r.take(">i")
        r.string()
        return r.take(">h")

    def heartbeat_flexible(self, group, generation=1, member="m"):
        """Heartbeat v4: compact strings, so a group id may exceed 32767 bytes."""
        def compact(text):
            data = text.encode()
            return uvarint(len(data) + 1) + data

        self.correlation += 1
        header = request_header(HEARTBEAT, 4, self.correlation, flexible=True)
        body = compact(group) + struct.pack(">i", generation) + compact(member) + b"\x00\x00"
        self.sock.sendall(frame(header + body))
        correlation, payload = read_response(self.sock)
        assert correlation == self.correlation
        return struct.unpack_from(">ih", payload, 1)[1]  # tagged fields, throttle, error

    def close(self):
        self.sock.close()


def uvarint(value):
    out = b""
    while value >= 0x80:
        out += bytes([(value & 0x7F) | 0x80])
        value >>= 7
    return out + bytes([value])


def stable_single_member(broker, group, topic):
    """One hand-made member, leader of a stable generation owning partition 0."""
    wire = Wire(broker)
    assert wire.coordinator(group) == NONE
    joined = wire.join(group, topic=topic)
    assert joined["error"] == NONE, joined
    assert joined["leader"] == joined["member"]
    error, _ = wire.sync(group, joined["generation"], joined["member"],
                         [(joined["member"], assignment(topic, [0, 1, 2, 3]))])
    assert error == NONE
    return wire, joined["generation"], joined["member"]


def test_commits_from_strangers_and_stale_generations_are_refused(broker):
    topic, group = create_topic(broker), unique("strangers")
    wire, generation, member = stable_single_member(broker, group, topic)
    assert wire.commit(group, generation, member, topic, 5) == NONE
    assert wire.commit(group, generation, "ghost", topic, 9) == UNKNOWN_MEMBER_ID
    assert wire.commit(group, generation + 1, member, topic, 9) == ILLEGAL_GENERATION
    assert wire.commit(group, -1, "", topic, 9) == UNKNOWN_MEMBER_ID  # the group is not empty
    assert wire.fetch(group, topic) == (5, NONE), "a refused commit changed the offset"
    assert wire.heartbeat(group, generation, member) == NONE
    assert wire.heartbeat(group, generation + 1, member) == ILLEGAL_GENERATION
    assert wire.heartbeat(group, generation, "ghost") == UNKNOWN_MEMBER_ID
    wire.close()


def test_a_followers_sync_cannot_set_the_assignment(broker):
    """Only the leader's SyncGroup assigns; a follower's assignments are ignored and it gets
    what the leader decided."""
    topic, group = create_topic(broker), unique("follower")
    leader_wire, generation, leader = stable_single_member(broker, group, topic)
    follower_wire = Wire(broker)
    answers = {}

    def follower_join():
        answers["follower"] = follower_wire.join(group, topic=topic)

    joining = threading.Thread(target=follower_join)
    joining.start()
    # The leader learns of the rebalance from its heartbeat, then rejoins.
    wait_until(lambda: leader_wire.heartbeat(group, generation, leader) != NONE, 20,
               "the rebalance to start")
    rejoined = leader_wire.join(group, member=leader, topic=topic)
    joining.join(timeout=TIMEOUT_S)
    follower = answers["follower"]
    assert rejoined["error"] == follower["error"] == NONE
    assert rejoined["generation"] == follower["generation"] == generation + 1
    assert rejoined["leader"] == follower["leader"] == leader
    assert len(rejoined["members"]) == 2 and follower["members"] == []
    bogus = [(leader, assignment(topic, [9])), (follower["member"], assignment(topic, [9]))]
    synced = {}
    waiting = threading.Thread(target=lambda: synced.update(
        follower=follower_wire.sync(group, generation + 1, follower["member"], bogus)))
    waiting.start()
    time.sleep(0.5)
    assert waiting.is_alive(), "a follower's SyncGroup must wait for the leader's"
    mine, theirs = assignment(topic, [0, 1]), assignment(topic, [2, 3])
    error, got = leader_wire.sync(group, generation + 1, leader,
                                  [(leader, mine), (follower["member"], theirs)])
    waiting.join(timeout=TIMEOUT_S)
    assert (error, got) == (NONE, mine)
    assert synced["follower"] == (NONE, theirs)
    leader_wire.close()
    follower_wire.close()


def test_heartbeats_to_a_deleted_group_fail(broker):
    topic, group = create_topic(broker), unique("deleted")
    wire, generation, member = stable_single_member(broker, group, topic)
    assert wire.commit(group, generation, member, topic, 7) == NONE
    assert wire.delete(group) == NON_EMPTY_GROUP
    assert wire.leave(group, member) == NONE
    assert wire.delete(group) == NONE
    assert wire.heartbeat(group, generation, member) == UNKNOWN_MEMBER_ID
    assert wire.commit(group, generation, member, topic, 8) == ILLEGAL_GENERATION
    assert wire.fetch(group, topic) == (-1, NONE), "deleting the group drops its offsets"
    assert wire.delete(group) == GROUP_ID_NOT_FOUND
    wire.close()


def test_a_pending_member_id_cannot_claim_a_static_instance(broker):
    """A JoinGroup that names a pending dynamic member id (one told MEMBER_ID_REQUIRED)
    together with the instance id of a static member is refused; it once aborted the broker
    (the instance was registered twice)."""
    topic, group = create_topic(broker), unique("claim")
    static_wire, dynamic_wire = Wire(broker), Wire(broker)
    assert static_wire.coordinator(group) == NONE
    error, generation, static_id = static_wire.join_v5(group, instance="i1", topic=topic)
    assert (error, generation) == (NONE, 1)
    error, _, pending_id = dynamic_wire.join_v5(group, topic=topic)
    assert error == MEMBER_ID_REQUIRED and pending_id
    error, _, _ = dynamic_wire.join_v5(group, member=pending_id, instance="i1", topic=topic)
    assert error != NONE
    if TARGET == "spate":
        assert error == UNKNOWN_SERVER_ERROR  # Kafka: an IllegalStateException
    assert static_wire.heartbeat(group, 1, static_id) in (NONE, REBALANCE_IN_PROGRESS)
    static_wire.close()
    dynamic_wire.close()
    assert_healthy(broker.bootstrap)


def test_empty_and_overlong_group_ids_are_refused(broker):
    topic = create_topic(broker)
    wire = Wire(broker)
    assert wire.join("", topic=topic)["error"] == INVALID_GROUP_ID
    assert wire.sync("", 1, "m")[0] == INVALID_GROUP_ID
    assert wire.heartbeat("", 1, "m") == INVALID_GROUP_ID
    assert wire.leave("", "m") == INVALID_GROUP_ID
    if TARGET == "spate":
        # Kafka has no limit of its own (its records cannot hold more than 32767 bytes).
        assert wire.heartbeat_flexible("g" * 40_000) == INVALID_GROUP_ID
    assert wire.join(unique("short"), topic=topic, session_ms=1000)["error"] == \
        INVALID_SESSION_TIMEOUT
    wire.close()
    assert listed(broker, set()) == {}, "no group was created by refused requests"
    assert_healthy(broker.bootstrap)


# ---------------------------------------------------------------------------------------------
# the committed-offsets log (Spate's own mechanics: compaction, a change of --cores)


def offsets_logs(broker):
    """{shard: (segment files, bytes)} of the __consumer_offsets-<shard> directories."""
    found = {}
    for entry in broker.data_dir.iterdir():
        if entry.name.startswith("__consumer_offsets-"):
            logs = list(entry.glob("*.log"))
            found[int(entry.name.rsplit("-", 1)[1])] = (
                len(logs), sum(f.stat().st_size for f in logs))
    return found


@pytest.mark.skipif(TARGET != "spate", reason="Spate's offsets log layout")
def test_the_offsets_log_is_compacted_and_replays_the_same(spate_factory):
    """Thousands of commits on 64 KiB segments: the log is compacted (a snapshot, old
    segments deleted), stays small, and a crash or restart replays the latest offsets."""
    broker = spate_factory("--default-partitions", "4", "--offsets-topic-segment-bytes", "65536")
    topic = create_topic(broker)
    groups = [unique("compact") for _ in range(5)]
    wire = Wire(broker)
    rounds = 800
    for round_ in range(rounds):
        for index, group in enumerate(groups):
            wire.commit_many(group, topic, {p: round_ * 10 + index + p for p in range(4)})
    wire.close()
    written = rounds * len(groups) * 4 * 70  # bytes of offset records, at least
    logs = offsets_logs(broker)
    wait_until(lambda: sum(size for _, size in offsets_logs(broker).values()) < written / 3,
               10, f"the offsets logs to be compacted: {logs}")
    expected = {g: {p: (rounds - 1) * 10 + i + p for p in range(4)} for i, g in enumerate(groups)}

    def offsets_now():
        wire = Wire(broker)
        try:
            return {g: {p: wire.fetch(g, topic, p)[0] for p in range(4)} for g in groups}
        finally:
            wire.close()

    assert offsets_now() == expected
    broker.kill9()
    broker.start()
    assert offsets_now() == expected, "replay after a crash"
    broker.restart()
    assert offsets_now() == expected, "replay after a clean restart"
    assert any("compacted an internal log" in line and "__consumer_offsets" in line
               for line in broker.log_text().splitlines())


@pytest.mark.skipif(TARGET != "spate", reason="Spate's per-core offsets logs")
def test_groups_and_offsets_survive_a_change_of_core_count(spate_factory):
    """Groups live in the log of the shard that owns them; when --cores changes, every
    group moves to its new owner at start-up, offsets and membership records included."""
    broker = spate_factory("--default-partitions", "4", "--group-initial-rebalance-delay-ms",
                           "0")
    topic = create_topic(broker)
    groups = [unique("moving") for _ in range(12)]
    wire = Wire(broker)
    for index, group in enumerate(groups):
        wire.commit_many(group, topic, {p: 100 * index + p for p in range(4)})
    wire.close()
    member_wire, generation, member = stable_single_member(broker, unique("members"), topic)
    member_group = [g for g in listed(broker, set()) if g.startswith("members")][0]
    member_wire.leave(member_group, member)
    member_wire.close()
    expected = {g: {p: 100 * i + p for p in range(4)} for i, g in enumerate(groups)}

    def offsets_now():
        wire = Wire(broker)
        try:
            return {g: {p: wire.fetch(g, topic, p)[0] for p in range(4)} for g in groups}
        finally:
            wire.close()

    assert sorted(offsets_logs(broker)) == [0, 1]
    broker.stop()
    broker.extra_args += ["--cores", "1"]
    broker.start()
    assert offsets_now() == expected
    assert sorted(offsets_logs(broker)) == [0], "the log of the shard that is gone is removed"
    assert set(listed(broker, set())) == set(groups) | {member_group}
    kinds = {g.group_id: g for g in admin_list_groups(broker)}
    assert kinds[member_group].protocol_type == "consumer", "the membership record moved too"
    wire = Wire(broker)
    for index, group in enumerate(groups[:6]):
        wire.commit_many(group, topic, {p: 5000 + index for p in range(4)})
    wire.close()
    for index, group in enumerate(groups[:6]):
        expected[group] = {p: 5000 + index for p in range(4)}
    broker.kill9()
    broker.extra_args[-1] = "2"
    broker.start()
    assert offsets_now() == expected
    assert sorted(offsets_logs(broker)) == [0, 1]
    broker.restart()
    assert offsets_now() == expected


def admin_list_groups(broker):
    """ListGroups through kafka-python (it reports the protocol type)."""
    from kafka import KafkaAdminClient

    client = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=20000)
    try:
        return [type("Listed", (), {"group_id": g["group_id"],
                                    "protocol_type": g["protocol_type"]})
                for g in client.list_groups()]
    finally:
        client.close()


# ---------------------------------------------------------------------------------------------
# the Java client (where Maven can fetch kafka-clients)


@pytest.fixture(scope="module")
def java_members():
    """The classpath to run java/GroupMember.java (compiled once), or a skip without Maven."""
    from java_build import compile_java

    return compile_java("GroupMember")


@pytest.mark.timeout(420)
def test_java_consumers_share_a_group_with_librdkafka_and_kafka_python(broker, members,
                                                                       java_members):
    """Two Java consumers (classic protocol, range), a confluent-kafka and a kafka-python
    consumer in one group on 4 partitions: disjoint shares, every record read once, the
    commits land, and a Java member's LeaveGroup hands its partition over."""
    topic, group = create_topic(broker), unique("java")
    group_members = [members(kind, broker, group, topic, java_classpath=java_members)
                     for kind in ("java", "ck", "java", "kp")]
    wait_balanced(group_members, timeout=120)
    produced = produce(broker, topic, per_partition=25)
    wait_until(lambda: sum(len(m.records()) for m in group_members) >= len(produced),
               TIMEOUT_S, "every record to be read")
    time.sleep(1)  # anything read twice would show up now
    seen = [(p, o) for m in group_members for p, o, _ in m.records()]
    assert len(seen) == len(set(seen)) == len(produced), "a record was read twice or missed"
    for member in group_members:
        assert {p for p, _, _ in member.records()} <= set(member.assignment()), member.kind
    leaver = group_members.pop(0)
    left_at = time.monotonic()
    leaver.leave()
    assert any(e["event"] == "closed" for e in leaver.snapshot()), "the Java member's close"
    wait_balanced(group_members, timeout=30)
    assert time.monotonic() - left_at < SESSION_MS / 1000 + 10
    for member in group_members:
        member.leave()
    assert committed(broker, group, topic) == {p: 25 for p in range(4)}
