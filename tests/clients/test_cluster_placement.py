"""Rack-aware replica placement (issue 13, item 5): four `spate` processes on 127.0.0.1, in
racks a, a, b and c (`--rack`).

A topic of 24 partitions with replication factor 3, created with confluent-kafka's
AdminClient, has every partition on three distinct brokers in three distinct racks (Kafka's
rack-alternating round-robin puts one replica in each rack while racks remain) and its
leaders spread evenly (6 on each broker); the 12 partitions CreatePartitions adds get the
same. Every node's Metadata says so alike, and confluent-kafka's `list_topics` agrees.
Placement over consecutive node ids (the previous version's) fails this: three of every four
partitions held both brokers of rack a. Every wait is bounded.
"""

import pytest

from conftest import TARGET, free_port
from test_cluster import Node, admin, agreed_leader, metadata_v1, wait_for
from test_follower_fetching import metadata_racks

pytestmark = pytest.mark.skipif(TARGET != "spate", reason="spate's cluster options")

RACKS = {1: "a", 2: "a", 3: "b", 4: "c"}


def racked_cluster(spate_factory):
    """Four voters in RACKS, started together; the Nodes once a leader is agreed and every
    broker is registered and unfenced."""
    controller_ports = {node_id: free_port() for node_id in RACKS}
    voters = ",".join(f"{node_id}@127.0.0.1:{port}" for node_id, port in controller_ports.items())
    nodes = []
    for node_id, rack in RACKS.items():
        port = controller_ports[node_id]
        broker = spate_factory("--cores", "1", "--min-free-bytes", "0",
                               "--node-id", str(node_id),
                               "--controller-listen", f"127.0.0.1:{port}",
                               "--controller-quorum-voters", voters,
                               "--rack", rack, start=False)
        nodes.append(Node(node_id, broker, port))
    for node in nodes:
        node.broker.start()
    wait_for("a leader all four agree on", lambda: agreed_leader(nodes, brokers=tuple(RACKS)))
    return nodes


def agreed_map(nodes, topic, partitions):
    """{partition: (leader, replicas, isr)} of `topic` when every node's Metadata lists all
    four brokers and gives the same map of `partitions` partitions, all replicas in sync;
    None before."""
    maps = []
    for node in nodes:
        brokers, found = metadata_v1(node.broker.port)
        if len(brokers) < len(RACKS) or topic not in found or found[topic][0] != 0:
            return None
        maps.append(found[topic][1])
    if any(m != maps[0] for m in maps) or len(maps[0]) != partitions:
        return None
    if any(sorted(isr) != sorted(replicas) for _, replicas, isr in maps[0].values()):
        return None
    return maps[0]


def check_placement(by_partition, partitions):
    """Every partition on three brokers in three racks; leaders within one of each other."""
    assert sorted(by_partition) == list(range(partitions))
    leaders = {node_id: 0 for node_id in RACKS}
    for partition, (leader, replicas, _) in sorted(by_partition.items()):
        assert len(set(replicas)) == 3, (partition, replicas)
        racks = {RACKS[replica] for replica in replicas}
        assert racks == {"a", "b", "c"}, (partition, replicas, by_partition)
        assert leader == replicas[0], (partition, leader, replicas)
        leaders[leader] += 1
    assert max(leaders.values()) - min(leaders.values()) <= 1, leaders
    return leaders


def test_replicas_span_racks_and_leaders_spread(spate_factory):
    from confluent_kafka.admin import NewPartitions, NewTopic

    nodes = racked_cluster(spate_factory)
    for node in nodes:
        assert metadata_racks(node.broker.port) == RACKS
    client = admin(nodes[1])
    futures = client.create_topics([NewTopic("racked", 24, 3)], operation_timeout=30,
                                   request_timeout=40)
    futures["racked"].result(timeout=45)
    placed = wait_for("the topic alike on all four", lambda: agreed_map(nodes, "racked", 24))
    assert check_placement(placed, 24) == {1: 6, 2: 6, 3: 6, 4: 6}
    # The client's own view of the same Metadata.
    topic = admin(nodes[2]).list_topics(topic="racked", timeout=10).topics["racked"]
    for partition, meta in topic.partitions.items():
        assert (meta.leader, list(meta.replicas)) == placed[partition][:2]
    # New partitions continue the round-robin, on three racks each.
    futures = client.create_partitions([NewPartitions("racked", 36)], operation_timeout=30,
                                       request_timeout=40)
    futures["racked"].result(timeout=45)
    grown = wait_for("the grown topic alike on all four", lambda: agreed_map(nodes, "racked", 36))
    assert {p: grown[p] for p in range(24)} == placed
    check_placement({p - 24: grown[p] for p in range(24, 36)}, 12)
    check_placement(grown, 36)
