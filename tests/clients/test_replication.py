"""Replication (issue 14) on three real `spate` processes on 127.0.0.1.

A topic of replication factor 3 has every replica in sync; an idempotent acks=all producer's
records are on all three replicas byte for byte when acknowledged (the segment files are
compared); kill -9 of a partition's leader moves leadership to an in-sync replica and a
consumer reads every acknowledged record exactly once, in order; the killed broker comes
back as a follower, catches up, its leader adds it to the ISR again, and the controller
makes it the leader of the partitions it prefers again (auto leader rebalance). With
min.insync.replicas=3 a killed follower leaves the ISR and acks=all writes get
NOT_ENOUGH_REPLICAS (acks=1 still writes), until it is back. A leader that wrote records no
follower has (they were stopped with SIGSTOP) and was killed truncates them when it comes
back (the new leader's diverging epoch, KIP-279), so all replicas are identical again. A
leader killed before its own write of batches its followers already had, and back in the
same epoch before the controller moved it (SPATE_TEST_HOLD_WRITES holds its writes), makes a
follower that fetches only after new records took those offsets truncate them. A
follower that stops fetching for longer than the lag time is dropped from the ISR by its
leader and added back once it caught up; a rolling restart of all three under an idempotent
acks=all producer loses nothing. A transaction over partitions that all three nodes lead
ends in every one of them: the coordinator sends the markers of partitions other nodes lead
as WriteTxnMarkers, each written by the partition's leader and replicated before it counts,
so read_committed consumers see exactly the committed records and all replicas agree; a
commit while one of those leaders is dead completes at the partition's next leader. An ISR
shrink and expand leave the leader epoch (KIP-497: only the partition epoch moves), so a
consumer's fetch in it is not fenced; with one of three brokers dead the metadata log stays
still (no ISR change asked again and again); a replica that does not lead names the leader,
its epoch and endpoint in its Produce v10 and Fetch v16 answers (KIP-951). Every wait is
bounded.
"""

import os
import re
import signal
import time
import uuid

import pytest

from conftest import TARGET
from kafka_wire import (connect, fetch_v16, fetch_v16_result, produce_v3, produce_v3_result,
                        produce_v10, produce_v10_result, read_response, record_batch,
                        write_txn_markers_v1, write_txn_markers_v1_result)
from test_cluster import (HEARTBEAT_INTERVAL_MS, SESSION_TIMEOUT_MS, admin, agreed_leader,
                          describe_quorum, find_coordinator_v1, metadata_v7, read_from_start,
                          start_cluster, wait_for)

pytestmark = pytest.mark.skipif(TARGET != "spate", reason="spate's cluster options")

NOT_LEADER_OR_FOLLOWER = 6
NOT_ENOUGH_REPLICAS = 19


def replicated_cluster(spate_factory, *extra, session_timeout_ms=SESSION_TIMEOUT_MS):
    nodes = start_cluster(spate_factory,
                          "--broker-heartbeat-interval-ms", str(HEARTBEAT_INTERVAL_MS),
                          "--broker-session-timeout-ms", str(session_timeout_ms), *extra)
    wait_for("a leader all three agree on", lambda: agreed_leader(nodes))
    return nodes, {node.node_id: node for node in nodes}


def create_replicated(node, name, partitions, min_insync=1):
    """A topic of replication factor 3 through `node` with confluent-kafka."""
    from confluent_kafka.admin import NewTopic
    client = admin(node)
    config = {"min.insync.replicas": str(min_insync)}
    futures = client.create_topics([NewTopic(name, partitions, 3, config=config)],
                                   operation_timeout=30, request_timeout=40)
    futures[name].result(timeout=45)


def partition_states(nodes, topic):
    """{partition: (error, leader, epoch, replicas, isr, offline)} when every node in
    `nodes` answers Metadata v7 alike for `topic`; None otherwise."""
    answers = []
    for node in nodes:
        _, found = metadata_v7(node.broker.port, [topic.encode()])
        if topic not in found:
            return None
        answers.append(found[topic])
    return answers[0] if all(a == answers[0] for a in answers) else None


def all_in_sync(nodes, topic, partitions, replicas=3):
    states = partition_states(nodes, topic)
    if not states or len(states) != partitions:
        return None
    ok = all(s[0] == 0 and len(s[3]) == replicas and sorted(s[4]) == sorted(s[3])
             for s in states.values())
    return states if ok else None


def isr_size(nodes, topic, size):
    states = partition_states(nodes, topic)
    return states is not None and len(states[0][4]) == size


def recording_producer(nodes, partitions, linger_ms=5, timeout_ms=30000):
    """An idempotent acks=all producer through the live `nodes`, and its delivery callback,
    which records the values acknowledged per partition and the errors."""
    from confluent_kafka import Producer
    bootstrap = ",".join(node.broker.bootstrap for node in nodes if node.broker.alive())
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                         "enable.idempotence": True, "linger.ms": linger_ms,
                         "message.timeout.ms": timeout_ms})
    acknowledged = {p: [] for p in partitions}
    errors = []

    def delivered(err, msg):
        if err:
            errors.append(err)
        else:
            acknowledged[msg.partition()].append(msg.value().decode())

    return producer, delivered, acknowledged, errors


def produce(nodes, topic, partitions, count, tag):
    """An acks=all producer writes `count` records to each partition; returns the values
    acknowledged per partition (and the delivery errors)."""
    producer, delivered, acknowledged, errors = recording_producer(nodes, partitions)
    for i in range(count):
        for partition in partitions:
            producer.produce(topic, f"{tag}-{partition}-{i}".encode(), partition=partition,
                             on_delivery=delivered)
        producer.poll(0)
    assert producer.flush(45) == 0
    return acknowledged, errors


def log_bytes(node, topic, partition):
    """The record bytes of a replica: its segment files in order, without the zeros that
    preallocation left after the data."""
    directory = node.broker.partition_dir(topic, partition)
    data = b""
    for name in sorted(os.listdir(directory)):
        if name.endswith(".log"):
            data += (directory / name).read_bytes().rstrip(b"\0")
    return data


def replicas_identical(nodes, topic, partitions):
    for partition in partitions:
        copies = {node.node_id: log_bytes(node, topic, partition) for node in nodes}
        sizes = {node_id: len(data) for node_id, data in copies.items()}
        if len(set(copies.values())) != 1 or not any(sizes.values()):
            return None
    return True


def test_acknowledged_records_survive_the_kill_of_their_leader(spate_factory):
    nodes, by_id = replicated_cluster(spate_factory, "--replica-lag-time-max-ms", "4000",
                                      "--leader-imbalance-check-interval-ms", "1000")
    create_replicated(nodes[0], "rep", 3, min_insync=2)
    states = wait_for("every replica in sync", lambda: all_in_sync(nodes, "rep", 3))
    assert {s[1] for s in states.values()} == {1, 2, 3}, states  # leaders spread
    partitions = [0, 1, 2]
    first, errors = produce(nodes, "rep", partitions, 200, "before")
    assert errors == [] and all(len(v) == 200 for v in first.values()), errors
    # Acknowledged under acks=all: on every replica, byte for byte.
    assert replicas_identical(nodes, "rep", partitions), "replicas differ after acks=all"
    # DeleteRecords on the leader: its followers' log starts follow.
    from confluent_kafka import TopicPartition
    client = admin(nodes[0])
    deleted = client.delete_records([TopicPartition("rep", 0, 50)], request_timeout=15)
    assert list(deleted.values())[0].result(timeout=20).low_watermark == 50

    def log_starts():
        starts = [node.broker.partition_dir("rep", 0) / "log-start-offset" for node in nodes]
        return all(p.exists() and p.read_text().strip() == "50" for p in starts)

    wait_for("every replica's log start at 50", log_starts)

    victim = by_id[states[0][1]]
    victim.broker.kill9()
    killed_at = time.monotonic()
    survivors = [node for node in nodes if node is not victim]

    def moved():
        s = partition_states(survivors, "rep")
        assert s and s[0][0] == 0 and s[0][1] not in (-1, victim.node_id), s
        return s

    states = wait_for("a new leader of partition 0", moved)
    failover_s = time.monotonic() - killed_at
    assert victim.node_id not in states[0][4], states  # it left the ISR
    assert states[0][1] in states[0][3]
    second, errors = produce(survivors, "rep", partitions, 100, "after")
    assert errors == [], errors
    wanted = {p: first[p] + second[p] for p in partitions}
    wanted[0] = wanted[0][50:]  # deleted on the old leader: gone on the new one too
    read = read_from_start(survivors, "rep", {p: len(wanted[p]) for p in partitions})
    assert read == wanted  # every acknowledged record, once, in order

    # Back as a follower: it catches up, and its leader adds it to the ISR again.
    victim.broker.start()
    wait_for("the ISR whole again", lambda: all_in_sync(nodes, "rep", 3), timeout=30)
    assert replicas_identical(nodes, "rep", partitions), "the returned replica differs"

    # In sync again, it leads what it was placed to lead (preferred leader election).
    def preferred_leaders():
        s = partition_states(nodes, "rep")
        return s if s and all(p[1] == p[3][0] for p in s.values()) else None

    back = wait_for("the preferred replicas leading again", preferred_leaders, timeout=20)
    assert back[0][1] == victim.node_id, back
    print(f"leader of partition 0 replaced {failover_s:.2f} s after kill -9 (poll 0.1 s)")


def test_min_insync_replicas_refuses_acks_all_without_enough_replicas(spate_factory):
    nodes, by_id = replicated_cluster(spate_factory)
    create_replicated(nodes[0], "strict", 1, min_insync=3)
    states = wait_for("every replica in sync", lambda: all_in_sync(nodes, "strict", 1))
    leader = by_id[states[0][1]]
    follower = next(node for node in nodes if node is not leader)

    def write(acks, correlation_id):
        with connect(leader.broker.port, timeout=15) as sock:
            # Stamped now: record_batch's default 2023 stamp is past retention.ms, and the
            # leader's retention would delete the records under the comparison below.
            now = int(time.time() * 1000)
            batch = record_batch([f"r{correlation_id}".encode()], timestamp=now)
            sock.sendall(produce_v3(b"strict", 0, batch, correlation_id, acks=acks))
            return produce_v3_result(read_response(sock)[1])

    assert write(-1, 1)[0] == 0
    follower.broker.kill9()
    others = [node for node in nodes if node is not follower]
    wait_for("the ISR shrunk to two", lambda: isr_size(others, "strict", 2))
    error, _ = write(-1, 2)
    assert error == NOT_ENOUGH_REPLICAS, error
    assert write(1, 3)[0] == 0  # acks=1 does not need the ISR
    follower.broker.start()
    wait_for("the ISR whole again", lambda: all_in_sync(nodes, "strict", 1), timeout=30)
    assert write(-1, 4)[0] == 0
    assert replicas_identical(nodes, "strict", [0])


def test_a_returning_leader_truncates_what_only_it_had(spate_factory):
    # Sessions longer than the followers' stop below: stopped brokers fenced by an active
    # controller that was stopped with them would leave the old leader alone in the ISR,
    # and it would lead again (no unclean election), which this test is not about.
    nodes, by_id = replicated_cluster(spate_factory, session_timeout_ms=9000)
    create_replicated(nodes[0], "diverge", 1)
    states = wait_for("every replica in sync", lambda: all_in_sync(nodes, "diverge", 1))
    old_leader = by_id[states[0][1]]
    followers = [node for node in nodes if node is not old_leader]
    acknowledged, errors = produce(nodes, "diverge", [0], 50, "shared")
    assert errors == []
    # The followers stop; the leader takes acks=1 writes only it will have.
    for node in followers:
        os.kill(node.broker.pid, signal.SIGSTOP)
    # A follower fetch waiting at the leader answers (empty) within its 500 ms wait: the
    # stopped followers cannot ask again.
    time.sleep(1.5)
    try:
        with connect(old_leader.broker.port, timeout=15) as sock:
            for i in range(5):
                batch = record_batch([f"orphan-{i}".encode()])
                sock.sendall(produce_v3(b"diverge", 0, batch, 100 + i, acks=1))
                assert produce_v3_result(read_response(sock)[1])[0] == 0
        orphaned = log_bytes(old_leader, "diverge", 0)
    finally:
        old_leader.broker.kill9()
        for node in followers:
            os.kill(node.broker.pid, signal.SIGCONT)

    def new_leader():
        s = partition_states(followers, "diverge")
        return s if s and s[0][0] == 0 and s[0][1] not in (-1, old_leader.node_id) else None

    wait_for("a new leader among the followers", new_leader, timeout=45)
    later, errors = produce(followers, "diverge", [0], 20, "later")
    assert errors == []
    old_leader.broker.start()
    wait_for("the ISR whole again", lambda: all_in_sync(nodes, "diverge", 1), timeout=30)
    assert replicas_identical(nodes, "diverge", [0]), "the returned leader kept its orphans"
    assert b"orphan" in orphaned and b"orphan" not in log_bytes(old_leader, "diverge", 0)
    assert "log diverged" in old_leader.broker.log_text()
    read = read_from_start(nodes, "diverge", {0: 70})
    assert read[0] == acknowledged[0] + later[0]


def test_a_leader_back_in_its_own_epoch_makes_followers_drop_what_it_never_wrote(
        spate_factory, tmp_path):
    # Followers read a leader's batches before its own write lands (log::read_for_follower).
    # A leader killed before its write, and back before the controller moved its partitions,
    # leads in the same epoch again without those batches and gives their offsets to new
    # records. A follower that fetches only once the leader's log is past what it holds
    # cannot tell from epochs that its batches there differ: the leader must tell it
    # (partition::replicas::Followers::resumed). SPATE_TEST_HOLD_WRITES holds a node's
    # writes while its file exists, which makes the slow write certain.
    holds = {node_id: tmp_path / f"hold-{node_id}" for node_id in (1, 2, 3)}
    nodes = start_cluster(spate_factory,
                          "--broker-heartbeat-interval-ms", str(HEARTBEAT_INTERVAL_MS),
                          "--broker-session-timeout-ms", "20000", start=False)
    for node in nodes:
        hold = str(holds[node.node_id])
        node.broker.preexec = lambda hold=hold: os.putenv("SPATE_TEST_HOLD_WRITES", hold)
        node.broker.start()
    controller_id, _, _ = wait_for("a leader all three agree on", lambda: agreed_leader(nodes))
    # The partition's leader is not the controller (whose restart would elect another one
    # and move the partition's epoch), nor is the follower that comes late.
    controller = next(node for node in nodes if node.node_id == controller_id)
    leader, late = [node for node in nodes if node is not controller]
    from confluent_kafka.admin import NewTopic
    client = admin(controller)
    assignment = [[leader.node_id, late.node_id, controller.node_id]]
    futures = client.create_topics([NewTopic("resumed", 1, replica_assignment=assignment)],
                                   operation_timeout=30, request_timeout=40)
    futures["resumed"].result(timeout=45)
    states = wait_for("every replica in sync", lambda: all_in_sync(nodes, "resumed", 1))
    assert states[0][1] == leader.node_id
    epoch = states[0][2]
    acknowledged, errors = produce(nodes, "resumed", [0], 50, "shared")
    assert errors == []

    # The leader writes nothing from here on; acks=0 batches reach its followers all the same.
    holds[leader.node_id].touch()
    with connect(leader.broker.port, timeout=15) as sock:
        for i in range(5):
            sock.sendall(produce_v3(b"resumed", 0, record_batch([f"ghost-{i}".encode()]),
                                    200 + i, acks=0))
        wait_for("the followers holding what the leader never wrote",
                 lambda: all(b"ghost-4" in log_bytes(node, "resumed", 0)
                             for node in (late, controller)))
    assert b"ghost" not in log_bytes(leader, "resumed", 0)
    os.kill(late.broker.pid, signal.SIGSTOP)
    try:
        leader.broker.kill9()
        holds[leader.node_id].unlink()
        leader.broker.start()
        states = wait_for("the leader back in its epoch",
                          lambda: (s := partition_states([leader, controller], "resumed"))
                          and s[0][0] == 0 and s[0][1] == leader.node_id and s)
        assert states[0][2] == epoch, "the controller moved the epoch: not the case under test"
        # Written (acks=1) past the late follower's end before it fetches again.
        later = []
        with connect(leader.broker.port, timeout=15) as sock:
            for i in range(20):
                batch = record_batch([f"later-{i}".encode()])
                sock.sendall(produce_v3(b"resumed", 0, batch, 300 + i, acks=1))
                assert produce_v3_result(read_response(sock)[1])[0] == 0
                later.append(f"later-{i}")
    finally:
        os.kill(late.broker.pid, signal.SIGCONT)

    wait_for("the ISR whole again", lambda: all_in_sync(nodes, "resumed", 1), timeout=30)
    wait_for("all replicas identical", lambda: replicas_identical(nodes, "resumed", [0]),
             timeout=30)
    for node in nodes:
        assert b"ghost" not in log_bytes(node, "resumed", 0), f"node {node.node_id} kept them"
    assert "a follower holds batches this leader never wrote" in leader.broker.log_text()
    read = read_from_start(nodes, "resumed", {0: 70})
    assert read[0] == acknowledged[0] + later


def test_a_lagging_follower_leaves_the_isr_and_comes_back(spate_factory):
    # Sessions far longer than the lag time: the follower leaves the ISR because its leader
    # asks (it stopped fetching), not because the controller fenced it.
    nodes, by_id = replicated_cluster(spate_factory, "--replica-lag-time-max-ms", "1500",
                                      session_timeout_ms=30000)
    create_replicated(nodes[0], "lag", 1)
    states = wait_for("every replica in sync", lambda: all_in_sync(nodes, "lag", 1))
    leader = by_id[states[0][1]]
    laggard = next(node for node in nodes if node is not leader)
    others = [node for node in nodes if node is not laggard]
    os.kill(laggard.broker.pid, signal.SIGSTOP)
    try:
        acknowledged, errors = produce(others, "lag", [0], 20, "meanwhile")
        assert errors == []  # acks=all goes on once the leader dropped the laggard
        shrunk = wait_for("the laggard out of the ISR", lambda: isr_size(others, "lag", 2))
        assert shrunk
        assert laggard.node_id not in partition_states(others, "lag")[0][4]
    finally:
        os.kill(laggard.broker.pid, signal.SIGCONT)
    wait_for("the ISR whole again", lambda: all_in_sync(nodes, "lag", 1), timeout=30)
    assert replicas_identical(nodes, "lag", [0])
    assert isr_asks(leader) >= 1


FENCED_LEADER_EPOCH = 74
UNKNOWN_LEADER_EPOCH = 75


def test_an_isr_change_leaves_the_leader_epoch(spate_factory):
    """KIP-497: a follower stopped (SIGSTOP) past the lag time leaves the ISR and comes back,
    and the leader epoch stays what it was in every node's Metadata; a consumer's Fetch in
    that epoch is answered by the leader (not FENCED_LEADER_EPOCH) after the shrink and
    after the expand. Before, each ISR change moved the leader epoch and fenced clients.
    A new leader (the old one's controlled shutdown) is one epoch higher and fences it."""
    from test_follower_fetching import fetch_v11
    nodes, by_id = replicated_cluster(spate_factory, "--replica-lag-time-max-ms", "1500",
                                      session_timeout_ms=30000)
    create_replicated(nodes[0], "epochs", 1)
    states = wait_for("every replica in sync", lambda: all_in_sync(nodes, "epochs", 1))
    leader, epoch = by_id[states[0][1]], states[0][2]
    laggard = next(node for node in nodes if node is not leader)
    others = [node for node in nodes if node is not laggard]
    first, errors = produce(nodes, "epochs", [0], 10, "before")
    assert errors == []
    os.kill(laggard.broker.pid, signal.SIGSTOP)
    try:
        acknowledged, errors = produce(others, "epochs", [0], 10, "meanwhile")
        assert errors == []
        wait_for("the laggard out of the ISR", lambda: isr_size(others, "epochs", 2))
        shrunk = partition_states(others, "epochs")[0]
        assert (shrunk[1], shrunk[2]) == (leader.node_id, epoch), shrunk
        error, high_watermark, _, records = fetch_v11(leader.broker.port, "epochs", 0, "", epoch)
        assert (error, high_watermark) == (0, 20) and records
    finally:
        os.kill(laggard.broker.pid, signal.SIGCONT)
    grown = wait_for("the ISR whole again", lambda: all_in_sync(nodes, "epochs", 1), timeout=30)
    assert (grown[0][1], grown[0][2]) == (leader.node_id, epoch), grown
    assert fetch_v11(leader.broker.port, "epochs", 0, "", epoch)[0] == 0
    # The epoch check itself still holds: a newer one is unknown to the leader.
    assert fetch_v11(leader.broker.port, "epochs", 0, "", epoch + 1)[0] == UNKNOWN_LEADER_EPOCH
    asks = isr_asks(leader)
    assert asks >= 2, asks  # the shrink and the expand, both the leader's
    # A new leader is a new leader epoch: the old one is fenced there (a controlled
    # shutdown moves the leadership at once).
    assert leader.broker.stop() == 0, leader.broker.log_tail()
    survivors = [node for node in nodes if node is not leader]

    def new_leader():
        s = partition_states(survivors, "epochs")
        return s if s and s[0][1] not in (-1, leader.node_id) else None

    moved = wait_for("a new leader", new_leader)[0]
    assert moved[2] == epoch + 1, moved
    port = by_id[moved[1]].broker.port
    assert fetch_v11(port, "epochs", 0, "", epoch)[0] == FENCED_LEADER_EPOCH
    assert fetch_v11(port, "epochs", 0, "", epoch + 1)[0] == 0


def produce_v10_to(node, topic, correlation_id):
    """One record by Produce v10 to `node`: (error, base offset, current leader, endpoints)."""
    batch = record_batch([b"kip-951"], timestamp=int(time.time() * 1000))
    with connect(node.broker.port, timeout=15) as sock:
        sock.sendall(produce_v10(topic.encode(), 0, batch, correlation_id))
        return produce_v10_result(read_response(sock)[1])


def test_not_leader_answers_name_the_current_leader(spate_factory):
    """KIP-951: Produce v10 to a replica that does not lead is NOT_LEADER_OR_FOLLOWER with the
    partition's leader and leader epoch and the leader's endpoint, so a client goes there
    without a Metadata request; the leader answers without them; after the leader's
    controlled shutdown the answer names the new leader in the next epoch, and a Fetch v16
    in the old epoch is FENCED_LEADER_EPOCH naming it too."""
    nodes, by_id = replicated_cluster(spate_factory)
    create_replicated(nodes[0], "kip951", 1)
    states = wait_for("every replica in sync", lambda: all_in_sync(nodes, "kip951", 1))
    leader, epoch = by_id[states[0][1]], states[0][2]

    def endpoint(node):
        host, port = node.broker.bootstrap.rsplit(":", 1)
        return {node.node_id: (host, int(port), None)}

    followers = [node for node in nodes if node is not leader]
    for i, follower in enumerate(followers):
        answer = produce_v10_to(follower, "kip951", 10 + i)
        assert answer[0] == NOT_LEADER_OR_FOLLOWER, answer
        assert answer[2:] == ((leader.node_id, epoch), endpoint(leader)), answer
    error, base_offset, current, endpoints = produce_v10_to(leader, "kip951", 20)
    assert (error, base_offset, current, endpoints) == (0, 0, None, {})
    assert leader.broker.stop() == 0, leader.broker.log_tail()

    def new_leader():
        s = partition_states(followers, "kip951")
        return s if s and s[0][1] not in (-1, leader.node_id) else None

    moved = wait_for("a new leader", new_leader)[0]
    successor = by_id[moved[1]]
    other = next(node for node in followers if node is not successor)
    answer = produce_v10_to(other, "kip951", 30)
    assert answer[0] == NOT_LEADER_OR_FOLLOWER, answer
    assert answer[2:] == ((successor.node_id, epoch + 1), endpoint(successor)), answer
    from kafka.admin import KafkaAdminClient
    client = KafkaAdminClient(bootstrap_servers=other.broker.bootstrap, request_timeout_ms=20000)
    try:
        topic_id = client.describe_topic_partitions(["kip951"])["topics"][0]["topic_id"]
    finally:
        client.close()
    topic_id = topic_id.bytes if hasattr(topic_id, "bytes") else uuid.UUID(str(topic_id)).bytes
    for node in (successor, other):
        with connect(node.broker.port, timeout=15) as sock:
            sock.sendall(fetch_v16(topic_id, 0, 0, 40, current_leader_epoch=epoch))
            answer = fetch_v16_result(read_response(sock)[1])
        assert answer == (FENCED_LEADER_EPOCH, (successor.node_id, epoch + 1),
                          endpoint(successor)), answer
        with connect(node.broker.port, timeout=15) as sock:
            sock.sendall(fetch_v16(topic_id, 0, 0, 41, current_leader_epoch=epoch + 1))
            assert fetch_v16_result(read_response(sock)[1]) == (0, None, {})


def isr_asks(node):
    """How many ISR changes `node`'s leaders asked the controller for (its log: a line a
    round, with the count)."""
    rounds = re.findall(r"asking the controller for (\d+) ISR changes", node.broker.log_text())
    return sum(int(count) for count in rounds)


def test_a_dead_broker_does_not_churn_the_metadata_log(spate_factory):
    """kill -9 of one of three: once it is fenced and out of every ISR, the survivors ask
    the controller for nothing more and the metadata log stays still (its end offset, the
    high watermark of DescribeQuorum, over 10 s). Before, every leader asked every 500 ms
    to take the dead follower back (it had every record), each ask a record the controller
    refused: hundreds of records a second with the 100 internal partitions."""
    nodes, by_id = replicated_cluster(spate_factory)
    create_replicated(nodes[0], "quiet", 6)
    wait_for("every replica in sync", lambda: all_in_sync(nodes, "quiet", 6))
    acknowledged, errors = produce(nodes, "quiet", range(6), 20, "before")
    assert errors == []
    controller, _, _ = agreed_leader(nodes)
    victim = next(node for node in nodes if node.node_id != controller)
    survivors = [node for node in nodes if node is not victim]
    victim.broker.kill9()

    def shrunk():
        states = partition_states(survivors, "quiet")
        return states and all(s[0] == 0 and s[1] != victim.node_id and victim.node_id not in s[4]
                              for s in states.values())

    wait_for("the victim out of every ISR", shrunk)
    time.sleep(3)  # the fencing's changes of every partition (the internal ones too) commit
    port = survivors[0].broker.port
    asks_before = sum(isr_asks(node) for node in survivors)
    start = describe_quorum(port)[2]
    time.sleep(10)
    end = describe_quorum(port)[2]
    asks = sum(isr_asks(node) for node in survivors) - asks_before
    print(f"metadata log: {end - start} records in 10 s, {asks} ISR changes asked")
    assert end - start <= 10, (end - start, asks)
    assert asks <= 10, asks
    # Still serving: more acks=all records on the survivors.
    later, errors = produce(survivors, "quiet", range(6), 10, "after")
    assert errors == [] and all(len(v) == 10 for v in later.values()), errors


def test_a_rolling_restart_under_load_loses_nothing(spate_factory):
    nodes, by_id = replicated_cluster(spate_factory)
    create_replicated(nodes[0], "rolling", 3, min_insync=2)
    wait_for("every replica in sync", lambda: all_in_sync(nodes, "rolling", 3))
    producer, delivered, acknowledged, errors = recording_producer(
        nodes, range(3), linger_ms=2, timeout_ms=60000)
    sequence = 0

    def produce_for(seconds):
        nonlocal sequence
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for partition in range(3):
                producer.produce("rolling", f"{partition}-{sequence}".encode(),
                                 partition=partition, on_delivery=delivered)
            sequence += 1
            producer.poll(0.005)

    produce_for(1)
    for node in nodes:  # SIGTERM (a controlled shutdown) and back, one after the other
        node.broker.proc.send_signal(signal.SIGTERM)
        while node.broker.alive():
            produce_for(0.1)
        produce_for(1)
        node.broker.start()
        deadline = time.monotonic() + 30
        while not all_in_sync(nodes, "rolling", 3):
            assert time.monotonic() < deadline, "the ISR not whole again within 30 s"
            produce_for(0.2)
    produce_for(1)
    assert producer.flush(60) == 0
    assert errors == [], errors
    read = read_from_start(nodes, "rolling", {p: len(acknowledged[p]) for p in range(3)})
    assert read == acknowledged  # every acknowledged record once, in order


def test_a_transaction_ends_in_partitions_that_other_nodes_lead(spate_factory):
    from confluent_kafka import Consumer, Producer, TopicPartition
    nodes, by_id = replicated_cluster(spate_factory)
    create_replicated(nodes[0], "spread", 3, min_insync=2)
    states = wait_for("every replica in sync", lambda: all_in_sync(nodes, "spread", 3))
    assert {s[1] for s in states.values()} == {1, 2, 3}, states  # each node leads one
    bootstrap = ",".join(node.broker.bootstrap for node in nodes)
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": "spread-txn",
                         "transaction.timeout.ms": 60000, "linger.ms": 5})
    producer.init_transactions(30)
    committed = {p: [] for p in range(3)}
    for round_, (count, commit) in enumerate([(10, True), (5, False), (3, True)]):
        producer.begin_transaction()
        for i in range(count):
            for partition in range(3):
                value = f"r{round_}-{partition}-{i}"
                producer.produce("spread", value.encode(), partition=partition)
                if commit:
                    committed[partition].append(value)
        if commit:
            producer.commit_transaction(30)
        else:
            producer.flush(30)
            producer.abort_transaction(30)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused",
                         "enable.auto.commit": False, "isolation.level": "read_committed"})
    consumer.assign([TopicPartition("spread", p, 0) for p in range(3)])
    read = {p: [] for p in range(3)}
    deadline = time.monotonic() + 30
    while sum(map(len, read.values())) < 39 and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and not message.error():
            read[message.partition()].append(message.value().decode())
    # The last stable offset of every partition is its end: no transaction left open.
    ends = [consumer.get_watermark_offsets(TopicPartition("spread", p), timeout=10)
            for p in range(3)]
    consumer.close()
    assert read == committed, read
    # 18 data records and 3 markers per partition.
    assert [high for _, high in ends] == [21, 21, 21], ends
    # WriteTxnMarkers as another coordinator sends it, straight to partition 0's leader: a
    # marker for a transaction that is not open changes nothing but is written (and
    # replicated); one for a partition another node leads, an unknown topic or an invalid
    # producer id is refused, and the node keeps serving.
    leader = by_id[states[0][1]]
    elsewhere = next(p for p, s in states.items() if s[1] != leader.node_id)
    markers = [(-1, 0, True, {b"spread": [0]}),
               (12345, 0, True, {b"spread": [0, elsewhere], b"nope": [0]})]
    with connect(leader.broker.port, timeout=40) as sock:
        sock.sendall(write_txn_markers_v1(markers, 7))
        codes = write_txn_markers_v1_result(read_response(sock)[1])
    assert codes == {(-1, "spread", 0): 49, (12345, "spread", 0): 0,
                     (12345, "spread", elsewhere): 6, (12345, "nope", 0): 3}, codes
    assert replicas_identical(nodes, "spread", [0, 1, 2]), "the replicas' markers differ"


def test_a_commit_while_a_partition_leader_is_dead_ends_at_its_next_leader(spate_factory):
    from confluent_kafka import Consumer, Producer, TopicPartition
    nodes, by_id = replicated_cluster(spate_factory)
    create_replicated(nodes[0], "moved", 3, min_insync=2)
    states = wait_for("every replica in sync", lambda: all_in_sync(nodes, "moved", 3))
    error, coordinator, _ = find_coordinator_v1(nodes[0].broker.port, b"moved-txn", 1)
    assert error == 0, error
    victim = next(by_id[s[1]] for s in states.values() if s[1] != coordinator)
    led = [p for p, s in states.items() if s[1] == victim.node_id]
    bootstrap = ",".join(node.broker.bootstrap for node in nodes)
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": "moved-txn",
                         "transaction.timeout.ms": 60000, "linger.ms": 5})
    producer.init_transactions(30)
    producer.begin_transaction()
    values = {p: [f"v-{p}-{i}" for i in range(20)] for p in range(3)}
    for p, batch in values.items():
        for value in batch:
            producer.produce("moved", value.encode(), partition=p)
    assert producer.flush(30) == 0  # acks=all: on every in-sync replica
    victim.broker.kill9()
    producer.commit_transaction(60)
    survivors = [node for node in nodes if node is not victim]
    consumer = Consumer({"bootstrap.servers": ",".join(n.broker.bootstrap for n in survivors),
                         "group.id": "unused", "enable.auto.commit": False,
                         "isolation.level": "read_committed"})
    consumer.assign([TopicPartition("moved", p, 0) for p in range(3)])
    read = {p: [] for p in range(3)}
    deadline = time.monotonic() + 30
    while sum(map(len, read.values())) < 60 and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and not message.error():
            read[message.partition()].append(message.value().decode())
    consumer.close()
    assert read == values, (led, read)
    moved = partition_states(survivors, "moved")
    assert all(moved[p][1] not in (-1, victim.node_id) for p in led), moved


def test_a_follower_behind_the_leaders_log_start_starts_again_there(spate_factory):
    """A follower that was away while its leader's log start moved past its log end (here
    DeleteRecords; retention alike) can never fetch what it misses: it empties its log, starts
    at the leader's log start, catches up and is in sync again."""
    from confluent_kafka import TopicPartition
    nodes, by_id = replicated_cluster(spate_factory)
    create_replicated(nodes[0], "moved-start", 1)
    states = wait_for("every replica in sync", lambda: all_in_sync(nodes, "moved-start", 1))
    leader = by_id[states[0][1]]
    follower = next(node for node in nodes if node is not leader)
    first, errors = produce(nodes, "moved-start", [0], 100, "before")
    assert errors == [] and len(first[0]) == 100, errors
    follower.broker.kill9()
    live = [node for node in nodes if node is not follower]
    more, errors = produce(live, "moved-start", [0], 300, "away")
    assert errors == [] and len(more[0]) == 300, errors
    # The client is kept while its futures are pending: one collected fails them.
    client = admin(leader)
    deleted = client.delete_records([TopicPartition("moved-start", 0, 400)],
                                    request_timeout=15)
    assert list(deleted.values())[0].result(timeout=20).low_watermark == 400
    follower.broker.start()
    wait_for("the returned follower in sync", lambda: all_in_sync(nodes, "moved-start", 1),
             timeout=30)
    last, errors = produce(nodes, "moved-start", [0], 50, "after")
    assert errors == [] and len(last[0]) == 50, errors
    start = follower.broker.partition_dir("moved-start", 0) / "log-start-offset"
    assert start.read_text().strip() == "400"
    # Its records are the leader's from offset 400 on, byte for byte.
    copy = log_bytes(follower, "moved-start", 0)
    assert copy and log_bytes(leader, "moved-start", 0).endswith(copy)


LOG4J2_TRACE_CLIENT = """status = error
appender.err.type = Console
appender.err.name = err
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = %d{HH:mm:ss.SSS} %-5p %c{1}: %m%n
rootLogger.level = info
rootLogger.appenderRef.err.ref = err
logger.sender.name = org.apache.kafka.clients.producer.internals.Sender
logger.sender.level = trace
logger.metadata.name = org.apache.kafka.clients.Metadata
logger.metadata.level = trace
logger.network.name = org.apache.kafka.clients.NetworkClient
logger.network.level = debug
"""


def test_the_java_client_takes_the_new_leader_from_a_produce_answer(spate_factory, tmp_path):
    """KIP-951 with a real client: the Java producer 4.3.1 writes to a partition's leader
    every 5 ms while a preferred election (after a new replica order) moves the leadership
    to another live broker; the old leader's NOT_LEADER_OR_FOLLOWER names the new one, and
    the producer's own log says it took the leader from that answer (Sender: the error with
    the leader and epoch; Metadata: the leader updated from it), and every record is
    acknowledged. (Log4j from Kafka's jars gives the client a logger; a skip without them.)"""
    import subprocess
    from conftest import KAFKA_LIBS
    from test_cluster_admin import java_admin
    from test_idempotence import compile_java
    libs = [os.path.join(KAFKA_LIBS, name) for name in sorted(os.listdir(KAFKA_LIBS))
            if name.startswith(("log4j-api", "log4j-core", "log4j-slf4j-impl"))] \
        if os.path.isdir(KAFKA_LIBS) else []
    if len(libs) < 3:
        pytest.skip(f"no log4j jars in {KAFKA_LIBS}; run scripts/kafka-reference.sh fetch")
    nodes, by_id = replicated_cluster(spate_factory)
    create_replicated(nodes[0], "hinted", 1)
    states = wait_for("every replica in sync", lambda: all_in_sync(nodes, "hinted", 1))
    leader, replicas, epoch = states[0][1], states[0][3], states[0][2]
    successor = next(r for r in replicas if r != leader)
    order = [successor] + [r for r in replicas if r != successor]
    classpath = compile_java("PacedProducer", "ProducerSetup", "ClusterAdmin")
    config = tmp_path / "log4j2.properties"
    config.write_text(LOG4J2_TRACE_CLIENT)
    run_classpath = os.pathsep.join([classpath, *libs])
    producer = subprocess.Popen(
        ["java", f"-Dlog4j2.configurationFile={config}", "-cp", run_classpath,
         "PacedProducer", by_id[leader].broker.bootstrap, "hinted", "8"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(4)
        other = by_id[successor]
        assert java_admin(classpath, other, "reassign", "hinted",
                          "0=" + ",".join(map(str, order))) == ["p=0", "result=OK"]

        def partition():
            states = partition_states(nodes, "hinted")
            return states[0] if states else None

        wait_for("the new order", lambda: partition() and partition()[3] == order)
        assert java_admin(classpath, other, "elect", "preferred", "hinted", "0") == \
            ["p=0", "result=OK"]
        wait_for("the new leader", lambda: partition() and partition()[1] == successor)
        out, err = producer.communicate(timeout=90)
    finally:
        if producer.poll() is None:
            producer.kill()
    log = err.decode(errors="replace")
    assert producer.returncode == 0, log[-4000:]
    assert "acknowledged" in out.decode(), log[-4000:]
    hinted = [line for line in log.splitlines() if "received error NOT_LEADER_OR_FOLLOWER" in line
              or "updating leader information" in line]
    print("\n".join(hinted[:6]))
    assert any(f"leaderId={successor}" in line and "NOT_LEADER_OR_FOLLOWER" in line
               for line in hinted), log[-4000:]
    assert any("updating leader information" in line for line in hinted), log[-4000:]
    assert partition()[2] > epoch
