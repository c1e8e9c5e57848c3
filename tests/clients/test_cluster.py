"""A controller quorum of three real `spate` processes on 127.0.0.1 (issue 13, first step).

The cluster forms (one leader everybody agrees on, every broker registered), survives kill -9
of its leader (the other two elect a new one, which commits), keeps its committed metadata log
across a restart of all three, and a node refuses a data dir recorded for another node id.
Agreement is checked with the Java AdminClient (describeMetadataQuorum, describeCluster) and
over the raw wire (DescribeQuorum v0, DescribeCluster v0). Every wait is bounded.
"""

import re
import struct
import subprocess
import time

import pytest

from conftest import TARGET, free_port
from kafka_wire import connect, frame, read_response, request_header
from test_idempotence import compile_java

pytestmark = pytest.mark.skipif(TARGET != "spate", reason="spate's cluster options")

DESCRIBE_QUORUM = 55
DESCRIBE_CLUSTER = 60
METADATA_TOPIC = b"__cluster_metadata"
ELECTION_TIMEOUT_S = 20.0


def compact_string(data):
    return bytes([len(data) + 1]) + data


def read_compact_string(data, position):
    """A compact (nullable) string: (bytes or None, position after it)."""
    length = data[position] - 1
    position += 1
    if length < 0:
        return None, position
    return data[position:position + length], position + length


def describe_quorum(port):
    """DescribeQuorum v0 (flexible): (leader_id, leader_epoch, high_watermark,
    {voter: log_end_offset}) or the partition error code as an int."""
    body = b"\x02" + compact_string(METADATA_TOPIC) + b"\x02" + struct.pack(">i", 0)
    body += b"\x00" + b"\x00" + b"\x00"  # partition, topic, request tagged fields
    with connect(port, timeout=5) as sock:
        sock.sendall(frame(request_header(DESCRIBE_QUORUM, 0, 7, flexible=True) + body))
        _, data = read_response(sock)
    position = 1  # response header tagged fields
    (top_error,) = struct.unpack_from(">h", data, position)
    assert top_error == 0, f"DescribeQuorum error {top_error}"
    position += 2
    assert data[position] == 2, "one topic"
    name, position = read_compact_string(data, position + 1)
    assert name == METADATA_TOPIC
    assert data[position] == 2, "one partition"
    position += 1
    index, error, leader, epoch, high_watermark = struct.unpack_from(">ihiiq", data, position)
    assert index == 0
    if error != 0:
        return error
    position += 22
    voters = {}
    count = data[position] - 1
    position += 1
    for _ in range(count):
        replica, log_end = struct.unpack_from(">iq", data, position)
        voters[replica] = log_end
        position += 12 + 1  # and the tagged fields
    return leader, epoch, high_watermark, voters


def describe_cluster(port):
    """DescribeCluster v0 (flexible): (controller_id, sorted broker ids)."""
    body = b"\x00" + b"\x00"  # include_cluster_authorized_operations, tagged fields
    with connect(port, timeout=5) as sock:
        sock.sendall(frame(request_header(DESCRIBE_CLUSTER, 0, 8, flexible=True) + body))
        _, data = read_response(sock)
    position = 1 + 4  # header tagged fields, throttle_time_ms
    (error,) = struct.unpack_from(">h", data, position)
    assert error == 0
    position += 2
    _, position = read_compact_string(data, position)  # error_message (null: length 0)
    _, position = read_compact_string(data, position)  # cluster_id
    (controller,) = struct.unpack_from(">i", data, position)
    position += 4
    brokers = []
    count = data[position] - 1
    position += 1
    for _ in range(count):
        (broker_id,) = struct.unpack_from(">i", data, position)
        position += 4
        _, position = read_compact_string(data, position)  # host
        position += 4  # port
        _, position = read_compact_string(data, position)  # rack
        position += 1  # tagged fields
        brokers.append(broker_id)
    return controller, sorted(brokers)


class Node:
    """One voter: its broker (from spate_factory, started later) and its ids."""

    def __init__(self, node_id, broker, controller_port):
        self.node_id = node_id
        self.broker = broker
        self.controller_port = controller_port


@pytest.fixture
def cluster(spate_factory):
    """Three voters on 127.0.0.1 with free ports, started together; returns the Nodes."""
    controller_ports = [free_port() for _ in range(3)]
    voters = ",".join(f"{i + 1}@127.0.0.1:{port}" for i, port in enumerate(controller_ports))
    nodes = []
    for i, port in enumerate(controller_ports):
        broker = spate_factory("--cores", "1", "--min-free-bytes", "0",
                               "--node-id", str(i + 1),
                               "--controller-listen", f"127.0.0.1:{port}",
                               "--controller-quorum-voters", voters, start=False)
        nodes.append(Node(i + 1, broker, port))
    for node in nodes:
        node.broker.start()
    return nodes


def wait_for(what, check, timeout=ELECTION_TIMEOUT_S):
    """Polls `check` until it returns something true; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (OSError, AssertionError, struct.error, IndexError) as e:
            last = e
        time.sleep(0.1)
    raise AssertionError(f"{what} not within {timeout} s; last: {last!r}")


def agreed_leader(nodes, brokers=(1, 2, 3)):
    """The leader every node names (DescribeQuorum and DescribeCluster), with every broker
    registered and every node's high watermark equal; None while they disagree."""
    answers = [describe_quorum(node.broker.port) for node in nodes]
    if any(isinstance(answer, int) for answer in answers):
        return None
    leaders = {answer[0] for answer in answers}
    epochs = {answer[1] for answer in answers}
    watermarks = {answer[2] for answer in answers}
    if len(leaders) != 1 or len(epochs) != 1 or len(watermarks) != 1:
        return None
    leader = leaders.pop()
    for node in nodes:
        controller, registered = describe_cluster(node.broker.port)
        if controller != leader or registered != sorted(brokers):
            return None
    return leader, epochs.pop(), watermarks.pop()


def test_three_nodes_elect_fail_over_and_keep_their_log(cluster, tmp_path):
    nodes = cluster
    leader, epoch, high_watermark = wait_for("a leader all three agree on",
                                             lambda: agreed_leader(nodes))
    assert leader in (1, 2, 3)
    # No-op, LeaderChange and three registrations at least.
    assert high_watermark >= 5, high_watermark
    # The leader knows every voter's log end; all caught up with the commit.
    by_id = {node.node_id: node for node in nodes}
    answer = describe_quorum(by_id[leader].broker.port)
    assert sorted(answer[3]) == [1, 2, 3]
    assert all(log_end >= high_watermark for log_end in answer[3].values()), answer

    # The same through the Java AdminClient, on every node.
    classpath = compile_java(tmp_path, "QuorumDescribe")
    for node in nodes:
        done = subprocess.run(["java", "-cp", classpath, "QuorumDescribe", node.broker.bootstrap],
                              capture_output=True, timeout=120)
        out = done.stdout.decode()
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        assert f"leader={leader} " in out and f"controller={leader} " in out, out
        assert "voters=1,2,3 " in out and "brokers=1,2,3" in out, out

    # kill -9 of the leader: the other two elect a new one, which commits (its LeaderChange
    # record raises the high watermark) and names itself.
    by_id[leader].broker.kill9()
    survivors = [node for node in nodes if node.node_id != leader]
    def new_leader_agreed():
        agreed = agreed_leader(survivors)
        return agreed if agreed and agreed[0] != leader else None

    started = time.monotonic()
    new_leader, new_epoch, new_watermark = wait_for("a new leader of the two survivors",
                                                    new_leader_agreed)
    print(f"new leader {new_leader} agreed {time.monotonic() - started:.2f} s after kill -9")
    assert new_leader != leader
    assert new_epoch > epoch
    assert new_watermark > high_watermark

    # The killed node comes back and catches up with the new leader.
    by_id[leader].broker.start()
    def caught_up_with_new_leader():
        agreed = agreed_leader(nodes)
        return agreed if agreed and agreed[2] >= new_watermark else None

    _, _, caught_up = wait_for("the restarted node caught up", caught_up_with_new_leader)
    assert caught_up >= new_watermark

    # All three restart (SIGTERM): the committed registrations are read back from the log.
    for node in nodes:
        assert node.broker.stop() == 0, node.broker.log_tail()
    for node in nodes:
        node.broker.start()
    # A new term's LeaderChange record lands above the old log: the watermark of the
    # restarted cluster is above what it had committed before, never below.
    def agreed_above_old_log():
        agreed = agreed_leader(nodes)
        return agreed if agreed and agreed[2] > caught_up else None

    wait_for("the restarted cluster agrees", agreed_above_old_log)
    for node in nodes:
        plain = re.sub(r"\x1b\[[0-9;]*m", "", node.broker.log_text())
        opened = re.findall(r"opened the metadata log node_id=\d+ entries=(\d+)", plain)
        assert len(opened) >= 2 and int(opened[-1]) >= caught_up, opened

    # A node started with another node id against its data dir is refused in one sentence.
    victim = nodes[0].broker
    victim.stop()
    command = victim.command()
    command[command.index("--node-id") + 1] = "2"
    command[command.index("--controller-listen") + 1] = f"127.0.0.1:{nodes[1].controller_port}"
    done = subprocess.run(command, capture_output=True, timeout=30)
    assert done.returncode != 0
    message = done.stderr.decode().strip().splitlines()[0]
    assert "belongs to node 1 but --node-id is 2" in message, message
    assert "--node-id 1" in message, message


def test_a_single_node_does_not_advertise_describe_quorum(broker):
    from kafka_wire import api_versions_request, parse_api_versions_v0
    with connect(broker.port) as sock:
        sock.sendall(api_versions_request(version=0))
        _, data = read_response(sock)
    error, ranges = parse_api_versions_v0(data)
    assert error == 0
    assert DESCRIBE_CLUSTER in ranges
    assert DESCRIBE_QUORUM not in ranges
    assert describe_cluster(broker.port) == (1, [1])
