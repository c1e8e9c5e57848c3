#!/usr/bin/env python3
"""Delayed delivery (issue 16), measured in one run against one broker (`--cores 1`, pinned
with taskset to the last CPU; the clients run on the others):

1. produce throughput, plain topic against a topic with delayed delivery (every record with
   `spate-deliver-at`, due in an hour: far, on disk only), same client settings, reported as
   a ratio, with the broker's CPU per record from /proc;
2. PENDING records (default 1 million) due within the schedule's horizon (so in memory, on
   the wheel), and the broker's RSS before and after them (memory per pending record);
3. delivery accuracy with those pending: one-record batches due at spread times over three
   seconds, on a topic with LogAppendTime, read by a consumer. Per record, two latenesses:
   `queued` = the append time the broker stamped on the delivered batch - due (the broker's
   side: its wake-up and the `Delivering` write), and `seen` = when the consumer got it -
   due (plus the partition write, the fetch and the client). Run once per consumer
   `fetch.wait.max.ms` in WAITS (1: polling; 500: a long poll woken by the delivery), and
   once more with another process producing plain records to the same shard meanwhile;
4. restart with everything pending: SIGTERM, start, time until the broker answers Metadata
   and until the pending topic's offsets are served; then the PENDING records come due and
   are counted (each exactly once).

The load average is printed at each step (the machine is shared).

Usage: SPATE_BIN=target/release/spate python3 scripts/measure-delayed.py [RECORDS] [PENDING]
"""

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

BIN = os.environ.get("SPATE_BIN", "target/release/spate")
ARGS = [] if sys.argv[1:2] == ["--load"] else sys.argv[1:]
RECORDS = int(ARGS[0]) if len(ARGS) > 0 else 200_000
PENDING = int(ARGS[1]) if len(ARGS) > 1 else 1_000_000
WAITS = [int(w) for w in os.environ.get("WAITS", "1,500").split(",")]
PORT = int(os.environ.get("PORT", "19392"))
BOOT = f"127.0.0.1:{PORT}"
CPUS = os.sched_getaffinity(0)
BROKER_CPU = max(CPUS)
CLIENT_CPUS = (CPUS - {BROKER_CPU}) or CPUS


def now_ms():
    return int(time.time() * 1000)


def load():
    with open("/proc/loadavg") as average:
        return " ".join(average.read().split()[:3])


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def produce(topic, count, headers_of, value_of=lambda i: b"x" * 100):
    producer = Producer({"bootstrap.servers": BOOT, "linger.ms": 5, "acks": "all",
                         "broker.address.family": "v4", "queue.buffering.max.messages": 500000})
    failed = [0]

    def report(err, _):
        if err:
            failed[0] += 1

    start = time.monotonic()
    for i in range(count):
        while True:
            try:
                producer.produce(topic, value=value_of(i), headers=headers_of(i),
                                 on_delivery=report)
                break
            except BufferError:
                producer.poll(0.01)
        if i % 1000 == 0:
            producer.poll(0)
    producer.flush(300)
    assert failed[0] == 0, f"{failed[0]} failed"
    return time.monotonic() - start


def start_broker(data):
    broker = subprocess.Popen(["taskset", "-c", str(BROKER_CPU), BIN, "--listen", BOOT,
                               "--data-dir", data, "--cores", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return broker


def wait_serving(topic, seconds=600):
    """Seconds until Metadata is answered, and until `topic`'s offsets are."""
    start = time.monotonic()
    metadata = None
    while time.monotonic() - start < seconds:
        admin = AdminClient({"bootstrap.servers": BOOT, "broker.address.family": "v4"})
        try:
            admin.list_topics(timeout=0.5)
            metadata = time.monotonic() - start
            break
        except Exception:
            time.sleep(0.02)
    consumer = Consumer({"bootstrap.servers": BOOT, "group.id": uuid.uuid4().hex,
                         "broker.address.family": "v4"})
    try:
        while time.monotonic() - start < seconds:
            try:
                consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=0.5)
                return metadata, time.monotonic() - start
            except Exception:
                time.sleep(0.02)
    finally:
        consumer.close()
    raise AssertionError("not serving")


def load_forever(topic):
    """Produces plain records as fast as it can (the load of `accuracy(..., loaded=...)`)."""
    producer = Producer({"bootstrap.servers": BOOT, "linger.ms": 5, "acks": "all",
                         "broker.address.family": "v4"})
    while True:
        try:
            producer.produce(topic, value=b"y" * 100)
        except BufferError:
            producer.poll(0.01)
        producer.poll(0)


def accuracy(topic, wait_ms, count=2000, lead_ms=12000, loaded=None):
    # One record per batch (a batch is delivered whole, at its latest record's time).
    base = now_ms() + lead_ms
    dues = [base + (i * 3000) // count for i in range(count)]
    producer = Producer({"bootstrap.servers": BOOT, "linger.ms": 0,
                         "broker.address.family": "v4"})
    for i, due in enumerate(dues):
        producer.produce(topic, value=str(i).encode(),
                         headers=[("spate-deliver-at", str(due).encode())])
        producer.flush(10)
    assert now_ms() < base, "producing took longer than the lead"
    probe = Consumer({"bootstrap.servers": BOOT, "group.id": uuid.uuid4().hex,
                      "broker.address.family": "v4"})
    _, high = probe.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    probe.close()
    consumer = Consumer({"bootstrap.servers": BOOT, "group.id": uuid.uuid4().hex,
                         "broker.address.family": "v4", "fetch.wait.max.ms": wait_ms,
                         "fetch.min.bytes": 1})
    consumer.assign([TopicPartition(topic, 0, high)])
    # Plain produce to another topic on the same shard meanwhile (another process).
    load_process = None
    if loaded:
        load_process = subprocess.Popen([sys.executable, __file__, "--load", loaded])
    seen_late, queued_late = [], []
    early = 0
    deadline = time.monotonic() + 40
    while len(seen_late) < count and time.monotonic() < deadline:
        msg = consumer.poll(0.01)
        if msg is None or msg.error():
            continue
        seen = now_ms()
        due = int(dict(msg.headers())["spate-deliver-at"])
        seen_late.append(seen - due)
        queued_late.append(msg.timestamp()[1] - due)
        early += seen < due
    consumer.close()
    if load_process:
        load_process.kill()
        load_process.wait()

    def summary(late):
        late = sorted(late)
        pick = lambda q: late[min(len(late) - 1, int(q * len(late)))]
        return f"p50 {pick(0.5)} p99 {pick(0.99)} max {late[-1]}"

    under = f", under plain produce to {loaded}" if loaded else ""
    print(f"accuracy (fetch.wait.max.ms {wait_ms}{under}): {len(seen_late)}/{count} delivered, "
          f"lateness ms seen {summary(seen_late)}; queued {summary(queued_late)}; "
          f"seen early {early}; load {load()}", flush=True)


def main():
    os.sched_setaffinity(0, CLIENT_CPUS)
    print(f"{BIN}: broker on CPU {BROKER_CPU}, clients on {sorted(CLIENT_CPUS)}, "
          f"load {load()}", flush=True)
    data = tempfile.mkdtemp(prefix="spate-delayed-")
    broker = start_broker(data)
    try:
        time.sleep(1.5)
        admin = AdminClient({"bootstrap.servers": BOOT, "broker.address.family": "v4"})
        plain, delayed, pending_topic, timed = (f"{n}-{uuid.uuid4().hex[:6]}" for n in
                                                ("plain", "delayed", "pending", "accuracy"))
        opted = {"spate.delivery.delay.ms": "0"}
        topics = [NewTopic(plain, 1, 1), NewTopic(delayed, 1, 1, config=opted),
                  NewTopic(pending_topic, 1, 1, config=opted),
                  NewTopic(timed, 1, 1, config={**opted,
                                                "message.timestamp.type": "LogAppendTime"})]
        for future in admin.create_topics(topics).values():
            future.result(30)
        rows = []
        # The same header on both: the plain topic did not opt in, so it never reads it.
        hour = lambda i: [("spate-deliver-at", str(now_ms() + 3_600_000).encode())]
        runs = [("plain", plain, hour), ("delayed", delayed, hour)] if RECORDS else []
        for name, topic, headers_of in runs:
            cpu = cpu_seconds(broker.pid)
            seconds = produce(topic, RECORDS, headers_of)
            cpu = cpu_seconds(broker.pid) - cpu
            rows.append((name, RECORDS / seconds, cpu / RECORDS * 1e6))
        for name, rate, cpu_us in rows:
            print(f"{name:8} {rate:10.0f} records/s  broker CPU {cpu_us:.2f} us/record")
        if RECORDS:
            print(f"delayed/plain throughput ratio {rows[1][1] / rows[0][1]:.2f}; "
                  f"load {load()}", flush=True)
        # Pending within the horizon (in memory), due after the accuracy runs and the restart.
        before = rss(broker.pid)
        pending_due = now_ms() + 180_000
        produce(pending_topic, PENDING,
                lambda i: [("spate-deliver-at", str(pending_due + i % 5000).encode())],
                value_of=lambda i: b"%099d" % i)
        time.sleep(1)
        after = rss(broker.pid)
        pending = 2 * RECORDS + PENDING
        print(f"{PENDING} records pending in memory (batches of ~5 ms, 100-byte values): "
              f"RSS {before >> 20} -> {after >> 20} MiB, "
              f"{(after - before) / max(PENDING, 1):.0f} bytes per record; "
              f"{pending} pending in all; load {load()}", flush=True)
        for wait_ms in WAITS:
            accuracy(timed, wait_ms)
        if WAITS:
            accuracy(timed, WAITS[-1], loaded=plain)
        assert now_ms() < pending_due - 40_000, "the pending records would come due too early"
        broker.send_signal(signal.SIGTERM)
        broker.wait(120)
        broker = start_broker(data)
        metadata_s, offsets_s = wait_serving(pending_topic)
        print(f"restart with {pending} pending: Metadata answered after {metadata_s:.2f} s, "
              f"the pending topic's offsets after {offsets_s:.2f} s; load {load()}",
              flush=True)
        if WAITS:
            accuracy(timed, WAITS[-1])
        # The pending records come due: every one exactly once.
        consumer = Consumer({"bootstrap.servers": BOOT, "group.id": uuid.uuid4().hex,
                             "broker.address.family": "v4", "fetch.wait.max.ms": 100})
        consumer.assign([TopicPartition(pending_topic, 0, 0)])
        seen = set()
        read = 0
        deadline = time.monotonic() + max(60, (pending_due - now_ms()) / 1000 + 120)
        while read < PENDING and time.monotonic() < deadline:
            for msg in consumer.consume(10000, 0.2):
                if not msg.error():
                    seen.add(msg.value())
                    read += 1
        time.sleep(1)
        _, high = consumer.get_watermark_offsets(TopicPartition(pending_topic, 0), timeout=10)
        consumer.close()
        late_s = (now_ms() - pending_due - 5000) / 1000
        print(f"pending after the restart: {read} read, {len(seen)} distinct, high watermark "
              f"{high}, of {PENDING} "
              f"(the last read {late_s:.1f} s after the last due time); load {load()}")
    finally:
        broker.terminate()
        broker.wait(60)
        subprocess.run(["rm", "-rf", data])


if __name__ == "__main__":
    if sys.argv[1:2] == ["--load"]:
        load_forever(sys.argv[2])
    else:
        main()
