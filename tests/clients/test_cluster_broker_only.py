"""Broker-only nodes (issue 13, item 1: `--process-roles broker`, Kafka's KRaft observers).

Three voters form a cluster and create a topic; a fourth `spate` process started later with
`--process-roles broker` and no `--controller-listen` joins it: it follows the metadata log
as a Raft learner (its Metadata has the earlier topic exactly as the voters', it registers
and is listed by every node's DescribeCluster), DescribeQuorum lists it as an observer and
never as a voter, topics created afterwards through it (confluent-kafka's AdminClient) place
replicas and leaders on it, and records produced and consumed through it alone
(confluent-kafka, acks=all) all come back; the Java AdminClient's describeMetadataQuorum
reads the observer too. Killed with kill -9 it is fenced, while the
quorum keeps its leader and epoch and commits a new topic; restarted, it catches up and is
listed again. Starting a broker-only node with --controller-listen, or with a voter's id,
is refused in one sentence. A stopped broker-only node unregistered with the Java
AdminClient's unregisterBroker (Kafka's UnregisterBroker) leaves the registered brokers and
the Raft configuration (no longer an observer; a second unregisterBroker is
BrokerIdNotRegisteredException); started again, it joins and registers anew. Every wait is
bounded.
"""

import subprocess

import pytest

from conftest import TARGET
from java_build import compile_java
from test_cluster import (HEARTBEAT_INTERVAL_MS, SESSION_TIMEOUT_MS, Node, admin, create_topic,
                          describe_cluster, describe_quorum_with_observers, metadata_v1,
                          read_from_start, produce_to, start_cluster, wait_for)

pytestmark = pytest.mark.skipif(TARGET != "spate", reason="spate's cluster options")

BROKER_ONLY = 4


def broker_only(spate_factory, voters_text, *extra):
    return spate_factory("--cores", "1", "--min-free-bytes", "0",
                         "--node-id", str(BROKER_ONLY), "--process-roles", "broker",
                         "--controller-quorum-voters", voters_text,
                         "--broker-heartbeat-interval-ms", str(HEARTBEAT_INTERVAL_MS),
                         "--broker-session-timeout-ms", str(SESSION_TIMEOUT_MS), *extra,
                         start=False)


def voters_text(nodes):
    return ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in nodes)


def agreed(nodes, brokers):
    """(leader, epoch) every node names, with every node listing exactly `brokers` in
    DescribeCluster; None before."""
    answers = [describe_quorum_with_observers(node.broker.port) for node in nodes]
    if any(isinstance(answer, int) for answer in answers):
        return None
    if len({(a[0], a[1]) for a in answers}) != 1:
        return None
    for node in nodes:
        controller, registered = describe_cluster(node.broker.port)
        if controller != answers[0][0] or registered != sorted(brokers):
            return None
    return answers[0][0], answers[0][1]


def same_map(nodes, topic, partitions, brokers):
    """The partition map of `topic` when every node's Metadata lists `brokers` and gives
    the same map of `partitions` partitions with every replica in sync; None before."""
    maps = []
    for node in nodes:
        listed, found = metadata_v1(node.broker.port)
        if sorted(listed) != sorted(brokers) or topic not in found or found[topic][0] != 0:
            return None
        maps.append(found[topic][1])
    if any(m != maps[0] for m in maps) or len(maps[0]) != partitions:
        return None
    if any(sorted(isr) != sorted(replicas) for _, replicas, isr in maps[0].values()):
        return None
    return maps[0]


def test_a_broker_only_node_joins_takes_replicas_and_never_votes(spate_factory, tmp_path):
    nodes = start_cluster(spate_factory,
                          "--broker-heartbeat-interval-ms", str(HEARTBEAT_INTERVAL_MS),
                          "--broker-session-timeout-ms", str(SESSION_TIMEOUT_MS))
    voters = voters_text(nodes)
    wait_for("a leader all three agree on", lambda: agreed(nodes, (1, 2, 3)))
    assert create_topic(nodes[0], "before", 3, 3) is None
    before = wait_for("'before' on the voters", lambda: same_map(nodes, "before", 3, (1, 2, 3)))

    extra = broker_only(spate_factory, voters)
    extra.start()
    everyone = nodes + [Node(BROKER_ONLY, extra, None)]
    leader, epoch = wait_for("the broker-only node registered everywhere",
                             lambda: agreed(everyone, (1, 2, 3, BROKER_ONLY)))
    assert "following the metadata log as a Raft learner" in extra.log_text()
    # It applied the log from the start: the earlier topic as the voters have it.
    assert wait_for("'before' on all four",
                    lambda: same_map(everyone, "before", 3, (1, 2, 3, 4))) == before

    def observed():
        answer = describe_quorum_with_observers(nodes[leader - 1].broker.port)
        if isinstance(answer, int):
            return None
        _, _, high_watermark, current, observers = answer
        if sorted(current) != [1, 2, 3] or BROKER_ONLY not in observers:
            return None
        return high_watermark, current, observers
    high_watermark, current, observers = wait_for("the leader lists an observer", observed)
    assert list(observers) == [BROKER_ONLY], observers
    assert observers[BROKER_ONLY] > 0, observers
    # The broker-only node answers with the same quorum and counts itself an observer.
    answer = describe_quorum_with_observers(extra.port)
    assert answer[:2] == (leader, epoch) and sorted(answer[3]) == [1, 2, 3], answer
    assert list(answer[4]) == [BROKER_ONLY], answer
    # The Java AdminClient's describeMetadataQuorum reads it so, through either.
    classpath = compile_java("QuorumDescribe")
    for node in (nodes[leader - 1], everyone[3]):
        done = subprocess.run(["java", "-cp", classpath, "QuorumDescribe", node.broker.bootstrap],
                              capture_output=True, timeout=120)
        out = done.stdout.decode()
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        assert f"leader={leader} " in out and "voters=1,2,3 " in out, out
        assert "brokers=1,2,3,4 " in out and out.strip().endswith("observers=4"), out

    # Topics created through it are placed on it too; 8 partitions over 4 brokers.
    assert create_topic(everyone[3], "after", 8, 2) is None
    after = wait_for("'after' alike on all four",
                     lambda: same_map(everyone, "after", 8, (1, 2, 3, 4)))
    led = [leader_id for leader_id, _, _ in after.values()]
    assert led.count(BROKER_ONLY) == 2, after
    assert sum(BROKER_ONLY in replicas for _, replicas, _ in after.values()) == 4, after
    assert extra.partition_dir("after", led.index(BROKER_ONLY)).is_dir()
    # Produce and consume through the broker-only node alone.
    alone = [everyone[3]]
    assert produce_to(alone, "after", range(8), 20, "via4") == []
    read = read_from_start(alone, "after", {p: 20 for p in range(8)})
    assert read == {p: [f"via4-{p}-{i}" for i in range(20)] for p in range(8)}

    # Killed, it is fenced; the quorum keeps its leader and epoch and commits.
    extra.kill9()
    wait_for("the broker-only node fenced",
             lambda: all(describe_cluster(n.broker.port)[1] == [1, 2, 3] for n in nodes))
    assert agreed(nodes, (1, 2, 3)) == (leader, epoch)
    assert create_topic(nodes[1], "later", 3, 3) is None
    later = wait_for("'later' on the voters", lambda: same_map(nodes, "later", 3, (1, 2, 3)))
    assert agreed(nodes, (1, 2, 3)) == (leader, epoch)

    # Restarted on its data dir, it catches up and is listed again.
    extra.start()
    wait_for("the broker-only node back everywhere",
             lambda: agreed(everyone, (1, 2, 3, BROKER_ONLY)))
    assert wait_for("'later' on all four",
                    lambda: same_map(everyone, "later", 3, (1, 2, 3, 4))) == later
    assert agreed(everyone, (1, 2, 3, BROKER_ONLY)) == (leader, epoch)
    # It never campaigned nor led the quorum.
    assert "elected controller leader" not in extra.log_text()


def test_a_broker_only_node_refuses_a_controller_listener_or_a_voters_id(spate_factory):
    ports = "1@127.0.0.1:19093,2@127.0.0.1:19193,3@127.0.0.1:19293"
    for extra, expected in [
        (("--node-id", "4", "--controller-listen", "127.0.0.1:19393"), "is for voters"),
        (("--node-id", "2"), "is a voter in --controller-quorum-voters"),
    ]:
        node = broker_only(spate_factory, ports)
        command = node.command()
        command[command.index("--node-id") + 1] = extra[1]
        command += list(extra[2:])
        done = subprocess.run(command, capture_output=True, timeout=30)
        assert done.returncode != 0
        lines = [line for line in done.stderr.decode().splitlines() if line.startswith("spate: ")]
        assert len(lines) == 1 and expected in lines[0], done.stderr.decode()


def test_an_unregistered_broker_only_node_leaves_the_quorum_until_it_comes_back(spate_factory,
                                                                             tmp_path):
    nodes = start_cluster(spate_factory,
                          "--broker-heartbeat-interval-ms", str(HEARTBEAT_INTERVAL_MS),
                          "--broker-session-timeout-ms", str(SESSION_TIMEOUT_MS))
    wait_for("a leader all three agree on", lambda: agreed(nodes, (1, 2, 3)))
    extra = broker_only(spate_factory, voters_text(nodes))
    extra.start()
    everyone = nodes + [Node(BROKER_ONLY, extra, None)]
    wait_for("the broker-only node registered everywhere",
             lambda: agreed(everyone, (1, 2, 3, BROKER_ONLY)))

    def observers_everywhere():
        """Each voter's observers (its Raft configuration's learners)."""
        answers = [describe_quorum_with_observers(node.broker.port) for node in nodes]
        if any(isinstance(answer, int) for answer in answers):
            return None
        return [sorted(answer[4]) for answer in answers]

    wait_for("an observer on every voter",
             lambda: observers_everywhere() == [[BROKER_ONLY]] * 3)
    classpath = compile_java("BrokerUnregister")

    def unregister(through):
        done = subprocess.run(["java", "-cp", classpath, "BrokerUnregister",
                               through.broker.bootstrap, str(BROKER_ONLY)],
                              capture_output=True, timeout=120)
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        return done.stdout.decode().strip()

    # Stopped and fenced, then unregistered through a voter.
    extra.kill9()
    wait_for("the broker-only node fenced",
             lambda: all(describe_cluster(n.broker.port)[1] == [1, 2, 3] for n in nodes))
    assert unregister(nodes[1]) == f"unregistered {BROKER_ONLY}"
    wait_for("no observer on any voter", lambda: observers_everywhere() == [[]] * 3)
    answer = unregister(nodes[2])
    assert answer.startswith("failed BrokerIdNotRegisteredException"), answer
    wait_for("the voters agreeing without it", lambda: agreed(nodes, (1, 2, 3)))
    removal = "proposing to remove an unregistered broker-only node"
    assert any(removal in node.broker.log_text() for node in nodes)

    # Started again, it joins, registers and follows the log as before.
    extra.start()
    wait_for("the broker-only node back everywhere",
             lambda: agreed(everyone, (1, 2, 3, BROKER_ONLY)))
    wait_for("an observer on every voter again",
             lambda: observers_everywhere() == [[BROKER_ONLY]] * 3)
    assert create_topic(everyone[3], "back", 4, 2) is None
    wait_for("'back' alike on all four", lambda: same_map(everyone, "back", 4, (1, 2, 3, 4)))
