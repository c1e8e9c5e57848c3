"""Many partitions and few descriptors (issue 20): the broker keeps within its descriptor limit
by closing idle segment files and opening them again on demand, so partitions far beyond
`ulimit -n` are created, written, read and recovered; a topic whose logs cannot be opened is
refused and leaves nothing behind; a failing `accept` backs off and does not flood the log.

The broker runs with a low RLIMIT_NOFILE set for its process and without CAP_SYS_RESOURCE (as
an unprivileged user would), so it cannot raise the limit itself.
"""

import collections
import ctypes
import re
import resource
import socket
import time

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

from client_helpers import CK_COMMON, ck_consumer, ck_producer, unique_topic
from conftest import TARGET

# Serial: thousands of partitions created, written and recovered within time bounds, and a
# count of log lines in 4 s.
pytestmark = [pytest.mark.skipif(TARGET != "spate", reason="Spate's descriptor budget"),
              pytest.mark.serial]

TIMEOUT_S = 60
PR_CAPBSET_DROP = 24
CAP_SYS_RESOURCE = 24


def limited_descriptors(limit):
    """A pre-exec hook: soft and hard RLIMIT_NOFILE of `limit`, and no way to raise it."""
    def hook():
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
        # Without CAP_SYS_RESOURCE in the bounding set, a root broker cannot raise the hard
        # limit either (an unprivileged one never could).
        ctypes.CDLL(None, use_errno=True).prctl(PR_CAPBSET_DROP, CAP_SYS_RESOURCE, 0, 0, 0)
    return hook


def start_limited(spate_factory, limit, *args):
    broker = spate_factory(*args, start=False)
    broker.preexec = limited_descriptors(limit)
    return broker.start()


def descriptors_of(pid):
    import os
    return len(os.listdir(f"/proc/{pid}/fd"))


def admin_of(broker):
    return AdminClient({"bootstrap.servers": broker.bootstrap, **CK_COMMON})


def create(admin, topic, partitions):
    futures = admin.create_topics([NewTopic(topic, partitions, 1)],
                                  operation_timeout=TIMEOUT_S, request_timeout=TIMEOUT_S)
    return futures[topic].result(timeout=TIMEOUT_S)


def produce_one_each(broker, topic, partitions, tag):
    """One record per partition; returns the (partition, offset) of each, failing on errors."""
    producer = ck_producer(broker.bootstrap, **{"linger.ms": 5, "acks": "all"})
    delivered = {}
    errors = []

    def on_delivery(err, msg):
        if err:
            errors.append(err)
        else:
            delivered[msg.partition()] = msg.offset()

    for partition in range(partitions):
        producer.produce(topic, value=f"{tag}-{partition}".encode(), partition=partition,
                         on_delivery=on_delivery)
        producer.poll(0)
    assert producer.flush(TIMEOUT_S) == 0, "records not delivered"
    assert not errors, errors[:3]
    return delivered


def consume_everything(broker, topic, partitions, expected):
    """Every record of every partition from offset 0, as {partition: [values]}."""
    consumer = ck_consumer(broker.bootstrap)
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        seen = {}
        count = 0
        deadline = time.monotonic() + TIMEOUT_S
        while count < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            seen.setdefault(msg.partition(), []).append(msg.value().decode())
            count += 1
        return seen
    finally:
        consumer.close()


def connections_accepted(broker, count):
    """Opens `count` connections at once and checks each is answered (ApiVersions)."""
    from kafka_wire import api_versions_answered
    held = []
    try:
        for _ in range(count):
            held.append(socket.create_connection((broker.host, broker.port), timeout=10))
        return api_versions_answered(broker.port)
    finally:
        for sock in held:
            sock.close()


def test_partitions_far_beyond_the_descriptor_limit_work_and_recover(spate_factory):
    """512 descriptors, 2 shards, 600 partitions (1,200 files to keep every active segment
    open): created through the Admin API, written and read on every partition, new
    connections accepted throughout, and everything there after SIGTERM and after kill -9,
    with the process never above its limit."""
    limit = 512
    partitions = 600
    broker = start_limited(spate_factory, limit)
    assert "idle segments are closed and opened again on demand" in broker.log_text()
    admin = admin_of(broker)
    topic = unique_topic("many")
    create(admin, topic, partitions)
    assert len(admin.list_topics(topic, timeout=TIMEOUT_S).topics[topic].partitions) == partitions

    assert produce_one_each(broker, topic, partitions, "a") == {p: 0 for p in range(partitions)}
    assert descriptors_of(broker.pid) <= limit
    assert connections_accepted(broker, 50)
    seen = consume_everything(broker, topic, partitions, partitions)
    assert seen == {p: [f"a-{p}"] for p in range(partitions)}

    broker.restart()
    assert produce_one_each(broker, topic, partitions, "b") == {p: 1 for p in range(partitions)}
    broker.kill9()
    broker.start()
    assert connections_accepted(broker, 50)
    seen = consume_everything(broker, topic, partitions, 2 * partitions)
    assert seen == {p: [f"a-{p}", f"b-{p}"] for p in range(partitions)}
    assert descriptors_of(broker.pid) <= limit
    assert "Too many open files" not in broker.log_text()


def test_a_topic_whose_logs_cannot_be_opened_is_refused_and_leaves_nothing(broker):
    """A partition directory that cannot be made (a file is in its way) fails CreateTopics
    with KAFKA_STORAGE_ERROR and a message naming it; the partitions already opened are
    deleted and the topic is not in metadata. CreatePartitions the same way keeps the old
    count. With the obstacle gone, both succeed."""
    admin = admin_of(broker)
    topic = unique_topic("blocked")
    obstacle = broker.partition_dir(topic, 3)
    obstacle.write_text("not a directory")
    with pytest.raises(KafkaException) as failure:
        create(admin, topic, 6)
    error = failure.value.args[0]
    assert error.code() == KafkaError.KAFKA_STORAGE_ERROR, error
    assert f"{topic}-3" in error.str(), error.str()
    assert topic not in admin.list_topics(timeout=TIMEOUT_S).topics
    for partition in (0, 1, 2, 4, 5):
        assert not broker.partition_dir(topic, partition).exists(), partition
    obstacle.unlink()
    create(admin, topic, 2)

    grown_obstacle = broker.partition_dir(topic, 4)
    grown_obstacle.write_text("not a directory")
    future = admin.create_partitions([NewPartitions(topic, 6)], operation_timeout=TIMEOUT_S,
                                     request_timeout=TIMEOUT_S)[topic]
    with pytest.raises(KafkaException) as failure:
        future.result(timeout=TIMEOUT_S)
    assert failure.value.args[0].code() == KafkaError.KAFKA_STORAGE_ERROR
    assert len(admin.list_topics(topic, timeout=TIMEOUT_S).topics[topic].partitions) == 2
    for partition in (2, 3, 5):
        assert not broker.partition_dir(topic, partition).exists(), partition
    grown_obstacle.unlink()
    admin.create_partitions([NewPartitions(topic, 6)], operation_timeout=TIMEOUT_S,
                            request_timeout=TIMEOUT_S)[topic].result(timeout=TIMEOUT_S)
    assert produce_one_each(broker, topic, 6, "x") == {p: 0 for p in range(6)}

    # The catalog on disk agrees: after a restart the topic has its 6 partitions.
    broker.restart()
    assert len(admin_of(broker).list_topics(topic, timeout=TIMEOUT_S)
               .topics[topic].partitions) == 6


def test_accept_backs_off_when_descriptors_run_out(spate_factory):
    """With every descriptor taken by connections, `accept` fails with EMFILE (or the `dup`
    of an accepted one does): the broker logs it about once a second with a count (not once
    per retry), keeps running, and accepts again once most of them close."""
    limit = 256
    broker = start_limited(spate_factory, limit)
    held = []
    try:
        # More than the limit allows: the last ones wait in the listen queue, unaccepted.
        for _ in range(limit):
            held.append(socket.create_connection((broker.host, broker.port), timeout=10))
        time.sleep(4)
        log = broker.log_text()
        lines = [line for line in log.splitlines() if "cannot accept connections" in line]
        assert lines, "no accept failure logged"
        # Each shard accepts on its own listener and logs its own failures: per shard, the
        # first failure, one more after an accept succeeded in between (the count restarts),
        # then one a second. A flood would be hundreds a second.
        plain = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in lines]
        per_shard = collections.Counter(re.search(r" shard=(\d+)", line).group(1)
                                        for line in plain)
        assert max(per_shard.values()) <= 7, f"{per_shard} in 4 s:\n" + "\n".join(lines[:10])
        assert "failed_since_last_line" in lines[-1]
        assert broker.alive()
    finally:
        # Room for the connections still held (each takes two descriptors) and a new one.
        for sock in held[limit // 4:]:
            sock.close()
    try:
        deadline = time.monotonic() + 15
        answered = False
        while not answered and time.monotonic() < deadline:
            from kafka_wire import api_versions_answered
            answered = api_versions_answered(broker.port)
        assert answered, "no connection accepted after descriptors were freed"
        # The line comes from the shard that failed, once its own next accept succeeds, which
        # need not be the connection that answered first (it was missing once under load).
        deadline = time.monotonic() + 10
        while ("accepting connections again" not in broker.log_text()
               and time.monotonic() < deadline):
            api_versions_answered(broker.port)
            time.sleep(0.2)
        assert "accepting connections again" in broker.log_text()
    finally:
        for sock in held[: limit // 4]:
            sock.close()
