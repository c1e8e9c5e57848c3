"""Transactional offsets against plain commits and DeleteGroups, as Kafka's group coordinator
settles them (issue 14; `OffsetMetadataManager`), on three real `spate` processes.

A confluent-kafka transactional producer sends a simple group's offset with
send_offsets_to_transaction (TxnOffsetCommit, kept pending by the group's coordinator), then
a plain OffsetCommit of the same partition is written, then the transaction commits: the
plain commit, the later record, stays. In the other order the transaction's offset, the
later one, wins. A group whose only offset a transaction holds is deleted (DeleteGroups v0
on the wire: Kafka deletes it, with the pending offset) and the transaction's commit
afterwards brings nothing back. Every wait is bounded.
"""

import struct

import pytest

from conftest import TARGET
from kafka_wire import connect, frame, read_response, request_header
from test_cluster import wait_for
from test_coordinator_failover import committed, coordinator
from test_replication import all_in_sync, create_replicated, replicated_cluster

pytestmark = pytest.mark.skipif(TARGET != "spate", reason="spate's cluster options")

SOURCE, SINK = "txo-in", "txo-out"
OFFSET_INVALID = -1001
DELETE_GROUPS = 42


def delete_groups_v0(port, *groups):
    """DeleteGroups v0: [(group, error code)]."""
    body = struct.pack(">i", len(groups))
    for group in groups:
        body += struct.pack(">h", len(group)) + group.encode()
    with connect(port) as sock:
        sock.sendall(frame(request_header(DELETE_GROUPS, 0, 7) + body))
        _, data = read_response(sock)
    (count,) = struct.unpack_from(">i", data, 4)
    position, results = 8, []
    for _ in range(count):
        (size,) = struct.unpack_from(">h", data, position)
        name = data[position + 2:position + 2 + size].decode()
        (code,) = struct.unpack_from(">h", data, position + 2 + size)
        results.append((name, code))
        position += 2 + size + 2
    return results


def test_transactional_offsets_meet_plain_commits_and_deletion_as_in_kafka(spate_factory):
    from confluent_kafka import Consumer, Producer, TopicPartition
    nodes, _ = replicated_cluster(spate_factory)
    for topic in (SOURCE, SINK):
        create_replicated(nodes[0], topic, 1)
        wait_for(f"{topic} in sync", lambda: all_in_sync(nodes, topic, 1))
    bootstrap = ",".join(node.broker.bootstrap for node in nodes)
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": "txo-txn",
                         "linger.ms": 5})
    producer.init_transactions(60)

    def plain_commit(group, offset):
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                             "enable.auto.commit": False})
        consumer.commit(offsets=[TopicPartition(SOURCE, 0, offset)], asynchronous=False)
        consumer.close()

    def send_offset(group, offset):
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                             "enable.auto.commit": False})
        producer.begin_transaction()
        producer.produce(SINK, f"{group}-{offset}".encode(), partition=0)
        producer.send_offsets_to_transaction([TopicPartition(SOURCE, 0, offset)],
                                             consumer.consumer_group_metadata(), 30)
        consumer.close()

    # The transaction's offset, then a plain commit, then the transaction commits.
    send_offset("txo-plain-last", 5)
    plain_commit("txo-plain-last", 9)
    producer.commit_transaction(60)
    assert committed(bootstrap, "txo-plain-last", SOURCE, [0]) == {0: 9}

    # A plain commit, then the transaction's offset: the transaction's is the later one.
    plain_commit("txo-txn-last", 11)
    send_offset("txo-txn-last", 12)
    producer.commit_transaction(60)
    assert committed(bootstrap, "txo-txn-last", SOURCE, [0]) == {0: 12}

    # DeleteGroups of a group whose offset a transaction holds: deleted, with the pending
    # offset; the transaction's commit afterwards brings nothing back.
    # (Raw DeleteGroups to the group's coordinator: confluent-kafka's delete_consumer_groups
    # never completes against a cluster, with or without this change; see Known gaps.)
    send_offset("txo-deleted", 7)
    owner = wait_for("the group's coordinator", lambda: coordinator(nodes, "txo-deleted"))
    port = next(node.broker.port for node in nodes if node.node_id == owner)
    assert delete_groups_v0(port, "txo-deleted") == [("txo-deleted", 0)]
    producer.commit_transaction(60)
    assert committed(bootstrap, "txo-deleted", SOURCE, [0]) == {0: OFFSET_INVALID}
    # The transaction's records are committed all the same.
    producer.flush(10)
