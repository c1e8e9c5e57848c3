"""Producer ids in blocks on the metadata log (issue 13, KIP-730), with three real `spate`
processes on 127.0.0.1.

Each node asks the log for a block of 1000 producer ids (a ProducerIds record; the block is
decided when the record is applied, the same on every node) and hands ids out from it.
Node 2 starts after the two others got their first blocks, with the producer id file an
earlier version left when it interleaved ids by node id (`block_end = 5`: every id it handed
out was below 5 * 1024): its block, and every block after it, starts at or above 5120, as
every block does: they start at 2^50, above every interleaved id (the state's rules are
unit-tested in `cluster::state`). confluent-kafka idempotent and transactional producers
(their InitProducerId answered by each of the three nodes) write to one partition, and the
producer ids in the partition's batch headers are distinct; raw InitProducerId requests to
each node get ids from that node's own block. After a restart of all three, new ids are
above every id before. Raw InitProducerId requests to the two other nodes run while
the active controller is killed with kill -9 (the nodes ask for further blocks meanwhile):
every id handed out, before, during and after, and by the restarted node, is distinct.
A second test: a registered broker that never asked for a block (its producer id file
unreadable, so it cannot say which ids it handed out) and is then killed for good does not
hold the others' producer ids up (the previous rule waited for its report): a fresh
idempotent producer through a live node gets an id and writes.
Every wait is bounded.
"""

import struct
import threading
import time

import pytest

from conftest import TARGET, free_port
from kafka_wire import connect, init_producer_id_v0, init_producer_id_v0_result, read_response
from kafka_wire import fetch_v4, fetch_v4_result
from test_cluster import Node, agreed_leader, wait_for
from test_coordinator_failover import coordinator
from test_replication import all_in_sync, create_replicated, partition_states

pytestmark = pytest.mark.skipif(TARGET != "spate", reason="spate's cluster options")

TOPIC = "pids"
LEGACY_BLOCK_END = 5
LEGACY_END = LEGACY_BLOCK_END * 1024
BLOCK_SIZE = 1000
BLOCKS_START = 1 << 50
COORDINATOR_LOAD_IN_PROGRESS = 14


def make_nodes(spate_factory):
    """Three voters, not started yet."""
    controller_ports = [free_port() for _ in range(3)]
    voters = ",".join(f"{i + 1}@127.0.0.1:{port}" for i, port in enumerate(controller_ports))
    nodes = []
    for i, port in enumerate(controller_ports):
        broker = spate_factory("--cores", "1", "--min-free-bytes", "0",
                               "--node-id", str(i + 1),
                               "--controller-listen", f"127.0.0.1:{port}",
                               "--controller-quorum-voters", voters,
                               "--broker-heartbeat-interval-ms", "200",
                               "--broker-session-timeout-ms", "1500", start=False)
        nodes.append(Node(i + 1, broker, port))
    return nodes


def start_nodes(spate_factory):
    """Three voters; node 2's data dir holds the producer id file of an earlier version."""
    nodes = make_nodes(spate_factory)
    meta = nodes[1].broker.data_dir / "__spate_meta"
    meta.mkdir(parents=True)
    (meta / "producer_ids").write_text(f"block_end = {LEGACY_BLOCK_END}\n")
    # Nodes 1 and 3 form the quorum and get their first blocks; node 2 comes later.
    for node in (nodes[0], nodes[2]):
        node.broker.start()
    for node in (nodes[0], nodes[2]):
        wait_for(f"node {node.node_id}'s first block",
                 lambda: "got producer ids" in node.broker.log_text())
    nodes[1].broker.start()
    return nodes


def raw_producer_id(sock, correlation_id):
    """One InitProducerId v0 (idempotent) on `sock`: the id, or None when the node answered
    COORDINATOR_LOAD_IN_PROGRESS (no block yet; clients retry)."""
    sock.sendall(init_producer_id_v0(correlation_id))
    error, producer_id, _ = init_producer_id_v0_result(read_response(sock)[1])
    if error == COORDINATOR_LOAD_IN_PROGRESS:
        return None
    assert error == 0, error
    return producer_id


def raw_producer_ids(node, count):
    ids = []
    with connect(node.broker.port, timeout=20) as sock:
        while len(ids) < count:
            producer_id = raw_producer_id(sock, len(ids))
            if producer_id is None:
                time.sleep(0.1)
            else:
                ids.append(producer_id)
    return ids


def batch_producer_ids(nodes):
    """The producer id of every batch of partition 0 (read from its leader)."""
    states = wait_for("the partition's state", lambda: partition_states(nodes, TOPIC))
    leader = next(node for node in nodes if node.node_id == states[0][1])
    found = set()
    offset = 0
    with connect(leader.broker.port) as sock:
        while True:
            sock.sendall(fetch_v4(TOPIC.encode(), 0, offset, 1, max_wait_ms=0))
            error, high_watermark, data = fetch_v4_result(read_response(sock)[1])
            assert error == 0, error
            if offset >= high_watermark:
                return found
            position = 0
            while position + 12 <= len(data):
                base_offset, length = struct.unpack_from(">qi", data, position)
                if position + 12 + length > len(data):
                    break
                (producer_id,) = struct.unpack_from(">q", data, position + 43)
                (last_delta,) = struct.unpack_from(">i", data, position + 23)
                found.add(producer_id)
                offset = base_offset + last_delta + 1
                position += 12 + length


def transactional_id_on(nodes, node_id, tag):
    """A transactional id every node names `node_id` the coordinator of (None while none is:
    after a restart leaderships come back to their preferred replicas in a while)."""
    for i in range(100):
        transactional_id = f"pids-{tag}-{i}"
        if coordinator(nodes, transactional_id, key_type=1) == node_id:
            return transactional_id
    return None


def write_with_clients(nodes, tag, spread):
    """On each node: a transactional producer commits a transaction (coordinated by that
    node when `spread`), and an idempotent producer that knows only that node writes; six
    producers."""
    from confluent_kafka import Producer
    for node in nodes:
        transactional_id = f"pids-{tag}-{node.node_id}"
        if spread:
            transactional_id = wait_for(f"a transactional id coordinated by {node.node_id}",
                                        lambda: transactional_id_on(nodes, node.node_id, tag))
        producer = Producer({"bootstrap.servers": node.broker.bootstrap,
                             "transactional.id": transactional_id, "linger.ms": 5})
        producer.init_transactions(60)
        producer.begin_transaction()
        for i in range(3):
            producer.produce(TOPIC, f"{tag}-txn-{node.node_id}-{i}".encode(), partition=0)
        producer.commit_transaction(60)
        producer = Producer({"bootstrap.servers": node.broker.bootstrap,
                             "enable.idempotence": True, "linger.ms": 5})
        for i in range(3):
            producer.produce(TOPIC, f"{tag}-idem-{node.node_id}-{i}".encode(), partition=0)
        assert producer.flush(45) == 0


def test_producer_ids_come_in_blocks_from_the_metadata_log(spate_factory):
    nodes = start_nodes(spate_factory)
    by_id = {node.node_id: node for node in nodes}
    wait_for("a leader all three agree on", lambda: agreed_leader(nodes))
    create_replicated(nodes[0], TOPIC, 1)
    wait_for("the partition in sync", lambda: all_in_sync(nodes, TOPIC, 1))

    # Real clients on every node: six producers, six distinct ids.
    write_with_clients(nodes, "a", spread=True)
    first = batch_producer_ids(nodes)
    assert len(first) == 6, first
    # Raw requests: each node hands out ids from a block of its own; node 2's is above
    # every id it handed out before blocks.
    raw = {node.node_id: raw_producer_ids(node, 3) for node in nodes}
    assert min(raw[2]) >= LEGACY_END, raw
    assert min(i for ids in raw.values() for i in ids) >= BLOCKS_START, raw
    blocks = {node_id: {(i - BLOCKS_START) // BLOCK_SIZE for i in ids}
              for node_id, ids in raw.items()}
    assert all(len(found) == 1 for found in blocks.values()), raw
    assert len(set.union(*blocks.values())) == 3, raw
    before = first | {i for ids in raw.values() for i in ids}
    assert len(before) == 6 + 9, before
    for node in nodes:
        assert "got producer ids" in node.broker.log_text()

    # A restart of all three: every new id is above every id before.
    for node in nodes:
        assert node.broker.stop() == 0
    for node in nodes:
        node.broker.start()
    wait_for("a leader all three agree on after the restart", lambda: agreed_leader(nodes))
    # (Leaderships of `__transaction_state` come back to their preferred replicas only in a
    # while after a restart: these transactional ids need not be coordinated by each node.)
    write_with_clients(nodes, "b", spread=False)
    second = batch_producer_ids(nodes) - first
    assert len(second) == 6, second
    raw_after = [i for node in nodes for i in raw_producer_ids(node, 3)]
    assert min(second | set(raw_after)) > max(before), (sorted(before), sorted(second), raw_after)
    handed_out = sorted(before | second) + raw_after

    # kill -9 of the active controller while the two others hand out ids past their blocks:
    # no id twice.
    leader, _, _ = wait_for("a leader", lambda: agreed_leader(nodes))
    survivors = [node for node in nodes if node.node_id != leader]
    results = {}
    started = threading.Barrier(3)

    def hand_out(node):
        ids = []
        with connect(node.broker.port, timeout=20) as sock:
            started.wait(30)
            while len(ids) < 2500:
                producer_id = raw_producer_id(sock, len(ids) % 1000)
                if producer_id is None:
                    time.sleep(0.05)
                else:
                    ids.append(producer_id)
        results[node.node_id] = ids

    threads = [threading.Thread(target=hand_out, args=(node,)) for node in survivors]
    for thread in threads:
        thread.start()
    started.wait(30)
    time.sleep(0.3)
    by_id[leader].broker.kill9()
    for thread in threads:
        thread.join(120)
    assert sorted(results) == sorted(node.node_id for node in survivors), results
    by_id[leader].broker.start()
    survivors_ids = [i for ids in results.values() for i in ids]
    restarted = raw_producer_ids(by_id[leader], 10)
    everything = handed_out + survivors_ids + restarted
    assert len(set(everything)) == len(everything), "a producer id handed out twice"
    # The restarted node's block comes after every block given before.
    assert min(restarted) > max(handed_out + survivors_ids)
    # Each survivor went through more than two blocks of 1000 (asked around the kill).
    for node_id, ids in results.items():
        assert len({(i - BLOCKS_START) // BLOCK_SIZE for i in ids}) >= 3, node_id


def test_a_dead_registered_broker_does_not_hold_producer_ids_up(spate_factory):
    from confluent_kafka import Producer
    from test_cluster import create_topic, describe_cluster
    nodes = make_nodes(spate_factory)
    by_id = {node.node_id: node for node in nodes}
    # Node 3 cannot read its producer id file: it registers but never asks for a block (it
    # never guesses which ids it handed out), as a broker that registered and died at once.
    meta = by_id[3].broker.data_dir / "__spate_meta"
    meta.mkdir(parents=True)
    (meta / "producer_ids").write_text("block_end = \"damaged\"\n")
    for node in nodes:
        node.broker.start()
    wait_for("a leader all three agree on", lambda: agreed_leader(nodes))
    wait_for("node 3 failing to ask for producer ids",
             lambda: "cannot ask for producer ids" in by_id[3].broker.log_text())
    assert "got producer ids" not in by_id[3].broker.log_text()
    by_id[3].broker.kill9()
    live = [by_id[1], by_id[2]]
    wait_for("node 3 fenced", lambda: all(describe_cluster(node.broker.port)[1] == [1, 2]
                                         for node in live))
    assert create_topic(by_id[1], TOPIC, 1, replication_factor=2) is None
    wait_for("the partition in sync on the live nodes",
             lambda: all_in_sync(live, TOPIC, 1, replicas=2))

    # A fresh idempotent producer that knows only node 1 gets an id and writes.
    producer = Producer({"bootstrap.servers": by_id[1].broker.bootstrap, "acks": "all",
                         "enable.idempotence": True, "linger.ms": 5,
                         "message.timeout.ms": 30000})
    errors = []
    for i in range(5):
        producer.produce(TOPIC, f"dead-{i}".encode(), partition=0,
                         on_delivery=lambda err, _: err and errors.append(err))
    assert producer.flush(45) == 0
    assert errors == []
    written = batch_producer_ids(live)
    assert len(written) == 1 and min(written) >= BLOCKS_START, written
    # Node 2 hands out ids of its own block too.
    raw = raw_producer_ids(by_id[2], 3)
    assert min(raw) >= BLOCKS_START and not set(raw) & written, (raw, written)
    for node in live:
        assert "got producer ids" in node.broker.log_text()
        assert "wait for brokers" not in node.broker.log_text()
