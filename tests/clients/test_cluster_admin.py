"""Cluster admin APIs (issue 13, item 5) on three real `spate` processes, with the Java
AdminClient (`java/ClusterAdmin.java`), kafka-python and confluent-kafka.

DescribeTopicPartitions (what the Java client's describeTopics asks since 3.8) answers every
partition as Metadata does, page by page (a partition limit and a cursor); ElectLeaders
makes the preferred replica lead, answers Kafka's errors (ELECTION_NOT_NEEDED,
PREFERRED_LEADER_NOT_AVAILABLE, UNKNOWN_TOPIC_OR_PARTITION) and elects a replica outside the
ISR of a leaderless partition when asked for an unclean election; a partition reassignment
adds the new replica, which catches up from the leader, lists it as adding while it cannot
(the target stopped with SIGSTOP), can be cancelled, and once the new replica is in sync
removes the old ones (the leader moves): the new replica holds the same bytes as the others,
the removed one's copy is deleted, and every record is consumed. A single node answers these
requests as a cluster of one broker. Every wait is bounded.
"""

import subprocess
import time

import pytest

from conftest import TARGET
from test_cluster import (HEARTBEAT_INTERVAL_MS, SESSION_TIMEOUT_MS, admin, agreed_leader,
                          metadata_v7, read_from_start, start_cluster, wait_for)
from java_build import compile_java
from test_replication import log_bytes, partition_states, produce

pytestmark = pytest.mark.skipif(TARGET != "spate", reason="spate's cluster options")

UNKNOWN_TOPIC_OR_PARTITION = 3
INVALID_REQUEST = 42


def cluster_of_three(spate_factory, *extra):
    nodes = start_cluster(spate_factory, *extra)
    wait_for("a leader all three agree on", lambda: agreed_leader(nodes))
    return nodes, {node.node_id: node for node in nodes}


def java_admin(classpath, node, *args):
    """Runs ClusterAdmin through `node`; its output lines."""
    done = subprocess.run(["java", "-cp", classpath, "ClusterAdmin", node.broker.bootstrap,
                           *args], capture_output=True, timeout=90)
    output = done.stdout.decode(errors="replace")
    assert done.returncode == 0, output + done.stderr.decode(errors="replace")[-3000:]
    return output.split()


def python_admin(node):
    from kafka import KafkaAdminClient
    return KafkaAdminClient(bootstrap_servers=node.broker.bootstrap, request_timeout_ms=30000)


def create(node, name, assignment):
    """A topic through `node` with an explicit replica assignment {partition: [ids]}."""
    from confluent_kafka.admin import NewTopic
    client = admin(node)
    replicas = [assignment[p] for p in sorted(assignment)]
    futures = client.create_topics([NewTopic(name, len(replicas), replica_assignment=replicas)],
                                   operation_timeout=30, request_timeout=40)
    futures[name].result(timeout=45)


def in_sync(nodes, topic, assignment):
    """The partition states when every node agrees that each partition has exactly the
    replicas `assignment` gives, all in sync, with a leader; None before."""
    states = partition_states(nodes, topic)
    if not states or len(states) != len(assignment):
        return None
    for partition, replicas in assignment.items():
        error, leader, _, found, isr, _ = states[partition]
        if error or leader < 0 or found != replicas or sorted(isr) != sorted(replicas):
            return None
    return states


def test_describe_topic_partitions_pages_through_every_partition(spate_factory, tmp_path):
    nodes, by_id = cluster_of_three(spate_factory)
    paged = {p: [p % 3 + 1, (p + 1) % 3 + 1] for p in range(5)}
    create(by_id[1], "paged", paged)
    create(by_id[2], "other", {0: [3]})
    states = wait_for("both topics in sync everywhere", lambda: in_sync(nodes, "paged", paged))
    wait_for("other in sync", lambda: in_sync(nodes, "other", {0: [3]}))
    # The Java client's describeTopics (DescribeTopicPartitions), two partitions a page.
    classpath = compile_java("ClusterAdmin")
    lines = java_admin(classpath, by_id[3], "describe", "paged", "2")
    expected = []
    for partition, (_, leader, _, replicas, isr, _) in sorted(states.items()):
        expected += [f"p={partition}", f"leader={leader}",
                     f"replicas={','.join(map(str, replicas))}",
                     f"isr={','.join(map(str, isr))}"]
    assert lines == expected
    # kafka-python's DescribeTopicPartitions: name order, the unknown topic counted as no
    # partition, the limit cut inside "paged" and a cursor to go on from.
    client = python_admin(by_id[2])
    try:
        first = client.describe_topic_partitions(["paged", "other", "missing"],
                                                 response_partition_limit=3)
        names = [(t["name"], t["error_code"], [p["partition_index"] for p in t["partitions"]])
                 for t in first["topics"]]
        assert names == [("missing", UNKNOWN_TOPIC_OR_PARTITION, []), ("other", 0, [0]),
                         ("paged", 0, [0, 1])]
        assert first["next_cursor"] == {"topic_name": "paged", "partition_index": 2}
        paged_topic = first["topics"][2]
        assert paged_topic["topic_id"] is not None and not paged_topic["is_internal"]
        for p in paged_topic["partitions"]:
            _, leader, epoch, replicas, isr, offline = states[p["partition_index"]]
            assert (p["leader_id"], p["leader_epoch"], p["replica_nodes"], p["isr_nodes"],
                    p["offline_replicas"]) == (leader, epoch, replicas, isr, offline)
        second = client.describe_topic_partitions(["paged", "other", "missing"],
                                                  response_partition_limit=3,
                                                  cursor=first["next_cursor"])
        assert [(t["name"], [p["partition_index"] for p in t["partitions"]])
                for t in second["topics"]] == [("paged", [2, 3, 4])]
        assert second["next_cursor"] is None
        # Every topic (none named), one partition a page: the cursor is the next topic.
        everything = client.describe_topic_partitions([], response_partition_limit=1)
        assert [t["name"] for t in everything["topics"]] == ["other"]
        assert everything["next_cursor"] == {"topic_name": "paged", "partition_index": 0}
        # A cursor topic outside the named topics: INVALID_REQUEST for each.
        bad = client.describe_topic_partitions(
            ["other"], cursor={"topic_name": "paged", "partition_index": 0})
        assert [(t["name"], t["error_code"]) for t in bad["topics"]] == \
            [("other", INVALID_REQUEST)]
    finally:
        client.close()


def test_preferred_and_unclean_elections(spate_factory, tmp_path):
    nodes, by_id = cluster_of_three(
        spate_factory, "--broker-heartbeat-interval-ms", str(HEARTBEAT_INTERVAL_MS),
        "--broker-session-timeout-ms", str(SESSION_TIMEOUT_MS),
        "--auto-leader-rebalance-enable", "false")
    from kafka import TopicPartition as KafkaTopicPartition
    assignment = {0: [1, 2, 3], 1: [2, 3, 1]}
    create(by_id[1], "elect", assignment)
    wait_for("elect in sync", lambda: in_sync(nodes, "elect", assignment))
    classpath = compile_java("ClusterAdmin")
    # A new order (a reassignment that moves no replica) names 2 the preferred replica of
    # partition 0; the leader (1) stays until an election.
    client = python_admin(by_id[3])
    try:
        answer = client.alter_partition_reassignments({KafkaTopicPartition("elect", 0): [2, 1, 3]})
        assert answer == {KafkaTopicPartition("elect", 0): None}
    finally:
        client.close()
    reordered = {0: [2, 1, 3], 1: [2, 3, 1]}
    states = wait_for("the new order", lambda: in_sync(nodes, "elect", reordered))
    assert states[0][1] == 1
    epoch = states[0][2]
    lines = java_admin(classpath, by_id[2], "elect", "preferred", "elect", "0", "1", "7")
    assert lines == ["p=0", "result=OK", "p=1", "result=ElectionNotNeededException",
                     "p=7", "result=UnknownTopicOrPartitionException"]
    states = wait_for("2 leads partition 0 everywhere",
                      lambda: (s := partition_states(nodes, "elect")) and s[0][1] == 2 and s)
    assert states[0][2] == epoch + 1
    # confluent-kafka: the election is no longer needed.
    from confluent_kafka import ElectionType, TopicPartition
    client = admin(by_id[1])  # kept alive until the answer
    result = client.elect_leaders(ElectionType.PREFERRED,
                                  [TopicPartition("elect", 0)]).result(timeout=45)
    error = result[TopicPartition("elect", 0)]
    assert error is not None and error.code() == 84, error  # ELECTION_NOT_NEEDED
    # The preferred replica of partition 1 (2) down: fenced, out of the ISR; 3 leads.
    by_id[2].broker.kill9()
    wait_for("2 out of partition 1's ISR",
             lambda: (s := partition_states([by_id[1], by_id[3]], "elect"))
             and 2 not in s[1][4] and s[1][1] == 3)
    lines = java_admin(classpath, by_id[1], "elect", "preferred", "elect", "1")
    assert lines == ["p=1", "result=PreferredLeaderNotAvailableException"]
    # Unclean: a partition of replicas 1 and 3 whose only in-sync replica (1) dies after 3
    # did; 3 comes back out of sync, so only an unclean election gives it a leader. (One
    # voter down at a time: the quorum needs two of three.)
    by_id[2].broker.start()
    wait_for("2 back", lambda: agreed_leader(nodes))
    create(by_id[1], "unclean", {0: [1, 3]})
    wait_for("unclean in sync", lambda: in_sync(nodes, "unclean", {0: [1, 3]}))
    lines = java_admin(classpath, by_id[1], "elect", "unclean", "unclean", "0")
    assert lines == ["p=0", "result=ElectionNotNeededException"]
    by_id[3].broker.kill9()
    wait_for("3 out of the ISR", lambda: (s := partition_states([by_id[1], by_id[2]], "unclean"))
             and s[0][4] == [1])
    by_id[1].broker.kill9()
    by_id[3].broker.start()
    survivors = [by_id[2], by_id[3]]
    wait_for("3 back and the partition leaderless",
             lambda: (s := partition_states(survivors, "unclean")) and s[0][1] == -1
             and s[0][4] == [1] and 3 not in s[0][5])
    lines = java_admin(classpath, by_id[2], "elect", "unclean", "unclean", "0")
    assert lines == ["p=0", "result=OK"]
    states = wait_for("3 leads alone",
                      lambda: (s := partition_states(survivors, "unclean")) and s[0][1] == 3
                      and s[0][4] == [3] and s)
    acknowledged, errors = produce(survivors, "unclean", [0], 20, "after")
    assert errors == [] and len(acknowledged[0]) == 20


def test_reassignment_moves_every_record_and_deletes_the_old_copy(spate_factory, tmp_path):
    nodes, by_id = cluster_of_three(
        spate_factory, "--broker-heartbeat-interval-ms", str(HEARTBEAT_INTERVAL_MS),
        "--broker-session-timeout-ms", str(SESSION_TIMEOUT_MS))
    from kafka import TopicPartition
    from kafka.errors import (InvalidReplicationAssignmentError, NoReassignmentInProgressError,
                              UnknownTopicOrPartitionError)
    assignment = {0: [1, 2], 1: [2, 1]}
    create(by_id[1], "moved", assignment)
    wait_for("moved in sync", lambda: in_sync(nodes, "moved", assignment))
    acknowledged, errors = produce(nodes, "moved", [0, 1], 300, "before")
    assert errors == [] and all(len(values) == 300 for values in acknowledged.values())
    classpath = compile_java("ClusterAdmin")
    # Node 3 down (fenced, still registered): the reassignments to it cannot complete.
    by_id[3].broker.kill9()
    wait_for("3 fenced", lambda: all(3 not in metadata_v7(n.broker.port)[0]
                                     for n in (by_id[1], by_id[2])))
    lines = java_admin(classpath, by_id[2], "reassign", "moved", "0=3,2", "1=1,3")
    assert lines == ["p=0", "result=OK", "p=1", "result=OK"]
    lines = java_admin(classpath, by_id[1], "list")
    assert sorted(lines) == sorted(["moved-0", "replicas=3,2,1", "adding=3", "removing=1",
                                    "moved-1", "replicas=1,3,2", "adding=3", "removing=2",
                                    "listed=2"])
    client = python_admin(by_id[1])
    try:
        listed = client.list_partition_reassignments({"moved": [0, 1]})
        assert listed[TopicPartition("moved", 0)] == {
            "replicas": [3, 2, 1], "adding_replicas": [3], "removing_replicas": [1]}
        # Cancel partition 1: back to its replicas; a second cancel has nothing to do.
        assert client.alter_partition_reassignments({TopicPartition("moved", 1): None}) == \
            {TopicPartition("moved", 1): None}
        assert client.alter_partition_reassignments({TopicPartition("moved", 1): None}) == \
            {TopicPartition("moved", 1): NoReassignmentInProgressError}
        assert list(client.list_partition_reassignments()) == [TopicPartition("moved", 0)]
        refused = client.alter_partition_reassignments({
            TopicPartition("moved", 1): [1, 9], TopicPartition("moved", 5): [1],
            TopicPartition("missing", 0): [1]})
        assert refused == {TopicPartition("moved", 1): InvalidReplicationAssignmentError,
                           TopicPartition("moved", 5): UnknownTopicOrPartitionError,
                           TopicPartition("missing", 0): UnknownTopicOrPartitionError}
    finally:
        client.close()
    # Cancelled: the added replica left, the others stay in the order the reassignment gave
    # them (Kafka's PartitionReassignmentRevert keeps it too).
    states = partition_states([by_id[1], by_id[2]], "moved")
    assert states[1][3] == [1, 2] and states[0][1] == 1, states
    by_id[3].broker.start()
    # Node 3 back: it catches up, joins the ISR, the reassignment ends: 1 leaves partition 0
    # (it led it: the leadership moves) and deletes its copy.
    moved = {0: [3, 2], 1: [1, 2]}
    wait_for("the reassignment done everywhere", lambda: in_sync(nodes, "moved", moved),
             timeout=60)
    lines = java_admin(classpath, by_id[3], "list")
    assert lines == ["listed=0"]
    wait_for("node 1's copy of partition 0 deleted",
             lambda: not by_id[1].broker.partition_dir("moved", 0).exists())
    wait_for("node 3 never keeps partition 1",
             lambda: not by_id[3].broker.partition_dir("moved", 1).exists())
    copy = log_bytes(by_id[3], "moved", 0)
    assert copy and copy == log_bytes(by_id[2], "moved", 0)
    read = read_from_start([by_id[2], by_id[3]], "moved", {0: 300, 1: 300})
    assert read[0] == acknowledged[0] and read[1] == acknowledged[1]
    more, errors = produce([by_id[2], by_id[3]], "moved", [0], 50, "after")
    assert errors == [] and len(more[0]) == 50
    wait_for("the new copies identical again",
             lambda: log_bytes(by_id[3], "moved", 0) == log_bytes(by_id[2], "moved", 0)
             and len(log_bytes(by_id[3], "moved", 0)) > len(copy))


def test_a_single_node_answers_as_a_cluster_of_one(broker, tmp_path):
    from confluent_kafka.admin import NewTopic
    client = admin_for(broker)
    client.create_topics([NewTopic("solo", 3, 1)])["solo"].result(timeout=30)
    classpath = compile_java("ClusterAdmin")
    node = type("Node", (), {"broker": broker})()
    wait_for("solo described", lambda: java_admin(classpath, node, "describe", "solo", "2")
             == ["p=0", "leader=1", "replicas=1", "isr=1", "p=1", "leader=1", "replicas=1",
                 "isr=1", "p=2", "leader=1", "replicas=1", "isr=1"])
    assert java_admin(classpath, node, "elect", "preferred", "solo", "0", "5") == \
        ["p=0", "result=ElectionNotNeededException", "p=5", "result=UnknownTopicOrPartitionException"]
    assert java_admin(classpath, node, "reassign", "solo", "0=1", "1=1,2", "2=cancel") == \
        ["p=0", "result=OK", "p=1", "result=InvalidReplicaAssignmentException",
         "p=2", "result=NoReassignmentInProgressException"]
    assert java_admin(classpath, node, "list") == ["listed=0"]


def admin_for(broker):
    from confluent_kafka.admin import AdminClient
    return AdminClient({"bootstrap.servers": broker.bootstrap})
