"""Share groups (KIP-932) on three real `spate` processes, with the Java client's
KafkaShareConsumer (`java/ShareMember.java`) and Admin (`java/ShareAdmin.java`).

A client sends ShareFetch and ShareAcknowledge to each partition's leader; the group's share
state is kept by its coordinator (the leader of the group's `__consumer_offsets` partition,
replicated like any partition), which the leaders ask on the client's behalf. A topic whose
three partitions are led by the three nodes is read by two members: every record is
delivered once, acknowledged, and the Admin client sees each share partition's start at the
end. Then the coordinator's node is killed with kill -9: the survivors elect a new leader of
the group's partition, which replays the share state; records produced after the kill are
delivered, and no record whose acknowledgement was confirmed before the kill is delivered
again (those in flight at the kill may come again, with a higher delivery count). The
killed node comes back and leads its partition again while the old leader lives: the
members follow the leader the NOT_LEADER_OR_FOLLOWER answers name, and read on. The
leaders' calls of the coordinator, Spate's private request between brokers, are checked on
the wire. The Admin client's share lags are those of each partition's leader, also where
the coordinator's node holds no replica. Records the coordinator makes available again wake
the fetches waiting for them on the partition's leader. A topic deleted while its group's
coordinator could not write the tombstones of its share state loses that state when a
survivor loads the group. Every wait is bounded.
"""

import os
import signal
import struct
import time
import uuid

import pytest

import kafka_wire as wire
from conftest import TARGET, free_port
from test_cluster import admin, wait_for
from test_coordinator_failover import coordinator
from test_replication import (all_in_sync, create_replicated, partition_states, produce,
                              replicated_cluster)
from test_share_groups import ShareMember, read_from_earliest, share_admin

pytestmark = pytest.mark.skipif(TARGET != "spate", reason="spate's cluster options")

TIMEOUT_S = 90
SHARE_OPTIONS = ("--group-share-record-lock-duration-ms", "3000",
                 "--group-share-heartbeat-interval-ms", "500",
                 "--group-share-session-timeout-ms", "8000")


class Bootstrap:
    """What the share helpers take for a broker: a bootstrap list."""

    def __init__(self, nodes):
        self.bootstrap = ",".join(node.broker.bootstrap for node in nodes)


@pytest.fixture(scope="module")
def java_share():
    from java_build import compile_java

    return compile_java("ShareMember", "ShareAdmin", "ShareOffsets")


@pytest.fixture
def members(java_share, tmp_path):
    started = []

    def start(brokers, group, topic):
        member = ShareMember(java_share, brokers, group, topic, "accept", tmp_path,
                             {"max.poll.records": "10"})
        started.append(member)
        return member

    yield start
    for member in started:
        member.kill()


def delivered(members):
    """(value, partition, offset, delivery count) of every record delivered to `members`."""
    return [(e["value"], e["partition"], e["offset"], e["delivery"])
            for m in members for e in m.snapshot() if e["event"] == "record"]


def confirmed(member):
    """Values whose acknowledgement commitSync confirmed without error."""
    return member.confirmed("value")


def starts(java_share, brokers, group):
    """Each share partition's start offset as the Admin client lists it, by partition."""
    described = share_admin(java_share, brokers, group)[1] or {}
    return {int(p): o for p, o in (described.get("offsets") or {}).items()}


@pytest.mark.timeout(420)
def test_share_consumers_read_a_cluster_and_survive_the_kill_of_the_coordinator(
        spate_factory, members, java_share):
    nodes, by_id = replicated_cluster(spate_factory, *SHARE_OPTIONS,
                                      "--leader-imbalance-check-interval-ms", "1000")
    topic, group = "queue", f"sg-{uuid.uuid4().hex[:8]}"
    partitions = [0, 1, 2]
    create_replicated(nodes[0], topic, 3, min_insync=2)
    states = wait_for("every replica in sync", lambda: all_in_sync(nodes, topic, 3))
    assert {s[1] for s in states.values()} == {1, 2, 3}, states  # three leaders
    owner_id = wait_for("a coordinator all three agree on", lambda: coordinator(nodes, group))
    brokers = Bootstrap(nodes)
    read_from_earliest(brokers, group)
    first, errors = produce(nodes, topic, partitions, 40, "before")
    assert errors == [], errors
    values = {v for p in partitions for v in first[p]}

    a, b = members(brokers, group, topic), members(brokers, group, topic)
    wait_for("every record delivered", lambda: {v for v, *_ in delivered([a, b])} >= values,
             timeout=TIMEOUT_S)
    wait_for("every record acknowledged", lambda: confirmed(a) | confirmed(b) >= values,
             timeout=TIMEOUT_S)
    got = delivered([a, b])
    assert sorted(v for v, *_ in got) == sorted(values), "a record went twice or not at all"
    assert {d for *_, d in got} == {1}
    # The leaders asked the coordinator: each share partition's start is at its end.
    wait_for("each share partition's start at its end",
             lambda: starts(java_share, brokers, group) == {p: 40 for p in partitions},
             timeout=TIMEOUT_S)

    # kill -9 of the coordinator's node, with the members still reading.
    settled = confirmed(a) | confirmed(b)
    seen_before = [len(delivered([m])) for m in (a, b)]
    victim = by_id[owner_id]
    victim.broker.kill9()
    survivors = [node for node in nodes if node is not victim]
    wait_for("a new coordinator", lambda: coordinator(survivors, group) not in
             (None, victim.node_id) and coordinator(survivors, group), timeout=30)
    wait_for("every partition led by a survivor",
             lambda: leaders_alive(survivors, topic, victim.node_id), timeout=30)
    second, errors = produce(survivors, topic, partitions, 20, "after")
    assert errors == [], errors
    later = {v for p in partitions for v in second[p]}
    wait_for("the records produced after the kill delivered",
             lambda: {v for v, *_ in delivered([a, b])} >= later, timeout=TIMEOUT_S)
    after = [r for m, seen in zip((a, b), seen_before) for r in delivered([m])[seen:]]
    again = [(v, d) for v, _, _, d in after if v in settled]
    assert again == [], f"records acknowledged before the kill delivered again: {again}"
    assert all(d >= 2 for v, _, _, d in after if v in values), after
    wait_for("every record acknowledged after the kill",
             lambda: confirmed(a) | confirmed(b) >= later, timeout=TIMEOUT_S)
    surviving = Bootstrap(survivors)
    wait_for("each share partition's start at its new end",
             lambda: starts(java_share, surviving, group) == {p: 60 for p in partitions},
             timeout=TIMEOUT_S)

    # The killed node comes back and leads its partition again (preferred leader election)
    # while both of its old leaders live: the members' fetches there are answered
    # NOT_LEADER_OR_FOLLOWER with the new leader, and they follow it.
    victim.broker.start()
    wait_for("the ISR whole again", lambda: all_in_sync(nodes, topic, 3), timeout=60)

    def preferred():
        s = partition_states(nodes, topic)
        return s if s and all(p[1] == p[3][0] for p in s.values()) else None

    wait_for("the preferred replicas leading again", preferred, timeout=30)
    third, errors = produce(nodes, topic, partitions, 20, "back")
    assert errors == [], errors
    last = {v for p in partitions for v in third[p]}
    wait_for("the records produced after the return delivered and acknowledged",
             lambda: confirmed(a) | confirmed(b) >= last, timeout=TIMEOUT_S)
    wait_for("each share partition's start at its last end",
             lambda: starts(java_share, brokers, group) == {p: 80 for p in partitions},
             timeout=TIMEOUT_S)

    # Each partition's lag (DescribeShareGroupOffsets v1, KIP-1226): the coordinator's node
    # asks the high watermarks of the partitions the other two lead of them (-1, shown as
    # null, before). None once everything is acknowledged; then, with the members gone, the
    # records nobody read.
    lags_then_unread(java_share, nodes, topic, partitions, group, [a, b])


@pytest.mark.timeout(300)
def test_share_lags_of_partitions_other_nodes_lead(spate_factory, members, java_share):
    """DescribeShareGroupOffsets v1's lag (KIP-1226) of every partition of a topic of
    replication factor 1 whose three partitions the three nodes lead: the coordinator's node
    holds no replica of two of them and asks their leaders for the high watermarks (those
    lags were -1, shown as null, before)."""
    nodes, _ = replicated_cluster(spate_factory, *SHARE_OPTIONS)
    topic, group = "lags", f"sg-{uuid.uuid4().hex[:8]}"
    partitions = [0, 1, 2]
    states = create_unreplicated(nodes, topic, 3)
    owner = wait_for("a coordinator all three agree on", lambda: coordinator(nodes, group))
    elsewhere = [p for p, s in states.items() if s[1] != owner]
    assert elsewhere, f"every partition on the coordinator's node {owner}: {states}"
    brokers = Bootstrap(nodes)
    read_from_earliest(brokers, group)
    first, errors = produce(nodes, topic, partitions, 10, "read")
    assert errors == [], errors
    member = members(brokers, group, topic)
    values = {v for p in partitions for v in first[p]}
    wait_for("every record acknowledged", lambda: confirmed(member) >= values,
             timeout=TIMEOUT_S)
    lags_then_unread(java_share, nodes, topic, partitions, group, [member])


def create_unreplicated(nodes, topic, partitions):
    """A topic of replication factor 1; its partition states once every node has them."""
    from confluent_kafka.admin import NewTopic

    client = admin(nodes[0])
    created = client.create_topics([NewTopic(topic, partitions, 1)], operation_timeout=30,
                                   request_timeout=40)
    created[topic].result(timeout=45)
    return wait_for("the topic on every node",
                    lambda: all_in_sync(nodes, topic, partitions, replicas=1))


def lags_then_unread(java_share, nodes, topic, partitions, group, members):
    """Every share partition's lag 0 (all acknowledged), then, with `members` gone, 5 on each
    after 5 records nobody reads."""
    brokers = Bootstrap(nodes)
    wait_for("no lag once every record is acknowledged",
             lambda: lags(java_share, brokers, group) == {p: 0 for p in partitions},
             timeout=TIMEOUT_S)
    for member in members:
        member.kill()
    _, errors = produce(nodes, topic, partitions, 5, "unread")
    assert errors == [], errors
    wait_for("a lag of the records nobody read",
             lambda: lags(java_share, brokers, group) == {p: 5 for p in partitions},
             timeout=TIMEOUT_S)


def lags(java_share, brokers, group):
    """Each share partition's lag as the Admin client lists it, by partition (None: not
    known)."""
    described = share_admin(java_share, brokers, group)[1] or {}
    return {int(p): lag for p, lag in (described.get("lags") or {}).items()}


@pytest.mark.timeout(300)
def test_records_made_available_wake_fetches_waiting_on_their_leader(spate_factory, java_share,
                                                                     tmp_path):
    """Records the coordinator makes available again wake the ShareFetches waiting for them
    on the partition's leader, another node, at once (`ShareCall::Wake`). One member holds
    every record of a one-partition topic (it stops polling), a second member's ShareFetch
    waits on the leader (fetch.max.wait.ms 30 s), then the first closes and its records go
    back. The fetches' recheck is set to ten minutes, so without the wake the records would
    reach the second member only when its wait ends, some 25 s after the close."""
    nodes, by_id = replicated_cluster(
        spate_factory, "--group-share-record-lock-duration-ms", "120000",
        "--group-share-heartbeat-interval-ms", "500", "--group-share-session-timeout-ms", "8000",
        "--group-share-fetch-recheck-ms", "600000")
    topic = "wake"
    states = create_unreplicated(nodes, topic, 1)
    leader = states[0][1]
    # A group whose coordinator is not the partition's leader.
    group = None
    for _ in range(30):
        candidate = f"sg-{uuid.uuid4().hex[:8]}"
        owner = wait_for("a coordinator all three agree on",
                         lambda c=candidate: coordinator(nodes, c))
        if owner != leader:
            group = candidate
            break
    assert group, f"every group tried is coordinated by the leader {leader}"
    brokers = Bootstrap(nodes)
    read_from_earliest(brokers, group)
    sent, errors = produce(nodes, topic, [0], 10, "held")
    assert errors == [], errors
    values = set(sent[0])

    holder = ShareMember(java_share, brokers, group, topic, "hold", tmp_path,
                         {"max.poll.records": "100"})
    waiter = None
    try:
        wait_for("every record held by the first member",
                 lambda: {v for v, *_ in delivered([holder])} >= values, timeout=TIMEOUT_S)
        waiter = ShareMember(java_share, brokers, group, topic, "accept", tmp_path,
                             {"max.poll.records": "100", "fetch.max.wait.ms": "30000"})
        wait_for("both members assigned the partition",
                 lambda: assigned(java_share, brokers, group) == [[0], [0]], timeout=TIMEOUT_S)
        time.sleep(5)  # its ShareFetch at the leader, waiting
        assert delivered([waiter]) == []
        holder.stop()  # closes: the records it holds go back
        wait_for("the released records delivered to the waiting member",
                 lambda: {v for v, *_ in delivered([waiter])} >= values, timeout=15)
        assert {d for *_, d in delivered([waiter])} == {2}
    finally:
        holder.kill()
        if waiter:
            waiter.kill()


@pytest.mark.timeout(300)
def test_share_state_of_a_topic_deleted_under_a_dead_coordinator_goes(spate_factory, members,
                                                                      java_share):
    """The share state of a topic deleted while its group's coordinator could not write the
    state's tombstones (stopped with SIGSTOP, then killed): the survivor that comes to lead
    the group's partition replays the state and drops that of the topic its catalog no longer
    has, as a single node does at start. Before, it kept it: a topic created again under the
    same name started its share partitions where the deleted one's were, and its first
    records were never delivered."""
    from confluent_kafka.admin import NewTopic

    nodes, by_id = replicated_cluster(spate_factory, *SHARE_OPTIONS, session_timeout_ms=15000)
    topic, group = "doomed", f"sg-{uuid.uuid4().hex[:8]}"
    partitions = [0, 1]
    create_replicated(nodes[0], topic, 2)
    wait_for("every replica in sync", lambda: all_in_sync(nodes, topic, 2))
    owner_id = wait_for("a coordinator all three agree on", lambda: coordinator(nodes, group))
    brokers = Bootstrap(nodes)
    read_from_earliest(brokers, group)
    first, errors = produce(nodes, topic, partitions, 10, "old")
    assert errors == [], errors
    member = members(brokers, group, topic)
    wait_for("every record acknowledged",
             lambda: confirmed(member) >= {v for p in partitions for v in first[p]},
             timeout=TIMEOUT_S)
    wait_for("each share partition's start at its end",
             lambda: starts(java_share, brokers, group) == {0: 10, 1: 10}, timeout=TIMEOUT_S)
    member.kill()

    # The coordinator stops (it writes nothing more) and the topic is deleted meanwhile,
    # before the controller fences it and the group's partition gets a new leader.
    victim = by_id[owner_id]
    survivors = [node for node in nodes if node is not victim]
    os.kill(victim.broker.pid, signal.SIGSTOP)
    try:
        client = admin(survivors[0])
        client.delete_topics([topic], operation_timeout=30)[topic].result(timeout=45)
    finally:
        victim.broker.kill9()
    wait_for("a new coordinator", lambda: coordinator(survivors, group) not in
             (None, victim.node_id) and coordinator(survivors, group), timeout=60)

    # The same name again, a new topic: its records from offset 0 are the group's to read.
    created = client.create_topics([NewTopic(topic, 2, 2)], operation_timeout=30,
                                   request_timeout=40)
    created[topic].result(timeout=45)
    wait_for("the new topic on the survivors",
             lambda: all_in_sync(survivors, topic, 2, replicas=2), timeout=60)
    again, errors = produce(survivors, topic, partitions, 10, "new")
    assert errors == [], errors
    values = {v for p in partitions for v in again[p]}
    reader = members(Bootstrap(survivors), group, topic)
    wait_for("every record of the new topic delivered",
             lambda: {v for v, *_ in delivered([reader])} >= values, timeout=TIMEOUT_S)


def assigned(java_share, brokers, group):
    """Each member's assigned partitions as the Admin client describes the group."""
    described = share_admin(java_share, brokers, group)[1] or {}
    return sorted(sorted(partitions) for _, partitions in described.get("members") or [])


def leaders_alive(nodes, topic, dead):
    states = partition_states(nodes, topic)
    return bool(states) and all(s[0] == 0 and s[1] not in (-1, dead) for s in states.values())



@pytest.mark.timeout(300)
def test_dead_letters_cross_the_cluster(spate_factory, java_share, tmp_path):
    """A group with a dead-letter topic (`errors.deadletterqueue.topic.name`, records
    copied): its coordinator reads each rejected record from the partition's leader and
    writes its dead letter to the dead-letter partition's leader, both other nodes for most
    partitions (three partitions each, led by the three nodes), with Kafka's context headers,
    each once."""
    from confluent_kafka.admin import ResourceType
    from client_helpers import ck_consume, ck_watermarks
    from test_share_groups import alter_configs

    nodes, _ = replicated_cluster(spate_factory, *SHARE_OPTIONS)
    topic, dlq, group = "work", "dlq.work", f"sg-{uuid.uuid4().hex[:8]}"
    partitions = [0, 1, 2]
    create_replicated(nodes[0], topic, 3, min_insync=2)
    from confluent_kafka.admin import NewTopic
    config = {"min.insync.replicas": "2", "errors.deadletterqueue.group.enable": "true"}
    client = admin(nodes[0])
    created = client.create_topics([NewTopic(dlq, 3, 3, config=config)],
                                   operation_timeout=30, request_timeout=40)
    created[dlq].result(timeout=45)
    for name in (topic, dlq):
        wait_for(f"every replica of {name} in sync", lambda: all_in_sync(nodes, name, 3))
    brokers = Bootstrap(nodes)
    read_from_earliest(brokers, group)
    assert alter_configs(brokers, ResourceType.GROUP, group, {
        "errors.deadletterqueue.topic.name": dlq,
        "errors.deadletterqueue.copy.record.enable": "true"}) is None
    sent, errors = produce(nodes, topic, partitions, 5, "bad")
    assert errors == [], errors
    rejecter = ShareMember(java_share, brokers, group, topic, "reject", tmp_path)
    try:
        wanted = {v for p in partitions for v in sent[p]}
        wait_for("the rejections acknowledged", lambda: confirmed(rejecter) >= wanted,
                 timeout=TIMEOUT_S)
        for p in partitions:
            # A dead letter goes to the dead-letter topic's partition of the same number.
            def written(p=p):
                assert ck_watermarks(brokers.bootstrap, dlq, p)[1] >= 5
                return ck_consume(brokers.bootstrap, dlq, p, 0, 5)
            letters = wait_for(f"the dead letters of partition {p}", written, timeout=60)
            assert [r.value.decode() for r in letters] == sent[p]
            for offset, letter in enumerate(letters):
                headers = {k: v.decode() for k, v in letter.headers}
                assert headers == {
                    "__dlq.errors.topic": topic, "__dlq.errors.partition": str(p),
                    "__dlq.errors.offset": str(offset), "__dlq.errors.group": group,
                    "__dlq.errors.delivery.count": "1",
                    "__dlq.errors.message": "Offset rejected by client."}, headers
        wait_for("the share partitions to start after the dead letters",
                 lambda: starts(java_share, brokers, group) == {p: 5 for p in partitions},
                 timeout=TIMEOUT_S)
        # Each once: nothing after the five letters of each partition.
        assert [ck_watermarks(brokers.bootstrap, dlq, p) for p in partitions] == [(0, 5)] * 3
    finally:
        rejecter.kill()


# --- the share call between brokers (Spate's private request 32000) --------------------------

SHARE_CALL = 32000
CLUSTER_AUTHORIZATION_FAILED = 31


def share_plan_call(version=0, kind=1):
    """A share call asking where member "m" of group "g" reads on node 1 (kind 1: plan)."""
    body = bytes([kind])
    for text in (b"g", b"m"):
        body += struct.pack(">I", len(text)) + text
    body += struct.pack(">i", 1)
    return wire.frame(wire.request_header(SHARE_CALL, version, 7) + body)


def share_wake_call(topic=b"t", partition=0):
    """A coordinator's wake of the fetches waiting on one partition (kind 4, version 1)."""
    body = bytes([4]) + struct.pack(">I", 1)
    body += struct.pack(">I", len(topic)) + topic + struct.pack(">i", partition)
    return wire.frame(wire.request_header(SHARE_CALL, 1, 7) + body)


def quorum_of_one(spate_factory, *extra):
    port = free_port()
    return spate_factory("--node-id", "1", "--controller-listen", f"127.0.0.1:{port}",
                         "--controller-quorum-voters", f"1@127.0.0.1:{port}", *extra)


def test_the_share_call_between_brokers_is_checked(spate_factory):
    """A clustered node answers a well-formed share call (here: a plan for a session it does
    not have, so nothing to read) with its correlation id, NONE and the encoded answer, and
    keeps the connection, and so a coordinator's wake (version 1); a call it cannot decode,
    or of a version it does not know, closes the connection, as a broken Kafka request does;
    a single node takes none. With the authorizer on, a client that is not a broker gets
    CLUSTER_AUTHORIZATION_FAILED."""
    node = quorum_of_one(spate_factory)
    sock = wire.connect(node.port)
    try:
        for _ in range(2):  # answered, and the connection still serves
            sock.sendall(share_plan_call())
            correlation_id, rest = wire.read_response(sock)
            assert correlation_id == 7
            # Error NONE, then ShareAnswer::Plan (tag 1) with no partition (count 0).
            assert rest == struct.pack(">hBI", 0, 1, 0), rest
        # A wake (version 1): NONE, then ShareAnswer::Woken (tag 5), on the same connection.
        sock.sendall(share_wake_call())
        correlation_id, rest = wire.read_response(sock)
        assert (correlation_id, rest) == (7, struct.pack(">hB", 0, 5))
    finally:
        sock.close()
    for broken in (share_plan_call(kind=9), share_plan_call(version=2),
                   share_plan_call(version=-1), share_plan_call()[:-2], share_wake_call()[:-1]):
        sock = wire.connect(node.port)
        try:
            body = broken[4:]
            sock.sendall(struct.pack(">i", len(body)) + body)
            assert wire.closed_by_peer(sock), broken
        finally:
            sock.close()

    single = spate_factory()
    sock = wire.connect(single.port)
    try:
        sock.sendall(share_plan_call())
        assert wire.closed_by_peer(sock)
    finally:
        sock.close()

    secured = quorum_of_one(spate_factory, "--authorizer", "acl", "--super-users", "User:admin")
    sock = wire.connect(secured.port)
    try:
        sock.sendall(share_plan_call())
        correlation_id, rest = wire.read_response(sock)
        assert (correlation_id, rest) == (7, struct.pack(">h", CLUSTER_AUTHORIZATION_FAILED))
    finally:
        sock.close()
