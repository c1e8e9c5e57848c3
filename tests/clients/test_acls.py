"""ACLs (issue 17, item 4) with real clients.

Each test starts a broker with `--authorizer acl`, a PLAINTEXT listener on the fixture's port
(its clients are User:ANONYMOUS) and a SASL_PLAINTEXT listener whose SCRAM users are admin (a
super user), alice and bob. confluent-kafka's AdminClient manages the ACLs (CreateAcls,
DescribeAcls, DeleteAcls); producers, consumers, groups, admin calls and transactions of each
principal are then allowed or refused as Kafka's authorizer would, with Kafka's error codes.
The Java AdminClient's describeAcls runs once.
"""

import subprocess
import time

import pytest
from confluent_kafka import (Consumer, ConsumerGroupTopicPartitions, KafkaError, KafkaException,
                             Producer, TopicPartition)
from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation,
                                   AclPermissionType, AdminClient, AlterConfigOpType,
                                   ConfigEntry, ConfigResource, NewPartitions, NewTopic,
                                   ResourcePatternType, ResourceType)

from client_helpers import unique_topic
from conftest import TARGET, free_port

pytestmark = pytest.mark.skipif(TARGET == "kafka", reason="Spate's authorizer options")

PASSWORDS = {"admin": "admin-secret", "alice": "alice-secret", "bob": "bob-secret"}
TOPIC, GROUP, CLUSTER, TXN = (ResourceType.TOPIC, ResourceType.GROUP, ResourceType.BROKER,
                              ResourceType.TRANSACTIONAL_ID)
LITERAL, PREFIXED = ResourcePatternType.LITERAL, ResourcePatternType.PREFIXED
ALLOW, DENY = AclPermissionType.ALLOW, AclPermissionType.DENY


def acl_broker(spate_factory, *extra, authorizer=True, super_users="User:admin"):
    """A broker with PLAINTEXT (the fixture port) and SASL_PLAINTEXT (`.sasl_port`), SCRAM
    users admin, alice and bob, and the ACL authorizer with admin as super user."""
    broker = spate_factory(start=False)
    broker.sasl_port = free_port()
    args = ["--listen", None, "--listeners",
            f"PLAINTEXT://127.0.0.1:{broker.port},SASL_PLAINTEXT://127.0.0.1:{broker.sasl_port}"]
    for user, password in PASSWORDS.items():
        args += ["--scram-bootstrap", f"SCRAM-SHA-256=[name={user},password={password}]"]
    if authorizer:
        args += ["--authorizer", "acl", "--super-users", super_users]
    broker.extra_args = args + list(extra)
    return broker.start()


def conf(broker, user):
    """Client settings for `user` over SASL_PLAINTEXT (None: ANONYMOUS over PLAINTEXT)."""
    if user is None:
        return {"bootstrap.servers": broker.bootstrap}
    return {"bootstrap.servers": f"127.0.0.1:{broker.sasl_port}",
            "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-256",
            "sasl.username": user, "sasl.password": PASSWORDS[user]}


def admin(broker, user="admin"):
    """`user`'s AdminClient on this broker, kept on the broker object: a client that is
    garbage collected fails the futures it handed out."""
    clients = broker.__dict__.setdefault("admins", {})
    if user not in clients:
        clients[user] = AdminClient(conf(broker, user))
    return clients[user]


def code_of(error):
    """The Kafka error code inside whatever a confluent-kafka call raised or returned."""
    if isinstance(error, KafkaException):
        error = error.args[0]
    return error.code() if isinstance(error, KafkaError) else error


def outcome(future, timeout=15):
    """None when the future succeeded, else the Kafka error code it failed with."""
    try:
        future.result(timeout=timeout)
        return None
    except KafkaException as e:
        return code_of(e)


def binding(resource_type, name, principal, operation, permission=ALLOW, pattern=LITERAL,
            host="*"):
    return AclBinding(resource_type, name, pattern, principal, host, operation, permission)


def grant(broker, *bindings):
    for binding_, future in admin(broker).create_acls(list(bindings)).items():
        assert future.result(timeout=15) is None, binding_


def create_topic(broker, topic, partitions=1):
    futures = admin(broker).create_topics([NewTopic(topic, partitions, 1)])
    assert outcome(futures[topic]) is None


def produce_one(broker, user, topic, timeout=15.0, **extra):
    """Produces one record as `user`: None when delivered, else the error code."""
    producer = Producer({**conf(broker, user), "message.timeout.ms": int(timeout * 1000),
                         "acks": "all", **extra})
    results = []
    producer.produce(topic, b"value", on_delivery=lambda err, _: results.append(err))
    producer.flush(timeout + 5)
    assert results, "no delivery report"
    return code_of(results[0]) if results[0] else None


def consume_with_group(broker, user, topic, group, count=1, timeout=20.0):
    """Subscribes as `user` in `group` and reads `count` records: ('ok', values) or
    ('error', code) for the first error the consumer reports."""
    consumer = Consumer({**conf(broker, user), "group.id": group,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "session.timeout.ms": 6000})
    try:
        consumer.subscribe([topic])
        values = []
        deadline = time.monotonic() + timeout
        while len(values) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error():
                return "error", msg.error().code()
            values.append(msg.value())
        if len(values) < count:
            return "timeout", values
        consumer.commit(asynchronous=False)
        return "ok", values
    finally:
        consumer.close()


def kp_describe_error(broker):
    """The error name of kafka-python's describe_acls (every ACL) over PLAINTEXT."""
    from kafka.admin import (ACLFilter, ACLOperation, ACLPermissionType,
                             ACLResourcePatternType, KafkaAdminClient, ResourcePatternFilter)
    from kafka.admin import ResourceType as KpResourceType
    client = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=10000)
    try:
        acl_filter = ACLFilter(principal=None, host=None, operation=ACLOperation.ANY,
                               permission_type=ACLPermissionType.ANY,
                               resource_pattern=ResourcePatternFilter(
                                   KpResourceType.ANY, None, ACLResourcePatternType.ANY))
        _, error = client.describe_acls(acl_filter)
        return type(error).__name__ if error is not None else None
    except Exception as e:  # kafka-python raises the broker's error for some versions
        return type(e).__name__
    finally:
        client.close()


def described(broker, acl_filter, user="admin"):
    found = admin(broker, user).describe_acls(acl_filter).result(timeout=15)
    return sorted((b.restype_int, b.name, b.resource_pattern_type_int, b.principal, b.host,
                   b.operation_int, b.permission_type_int) for b in found)


def as_tuple(b):
    return (b.restype_int, b.name, b.resource_pattern_type_int, b.principal, b.host,
            b.operation_int, b.permission_type_int)


# ---------------------------------------------------------------------------------------------
# The ACL APIs


def test_create_describe_and_delete_acls_with_filters(spate_factory):
    """CreateAcls stores literal and prefixed ACLs of every resource type; DescribeAcls
    filters by type, name, pattern (LITERAL, PREFIXED, ANY, MATCH), principal, operation and
    permission as Kafka's AclBindingFilter; DeleteAcls removes what its filters match and
    reports it; invalid creations are refused one by one."""
    broker = acl_broker(spate_factory)
    acls = [
        binding(TOPIC, "orders", "User:alice", AclOperation.WRITE),
        binding(TOPIC, "ord", "User:bob", AclOperation.READ, pattern=PREFIXED),
        binding(TOPIC, "*", "User:bob", AclOperation.DESCRIBE),
        binding(GROUP, "g1", "User:bob", AclOperation.READ, host="10.1.2.3"),
        binding(CLUSTER, "kafka-cluster", "User:alice", AclOperation.DESCRIBE, DENY),
        binding(TXN, "tx-", "User:alice", AclOperation.WRITE, pattern=PREFIXED),
    ]
    grant(broker, *acls)
    everything = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                                  AclOperation.ANY, AclPermissionType.ANY)
    assert described(broker, everything) == sorted(as_tuple(a) for a in acls)
    # Creating the same ACL again is no error and adds nothing.
    grant(broker, acls[0])
    assert len(described(broker, everything)) == len(acls)

    def only(restype=ResourceType.ANY, name=None, pattern=ResourcePatternType.ANY,
             principal=None, operation=AclOperation.ANY, permission=AclPermissionType.ANY):
        return described(broker, AclBindingFilter(restype, name, pattern, principal, None,
                                                  operation, permission))
    names = lambda rows: sorted(row[1] for row in rows)  # noqa: E731
    assert names(only(TOPIC)) == ["*", "ord", "orders"]
    assert names(only(TOPIC, "orders")) == ["orders"]
    assert names(only(TOPIC, "orders", ResourcePatternType.MATCH)) == ["*", "ord", "orders"]
    assert names(only(TOPIC, pattern=PREFIXED)) == ["ord"]
    assert names(only(principal="User:alice")) == ["kafka-cluster", "orders", "tx-"]
    assert names(only(operation=AclOperation.READ)) == ["g1", "ord"]
    assert names(only(permission=DENY)) == ["kafka-cluster"]
    assert only(GROUP)[0][4] == "10.1.2.3"

    # Invalid creations: a MATCH pattern, an empty name, a principal without a type, a
    # cluster resource not named kafka-cluster. Each fails alone; the valid one is stored.
    bad = [binding(TOPIC, "x", "alice", AclOperation.READ),
           binding(CLUSTER, "other", "User:alice", AclOperation.ALTER),
           binding(TOPIC, "", "User:alice", AclOperation.READ)]
    good = binding(TOPIC, "fine", "User:alice", AclOperation.READ)
    results = admin(broker).create_acls(bad + [good])
    for b in bad:
        assert outcome(results[b]) == KafkaError.INVALID_REQUEST, b
    assert outcome(results[good]) is None

    # DeleteAcls: two filters, an ACL matched by both is reported under both.
    topic_filter = AclBindingFilter(TOPIC, None, ResourcePatternType.ANY, None, None,
                                    AclOperation.ANY, AclPermissionType.ANY)
    bob_filter = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, "User:bob",
                                  None, AclOperation.ANY, AclPermissionType.ANY)
    deleted = admin(broker).delete_acls([topic_filter, bob_filter])
    by_topic = sorted(as_tuple(b) for b in deleted[topic_filter].result(timeout=15))
    by_bob = sorted(as_tuple(b) for b in deleted[bob_filter].result(timeout=15))
    assert names(by_topic) == ["*", "fine", "ord", "orders"]
    assert names(by_bob) == ["*", "g1", "ord"]
    assert names(described(broker, everything)) == ["kafka-cluster", "tx-"]


def test_acl_apis_need_the_cluster_permission_and_an_authorizer(spate_factory):
    """Without ALTER (DESCRIBE) on the cluster a principal may not create or delete (list)
    ACLs: CLUSTER_AUTHORIZATION_FAILED; a grant of ALTER on the cluster lets alice manage
    them. A broker without --authorizer answers SECURITY_DISABLED, as Kafka does."""
    broker = acl_broker(spate_factory)
    new = binding(TOPIC, "t", "User:bob", AclOperation.READ)
    assert outcome(admin(broker, "alice").create_acls([new])[new]) == \
        KafkaError.CLUSTER_AUTHORIZATION_FAILED
    everything = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                                  AclOperation.ANY, AclPermissionType.ANY)
    # librdkafka drops DescribeAcls' top-level error (it reports an empty list), so the
    # refusal is read with kafka-python, as the anonymous PLAINTEXT client.
    assert kp_describe_error(broker) == "ClusterAuthorizationFailedError"
    assert outcome(admin(broker, "alice").delete_acls([everything])[everything]) == \
        KafkaError.CLUSTER_AUTHORIZATION_FAILED
    grant(broker, binding(CLUSTER, "kafka-cluster", "User:alice", AclOperation.ALTER))
    # ALTER implies DESCRIBE: alice may now list them too.
    assert outcome(admin(broker, "alice").create_acls([new])[new]) is None
    assert len(described(broker, everything, user="alice")) == 2

    plain = acl_broker(spate_factory, authorizer=False)
    assert outcome(admin(plain).create_acls([new])[new]) == KafkaError.SECURITY_DISABLED
    assert kp_describe_error(plain) == "SecurityDisabledError"


# ---------------------------------------------------------------------------------------------
# Requests checked per principal


def test_produce_and_consume_per_principal(spate_factory):
    """alice may write the topic, bob may read it in his group: alice's records are
    delivered, bob reads them and commits; bob's write and alice's read (no group READ) are
    refused with TOPIC_ and GROUP_AUTHORIZATION_FAILED; the anonymous PLAINTEXT client may
    do neither."""
    broker = acl_broker(spate_factory)
    topic, group = unique_topic("acl"), "readers"
    create_topic(broker, topic)
    grant(broker,
          binding(TOPIC, topic, "User:alice", AclOperation.WRITE),
          binding(TOPIC, topic, "User:bob", AclOperation.READ),
          binding(GROUP, group, "User:bob", AclOperation.READ))
    assert produce_one(broker, "alice", topic) is None
    assert consume_with_group(broker, "bob", topic, group) == ("ok", [b"value"])
    assert produce_one(broker, "bob", topic) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert produce_one(broker, None, topic) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert consume_with_group(broker, "alice", topic, group) == \
        ("error", KafkaError.GROUP_AUTHORIZATION_FAILED)
    # alice with READ on the group but not on the topic: the topic is refused.
    grant(broker, binding(GROUP, group, "User:alice", AclOperation.READ))
    assert consume_with_group(broker, "alice", topic, group) == \
        ("error", KafkaError.TOPIC_AUTHORIZATION_FAILED)
    # bob's commit is there: the admin (super user) reads it.
    committed = admin(broker).list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, 0)])])
    offsets = committed[group].result(timeout=15).topic_partitions
    assert [(tp.topic, tp.offset) for tp in offsets] == [(topic, 1)]


def test_prefixed_acls_wildcard_principal_and_deny_wins(spate_factory):
    """A PREFIXED ALLOW for User:* opens every topic with the prefix to everyone; a DENY for
    alice on one of them wins over it; a DENY for another host does not apply to 127.0.0.1."""
    broker = acl_broker(spate_factory)
    open_topic, closed_topic = unique_topic("pub-open"), unique_topic("pub-closed")
    for topic in (open_topic, closed_topic):
        create_topic(broker, topic)
    grant(broker,
          binding(TOPIC, "pub-", "User:*", AclOperation.WRITE, pattern=PREFIXED),
          binding(TOPIC, closed_topic, "User:alice", AclOperation.WRITE, DENY),
          binding(TOPIC, open_topic, "User:alice", AclOperation.ALL, DENY, host="10.9.9.9"))
    assert produce_one(broker, "alice", open_topic) is None
    assert produce_one(broker, "bob", closed_topic) is None
    assert produce_one(broker, None, open_topic) is None
    assert produce_one(broker, "alice", closed_topic) == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_metadata_lists_only_topics_the_principal_may_describe(spate_factory):
    """Metadata for all topics leaves out the topics alice may not describe (READ, WRITE or
    DESCRIBE imply it); the super user sees every one; a named topic she may not describe
    is TOPIC_AUTHORIZATION_FAILED, and so is an unknown topic she may describe but not
    create (auto-creation needs CREATE)."""
    broker = acl_broker(spate_factory)
    topics = [unique_topic(f"m{i}") for i in range(4)]
    for topic in topics:
        create_topic(broker, topic)
    grant(broker,
          binding(TOPIC, topics[0], "User:alice", AclOperation.READ),
          binding(TOPIC, topics[1], "User:alice", AclOperation.DESCRIBE),
          binding(TOPIC, topics[2], "User:alice", AclOperation.CREATE))
    seen = admin(broker, "alice").list_topics(timeout=10).topics
    assert sorted(seen) == sorted(topics[:2])
    everything = admin(broker).list_topics(timeout=10).topics
    assert set(topics) <= set(everything)
    hidden = admin(broker, "alice").list_topics(topics[3], timeout=10).topics[topics[3]]
    assert hidden.error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    new = unique_topic("auto")
    grant(broker, binding(TOPIC, new, "User:alice", AclOperation.DESCRIBE))
    refused = admin(broker, "alice").list_topics(new, timeout=10).topics[new]
    assert refused.error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert new not in admin(broker).list_topics(timeout=10).topics


def test_admin_operations_allowed_and_denied(spate_factory):
    """CreateTopics needs CREATE on the cluster or the topic (a prefixed grant works),
    DeleteTopics DELETE, CreatePartitions ALTER, DescribeConfigs DESCRIBE_CONFIGS (implied by
    ALTER_CONFIGS), AlterConfigs ALTER_CONFIGS; broker configs need the cluster."""
    broker = acl_broker(spate_factory)
    alice = admin(broker, "alice")
    refused = unique_topic("team-x")
    assert outcome(alice.create_topics([NewTopic(refused, 1, 1)])[refused]) == \
        KafkaError.TOPIC_AUTHORIZATION_FAILED
    grant(broker, binding(TOPIC, "team-", "User:alice", AclOperation.CREATE, pattern=PREFIXED))
    mine = unique_topic("team-a")
    assert outcome(alice.create_topics([NewTopic(mine, 1, 1)])[mine]) is None
    assert outcome(alice.create_partitions([NewPartitions(mine, 2)])[mine]) == \
        KafkaError.TOPIC_AUTHORIZATION_FAILED
    resource = ConfigResource(ConfigResource.Type.TOPIC, mine)
    assert outcome(alice.describe_configs([resource])[resource]) == \
        KafkaError.TOPIC_AUTHORIZATION_FAILED
    broker_resource = ConfigResource(ConfigResource.Type.BROKER, "1")
    assert outcome(alice.describe_configs([broker_resource])[broker_resource]) == \
        KafkaError.CLUSTER_AUTHORIZATION_FAILED
    assert outcome(alice.delete_topics([mine])[mine]) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    grant(broker,
          binding(TOPIC, mine, "User:alice", AclOperation.ALTER),
          binding(TOPIC, mine, "User:alice", AclOperation.ALTER_CONFIGS),
          binding(TOPIC, mine, "User:alice", AclOperation.DELETE))
    assert outcome(alice.create_partitions([NewPartitions(mine, 2)])[mine]) is None
    configs = alice.describe_configs([resource])[resource].result(timeout=15)
    assert "retention.ms" in configs
    altered = ConfigResource(ConfigResource.Type.TOPIC, mine,
                             set_config={"retention.ms": "3600000"})
    assert outcome(alice.alter_configs([altered])[altered]) is None
    assert outcome(alice.delete_topics([mine])[mine]) is None


def test_dynamic_configs_need_the_cluster_or_the_group(spate_factory):
    """Dynamic configs (issue 17): a broker's need ALTER_CONFIGS (DESCRIBE_CONFIGS) on the
    cluster, a group's on the group, as Kafka asks; ALTER_CONFIGS implies DESCRIBE_CONFIGS."""
    broker = acl_broker(spate_factory)
    alice = admin(broker, "alice")

    def alter(resource_type, name, key, value):
        entry = ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)
        resource = ConfigResource(resource_type, name, incremental_configs=[entry])
        return outcome(alice.incremental_alter_configs([resource])[resource])

    group_resource = ConfigResource(ResourceType.GROUP, "g-cfg")
    assert alter(ResourceType.BROKER, "1", "background.threads", "9") == \
        KafkaError.CLUSTER_AUTHORIZATION_FAILED
    assert alter(ResourceType.GROUP, "g-cfg", "consumer.heartbeat.interval.ms", "6000") == \
        KafkaError.GROUP_AUTHORIZATION_FAILED
    assert outcome(alice.describe_configs([group_resource])[group_resource]) == \
        KafkaError.GROUP_AUTHORIZATION_FAILED
    grant(broker,
          binding(CLUSTER, "kafka-cluster", "User:alice", AclOperation.ALTER_CONFIGS),
          binding(GROUP, "g-cfg", "User:alice", AclOperation.ALTER_CONFIGS))
    assert alter(ResourceType.BROKER, "1", "background.threads", "9") is None
    assert alter(ResourceType.GROUP, "g-cfg", "consumer.heartbeat.interval.ms", "6000") is None
    configs = alice.describe_configs([group_resource])[group_resource].result(timeout=15)
    assert configs["consumer.heartbeat.interval.ms"].value == "6000"
    assert alter(ResourceType.GROUP, "g-other", "consumer.heartbeat.interval.ms", "6000") == \
        KafkaError.GROUP_AUTHORIZATION_FAILED


def test_group_operations_allowed_and_denied(spate_factory):
    """ListGroups lists the groups the principal may describe (all with DESCRIBE on the
    cluster); DescribeGroups needs DESCRIBE and DeleteGroups DELETE on the group."""
    broker = acl_broker(spate_factory)
    topic = unique_topic("grp")
    create_topic(broker, topic)
    assert produce_one(broker, "admin", topic) is None
    groups = ["g-mine", "g-other"]
    for group in groups:
        assert consume_with_group(broker, "admin", topic, group)[0] == "ok"
    bob = admin(broker, "bob")

    def listed(client):
        result = client.list_consumer_groups().result(timeout=15)
        return sorted(g.group_id for g in result.valid)
    assert set(groups) <= set(listed(admin(broker)))
    assert listed(bob) == []
    grant(broker, binding(GROUP, "g-mine", "User:bob", AclOperation.DESCRIBE))
    assert listed(bob) == ["g-mine"]
    described_groups = bob.describe_consumer_groups(groups)
    assert outcome(described_groups["g-mine"]) is None
    assert outcome(described_groups["g-other"]) == KafkaError.GROUP_AUTHORIZATION_FAILED
    assert outcome(bob.delete_consumer_groups(["g-mine"])["g-mine"]) == \
        KafkaError.GROUP_AUTHORIZATION_FAILED
    grant(broker, binding(GROUP, "g-mine", "User:bob", AclOperation.DELETE))
    assert outcome(bob.delete_consumer_groups(["g-mine"])["g-mine"]) is None
    grant(broker, binding(CLUSTER, "kafka-cluster", "User:bob", AclOperation.DESCRIBE))
    assert listed(bob) == ["g-other"]


def test_authorized_operations(spate_factory):
    """The authorized-operations bitfields (DescribeCluster, Metadata for DescribeTopics,
    DescribeGroups) list what the principal may do: everything a resource supports for the
    super user, the granted and implied operations for alice, nothing on the cluster without
    DESCRIBE there."""
    from confluent_kafka import TopicCollection
    broker = acl_broker(spate_factory)
    topic, group = unique_topic("ops"), "ops-group"
    create_topic(broker, topic)
    assert produce_one(broker, "admin", topic) is None
    assert consume_with_group(broker, "admin", topic, group)[0] == "ok"
    grant(broker,
          binding(TOPIC, topic, "User:alice", AclOperation.READ),
          binding(TOPIC, topic, "User:alice", AclOperation.ALTER_CONFIGS),
          binding(GROUP, group, "User:alice", AclOperation.DELETE))
    names = lambda ops: sorted(op.name for op in ops)  # noqa: E731

    def cluster_ops(user):
        found = admin(broker, user).describe_cluster(include_authorized_operations=True)
        return names(found.result(timeout=15).authorized_operations or [])

    def topic_ops(user):
        found = admin(broker, user).describe_topics(TopicCollection([topic]),
                                                    include_authorized_operations=True)
        return names(found[topic].result(timeout=15).authorized_operations)

    def group_ops(user):
        found = admin(broker, user).describe_consumer_groups(
            [group], include_authorized_operations=True)
        return names(found[group].result(timeout=15).authorized_operations)
    assert cluster_ops("admin") == ["ALTER", "ALTER_CONFIGS", "CLUSTER_ACTION", "CREATE",
                                    "DESCRIBE", "DESCRIBE_CONFIGS", "IDEMPOTENT_WRITE"]
    assert cluster_ops("alice") == []
    assert topic_ops("admin") == ["ALTER", "ALTER_CONFIGS", "CREATE", "DELETE", "DESCRIBE",
                                  "DESCRIBE_CONFIGS", "READ", "WRITE"]
    assert topic_ops("alice") == ["ALTER_CONFIGS", "DESCRIBE", "DESCRIBE_CONFIGS", "READ"]
    assert group_ops("alice") == ["DELETE", "DESCRIBE"]


def test_transactions_need_write_on_the_transactional_id(spate_factory):
    """A transactional producer needs WRITE on its transactional id (else
    TRANSACTIONAL_ID_AUTHORIZATION_FAILED at init_transactions), WRITE on the topic, and
    READ on the group whose offsets it commits (GROUP_AUTHORIZATION_FAILED)."""
    broker = acl_broker(spate_factory)
    topic, txn_id, group = unique_topic("txn"), "tx-alice", "txn-group"
    create_topic(broker, topic)
    grant(broker, binding(TOPIC, topic, "User:alice", AclOperation.WRITE))

    def producer():
        return Producer({**conf(broker, "alice"), "transactional.id": txn_id,
                         "transaction.timeout.ms": 10000})
    with pytest.raises(KafkaException) as refused:
        producer().init_transactions(15)
    assert code_of(refused.value) == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    grant(broker, binding(TXN, "tx-", "User:alice", AclOperation.WRITE, pattern=PREFIXED))
    p = producer()
    p.init_transactions(15)
    p.begin_transaction()
    p.produce(topic, b"in-txn")
    p.commit_transaction(15)
    p.begin_transaction()
    p.produce(topic, b"second")
    member = Consumer({**conf(broker, "admin"), "group.id": group})
    metadata = member.consumer_group_metadata()
    member.close()
    with pytest.raises(KafkaException) as no_group:
        p.send_offsets_to_transaction([TopicPartition(topic, 0, 1)], metadata, 15)
    assert code_of(no_group.value) == KafkaError.GROUP_AUTHORIZATION_FAILED
    p.abort_transaction(15)
    # The committed record is there for a reader allowed to read it.
    assert consume_with_group(broker, "admin", topic, "checker", count=1)[1][0] == b"in-txn"


def test_acls_survive_a_restart_and_changes_reach_open_connections(spate_factory):
    """A producer allowed to write keeps its connection; once its ACL is deleted its next
    record on that same connection is refused (every shard reloads the changed ACLs and the
    connection forgets its remembered decisions). Granted again, the ACL survives a clean
    restart and is still enforced there."""
    broker = acl_broker(spate_factory)
    topic = unique_topic("durable")
    create_topic(broker, topic)
    write = binding(TOPIC, topic, "User:alice", AclOperation.WRITE)
    grant(broker, write)
    producer = Producer({**conf(broker, "alice"), "message.timeout.ms": 5000,
                         "linger.ms": 0})
    results = []

    def send():
        producer.produce(topic, b"v", on_delivery=lambda err, _: results.append(err))
        producer.flush(15)
        return code_of(results[-1]) if results[-1] else None
    for _ in range(3):
        assert send() is None
    only_write = AclBindingFilter(TOPIC, topic, LITERAL, "User:alice", "*", AclOperation.WRITE,
                                  ALLOW)
    removed = admin(broker).delete_acls([only_write])[only_write].result(timeout=15)
    assert [as_tuple(b) for b in removed] == [as_tuple(write)]
    assert send() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    grant(broker, write)
    assert produce_one(broker, "alice", topic) is None
    broker.restart()
    acls_file = (broker.data_dir / "__spate_meta" / "acls").read_text()
    assert "User:alice" in acls_file and "WRITE" in acls_file
    assert produce_one(broker, "alice", topic) is None
    assert produce_one(broker, "bob", topic) == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_super_users_and_allow_everyone_if_no_acl_found(spate_factory):
    """A super user passes every check, a DENY for everyone included. With
    --allow-everyone-if-no-acl-found, a topic no ACL names is open to anybody (ANONYMOUS
    included) while one with an ACL follows it."""
    broker = acl_broker(spate_factory, "--allow-everyone-if-no-acl-found")
    free, guarded = unique_topic("free"), unique_topic("guarded")
    create_topic(broker, free)
    create_topic(broker, guarded)
    grant(broker,
          binding(TOPIC, guarded, "User:bob", AclOperation.WRITE),
          binding(TOPIC, guarded, "User:*", AclOperation.ALL, DENY))
    assert produce_one(broker, None, free) is None
    assert produce_one(broker, "alice", free) is None
    assert produce_one(broker, "alice", guarded) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert produce_one(broker, "bob", guarded) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert produce_one(broker, "admin", guarded) is None
    # Without the flag (default), a topic no ACL names is closed.
    strict = acl_broker(spate_factory)
    create_topic(strict, free)
    assert produce_one(strict, "alice", free) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert produce_one(strict, "admin", free) is None


@pytest.mark.timeout(420)
def test_java_admin_client_describe_acls(spate_factory, tmp_path):
    """The Java AdminClient (kafka-clients 4.3) creates a prefixed ACL and lists every ACL
    with describeAcls; against a broker without an authorizer it gets
    SecurityDisabledException."""
    from java_build import compile_java
    classpath = compile_java("AclDescribe")
    broker = acl_broker(spate_factory, super_users="User:admin,User:ANONYMOUS")
    grant(broker, binding(GROUP, "g", "User:bob", AclOperation.READ, DENY))

    def run(target):
        done = subprocess.run(["java", "-cp", classpath, "AclDescribe", target.bootstrap,
                               "logs-"], capture_output=True, timeout=120)
        return done.returncode, done.stdout.decode(errors="replace"), \
            done.stderr.decode(errors="replace")
    code, out, err = run(broker)
    assert code == 0, (out + err)[-3000:]
    lines = sorted(line for line in out.splitlines() if line.startswith("acl "))
    assert lines == ["acl GROUP g LITERAL User:bob * READ DENY",
                     "acl TOPIC logs- PREFIXED User:alice * READ ALLOW"], out
    plain = acl_broker(spate_factory, authorizer=False)
    code, out, err = run(plain)
    assert code == 1 and "error SecurityDisabledException" in out, (out + err)[-3000:]
