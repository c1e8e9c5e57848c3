"""Power-loss trials (issue 18, item 2): the broker's data dir lives on `powerloss_fs.py`, a FUSE
file system that forgets at a simulated power cut everything not yet fsynced (file contents
and sizes by the file's fsync, names by their directory's). Each trial:

1. mounts it, starts the broker on it (`--durability fsync` unless told otherwise);
2. runs an idempotent acks=all producer on three partitions for a random time, recording every
   record whose delivery was acknowledged (partition, offset, value), and commits growing
   offsets for a consumer group, recording each commit the broker acknowledged;
3. cuts the power: kill -9 of the broker, then the unmount, which undoes everything not made
   durable;
4. mounts it again, starts the broker, and reads every partition back: every acknowledged
   record must be at its offset with its value (lost otherwise), and no value twice; the
   group's committed offsets must be at least the last acknowledged commit.

    python3 tests/clients/power_loss_trials.py [--trials N] [--seed S] [--durability fsync]

prints one line per trial and the counts; fails if an acknowledged record was lost or
duplicated under `fsync`. Under `--durability write` (which promises nothing across a power
loss) the same trials lose acknowledged records: `test_power_loss.py` checks both, so the
simulation is shown to bite. Needs root, /dev/fuse, libfuse2 and fusepy.
"""

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition  # noqa: E402

from client_helpers import CK_COMMON  # noqa: E402
from conftest import Broker  # noqa: E402

TOPIC = "powerloss"
GROUP = "powerloss-group"
SEGMENT_BYTES = 64 * 1024
PARTITIONS = 3
FS = Path(__file__).resolve().parent / "powerloss_fs.py"
MOUNT_TIMEOUT_S = 20


def available():
    """None when power-loss trials can run here, or why not."""
    if os.geteuid() != 0:
        return "needs root to mount FUSE file systems"
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    try:
        import fuse  # noqa: F401
    except (ImportError, OSError) as error:
        return f"fusepy or libfuse2 missing: {error}"
    return None


class Mount:
    """powerloss_fs.py serving `backing` at `mountpoint`."""

    def __init__(self, backing, mountpoint, log, extra_args=()):
        self.backing, self.mountpoint, self.log = backing, mountpoint, log
        self.extra_args = [str(arg) for arg in extra_args]
        self.proc = None

    def start(self):
        self.backing.mkdir(parents=True, exist_ok=True)
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, str(FS), str(self.backing),
                                          str(self.mountpoint), *self.extra_args], stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + MOUNT_TIMEOUT_S
        while not os.path.ismount(self.mountpoint):
            assert self.proc.poll() is None, f"the FUSE file system exited; see {self.log}"
            assert time.monotonic() < deadline, "the FUSE file system did not mount"
            time.sleep(0.05)

    def cut(self):
        """The power cut: unmount; the file system undoes what was not durable and exits."""
        subprocess.run(["umount", str(self.mountpoint)], check=True)
        self.proc.wait(timeout=120)
        assert self.proc.returncode == 0, f"the power cut failed; see {self.log}"


def value_of(partition, seq):
    return f"p{partition}-s{seq}-".encode() + bytes([seq % 251]) * 200


def produce_until_cut(broker, rng, mount):
    """Produces and commits until a random moment, then cuts the power; returns the
    acknowledged records as {(partition, offset): value} and the last acknowledged commit
    of each partition."""
    acked = {}
    committer = Consumer({**CK_COMMON, "bootstrap.servers": broker.bootstrap,
                          "group.id": GROUP, "enable.auto.commit": False})
    commits = {}
    next_commit = time.monotonic()

    def on_delivery(err, msg):
        if err is None:
            acked[(msg.partition(), msg.offset())] = msg.value()

    producer = Producer({**CK_COMMON, "bootstrap.servers": broker.bootstrap,
                         "enable.idempotence": True, "acks": "all",
                         "linger.ms": rng.choice([0, 1, 5]), "message.timeout.ms": 60000})
    seq = [0] * PARTITIONS
    deadline = time.monotonic() + rng.uniform(0.5, 3.0)
    while time.monotonic() < deadline:
        partition = rng.randrange(PARTITIONS)
        try:
            producer.produce(TOPIC, value=value_of(partition, seq[partition]),
                             partition=partition, on_delivery=on_delivery)
            seq[partition] += 1
        except BufferError:
            pass
        producer.poll(0.001)
        if time.monotonic() >= next_commit:
            next_commit += 0.05
            offsets = [TopicPartition(TOPIC, p, seq[p]) for p in range(PARTITIONS)]
            try:
                for done in committer.commit(offsets=offsets, asynchronous=False):
                    commits[done.partition] = done.offset
            except KafkaException:
                pass  # not acknowledged: nothing is promised
    broker.kill9()
    # Acknowledgements that reached the client before the broker died.
    producer.poll(0.5)
    mount.cut()
    producer.purge()
    producer.flush(0)
    committer.close()
    return acked, commits


def committed_offsets(broker):
    consumer = Consumer({**CK_COMMON, "bootstrap.servers": broker.bootstrap,
                         "group.id": GROUP, "enable.auto.commit": False})
    try:
        partitions = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
        return {tp.partition: tp.offset for tp in consumer.committed(partitions, timeout=30)}
    finally:
        consumer.close()


def read_back(broker):
    """Every record of every partition: {(partition, offset): value}."""
    consumer = Consumer({**CK_COMMON, "bootstrap.servers": broker.bootstrap,
                         "group.id": "powerloss-check", "enable.auto.commit": False,
                         "check.crcs": True})
    found = {}
    try:
        for partition in range(PARTITIONS):
            try:
                low, high = consumer.get_watermark_offsets(TopicPartition(TOPIC, partition),
                                                           timeout=30)
            except KafkaException:  # the topic itself was lost
                continue
            if high <= low:
                continue
            consumer.assign([TopicPartition(TOPIC, partition, low)])
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                message = consumer.poll(0.5)
                if message is None or message.error():
                    continue
                found[(partition, message.offset())] = message.value()
                if message.offset() >= high - 1:
                    break
    finally:
        consumer.close()
    return found


def trial(number, rng, workdir, durability, say):
    """One trial; returns (acknowledged, lost, duplicated)."""
    base = workdir / f"trial-{number}"
    mount = Mount(base / "backing", base / "mnt", base / "fs.log")
    mount.start()
    broker = Broker(base, ["--data-dir", str(base / "mnt" / "data"), "--durability", durability,
                           "--cores", "1", "--default-partitions", str(PARTITIONS),
                           # The smallest segments: several rolls per partition and trial, so
                           # that new segment files (and their names) meet the cut too.
                           "--segment-bytes", str(SEGMENT_BYTES)], number)
    try:
        broker.start()
        acked, commits = produce_until_cut(broker, rng, mount)
        mount.start()
        broker.start()
        found = read_back(broker)
        committed = committed_offsets(broker)
        broker.stop()
    finally:
        broker.kill9(wait_for_port=False)
        if os.path.ismount(mount.mountpoint):
            subprocess.run(["umount", str(mount.mountpoint)], check=False)
    lost = sum(1 for place, value in acked.items() if found.get(place) != value)
    # A lost commit is a lost acknowledged record too: the group would read again.
    lost_commits = sum(1 for p, offset in commits.items() if committed.get(p, -1) < offset)
    values = list(found.values())
    duplicated = len(values) - len(set(values))
    say(f"trial {number}: {durability}, {len(acked)} acknowledged, {lost} lost, "
        f"{duplicated} duplicated, {len(commits)} partitions' commits acknowledged, "
        f"{lost_commits} gone back (log {broker.log_path})")
    return len(acked), lost + lost_commits, duplicated


def run(trials, seed, workdir, durability="fsync", say=print):
    """Runs the trials; returns the totals (acknowledged, lost, duplicated)."""
    rng = random.Random(seed)
    say(f"power-loss trials: {trials}, seed {seed}, --durability {durability}")
    totals = [0, 0, 0]
    for number in range(trials):
        for i, count in enumerate(trial(number, rng, Path(workdir), durability, say)):
            totals[i] += count
    say(f"seed {seed}: {trials} trials, {totals[0]} acknowledged, {totals[1]} lost, "
        f"{totals[2]} duplicated")
    return tuple(totals)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--seed", type=int, default=random.randrange(1 << 30))
    parser.add_argument("--durability", choices=("fsync", "write"), default="fsync")
    args = parser.parse_args()
    reason = available()
    if reason:
        sys.exit(f"cannot run power-loss trials: {reason}")
    with tempfile.TemporaryDirectory(prefix="spate-powerloss-") as workdir:
        acknowledged, lost, duplicated = run(args.trials, args.seed, workdir, args.durability)
    if args.durability == "fsync" and (lost or duplicated):
        sys.exit(1)


if __name__ == "__main__":
    main()
