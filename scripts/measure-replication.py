#!/usr/bin/env python3
"""Replication factor 3 against 1 on one three-node cluster (issue 14's targets): closed-loop
throughput and broker CPU per record, and the publish latency of a 1,000 records/s producer.

Three `spate` processes on 127.0.0.1 (`--cores 1` each, each a broker and a controller voter)
serve both kinds of topic, so both runs meet the same brokers in the same run:
- throughput: spate-bench's closed loop (one librdkafka producer, 1 KiB records of text, lz4,
  acks=all, linger 5 ms) to a topic of 3 partitions (one led by each node) of replication
  factor 1, then to one of replication factor 3 (min.insync.replicas 2); records/s of the
  measured window and the three brokers' CPU seconds over it divided by its records. Each run
  has a topic of its own, deleted after it;
- publish latency: spate-bench's native producer (one record per Produce request, linger 0)
  at 1,000 records/s, 1 KiB lz4, acks=all, to a topic of one partition of each factor; p50,
  p99 and p99.9 of the measured window.
The two factors alternate within each round, in ABBA order over the rounds (RF1 first in
even rounds), and the ratios are of the medians over the rounds. Each run also records what
the rest of the machine used meanwhile (/proc/stat's busy time less the brokers' and the
bench's CPU): other work on a shared machine shows there, and for the open-loop runs whether
the bench kept its schedule (`kept_up`, its send lag's p99: a starved bench sends late, and
the latencies, corrected for coordinated omission, include the lateness).

    scripts/measure-replication.py [--rounds 3] [--duration 15] [--latency-duration 20]
                                   [--spate-bin target/release/spate]
                                   [--bench target/release/spate-bench] [--json FILE]

Prints a line per run, then the medians and ratios (and JSON with --json). Not a test:
minutes long and machine dependent. The targets: RF3 throughput at least 60% of RF1's, broker
CPU per record at most 3x, publish p99 at most 2x.
"""

import argparse
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

from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

import conftest  # noqa: E402
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


def start_cluster(workdir):
    ports = [free_port() for _ in range(3)]
    voters = ",".join(f"{i + 1}@127.0.0.1:{port}" for i, port in enumerate(ports))
    nodes = []
    for i, port in enumerate(ports):
        broker = Broker(Path(workdir) / f"node{i + 1}", [
            "--cores", "1", "--min-free-bytes", "0", "--node-id", str(i + 1),
            "--controller-listen", f"127.0.0.1:{port}", "--controller-quorum-voters", voters],
            i + 1)
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


def bench_run(args, nodes, topic, extra, bootstrap=None):
    """One spate-bench produce run; (its JSON, what other processes used in CPU seconds
    per second of the run, as a share of the machine)."""
    out = Path(tempfile.mkdtemp(prefix="measure-replication-")) / "run.json"
    pids = [str(n.broker.pid) for n in nodes]
    bootstrap = bootstrap or ",".join(n.broker.bootstrap for n in nodes)
    command = [args.bench, "produce", "-b", bootstrap,
               "--topic", topic, "--acks", "all", "--compression", "lz4",
               "--record-size", "1024", "--json", str(out), "--quiet", *extra]
    for pid in pids:
        command += ["--broker-pid", pid]
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


def throughput(args, nodes, factor, label):
    topic = f"throughput-rf{factor}-{label}"
    create(nodes, topic, 3, factor)
    result, others = bench_run(args, nodes, topic, [
        "--duration", f"{args.duration}s", "--warmup", "3s", "--delete-topic"])
    acked = result["produce"]["acked"]
    broker_cpu = sum(b["measured_seconds"] for b in result["cpu"]["brokers"])
    return {"records_per_sec": round(result["produce"]["records_per_sec"]),
            "mb_per_sec": round(result["produce"]["mb_per_sec"], 1),
            "broker_cpu_us_per_record": round(broker_cpu / max(acked, 1) * 1e6, 2),
            "errors": result.get("errors", {}), "others_share": round(others, 3)}


def latency(args, nodes, factor, label):
    result, others = bench_run(args, nodes, f"publish-rf{factor}", [
        "--partitions", "1", "--rate", "1000", "--linger-ms", "0", "--client", "native",
        "--duration", f"{args.latency_duration}s", "--warmup", "5s"],
        bootstrap=nodes[0].broker.bootstrap)  # the native client takes one address
    publish = result["latency"]["publish"]
    return {"p50_ms": publish["p50_us"] / 1000, "p99_ms": publish["p99_us"] / 1000,
            "p99.9_ms": publish["p99_9_us"] / 1000, "errors": result.get("errors", {}),
            "kept_up": result["open_loop"]["kept_up"],
            "send_lag_p99_ms": result["open_loop"]["send_lag"]["p99_us"] / 1000,
            "others_share": round(others, 3)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=15, help="closed-loop seconds")
    parser.add_argument("--latency-duration", type=int, default=20)
    parser.add_argument("--spate-bin", default=os.environ.get(
        "SPATE_BIN", str(ROOT / "target" / "release" / "spate")))
    parser.add_argument("--bench", default=str(ROOT / "target" / "release" / "spate-bench"))
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    conftest.SPATE_BIN = args.spate_bin
    workdir = tempfile.mkdtemp(prefix="spate-replication-")
    print(f"replication factor 3 against 1: {args.rounds} rounds, logs in {workdir}",
          flush=True)
    nodes = start_cluster(workdir)
    runs = {"throughput": {1: [], 3: []}, "latency": {1: [], 3: []}}
    try:
        for factor in (1, 3):
            create(nodes, f"publish-rf{factor}", 1, factor)
        for number in range(args.rounds):
            order = (1, 3) if number % 2 == 0 else (3, 1)
            for factor in order:
                found = throughput(args, nodes, factor, number)
                runs["throughput"][factor].append(found)
                print(f"round {number}: RF{factor} closed loop {found}", flush=True)
            for factor in order:
                found = latency(args, nodes, factor, number)
                runs["latency"][factor].append(found)
                print(f"round {number}: RF{factor} publish at 1,000/s {found}", flush=True)
    finally:
        for node in nodes:
            node.broker.kill9(wait_for_port=False)

    def median(kind, factor, key):
        return statistics.median(run[key] for run in runs[kind][factor])

    summary = {}
    for kind, keys in (("throughput", ("records_per_sec", "broker_cpu_us_per_record")),
                       ("latency", ("p50_ms", "p99_ms", "p99.9_ms"))):
        for key in keys:
            rf1, rf3 = median(kind, 1, key), median(kind, 3, key)
            summary[key] = {"rf1": rf1, "rf3": rf3, "rf3/rf1": round(rf3 / rf1, 2)}
    others = [run["others_share"] for kind in runs.values() for factor in kind.values()
              for run in factor]
    summary["others_share"] = {"median": statistics.median(others), "max": max(others)}
    for key, value in summary.items():
        print(f"{key}: {value}")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs, "summary": summary}, indent=1))
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
