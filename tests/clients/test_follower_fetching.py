"""Consumers read from the closest replica (KIP-392, issue 14 item 5) on three real `spate`
processes on 127.0.0.1 in racks a, b and c.

With `--replica-selector rack-aware`, the leader of a replicated partition names an in-sync
follower in the consumer's rack (`client.rack`) as its preferred read replica, with no
records; a confluent-kafka consumer in a follower's rack then reads every record from that
follower. Which replica served is read off each node's Prometheus metrics
(`spate_partition_bytes_out_total`: what consumers read there; a follower serves no other
follower, so its count moves only for consumers). A consumer without a rack, in an unknown
rack or in the leader's rack reads from the leader; after kill -9 of the follower the
consumer goes back to the leader and reads every record once, in order. Raw Fetch v11
requests check the wire: the preferred replica at the leader, a follower serving up to its
own high watermark (nothing between it and its log end, OFFSET_OUT_OF_RANGE past that),
UNKNOWN_LEADER_EPOCH for a future `current_leader_epoch` and the current one still served
after the follower's death shrank the ISR (KIP-497: the leader epoch stays), and
NOT_LEADER_OR_FOLLOWER for a fetch before v11 (no client metadata). With the default
selector nothing changes: a consumer in a follower's rack reads from the leader. Racks are
in Metadata and DescribeCluster. A follower killed while it held records not yet committed
starts again from its checkpointed high watermark, not from its log end. Every wait is
bounded.
"""

import os
import signal
import struct
import time

import pytest

from conftest import TARGET, free_port
from kafka_wire import (FETCH, METADATA, connect, fetch_v4, fetch_v4_result, frame,
                        produce_v3, produce_v3_result, read_response, record_batch)
from kafka_wire import request_header
from test_cluster import HEARTBEAT_INTERVAL_MS, Node, admin, agreed_leader, wait_for
from test_metrics import scrape
from test_replication import all_in_sync, create_replicated, produce

pytestmark = pytest.mark.skipif(TARGET != "spate", reason="spate's cluster options")

RACKS = {1: "a", 2: "b", 3: "c"}
SESSION_TIMEOUT_MS = 3000
OFFSET_OUT_OF_RANGE = 1
NOT_LEADER_OR_FOLLOWER = 6
UNKNOWN_LEADER_EPOCH = 75


def rack_cluster(spate_factory, *extra, session_timeout_ms=SESSION_TIMEOUT_MS):
    """Three voters in racks a, b, c, each with its metrics endpoint (`broker.metrics_port`);
    returns {node id: Node} once a leader is agreed."""
    controller_ports = [free_port() for _ in range(3)]
    voters = ",".join(f"{i + 1}@127.0.0.1:{port}" for i, port in enumerate(controller_ports))
    nodes = []
    for i, port in enumerate(controller_ports):
        metrics_port = free_port()
        broker = spate_factory("--cores", "1", "--min-free-bytes", "0",
                               "--node-id", str(i + 1),
                               "--controller-listen", f"127.0.0.1:{port}",
                               "--controller-quorum-voters", voters,
                               "--broker-heartbeat-interval-ms", str(HEARTBEAT_INTERVAL_MS),
                               "--broker-session-timeout-ms", str(session_timeout_ms),
                               "--rack", RACKS[i + 1],
                               "--metrics-listen", f"127.0.0.1:{metrics_port}", *extra,
                               start=False)
        broker.metrics_port = metrics_port
        nodes.append(Node(i + 1, broker, port))
    for node in nodes:
        node.broker.start()
    wait_for("a leader all three agree on", lambda: agreed_leader(nodes))
    return {node.node_id: node for node in nodes}


def replicated_topic(by_id, topic):
    """A topic of one partition on all three nodes, all in sync: (leader, epoch, followers)."""
    nodes = list(by_id.values())
    create_replicated(nodes[0], topic, 1)
    states = wait_for("all replicas in sync", lambda: all_in_sync(nodes, topic, 1))
    _, leader, epoch, _, _, _ = states[0]
    followers = sorted(node_id for node_id in by_id if node_id != leader)
    return leader, epoch, followers


def partition_metric(node, name, topic):
    return scrape(node.broker.metrics_port).get(name, topic=topic, partition="0")


def bytes_out(node, topic):
    """What was read from `node`'s replica of `topic`-0 by fetches (consumers, followers)."""
    return partition_metric(node, "spate_partition_bytes_out_total", topic)


def metadata_racks(port):
    """{node id: rack} of the brokers in a Metadata v1 answer (no topics asked)."""
    with connect(port, timeout=10) as sock:
        sock.sendall(frame(request_header(METADATA, 1, 4) + struct.pack(">i", 0)))
        _, data = read_response(sock)
    (count,) = struct.unpack_from(">i", data, 0)
    position = 4
    racks = {}
    for _ in range(count):
        node_id, size = struct.unpack_from(">ih", data, position)
        position += 6 + size + 4  # host, port
        (size,) = struct.unpack_from(">h", data, position)
        racks[node_id] = data[position + 2:position + 2 + size].decode() if size >= 0 else None
        position += 2 + max(size, 0)
    return racks


def fetch_v11(port, topic, offset, rack, current_leader_epoch=-1, max_wait_ms=0):
    """A consumer's Fetch v11 of `topic`-0: (error_code, high_watermark, preferred read
    replica, record bytes)."""
    body = struct.pack(">iiiibii", -1, max_wait_ms, 1, 1 << 20, 0, 0, -1)
    body += struct.pack(">i", 1) + struct.pack(">h", len(topic)) + topic.encode()
    body += struct.pack(">i", 1)
    body += struct.pack(">iiqqi", 0, current_leader_epoch, offset, -1, 1 << 20)
    body += struct.pack(">i", 0)  # forgotten topics
    body += struct.pack(">h", len(rack)) + rack.encode()
    with connect(port, timeout=10) as sock:
        sock.sendall(frame(request_header(FETCH, 11, 5) + body))
        _, data = read_response(sock)
    position = 4 + 2 + 4 + 4  # throttle, error, session id, topic count
    (size,) = struct.unpack_from(">h", data, position)
    position += 2 + size + 4  # name, partition count
    _, error, high_watermark = struct.unpack_from(">ihq", data, position)
    position += 4 + 2 + 8 + 8 + 8  # index, error, hw, lso, log start
    (aborted,) = struct.unpack_from(">i", data, position)
    position += 4 + max(aborted, 0) * 16
    preferred, size = struct.unpack_from(">ii", data, position)
    position += 8
    return error, high_watermark, preferred, data[position:position + max(size, 0)]


class Reader:
    """An assigned confluent-kafka consumer of `topic`-0 from offset 0, in `rack` if given."""

    def __init__(self, by_id, topic, rack=None):
        from confluent_kafka import Consumer, TopicPartition
        bootstrap = ",".join(n.broker.bootstrap for n in by_id.values() if n.broker.alive())
        config = {"bootstrap.servers": bootstrap, "group.id": "unused",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest",
                  "fetch.wait.max.ms": 100}
        if rack is not None:
            config["client.rack"] = rack
        self.consumer = Consumer(config)
        self.consumer.assign([TopicPartition(topic, 0, 0)])
        self.values = []

    def read_until(self, count, timeout=40):
        deadline = time.monotonic() + timeout
        while len(self.values) < count and time.monotonic() < deadline:
            message = self.consumer.poll(0.2)
            if message is None or message.error():
                continue
            self.values.append(message.value().decode())
        return self.values

    def close(self):
        self.consumer.close()


def read_all(by_id, topic, count, rack=None):
    reader = Reader(by_id, topic, rack)
    try:
        return reader.read_until(count)
    finally:
        reader.close()


def test_a_consumer_reads_from_the_follower_in_its_rack(spate_factory):
    by_id = rack_cluster(spate_factory, "--replica-selector", "rack-aware")
    nodes = list(by_id.values())
    # Racks in Metadata and DescribeCluster (confluent-kafka's and kafka-python's).
    assert metadata_racks(nodes[0].broker.port) == RACKS
    client = admin(nodes[1])
    cluster = client.describe_cluster().result(timeout=20)
    assert {n.id: n.rack for n in cluster.nodes} == RACKS
    from kafka.admin import KafkaAdminClient
    client = KafkaAdminClient(bootstrap_servers=nodes[2].broker.bootstrap)
    described = client.describe_cluster()
    client.close()
    assert {b["broker_id"]: b["rack"] for b in described["brokers"]} == RACKS, described

    leader, epoch, (near, far) = replicated_topic(by_id, "near")
    acknowledged, errors = produce(nodes, "near", [0], 200, "one")
    assert not errors and len(acknowledged[0]) == 200
    written = acknowledged[0]

    # The wire: the leader names the follower of the client's rack, and sends no records.
    port = by_id[leader].broker.port
    error, high_watermark, preferred, records = fetch_v11(port, "near", 0, RACKS[near], epoch)
    assert (error, high_watermark, preferred, records) == (0, 200, near, b"")
    # No rack, an unknown one, or the leader's own: the leader serves.
    for rack in ("", "zz", RACKS[leader]):
        error, _, preferred, records = fetch_v11(port, "near", 0, rack, epoch)
        assert (error, preferred) == (0, -1) and records, rack
    # The follower serves a consumer's v11 fetch below its high watermark (learned from the
    # leader's answers) ...
    near_port = by_id[near].broker.port

    def follower_serves():
        error, high_watermark, preferred, records = fetch_v11(near_port, "near", 0, "b")
        return error == 0 and high_watermark == 200 and preferred == -1 and records

    wait_for("the follower serving up to 200", follower_serves)
    # ... answers for a leader epoch newer than its own as Kafka does (an older one: below)
    assert fetch_v11(near_port, "near", 0, "", epoch + 1)[0] == UNKNOWN_LEADER_EPOCH
    assert fetch_v11(near_port, "near", 0, "", epoch)[0] == 0
    # ... past its log end OFFSET_OUT_OF_RANGE; and not before v11 (no client metadata).
    assert fetch_v11(near_port, "near", 201, "")[0] == OFFSET_OUT_OF_RANGE
    with connect(near_port) as sock:
        sock.sendall(fetch_v4(b"near", 0, 0, 6, max_wait_ms=0))
        _, data = read_response(sock)
    assert fetch_v4_result(data)[0] == NOT_LEADER_OR_FOLLOWER

    # Between the follower's high watermark and its log end: nothing yet, no error. The
    # other follower stopped holds the leader's high watermark at 200 while the near one
    # takes acks=1 writes.
    os.kill(by_id[far].broker.pid, signal.SIGSTOP)
    try:
        from confluent_kafka import Producer
        producer = Producer({"bootstrap.servers": by_id[leader].broker.bootstrap, "acks": 1})
        for i in range(5):
            producer.produce("near", f"ahead-{i}".encode(), partition=0)
        assert producer.flush(10) == 0
        wait_for("the near follower at 205", lambda: partition_metric(
            by_id[near], "spate_partition_log_end_offset", "near") == 205, timeout=5)
        error, high_watermark, _, records = fetch_v11(near_port, "near", 201, "")
        assert (error, records) == (0, b"") and high_watermark == 200
        assert fetch_v11(near_port, "near", 206, "")[0] == OFFSET_OUT_OF_RANGE
    finally:
        os.kill(by_id[far].broker.pid, signal.SIGCONT)
    written += [f"ahead-{i}" for i in range(5)]
    wait_for("the high watermark at 205 everywhere", lambda: all(
        partition_metric(n, "spate_partition_high_watermark", "near") == 205 for n in nodes))

    # A consumer in the near follower's rack reads everything from it: the follower's bytes
    # out grow by at least its log's size, the other follower serves nothing.
    assert bytes_out(by_id[near], "near") > 0, "the raw fetches above read there"
    before = bytes_out(by_id[near], "near")
    assert read_all(by_id, "near", 205, rack=RACKS[near]) == written
    size = partition_metric(by_id[near], "spate_partition_size_bytes", "near")
    assert bytes_out(by_id[near], "near") - before >= size > 0
    assert bytes_out(by_id[far], "near") == 0

    # Without a rack, in an unknown rack or in the leader's: the leader serves, not them.
    before = bytes_out(by_id[near], "near")
    for rack in (None, "zz", RACKS[leader]):
        assert read_all(by_id, "near", 205, rack=rack) == written, rack
    assert bytes_out(by_id[near], "near") == before
    assert bytes_out(by_id[far], "near") == 0


def test_after_its_follower_dies_the_consumer_reads_from_the_leader(spate_factory):
    by_id = rack_cluster(spate_factory, "--replica-selector", "rack-aware")
    nodes = list(by_id.values())
    leader, epoch, (near, far) = replicated_topic(by_id, "failing")
    acknowledged, errors = produce(nodes, "failing", [0], 100, "before")
    assert not errors
    reader = Reader(by_id, "failing", rack=RACKS[near])
    try:
        assert reader.read_until(100) == acknowledged[0]
        served = bytes_out(by_id[near], "failing")
        assert served > 0, "read from the follower in the consumer's rack"
        by_id[near].broker.kill9()
        live = [by_id[leader], by_id[far]]
        more, errors = produce(live, "failing", [0], 100, "after")
        assert not errors and len(more[0]) == 100
        expected = acknowledged[0] + more[0]
        read = reader.read_until(200, timeout=60)
        assert read == expected, f"read {len(read)}, {len(set(read))} distinct"
        # Not from the other follower (another rack): from the leader.
        assert bytes_out(by_id[far], "failing") == 0
        # The ISR shrank in the same leader epoch (KIP-497: only the partition epoch moved),
        # so the consumer's epoch is still current on the leader and on the follower.
        for node_id in (leader, far):
            port = by_id[node_id].broker.port
            assert fetch_v11(port, "failing", 0, "", epoch)[0] == 0
    finally:
        reader.close()


def test_with_the_default_selector_consumers_read_from_the_leader(spate_factory):
    by_id = rack_cluster(spate_factory)
    nodes = list(by_id.values())
    leader, epoch, (near, far) = replicated_topic(by_id, "plain")
    acknowledged, errors = produce(nodes, "plain", [0], 100, "x")
    assert not errors
    port = by_id[leader].broker.port
    error, _, preferred, records = fetch_v11(port, "plain", 0, RACKS[near], epoch)
    assert (error, preferred) == (0, -1) and records
    assert read_all(by_id, "plain", 100, rack=RACKS[near]) == acknowledged[0]
    assert bytes_out(by_id[near], "plain") == 0
    assert bytes_out(by_id[far], "plain") == 0


def test_a_restarted_follower_starts_from_its_checkpointed_high_watermark(spate_factory):
    """A follower holds records that are not committed (one in-sync follower is stopped, so
    the leader's high watermark stays behind): killed and restarted, it starts from the high
    watermark it checkpointed (`high-watermarks-<shard>`, every 5 s), not from its log end,
    so a consumer reading from it never sees what is not committed. Once the stopped one is
    back, everything is committed and the high watermarks reach the log end."""
    # Sessions and lag time far longer than the stop: the stopped follower stays in the ISR.
    by_id = rack_cluster(spate_factory, "--replica-lag-time-max-ms", "60000",
                         session_timeout_ms=30000)
    leader_id, _, (first_id, second_id) = replicated_topic(by_id, "hwcp")
    leader, follower, stopped = by_id[leader_id], by_id[first_id], by_id[second_id]
    acknowledged, errors = produce(list(by_id.values()), "hwcp", [0], 20, "committed")
    assert errors == []
    wait_for("the high watermark at 20 everywhere", lambda: all(
        partition_metric(node, "spate_partition_high_watermark", "hwcp") == 20
        for node in by_id.values()))
    os.kill(stopped.broker.pid, signal.SIGSTOP)
    try:
        # A fetch the stopped follower left waiting at the leader answers within 500 ms.
        time.sleep(1.5)
        with connect(leader.broker.port, timeout=15) as sock:
            for i in range(5):
                batch = record_batch([f"pending-{i}".encode()])
                sock.sendall(produce_v3(b"hwcp", 0, batch, 100 + i, acks=1))
                assert produce_v3_result(read_response(sock)[1])[0] == 0
        wait_for("the running follower holding the pending records", lambda: partition_metric(
            follower, "spate_partition_log_end_offset", "hwcp") == 25)
        assert partition_metric(follower, "spate_partition_high_watermark", "hwcp") == 20
        checkpoint = follower.broker.data_dir / "__spate_meta" / "high-watermarks-0"
        wait_for("the follower's checkpoint", lambda: checkpoint.exists()
                 and "hwcp 0 20" in checkpoint.read_text().splitlines(), timeout=15)
        follower.broker.kill9()
        follower.broker.start()
        wait_for("the restarted follower's partition", lambda: partition_metric(
            follower, "spate_partition_log_end_offset", "hwcp") == 25, timeout=30)
        seen = set()
        for _ in range(20):
            seen.add(partition_metric(follower, "spate_partition_high_watermark", "hwcp"))
            time.sleep(0.1)
        assert seen == {20}, f"the restarted follower's high watermark went {sorted(seen)}"
        error, high_watermark, _, records = fetch_v11(follower.broker.port, "hwcp", 20, "b")
        assert b"pending" not in records, (error, high_watermark)
    finally:
        os.kill(stopped.broker.pid, signal.SIGCONT)
    wait_for("every high watermark at the log end", lambda: all(
        partition_metric(node, "spate_partition_high_watermark", "hwcp") == 25
        for node in by_id.values()), timeout=30)
