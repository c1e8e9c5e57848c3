"""Power-loss trials, short form (issue 18, item 2): three seeded trials under
`--durability fsync` lose nothing acknowledged, and one under `--durability write` loses what
it acknowledged, which shows the simulated power cut really drops unsynced data. See
power_loss_trials.py for the long form and how the cut is simulated (a FUSE file system)."""

import os
import random
import subprocess
import time

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

import power_loss_trials
from client_helpers import CK_COMMON
from conftest import TARGET, Broker

# Serial: what `write` durability has not synced at the cut depends on the flusher's timing.
pytestmark = [
    pytest.mark.serial,
    pytest.mark.skipif(TARGET != "spate", reason="runs Spate's binary on a FUSE data dir"),
    pytest.mark.skipif(power_loss_trials.available() is not None,
                       reason=str(power_loss_trials.available())),
]


def test_nothing_acknowledged_under_fsync_is_lost_at_a_power_cut(tmp_path):
    seed = random.randrange(1 << 30)
    lines = []
    acknowledged, lost, duplicated = power_loss_trials.run(3, seed, tmp_path, "fsync",
                                                           say=lines.append)
    report = "\n".join(lines)
    assert acknowledged > 0, report
    assert (lost, duplicated) == (0, 0), report


def test_a_power_cut_drops_what_write_durability_never_synced(tmp_path):
    lines = []
    acknowledged, lost, _ = power_loss_trials.run(1, 11, tmp_path, "write", say=lines.append)
    report = "\n".join(lines)
    assert acknowledged > 0 and lost > 0, report


def test_delayed_records_acknowledged_under_fsync_survive_a_power_cut(tmp_path):
    """A topic's first delayed records create the broker's delay directory (issue 16): its
    name in the data dir must be durable before a record in it is acknowledged, else a power
    cut takes every pending record with it. Delayed, cut before they are due, then delivered
    after the restart, each exactly once."""
    topic, count = "delayed-powerloss", 20
    mount = power_loss_trials.Mount(tmp_path / "backing", tmp_path / "mnt", tmp_path / "fs.log")
    mount.start()
    broker = Broker(tmp_path, ["--data-dir", str(tmp_path / "mnt" / "data"),
                               "--durability", "fsync", "--cores", "1"], 0)
    try:
        broker.start()
        admin = AdminClient({**CK_COMMON, "bootstrap.servers": broker.bootstrap})
        created = admin.create_topics(
            [NewTopic(topic, 1, 1, config={"spate.delivery.delay.ms": "0"})],
            request_timeout=15)
        created[topic].result(timeout=20)
        producer = Producer({**CK_COMMON, "bootstrap.servers": broker.bootstrap,
                             "acks": "all", "enable.idempotence": True})
        acked = []
        for i in range(count):
            producer.produce(topic, key=b"k", value=f"delayed-{i}".encode(),
                             headers=[("spate-delay-ms", b"1500")],
                             on_delivery=lambda err, msg: acked.append(msg.value())
                             if err is None else None)
        assert producer.flush(30) == 0
        assert len(acked) == count, acked
        broker.kill9()
        mount.cut()
        mount.start()
        broker.start()
        consumer = Consumer({**CK_COMMON, "bootstrap.servers": broker.bootstrap,
                             "group.id": "delayed-powerloss", "auto.offset.reset": "earliest"})
        found = []
        try:
            consumer.subscribe([topic])
            deadline = time.monotonic() + 60
            while len(found) < count and time.monotonic() < deadline:
                message = consumer.poll(0.5)
                if message is not None and not message.error():
                    found.append(message.value())
            time.sleep(1)  # anything delivered twice would follow at once
            message = consumer.poll(1)
            if message is not None and not message.error():
                found.append(message.value())
        finally:
            consumer.close()
        broker.stop()
    finally:
        broker.kill9(wait_for_port=False)
        if os.path.ismount(mount.mountpoint):
            subprocess.run(["umount", str(mount.mountpoint)], check=False)
    assert sorted(found) == sorted(acked), f"acknowledged {len(acked)}, read {found}"
