"""Transactions with real clients (confluent-kafka / librdkafka, transaction version 1):
committed records are visible to read_committed consumers and aborted ones are not, while
read_uncommitted consumers see both; consume-transform-produce commits the group's offsets
with the output; zombies are fenced; a transaction past its timeout is aborted; restarts and
kill -9 in the middle of a transaction and after a commit keep the right visibility.

Every wait is bounded. Each test runs its own broker (port, data dir) from conftest.py.
"""

import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from client_helpers import CK_COMMON, unique_topic, wait_until


def create_topic(bootstrap, topic, partitions=1):
    admin = AdminClient({"bootstrap.servers": bootstrap, **CK_COMMON})
    futures = admin.create_topics([NewTopic(topic, partitions, 1)], request_timeout=15)
    futures[topic].result(timeout=20)


def txn_producer(bootstrap, transactional_id=None, **conf):
    settings = {
        "bootstrap.servers": bootstrap,
        "transactional.id": transactional_id or "tx-" + uuid.uuid4().hex[:10],
        "linger.ms": 5,
        **CK_COMMON,
    }
    settings.update(conf)
    producer = Producer(settings)
    producer.init_transactions(30)
    return producer


def produce_in_txn(producer, topic, values, partition=None):
    for value in values:
        if partition is None:
            producer.produce(topic, value=value)
        else:
            producer.produce(topic, value=value, partition=partition)
    assert producer.flush(30) == 0


def consumer(bootstrap, isolation, **conf):
    settings = {
        "bootstrap.servers": bootstrap,
        "group.id": "spate-txn-" + uuid.uuid4().hex[:8],
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
        "isolation.level": isolation,
        "fetch.wait.max.ms": 100,
        **CK_COMMON,
    }
    settings.update(conf)
    return Consumer(settings)


def read_to_end(bootstrap, topic, isolation, partitions=1, timeout=30.0):
    """Every value a consumer at `isolation` sees, reading each partition from the start to
    its end (the last stable offset for read_committed)."""
    c = consumer(bootstrap, isolation)
    try:
        c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        values, at_end = [], set()
        deadline = time.monotonic() + timeout
        while len(at_end) < partitions:
            assert time.monotonic() < deadline, f"did not reach the end in {timeout} s"
            msg = c.poll(0.2)
            if msg is None:
                continue
            if msg.error():
                assert msg.error().code() == -191, msg.error()  # _PARTITION_EOF
                at_end.add(msg.partition())
                continue
            values.append(msg.value())
        return values
    finally:
        c.close()


def high_watermark(bootstrap, topic, isolation, partition=0):
    """Latest offset asked with ListOffsets at `isolation` (read_committed: the LSO)."""
    c = consumer(bootstrap, isolation)
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10,
                                       cached=False)[1]
    finally:
        c.close()


def values(prefix, count):
    return [f"{prefix}{i}".encode() for i in range(count)]


# ---------------------------------------------------------------------------------------------


def test_committed_records_are_visible_and_aborted_ones_are_not(broker):
    topic = unique_topic("txn")
    create_topic(broker.bootstrap, topic, 2)
    producer = txn_producer(broker.bootstrap)
    for prefix, commit in (("c1-", True), ("a1-", False), ("c2-", True), ("a2-", False)):
        producer.begin_transaction()
        produce_in_txn(producer, topic, values(prefix, 6))
        if commit:
            producer.commit_transaction(30)
        else:
            producer.abort_transaction(30)
    committed = read_to_end(broker.bootstrap, topic, "read_committed", 2)
    everything = read_to_end(broker.bootstrap, topic, "read_uncommitted", 2)
    assert sorted(committed) == sorted(values("c1-", 6) + values("c2-", 6))
    assert sorted(everything) == sorted(
        values("c1-", 6) + values("a1-", 6) + values("c2-", 6) + values("a2-", 6))

    # An open transaction holds read_committed consumers back at its first offset.
    producer.begin_transaction()
    produce_in_txn(producer, topic, values("open-", 3), partition=0)
    end_before = high_watermark(broker.bootstrap, topic, "read_uncommitted") - 3
    assert high_watermark(broker.bootstrap, topic, "read_committed") == end_before
    assert b"open-0" not in read_to_end(broker.bootstrap, topic, "read_committed", 2)
    assert b"open-0" in read_to_end(broker.bootstrap, topic, "read_uncommitted", 2)
    producer.commit_transaction(30)
    wait_until(lambda: high_watermark(broker.bootstrap, topic, "read_committed")
               == high_watermark(broker.bootstrap, topic, "read_uncommitted"),
               10, "the LSO reaches the high watermark after the commit")
    assert b"open-2" in read_to_end(broker.bootstrap, topic, "read_committed", 2)


def source_and_sink(bootstrap, group_prefix, count):
    """A source topic holding `count` plain records ("in-0"...), an empty sink topic, and a
    read_committed consumer in a new group: (source, sink, group, consumer)."""
    source, sink = unique_topic("in"), unique_topic("out")
    create_topic(bootstrap, source)
    create_topic(bootstrap, sink)
    group = group_prefix + uuid.uuid4().hex[:8]
    plain = Producer({"bootstrap.servers": bootstrap, **CK_COMMON})
    for v in values("in-", count):
        plain.produce(source, value=v)
    assert plain.flush(30) == 0
    c = consumer(bootstrap, "read_committed", **{"group.id": group,
                                                  "enable.partition.eof": False})
    return source, sink, group, c


def test_consume_transform_produce_commits_offsets_with_the_output(broker):
    source, sink, group, c = source_and_sink(broker.bootstrap, "ctp-", 10)
    producer = txn_producer(broker.bootstrap)

    def transform(count, commit):
        taken = []
        deadline = time.monotonic() + 30
        while len(taken) < count:
            assert time.monotonic() < deadline, f"consumed {len(taken)} of {count}"
            msg = c.poll(0.2)
            if msg is None or msg.error():
                continue
            taken.append(msg)
        producer.begin_transaction()
        for msg in taken:
            producer.produce(sink, value=msg.value().upper())
        assert producer.flush(30) == 0
        producer.send_offsets_to_transaction(c.position(c.assignment()),
                                             c.consumer_group_metadata(), 30)
        if commit:
            producer.commit_transaction(30)
        else:
            producer.abort_transaction(30)

    def committed_offset():
        probe = consumer(broker.bootstrap, "read_committed", **{"group.id": group})
        try:
            return probe.committed([TopicPartition(source, 0)], timeout=10)[0].offset
        finally:
            probe.close()

    c.subscribe([source])
    try:
        transform(10, commit=True)
        assert committed_offset() == 10
        plain = Producer({"bootstrap.servers": broker.bootstrap, **CK_COMMON})
        for v in values("more-", 5):
            plain.produce(source, value=v)
        assert plain.flush(30) == 0
        transform(5, commit=False)
        assert committed_offset() == 10, "an abort leaves the group's offsets unchanged"
    finally:
        c.close()
    out = read_to_end(broker.bootstrap, sink, "read_committed")
    assert out == [v.upper() for v in values("in-", 10)]
    assert len(read_to_end(broker.bootstrap, sink, "read_uncommitted")) == 15


def test_a_zombie_with_an_old_epoch_is_fenced(broker):
    topic = unique_topic("zombie")
    create_topic(broker.bootstrap, topic)
    transactional_id = "zombie-" + uuid.uuid4().hex[:8]
    zombie = txn_producer(broker.bootstrap, transactional_id)
    zombie.begin_transaction()
    produce_in_txn(zombie, topic, values("zombie-", 4))
    # A new instance with the same id fences the old one and aborts its open transaction.
    fresh = txn_producer(broker.bootstrap, transactional_id)
    with pytest.raises(KafkaException) as raised:
        zombie.commit_transaction(15)
    error = raised.value.args[0]
    assert error.fatal() or not error.retriable(), error
    assert "fenced" in str(error).lower() or "epoch" in str(error).lower(), error
    fresh.begin_transaction()
    produce_in_txn(fresh, topic, values("fresh-", 4))
    fresh.commit_transaction(30)
    assert read_to_end(broker.bootstrap, topic, "read_committed") == values("fresh-", 4)


def test_a_transaction_past_its_timeout_is_aborted(broker):
    topic = unique_topic("timeout")
    create_topic(broker.bootstrap, topic)
    producer = txn_producer(broker.bootstrap, None, **{"transaction.timeout.ms": 2000,
                                                        "message.timeout.ms": 2000,
                                                        "socket.timeout.ms": 2000})
    producer.begin_transaction()
    produce_in_txn(producer, topic, values("late-", 3))
    assert high_watermark(broker.bootstrap, topic, "read_committed") == 0
    # The coordinator aborts it (a marker lands: the LSO moves past the records).
    wait_until(lambda: high_watermark(broker.bootstrap, topic, "read_committed") == 4,
               15, "the timed-out transaction is aborted")
    assert read_to_end(broker.bootstrap, topic, "read_committed") == []
    with pytest.raises(KafkaException):
        producer.commit_transaction(15)


@pytest.mark.parametrize("crash", [False, True], ids=["restart", "kill9"])
def test_visibility_survives_restarts_mid_transaction_and_after_commit(broker, crash):
    topic = unique_topic("durable")
    create_topic(broker.bootstrap, topic)
    transactional_id = "dur-" + uuid.uuid4().hex[:8]
    producer = txn_producer(broker.bootstrap, transactional_id,
                            **{"transaction.timeout.ms": 4000, "message.timeout.ms": 4000,
                               "socket.timeout.ms": 4000})
    producer.begin_transaction()
    produce_in_txn(producer, topic, values("c-", 5))
    producer.commit_transaction(30)
    producer.begin_transaction()
    produce_in_txn(producer, topic, values("a-", 5))
    # Mid-transaction: an abort before the stop puts an aborted range in the log.
    producer.abort_transaction(30)
    producer.begin_transaction()
    produce_in_txn(producer, topic, values("open-", 5))

    def bounce():
        if crash:
            broker.kill9()
            broker.start()
        else:
            broker.restart()

    bounce()
    # The open transaction holds the LSO back until the coordinator aborts it at its timeout.
    end = 5 + 1 + 5 + 1 + 5
    assert high_watermark(broker.bootstrap, topic, "read_uncommitted") == end
    assert high_watermark(broker.bootstrap, topic, "read_committed") == 12
    wait_until(lambda: high_watermark(broker.bootstrap, topic, "read_committed") == end + 1,
               20, "the open transaction is aborted after the restart")
    assert read_to_end(broker.bootstrap, topic, "read_committed") == values("c-", 5)
    producer = txn_producer(broker.bootstrap, transactional_id)
    producer.begin_transaction()
    produce_in_txn(producer, topic, values("d-", 5))
    producer.commit_transaction(30)
    bounce()
    committed = read_to_end(broker.bootstrap, topic, "read_committed")
    assert committed == values("c-", 5) + values("d-", 5)
    assert len(read_to_end(broker.bootstrap, topic, "read_uncommitted")) == 20


def test_delete_records_moves_the_log_start_durably(broker):
    """DeleteRecords (librdkafka's transaction test uses it): the low watermark moves up,
    reads below it are out of range, and a restart keeps it."""
    topic = unique_topic("delrec")
    create_topic(broker.bootstrap, topic)
    plain = Producer({"bootstrap.servers": broker.bootstrap, **CK_COMMON})
    for v in values("r-", 10):
        plain.produce(topic, value=v)
    assert plain.flush(30) == 0
    admin = AdminClient({"bootstrap.servers": broker.bootstrap, **CK_COMMON})
    futures = admin.delete_records([TopicPartition(topic, 0, 4)], request_timeout=15)
    deleted = list(futures.values())[0].result(timeout=20)
    assert deleted.low_watermark == 4

    def low():
        c = consumer(broker.bootstrap, "read_uncommitted")
        try:
            return c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10,
                                           cached=False)[0]
        finally:
            c.close()

    assert low() == 4
    assert read_to_end(broker.bootstrap, topic, "read_uncommitted")[0] == b"r-4"
    broker.restart()
    assert low() == 4
    assert read_to_end(broker.bootstrap, topic, "read_uncommitted") == values("r-", 10)[4:]
    beyond = admin.delete_records([TopicPartition(topic, 0, 99)], request_timeout=15)
    with pytest.raises(KafkaException):
        list(beyond.values())[0].result(timeout=20)


@pytest.mark.timeout(420)
def test_java_transactional_producer_and_read_committed_consumer(broker, tmp_path):
    """The Java client (transaction version 1, as the broker does not advertise
    transaction.version): committed records visible, aborted ones not."""
    import subprocess

    from java_build import compile_java

    run_classpath = compile_java("TransactionalProducer", "ProducerSetup")
    topic = unique_topic("javatxn")
    create_topic(broker.bootstrap, topic)
    done = subprocess.run(
        ["java", "-cp", run_classpath, "TransactionalProducer",
         broker.bootstrap, topic, "50"], capture_output=True, timeout=180)
    output = done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
    assert done.returncode == 0, output[-3000:]
    assert "committed 100" in output, output[-3000:]
    committed = read_to_end(broker.bootstrap, topic, "read_committed")
    assert committed == values("c-", 50) + values("d-", 50)


def test_operators_see_transactions_and_producers(broker):
    """DescribeTransactions, ListTransactions and DescribeProducers (kafka-python's admin
    client), with a transaction open and after it commits."""
    from kafka import TopicPartition as KTopicPartition
    from kafka.admin import KafkaAdminClient

    topic = unique_topic("ops")
    create_topic(broker.bootstrap, topic)
    transactional_id = "ops-" + uuid.uuid4().hex[:8]
    producer = txn_producer(broker.bootstrap, transactional_id)
    producer.begin_transaction()
    produce_in_txn(producer, topic, values("o-", 3), partition=0)
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=15000)
    try:
        described = admin.describe_transactions([transactional_id])[transactional_id]
        text = repr(described)
        assert "Ongoing" in text and topic in text, text
        listed = admin.list_transactions(state_filters=["Ongoing"])
        assert transactional_id in repr(listed), listed
        assert transactional_id not in repr(admin.list_transactions(state_filters=["Empty"]))
        producers = admin.describe_producers([KTopicPartition(topic, 0)])
        state = repr(producers)
        # The open transaction starts at offset 0.
        assert "current_transaction_start_offset=0" in state.replace(" ", ""), state
        producer.commit_transaction(30)
        described = admin.describe_transactions([transactional_id])[transactional_id]
        assert "CompleteCommit" in repr(described), described
        state = repr(admin.describe_producers([KTopicPartition(topic, 0)]))
        assert "current_transaction_start_offset=-1" in state.replace(" ", ""), state
    finally:
        admin.close()


def test_offsets_sent_to_an_open_transaction_survive_kill9(broker):
    """send_offsets_to_transaction, then a crash before the commit: the offsets are kept in
    the transaction log, and the commit after the restart still delivers them."""
    source, sink, group, c = source_and_sink(broker.bootstrap, "crash-", 5)
    c.assign([TopicPartition(source, 0, 0)])
    taken = []
    deadline = time.monotonic() + 30
    while len(taken) < 5:
        assert time.monotonic() < deadline, f"consumed {len(taken)} of 5"
        msg = c.poll(0.2)
        if msg is not None and not msg.error():
            taken.append(msg)
    producer = txn_producer(broker.bootstrap, None, **{"transaction.timeout.ms": 60000})
    producer.begin_transaction()
    for msg in taken:
        producer.produce(sink, value=msg.value().upper())
    assert producer.flush(30) == 0
    producer.send_offsets_to_transaction([TopicPartition(source, 0, 5)],
                                         c.consumer_group_metadata(), 30)
    c.close()
    broker.kill9()
    broker.start()
    producer.commit_transaction(60)
    probe = consumer(broker.bootstrap, "read_committed", **{"group.id": group})
    try:
        assert probe.committed([TopicPartition(source, 0)], timeout=10)[0].offset == 5
    finally:
        probe.close()
    assert read_to_end(broker.bootstrap, sink, "read_committed") == [
        v.upper() for v in values("in-", 5)]


def test_transactional_offsets_meet_plain_commits_and_deletion_as_in_kafka(broker):
    """Kafka's rules for a transaction's offsets (its group coordinator's
    `OffsetMetadataManager`; the cluster's case is test_cluster_txn_offsets.py): the record
    last in the group's log wins at the commit, so a plain OffsetCommit written after
    send_offsets_to_transaction stays, also across a kill -9 between the two and the commit
    (the log holds both in order), and one written before it is replaced; DeleteGroups of a
    group whose offset a transaction holds drops that offset, and the commit brings nothing
    back."""
    from test_cluster_txn_offsets import delete_groups_v0
    from test_coordinator_failover import committed
    source, sink = unique_topic("txo-in"), unique_topic("txo-out")
    create_topic(broker.bootstrap, source)
    create_topic(broker.bootstrap, sink)
    producer = txn_producer(broker.bootstrap, None, **{"transaction.timeout.ms": 60000})
    suffix = uuid.uuid4().hex[:6]

    def plain_commit(group, offset):
        c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                      "enable.auto.commit": False, **CK_COMMON})
        c.commit(offsets=[TopicPartition(source, 0, offset)], asynchronous=False)
        c.close()

    def send_offset(group, offset):
        c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                      "enable.auto.commit": False, **CK_COMMON})
        producer.begin_transaction()
        producer.produce(sink, f"{group}-{offset}".encode(), partition=0)
        producer.send_offsets_to_transaction([TopicPartition(source, 0, offset)],
                                             c.consumer_group_metadata(), 30)
        c.close()

    def offset_of(group):
        return wait_until(lambda: committed(broker.bootstrap, group, source, [0]), 30,
                          f"{group}'s committed offset")

    # The transaction's offset, then a plain commit, a crash, then the commit.
    plain_last = f"txo-plain-last-{suffix}"
    send_offset(plain_last, 5)
    plain_commit(plain_last, 9)
    broker.kill9()
    broker.start()
    producer.commit_transaction(60)
    assert offset_of(plain_last) == {0: 9}

    # A plain commit, then the transaction's offset: the transaction's is the later one.
    txn_last = f"txo-txn-last-{suffix}"
    plain_commit(txn_last, 11)
    send_offset(txn_last, 12)
    producer.commit_transaction(60)
    assert offset_of(txn_last) == {0: 12}

    # DeleteGroups while a transaction holds the group's only offset: deleted with it.
    deleted = f"txo-deleted-{suffix}"
    send_offset(deleted, 7)
    assert delete_groups_v0(broker.port, deleted) == [(deleted, 0)]
    producer.commit_transaction(60)
    assert offset_of(deleted) == {0: -1001}
    # The transactions' records are committed all the same.
    assert len(read_to_end(broker.bootstrap, sink, "read_committed")) == 3


def fnv1a_shard(key, shards):
    """The shard Spate gives a transactional id or group (shard::table::shard_for_key)."""
    value = 0xcbf29ce484222325
    for byte in key.encode():
        value = ((value ^ byte) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return value % shards


def ids_on_both_shards(prefix, per_shard=2):
    """Transactional ids, `per_shard` of them owned by each of two shards."""
    chosen = {0: [], 1: []}
    n = 0
    while min(len(v) for v in chosen.values()) < per_shard:
        candidate = f"{prefix}-{n}"
        n += 1
        owner = chosen[fnv1a_shard(candidate, 2)]
        if len(owner) < per_shard:
            owner.append(candidate)
    return chosen[0] + chosen[1]


def transaction_states(bootstrap, transactional_ids):
    """DescribeTransactions: {id: state name, or None when the coordinator does not know it}."""
    from kafka.admin import KafkaAdminClient
    from kafka.errors import TransactionalIdNotFoundError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    try:
        states = {}
        for transactional_id in transactional_ids:
            try:
                described = admin.describe_transactions([transactional_id])[transactional_id]
            except TransactionalIdNotFoundError:
                states[transactional_id] = None
                continue
            states[transactional_id] = described.state.value
        return states
    finally:
        admin.close()


def test_transactions_move_with_their_shard_when_the_core_count_changes(spate_factory):
    """--cores 2 -> 1 -> 2: every transactional id keeps its state, and transactions left open
    by ids the other shard owned are still aborted at their timeout by the new owner (else
    the LSO would stay behind them for ever)."""
    broker = spate_factory("--cores", "2")
    topic = unique_topic("moved")
    ids = ids_on_both_shards("mv-" + uuid.uuid4().hex[:6])
    create_topic(broker.bootstrap, topic, partitions=len(ids))
    producers = []
    for partition, transactional_id in enumerate(ids):
        producer = txn_producer(broker.bootstrap, transactional_id,
                                **{"transaction.timeout.ms": 3000, "message.timeout.ms": 3000,
                                   "socket.timeout.ms": 3000})
        producer.begin_transaction()
        produce_in_txn(producer, topic, values(f"c{partition}-", 2), partition=partition)
        producer.commit_transaction(30)
        producer.begin_transaction()
        produce_in_txn(producer, topic, values(f"open{partition}-", 2), partition=partition)
        producers.append(producer)
    broker.extra_args = ["--cores", "1"]
    broker.restart()
    # Each partition: 2 committed + marker, then 2 open records that the abort closes.
    for partition in range(len(ids)):
        wait_until(lambda: high_watermark(broker.bootstrap, topic, "read_committed",
                                          partition) == 6,
                   20, f"the open transaction on partition {partition} is aborted")
    assert transaction_states(broker.bootstrap, ids) == {i: "CompleteAbort" for i in ids}
    committed = read_to_end(broker.bootstrap, topic, "read_committed", partitions=len(ids))
    assert sorted(committed) == sorted(v for p in range(len(ids)) for v in values(f"c{p}-", 2))
    # Back to two shards: each id is found again by the shard that now owns it, and goes on.
    broker.extra_args = ["--cores", "2"]
    broker.restart()
    assert transaction_states(broker.bootstrap, ids) == {i: "CompleteAbort" for i in ids}
    for partition, transactional_id in enumerate(ids):
        producer = txn_producer(broker.bootstrap, transactional_id)
        producer.begin_transaction()
        produce_in_txn(producer, topic, values(f"d{partition}-", 1), partition=partition)
        producer.commit_transaction(30)
    assert transaction_states(broker.bootstrap, ids) == {i: "CompleteCommit" for i in ids}


def test_the_transaction_log_is_compacted_and_keeps_every_id(spate_factory):
    """Hundreds of transactions on small transaction-log segments: the log is compacted (a
    snapshot replaces its history) and stays small, and after a restart every transactional
    id is still known with its last state."""
    segment = 64 * 1024
    broker = spate_factory("--cores", "1", "--transaction-state-log-segment-bytes", str(segment))
    topic = unique_topic("compact")
    create_topic(broker.bootstrap, topic)
    ids = [f"cp-{uuid.uuid4().hex[:6]}-{i}" for i in range(3)]
    producers = [txn_producer(broker.bootstrap, i) for i in ids]
    log_dir = broker.data_dir / "__transaction_state-0"

    def log_bytes():
        return sum(f.stat().st_size for f in log_dir.glob("*.log"))

    rounds = 0
    deadline = time.monotonic() + 120
    def compacted():
        return any("compacted an internal log" in line and "__transaction_state" in line
                   for line in broker.log_text().splitlines())

    while not compacted():
        assert time.monotonic() < deadline, f"no compaction after {rounds} rounds"
        for n, producer in enumerate(producers):
            producer.begin_transaction()
            produce_in_txn(producer, topic, [f"{rounds}-{n}".encode()])
            if n == 2:
                producer.abort_transaction(30)
            else:
                producer.commit_transaction(30)
        rounds += 1
    # The segments before the snapshot are gone (segments are preallocated, so count them).
    wait_until(lambda: len(list(log_dir.glob("*.log"))) <= 3, 10, "old segments deleted")
    broker.restart()
    assert transaction_states(broker.bootstrap, ids) == {
        ids[0]: "CompleteCommit", ids[1]: "CompleteCommit", ids[2]: "CompleteAbort"}
    committed = read_to_end(broker.bootstrap, topic, "read_committed")
    assert len(committed) == 2 * rounds
    assert log_bytes() < 4 * segment + segment, "the log stays near its compaction threshold"


def test_idle_transactional_ids_expire(spate_factory):
    """transactional.id.expiration.ms: an id unused for that long with no transaction open
    is forgotten (and stays forgotten across a restart); one in use is kept."""
    broker = spate_factory("--transactional-id-expiration-ms", "2000")
    topic = unique_topic("expiry")
    create_topic(broker.bootstrap, topic)
    idle, busy = "idle-" + uuid.uuid4().hex[:6], "busy-" + uuid.uuid4().hex[:6]
    producer = txn_producer(broker.bootstrap, idle)
    producer.begin_transaction()
    produce_in_txn(producer, topic, values("i-", 2))
    producer.commit_transaction(30)
    keeper = txn_producer(broker.bootstrap, busy, **{"transaction.timeout.ms": 60000})
    keeper.begin_transaction()
    produce_in_txn(keeper, topic, values("b-", 2))
    wait_until(lambda: transaction_states(broker.bootstrap, [idle])[idle] is None, 15,
               "the idle transactional id expires")
    assert transaction_states(broker.bootstrap, [busy]) == {busy: "Ongoing"}
    broker.restart()
    assert transaction_states(broker.bootstrap, [idle, busy]) == {idle: None, busy: "Ongoing"}
    # The expired id can be used again: a new producer id, committed data as before.
    again = txn_producer(broker.bootstrap, idle)
    again.begin_transaction()
    produce_in_txn(again, topic, values("j-", 1))
    again.commit_transaction(30)
    assert transaction_states(broker.bootstrap, [idle]) == {idle: "CompleteCommit"}
