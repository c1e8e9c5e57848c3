"""Log compaction (cleanup.policy=compact): configs, the keyless produce refused, the latest
value of each key kept and older ones removed, tombstones removed after delete.retention.ms,
compact,delete honouring retention, and kill -9 during a clean and during its swap.

The broker runs its cleaner every 200 ms (`--log-cleaner-backoff-ms`) and its retention pass
(which also rolls segments past segment.ms) every 200 ms; topics have 64 KiB segments rolled
every 300 ms and a dirty ratio of 0.01, so a clean follows every few writes.
"""

import os
import random
import time

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                   NewTopic, ResourceType)

from client_helpers import (CK_COMMON, CODECS, Msg, ck_produce, ck_watermarks, unique_topic,
                            wait_until)
from conftest import TARGET

TIMEOUT_S = 30
FAST = ("--log-cleaner-backoff-ms", "200", "--log-retention-check-interval-ms", "200")
COMPACTED = {"cleanup.policy": "compact", "segment.bytes": str(64 * 1024), "segment.ms": "300",
             "min.cleanable.dirty.ratio": "0.01"}

pytestmark = pytest.mark.skipif(TARGET == "kafka", reason="Spate's cleaner options")


def admin(broker):
    return AdminClient({"bootstrap.servers": broker.bootstrap, **CK_COMMON})


def create(broker, topic, config, partitions=1):
    client = admin(broker)
    futures = client.create_topics([NewTopic(topic, partitions, 1, config=config)],
                                   operation_timeout=TIMEOUT_S)
    futures[topic].result(timeout=TIMEOUT_S)


def describe(broker, topic):
    resource = ConfigResource(ResourceType.TOPIC, topic)
    client = admin(broker)
    entries = client.describe_configs([resource])[resource].result(timeout=TIMEOUT_S)
    return {name: entry.value for name, entry in entries.items()}


def read_all(broker, topic, partition=0, timeout=TIMEOUT_S):
    """Every record of the partition from its start to its end (the high watermark at the
    time of the call), as (offset, key, value); a compacted log has holes in its offsets."""
    low, high = ck_watermarks(broker.bootstrap, topic, partition)
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "compaction-tests",
                         "enable.auto.commit": False, "enable.partition.eof": True,
                         "fetch.wait.max.ms": 100, **CK_COMMON})
    records = []
    try:
        if high == low:
            return records
        consumer.assign([TopicPartition(topic, partition, low)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF and msg.offset() >= high:
                    return records
                assert msg.error().code() == KafkaError._PARTITION_EOF, msg.error()
                continue
            records.append((msg.offset(), msg.key(), msg.value()))
            if msg.offset() + 1 >= high:
                return records
        raise AssertionError(f"did not reach offset {high} in {timeout} s; read {len(records)}")
    finally:
        consumer.close()


def latest_per_key(produced):
    """key -> (offset, value) of the last record produced for it."""
    latest = {}
    for offset, key, value in produced:
        latest[key] = (offset, value)
    return latest


def produce_rounds(broker, topic, keys, rounds, rng, tombstone_share=0.0, pause_s=0.0):
    """`rounds` rounds of one record per key (values of a few hundred bytes, codecs in turn);
    returns every record as (offset, key, value) in offset order."""
    produced = []
    for round_ in range(rounds):
        msgs = []
        for key in keys:
            value = None if rng.random() < tombstone_share else (
                b"%s@%d:" % (key, round_) + rng.randbytes(rng.randrange(100, 600)))
            msgs.append((key, value))
        codec = CODECS[round_ % len(CODECS)]
        producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all",
                             "linger.ms": 5, "compression.type": codec, **CK_COMMON})
        results = [None] * len(msgs)
        for i, (key, value) in enumerate(msgs):
            def report(err, msg, i=i):
                results[i] = err or msg.offset()
            producer.produce(topic, key=key, value=value, on_delivery=report)
            producer.poll(0)
        assert producer.flush(TIMEOUT_S) == 0
        assert all(isinstance(r, int) for r in results), results[:5]
        produced.extend((offset, key, value) for offset, (key, value) in zip(results, msgs))
        time.sleep(pause_s)
    produced.sort()
    return produced


def wait_half_cleaned(broker, topic, total):
    """The partition's records once fewer than half of the `total` produced remain."""
    def compacted():
        records = read_all(broker, topic)
        return records if len(records) < total // 2 else None
    return wait_until(compacted, 60, "the cleaner did not remove older values")


def check_compacted(records, produced):
    """Every record read is the one produced at its offset; every key's latest value is
    there; offsets only go up."""
    by_offset = {offset: (key, value) for offset, key, value in produced}
    offsets = [offset for offset, _, _ in records]
    assert offsets == sorted(set(offsets))
    for offset, key, value in records:
        assert by_offset[offset] == (key, value), f"offset {offset}"
    present = {offset for offset, _, _ in records}
    for key, (offset, value) in latest_per_key(produced).items():
        if value is not None:
            assert offset in present, f"the latest value of {key!r} (offset {offset}) is gone"


def test_compaction_configs_are_accepted_validated_and_described(broker):
    topic = unique_topic("cfg")
    create(broker, topic, {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.2",
                           "min.compaction.lag.ms": "100", "max.compaction.lag.ms": "60000",
                           "delete.retention.ms": "5000"})
    described = describe(broker, topic)
    assert described["cleanup.policy"] == "compact"
    assert described["min.cleanable.dirty.ratio"] == "0.2"
    assert described["min.compaction.lag.ms"] == "100"
    assert described["max.compaction.lag.ms"] == "60000"
    assert described["delete.retention.ms"] == "5000"
    # Kafka's errors for bad values.
    for name, value, message in [
        ("cleanup.policy", "compact,squash", "String must be one of: compact, delete"),
        ("min.cleanable.dirty.ratio", "1.5", "Value must be no more than 1"),
        ("min.compaction.lag.ms", "-1", "Value must be at least 0"),
        ("max.compaction.lag.ms", "0", "Value must be at least 1"),
        ("delete.retention.ms", "-5", "Value must be at least 0"),
    ]:
        bad = unique_topic("bad")
        client = admin(broker)
        futures = client.create_topics([NewTopic(bad, 1, 1, config={name: value})],
                                       operation_timeout=TIMEOUT_S)
        with pytest.raises(Exception) as caught:
            futures[bad].result(timeout=TIMEOUT_S)
        error = caught.value.args[0]
        assert error.code() == KafkaError.INVALID_CONFIG, (name, error)
        assert message in error.str(), (name, error.str())
    # IncrementalAlterConfigs: APPEND delete to the policy, then SET back to compact.
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("cleanup.policy", "delete",
                    incremental_operation=AlterConfigOpType.APPEND)])
    client = admin(broker)
    client.incremental_alter_configs([resource])[resource].result(timeout=TIMEOUT_S)
    assert describe(broker, topic)["cleanup.policy"] == "compact,delete"
    # AlterConfigs (the whole set) back to compact.
    resource = ConfigResource(ResourceType.TOPIC, topic,
                              set_config={"cleanup.policy": "compact"})
    client.alter_configs([resource])[resource].result(timeout=TIMEOUT_S)
    assert describe(broker, topic)["cleanup.policy"] == "compact"


def test_keyless_produce_to_a_compacted_topic_is_refused(broker):
    topic = unique_topic("keyless")
    create(broker, topic, {"cleanup.policy": "compact"})
    for codec in ("none", "zstd"):
        producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all",
                             "compression.type": codec, "retries": 0, **CK_COMMON})
        errors = []
        producer.produce(topic, value=b"no key", on_delivery=lambda err, msg: errors.append(err))
        producer.flush(TIMEOUT_S)
        assert errors and errors[0] is not None
        assert errors[0].code() == KafkaError.INVALID_RECORD, errors[0]
    # Keyed records pass (and the refused ones took no offsets).
    assert ck_produce(broker.bootstrap, topic, [Msg(b"k", b"v")]) == [(0, 0)]
    # A plain topic takes keyless records.
    plain = unique_topic("plain")
    create(broker, plain, {})
    assert ck_produce(broker.bootstrap, plain, [Msg(None, b"v")]) == [(0, 0)]


def test_latest_value_of_each_key_survives_and_older_ones_go(spate_factory):
    broker = spate_factory(*FAST)
    topic = unique_topic("latest")
    create(broker, topic, COMPACTED)
    rng = random.Random(19)
    keys = [b"key-%03d" % i for i in range(60)]
    produced = produce_rounds(broker, topic, keys, 12, rng, pause_s=0.35)
    records = wait_half_cleaned(broker, topic, len(produced))
    check_compacted(records, produced)
    assert "cleaned a compacted log" in broker.log_text()
    # A restart (clean stop) keeps the cleaned log as it is.
    broker.restart()
    again = read_all(broker, topic)
    check_compacted(again, produced)
    assert len(again) <= len(records)


def test_batches_larger_than_the_cleaners_reads_are_cleaned_whole(spate_factory):
    """The cleaner reads 128 KiB at a time (`CLEANER_READ_BYTES`) and a batch that does not
    fit in what it has reads the rest of it at once: uncompressed batches of 200-450 KB,
    each starting inside one read and ending in the next, come out of a clean byte for
    byte."""
    broker = spate_factory(*FAST)
    topic = unique_topic("large")
    create(broker, topic, {**COMPACTED, "segment.bytes": str(2 << 20)})
    rng = random.Random(1919)
    keys = [b"big-%d" % i for i in range(5)]
    produced = []
    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all",
                         "linger.ms": 0, "compression.type": "none", **CK_COMMON})
    for round_ in range(6):
        results = {}
        for key in keys:
            value = b"%s@%d:" % (key, round_) + rng.randbytes(rng.randrange(200_000, 450_000))

            def report(err, msg, key=key, value=value):
                results[key] = (err, msg.offset(), value)
            producer.produce(topic, key=key, value=value, on_delivery=report)
            assert producer.flush(TIMEOUT_S) == 0
        for key, (err, offset, value) in results.items():
            assert err is None, err
            produced.append((offset, key, value))
        time.sleep(0.35)
    produced.sort()
    records = wait_half_cleaned(broker, topic, len(produced))
    check_compacted(records, produced)


def test_tombstones_delete_and_then_disappear_after_delete_retention(spate_factory):
    broker = spate_factory(*FAST)
    topic = unique_topic("tomb")
    create(broker, topic, {**COMPACTED, "delete.retention.ms": "3000"})
    rng = random.Random(7)
    keys = [b"key-%03d" % i for i in range(40)]
    produce_rounds(broker, topic, keys, 3, rng, pause_s=0.35)
    deleted = keys[:20]
    ck_produce(broker.bootstrap, topic,
               [Msg(key, None) for key in deleted])
    produce_rounds(broker, topic, keys[20:], 2, rng, pause_s=0.35)

    def tombstones_only():
        records = read_all(broker, topic)
        values = {}
        for _, key, value in records:
            values.setdefault(key, []).append(value)
        # Every deleted key is down to its tombstone.
        if all(values.get(key) == [None] for key in deleted):
            return records
        return None
    wait_until(tombstones_only, 60, "the older values of deleted keys did not go")

    def tombstones_gone():
        # More writes keep the cleaner busy so that a clean runs past the delete horizon.
        produce_rounds(broker, topic, keys[20:], 1, rng, pause_s=0.3)
        records = read_all(broker, topic)
        present = {key for _, key, _ in records}
        return records if not present & set(deleted) else None
    records = wait_until(tombstones_gone, 60, "tombstones stayed past delete.retention.ms")
    present = {key for _, key, _ in records}
    assert set(keys[20:]) <= present


def test_compact_delete_honours_retention(spate_factory):
    broker = spate_factory(*FAST)
    topic = unique_topic("compdel")
    create(broker, topic, {**COMPACTED, "cleanup.policy": "compact,delete",
                           "retention.ms": "2000"})
    rng = random.Random(3)
    keys = [b"key-%03d" % i for i in range(30)]
    produce_rounds(broker, topic, keys, 4, rng, pause_s=0.35)
    _, high = ck_watermarks(broker.bootstrap, topic)
    time.sleep(2.5)
    # A new write ages the old segments out; the retention pass deletes them.
    produce_rounds(broker, topic, keys[:1], 1, rng)
    low = wait_until(lambda: ck_watermarks(broker.bootstrap, topic)[0] >= high and
                     ck_watermarks(broker.bootstrap, topic)[0], 30,
                     "retention did not delete the old segments")
    assert low >= high
    # compact alone keeps them for ever.
    kept = unique_topic("componly")
    create(broker, kept, {**COMPACTED, "retention.ms": "1000"})
    produce_rounds(broker, kept, keys, 2, rng, pause_s=0.35)
    time.sleep(2.0)
    produce_rounds(broker, kept, keys[:1], 1, rng)
    time.sleep(1.0)
    assert ck_watermarks(broker.bootstrap, kept)[0] == 0
    assert {key for _, key, _ in read_all(broker, kept)} == set(keys)


@pytest.mark.parametrize("point", ["CLEANER_CRASH_AFTER_COMMIT", "CLEANER_CRASH_BEFORE_RENAME"])
def test_crash_inside_a_swap_keeps_every_keys_latest_value(spate_factory, monkeypatch, point):
    """The broker aborts at a point of a clean's swap (test hook); after a restart every key's
    latest acknowledged value is there, the log reads from start to end and cleans on."""
    monkeypatch.setenv("SPATE_TEST_CLEANER_CRASH", point)
    broker = spate_factory(*FAST)
    topic = unique_topic("swap")
    create(broker, topic, COMPACTED)
    rng = random.Random(11)
    keys = [b"key-%03d" % i for i in range(50)]
    produced = []
    deadline = time.monotonic() + 60
    while broker.alive() and time.monotonic() < deadline:
        try:
            produced.extend(produce_rounds(broker, topic, keys, 1, rng, pause_s=0.35))
        except Exception:
            break
    wait_until(lambda: not broker.alive(), 30, "the crash hook did not fire")
    broker.kill9()
    monkeypatch.delenv("SPATE_TEST_CLEANER_CRASH")
    broker.start()
    assert "finished a clean's swap" in broker.log_text() or point == "CLEANER_CRASH_AFTER_COMMIT"
    produced.sort()
    check_compacted(read_all(broker, topic), produced)
    # And it cleans on after the restart.
    produced.extend(produce_rounds(broker, topic, keys, 3, rng, pause_s=0.35))
    produced.sort()
    check_compacted(read_all(broker, topic), produced)
    # A clean of the rounds just produced may still be under way (its own swap file); the
    # crashed clean's leftovers must be gone once it ends.
    part = broker.partition_dir(topic, 0)
    wait_until(lambda: not list(part.glob("*.swap")) and not list(part.glob("*.cleaned")), 30,
               "no swap or cleaned file left")


def test_kill9_during_cleans_keeps_every_keys_latest_value(spate_factory):
    """kill -9 at random moments while a producer writes and the cleaner cleans (small
    segments: a clean every few hundred milliseconds); after each restart every key's
    latest acknowledged value is there and every record read is the one written at its
    offset."""
    broker = spate_factory(*FAST)
    topic = unique_topic("kill")
    create(broker, topic, COMPACTED)
    rng = random.Random(int(os.environ.get("SPATE_TEST_SEED", "19")))
    keys = [b"key-%03d" % i for i in range(80)]
    produced = []
    for kill in range(4):
        produced.extend(produce_rounds(broker, topic, keys, 3, rng, pause_s=0.35))
        time.sleep(rng.uniform(0.0, 0.6))
        broker.kill9()
        broker.start()
        produced.sort()
        check_compacted(read_all(broker, topic), produced)
    cleans = broker.log_text().count("cleaned a compacted log")
    assert cleans > 0
