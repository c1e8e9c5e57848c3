"""Controller failover trials (issue 13's target): three `spate` processes, each a broker and
a controller voter; the active controller (the Raft leader every node names in DescribeQuorum
and DescribeCluster) is killed with SIGKILL, and the time from the kill to the first
CreateTopics that succeeds through a surviving node is measured: confluent-kafka's
AdminClient, bootstrapped on that survivor alone (which names itself the controller in
Metadata and proposes the topic to the metadata log) and connected before the kill, asks
again at once when an answer is an error. The killed node is started again and the next trial
waits until all three agree on one leader, every broker registered and every high watermark
equal. At the end every node must list every topic created.

    python3 tests/clients/controller_failover_trials.py [--trials 20] [--seed S]
                                                        [--heartbeat-ms 2000]
                                                        [--session-ms 9000]
                                                        [--spate-bin PATH]

prints a line per trial, then median, p99 and max. Not part of scripts/test.sh
(`test_cluster.py` checks a controller failover for correctness there). The defaults are
Spate's (and Kafka's) broker heartbeat and session timeout: a controller failover is a Raft
election (an election timeout of 1-2 s), not a broker fencing.
"""

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from confluent_kafka import KafkaException  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

import conftest  # noqa: E402
from conftest import Broker, free_port  # noqa: E402
from test_cluster import Node, agreed_leader, describe_quorum, metadata_v1  # noqa: E402


def start_nodes(workdir, heartbeat_ms, session_ms):
    ports = [free_port() for _ in range(3)]
    voters = ",".join(f"{i + 1}@127.0.0.1:{port}" for i, port in enumerate(ports))
    nodes = []
    for i, port in enumerate(ports):
        broker = Broker(Path(workdir) / f"node{i + 1}", [
            "--cores", "1", "--min-free-bytes", "0", "--node-id", str(i + 1),
            "--controller-listen", f"127.0.0.1:{port}", "--controller-quorum-voters", voters,
            "--broker-heartbeat-interval-ms", str(heartbeat_ms),
            "--broker-session-timeout-ms", str(session_ms)], i)
        nodes.append(Node(i + 1, broker, port))
    for node in nodes:
        node.broker.start()
    return nodes


def wait(what, check, timeout=60):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            found = check()
            if found:
                return found
        except (OSError, AssertionError, IndexError) as error:
            last = error
        time.sleep(0.05)
    raise SystemExit(f"{what} not within {timeout} s (last: {last!r})")


def create_until_done(admin, name, timeout=60):
    """CreateTopics of `name` until one succeeds; (the moment it did, the errors before)."""
    errors = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        futures = admin.create_topics([NewTopic(name, 3, 1)], operation_timeout=30,
                                      request_timeout=40)
        try:
            futures[name].result(timeout=45)
            return time.monotonic(), errors
        except KafkaException as error:
            errors.append(error.args[0].name())
            if error.args[0].name() == "TOPIC_ALREADY_EXISTS":  # an earlier try committed
                return time.monotonic(), errors
    raise SystemExit(f"CreateTopics of {name} did not succeed within {timeout} s: {errors}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--heartbeat-ms", type=int, default=2000)
    parser.add_argument("--session-ms", type=int, default=9000)
    parser.add_argument("--spate-bin", default=os.environ.get("SPATE_BIN", conftest.SPATE_BIN))
    args = parser.parse_args()
    conftest.SPATE_BIN = args.spate_bin
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    rng = random.Random(seed)
    workdir = tempfile.mkdtemp(prefix="spate-controller-failover-")
    print(f"controller failover trials: seed {seed}, logs in {workdir}", flush=True)
    nodes = start_nodes(workdir, args.heartbeat_ms, args.session_ms)
    by_id = {node.node_id: node for node in nodes}
    times, created = [], []
    try:
        for trial in range(args.trials):
            leader, epoch, _ = wait("a leader all three agree on", lambda: agreed_leader(nodes))
            time.sleep(0.5)
            survivor = by_id[rng.choice([n for n in by_id if n != leader])]
            admin = AdminClient({"bootstrap.servers": survivor.broker.bootstrap})
            admin.list_topics(timeout=10)  # connected before the kill
            victim = by_id[leader].broker
            name = f"after-kill-{trial}"
            victim.proc.kill()
            killed = time.monotonic()
            done, errors = create_until_done(admin, name)
            times.append(done - killed)
            created.append(name)
            # The new leader, as the survivors name it (after the answer: not polled during
            # the trial, so that nothing but the admin client talks to the survivor).
            quorum = describe_quorum(survivor.broker.port)
            new_leader, new_epoch = quorum[:2] if isinstance(quorum, tuple) else (None, None)
            print(f"trial {trial}: killed node {leader}, the active controller (epoch {epoch}); "
                  f"CreateTopics through node {survivor.node_id} succeeded after "
                  f"{done - killed:.2f} s"
                  + (f" (errors before: {errors})" if errors else "")
                  + f"; leader now node {new_leader} in epoch {new_epoch}", flush=True)
            victim.kill9()
            victim.start()
        wait("a leader all three agree on", lambda: agreed_leader(nodes))

        def everywhere():
            return all(set(created) <= set(metadata_v1(n.broker.port)[1]) for n in nodes)

        wait("every created topic on every node", everywhere)
        ordered = sorted(times)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        print(f"controller failover trials: {len(times)}, seed {seed}, heartbeat "
              f"{args.heartbeat_ms} ms, session {args.session_ms} ms: CreateTopics through a "
              f"survivor succeeded after median {statistics.median(times):.2f} s, p99 "
              f"{p99:.2f} s, max {ordered[-1]:.2f} s (min {ordered[0]:.2f} s); every topic on "
              f"every node")
        return 0
    finally:
        for node in nodes:
            node.broker.kill9()


if __name__ == "__main__":
    sys.exit(main())
