"""Topic administration with both admin clients: the answers and error codes Kafka gives.

CreateTopics (configs, validate_only, -1 defaults, bad input), DescribeConfigs (topic and
broker), CreatePartitions, DeleteTopics and DescribeCluster, through confluent-kafka's
AdminClient and kafka-python's KafkaAdminClient.
"""

import time

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (AdminClient, ConfigResource, ConfigSource, NewPartitions,
                                   NewTopic, ResourceType)
import kafka.errors as kp_errors
from kafka.admin import ConfigResource as KpConfigResource
from kafka.admin import ConfigResourceType as KpConfigResourceType
from kafka.admin import KafkaAdminClient
from kafka.admin import NewPartitions as KpNewPartitions
from kafka.admin import NewTopic as KpNewTopic

from client_helpers import (CK_COMMON, Msg, ck_consume, ck_consume_all, ck_consumer,
                            ck_partition_count, ck_produce, ck_producer, unique_topic)

TIMEOUT_S = 30


def ck_admin(broker):
    return AdminClient({"bootstrap.servers": broker.bootstrap, **CK_COMMON})


def kp_admin(broker):
    return KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=15000)


def ck_create(admin, topic, partitions=1, replication=1, config=None, validate_only=False):
    """Runs CreateTopics for one topic; returns None or raises KafkaException."""
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=replication,
                  config=config or {})],
        validate_only=validate_only, operation_timeout=TIMEOUT_S, request_timeout=TIMEOUT_S)
    return futures[topic].result(timeout=TIMEOUT_S)


def ck_error_code(call):
    with pytest.raises(KafkaException) as raised:
        call()
    return raised.value.args[0].code()


def topic_names(admin):
    return set(admin.list_topics(timeout=TIMEOUT_S).topics)


def wait_partition_count(broker, topic, expected, timeout=15.0):
    """The topic's partition count once it reaches `expected` (Kafka's metadata catches up with
    CreatePartitions a moment after the answer), or the last count seen."""
    deadline = time.monotonic() + timeout
    count = ck_partition_count(broker.bootstrap, topic)
    while count != expected and time.monotonic() < deadline:
        time.sleep(0.2)
        count = ck_partition_count(broker.bootstrap, topic)
    return count


def ck_topic_configs(admin, topic):
    resource = ConfigResource(ResourceType.TOPIC, topic)
    return admin.describe_configs([resource], request_timeout=TIMEOUT_S)[resource].result(
        timeout=TIMEOUT_S)


def test_create_topic_validate_only_creates_nothing(broker):
    """validate_only=True answers success for a valid request and creates no topic; the same
    request without it then creates the topic with the partitions asked for."""
    admin = ck_admin(broker)
    topic = unique_topic("validate")
    assert ck_create(admin, topic, 3, validate_only=True) is None
    time.sleep(1)
    assert topic not in topic_names(admin)
    assert not broker.partition_dir(topic, 0).exists()
    assert ck_create(admin, topic, 3) is None
    assert topic in topic_names(admin)
    assert ck_partition_count(broker.bootstrap, topic) == 3


def test_create_topic_with_configs_and_describe(broker):
    """Configs given at creation are stored and described as set on the topic; configs left
    unset are described with Kafka's defaults."""
    admin = ck_admin(broker)
    topic = unique_topic("configs")
    config = {"retention.ms": "3600000", "segment.bytes": str(64 * 1024 * 1024),
              "retention.bytes": "123456789"}
    ck_create(admin, topic, 2, config=config)
    described = ck_topic_configs(admin, topic)
    for name, value in config.items():
        assert described[name].value == value, name
        assert not described[name].is_default, name
        assert described[name].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value, name
    assert described["segment.ms"].value == "604800000"
    assert described["max.message.bytes"].value == "1048588"


def test_create_topic_with_any_kafka_topic_config(broker):
    """Standard Kafka topic configs are accepted at creation and described back, even those a
    broker does not act on (librdkafka's 0081_admin creates topics with compression.type);
    a config name Kafka does not know is INVALID_CONFIG."""
    admin = ck_admin(broker)
    topic = unique_topic("kafka-configs")
    config = {"compression.type": "lz4", "cleanup.policy": "delete",
              "min.insync.replicas": "1", "message.timestamp.type": "CreateTime",
              "max.message.bytes": "2000000", "retention.ms": "-1"}
    ck_create(admin, topic, 1, config=config)
    described = ck_topic_configs(admin, topic)
    for name, value in config.items():
        assert described[name].value == value, name
    bogus = unique_topic("bogus-config")
    code = ck_error_code(lambda: ck_create(admin, bogus, 1, config={"no.such.config": "1"}))
    assert code == KafkaError.INVALID_CONFIG
    assert bogus not in topic_names(admin)


def test_create_topic_with_replica_assignment(broker):
    """CreateTopics with an explicit replica assignment naming this broker (as librdkafka's
    0081_admin sends) creates one partition per assignment entry."""
    admin = ck_admin(broker)
    node_id = admin.describe_cluster(request_timeout=TIMEOUT_S).result(TIMEOUT_S).nodes[0].id
    topic = unique_topic("assigned")
    futures = admin.create_topics(
        [NewTopic(topic, 3, replica_assignment=[[node_id], [node_id], [node_id]])],
        operation_timeout=TIMEOUT_S, request_timeout=TIMEOUT_S)
    futures[topic].result(timeout=TIMEOUT_S)
    assert ck_partition_count(broker.bootstrap, topic) == 3
    missing = unique_topic("assigned-elsewhere")
    code = ck_error_code(lambda: admin.create_topics(
        [NewTopic(missing, 1, replica_assignment=[[node_id + 1000]])],
        request_timeout=TIMEOUT_S)[missing].result(TIMEOUT_S))
    assert code in (KafkaError.INVALID_REPLICA_ASSIGNMENT, KafkaError.BROKER_NOT_AVAILABLE)


def test_create_topic_defaults_with_minus_one(broker4):
    """num_partitions = -1 and replication_factor = -1 take the broker defaults (KIP-464):
    4 partitions on a broker started with --default-partitions 4."""
    admin = ck_admin(broker4)
    topic = unique_topic("defaults")
    ck_create(admin, topic, partitions=-1, replication=-1)
    assert ck_partition_count(broker4.bootstrap, topic) == 4


def test_create_topic_errors(broker):
    """Kafka's error codes: an existing topic is TOPIC_ALREADY_EXISTS, a name with illegal
    characters or '..' or longer than 249 characters is INVALID_TOPIC_EXCEPTION, 0 partitions
    is INVALID_PARTITIONS, replication factor 3 on one broker is INVALID_REPLICATION_FACTOR;
    none of them creates anything, and the broker keeps serving."""
    admin = ck_admin(broker)
    topic = unique_topic("exists")
    ck_create(admin, topic)
    assert ck_error_code(lambda: ck_create(admin, topic)) == KafkaError.TOPIC_ALREADY_EXISTS
    for bad_name in ("bad name!", "..", "a" * 250, "slash/topic"):
        code = ck_error_code(lambda: ck_create(admin, bad_name))
        assert code == KafkaError.TOPIC_EXCEPTION, f"{bad_name!r}: {code}"
    zero = unique_topic("zero")
    assert ck_error_code(lambda: ck_create(admin, zero, 0)) == KafkaError.INVALID_PARTITIONS
    three = unique_topic("rf3")
    code = ck_error_code(lambda: ck_create(admin, three, 1, replication=3))
    assert code == KafkaError.INVALID_REPLICATION_FACTOR
    assert not {"..", "bad name!", zero, three} & topic_names(admin)
    assert ck_produce(broker.bootstrap, topic, [Msg(b"k", b"v")]) == [(0, 0)]


def test_create_partitions(broker):
    """CreatePartitions grows a topic (the new partitions take records); shrinking or keeping
    the count is INVALID_PARTITIONS; an unknown topic is UNKNOWN_TOPIC_OR_PARTITION."""
    admin = ck_admin(broker)
    topic = unique_topic("grow")
    ck_create(admin, topic, 2)
    ck_produce(broker.bootstrap, topic, [Msg(b"k", b"p0", partition=0)])
    admin.create_partitions([NewPartitions(topic, 5)], operation_timeout=TIMEOUT_S,
                            request_timeout=TIMEOUT_S)[topic].result(timeout=TIMEOUT_S)
    assert wait_partition_count(broker, topic, 5) == 5
    assert ck_produce(broker.bootstrap, topic, [Msg(b"k", b"p4", partition=4)]) == [(4, 0)]
    assert [r.value for r in ck_consume_all(broker.bootstrap, topic, 0)] == [b"p0"]

    for count in (3, 5):
        code = ck_error_code(lambda: admin.create_partitions(
            [NewPartitions(topic, count)], request_timeout=TIMEOUT_S)[topic].result(TIMEOUT_S))
        assert code == KafkaError.INVALID_PARTITIONS, f"{count}: {code}"
    missing = unique_topic("missing")
    code = ck_error_code(lambda: admin.create_partitions(
        [NewPartitions(missing, 3)], request_timeout=TIMEOUT_S)[missing].result(TIMEOUT_S))
    assert code == KafkaError.UNKNOWN_TOPIC_OR_PART
    assert ck_partition_count(broker.bootstrap, topic) == 5


def test_create_partitions_with_replica_assignment(broker):
    """CreatePartitions with an explicit assignment of the new partitions to this broker (as
    librdkafka's 0081_admin sends) adds them."""
    admin = ck_admin(broker)
    node_id = admin.describe_cluster(request_timeout=TIMEOUT_S).result(TIMEOUT_S).nodes[0].id
    topic = unique_topic("grow-assigned")
    ck_create(admin, topic, 2)
    admin.create_partitions([NewPartitions(topic, 4, replica_assignment=[[node_id], [node_id]])],
                            operation_timeout=TIMEOUT_S,
                            request_timeout=TIMEOUT_S)[topic].result(timeout=TIMEOUT_S)
    assert wait_partition_count(broker, topic, 4) == 4
    assert ck_produce(broker.bootstrap, topic, [Msg(b"k", b"p3", partition=3)]) == [(3, 0)]


def test_create_partitions_with_wrong_replica_assignment(broker):
    """An assignment list that does not hold one entry per new partition, or that names a
    broker that does not exist, is INVALID_REPLICA_ASSIGNMENT and the topic keeps its count."""
    admin = ck_admin(broker)
    node_id = admin.describe_cluster(request_timeout=TIMEOUT_S).result(TIMEOUT_S).nodes[0].id
    topic = unique_topic("grow-misassigned")
    ck_create(admin, topic, 2)
    for assignment in ([[node_id]], [[node_id], [node_id + 100]]):
        future = admin.create_partitions([NewPartitions(topic, 4, replica_assignment=assignment)],
                                         operation_timeout=TIMEOUT_S,
                                         request_timeout=TIMEOUT_S)[topic]
        with pytest.raises(KafkaException) as failure:
            future.result(timeout=TIMEOUT_S)
        assert failure.value.args[0].code() == KafkaError.INVALID_REPLICA_ASSIGNMENT, assignment
    assert wait_partition_count(broker, topic, 2) == 2


def test_delete_topic_then_recreate(broker):
    """DeleteTopics removes the topic from metadata and its partition directories from the
    data dir; deleting again is UNKNOWN_TOPIC_OR_PARTITION; a topic created again under the
    same name starts empty at offset 0 (no old record comes back)."""
    admin = ck_admin(broker)
    topic = unique_topic("delete")
    ck_create(admin, topic, 2)
    ck_produce(broker.bootstrap, topic, [Msg(b"k", b"old", partition=p) for p in (0, 1)])
    admin.delete_topics([topic], operation_timeout=TIMEOUT_S,
                        request_timeout=TIMEOUT_S)[topic].result(timeout=TIMEOUT_S)
    assert topic not in topic_names(admin)
    deadline = time.monotonic() + 15
    while broker.partition_dir(topic, 0).exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not broker.partition_dir(topic, 0).exists()
    assert not broker.partition_dir(topic, 1).exists()

    code = ck_error_code(lambda: admin.delete_topics(
        [topic], request_timeout=TIMEOUT_S)[topic].result(timeout=TIMEOUT_S))
    assert code == KafkaError.UNKNOWN_TOPIC_OR_PART

    ck_create(admin, topic, 1)
    assert ck_produce(broker.bootstrap, topic, [Msg(b"k", b"new")]) == [(0, 0)]
    assert [r.value for r in ck_consume_all(broker.bootstrap, topic, 0)] == [b"new"]


def test_describe_cluster_and_broker_configs(broker):
    """DescribeCluster names this one broker at its advertised 127.0.0.1 address as the
    controller, with a cluster id; DescribeConfigs for that broker answers with its configs,
    among them message.max.bytes = 1048588 (Kafka's default) and the group and transaction
    settings."""
    admin = ck_admin(broker)
    cluster = admin.describe_cluster(request_timeout=TIMEOUT_S).result(timeout=TIMEOUT_S)
    assert cluster.cluster_id
    assert len(cluster.nodes) == 1
    [node] = cluster.nodes
    assert (node.host, node.port) == ("127.0.0.1", broker.port)
    assert cluster.controller is not None and cluster.controller.id == node.id

    resource = ConfigResource(ResourceType.BROKER, str(node.id))
    configs = admin.describe_configs([resource], request_timeout=TIMEOUT_S)[resource].result(
        timeout=TIMEOUT_S)
    assert configs["message.max.bytes"].value == "1048588"
    # The group and transaction settings the broker honours, at their defaults.
    assert configs["group.initial.rebalance.delay.ms"].value == "3000"
    assert configs["offsets.retention.minutes"].value == "10080"
    assert configs["transactional.id.expiration.ms"].value == "604800000"
    assert configs["transaction.state.log.segment.bytes"].value == str(16 * 1024 * 1024)

    metadata = admin.list_topics(timeout=TIMEOUT_S)
    assert metadata.cluster_id == cluster.cluster_id
    assert list(metadata.brokers) == [node.id]


def test_describe_configs_of_unknown_topic(broker):
    """DescribeConfigs for a topic that does not exist is UNKNOWN_TOPIC_OR_PARTITION."""
    admin = ck_admin(broker)
    code = ck_error_code(lambda: ck_topic_configs(admin, unique_topic("nope")))
    assert code == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_kafka_python_admin_client(broker):
    """The same operations through kafka-python's KafkaAdminClient (its own encoders and
    version choices): create (validate_only, configs), errors, describe configs, create
    partitions, describe cluster, delete."""
    admin = kp_admin(broker)
    try:
        topic = unique_topic("kp")
        admin.create_topics([KpNewTopic(topic, 2, 1, topic_configs={"retention.ms": "7200000"})],
                            validate_only=True)
        assert topic not in admin.list_topics()
        admin.create_topics([KpNewTopic(topic, 2, 1, topic_configs={"retention.ms": "7200000"})])
        assert topic in admin.list_topics()

        with pytest.raises(kp_errors.TopicAlreadyExistsError):
            admin.create_topics([KpNewTopic(topic, 2, 1)])
        with pytest.raises(kp_errors.InvalidTopicError):
            admin.create_topics([KpNewTopic("bad name!", 1, 1)])
        with pytest.raises(kp_errors.InvalidPartitionsError):
            admin.create_topics([KpNewTopic(unique_topic("zero"), 0, 1)])

        described = admin.describe_configs(
            [KpConfigResource(KpConfigResourceType.TOPIC, topic)])
        assert described["topic"][topic]["retention.ms"]["value"] == "7200000"

        admin.create_partitions({topic: KpNewPartitions(total_count=4)})
        with pytest.raises(kp_errors.InvalidPartitionsError):
            admin.create_partitions({topic: KpNewPartitions(total_count=3)})
        [described_topic] = admin.describe_topics([topic])
        assert len(described_topic["partitions"]) == 4

        cluster = admin.describe_cluster()
        assert cluster["cluster_id"]
        assert [(b["host"], b["port"]) for b in cluster["brokers"]] == [
            ("127.0.0.1", broker.port)]
        assert cluster["controller_id"] == cluster["brokers"][0]["broker_id"]

        admin.delete_topics([topic])
        assert topic not in admin.list_topics()
        with pytest.raises(kp_errors.UnknownTopicOrPartitionError):
            admin.delete_topics([topic])
    finally:
        admin.close()


def test_metadata_without_auto_create(broker):
    """A Metadata request with allow_auto_topic_creation = false for an unknown topic answers
    UNKNOWN_TOPIC_OR_PARTITION and creates nothing (librdkafka's consumer asks that way when
    allow.auto.create.topics is false); with it true (the producer) the topic is created."""
    topic = unique_topic("no-auto")
    consumer = ck_consumer(broker.bootstrap, **{"allow.auto.create.topics": False})
    try:
        meta = consumer.list_topics(topic, timeout=TIMEOUT_S).topics[topic]
        assert meta.error is not None and meta.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    finally:
        consumer.close()
    time.sleep(0.5)
    assert topic not in topic_names(ck_admin(broker))
    ck_produce(broker.bootstrap, topic, [Msg(b"k", b"v")])
    assert topic in topic_names(ck_admin(broker))
    assert [r.value for r in ck_consume(broker.bootstrap, topic, 0, 0, 1)] == [b"v"]


# ---------------------------------------------------------------------------------------------
# AlterConfigs and IncrementalAlterConfigs

def ck_incremental(admin, topic, entries, validate_only=False):
    """IncrementalAlterConfigs on one topic; entries are (name, value, op name)."""
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry(name, value, incremental_operation=getattr(AlterConfigOpType, op))
        for name, value, op in entries])
    futures = admin.incremental_alter_configs([resource], validate_only=validate_only,
                                              request_timeout=TIMEOUT_S)
    return futures[resource].result(timeout=TIMEOUT_S)


def test_incremental_alter_configs_changes_what_the_log_does_and_survives_restart(broker):
    """SET max.message.bytes below a record's size makes the next produce of it
    MSG_SIZE_TOO_LARGE at once; DescribeConfigs reports the value as a topic override; the
    change survives a restart; DELETE goes back to the broker default and the record fits."""
    admin = ck_admin(broker)
    topic = unique_topic("alter")
    ck_create(admin, topic, 1)
    value = b"\x02" * 20000
    assert ck_produce(broker.bootstrap, topic, [Msg(b"k", value)]) == [(0, 0)]
    ck_incremental(admin, topic, [("max.message.bytes", "10000", "SET"),
                                  ("retention.ms", "7200000", "SET")])
    described = ck_topic_configs(admin, topic)
    assert described["max.message.bytes"].value == "10000"
    assert described["max.message.bytes"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert described["retention.ms"].value == "7200000"
    with pytest.raises(AssertionError, match="MSG_SIZE_TOO_LARGE"):
        ck_produce(broker.bootstrap, topic, [Msg(b"k", value)],
                   **{"message.send.max.retries": 0})

    broker.restart()
    admin = ck_admin(broker)
    assert ck_topic_configs(admin, topic)["max.message.bytes"].value == "10000"
    with pytest.raises(AssertionError, match="MSG_SIZE_TOO_LARGE"):
        ck_produce(broker.bootstrap, topic, [Msg(b"k", value)],
                   **{"message.send.max.retries": 0})

    ck_incremental(admin, topic, [("max.message.bytes", None, "DELETE")])
    described = ck_topic_configs(admin, topic)
    assert described["max.message.bytes"].value == "1048588"
    assert described["max.message.bytes"].source != ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert described["retention.ms"].value == "7200000", "DELETE of one config kept the other"
    assert ck_produce(broker.bootstrap, topic, [Msg(b"k", value)]) == [(0, 1)]


def test_alter_configs_refuses_bad_input_and_validate_only_changes_nothing(broker):
    admin = ck_admin(broker)
    topic = unique_topic("alter-bad")
    ck_create(admin, topic, 1, config={"retention.ms": "3600000"})

    ck_incremental(admin, topic, [("retention.ms", "60000", "SET")], validate_only=True)
    assert ck_topic_configs(admin, topic)["retention.ms"].value == "3600000"

    for entries, code in (
            ([("retention.ms", "soon", "SET")], KafkaError.INVALID_CONFIG),
            ([("segment.bytes", "10", "SET")], KafkaError.INVALID_CONFIG),
            ([("no.such.config", "1", "SET")], KafkaError.INVALID_CONFIG),
            ([("retention.ms", "5", "APPEND")], KafkaError.INVALID_CONFIG),
    ):
        with pytest.raises(KafkaException) as failure:
            ck_incremental(admin, topic, entries)
        assert failure.value.args[0].code() == code, entries
    with pytest.raises(KafkaException) as failure:
        ck_incremental(admin, unique_topic("missing"), [("retention.ms", "1", "SET")])
    assert failure.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    assert ck_topic_configs(admin, topic)["retention.ms"].value == "3600000"


def alter_configs_v0(port, topic, configs):
    """A hand-framed AlterConfigs v0 (the non-incremental API; kafka-python emulates
    incremental changes with it by resending every override, so it cannot show the
    replace-all rule). Returns the resource's error code."""
    import struct
    import kafka_wire

    def string(text):
        return struct.pack(">h", len(text)) + text.encode()

    body = struct.pack(">i", 1) + struct.pack(">b", 2) + string(topic)
    body += struct.pack(">i", len(configs))
    for name, value in configs.items():
        body += string(name) + string(value)
    body += b"\x00"  # validate_only false
    sock = kafka_wire.connect(port)
    try:
        sock.sendall(kafka_wire.frame(kafka_wire.request_header(33, 0, 7) + body))
        correlation_id, payload = kafka_wire.read_response(sock)
    finally:
        sock.close()
    assert correlation_id == 7
    _throttle, count, error_code = struct.unpack_from(">iih", payload)
    assert count == 1
    return error_code


def test_legacy_alter_configs_replaces_every_override(broker):
    """AlterConfigs (not incremental) sets the given configs and drops the overrides it does
    not name, as Kafka does; an unknown config name is INVALID_CONFIG."""
    admin = ck_admin(broker)
    topic = unique_topic("alter-legacy")
    ck_create(admin, topic, 1, config={"retention.ms": "3600000", "segment.ms": "600000"})
    port = int(broker.bootstrap.rsplit(":", 1)[1])
    assert alter_configs_v0(port, topic, {"retention.bytes": "1048576"}) == 0
    described = ck_topic_configs(admin, topic)
    assert described["retention.bytes"].value == "1048576"
    assert described["retention.bytes"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert described["retention.ms"].source != ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert described["segment.ms"].source != ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert alter_configs_v0(port, topic, {"no.such.config": "1"}) == KafkaError.INVALID_CONFIG
    assert ck_topic_configs(admin, topic)["retention.bytes"].value == "1048576"

    # kafka-python's alter_configs (incremental by default) changes one and keeps the rest.
    kp = kp_admin(broker)
    try:
        kp.alter_configs([KpConfigResource(KpConfigResourceType.TOPIC, topic,
                                           configs={"retention.ms": "120000"})])
    finally:
        kp.close()
    described = ck_topic_configs(admin, topic)
    assert described["retention.ms"].value == "120000"
    assert described["retention.bytes"].value == "1048576"


def test_concurrent_auto_creations_all_land_and_survive_a_restart(spate_factory):
    """Many clients auto-create topics at the same moment (librdkafka's suite does, one test
    per process): every topic is created on every shard, takes records on all its partitions,
    and is still in the catalog after a restart. (Two catalog writes at once once shared a
    temporary file: one creation was lost and its topic stayed LEADER_NOT_AVAILABLE.)"""
    import threading

    broker = spate_factory("--default-partitions", "2")
    base = unique_topic("auto")
    topics = [f"{base}-{i}" for i in range(16)]
    start = threading.Barrier(len(topics))
    errors = []

    def produce(topic):
        producer = ck_producer(broker.bootstrap, **{"message.timeout.ms": 20000})
        try:
            start.wait(timeout=TIMEOUT_S)
            for partition in (0, 1):
                producer.produce(topic, value=f"{topic}/{partition}".encode(),
                                 partition=partition)
            left = producer.flush(25)
            if left:
                errors.append(f"{topic}: {left} records not acknowledged")
        except Exception as error:  # noqa: BLE001 - reported below, with the topic
            errors.append(f"{topic}: {error!r}")

    threads = [threading.Thread(target=produce, args=(t,)) for t in topics]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a producer hung"
    assert errors == []
    broker.restart()
    assert set(topics) <= topic_names(ck_admin(broker))
    for topic in topics:
        for partition in (0, 1):
            values = [m.value for m in ck_consume_all(broker.bootstrap, topic, partition)]
            assert values == [f"{topic}/{partition}".encode()], (topic, partition)
