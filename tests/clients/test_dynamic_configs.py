"""Kafka's dynamic configs of broker and group resources (issue 17): IncrementalAlterConfigs
(SET, DELETE, APPEND, SUBTRACT) and AlterConfigs on BROKER resources ("" the cluster default,
"<node id>" this broker) and GROUP resources (KIP-848 group configs), validate_only, Kafka's
errors, DescribeConfigs with the right sources and synonyms, the dynamic log defaults taking
effect on topics that do not override them, a restart keeping them, and a group's
consumer.heartbeat.interval.ms reaching its consumer-protocol members.

confluent-kafka (librdkafka) cannot address the cluster-default resource (it sends a BROKER
resource to the broker its name parses to), nor can kafka-python; those requests go on the
wire here (IncrementalAlterConfigs v0, DescribeConfigs v1 with synonyms).
"""

import struct
import time
import uuid

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                   NewTopic, ResourceType)
from kafka.admin import ConfigResource as KpConfigResource
from kafka.admin import ConfigResourceType as KpConfigResourceType
from kafka.admin import KafkaAdminClient

import kafka_wire as wire
from client_helpers import CK_COMMON, Msg, ck_produce, ck_watermarks, unique_topic
from conftest import TARGET

TIMEOUT_S = 30
PASS_S = 5

INVALID_CONFIG = 40
INVALID_REQUEST = 42
MESSAGE_TOO_LARGE = 10

# Kafka's ConfigSource.
DYNAMIC_TOPIC, DYNAMIC_BROKER, DYNAMIC_DEFAULT_BROKER, STATIC_BROKER, DEFAULT, GROUP = \
    1, 2, 3, 4, 5, 8

SET, DELETE, APPEND, SUBTRACT = (AlterConfigOpType.SET, AlterConfigOpType.DELETE,
                                 AlterConfigOpType.APPEND, AlterConfigOpType.SUBTRACT)

BROKER_TYPE, GROUP_TYPE = 4, 32


def ck_admin(broker):
    return AdminClient({"bootstrap.servers": broker.bootstrap, **CK_COMMON})


def incremental(admin, resource_type, name, ops, validate_only=False):
    """IncrementalAlterConfigs of one resource through confluent-kafka: None, or the Kafka
    error code and message it failed with."""
    entries = [ConfigEntry(key, value, incremental_operation=op) for key, op, value in ops]
    resource = ConfigResource(resource_type, name, incremental_configs=entries)
    future = admin.incremental_alter_configs([resource], validate_only=validate_only,
                                             request_timeout=TIMEOUT_S)[resource]
    try:
        future.result(timeout=TIMEOUT_S)
        return None
    except KafkaException as e:
        return e.args[0].code(), e.args[0].str()


def described(admin, resource_type, name):
    resource = ConfigResource(resource_type, name)
    future = admin.describe_configs([resource], request_timeout=TIMEOUT_S)[resource]
    return future.result(timeout=TIMEOUT_S)


# --- the wire: IncrementalAlterConfigs v0 and DescribeConfigs v1 ----------------------------

def _string(text):
    data = text.encode()
    return struct.pack(">h", len(data)) + data


def _nullable(text):
    return struct.pack(">h", -1) if text is None else _string(text)


def wire_incremental(port, resource_type, name, ops, validate_only=False):
    """IncrementalAlterConfigs v0 of one resource: (error_code, error_message)."""
    body = struct.pack(">i", 1) + struct.pack(">b", resource_type) + _string(name)
    body += struct.pack(">i", len(ops))
    for key, op, value in ops:
        body += _string(key) + struct.pack(">b", op) + _nullable(value)
    body += struct.pack(">?", validate_only)
    sock = wire.connect(port)
    try:
        sock.sendall(wire.frame(wire.request_header(44, 0, 7) + body))
        _, response = wire.read_response(sock)
    finally:
        sock.close()
    position = 4 + 4  # throttle, one response
    (code,) = struct.unpack_from(">h", response, position)
    message, _ = wire.read_nullable_string(response, position + 2)
    return code, message


def wire_describe(port, resource_type, name):
    """DescribeConfigs v1 (with synonyms) of one resource: (error_code, {name: (value,
    source, read_only, [(synonym, value, source)])})."""
    body = struct.pack(">i", 1) + struct.pack(">b", resource_type) + _string(name)
    body += struct.pack(">i", -1) + struct.pack(">?", True)
    sock = wire.connect(port)
    try:
        sock.sendall(wire.frame(wire.request_header(32, 1, 8) + body))
        _, response = wire.read_response(sock)
    finally:
        sock.close()
    position = 4 + 4
    (code,) = struct.unpack_from(">h", response, position)
    _, position = wire.read_nullable_string(response, position + 2)
    position += 1  # resource type
    _, position = wire.read_nullable_string(response, position)
    (count,) = struct.unpack_from(">i", response, position)
    position += 4
    configs = {}
    for _ in range(count):
        key, position = wire.read_nullable_string(response, position)
        value, position = wire.read_nullable_string(response, position)
        read_only, source, _sensitive = struct.unpack_from(">?b?", response, position)
        position += 3
        (synonyms,) = struct.unpack_from(">i", response, position)
        position += 4
        chain = []
        for _ in range(synonyms):
            synonym, position = wire.read_nullable_string(response, position)
            synonym_value, position = wire.read_nullable_string(response, position)
            (synonym_source,) = struct.unpack_from(">b", response, position)
            position += 1
            chain.append((synonym, synonym_value, synonym_source))
        configs[key] = (value, source, read_only, chain)
    return code, configs


def _uvarint(value):
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _compact(text):
    if text is None:
        return b"\x00"
    data = text.encode()
    return _uvarint(len(data) + 1) + data


def consumer_heartbeat_interval(port, group, topic):
    """A new member joins `group` with ConsumerGroupHeartbeat v0 (KIP-848), subscribed to
    `topic`; the heartbeat interval the coordinator answers with."""
    member = str(uuid.uuid4())
    body = _compact(group) + _compact(member) + struct.pack(">i", 0)
    body += _compact(None) + _compact(None) + struct.pack(">i", 30000)
    body += _uvarint(2) + _compact(topic)  # SubscribedTopicNames
    body += _compact(None)  # ServerAssignor
    body += _uvarint(1)  # TopicPartitions: empty
    body += b"\x00"  # tagged fields
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        sock = wire.connect(port)
        try:
            sock.sendall(wire.frame(wire.request_header(68, 0, 9, flexible=True) + body))
            _, response = wire.read_response(sock)
        finally:
            sock.close()
        position = wire.skip_tagged_fields(response, 0)
        throttle, code = struct.unpack_from(">ih", response, position)
        position += 6
        for _ in range(2):  # ErrorMessage, MemberId
            size, position = wire.read_uvarint(response, position)
            position += max(size - 1, 0)
        _epoch, interval = struct.unpack_from(">ii", response, position)
        if code == 0:
            return interval
        # COORDINATOR_LOAD_IN_PROGRESS / NOT_COORDINATOR while the coordinator loads.
        assert code in (14, 15, 16) and time.monotonic() < deadline, f"error {code}"
        time.sleep(0.5)


# --- tests -----------------------------------------------------------------------------------

def test_broker_configs_incremental_ops_sources_and_errors(spate_factory):
    """On this broker's resource: SET background.threads and APPEND compact to
    log.cleanup.policy (librdkafka 0081's own steps), then SUBTRACT and DELETE them back;
    DescribeConfigs reports each config's source (dynamic, static from the command line,
    default) and read-only flag, and the synonyms in Kafka's order; validate_only changes
    nothing; custom and listener-prefixed configs are stored; a non-dynamic or mistyped
    config and another broker's id get Kafka's errors."""
    if TARGET == "kafka":
        pytest.skip("asserts Spate's static options (--retention-ms)")
    broker = spate_factory("--retention-ms", "86400000")
    admin = ck_admin(broker)
    me = "1"
    assert incremental(admin, ResourceType.BROKER, me, [
        ("background.threads", SET, "9"), ("log.cleanup.policy", APPEND, "compact")]) is None
    configs = described(admin, ResourceType.BROKER, me)
    assert configs["background.threads"].value == "9"
    assert configs["background.threads"].source == DYNAMIC_BROKER
    assert not configs["background.threads"].is_read_only
    assert configs["log.cleanup.policy"].value == "delete,compact"
    assert configs["log.retention.ms"].value == "86400000"
    assert configs["log.retention.ms"].source == STATIC_BROKER
    assert configs["num.partitions"].source == STATIC_BROKER  # the harness gives it
    assert configs["auto.create.topics.enable"].source == DEFAULT
    assert configs["auto.create.topics.enable"].is_read_only
    assert configs["sasl.kerberos.min.time.before.relogin"].value == "60000"

    code, wire_configs = wire_describe(broker.port, BROKER_TYPE, me)
    assert code == 0
    value, source, read_only, chain = wire_configs["log.retention.ms"]
    assert (value, source, read_only) == ("86400000", STATIC_BROKER, False)
    assert chain == [("log.retention.ms", "86400000", STATIC_BROKER),
                     ("log.retention.ms", "604800000", DEFAULT)]
    assert wire_configs["log.cleanup.policy"][3][0] == \
        ("log.cleanup.policy", "delete,compact", DYNAMIC_BROKER)

    assert incremental(admin, ResourceType.BROKER, me, [
        ("background.threads", DELETE, ""), ("log.cleanup.policy", SUBTRACT, "compact")]) is None
    configs = described(admin, ResourceType.BROKER, me)
    assert (configs["background.threads"].value, configs["background.threads"].source) == \
        ("10", DEFAULT)
    assert configs["log.cleanup.policy"].value == "delete"

    assert incremental(admin, ResourceType.BROKER, me, [("background.threads", SET, "11")],
                       validate_only=True) is None
    assert described(admin, ResourceType.BROKER, me)["background.threads"].value == "10"

    code, message = incremental(admin, ResourceType.BROKER, me, [("log.dirs", SET, "/x")])
    assert code == INVALID_REQUEST
    assert "Cannot update these configs dynamically: Set(log.dirs)" in message
    # Custom configs (for plugins) and listener-prefixed ones are stored and described, as
    # Kafka does; a prefixed one is typed as its config and is one broker's.
    prefixed = "listener.name.plaintext.ssl.keystore.password"
    assert incremental(admin, ResourceType.BROKER, me, [
        ("no.such.config", SET, "1"), (prefixed, SET, "secret")]) is None
    configs = described(admin, ResourceType.BROKER, me)
    assert (configs["no.such.config"].value, configs["no.such.config"].source) == \
        ("1", DYNAMIC_BROKER)
    assert configs[prefixed].source == DYNAMIC_BROKER
    assert configs[prefixed].is_sensitive and configs[prefixed].value is None
    code, message = wire_incremental(broker.port, BROKER_TYPE, "", [(prefixed, 0, "x")])
    assert code == INVALID_REQUEST and "default cluster level" in message
    code, message = incremental(admin, ResourceType.BROKER, me, [
        ("listener.name.plaintext.sasl.kerberos.min.time.before.relogin", SET, "soon")])
    assert code == INVALID_REQUEST and "Not a number of type LONG" in message
    assert incremental(admin, ResourceType.BROKER, me, [
        ("no.such.config", DELETE, ""), (prefixed, DELETE, "")]) is None
    assert "no.such.config" not in described(admin, ResourceType.BROKER, me)
    code, message = incremental(admin, ResourceType.BROKER, me, [("background.threads", SET, "x")])
    assert code == INVALID_REQUEST and "Not a number of type INT" in message
    code, _ = incremental(admin, ResourceType.BROKER, me, [("background.threads", APPEND, "1")])
    assert code == INVALID_CONFIG
    code, message = incremental(admin, ResourceType.BROKER, me, [("background.threads", SET, "1")])
    assert code == INVALID_REQUEST and "at least half the current value 10" in message
    assert wire_incremental(broker.port, BROKER_TYPE, "7", [("background.threads", 0, "9")])[0] \
        == INVALID_REQUEST
    code, message = wire_incremental(broker.port, BROKER_TYPE, "",
                                     [("sasl.kerberos.min.time.before.relogin", 0, "58000")])
    assert code == INVALID_REQUEST and "default cluster level" in message

    # AlterConfigs replaces this broker's whole set (0081's broker step).
    resource = ConfigResource(ResourceType.BROKER, me,
                              set_config={"sasl.kerberos.min.time.before.relogin": "58000"})
    admin.alter_configs([resource], request_timeout=TIMEOUT_S)[resource].result(timeout=TIMEOUT_S)
    configs = described(admin, ResourceType.BROKER, me)
    assert configs["sasl.kerberos.min.time.before.relogin"].value == "58000"
    assert configs["sasl.kerberos.min.time.before.relogin"].source == DYNAMIC_BROKER


def test_create_topics_reports_each_config_source_as_describe_configs_does(spate_factory):
    """CreateTopics v5+ answers the new topic's configs with their sources: a value the topic
    sets is DYNAMIC_TOPIC_CONFIG, one that falls back to a broker option given at start-up
    STATIC_BROKER_CONFIG (it was DEFAULT_CONFIG here before), the rest DEFAULT_CONFIG, the
    same sources DescribeConfigs gives (kafka-python shows the CreateTopics answer)."""
    if TARGET != "spate":
        pytest.skip("asserts Spate's static options (--retention-ms)")
    broker = spate_factory("--retention-ms", "86400000")
    topic = unique_topic("sources")
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=30000)
    try:
        created = admin.create_topics({topic: {"num_partitions": 1, "replication_factor": 1,
                                               "configs": {"segment.ms": "3600000"}}})
    finally:
        admin.close()
    (result,) = created["topics"]
    # kafka-python names the sources (Kafka's ConfigSource enum).
    source_codes = {"DYNAMIC_TOPIC_CONFIG": DYNAMIC_TOPIC, "STATIC_BROKER_CONFIG": STATIC_BROKER,
                    "DEFAULT_CONFIG": DEFAULT}
    configs = {name: (config["value"], source_codes.get(config["config_source"],
                                                        config["config_source"]))
               for name, config in result["configs"].items()}
    assert configs["segment.ms"] == ("3600000", DYNAMIC_TOPIC)
    assert configs["retention.ms"] == ("86400000", STATIC_BROKER)
    assert configs["cleanup.policy"] == ("delete", DEFAULT)
    described_sources = {name: (entry.value, entry.source) for name, entry in
                         described(ck_admin(broker), ResourceType.TOPIC, topic).items()}
    for name in ("segment.ms", "retention.ms", "cleanup.policy", "max.message.bytes"):
        assert configs[name] == described_sources[name], name


def test_dynamic_log_defaults_apply_to_topics_and_survive_a_restart(spate_factory):
    """log.retention.ms set as the cluster default deletes the old records of a topic that
    does not override retention.ms (and not of one that does), which DescribeConfigs reports
    as DYNAMIC_DEFAULT_BROKER_CONFIG; message.max.bytes set on this broker refuses a larger
    batch. Both survive a restart."""
    if TARGET == "kafka":
        pytest.skip("Spate's retention pass interval")
    broker = spate_factory("--retention-ms=-1")
    admin = ck_admin(broker)
    plain, kept = unique_topic("plain"), unique_topic("kept")
    futures = admin.create_topics([
        NewTopic(plain, 1, 1, config={"segment.bytes": str(64 * 1024)}),
        NewTopic(kept, 1, 1, config={"segment.bytes": str(64 * 1024), "retention.ms": "-1"})],
        operation_timeout=TIMEOUT_S)
    for future in futures.values():
        future.result(timeout=TIMEOUT_S)
    old = 1_577_836_800_000
    for topic in (plain, kept):
        msgs = [Msg(b"k", b"v" * 3000, partition=0, timestamp=old + i) for i in range(60)]
        ck_produce(broker.bootstrap, topic, msgs, **{"linger.ms": 0})
    time.sleep(PASS_S + 1)
    assert ck_watermarks(broker.bootstrap, plain, 0) == (0, 60)

    code, message = wire_incremental(broker.port, BROKER_TYPE, "",
                                     [("log.retention.ms", 0, "3600000")])
    assert code == 0, message
    assert wire_incremental(broker.port, BROKER_TYPE, "1",
                            [("message.max.bytes", 0, "4096")])[0] == 0
    deadline = time.monotonic() + 3 * PASS_S + 5
    while ck_watermarks(broker.bootstrap, plain, 0) != (60, 60) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ck_watermarks(broker.bootstrap, plain, 0) == (60, 60)
    assert ck_watermarks(broker.bootstrap, kept, 0) == (0, 60)

    def check():
        topic = described(admin, ResourceType.TOPIC, plain)
        assert (topic["retention.ms"].value, topic["retention.ms"].source) == \
            ("3600000", DYNAMIC_DEFAULT_BROKER)
        assert (topic["max.message.bytes"].value, topic["max.message.bytes"].source) == \
            ("4096", DYNAMIC_BROKER)
        kept_configs = described(admin, ResourceType.TOPIC, kept)
        assert kept_configs["retention.ms"].source == DYNAMIC_TOPIC
        code, defaults = wire_describe(broker.port, BROKER_TYPE, "")
        assert code == 0
        assert defaults == {"log.retention.ms": (
            "3600000", DYNAMIC_DEFAULT_BROKER, False,
            [("log.retention.ms", "3600000", DYNAMIC_DEFAULT_BROKER)])}
        sock = wire.connect(broker.port)
        try:
            batch = wire.record_batch([b"x" * 8000])
            sock.sendall(wire.produce_v8(plain.encode(), 0, batch, 11))
            _, response = wire.read_response(sock)
        finally:
            sock.close()
        assert wire.produce_v8_result(response)[0] == MESSAGE_TOO_LARGE

    check()
    broker.restart()
    admin = ck_admin(broker)
    check()


def test_group_configs_set_the_heartbeat_interval_of_its_members(broker):
    """A group's consumer.heartbeat.interval.ms (set before the group exists, as Kafka
    allows) is the interval its KIP-848 members are told; another group keeps the broker's.
    DescribeConfigs reports the group's value as GROUP_CONFIG and the broker's as the
    default; values outside the broker's bounds and unknown group configs are
    INVALID_CONFIG; DELETE goes back to the broker's. kafka-python alters and describes
    them too."""
    admin = ck_admin(broker)
    topic = unique_topic("grpcfg")
    futures = admin.create_topics([NewTopic(topic, 1, 1)], operation_timeout=TIMEOUT_S)
    futures[topic].result(timeout=TIMEOUT_S)
    group, other = unique_topic("g"), unique_topic("other")
    configs = described(admin, ResourceType.GROUP, group)
    assert (configs["consumer.heartbeat.interval.ms"].value,
            configs["consumer.heartbeat.interval.ms"].source) == ("5000", DEFAULT)
    assert configs["consumer.session.timeout.ms"].value == "45000"

    assert incremental(admin, ResourceType.GROUP, group,
                       [("consumer.heartbeat.interval.ms", SET, "7000")]) is None
    configs = described(admin, ResourceType.GROUP, group)
    assert (configs["consumer.heartbeat.interval.ms"].value,
            configs["consumer.heartbeat.interval.ms"].source) == ("7000", GROUP)
    assert consumer_heartbeat_interval(broker.port, group, topic) == 7000
    assert consumer_heartbeat_interval(broker.port, other, topic) == 5000

    for bad in ([("consumer.session.timeout.ms", SET, "1000")],
                [("consumer.heartbeat.interval.ms", SET, "60000")],
                [("consumer.heartbeat.interval.ms", SET, "soon")],
                [("share.session.timeout.ms", SET, "1000")]):
        assert incremental(admin, ResourceType.GROUP, group, bad)[0] == INVALID_CONFIG, bad
    assert incremental(admin, ResourceType.GROUP, group,
                       [("consumer.heartbeat.interval.ms", DELETE, None)]) is None
    assert consumer_heartbeat_interval(broker.port, group, topic) == 5000

    client = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=15000)
    try:
        resource = KpConfigResource(KpConfigResourceType.GROUP, group,
                                    {"consumer.session.timeout.ms": "50000"})
        result = client.alter_configs([resource], raise_on_unknown=False)
        assert result == {"group": {group: "OK"}}, result
        answer = client.describe_configs([KpConfigResource(KpConfigResourceType.GROUP, group)],
                                         config_filter="all")
        assert answer["group"][group]["consumer.session.timeout.ms"]["value"] == "50000"
    finally:
        client.close()


def test_a_cluster_default_set_on_one_node_is_every_nodes(spate_factory):
    """Clustered, a dynamic config is a record on the metadata log (Kafka's ConfigRecord):
    log.retention.ms set as the cluster default through node 1 is described by node 2 and is
    the retention.ms of a topic created through node 3; a group config set through node 2
    is described by node 3; node 2 keeps them after a restart (replayed from the log)."""
    if TARGET != "spate":
        pytest.skip("spate's cluster options")
    from test_cluster import agreed_leader, start_cluster, wait_for
    nodes = start_cluster(spate_factory)
    wait_for("a leader all three agree on", lambda: agreed_leader(nodes))
    one, two, three = nodes
    code, message = wire_incremental(one.broker.port, BROKER_TYPE, "",
                                     [("log.retention.ms", 0, "3600000")])
    assert code == 0, message

    def described_by_two():
        code, configs = wire_describe(two.broker.port, BROKER_TYPE, "")
        return code == 0 and configs.get("log.retention.ms", (None,))[0] == "3600000"
    wait_for("node 2 describing the cluster default", described_by_two, timeout=TIMEOUT_S)

    topic = unique_topic("clustered")
    client = ck_admin(three.broker)
    futures = client.create_topics([NewTopic(topic, 1, 1)], operation_timeout=TIMEOUT_S)
    futures[topic].result(timeout=TIMEOUT_S)
    configs = described(client, ResourceType.TOPIC, topic)
    assert (configs["retention.ms"].value, configs["retention.ms"].source) == \
        ("3600000", DYNAMIC_DEFAULT_BROKER)

    group = unique_topic("cg")
    assert incremental(ck_admin(two.broker), ResourceType.GROUP, group,
                       [("consumer.heartbeat.interval.ms", SET, "7000")]) is None
    wait_for("node 3 describing the group config", lambda: described(
        ck_admin(three.broker), ResourceType.GROUP, group)[
            "consumer.heartbeat.interval.ms"].value == "7000", timeout=TIMEOUT_S)

    two.broker.restart()
    wait_for("node 2 describing the cluster default after a restart", described_by_two,
             timeout=TIMEOUT_S)
