#!/usr/bin/env python3
"""Coordinator latency, one node beside a three-node cluster: how long the group and
transaction coordinators take to answer what clients ask of them.

A clustered coordinator's every write (an offset commit, a group's new generation, a
transaction's state) is a record of a replicated internal partition (`__consumer_offsets`,
`__transaction_state`) that waits for its followers, and its answers may need other nodes
(transaction markers to the leaders of the partitions written). A single node writes its own
log and answers. This script puts the two side by side, so that a clustered path that waits
for something it should not (a timer, a follower's fetch wait: OffsetCommit took 500 ms on
three nodes until 1fec594) shows as a ratio far from the replication round trip's.

Per broker setup (fresh data dirs; the single node and the three nodes in turn, each
`--cores 1 --group-initial-rebalance-delay-ms 0`; the topic has one partition, factor 3 on
the cluster), librdkafka (confluent-kafka) clients, each operation repeated and the first
fifth left out as warm-up:
- `commit`: a synchronous OffsetCommit of one partition (`Consumer.commit`);
- `join classic`, `join consumer`: a new member of a new group subscribes and polls until it
  is assigned the partition (classic protocol: FindCoordinator, JoinGroup twice, SyncGroup;
  KIP-848: ConsumerGroupHeartbeat until the assignment), then leaves;
- `transaction`: begin, produce one record, commit (AddPartitionsToTxn, Produce, EndTxn and
  the markers), timed whole.
librdkafka's own timers decide the joins' figures more than the coordinator does: an
assignment comes after about 5 ms or after about 55 ms, by the client's timing, on either
side. A new transactional producer's init_transactions is left out for the same reason (53-55
ms on both, 500 ms when the client drops its bootstrap connection before it found the
coordinator and waits for its query timer; the InitProducerId itself took 3 ms). What the
script catches is a figure hundreds of milliseconds off.

    scripts/measure-coordinator.py [--commits 200] [--transactions 100] [--joins 10]
                                   [--modes single,cluster] [--json FILE]

Environment: SPATE_BIN (default target/release/spate). Data dirs go under the temporary
directory, as `scripts/cluster_procs.py` places the cluster's (TMPDIR: O_DIRECT needs a disk,
not tmpfs). The nodes may use every
CPU (a `--cores 1` node pins its shard to the first CPU it may use, so the three share it, as
`scripts/measure-replication.py --spate-cpus shared` does). Not part of scripts/test.sh.
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
from cluster_procs import SpateCluster, free_port  # noqa: E402

SPATE_BIN = os.environ.get("SPATE_BIN", str(REPO / "target/release/spate"))
NODE_ARGS = ["--group-initial-rebalance-delay-ms", "0"]
TOPIC = "coordinated"
# A bound on each client call, so that a broker that never answers ends the run.
CALL_LIMIT_S = 30


class Cluster(SpateCluster):
    def node_args(self, node):
        return list(NODE_ARGS)


class Single:
    """One unclustered node."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="measure-coordinator-"))
        self.port = free_port()
        self.proc = None

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def start(self):
        self.proc = subprocess.Popen(
            [SPATE_BIN, "--listen", self.bootstrap, "--data-dir", str(self.dir / "data"),
             "--cores", "1", "--min-free-bytes", "0", *NODE_ARGS],
            stdout=open(self.dir / "stdout.log", "wb"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.1)
        raise SystemExit(f"measure-coordinator: the node did not start; see {self.dir}")

    def stop(self):
        if self.proc:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def create_topic(bootstrap, replicas):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(TOPIC, 1, replicas)])[TOPIC].result(timeout=CALL_LIMIT_S)
    # Metadata of the new topic reaches every node before the clients ask.
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(TOPIC, b"first")
    if producer.flush(CALL_LIMIT_S) != 0:
        raise SystemExit("measure-coordinator: the topic's first record was not acknowledged")


def timed(fn):
    began = time.perf_counter()
    fn()
    return (time.perf_counter() - began) * 1000


def commits(bootstrap, count):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"commit-{uuid.uuid4()}",
                         "enable.auto.commit": False})
    try:
        return [timed(lambda i=i: consumer.commit(offsets=[TopicPartition(TOPIC, 0, i)],
                                                  asynchronous=False))
                for i in range(1, count + 1)]
    finally:
        consumer.close()


def join(bootstrap, protocol):
    assigned = []
    config = {"bootstrap.servers": bootstrap, "group.id": f"join-{uuid.uuid4()}",
              "enable.auto.commit": False}
    if protocol == "consumer":
        config["group.protocol"] = "consumer"
    consumer = Consumer(config)
    try:
        began = time.perf_counter()
        consumer.subscribe([TOPIC], on_assign=lambda _c, parts: assigned.extend(parts))
        while not assigned:
            consumer.poll(0.005)
            if time.perf_counter() - began > CALL_LIMIT_S:
                raise SystemExit(f"measure-coordinator: no {protocol} assignment in "
                                 f"{CALL_LIMIT_S} s")
        return (time.perf_counter() - began) * 1000
    finally:
        consumer.close()


def transactions(bootstrap, count):
    producer = Producer({"bootstrap.servers": bootstrap,
                         "transactional.id": f"txn-{uuid.uuid4()}", "linger.ms": 0})
    producer.init_transactions(CALL_LIMIT_S)

    def one():
        producer.begin_transaction()
        producer.produce(TOPIC, b"x" * 100)
        producer.commit_transaction(CALL_LIMIT_S)

    return [timed(one) for _ in range(count)]


def measure(bootstrap, args):
    warm = lambda xs: xs[len(xs) // 5:]  # noqa: E731
    return {
        "commit": warm(commits(bootstrap, args.commits)),
        "join classic": warm([join(bootstrap, "classic") for _ in range(args.joins)]),
        "join consumer": warm([join(bootstrap, "consumer") for _ in range(args.joins)]),
        "transaction": warm(transactions(bootstrap, args.transactions)),
    }


def run(mode, args):
    if mode == "single":
        node = Single()
        try:
            node.start()
            create_topic(node.bootstrap, 1)
            return measure(node.bootstrap, args)
        finally:
            node.stop()
    cluster = Cluster(SPATE_BIN)
    try:
        cluster.start_all()
        cluster.wait_formed()
        create_topic(cluster.bootstrap, 3)
        return measure(cluster.bootstrap, args)
    finally:
        cluster.term_all()
        cluster.cleanup()


def summary(xs):
    xs = sorted(xs)
    return {"p50": statistics.median(xs), "p90": xs[int(0.9 * (len(xs) - 1))], "max": xs[-1],
            "n": len(xs)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--commits", type=int, default=200)
    parser.add_argument("--transactions", type=int, default=100)
    parser.add_argument("--joins", type=int, default=10)
    parser.add_argument("--modes", default="single,cluster")
    parser.add_argument("--json", help="write every run's figures here")
    args = parser.parse_args()
    modes = args.modes.split(",")
    results = {}
    for mode in modes:
        results[mode] = {op: summary(xs) for op, xs in run(mode, args).items()}
        print(f"measure-coordinator: {mode} done", file=sys.stderr, flush=True)
    header = "operation           " + "".join(f"{m + ' p50/p90/max ms':>28}" for m in modes)
    if modes == ["single", "cluster"]:
        header += "   p50 cluster/single"
    print(header)
    for op in results[modes[0]]:
        row = f"{op:20}"
        for mode in modes:
            s = results[mode][op]
            row += f"{s['p50']:>14.2f}/{s['p90']:.2f}/{s['max']:.2f}".rjust(28)
        if modes == ["single", "cluster"]:
            row += f"   {results['cluster'][op]['p50'] / results['single'][op]['p50']:.1f}x"
        print(row)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
