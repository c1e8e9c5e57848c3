"""Retention through the broker's own pass: records deleted by time after a config change, and
an idle partition whose records expire later with nothing written meanwhile.

The pass runs every 5 s and visits only partitions written, reconfigured or opened since the
last pass and those whose next deadline has come, so each case checks one of those routes.
"""

import time

from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                   NewTopic, ResourceType)

from client_helpers import CK_COMMON, Msg, ck_consume_all, ck_produce, ck_watermarks, unique_topic
from conftest import TARGET

TIMEOUT_S = 30
PASS_S = 5


def create(broker, topic, config):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap, **CK_COMMON})
    futures = admin.create_topics([NewTopic(topic, 2, 1, config=config)],
                                  operation_timeout=TIMEOUT_S)
    futures[topic].result(timeout=TIMEOUT_S)
    return admin


def set_retention(admin, topic, retention_ms):
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", str(retention_ms),
                    incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([resource])[resource].result(timeout=TIMEOUT_S)


def wait_for_low_watermark(broker, topic, partition, expected, seconds):
    deadline = time.monotonic() + seconds
    while True:
        watermarks = ck_watermarks(broker.bootstrap, topic, partition)
        if watermarks[0] == expected or time.monotonic() > deadline:
            return watermarks
        time.sleep(0.5)


def test_a_shorter_retention_deletes_old_segments_of_an_idle_partition(broker):
    """Records from 2020 on two partitions, in 64 KiB segments, with retention off: a pass
    keeps them. Then retention.ms is set to one hour and nothing is written: within two passes
    every segment is gone (the active one rolled first), on both partitions, and the next
    record lands at the old end offset."""
    topic = unique_topic("retention")
    admin = create(broker, topic, {"retention.ms": "-1", "segment.bytes": str(64 * 1024)})
    old = 1_577_836_800_000
    msgs = [Msg(b"k", b"v" * 3000, partition=i % 2, timestamp=old + i) for i in range(120)]
    ck_produce(broker.bootstrap, topic, msgs, **{"linger.ms": 0})
    time.sleep(PASS_S + 1)
    assert [ck_watermarks(broker.bootstrap, topic, p) for p in (0, 1)] == [(0, 60), (0, 60)]

    set_retention(admin, topic, 3_600_000)
    for partition in (0, 1):
        got = wait_for_low_watermark(broker, topic, partition, 60, 3 * PASS_S + 5)
        assert got == (60, 60), f"partition {partition}: {got}"
        assert ck_consume_all(broker.bootstrap, topic, partition) == []
    assert ck_produce(broker.bootstrap, topic, [Msg(b"k", b"new", partition=0)]) == [(0, 60)]


def test_records_that_expire_later_go_without_any_write_in_between(broker):
    """Records that expire a few seconds after they are written: the partition is not written
    again, so only its own deadline can bring the pass back to it."""
    if TARGET == "kafka":
        # Kafka checks retention every 5 minutes by default (log.retention.check.interval.ms).
        return
    topic = unique_topic("expire")
    retention_ms = 12_000
    create(broker, topic, {"retention.ms": str(retention_ms), "segment.bytes": str(64 * 1024)})
    # Due to expire 6 s from now: several passes see them first and must keep them.
    stamp = int(time.time() * 1000) - retention_ms + 6_000
    msgs = [Msg(b"k", b"v" * 900, partition=0, timestamp=stamp + i) for i in range(40)]
    ck_produce(broker.bootstrap, topic, msgs, **{"linger.ms": 0})
    assert ck_watermarks(broker.bootstrap, topic, 0) == (0, 40)
    got = wait_for_low_watermark(broker, topic, 0, 40, 6 + 3 * PASS_S + 5)
    assert got == (40, 40)
    assert int(time.time() * 1000) >= stamp + 39 + retention_ms, "deleted before it expired"


def test_the_retention_check_interval_is_the_brokers_setting(spate_factory):
    """--log-retention-check-interval-ms (Kafka's log.retention.check.interval.ms) sets how
    often the pass runs. Records stamped in 1970 are past the default 7-day retention as soon
    as they are written (librdkafka's 0052 test writes such records and reads them back, which
    Kafka's 5-minute interval allows): a broker that checks every 60 s still has them after
    more than the default 5 s, and one that checks every 500 ms deletes them within a few."""
    if TARGET == "kafka":
        return
    stamp = 1_882_866_146  # what librdkafka's 0052 sends: seconds + 24 h in ms, i.e. 1970
    for interval_ms, seconds, expected in ((60_000, PASS_S + 2, (0, 20)), (500, 4, (20, 20))):
        broker = spate_factory("--log-retention-check-interval-ms", str(interval_ms),
                               "--segment-bytes", str(64 * 1024))
        topic = unique_topic("interval")
        create(broker, topic, {})
        msgs = [Msg(b"k", b"v" * 100, partition=0, timestamp=stamp + i) for i in range(20)]
        ck_produce(broker.bootstrap, topic, msgs, **{"linger.ms": 0})
        if expected[0] == 0:
            time.sleep(seconds)
            got = ck_watermarks(broker.bootstrap, topic, 0)
        else:
            got = wait_for_low_watermark(broker, topic, 0, expected[0], seconds)
        assert got == expected, f"interval {interval_ms} ms: watermarks {got}"
        broker.close()
