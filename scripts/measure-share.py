#!/usr/bin/env python3
"""Share-group throughput, Spate beside Apache Kafka (issue 15): records a second that four
consumers of one share group take and acknowledge one by one.

For each broker in turn (the other one not running, the broker pinned to BROKER_CPU, the
consumers' JVM and the fill to CLIENT_CPU), per round:
1. a fresh topic of --partitions partitions gets --records records of --record-size bytes
   of text (spate-bench produce, lz4, acks=all);
2. `tests/clients/java/ShareThroughput.java` (Java kafka-clients 4.x `KafkaShareConsumer`,
   explicit acknowledgement mode) sets a fresh share group's `share.auto.offset.reset` to
   earliest and runs --consumers members, each on its own thread, that ACCEPT every record
   with its own acknowledge call; acknowledgements travel with the member's next ShareFetch
   (the client's way), and each member's last ones with a commitSync once every record was
   delivered. The time runs from the first record delivered to the last commitSync's return.
The broker's CPU time over the same span (from /proc, sampled at the program's first-record
line and at its end) gives CPU per record. Brokers alternate in ABBA order over the rounds
(Spate first in even rounds), each started fresh for its round; the table gives each run
and the medians, and Spate/Kafka ratios of the medians.

Both brokers run their defaults otherwise: Spate `--cores 1` (its default durability,
`write`), Kafka 4.3.1 from scripts/kafka-reference.sh (KRaft combined node, 1 GiB heap,
Kafka's thread counts, share coordinator state topic of replication factor 1, no fsync).
Kafka's share partition keeps up to 2,000 records in flight (`group.share.partition.max.
record.locks`), Spate the same by default; both hand a ShareFetch at most the client's
`max.poll.records` (500).

    scripts/measure-share.py [--rounds 4] [--records 600000] [--record-size 1024]
                             [--partitions 1] [--consumers 4] [--brokers spate,kafka]
                             [--json FILE]

`--brokers` also takes `spate-cluster`: three Spate nodes (`scripts/cluster_procs.py`, each
`--cores 1`, all on BROKER_CPU), the topic of replication factor 3,
the members bootstrapped from all three; the CPU is the three nodes'. The share partition's
leader and the group's coordinator are then usually different nodes, so every ShareFetch
and acknowledgement also crosses to the coordinator (`api::share_call`).

Environment: SPATE_BIN (default target/release/spate), SPATE_ARGS (more options for it),
SPATE_BENCH_BIN (default target/release/spate-bench), BROKER_CPU (default the last CPU),
CLIENT_CPU (default 0), DATA_PARENT (where Spate's data dir goes; default the repository:
/tmp may be tmpfs, which refuses O_DIRECT). Needs Java 17 and Maven (the client's jars come
from Maven Central). Not part of scripts/test.sh.
"""

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "clients"))
sys.path.insert(0, str(REPO / "scripts"))
from java_build import CLIENTS_POM, JAVA_DIR, resolve_classpath  # noqa: E402
from cluster_procs import SpateCluster  # noqa: E402

SPATE_BIN = os.environ.get("SPATE_BIN", str(REPO / "target/release/spate"))
BENCH_BIN = os.environ.get("SPATE_BENCH_BIN", str(REPO / "target/release/spate-bench"))
BROKER_CPU = os.environ.get("BROKER_CPU", str(os.cpu_count() - 1))
CLIENT_CPU = os.environ.get("CLIENT_CPU", "0")
DATA_PARENT = os.environ.get("DATA_PARENT", str(REPO))
KAFKA_SCRIPT = REPO / "scripts" / "kafka-reference.sh"
SPATE_PORT = 21950
KAFKA_PORT = 19092
HZ = os.sysconf("SC_CLK_TCK")


def wait_port(port, seconds=90):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    sys.exit(f"measure-share: nothing listens on port {port} after {seconds} s")


def cpu_seconds(pid):
    """User and system CPU seconds of the process and its threads so far."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ


def compile_program(workdir):
    classpath, why = resolve_classpath(CLIENTS_POM, 600)
    if classpath is None:
        sys.exit(f"measure-share: {why}")
    classes = workdir / "classes"
    classes.mkdir(exist_ok=True)
    subprocess.run(["javac", "-d", str(classes), "-cp", classpath,
                    str(JAVA_DIR / "ShareThroughput.java")], check=True, timeout=300)
    return f"{classes}{os.pathsep}{classpath}"


def fill(bootstrap, topic, args, replicas=1):
    done = subprocess.run(
        ["taskset", "-c", CLIENT_CPU, BENCH_BIN, "produce", "-b", bootstrap, "-t", topic,
         "--partitions", str(args.partitions), "--replication-factor", str(replicas),
         "--records", str(args.records),
         "--record-size", str(args.record_size), "--payload", "text", "--compression", "lz4",
         "--acks", "all", "--linger-ms", "5", "--producers", "1", "--warmup", "0s"],
        capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        sys.exit(f"measure-share: the fill failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


def consume(bootstrap, group, topic, args, classpath, broker_pids):
    """Runs ShareThroughput; returns its done line with the brokers' CPU seconds added."""
    proc = subprocess.Popen(
        ["taskset", "-c", CLIENT_CPU, "java", "-Xmx1g", "-cp", classpath, "ShareThroughput",
         bootstrap, group, topic, str(args.consumers), str(args.records),
         str(args.timeout)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cpu_first = None
    done = None
    for line in proc.stdout:
        event = json.loads(line)
        if event["event"] == "first":
            cpu_first = sum(cpu_seconds(pid) for pid in broker_pids)
        elif event["event"] == "done":
            cpu_done = sum(cpu_seconds(pid) for pid in broker_pids)
            done = event
    stderr = proc.stderr.read()
    code = proc.wait(timeout=args.timeout + 120)
    if code != 0 or done is None or cpu_first is None:
        sys.exit(f"measure-share: ShareThroughput failed ({code}): {done}\n{stderr[-3000:]}")
    done["broker_cpu_s"] = cpu_done - cpu_first
    return done


def run_spate(args, round_no, classpath):
    data = Path(tempfile.mkdtemp(prefix="measure-share-", dir=DATA_PARENT))
    log = open(data / "spate.log", "w")
    proc = subprocess.Popen(
        ["taskset", "-c", BROKER_CPU, SPATE_BIN, "--cores", "1", "--listen",
         f"127.0.0.1:{SPATE_PORT}", "--data-dir", str(data / "data"),
         *os.environ.get("SPATE_ARGS", "").split()], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_port(SPATE_PORT)
        bootstrap = f"127.0.0.1:{SPATE_PORT}"
        topic = f"share-{round_no}"
        fill(bootstrap, topic, args)
        return consume(bootstrap, f"share-group-{round_no}", topic, args, classpath, [proc.pid])
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        shutil.rmtree(data, ignore_errors=True)


def run_spate_cluster(args, round_no, classpath):
    cluster = SpateCluster(SPATE_BIN)
    try:
        cluster.start_all()
        cluster.wait_formed()
        pids = [node.pid for node in cluster.nodes]
        for pid in pids:
            subprocess.run(["taskset", "-a", "-p", "-c", BROKER_CPU, str(pid)], check=True,
                           stdout=subprocess.DEVNULL)
        topic = f"share-{round_no}"
        fill(cluster.bootstrap, topic, args, replicas=3)
        return consume(cluster.bootstrap, f"share-group-{round_no}", topic, args, classpath,
                       pids)
    finally:
        cluster.term_all()
        cluster.cleanup()


def run_kafka(args, round_no, classpath):
    env = dict(os.environ, KAFKA_REF_PORT=str(KAFKA_PORT))
    subprocess.run([str(KAFKA_SCRIPT), "start"], check=True, env=env, stdout=subprocess.DEVNULL)
    try:
        status = subprocess.run([str(KAFKA_SCRIPT), "status"], env=env, capture_output=True,
                                text=True).stdout
        pid = int(re.search(r"pid=(\d+)", status).group(1))
        subprocess.run(["taskset", "-a", "-p", "-c", BROKER_CPU, str(pid)], check=True,
                       stdout=subprocess.DEVNULL)
        bootstrap = f"127.0.0.1:{KAFKA_PORT}"
        topic = f"share-{round_no}"
        fill(bootstrap, topic, args)
        return consume(bootstrap, f"share-group-{round_no}", topic, args, classpath, [pid])
    finally:
        subprocess.run([str(KAFKA_SCRIPT), "stop"], env=env, stdout=subprocess.DEVNULL)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--records", type=int, default=600_000)
    parser.add_argument("--record-size", type=int, default=1024)
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--consumers", type=int, default=4)
    parser.add_argument("--brokers", default="spate,kafka")
    parser.add_argument("--timeout", type=int, default=600,
                        help="seconds a run may take before it counts as failed")
    parser.add_argument("--json", help="also write the runs here")
    args = parser.parse_args()
    brokers = args.brokers.split(",")
    runs = []
    with tempfile.TemporaryDirectory(prefix="measure-share-") as tmp:
        classpath = compile_program(Path(tmp))
        for round_no in range(args.rounds):
            order = brokers if round_no % 2 == 0 else list(reversed(brokers))
            for broker in order:
                run = {"spate": run_spate, "spate-cluster": run_spate_cluster,
                       "kafka": run_kafka}[broker]
                result = run(args, round_no, classpath)
                result["broker"] = broker
                result["round"] = round_no
                result["load"] = os.getloadavg()[0]
                runs.append(result)
                rate = result["records"] / result["seconds"]
                print(f"measure-share: round {round_no} {broker}: {rate:,.0f} records/s, "
                      f"{result['broker_cpu_s'] * 1e6 / result['records']:.1f} us CPU/record, "
                      f"deliveries {result['deliveries']}, members {result['per_member']}, "
                      f"ack errors {result['ack_errors']}, load {result['load']:.1f}",
                      file=sys.stderr, flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=1))
    print("broker          round  records/s  broker CPU us/record  redelivered  per member  "
          "ack errors  load")
    for r in runs:
        print(f"{r['broker']:14}  {r['round']:5}  {r['records'] / r['seconds']:9,.0f}  "
              f"{r['broker_cpu_s'] * 1e6 / r['records']:20.1f}  "
              f"{r['deliveries'] - r['records']:11}  {r['per_member']}  {r['ack_errors']:10}  "
              f"{r['load']:4.1f}")
    medians = {}
    for broker in brokers:
        mine = [r for r in runs if r["broker"] == broker]
        if mine:
            medians[broker] = (
                statistics.median(r["records"] / r["seconds"] for r in mine),
                statistics.median(r["broker_cpu_s"] * 1e6 / r["records"] for r in mine))
            print(f"median {broker}: {medians[broker][0]:,.0f} records/s, "
                  f"{medians[broker][1]:.1f} us CPU/record")
    if "spate" in medians and "kafka" in medians:
        print(f"Spate/Kafka: throughput {medians['spate'][0] / medians['kafka'][0]:.2f}, "
              f"CPU per record {medians['spate'][1] / medians['kafka'][1]:.2f}")


if __name__ == "__main__":
    main()
