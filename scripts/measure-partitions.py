#!/usr/bin/env python3
"""Many partitions on one node (issue 20): creation time, memory, Metadata time, produce and
consume on every partition, and restart time after SIGTERM and after kill -9.

Spate (the default) is started by this script on its own data dir, optionally under a
descriptor limit it cannot raise; `--bootstrap H:P --pid N` measures a broker that is already
running instead (for example Apache Kafka from scripts/kafka-reference.sh), without the
restarts.

    scripts/measure-partitions.py [--topics 1000] [--partitions 100] [--nofile 1024]
                                  [--spate-bin target/release/spate] [--cores 2]
    scripts/measure-partitions.py --bootstrap 127.0.0.1:19092 --pid PID [--topics ...]

With `--publish-bench target/release/spate-bench`, a producer at 1,000 records/s (linger.ms=0,
acks=all, 1 KiB lz4) then writes to one more partition for 20 s and its publish latency is
measured. Unless in `--bootstrap` mode, a second Spate with one topic of 100 partitions runs
beside the first meanwhile (both idle but for the producer), and the producer alternates
between the two, `--publish-rounds` times each (3), for the ratio of their medians.

Prints one JSON object. Not a test: minutes long and machine dependent.
"""

import argparse
import ctypes
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "clients"))
from kafka_wire import api_versions_answered  # noqa: E402

PR_CAPBSET_DROP = 24
CAP_SYS_RESOURCE = 24
CREATE_BATCH = 100
CLIENT_PARTITIONS = 2000


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return None


def descriptors(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Spate:
    def __init__(self, binary, cores, nofile):
        self.binary = binary
        self.cores = cores
        self.nofile = nofile
        self.dir = Path(tempfile.mkdtemp(prefix="spate-partitions-"))
        self.port = free_port()
        self.proc = None
        self.log = open(self.dir / "broker.log", "ab")

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def _limit(self):
        if self.nofile:
            resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))
            ctypes.CDLL(None).prctl(PR_CAPBSET_DROP, CAP_SYS_RESOURCE, 0, 0, 0)

    def start(self):
        """Starts the broker; returns seconds until it answers ApiVersions."""
        began = time.monotonic()
        self.proc = subprocess.Popen(
            [self.binary, "--listen", self.bootstrap, "--data-dir", str(self.dir / "data"),
             "--cores", str(self.cores)],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=self._limit, start_new_session=True)
        while not api_versions_answered(self.port, timeout=1.0):
            if self.proc.poll() is not None:
                raise SystemExit(f"broker exited; see {self.dir / 'broker.log'}")
            if time.monotonic() - began > 600:
                raise SystemExit("broker did not start within 600 s")
            time.sleep(0.05)
        return time.monotonic() - began

    def stop(self):
        """SIGTERM; returns seconds until the process exited."""
        began = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=900)
        return time.monotonic() - began

    def kill9(self):
        self.proc.kill()
        self.proc.wait(timeout=60)
        while socket_listening(self.port):
            time.sleep(0.02)

    def cleanup(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def socket_listening(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def create_topics(bootstrap, names, partitions):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    began = time.monotonic()
    for at in range(0, len(names), CREATE_BATCH):
        batch = [NewTopic(name, partitions, 1) for name in names[at:at + CREATE_BATCH]]
        futures = admin.create_topics(batch, operation_timeout=300, request_timeout=300)
        for future in futures.values():
            future.result(timeout=300)
    return time.monotonic() - began


def metadata_seconds(bootstrap, expected_partitions, rounds=5):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    times = []
    for _ in range(rounds):
        began = time.monotonic()
        metadata = admin.list_topics(timeout=300)
        times.append(time.monotonic() - began)
        seen = sum(len(t.partitions) for name, t in metadata.topics.items()
                   if not name.startswith("__"))
        assert seen >= expected_partitions, f"metadata lists {seen} partitions"
    return sorted(times)[len(times) // 2]


def chunks(names, partitions):
    """The topics in groups of about CLIENT_PARTITIONS partitions: one librdkafka client over
    100,000 partitions spends its time scanning its own partition lists (measured: the client
    at 93% of a core, the broker at 7%), so each group gets a client of its own."""
    size = max(1, CLIENT_PARTITIONS // partitions)
    return [names[at:at + size] for at in range(0, len(names), size)]


def produce_everywhere(bootstrap, names, partitions, tag):
    failed = []
    began = time.monotonic()
    for group in chunks(names, partitions):
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all"})
        for name in group:
            for partition in range(partitions):
                producer.produce(name, value=tag.encode(), partition=partition,
                                 on_delivery=lambda err, msg: err and failed.append(err))
            producer.poll(0)
        left = producer.flush(600)
        assert left == 0 and not failed, f"{left} undelivered, {failed[:3]}"
    return time.monotonic() - began


def consume_everything(bootstrap, names, partitions, per_partition):
    began = time.monotonic()
    for group in chunks(names, partitions):
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "measure",
                             "enable.auto.commit": False})
        consumer.assign([TopicPartition(name, p, 0) for name in group for p in range(partitions)])
        expected = len(group) * partitions * per_partition
        got = 0
        while got < expected and time.monotonic() - began < 900:
            for msg in consumer.consume(10_000, 1.0):
                if not msg.error():
                    got += 1
        consumer.close()
        assert got == expected, f"consumed {got} of {expected}"
    return time.monotonic() - began


PUBLISH_SECONDS = 20


def publish_latency(bench, bootstrap, label):
    """p50/p99/p99.9 publish latency in ms of a 1,000 records/s linger-0 producer."""
    out = Path(tempfile.mkdtemp(prefix="measure-publish-")) / "run.json"
    subprocess.run(
        [bench, "produce", "-b", bootstrap, "--topic", f"publish-probe-{label}",
         "--partitions", "1", "--rate", "1000", "--duration", f"{PUBLISH_SECONDS}s",
         "--warmup", "5s", "--linger-ms", "0", "--acks", "all", "--compression", "lz4",
         "--record-size", "1024", "--json", str(out)],
        check=True, stdout=subprocess.DEVNULL, timeout=PUBLISH_SECONDS + 120)
    latency = json.loads(out.read_text())["latency"]["publish"]
    shutil.rmtree(out.parent, ignore_errors=True)
    return {name: round(latency[key] / 1000, 3)
            for name, key in (("p50_ms", "p50_us"), ("p99_ms", "p99_us"),
                              ("p99.9_ms", "p99_9_us"))}




def compare_publish(args, bootstrap, with_reference):
    """Publish latency on the many-partition broker, and beside it on a broker of 100."""
    if not with_reference:
        return {"publish_many": publish_latency(args.publish_bench, bootstrap, "many")}
    few = Spate(args.spate_bin, args.cores, args.nofile)
    many_runs, few_runs = [], []
    try:
        few.start()
        create_topics(few.bootstrap, ["p00000"], 99)
        for round_ in range(args.publish_rounds):
            few_runs.append(publish_latency(args.publish_bench, few.bootstrap, f"few{round_}"))
            many_runs.append(publish_latency(args.publish_bench, bootstrap, f"many{round_}"))
    finally:
        few.cleanup()

    def median(runs, key):
        return sorted(run[key] for run in runs)[len(runs) // 2]

    out = {"publish_many_runs": many_runs, "publish_100_runs": few_runs}
    for key in ("p50_ms", "p99_ms", "p99.9_ms"):
        out[f"publish_{key}_ratio"] = round(median(many_runs, key) / median(few_runs, key), 2)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--topics", type=int, default=1000)
    parser.add_argument("--partitions", type=int, default=100)
    parser.add_argument("--nofile", type=int, default=0, help="broker's RLIMIT_NOFILE")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--spate-bin", default=str(
        Path(__file__).resolve().parents[1] / "target" / "release" / "spate"))
    parser.add_argument("--bootstrap", help="measure this running broker instead")
    parser.add_argument("--pid", type=int, help="its pid (with --bootstrap)")
    parser.add_argument("--publish-bench", help="spate-bench binary: measure publish latency")
    parser.add_argument("--publish-rounds", type=int, default=3)
    args = parser.parse_args()

    total = args.topics * args.partitions
    names = [f"p{index:05d}" for index in range(args.topics)]
    result = {"topics": args.topics, "partitions_per_topic": args.partitions,
              "partitions": total}
    broker = None
    if args.bootstrap:
        bootstrap, pid = args.bootstrap, args.pid
    else:
        broker = Spate(args.spate_bin, args.cores, args.nofile)
        result["nofile"] = args.nofile or resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        result["first_start_s"] = round(broker.start(), 2)
        bootstrap, pid = broker.bootstrap, broker.proc.pid
    try:
        result["rss_empty_mib"] = rss_mib(pid)
        result["create_s"] = round(create_topics(bootstrap, names, args.partitions), 2)
        result["rss_created_mib"] = rss_mib(pid)
        result["metadata_s"] = round(metadata_seconds(bootstrap, total), 3)
        result["produce_all_s"] = round(produce_everywhere(bootstrap, names, args.partitions,
                                                           "a"), 2)
        result["consume_all_s"] = round(consume_everything(bootstrap, names, args.partitions,
                                                           1), 2)
        result["rss_used_mib"] = rss_mib(pid)
        result["descriptors"] = descriptors(pid)
        if args.publish_bench:
            result.update(compare_publish(args, bootstrap, broker is not None))
        if broker:
            result["sigterm_exit_s"] = round(broker.stop(), 2)
            result["start_after_sigterm_s"] = round(broker.start(), 2)
            result["rss_restarted_mib"] = rss_mib(broker.proc.pid)
            produce_everywhere(bootstrap, names, args.partitions, "b")
            broker.kill9()
            result["start_after_kill9_s"] = round(broker.start(), 2)
            result["consume_after_kill9_s"] = round(
                consume_everything(bootstrap, names, args.partitions, 2), 2)
            result["descriptors_after"] = descriptors(broker.proc.pid)
    finally:
        if broker:
            broker.cleanup()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
