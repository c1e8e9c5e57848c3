"""Exactly-once consume-transform-produce across nodes (issue 14): on three real `spate`
processes, with a consumer group and a transactional id whose coordinators are different
nodes (chosen with FindCoordinator).

A confluent-kafka loop reads an input topic, writes one output record per input record in
a transaction, and sends the consumer's positions with send_offsets_to_transaction: the
transaction's coordinator adds the group's partition of `__consumer_offsets` to the
transaction (AddOffsetsToTxn), TxnOffsetCommit goes to the group's coordinator (another
node), which keeps the offsets pending, and EndTxn's marker in that partition settles them.
Committed transactions move the group's committed offsets (a fresh consumer's OffsetFetch
sees exactly them); an aborted one moves nothing. Then the group coordinator's node is
killed with kill -9 after a transaction's offsets were sent and before it commits: the
commit completes at the partition's next leader, which replayed the pending offsets from
the replicated log, the offsets are there, and the loop goes on to the end (with a new
instance of the producer: librdkafka's send_offsets_to_transaction does not look for a new
group coordinator once the old one left Metadata, see below). A read_committed reader of
the output sees each input record exactly once. Every wait is bounded.
"""

import time

import pytest

from conftest import TARGET
from test_cluster import wait_for
from test_coordinator_failover import committed, coordinator
from test_replication import all_in_sync, create_replicated, produce, replicated_cluster

pytestmark = pytest.mark.skipif(TARGET != "spate", reason="spate's cluster options")

SOURCE, SINK = "eos-in", "eos-out"
PARTITIONS = [0, 1, 2]
PER_PARTITION = 30
TXN_RECORDS = 10
OFFSET_INVALID = -1001


def keys_on_different_nodes(nodes):
    """A group id and a transactional id whose coordinators (as every node names them) are
    different nodes: (group, its node, transactional id, its node)."""
    group = "eos-group"
    group_node = wait_for("the group's coordinator", lambda: coordinator(nodes, group))
    for i in range(100):
        transactional_id = f"eos-txn-{i}"
        txn_node = wait_for("a transaction coordinator",
                            lambda: coordinator(nodes, transactional_id, key_type=1))
        if txn_node != group_node:
            return group, group_node, transactional_id, txn_node
    raise AssertionError("no transactional id coordinated away from the group")


class Loop:
    """A consume-transform-produce loop: one transaction per `step`."""

    def __init__(self, bootstrap, group, transactional_id):
        from confluent_kafka import Consumer
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": group,
            "auto.offset.reset": "earliest", "enable.auto.commit": False,
            "isolation.level": "read_committed", "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 500})
        # A revocation while a transaction is open means its records may be read again
        # (the partitions come back at the committed offsets): such a transaction aborts.
        self.revoked = False
        self.consumer.subscribe([SOURCE], on_revoke=self.on_revoke)
        self.transactional_id = transactional_id
        self.producer = self.transactional(bootstrap)
        # The next offset of each input partition after the committed transactions.
        self.next = {}
        self.done = []

    def transactional(self, bootstrap):
        from confluent_kafka import Producer
        producer = Producer({
            "bootstrap.servers": bootstrap, "transactional.id": self.transactional_id,
            "linger.ms": 5, "socket.timeout.ms": 10000, "transaction.timeout.ms": 120000})
        producer.init_transactions(60)
        return producer

    def restart_producer(self, bootstrap):
        """A new instance of the producer (the same transactional id, the next epoch)."""
        self.producer.flush(10)
        self.producer = self.transactional(bootstrap)

    def on_revoke(self, consumer, partitions):
        self.revoked = True

    def read(self, limit):
        """Up to `limit` records, each transformed into the open transaction."""
        batch = []
        deadline = time.monotonic() + 10
        idle = 0
        while len(batch) < limit and time.monotonic() < deadline:
            message = self.consumer.poll(0.2)
            if message is None or message.error():
                idle += 1
                if batch and idle > 3:
                    break
                continue
            value = message.value().decode()
            batch.append((message.partition(), message.offset(), value))
            self.producer.produce(SINK, f"out-{value}".encode(), partition=message.partition())
        return batch

    def send_offsets(self):
        positions = self.consumer.position(self.consumer.assignment())
        positions = [tp for tp in positions if tp.offset >= 0]
        self.producer.send_offsets_to_transaction(
            positions, self.consumer.consumer_group_metadata(), 60)

    def begin(self, limit=TXN_RECORDS):
        """Begins a transaction, reads into it, flushes it and sends its offsets."""
        self.revoked = False
        self.producer.begin_transaction()
        batch = self.read(limit)
        assert self.producer.flush(60) == 0
        self.send_offsets()
        return batch

    def commit(self, batch):
        self.producer.commit_transaction(120)
        for partition, offset, _ in batch:
            self.next[partition] = max(self.next.get(partition, 0), offset + 1)
        self.done.extend(batch)

    def abort(self):
        """Aborts the open transaction and goes back to the committed offsets."""
        from confluent_kafka import TopicPartition
        from confluent_kafka import KafkaException
        self.producer.abort_transaction(60)
        for tp in self.consumer.assignment():
            start = self.next.get(tp.partition, 0)
            try:
                self.consumer.seek(TopicPartition(SOURCE, tp.partition, start))
            except KafkaException:
                pass  # not fetching yet: it starts from the committed offset anyway

    def step(self):
        """One whole transaction; an abortable error (a rebalance meanwhile) aborts it."""
        from confluent_kafka import KafkaException
        try:
            batch = self.begin()
            if self.revoked:
                self.abort()
                return
            self.commit(batch)
        except KafkaException as e:
            error = e.args[0]
            if not error.txn_requires_abort():
                raise
            self.abort()

    def expected(self):
        return {p: self.next.get(p, OFFSET_INVALID) for p in PARTITIONS}

    def close(self):
        self.consumer.close()


def read_committed_sink(bootstrap):
    from confluent_kafka import Consumer, TopicPartition
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": "eos-checker",
                       "isolation.level": "read_committed", "enable.auto.commit": False,
                       "enable.partition.eof": True, "auto.offset.reset": "earliest"})
    reader.assign([TopicPartition(SINK, p, 0) for p in PARTITIONS])
    seen, at_end = [], set()
    deadline = time.monotonic() + 60
    while len(at_end) < len(PARTITIONS) and time.monotonic() < deadline:
        message = reader.poll(0.2)
        if message is None:
            continue
        if message.error():
            at_end.add(message.partition())
            continue
        seen.append(message.value().decode())
    reader.close()
    return seen


def test_exactly_once_with_the_group_and_the_transaction_on_different_nodes(spate_factory):
    nodes, by_id = replicated_cluster(spate_factory)
    for topic in (SOURCE, SINK):
        create_replicated(nodes[0], topic, len(PARTITIONS), min_insync=2)
        wait_for(f"{topic} in sync", lambda: all_in_sync(nodes, topic, len(PARTITIONS)))
    inputs, errors = produce(nodes, SOURCE, PARTITIONS, PER_PARTITION, "in")
    assert errors == [] and all(len(v) == PER_PARTITION for v in inputs.values()), errors
    group, group_node, transactional_id, txn_node = keys_on_different_nodes(nodes)
    assert group_node != txn_node
    bootstrap = ",".join(node.broker.bootstrap for node in nodes)
    loop = Loop(bootstrap, group, transactional_id)

    # Two committed transactions: the group's committed offsets are exactly theirs.
    for _ in range(2):
        batch = loop.begin()
        assert batch and not loop.revoked, "the loop reads records"
        loop.commit(batch)
    after_commits = loop.expected()
    assert committed(bootstrap, group, SOURCE, PARTITIONS) == after_commits

    # An aborted transaction moves nothing.
    aborted = loop.begin()
    assert aborted
    loop.abort()
    assert committed(bootstrap, group, SOURCE, PARTITIONS) == after_commits

    # The group coordinator's node dies after a transaction's offsets went to it and before
    # the transaction commits: the commit ends at the partition's next leader. (Leadership
    # may have moved since the start, to the preferred replicas: asked again here.)
    group_node = wait_for("the group's coordinator", lambda: coordinator(nodes, group))
    txn_node = wait_for("the transaction's coordinator",
                        lambda: coordinator(nodes, transactional_id, key_type=1))
    assert group_node != txn_node, (group_node, txn_node)
    victim = by_id[group_node]
    batch = loop.begin()
    assert batch and not loop.revoked
    victim.broker.kill9()
    killed_at = time.monotonic()
    loop.commit(batch)
    committed_s = time.monotonic() - killed_at
    survivors = [node for node in nodes if node is not victim]
    surviving = ",".join(node.broker.bootstrap for node in survivors)
    new_node = wait_for("a new group coordinator",
                        lambda: coordinator(survivors, group) not in (None, group_node)
                        and coordinator(survivors, group), timeout=30)
    expected = loop.expected()
    offsets = wait_for("the offsets from the new group coordinator",
                       lambda: committed(surviving, group, SOURCE, PARTITIONS) == expected
                       or None, timeout=30)
    assert offsets

    # The loop goes on to the end of the input, with a new instance of the producer:
    # librdkafka 2.16's send_offsets_to_transaction waits for ever when the group
    # coordinator it cached was removed from Metadata (a fenced broker is, as in Kafka), and
    # ignores its timeout (librdkafka issues 5511 and 5456); a new instance asks anew.
    loop.restart_producer(surviving)
    total = PER_PARTITION * len(PARTITIONS)
    deadline = time.monotonic() + 120
    while len(loop.done) < total and time.monotonic() < deadline:
        loop.step()
    assert len(loop.done) == total, (len(loop.done), loop.next)
    assert committed(surviving, group, SOURCE, PARTITIONS) == {
        p: PER_PARTITION for p in PARTITIONS}
    loop.close()

    # Each input record is in the output exactly once (none of the aborted transaction's
    # copies, none written twice).
    seen = read_committed_sink(surviving)
    wanted = [f"out-{v}" for p in PARTITIONS for v in inputs[p]]
    assert sorted(seen) == sorted(wanted), (len(seen), len(wanted))
    print(f"group on node {group_node}, transaction on node {txn_node}; after kill -9 of "
          f"{group_node} the commit ended in {committed_s:.2f} s, coordinator now {new_node}")
