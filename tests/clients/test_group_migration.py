"""Online migration between classic and KIP-848 consumer groups
(`group.consumer.migration.policy`, Kafka 4's default `bidirectional`), with real clients:
Java kafka-clients 4.3.1 (`java/GroupMember.java`) and confluent-kafka.

A rolling upgrade as a user does it: two classic members read a 4-partition topic, one is
restarted with group.protocol=consumer (the group becomes a consumer group; the classic
member stays in it, rebalanced by the broker's assignor through JoinGroup/SyncGroup), both
read on, every partition held by one member at a time (from the members' added/revoked
events), every record produced before, during and after read (members commit each record
before the next poll, so nothing is read twice either), and the group survives a kill -9 of
the broker as a consumer group. Then the new member leaves, the group is classic again and
the classic member takes every partition. Under `disabled` a consumer-protocol member is
refused by a classic group with members (GROUP_ID_NOT_FOUND), as Kafka refuses it.
"""

import time

import pytest
from confluent_kafka.admin import AdminClient

from client_helpers import CK_COMMON
from conftest import TARGET
from test_consumer_groups import ownership_never_overlaps
from test_groups import (create_topic, java_members, members, produce, unique,  # noqa: F401
                         wait_balanced, wait_until)

TIMEOUT_S = 60
SESSION_MS = 6000
CONSUMER = {"group.protocol": "consumer"}

pytestmark = pytest.mark.skipif(TARGET == "kafka", reason="broker options are Spate's")


def admin(broker):
    return AdminClient({"bootstrap.servers": broker.bootstrap, **CK_COMMON})


def group_type(broker, group):
    """The group's type as ListGroups reports it: "CLASSIC" or "CONSUMER"."""
    client = admin(broker)
    listed = client.list_consumer_groups().result(timeout=TIMEOUT_S)
    found = [g for g in listed.valid if g.group_id == group]
    assert found, (listed.valid, listed.errors)
    return str(found[0].type).rsplit(".", 1)[-1]


def values(group_members):
    return [v for m in group_members for _, _, v in m.records()]


def wait_read(group_members, produced, what):
    wanted = set(produced_values(produced))
    wait_until(lambda: wanted <= set(values(group_members)), TIMEOUT_S + SESSION_MS / 1000,
               f"every record {what} read")


def produced_values(msgs):
    return [m.value.decode() for m in msgs]


@pytest.mark.timeout(400)
@pytest.mark.parametrize("classic,new", [("java", "ck"), ("ck", "java")])
def test_a_rolling_upgrade_to_the_consumer_protocol_and_back(spate_factory, members,
                                                             java_members, classic, new):
    broker = spate_factory("--default-partitions", "4",
                           "--group-consumer-heartbeat-interval-ms", "500",
                           "--group-consumer-session-timeout-ms", str(SESSION_MS))
    topic, group = create_topic(broker), unique("migrate")
    start = lambda kind, conf=None: members(kind, broker, group, topic, conf=conf,  # noqa: E731
                                            java_classpath=java_members)
    a, b = start(classic), start(classic)
    wait_balanced([a, b], timeout=60)
    assert group_type(broker, group) == "CLASSIC"
    before = produce(broker, topic, per_partition=10, tag="before")
    wait_read([a, b], before, "before the upgrade")

    # b is restarted with the new protocol; records keep coming meanwhile.
    b.leave()
    b2 = start(new, CONSUMER)
    during = produce(broker, topic, per_partition=10, tag="during")
    wait_balanced([a, b2], timeout=60)
    assert group_type(broker, group) == "CONSUMER"
    after = produce(broker, topic, per_partition=10, tag="after")
    wait_read([a, b, b2], before + during + after, "produced around the upgrade")
    ownership_never_overlaps([a, b, b2])
    client = admin(broker)  # kept alive until the future resolves
    described = client.describe_consumer_groups([group])[group].result(timeout=TIMEOUT_S)
    assert str(described.type).endswith("CONSUMER")
    assert len(described.members) == 2
    assigned = sorted(tp.partition for m in described.members
                      for tp in m.assignment.topic_partitions)
    assert assigned == [0, 1, 2, 3]

    # The converted group, with its classic member, is durable.
    broker.kill9()
    broker.start()
    wait_until(lambda: group_type(broker, group) == "CONSUMER", TIMEOUT_S, "the group back")
    restarted = produce(broker, topic, per_partition=5, tag="restarted")
    wait_read([a, b2], restarted, "after the broker's kill -9")
    wait_balanced([a, b2], timeout=60)

    # The new member leaves: the last consumer-protocol member, so the group is classic
    # again and its classic member takes everything.
    b2.leave()
    wait_balanced([a], timeout=60)
    wait_until(lambda: group_type(broker, group) == "CLASSIC", TIMEOUT_S, "a classic group")
    final = produce(broker, topic, per_partition=5, tag="final")
    wait_read([a], final, "after the downgrade")
    ownership_never_overlaps([a, b, b2])
    seen = [(p, o) for m in (a, b, b2) for p, o, _ in m.records()]
    everything = before + during + after + restarted + final
    assert set(produced_values(everything)) <= set(values([a, b, b2]))
    # Duplicates only where an offset was not committed yet when its partition moved (each
    # record is committed before the next poll, so at most one per partition and move).
    duplicates = len(seen) - len(set(seen))
    assert duplicates <= 4 * 4, f"{duplicates} records read twice"
    print(f"{len(everything)} records, {duplicates} read twice")


@pytest.mark.timeout(300)
def test_policy_disabled_refuses_a_consumer_member_in_a_classic_group(spate_factory, members,
                                                                      java_members):
    """Kafka's answer with group.consumer.migration.policy=disabled: GROUP_ID_NOT_FOUND, and
    the classic group is undisturbed. (Under the default policy the same member converts the
    group: the test above.)"""
    broker = spate_factory("--default-partitions", "4",
                           "--group-consumer-heartbeat-interval-ms", "500",
                           "--group-consumer-session-timeout-ms", str(SESSION_MS),
                           "--group-consumer-migration-policy", "disabled")
    topic, group = create_topic(broker), unique("migrate")
    old = members("ck", broker, group, topic)
    wait_balanced([old], timeout=60)
    joiner = members("java", broker, group, topic, conf=CONSUMER, java_classpath=java_members)
    wait_until(lambda: joiner.crashed(), 30, "the consumer-protocol member's error")
    assert "GroupIdNotFound" in joiner.crashed()[0]["error"], joiner.crashed()
    assert old.assignment() == (0, 1, 2, 3)
    assert group_type(broker, group) == "CLASSIC"


# A consumer-protocol member's session outlasts every wait below, so that only the member's
# replacement or its leave can convert the group, not its session's end.
LONG_SESSION_MS = 120_000


@pytest.mark.timeout(300)
def test_a_classic_static_member_replacing_the_last_consumer_member_downgrades(
        spate_factory, members, java_members):
    """Kafka's `validateOnlineDowngradeWithReplacedMemberId`: a consumer group of a classic
    member (confluent-kafka) and a static consumer-protocol member (Java,
    group.instance.id=b) that crashes; a classic member with the same instance id takes its
    place (long before its session would end). The group becomes a classic group at once,
    Stable, with no rebalance: the newcomer gets its predecessor's partitions and the
    other member keeps its own without a revocation. Records produced after are all read."""
    broker = spate_factory("--default-partitions", "4",
                           "--group-consumer-heartbeat-interval-ms", "500",
                           "--group-consumer-session-timeout-ms", str(LONG_SESSION_MS))
    topic, group = create_topic(broker), unique("migrate")
    a = members("ck", broker, group, topic)
    wait_balanced([a], timeout=60)
    b = members("java", broker, group, topic, conf={**CONSUMER, "group.instance.id": "b"},
                java_classpath=java_members)
    wait_balanced([a, b], timeout=60)
    assert group_type(broker, group) == "CONSUMER"
    kept, taken = a.assignment(), b.assignment()
    b.kill()
    moment = time.monotonic()
    b2 = members("ck", broker, group, topic, conf={"group.instance.id": "b"})
    wait_until(lambda: b2.assignment() == taken or b2.crashed(), TIMEOUT_S,
               f"the newcomer to take {taken}: {b2.assignment()}")
    assert not b2.crashed(), b2.crashed()
    assert group_type(broker, group) == "CLASSIC"
    after = produce(broker, topic, per_partition=5, tag="after")
    wait_read([a, b2], after, "after the downgrade")
    assert a.assignment() == kept
    assert not a.events_after(moment, "revoked", "assigned"), a.snapshot()
    ownership_never_overlaps([a, b, b2])


@pytest.mark.timeout(300)
def test_a_static_consumer_member_leaving_for_good_downgrades(spate_factory, members,
                                                               java_members):
    """Kafka's `consumerGroupLeave`: a static consumer-protocol member that leaves with epoch
    -1 (the Java client's close with CloseOptions LEAVE_GROUP; a plain close is -2 and keeps
    it until its session ends) is fenced as a dynamic one is: the last member of the
    consumer protocol, so the group is classic again and its classic member takes every
    partition."""
    broker = spate_factory("--default-partitions", "4",
                           "--group-consumer-heartbeat-interval-ms", "500",
                           "--group-consumer-session-timeout-ms", str(LONG_SESSION_MS))
    topic, group = create_topic(broker), unique("migrate")
    a = members("ck", broker, group, topic)
    wait_balanced([a], timeout=60)
    b = members("java", broker, group, topic,
                conf={**CONSUMER, "group.instance.id": "b", "test.close": "leave"},
                java_classpath=java_members)
    wait_balanced([a, b], timeout=60)
    assert group_type(broker, group) == "CONSUMER"
    b.leave()
    wait_until(lambda: group_type(broker, group) == "CLASSIC", TIMEOUT_S, "a classic group")
    wait_balanced([a], timeout=60)
    final = produce(broker, topic, per_partition=5, tag="final")
    wait_read([a], final, "after the downgrade")
    ownership_never_overlaps([a, b])
