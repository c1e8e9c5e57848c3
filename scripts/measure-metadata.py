#!/usr/bin/env python3
"""Metadata of many partitions on a three-node cluster (issue 13's target): Spate next to
Apache Kafka with the same topics, one after the other in the same run.

Each side is a cluster of three processes on 127.0.0.1, each a broker and a controller voter
(Spate: `--cores 1 --controller-quorum-voters ...`; Kafka 4.3.1 from the Maven jars that
scripts/kafka-reference.sh fetches: `process.roles=broker,controller`, static
`controller.quorum.voters`, Kafka's shipped thread counts, G1, `--kafka-heap` each), on fresh
temporary data dirs; scripts/cluster_procs.py starts and stops them (the Spate nodes may use
every CPU, so each pins its one shard to CPU 0). A round on one side:

- create: `--topics` topics of `--partitions` partitions, replication factor 3, created with
  confluent-kafka's AdminClient in requests of 10 topics one after the other (Kafka refuses
  more than 10,000 records in one controller operation), until every node's Metadata lists
  every partition with a leader among the live brokers (polled every 0.5 s: the figure is
  that coarse);
- metadata: `--requests` Metadata v7 requests for all topics (a raw request, topics null, on
  one connection to node 1, one at a time), from sending to the last byte of the answer:
  median, p99 and the answer's size;
- start-up after a clean stop (SIGTERM to all three, waiting for their exit, the stop time is
  printed too) and after kill -9 of all three: from starting the three processes together to
  every node's Metadata listing every partition with a live leader (polled every 0.25 s),
  and until a CreateTopics of one more topic (1 partition, factor 3) then succeeds, retried:
  the quorum commits again (a node may serve the metadata it replayed before its quorum has
  a leader: after kill -9, its brokers were never fenced in that log).
  Neither side has a metadata snapshot yet here (Spate takes one every 10,000 applied
  entries, Kafka every 20 MiB of records or hour), so both replay their metadata log;
- snapshot: the three restart with snapshots due at once (Spate
  `--metadata-snapshot-interval-records 50`, Kafka
  `metadata.log.max.snapshot.interval.ms=1000`: one a second); the median time of the
  snapshots each node wrote after that start, once it wrote three (Spate's `took a metadata
  snapshot` log line's total_us: encode, file fsync and rename, journal rewrite; Kafka's log
  lines `Creating new KRaft snapshot file` to `Successfully wrote`, millisecond stamps), the
  median over the nodes, and the newest snapshot's size (Spate `<index>.snapshot`, Kafka
  `<offset>-<epoch>.checkpoint`); then a clean stop and the start-up from that snapshot with
  the default intervals again. (Spate also takes snapshots at its default interval during
  the earlier restarts when they append 10,000 entries: a start of the whole cluster after
  a clean stop does, fencing and unfencing every partition's leader.)

The sides alternate, Spate first in even rounds. Each figure is printed with the load
average at its time (the machine is shared); at the end the medians over the rounds and
Spate/Kafka ratios (below 1: Spate faster or smaller).

    scripts/measure-metadata.py [--rounds 3] [--topics 100] [--partitions 100]
                                [--spate-bin target/release/spate] [--kafka-heap 2g]
                                [--only spate|kafka] [--json FILE]

Not a test: about half an hour at the defaults, machine dependent. Needs confluent-kafka,
java and (once, for the jars) mvn. Every process it starts is killed at the end.
"""

import argparse
import json
import os
import re
import socket
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cluster_procs import (ROOT, WAIT_LIMIT_S, KafkaCluster, SpateCluster,  # noqa: E402
                           fetch_kafka, metadata_all, node_metadata)
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

TOPICS_PER_REQUEST = 10
PREFIX = "meta10k-"


def load():
    return round(os.getloadavg()[0], 2)


def all_led(port, topics, partitions, nodes):
    """True when this node's Metadata lists all our partitions with a leader among its live
    brokers, all the nodes as brokers and a controller."""
    found = node_metadata(port)
    if found is None:
        return False
    brokers, controller, found = found
    if brokers != set(range(1, nodes + 1)) or controller < 0:
        return False
    ours = {name: parts for name, parts in found.items() if name.startswith(PREFIX)}
    if len(ours) != topics:
        return False
    return all(len(parts) == partitions and all(p[0] == 0 and p[1] in brokers for p in parts)
               for parts in ours.values())


def wait_all_led(cluster, topics, partitions, began, poll):
    pending = list(cluster.nodes)
    while pending:
        pending = [n for n in pending
                   if not all_led(n.port, topics, partitions, len(cluster.nodes))]
        if not pending:
            break
        for node in cluster.nodes:
            node.check_alive()
        if time.monotonic() - began > WAIT_LIMIT_S:
            raise SystemExit(f"{cluster.name}: not every partition led within {WAIT_LIMIT_S} s")
        time.sleep(poll)
    return time.monotonic() - began


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class MetadataCluster:
    """What this script adds to a cluster: snapshots due at once or not, probe topics."""

    snapshot_due = False
    probes = 0


class MetadataSpate(MetadataCluster, SpateCluster):
    def node_args(self, node):
        return ["--metadata-snapshot-interval-records", "50"] if self.snapshot_due else []

    def snapshots(self, node):
        return sorted((node.dir / "data" / "__cluster_metadata").glob("*.snapshot"))

    def snapshot_written(self, node):
        """(seconds, bytes): the median time of the snapshots this node's log says it took
        since its latest start (once it took three) and the newest one's size, or None."""
        text = re.sub(r"\x1b\[[0-9;]*m", "", node.log_since_start("stdout.log"))
        found = re.findall(r"took a metadata snapshot .*bytes=(\d+) .*total_us=(\d+)", text)
        if len(found) < 3:
            return None
        return statistics.median(int(us) for _, us in found) / 1e6, int(found[-1][0])


class MetadataKafka(MetadataCluster, KafkaCluster):
    def extra_properties(self):
        interval = 1000 if self.snapshot_due else 3_600_000
        return [f"metadata.log.max.snapshot.interval.ms={interval}"]

    def snapshots(self, node):
        return sorted((node.dir / "metadata" / "__cluster_metadata-0").glob("*.checkpoint"))

    def snapshot_written(self, node):
        """(seconds, bytes): the median time of the snapshots this node wrote (once it wrote
        three: with the interval at 1 s it writes one a second, the first one by a cold JVM)
        and the newest file's size, or None."""
        text = node.log_since_start("server.log")
        stamp = r"^\[([^\]]+)\] INFO \[Snapshot\w+ id=\d+\] "
        created = dict((name, at) for at, name in re.findall(
            stamp + r"Creating new KRaft snapshot file snapshot (\S+)", text, re.M))
        written = re.findall(stamp + r"Successfully wrote snapshot (\S+)", text, re.M)
        times = [(parse_stamp(at) - parse_stamp(created[name])).total_seconds()
                 for at, name in written if name in created]
        files = self.snapshots(node)
        if len(times) < 3 or not files:
            return None
        return statistics.median(times), files[-1].stat().st_size


def parse_stamp(value):
    return datetime.strptime(value, "%Y-%m-%d %H:%M:%S,%f")


def create_topics(cluster, topics, partitions):
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    names = [f"{PREFIX}{i:04d}" for i in range(topics)]
    began = time.monotonic()
    for first in range(0, topics, TOPICS_PER_REQUEST):
        batch = [NewTopic(name, partitions, 3)
                 for name in names[first:first + TOPICS_PER_REQUEST]]
        futures = admin.create_topics(batch, operation_timeout=120, request_timeout=180)
        for name, future in futures.items():
            future.result(timeout=300)
    answered = time.monotonic() - began
    led = wait_all_led(cluster, topics, partitions, began, 0.5)
    return answered, led


def metadata_times(cluster, requests):
    times = []
    with socket.create_connection(("127.0.0.1", cluster.nodes[0].port), timeout=30) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        metadata_all(sock)  # warm
        for _ in range(requests):
            began = time.perf_counter()
            _, size = metadata_all(sock)
            times.append(time.perf_counter() - began)
    times.sort()
    return {"median_ms": round(statistics.median(times) * 1000, 2),
            "p99_ms": round(times[min(len(times) - 1, int(len(times) * 0.99))] * 1000, 2),
            "bytes": size}


def start_up(cluster, args):
    """(seconds until every node's Metadata lists every partition with a live leader,
    seconds until then a CreateTopics of one more topic succeeds: the quorum commits again)."""
    began = time.monotonic()
    cluster.start_all()
    led = wait_all_led(cluster, args.topics, args.partitions, began, 0.25)
    cluster.probes += 1
    name = f"probe-{cluster.probes}"
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    while True:
        try:
            admin.create_topics([NewTopic(name, 1, 3)], operation_timeout=30,
                                request_timeout=60)[name].result(timeout=90)
            break
        except Exception as e:  # noqa: BLE001 (retried until the limit, then shown)
            if "TOPIC_ALREADY_EXISTS" in str(e):
                break
            if time.monotonic() - began > WAIT_LIMIT_S:
                raise SystemExit(f"{cluster.name}: no CreateTopics after a start: {e}")
            time.sleep(0.1)
    return round(led, 2), round(time.monotonic() - began, 2)


def wait_snapshots(cluster):
    began = time.monotonic()
    while True:
        found = [cluster.snapshot_written(n) for n in cluster.nodes]
        if all(found):
            return found
        if time.monotonic() - began > WAIT_LIMIT_S:
            raise SystemExit(f"{cluster.name}: no snapshot on every node within "
                             f"{WAIT_LIMIT_S} s: {found}")
        time.sleep(0.5)


def one_round(side, args):
    cluster = (MetadataSpate(args.spate_bin) if side == "spate"
               else MetadataKafka(args.kafka_heap))
    result = {"side": side}

    def note(key, value):
        result[key] = value
        result[f"{key}_load"] = load()
        print(f"  {side} {key}: {value} (load {result[f'{key}_load']})", flush=True)

    try:
        cluster.start_all()
        cluster.wait_formed()
        answered, led = create_topics(cluster, args.topics, args.partitions)
        note("create_answered_s", round(answered, 2))
        note("create_led_s", round(led, 2))
        note("rss_mib", round(sum(rss_mib(n.proc.pid) for n in cluster.nodes)))
        time.sleep(2)
        note("metadata", metadata_times(cluster, args.requests))
        note("snapshots_before", sum(len(cluster.snapshots(n)) for n in cluster.nodes))
        note("stop_term_s", round(cluster.term_all(), 2))
        note("start_after_term_s", start_up(cluster, args))
        cluster.kill_all()
        note("start_after_kill9_s", start_up(cluster, args))
        cluster.term_all()
        cluster.snapshot_due = True
        cluster.start_all()
        written = wait_snapshots(cluster)
        note("snapshot_write_s", round(statistics.median(s for s, _ in written), 3))
        note("snapshot_bytes", statistics.median(b for _, b in written))
        cluster.term_all()
        cluster.snapshot_due = False
        note("start_from_snapshot_s", start_up(cluster, args))
        note("snapshots_after", sum(len(cluster.snapshots(n)) for n in cluster.nodes))
    finally:
        cluster.cleanup()
    return result


FIGURES = ["create_answered_s", "create_led_s", "rss_mib", "metadata.median_ms",
           "metadata.p99_ms", "metadata.bytes", "stop_term_s", "start_after_term_s.0",
           "start_after_term_s.1", "start_after_kill9_s.0", "start_after_kill9_s.1",
           "snapshot_write_s", "snapshot_bytes", "start_from_snapshot_s.0",
           "start_from_snapshot_s.1"]


def figure(result, key):
    if "." in key:
        outer, inner = key.split(".")
        value = result[outer]
        return value[int(inner)] if isinstance(value, (list, tuple)) else value[inner]
    return result[key]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--topics", type=int, default=100)
    parser.add_argument("--partitions", type=int, default=100)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--spate-bin", default=str(ROOT / "target" / "release" / "spate"))
    parser.add_argument("--kafka-heap", default="2g")
    parser.add_argument("--only", choices=["spate", "kafka"])
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.only != "spate":
        fetch_kafka()
    sides = [args.only] if args.only else ["spate", "kafka"]
    print(f"{args.topics} topics x {args.partitions} partitions, replication factor 3, "
          f"3 nodes each; {os.cpu_count()} CPUs; {datetime.utcnow():%Y-%m-%d %H:%M} UTC",
          flush=True)
    results = {side: [] for side in sides}
    for round_number in range(args.rounds):
        order = sides if round_number % 2 == 0 else list(reversed(sides))
        for side in order:
            print(f"round {round_number + 1}: {side}", flush=True)
            results[side].append(one_round(side, args))
    medians = {side: {key: statistics.median(figure(r, key) for r in runs)
                      for key in FIGURES} for side, runs in results.items()}
    print(f"\nmedians over {args.rounds} rounds" + (" (ratio Spate/Kafka)" if
                                                   len(sides) == 2 else ""))
    for key in FIGURES:
        line = f"  {key:24}" + "".join(f" {side} {medians[side][key]:>12}" for side in sides)
        if len(sides) == 2 and medians["kafka"][key]:
            line += f"  ratio {medians['spate'][key] / medians['kafka'][key]:.3f}"
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": results, "medians": medians},
                                              indent=2))


if __name__ == "__main__":
    main()
