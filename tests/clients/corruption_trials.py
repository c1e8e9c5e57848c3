"""Corruption trials (issue 18): one file of a stopped broker's data dir is damaged (bits
flipped, a block zeroed, the file cut short), the broker starts on it, and the trial checks
what a user would: the broker either recovers and serves, or refuses to start in one sentence
that names the damaged file; it never serves a record other than the one acknowledged at that
offset, and it always takes new writes after it recovered.

    python3 tests/clients/corruption_trials.py [--trials N] [--seed S] [--stop sigterm|kill9]

prints one line per trial and the counts (`test_corruption.py` runs a short seeded form).

A record is checked by its value, which names its partition and index, and by librdkafka's
CRC check (`check.crcs`). Spate, like Kafka, validates a segment's batches at start-up only
after its last index entry (the active segment's tail): a flipped bit inside an older batch is
served as it is on disk, and the consumer's CRC check is what catches it. Such trials are
counted apart ("caught by the client's CRC check"), not as failures; a wrong record that passes
the CRC check would be a failure.
"""

import argparse
import collections
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from confluent_kafka import Consumer, KafkaError, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from client_helpers import CK_COMMON, Msg, ck_produce  # noqa: E402
from conftest import Broker  # noqa: E402

TOPIC = "trial"
PARTITIONS = 2
GROUP = "trial-group"
COMMITTED = 7
RECORDS_PER_PARTITION = 120
VALUE_BYTES = 24 * 1024  # 120 x 24 KiB: three 1 MiB segments per partition

# Outcomes that are fine, and those that are not.
RECOVERED_INTACT = "recovered, every record intact"
RECOVERED_LOST = "recovered, records after the damage dropped"
CAUGHT_BY_CRC = "served a damaged batch, caught by the client's CRC check"
ANSWERED_CORRUPT = "recovered, fetches of the damaged part answered CORRUPT_MESSAGE"
REFUSED = "refused to start, naming the file"
FAILURES = ("refused without naming the file", "served a wrong record", "not serving after start",
            "committed offsets wrong")


def value_of(partition, index):
    head = f"p{partition}-i{index}-".encode()
    # Incompressible, so that lz4 batches fill several 1 MiB segments.
    return head + random.Random(partition * 100_000 + index).randbytes(VALUE_BYTES - len(head))


def build_template(workdir, stop):
    """A data dir with a topic of PARTITIONS partitions in several segments each, lz4 batches,
    and a group's committed offsets; returns (data dir copy, {(partition, offset): value})."""
    broker = Broker(Path(workdir) / "template", ["--cores", "2"], 0)
    broker.start()
    try:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap, **CK_COMMON})
        futures = admin.create_topics([NewTopic(TOPIC, num_partitions=PARTITIONS,
                                                replication_factor=1,
                                                config={"segment.bytes": str(1024 * 1024)})])
        for future in futures.values():
            future.result(timeout=30)
        msgs = [Msg(b"k", value_of(p, i), partition=p)
                for i in range(RECORDS_PER_PARTITION) for p in range(PARTITIONS)]
        placed = ck_produce(broker.bootstrap, TOPIC, msgs, compression="lz4")
        expected = {place: msg.value for place, msg in zip(placed, msgs)}
        consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": GROUP,
                             "enable.auto.commit": False, **CK_COMMON})
        consumer.commit(offsets=[TopicPartition(TOPIC, p, COMMITTED) for p in range(PARTITIONS)],
                        asynchronous=False)
        consumer.close()
    finally:
        if stop == "kill9":
            broker.kill9()
        else:
            assert broker.stop() == 0, broker.log_tail()
    return broker.data_dir, expected


def damageable(data_dir, rng):
    """Every file a start reads, but the lock and the I/O probes (rewritten at each start);
    empty files (internal logs never written) only one time in ten."""
    files = sorted(p for p in Path(data_dir).rglob("*")
                   if p.is_file() and p.name != "lock" and not p.name.startswith("io-probe"))
    written = [p for p in files if p.stat().st_size > 0]
    return written if written and rng.random() < 0.9 else files


def damage(path, rng):
    """Damages `path` in place one of three ways; returns what was done."""
    data = bytearray(path.read_bytes())
    if not data:
        path.write_bytes(b"\x00" * rng.randint(1, 64))
        return "filled an empty file with zeros"
    kind = rng.choice(["flip", "zero-block", "truncate"])
    if kind == "flip":
        flips = rng.randint(1, 8)
        for _ in range(flips):
            at = rng.randrange(len(data))
            data[at] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(data))
        return f"flipped {flips} bits"
    if kind == "zero-block":
        start = rng.randrange(len(data)) // 4096 * 4096
        end = min(len(data), start + 4096)
        data[start:end] = bytes(end - start)
        path.write_bytes(bytes(data))
        return f"zeroed bytes {start}..{end}"
    cut = rng.randrange(len(data))
    path.write_bytes(bytes(data[:cut]))
    return f"cut to {cut} of {len(data)} bytes"


def read_back(bootstrap, starts):
    """Reads each partition from its offset in `starts` to its end. Returns (records by
    (partition, offset), the consume errors reported)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "trial-reader",
                         "enable.auto.commit": False, "check.crcs": True,
                         "enable.partition.eof": True, "auto.offset.reset": "earliest",
                         **CK_COMMON})
    consumer.assign([TopicPartition(TOPIC, p, offset) for p, offset in starts.items()])
    seen, errors, at_end = {}, [], set()
    deadline = time.monotonic() + 30
    while len(at_end) < len(starts) and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                at_end.add(msg.partition())
            else:
                errors.append(str(msg.error()))
                at_end.add(msg.partition())  # librdkafka stops that partition
            continue
        seen[(msg.partition(), msg.offset())] = msg.value()
    consumer.close()
    return seen, errors


def committed_offsets(bootstrap):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": GROUP, **CK_COMMON})
    try:
        parts = consumer.committed([TopicPartition(TOPIC, p) for p in range(PARTITIONS)],
                                   timeout=20)
        return [tp.offset for tp in parts]
    finally:
        consumer.close()


def one_trial(template, expected, workdir, rng, index):
    """Copies the template, damages one file, starts on it; returns (outcome, detail)."""
    broker = Broker(Path(workdir) / f"trial-{index}", ["--cores", "2"], 0)
    shutil.rmtree(broker.data_dir)
    shutil.copytree(template, broker.data_dir)
    target = rng.choice(damageable(broker.data_dir, rng))
    what = damage(target, rng)
    name = str(target.relative_to(broker.data_dir))
    detail = f"{name}: {what}"
    try:
        try:
            broker.start()
        except AssertionError:
            # The refusal is the last start's fatal line (its message may span lines).
            last_start = broker.log_text().rsplit("===== start", 1)[-1]
            fatal = [line for line in last_start.splitlines() if "fatal" in line]
            if fatal and any(str(target) in line for line in fatal):
                return REFUSED, f"{detail}: {fatal[-1][-160:]}"
            return FAILURES[0], f"{detail}\n{broker.log_tail(8)}"
        seen, errors = read_back(broker.bootstrap, {p: 0 for p in range(PARTITIONS)})
        wrong = [(place, len(value or b"")) for place, value in seen.items()
                 if expected.get(place) != value]
        if wrong:
            return FAILURES[1], f"{detail}: {wrong[:3]}"
        # New writes are taken and read back after whatever recovery dropped.
        [(partition, offset)] = ck_produce(broker.bootstrap, TOPIC,
                                           [Msg(b"k", b"after", partition=0)])
        after, _ = read_back(broker.bootstrap, {partition: offset})
        if after.get((partition, offset)) != b"after":
            return FAILURES[2], detail
        committed = committed_offsets(broker.bootstrap)
        if any(offset not in (COMMITTED, -1001) for offset in committed):
            return FAILURES[3], f"{detail}: {committed}"
        if any("Invalid message" in error for error in errors):
            return ANSWERED_CORRUPT, f"{detail}: {errors[0]}"
        if errors:
            return CAUGHT_BY_CRC, f"{detail}: {errors[0]}"
        if len(seen) == len(expected):
            return RECOVERED_INTACT, detail
        return RECOVERED_LOST, f"{detail}: {len(expected) - len(seen)} records dropped"
    finally:
        broker.kill9()
        shutil.rmtree(broker.workdir, ignore_errors=True)


def run(trials, seed, workdir, stop="sigterm", say=print):
    rng = random.Random(seed)
    template, expected = build_template(workdir, stop)
    counts = collections.Counter()
    failures = []
    for index in range(trials):
        outcome, detail = one_trial(template, expected, workdir, rng, index)
        counts[outcome] += 1
        say(f"trial {index}: {outcome} ({detail.splitlines()[0]})")
        if outcome in FAILURES:
            failures.append(f"trial {index}: {outcome}: {detail}")
    return counts, failures


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--stop", choices=["sigterm", "kill9"], default="sigterm")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    print(f"corruption trials: seed {seed}, {args.trials} trials, template stopped by "
          f"{args.stop}")
    with tempfile.TemporaryDirectory(prefix="spate-corruption-") as workdir:
        counts, failures = run(args.trials, seed, workdir, args.stop)
    print(f"\nseed {seed}: {sum(counts.values())} trials")
    for outcome, count in counts.most_common():
        print(f"  {count:5d}  {outcome}")
    for failure in failures:
        print(failure)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
