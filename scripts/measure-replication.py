#!/usr/bin/env python3
"""Replication factor 3 against 1 on one three-node cluster (issue 14's targets): closed-loop
throughput and broker CPU per record, and the publish latency of a 1,000 records/s producer;
with --against-kafka, Spate's three nodes at replication factor 3 against Apache Kafka's.

Three `spate` processes on 127.0.0.1 (`--cores 1` each, each a broker and a controller voter)
serve both kinds of topic, so both runs meet the same brokers in the same run:
- throughput: spate-bench's closed loop (one librdkafka producer, 1 KiB records of text, lz4,
  acks=all, linger 5 ms) to a topic of 3 partitions (one led by each node) of replication
  factor 1, then to one of replication factor 3 (min.insync.replicas 2); records/s of the
  measured window and the three brokers' CPU seconds over it divided by its records. Each run
  has a topic of its own, deleted after it (`--duration 0`: none);
- publish latency: 1,000 records/s, 1 KiB lz4, acks=all, linger 0, to a topic of one
  partition of each factor, from each of `--publishers`: `native`, spate-bench's native
  producer (one record per Produce request, pipelined on one connection), and `librdkafka`
  with at most 5 requests in flight (the Java producer's default: records that arrive while
  5 are in flight share the next request); p50, p99 and p99.9 of the measured window.
The two factors alternate within each round, in ABBA order over the rounds (RF1 first in
even rounds), and the ratios are of the medians over the rounds.

--against-kafka: one cluster at a time (a two-core machine cannot give six brokers CPUs of
their own), the sides alternating in ABBA order (Spate first in even rounds), each on fresh
data dirs, started for the round and killed after it (scripts/cluster_procs.py starts both):
three Spate nodes (`--cores 1`, default durability `write`: acknowledged once the O_DIRECT
writes landed), or three Apache Kafka 4.3.1 nodes in KRaft combined mode (a JVM each, G1,
`--kafka-heap` fixed heap, Kafka's shipped thread counts, no fsync: acknowledged from the
page cache). On each: a topic of 1 partition, replication factor 3, min.insync.replicas 2,
and the publish latency runs above (`--latency-warmup` first: the JVM's JIT warms up), then
the closed loop to a topic of 3 partitions of factor 3. Kafka reads a connection's next
request only once it answered the last, so the native producer (1,000 acks=all requests a
second on one connection) gets at most one request per replication round trip through
Kafka and falls behind its schedule (`kept_up` false, latencies in seconds); the
librdkafka figures are the comparable ones.

Spate's nodes: `--spate-cpus spread` (the default) starts node i on CPU (i-1) mod the CPU
count (node 1 and 3 on CPU 0, node 2 on CPU 1 here); `shared` lets each use every CPU, and
then each pins its one shard to the first one, CPU 0, all three together.

Each run also records what the rest of the machine used meanwhile (/proc/stat's busy time
less the brokers' and the bench's CPU, `others_share` of the machine), the load average at
its end, and the share of its time some task waited for a CPU or for I/O (`cpu_pressure`,
`io_pressure`, from /proc/pressure): other work on a shared machine shows there; and for the
open-loop runs whether the bench kept its schedule (`kept_up`, its send lag's p99: a starved
bench sends late, and the latencies, corrected for coordinated omission, include the
lateness).

    scripts/measure-replication.py [--rounds 3] [--duration 15] [--latency-duration 20]
                                   [--latency-warmup 5] [--publishers native,librdkafka]
                                   [--spate-cpus spread|shared]
                                   [--against-kafka [--kafka-heap 1g]]
                                   [--spate-bin target/release/spate]
                                   [--bench target/release/spate-bench] [--json FILE]

Measured here (2026-12-06, two cores shared with other builds, load 5-13 throughout; details
in docs/ARCHITECTURE.md, Replication): --against-kafka --rounds 4 --latency-warmup 10,
librdkafka publisher, Spate/Kafka medians: p50 0.95/0.52 ms, p99 5.2/12.1 ms (0.43), p99.9
7.0/37.1 ms (shared); p99 9.3/16.3 ms (0.57, spread); a later shared run p99 65.9/11.8 ms
(5.6: two Spate runs met 100-200 ms stall episodes, found later to be the host stopping a
virtual CPU: each run now reports its host steal, `steal_*`, and the percentiles without
the records a steal episode spanned, `steal_free_*`). Closed loop 1.3-1.6x
Kafka's records/s at 0.19-0.24x its CPU per record. Kafka never kept the native producer's
schedule. RF1/RF3 (--duration 0): p50 0.21/1.57 ms native, 0.29/1.01 ms librdkafka.

Prints a line per run, then the medians and ratios (and JSON with --json). Not a test:
minutes long and machine dependent. The targets: RF3 throughput at least 60% of RF1's, broker
CPU per record at most 3x, publish p99 at most 2x RF1's and at most 1/5 of Kafka's RF3.
"""

import argparse
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "clients"))
sys.path.insert(0, str(ROOT / "scripts"))

from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

import conftest  # noqa: E402
from cluster_procs import (KAFKA_VERSION, KafkaCluster, SpateCluster, fetch_kafka,  # noqa: E402
                           node_metadata, spread_cpu)
from conftest import Broker, free_port  # noqa: E402
from test_cluster import Node, agreed_leader, metadata_v7  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
CPUS = os.cpu_count()


def machine_busy_seconds():
    """CPU seconds the whole machine has been busy (all but idle and iowait)."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / TICKS


def process_seconds(pid):
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def start_cluster(workdir, spread):
    ports = [free_port() for _ in range(3)]
    voters = ",".join(f"{i + 1}@127.0.0.1:{port}" for i, port in enumerate(ports))
    nodes = []
    for i, port in enumerate(ports):
        broker = Broker(Path(workdir) / f"node{i + 1}", [
            "--cores", "1", "--min-free-bytes", "0", "--node-id", str(i + 1),
            "--controller-listen", f"127.0.0.1:{port}", "--controller-quorum-voters", voters],
            i + 1)
        if spread:
            broker.preexec = functools.partial(os.sched_setaffinity, 0, {spread_cpu(i)})
        nodes.append(Node(i + 1, broker, port))
    for node in nodes:
        node.broker.start()
    wait("a controller all three agree on", lambda: agreed_leader(nodes))
    return nodes


def wait(what, check, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = check()
            if found:
                return found
        except (OSError, AssertionError):
            pass
        time.sleep(0.1)
    raise SystemExit(f"{what} not within {timeout} s")


def create(nodes, name, partitions, factor):
    """A topic, then waits until every node lists it with every replica in sync."""
    bootstrap = ",".join(n.broker.bootstrap for n in nodes)
    config = {"min.insync.replicas": "2"} if factor == 3 else {}
    admin = AdminClient({"bootstrap.servers": bootstrap})  # alive until the answer
    futures = admin.create_topics([NewTopic(name, partitions, factor, config=config)],
                                  operation_timeout=30)
    futures[name].result(timeout=40)

    def ready():
        answers = [metadata_v7(n.broker.port, [name.encode()])[1].get(name) for n in nodes]
        first = answers[0]
        return first and len(first) == partitions and all(a == first for a in answers) and all(
            s[0] == 0 and len(s[4]) == factor for s in first.values())

    wait(f"topic {name} in sync everywhere", ready)


def bench_run(args, pids, bootstrap, topic, extra):
    """One spate-bench produce run against the brokers `pids`; (its JSON, what other
    processes used in CPU seconds per second of the run, as a share of the machine)."""
    out = Path(tempfile.mkdtemp(prefix="measure-replication-")) / "run.json"
    command = [args.bench, "produce", "-b", bootstrap,
               "--topic", topic, "--acks", "all", "--compression", "lz4",
               "--record-size", "1024", "--json", str(out), "--quiet", *extra]
    for pid in pids:
        command += ["--broker-pid", str(pid)]
    ours_before = sum(process_seconds(pid) for pid in pids)
    busy_before, began = machine_busy_seconds(), time.monotonic()
    done = subprocess.run(command, stdout=subprocess.DEVNULL, timeout=600)
    if done.returncode not in (0, 3):  # 3: finished, with errors or behind its schedule
        raise SystemExit(f"spate-bench exited with {done.returncode}: {command}")
    elapsed = time.monotonic() - began
    busy = machine_busy_seconds() - busy_before
    result = json.loads(out.read_text())
    shutil.rmtree(out.parent, ignore_errors=True)
    ours = sum(process_seconds(pid) for pid in pids) - ours_before
    ours += result["cpu"]["bench_seconds"]
    return result, max(0.0, busy - ours) / elapsed / CPUS


def closed_loop(args, pids, bootstrap, topic):
    result, others = bench_run(args, pids, bootstrap, topic, [
        "--duration", f"{args.duration}s", "--warmup", "3s", "--delete-topic"])
    acked = result["produce"]["acked"]
    broker_cpu = sum(b["measured_seconds"] for b in result["cpu"]["brokers"])
    return {"records_per_sec": round(result["produce"]["records_per_sec"]),
            "mb_per_sec": round(result["produce"]["mb_per_sec"], 1),
            "broker_cpu_us_per_record": round(broker_cpu / max(acked, 1) * 1e6, 2),
            "errors": result.get("errors", {}), "others_share": round(others, 3),
            "load": load()}


# The publishing clients of --against-kafka, each at 1,000 records/s, linger 0: the bench's
# native producer (one record per Produce request, pipelined on one connection), and
# librdkafka with at most 5 requests in flight (the Java producer's default), which puts
# the records that arrive meanwhile into the next request's batch.
PUBLISHERS = {
    "native": ["--client", "native"],
    "librdkafka": ["--client", "librdkafka", "-X", "max.in.flight.requests.per.connection=5"],
}


def publish(args, pids, bootstrap, topic, client=("--client", "native")):
    pressure_before = pressure_seconds()
    began = time.monotonic()
    result, others = bench_run(args, pids, bootstrap, topic, [
        "--partitions", "1", "--rate", "1000", "--linger-ms", "0", *client,
        "--duration", f"{args.latency_duration}s", "--warmup", f"{args.latency_warmup}s"])
    elapsed = time.monotonic() - began
    found = result["latency"]["publish"]
    lag = result["open_loop"]["send_lag"]
    # Host steal (spate-bench's host_steal): the same percentiles without the records an
    # episode of steal spanned, and the episodes.
    steal = result.get("host_steal") or {}
    steal_free = steal.get("steal_free", {}).get("publish") or {"count": 0}

    def percentiles(summary, prefix=""):
        # None: no measured record was acknowledged (the client fell that far behind).
        measured = summary["count"] > 0
        return {prefix + key: summary[field] / 1000 if measured else None
                for key, field in (("p50_ms", "p50_us"), ("p99_ms", "p99_us"),
                                   ("p99.9_ms", "p99_9_us"))}

    return {**percentiles(found), **percentiles(steal_free, "steal_free_"),
            "steal_episodes": steal.get("episodes"), "steal_ms": steal.get("stolen_ms"),
            "steal_touched": steal.get("touched", {}).get("publish"),
            "count": found["count"], "sent_per_sec": result["open_loop"]["achieved_rate"],
            "errors": result.get("errors", {}), "kept_up": result["open_loop"]["kept_up"],
            "send_lag_p99_ms": lag["p99_us"] / 1000 if lag else None,
            "others_share": round(others, 3), "load": load(),
            **{f"{kind}_pressure": round((after - before) / elapsed, 3) for kind, before, after
               in zip(("cpu", "io"), pressure_before, pressure_seconds())}}


# Publish latency percentiles, then the same without the records host steal touched.
LATENCY_KEYS = ("p50_ms", "p99_ms", "p99.9_ms",
                "steal_free_p50_ms", "steal_free_p99_ms", "steal_free_p99.9_ms")


def pressure_seconds():
    """(cpu, io): the seconds some task waited for a CPU, for I/O (/proc/pressure, PSI)."""
    found = []
    for kind in ("cpu", "io"):
        try:
            with open(f"/proc/pressure/{kind}") as pressure:
                line = pressure.readline()
            found.append(int(line.rsplit("total=", 1)[1]) / 1e6)
        except (OSError, IndexError, ValueError):
            found.append(0.0)
    return found


def load():
    return round(os.getloadavg()[0], 2)


def throughput(args, nodes, factor, label):
    topic = f"throughput-rf{factor}-{label}"
    create(nodes, topic, 3, factor)
    return closed_loop(args, [n.broker.pid for n in nodes],
                       ",".join(n.broker.bootstrap for n in nodes), topic)


def latency(args, nodes, factor, client):
    # The native client takes one address, and finds the leader through it.
    return publish(args, [n.broker.pid for n in nodes], nodes[0].broker.bootstrap,
                   f"publish-rf{factor}", PUBLISHERS[client])


def create_rf3(cluster, name, partitions):
    """A topic of replication factor 3 (min.insync.replicas 2) on a cluster_procs cluster,
    then waits until every node lists it with a leader and all three replicas in sync."""
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    futures = admin.create_topics([NewTopic(name, partitions, 3, config={
        "min.insync.replicas": "2"})], operation_timeout=30)
    futures[name].result(timeout=40)

    def ready():
        answers = []
        for node in cluster.nodes:
            found = node_metadata(node.port)
            if found is None or name not in found[2]:
                return False
            answers.append(found[2][name])
        first = answers[0]
        return (len(first) == partitions and all(a == first for a in answers)
                and all(p[0] == 0 and p[1] > 0 and len(p[3]) == 3 for p in first))

    wait(f"{cluster.name}: topic {name} in sync everywhere", ready)


def against_kafka(args):
    """Spate's three nodes against Kafka's, one cluster at a time, alternating ABBA."""
    fetch_kafka()
    print(f"Spate RF3 against Kafka {KAFKA_VERSION} RF3: {args.rounds} rounds, {CPUS} CPUs, "
          f"Kafka heap {args.kafka_heap} a node; load {load()}", flush=True)
    clients = args.publishers.split(",")
    runs = {"latency": {client: {"spate": [], "kafka": []} for client in clients},
            "throughput": {"spate": [], "kafka": []}}
    for number in range(args.rounds):
        order = ("spate", "kafka") if number % 2 == 0 else ("kafka", "spate")
        for side in order:
            cluster = (SpateCluster(args.spate_bin, args.spate_cpus == "spread")
                       if side == "spate"
                       else KafkaCluster(args.kafka_heap))
            try:
                cluster.start_all()
                cluster.wait_formed(limit=120)
                pids = [node.pid for node in cluster.nodes]
                create_rf3(cluster, "publish", 1)
                for client in args.publishers.split(","):
                    found = publish(args, pids, f"127.0.0.1:{cluster.nodes[0].port}",
                                    "publish", PUBLISHERS[client])
                    runs["latency"][client][side].append(found)
                    print(f"round {number}: {side} RF3 publish at 1,000/s, {client} {found}",
                          flush=True)
                if args.duration > 0:
                    create_rf3(cluster, "closed-loop", 3)
                    found = closed_loop(args, pids, cluster.bootstrap, "closed-loop")
                    runs["throughput"][side].append(found)
                    print(f"round {number}: {side} RF3 closed loop {found}", flush=True)
            finally:
                cluster.cleanup()
    summary = {}

    def compare(name, sides, keys):
        def median(runs, key):
            values = [run[key] for run in runs if run[key] is not None]
            return statistics.median(values) if values else None

        for key in keys:
            spate, kafka = median(sides["spate"], key), median(sides["kafka"], key)
            rounds = [round(s[key] / k[key], 3) if s[key] is not None and k[key] else None
                      for s, k in zip(sides["spate"], sides["kafka"])]
            summary[f"{name} {key}"] = {"spate": spate, "kafka": kafka,
                                        "spate/kafka": (round(spate / kafka, 3)
                                                        if spate is not None and kafka else None),
                                        "rounds": rounds}

    for client in clients:
        compare(f"publish {client}", runs["latency"][client], LATENCY_KEYS)
        kept = {side: sum(r["kept_up"] for r in runs["latency"][client][side])
                for side in ("spate", "kafka")}
        summary[f"publish {client} kept_up (runs)"] = kept
    if runs["throughput"]["spate"]:
        compare("closed loop", runs["throughput"],
                ("records_per_sec", "broker_cpu_us_per_record"))
    everything = [run for side in runs["throughput"].values() for run in side] + [
        run for client in runs["latency"].values() for side in client.values() for run in side]
    for key in ("others_share", "load", "cpu_pressure", "io_pressure"):
        values = [r[key] for r in everything if key in r]
        summary[key] = {"median": statistics.median(values), "min": min(values),
                        "max": max(values)}
    print(f"medians over {args.rounds} rounds (Spate/Kafka below 1: Spate lower):")
    for key, value in summary.items():
        print(f"{key}: {value}")
    return {"runs": runs, "summary": summary}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=15, help="closed-loop seconds")
    parser.add_argument("--latency-duration", type=int, default=20)
    parser.add_argument("--latency-warmup", type=int, default=5)
    parser.add_argument("--spate-bin", default=os.environ.get(
        "SPATE_BIN", str(ROOT / "target" / "release" / "spate")))
    parser.add_argument("--bench", default=str(ROOT / "target" / "release" / "spate-bench"))
    parser.add_argument("--against-kafka", action="store_true",
                        help="Spate RF3 against Apache Kafka RF3, three nodes each")
    parser.add_argument("--kafka-heap", default="1g")
    parser.add_argument("--publishers", default="native,librdkafka",
                        help="publishing clients, of " + ",".join(PUBLISHERS))
    parser.add_argument("--spate-cpus", choices=["spread", "shared"], default="spread",
                        help="spread: each Spate node on a CPU of its own, in turn; shared: "
                        "each may use every CPU (and pins its one shard to CPU 0)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    conftest.SPATE_BIN = args.spate_bin
    if args.against_kafka:
        found = against_kafka(args)
        if args.json:
            Path(args.json).write_text(json.dumps(found, indent=1))
        return 0
    workdir = tempfile.mkdtemp(prefix="spate-replication-")
    print(f"replication factor 3 against 1: {args.rounds} rounds, logs in {workdir}",
          flush=True)
    nodes = start_cluster(workdir, args.spate_cpus == "spread")
    clients = args.publishers.split(",")
    runs = {"throughput": {1: [], 3: []},
            **{f"latency {client}": {1: [], 3: []} for client in clients}}
    try:
        for factor in (1, 3):
            create(nodes, f"publish-rf{factor}", 1, factor)
        for number in range(args.rounds):
            order = (1, 3) if number % 2 == 0 else (3, 1)
            for factor in order if args.duration > 0 else ():
                found = throughput(args, nodes, factor, number)
                runs["throughput"][factor].append(found)
                print(f"round {number}: RF{factor} closed loop {found}", flush=True)
            for client in clients:
                for factor in order:
                    found = latency(args, nodes, factor, client)
                    runs[f"latency {client}"][factor].append(found)
                    print(f"round {number}: RF{factor} publish at 1,000/s, {client} {found}",
                          flush=True)
    finally:
        for node in nodes:
            node.broker.kill9(wait_for_port=False)

    summary = {}
    for kind, found in runs.items():
        if not found[1]:
            continue
        keys = (("records_per_sec", "broker_cpu_us_per_record") if kind == "throughput"
                else LATENCY_KEYS)
        for key in keys:
            rf1, rf3 = (statistics.median([run[key] for run in found[f] if run[key] is not None]
                                          or [0]) for f in (1, 3))
            summary[f"{kind} {key}"] = {"rf1": rf1, "rf3": rf3,
                                        "rf3/rf1": round(rf3 / rf1, 2) if rf1 else None}
    everything = [run for kind in runs.values() for factor in kind.values() for run in factor]
    for key in ("others_share", "load", "cpu_pressure", "io_pressure"):
        values = [r[key] for r in everything if key in r]
        summary[key] = {"median": statistics.median(values), "min": min(values),
                        "max": max(values)}
    for key, value in summary.items():
        print(f"{key}: {value}")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs, "summary": summary}, indent=1))
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
