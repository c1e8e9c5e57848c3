#!/usr/bin/env python3
"""Many partitions on one node (issue 20): creation time, memory, Metadata time, produce and
consume on every partition, and restart time after SIGTERM and after kill -9.

Spate (the default) is started by this script on its own data dir, optionally under a
descriptor limit it cannot raise; `--bootstrap H:P --pid N` measures a broker that is already
running instead, without the restarts.

`--kafka` measures Apache Kafka, restarts included: scripts/kafka-reference.sh starts one
node (heap `--kafka-heap`; open files and vm.max_map_count as that script says, and this
script stops early when either is too low for the partitions: Kafka keeps one descriptor and
two map areas per partition); its `term` and `kill9` keep the data for the next `start`. The
keys are Spate's where the figure means the same; Kafka's differ in:
- first_start_s includes formatting the storage (kafka-storage format, a JVM of its own);
- create_s ends when the last CreateTopics is answered, which Kafka does once its controller
  has committed the topics, before the broker has made their logs: create_available_s is the
  time until every partition is available (below), and rss_created_mib is taken then. A
  CreateTopics request carries at most 99 topics of 100 partitions (Kafka refuses more than
  10,000 records in one controller operation), not 100;
- start_after_*_s is until ApiVersions is answered, as for Spate; start_after_*_leaders_s until
  a Metadata request lists every partition with a leader and no error; and
  start_after_*_available_s until every partition is available: a ListOffsets request for all
  of them is answered without a partition error (Kafka's Metadata names a partition's leader
  before that leader has the partition online, and a Produce then gets NOT_LEADER_OR_FOLLOWER);
- heap, nofile (the JVM's limit), vm_max_map_count and map_areas (the JVM's, after consuming).

    scripts/measure-partitions.py [--topics 1000] [--partitions 100] [--nofile 1024]
                                  [--spate-bin target/release/spate] [--cores 2]
    scripts/measure-partitions.py --kafka [--kafka-heap 4g] [--topics ...]
    scripts/measure-partitions.py --bootstrap 127.0.0.1:19092 --pid PID [--topics ...]

With `--publish-bench target/release/spate-bench`, a producer at 1,000 records/s (spate-bench's
native client: one request per record, acks=all, 1 KiB lz4) then writes to one more partition for 20 s and its publish latency is
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
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "clients"))
from kafka_wire import (LIST_OFFSETS, api_versions_answered, connect, frame,  # noqa: E402
                        read_response, request_header)

PR_CAPBSET_DROP = 24
CAP_SYS_RESOURCE = 24
CREATE_BATCH = 100
CLIENT_PARTITIONS = 2000
# Kafka's controller refuses an operation of more than 10,000 records
# (QuorumController.MAX_RECORDS_PER_USER_OP): one per topic and one per partition.
KAFKA_MAX_RECORDS_PER_OP = 10_000
# Bounds on each wait of a Kafka run (it loads 100,000 logs with one thread).
KAFKA_START_LIMIT_S = 1800
KAFKA_TERM_LIMIT_S = 900
CONSUME_LIMIT_S = 1800
KAFKA_SCRIPT = Path(__file__).resolve().parent / "kafka-reference.sh"


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

    @property
    def pid(self):
        return self.proc.pid

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


class Kafka:
    """Apache Kafka through scripts/kafka-reference.sh: one KRaft node whose data a `term` or
    `kill9` keeps for the next `start`."""

    def __init__(self, heap, names, partitions):
        self.env = dict(os.environ, KAFKA_REF_HEAP=heap,
                        KAFKA_REF_READY_SECS=str(KAFKA_START_LIMIT_S),
                        KAFKA_REF_TERM_SECS=str(KAFKA_TERM_LIMIT_S))
        self.port = int(self.env.get("KAFKA_REF_PORT", "19092"))
        self.topic_partitions = [TopicPartition(name, p) for name in names
                                 for p in range(partitions)]
        self.partitions = len(self.topic_partitions)
        self.pid = None
        self.dir = None
        self.leaders_s = None
        self.available_s = None
        self.started = False

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def _script(self, command, timeout):
        done = subprocess.run([str(KAFKA_SCRIPT), command], env=self.env, capture_output=True,
                              text=True, timeout=timeout)
        if done.returncode != 0 and command != "status":
            raise SystemExit(f"kafka-reference.sh {command} failed:\n{done.stderr}")
        return done.stdout.strip()

    def start(self):
        """Starts the node; returns seconds until it answers ApiVersions. On a restart,
        leaders_s becomes the seconds until Metadata lists every partition with a leader, and
        available_s until every partition is available (all_available_seconds)."""
        began = time.monotonic()
        script = subprocess.Popen([str(KAFKA_SCRIPT), "start"], env=self.env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        while not api_versions_answered(self.port, timeout=1.0):
            if script.poll() is not None and script.returncode != 0:
                raise SystemExit(f"kafka-reference.sh start failed:\n{script.stderr.read()}")
            if time.monotonic() - began > KAFKA_START_LIMIT_S:
                script.kill()
                self.cleanup()
                raise SystemExit(f"Kafka did not answer within {KAFKA_START_LIMIT_S} s")
            time.sleep(0.05)
        answered = time.monotonic() - began
        if self.started:
            self.leaders_s = all_leaders_seconds(self.bootstrap, self.partitions, began)
            self.available_s = all_available_seconds(self.bootstrap, self.topic_partitions,
                                                     began)
        _, err = script.communicate(timeout=KAFKA_START_LIMIT_S)
        if script.returncode != 0:
            self.cleanup()
            raise SystemExit(f"kafka-reference.sh start failed:\n{err}")
        status = dict(field.split("=", 1) for field in self._script("status", 60).split()[1:])
        self.pid, self.dir = int(status["pid"]), Path(status["dir"])
        self.started = True
        return answered

    def stop(self):
        """SIGTERM; returns seconds until the process exited (measured by the script)."""
        return float(self._script("term", KAFKA_TERM_LIMIT_S + 120).splitlines()[-1])

    def kill9(self):
        self._script("kill9", 120)
        deadline = time.monotonic() + 60
        while socket_listening(self.port) and time.monotonic() < deadline:
            time.sleep(0.02)

    def limit(self, name):
        """A limit of the JVM from /proc/PID/limits (soft value)."""
        with open(f"/proc/{self.pid}/limits") as limits:
            for line in limits:
                if line.startswith(name):
                    return int(line[len(name):].split()[0])
        return None

    def map_areas(self):
        with open(f"/proc/{self.pid}/maps") as maps:
            return sum(1 for _ in maps)

    def cleanup(self):
        self._script("stop", 120)


def max_map_count():
    return int(Path("/proc/sys/vm/max_map_count").read_text())


def all_leaders_seconds(bootstrap, expected, began):
    """Seconds from `began` until a Metadata request lists `expected` partitions (internal
    topics aside), each with a leader and no error; asked once a second at most, since each
    answer over 100,000 partitions takes the broker's CPU."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    while True:
        try:
            metadata = admin.list_topics(timeout=60)
        except KafkaException:
            metadata = None
        if metadata:
            led = sum(1 for name, t in metadata.topics.items()
                      if not name.startswith("__") and t.error is None
                      for p in t.partitions.values() if p.leader >= 0 and p.error is None)
            if led >= expected:
                return time.monotonic() - began
        if time.monotonic() - began > KAFKA_START_LIMIT_S:
            raise SystemExit(f"not every partition had a leader within {KAFKA_START_LIMIT_S} s")
        time.sleep(1.0)


def unavailable(port, topic_partitions):
    """How many of `topic_partitions` one ListOffsets v1 (latest offset) request answers with
    an error: each partition without one is online on its leader. Written by hand: librdkafka's
    list_offsets over 19,000 partitions spent minutes of CPU comparing partition lists when
    some had no leader yet."""
    by_topic = {}
    for tp in topic_partitions:
        by_topic.setdefault(tp.topic, []).append(tp.partition)
    body = [struct.pack(">ii", -1, len(by_topic))]
    for topic, partitions in by_topic.items():
        name = topic.encode()
        body.append(struct.pack(">h", len(name)) + name + struct.pack(">i", len(partitions)))
        body.extend(struct.pack(">iq", partition, -1) for partition in partitions)
    try:
        with connect(port, timeout=120) as sock:
            sock.sendall(frame(request_header(LIST_OFFSETS, 1, 9) + b"".join(body)))
            _, response = read_response(sock)
        (topics,), position, answered = struct.unpack_from(">i", response), 4, 0
        for _ in range(topics):
            (name_size,) = struct.unpack_from(">h", response, position)
            (count,) = struct.unpack_from(">i", response, position + 2 + name_size)
            position += 2 + name_size + 4
            for _ in range(count):
                _, error_code, _, _ = struct.unpack_from(">ihqq", response, position)
                position += 22
                answered += error_code == 0
    except (OSError, AssertionError, struct.error):
        return len(topic_partitions)
    return len(topic_partitions) - answered


def all_available_seconds(bootstrap, topic_partitions, began):
    """Seconds from `began` until every partition is available (`unavailable` finds none);
    asked once a second."""
    port = int(bootstrap.rsplit(":", 1)[1])
    while True:
        missing = unavailable(port, topic_partitions)
        if missing == 0:
            return time.monotonic() - began
        if time.monotonic() - began > KAFKA_START_LIMIT_S:
            raise SystemExit(f"{missing} partitions were not available after "
                             f"{KAFKA_START_LIMIT_S} s")
        time.sleep(1.0)


def socket_listening(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def create_topics(bootstrap, names, partitions, per_request=CREATE_BATCH):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    began = time.monotonic()
    for at in range(0, len(names), per_request):
        batch = [NewTopic(name, partitions, 1) for name in names[at:at + per_request]]
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


def describe_configs_seconds(bootstrap, names):
    """DescribeConfigs of every topic, CREATE_BATCH topics per request: the total time."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    began = time.monotonic()
    for at in range(0, len(names), CREATE_BATCH):
        resources = [ConfigResource(ResourceType.TOPIC, name)
                     for name in names[at:at + CREATE_BATCH]]
        for future in admin.describe_configs(resources, request_timeout=300).values():
            assert "retention.ms" in future.result(timeout=300)
    return time.monotonic() - began


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
        while got < expected and time.monotonic() - began < CONSUME_LIMIT_S:
            # Asking for no more than is left returns as soon as it has come, instead of
            # waiting out the timeout for a batch that can never fill.
            for msg in consumer.consume(min(10_000, expected - got), 1.0):
                if not msg.error():
                    got += 1
        consumer.close()
        assert got == expected, f"consumed {got} of {expected}"
    return time.monotonic() - began


PUBLISH_SECONDS = 20


# spate-bench's own producer: one request per record with none of librdkafka's hand-offs
# between threads, whose delays add noise of their own to every publish latency.
PUBLISH_CLIENT = "native"


def publish_latency(bench, bootstrap, label):
    """p50/p99/p99.9 publish latency in ms of a 1,000 records/s linger-0 producer."""
    out = Path(tempfile.mkdtemp(prefix="measure-publish-")) / "run.json"
    subprocess.run(
        [bench, "produce", "-b", bootstrap, "--topic", f"publish-probe-{label}",
         "--partitions", "1", "--rate", "1000", "--duration", f"{PUBLISH_SECONDS}s",
         "--warmup", "5s", "--linger-ms", "0", "--acks", "all", "--compression", "lz4",
         "--record-size", "1024", "--client", PUBLISH_CLIENT, "--json", str(out)],
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
    parser.add_argument("--kafka", action="store_true",
                        help="measure Apache Kafka from scripts/kafka-reference.sh, restarts "
                             "included")
    parser.add_argument("--kafka-heap", default="4g", help="Kafka's heap (with --kafka)")
    args = parser.parse_args()

    total = args.topics * args.partitions
    names = [f"p{index:05d}" for index in range(args.topics)]
    result = {"topics": args.topics, "partitions_per_topic": args.partitions,
              "partitions": total}
    broker = None
    kafka = None
    if args.bootstrap:
        bootstrap, pid = args.bootstrap, args.pid
    elif args.kafka:
        # Two map areas per partition (index and time index), and the JVM's own.
        if max_map_count() < 2 * total + 20_000:
            raise SystemExit(f"vm.max_map_count is {max_map_count()}: Kafka needs two map areas "
                             f"per partition, more than {2 * total + 20_000} for {total}; as root, "
                             f"sysctl -w vm.max_map_count={max(262_144, 2 * total + 20_000)}")
        broker = kafka = Kafka(args.kafka_heap, names, args.partitions)
        result["broker"] = "kafka"
        result["heap"] = args.kafka_heap
        result["vm_max_map_count"] = max_map_count()
        result["first_start_s"] = round(broker.start(), 2)
        result["nofile"] = kafka.limit("Max open files")
        if result["nofile"] < total + 500:
            broker.cleanup()
            raise SystemExit(f"Kafka's open-file limit is {result['nofile']}, and it keeps one "
                             f"descriptor per partition (its log segment): {total} partitions "
                             f"need more than {total + 500}")
        bootstrap, pid = broker.bootstrap, broker.pid
    else:
        broker = Spate(args.spate_bin, args.cores, args.nofile)
        result["nofile"] = args.nofile or resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        result["first_start_s"] = round(broker.start(), 2)
        bootstrap, pid = broker.bootstrap, broker.proc.pid
    try:
        result["rss_empty_mib"] = rss_mib(pid)
        began = time.monotonic()
        per_request = CREATE_BATCH
        if kafka:
            per_request = max(1, min(CREATE_BATCH,
                                     KAFKA_MAX_RECORDS_PER_OP // (args.partitions + 1)))
        result["create_s"] = round(create_topics(bootstrap, names, args.partitions,
                                                 per_request), 2)
        if kafka:
            result["create_available_s"] = round(
                all_available_seconds(bootstrap, kafka.topic_partitions, began), 2)
        result["rss_created_mib"] = rss_mib(pid)
        result["metadata_s"] = round(metadata_seconds(bootstrap, total), 3)
        result["describe_configs_all_s"] = round(describe_configs_seconds(bootstrap, names), 3)
        result["produce_all_s"] = round(produce_everywhere(bootstrap, names, args.partitions,
                                                           "a"), 2)
        result["consume_all_s"] = round(consume_everything(bootstrap, names, args.partitions,
                                                           1), 2)
        result["rss_used_mib"] = rss_mib(pid)
        result["descriptors"] = descriptors(pid)
        if kafka:
            result["map_areas"] = kafka.map_areas()
        if args.publish_bench:
            # The broker of 100 beside it is a Spate: only beside a Spate of many partitions.
            spate_here = broker is not None and not kafka
            result.update(compare_publish(args, bootstrap, spate_here))
        if broker:
            result["sigterm_exit_s"] = round(broker.stop(), 2)
            result["start_after_sigterm_s"] = round(broker.start(), 2)
            if kafka:
                result["start_after_sigterm_leaders_s"] = round(kafka.leaders_s, 2)
                result["start_after_sigterm_available_s"] = round(kafka.available_s, 2)
            result["rss_restarted_mib"] = rss_mib(broker.pid)
            produce_everywhere(bootstrap, names, args.partitions, "b")
            broker.kill9()
            result["start_after_kill9_s"] = round(broker.start(), 2)
            if kafka:
                result["start_after_kill9_leaders_s"] = round(kafka.leaders_s, 2)
                result["start_after_kill9_available_s"] = round(kafka.available_s, 2)
            result["consume_after_kill9_s"] = round(
                consume_everything(bootstrap, names, args.partitions, 2), 2)
            result["descriptors_after"] = descriptors(broker.pid)
    finally:
        if broker:
            broker.cleanup()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
