#!/usr/bin/env python3
"""Consumer group measurements against a Spate broker this script starts (not a test).

    scripts/group_measure.py rebalance [--heartbeat-ms 3000] [--rounds 5] [--kills 2]
                                       [--session-ms 10000]
    scripts/group_measure.py commits   [--rate 10000] [--seconds 10] [--connections 64]
                                       [--shard 0]
    scripts/group_measure.py join      [--rounds 4] [--members 4] [--heartbeat-ms 3000]

rebalance: a 4-member group (confluent-kafka members, eager range assignor, 8 partitions).
  Reports how long a member killed (kill -9, the first --kills rounds), a member leaving
  (LeaveGroup) and a member joining take until every
  partition is held again, measured from the members' own events (tests/clients/
  group_member.py). Clients learn of a rebalance from their next heartbeat, so the figure is
  dominated by heartbeat.interval.ms; the broker side is reported separately as the time the
  coordinator needs once every member has rejoined (from the broker's debug log is not
  needed: it answers all parked JoinGroups in the same tick).

join: how long a new member waits for its assignment, classic protocol (librdkafka's eager
  range assignor) against KIP-848's (`group.protocol=consumer`, the broker's assignor), in
  the same run on one broker, at one heartbeat interval for both (--heartbeat-ms: the
  classic members' heartbeat.interval.ms, and the broker's
  --group-consumer-heartbeat-interval-ms; librdkafka's classic default is 3000, Kafka's
  consumer-protocol default 5000) and the broker's default initial rebalance delay (3 s, as
  Kafka's). Per round and protocol, a
  fresh group on an 8-partition topic: the first member's time from its consumer's creation
  to its first assignment, then --members - 1 more joining one at a time, each timed from
  its creation until every partition is held again and the newcomer holds some. Protocols
  alternate in ABBA order over the rounds; medians and the consumer/classic ratios.

commits: OffsetCommit v2 requests (one partition each, simple groups) at a fixed rate for
  groups that all belong to one shard (the coordinator under test), pipelined over a few
  connections. Reports the CPU the broker's threads used (from /proc/<pid>/task/*/stat),
  per thread and in total, the achieved rate, and the offsets log's growth.

Environment: SPATE_BIN (default target/release/spate), DATA_PARENT (default: the repo; /tmp
may be tmpfs, which refuses O_DIRECT).
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "clients"))

from kafka_wire import api_versions_answered, frame, request_header  # noqa: E402

SPATE_BIN = os.environ.get("SPATE_BIN", os.path.join(ROOT, "target", "release", "spate"))
MEMBER = os.path.join(ROOT, "tests", "clients", "group_member.py")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Broker:
    def __init__(self, *extra):
        self.dir = tempfile.mkdtemp(prefix="spate-groups.", dir=os.environ.get("DATA_PARENT", ROOT))
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.log = open(os.path.join(self.dir, "broker.log"), "w")
        cmd = [SPATE_BIN, "--listen", self.bootstrap, "--data-dir", os.path.join(self.dir, "data"),
               "--cores", "2", *extra]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not api_versions_answered(self.port):
            assert time.monotonic() < deadline and self.proc.poll() is None, "broker did not start"
            time.sleep(0.05)

    def close(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)


def create_topic(broker, name, partitions):
    from confluent_kafka.admin import AdminClient, NewTopic
    client = AdminClient({"bootstrap.servers": broker.bootstrap, "broker.address.family": "v4"})
    for future in client.create_topics([NewTopic(name, partitions, 1)]).values():
        future.result(timeout=30)


# ----- rebalance -------------------------------------------------------------------------------

class Member:
    def __init__(self, broker, group, topic, conf):
        self.proc = subprocess.Popen(
            [sys.executable, MEMBER, "--kind", "ck", "--bootstrap", broker.bootstrap, "--group",
             group, "--topic", topic, "--conf", json.dumps(conf), "--no-commit"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.events = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            event = json.loads(line)
            event["at"] = time.monotonic()
            self.events.append(event)

    def assignment(self):
        assigned = [e for e in self.events if e["event"] == "assigned"]
        return assigned[-1]["partitions"] if assigned else []

    def ready_at(self):
        ready = [e["at"] for e in self.events if e["event"] == "ready"]
        return ready[0] if ready else None

    def leave(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)

    def kill(self):
        self.proc.kill()
        self.proc.wait(timeout=30)


def wait_covered(members, partitions, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        held = sorted(p for m in members for p in m.assignment())
        if held == list(range(partitions)) and all(m.assignment() for m in members):
            return time.monotonic()
        time.sleep(0.005)
    raise SystemExit(f"not balanced after {timeout} s: {[m.assignment() for m in members]}")


def rebalance(args):
    partitions = 8
    broker = Broker("--group-initial-rebalance-delay-ms", str(args.initial_delay_ms))
    try:
        topic = "rebalance-topic"
        create_topic(broker, topic, partitions)
        conf = {"heartbeat.interval.ms": args.heartbeat_ms, "session.timeout.ms": args.session_ms}
        group = "rebalance-group"
        members = [Member(broker, group, topic, conf) for _ in range(4)]
        while not all(m.ready_at() for m in members):
            time.sleep(0.01)
        last_ready = max(m.ready_at() for m in members)
        formed = wait_covered(members, partitions)
        print(f"4 members formed a group in {formed - last_ready:.3f} s after the last was ready "
              f"(initial rebalance delay {args.initial_delay_ms} ms)")
        leaves, joins, kills = [], [], []
        for round_ in range(args.rounds):
            time.sleep(1)
            leaver = members.pop()
            started = time.monotonic()
            if round_ < args.kills:
                leaver.kill()  # no LeaveGroup: the coordinator waits out the session timeout
                kills.append(wait_covered(members, partitions) - started)
            else:
                leaver.leave()
                leaves.append(wait_covered(members, partitions) - started)
            time.sleep(1)
            joiner = Member(broker, group, topic, conf)
            while not joiner.ready_at():
                time.sleep(0.005)
            started = joiner.ready_at()
            members.append(joiner)
            joins.append(wait_covered(members, partitions) - started)
        for name, times in (("kill -9 (4 -> 3 members)", kills),
                            ("leave (4 -> 3 members)", leaves), ("join (3 -> 4 members)", joins)):
            if not times:
                continue
            print(f"{name}: median {statistics.median(times):.3f} s, max {max(times):.3f} s, "
                  f"rounds {len(times)}, heartbeat.interval.ms {args.heartbeat_ms}, "
                  f"session.timeout.ms {args.session_ms}")
        for member in members:
            member.leave()
    finally:
        broker.close()


# ----- join ----------------------------------------------------------------------------------

def join_round(broker, topic, partitions, protocol, members_wanted, heartbeat_ms):
    """(first member's wait, [each later member's wait]) for one fresh group."""
    conf = {"group.protocol": protocol}
    if protocol == "classic":
        conf.update({"heartbeat.interval.ms": heartbeat_ms, "session.timeout.ms": 45000})
    group = f"join-{protocol}-{time.monotonic_ns()}"
    members, joins = [], []
    try:
        for _ in range(members_wanted):
            member = Member(broker, group, topic, conf)
            members.append(member)
            while not member.ready_at():
                time.sleep(0.002)
            covered = wait_covered(members, partitions)
            joins.append(covered - member.ready_at())
            time.sleep(0.5)
    finally:
        for member in members:
            member.leave()
    return joins[0], joins[1:]


def join(args):
    partitions = 8
    broker = Broker("--group-consumer-heartbeat-interval-ms", str(args.heartbeat_ms))
    try:
        topic = "join-topic"
        create_topic(broker, topic, partitions)
        first = {"classic": [], "consumer": []}
        later = {"classic": [], "consumer": []}
        for round_ in range(args.rounds):
            order = ["classic", "consumer"] if round_ % 2 == 0 else ["consumer", "classic"]
            for protocol in order:
                one, rest = join_round(broker, topic, partitions, protocol, args.members,
                                       args.heartbeat_ms)
                first[protocol].append(one)
                later[protocol].extend(rest)
                print(f"round {round_} {protocol}: first member {one:.3f} s, then "
                      + ", ".join(f"{t:.3f}" for t in rest) + f" s; load {load_average()}",
                      flush=True)
        for name, times in (("first member", first), ("a member joining", later)):
            classic = statistics.median(times["classic"])
            consumer = statistics.median(times["consumer"])
            print(f"{name}: classic median {classic:.3f} s (max {max(times['classic']):.3f}), "
                  f"consumer median {consumer:.3f} s (max {max(times['consumer']):.3f}), "
                  f"ratio consumer/classic {consumer / classic:.2f}; heartbeat interval "
                  f"{args.heartbeat_ms} ms")
    finally:
        broker.close()


def load_average():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


# ----- commits -------------------------------------------------------------------------------

def fnv1a(data):
    value = 0xcbf29ce484222325
    for byte in data:
        value ^= byte
        value = (value * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return value


def string(text):
    data = text.encode()
    return struct.pack(">h", len(data)) + data


def commit_request(correlation, group, topic, offset):
    body = (string(group) + struct.pack(">i", -1) + string("") + struct.pack(">q", -1)
            + struct.pack(">i", 1) + string(topic) + struct.pack(">i", 1)
            + struct.pack(">iq", 0, offset) + string(""))
    return frame(request_header(8, 2, correlation) + body)


def thread_cpu(pid):
    """{thread name + tid: CPU seconds} of every thread of the process."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                stat = f.read()
        except FileNotFoundError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        out[f"{name}/{tid}"] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return out


def log_bytes(broker):
    total = 0
    data = os.path.join(broker.dir, "data")
    for entry in os.listdir(data):
        if entry.startswith("__consumer_offsets-"):
            for name in os.listdir(os.path.join(data, entry)):
                if name.endswith(".log"):
                    total += os.path.getsize(os.path.join(data, entry, name))
    return total


def load(port, groups, topic, rate, seconds, connections, latencies):
    """Open loop: every 10 ms, rate/100 commits spread over the connections (one selector
    thread, non-blocking sockets). Returns how many were answered."""
    import selectors
    selector = selectors.DefaultSelector()
    conns = []
    for _ in range(connections):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        conn = {"sock": sock, "out": bytearray(), "in": bytearray(), "sent": {}}
        conns.append(conn)
        selector.register(sock, selectors.EVENT_READ, conn)
    tick_s = 0.01
    per_tick = rate * tick_s
    owed = 0.0
    correlation = 0
    answered = 0
    started = time.monotonic()
    next_tick = started
    while True:
        now = time.monotonic()
        sending = now - started < seconds
        if sending and now >= next_tick:
            owed += per_tick
            while owed >= 1:
                owed -= 1
                correlation += 1
                conn = conns[correlation % len(conns)]
                group = groups[correlation % len(groups)]
                conn["out"] += commit_request(correlation, group, topic, correlation)
                conn["sent"][correlation] = now
            next_tick += tick_s
        for conn in conns:
            if conn["out"]:
                try:
                    written = conn["sock"].send(conn["out"])
                    del conn["out"][:written]
                except BlockingIOError:
                    pass
        if not sending and not any(c["sent"] for c in conns):
            break
        if not sending and now - started > seconds + 30:
            raise SystemExit("answers missing 30 s after the load stopped")
        timeout = max(0.0, min(next_tick - time.monotonic(), 0.005))
        for key, _ in selector.select(timeout):
            conn = key.data
            try:
                data = conn["sock"].recv(1 << 20)
            except BlockingIOError:
                continue
            conn["in"] += data
            buffer = conn["in"]
            while len(buffer) >= 4:
                size = struct.unpack_from(">i", buffer)[0]
                if len(buffer) < 4 + size:
                    break
                (cid,) = struct.unpack_from(">i", buffer, 4)
                error = struct.unpack_from(">h", buffer, 4 + size - 2)[0]
                assert error == 0, f"commit failed with error {error}"
                latencies.append(time.monotonic() - conn["sent"].pop(cid))
                answered += 1
                del buffer[:4 + size]
    for conn in conns:
        conn["sock"].close()
    return answered


def commits(args):
    broker = Broker()
    try:
        topic = "commit-topic"
        create_topic(broker, topic, 1)
        target = args.shard
        groups = [g for g in (f"load-{i}" for i in range(5000))
                  if fnv1a(g.encode()) % 2 == target][:100]
        before_cpu = thread_cpu(broker.proc.pid)
        before_log = log_bytes(broker)
        latencies = []
        started = time.monotonic()
        done = [load(broker.port, groups, topic, args.rate, args.seconds, args.connections,
                     latencies)]
        elapsed = time.monotonic() - started
        after_cpu = thread_cpu(broker.proc.pid)
        grown = log_bytes(broker) - before_log
        rate = done[0] / elapsed
        print(f"{done[0]} commits in {elapsed:.1f} s = {rate:.0f}/s for {len(groups)} groups "
              f"owned by shard {target}, over {args.connections} connections")
        latencies.sort()
        print(f"commit latency (open loop, send to answer): "
              f"p50 {latencies[len(latencies) // 2] * 1e3:.2f} ms, "
              f"p99 {latencies[int(len(latencies) * 0.99)] * 1e3:.2f} ms")
        total = 0.0
        for name in sorted(after_cpu):
            used = after_cpu[name] - before_cpu.get(name, 0.0)
            total += used
            if used >= 0.05:
                print(f"  {name:28s} {used / elapsed * 100:5.1f} % of a core")
        print(f"broker total: {total / elapsed * 100:.1f} % of a core "
              f"({total / done[0] * 1e6:.1f} us of CPU per commit)")
        print(f"offsets log grew {grown / 1e6:.2f} MB ({grown / done[0]:.0f} bytes per commit, "
              f"compaction keeps it bounded)")
    finally:
        broker.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    r = sub.add_parser("rebalance")
    r.add_argument("--heartbeat-ms", type=int, default=3000)
    r.add_argument("--initial-delay-ms", type=int, default=3000)
    r.add_argument("--rounds", type=int, default=5)
    r.add_argument("--kills", type=int, default=2,
                   help="how many of the rounds kill -9 the member instead of closing it")
    r.add_argument("--session-ms", type=int, default=10000)
    c = sub.add_parser("commits")
    c.add_argument("--rate", type=float, default=10000)
    c.add_argument("--seconds", type=float, default=10)
    c.add_argument("--connections", type=int, default=64)
    c.add_argument("--shard", type=int, default=0, help="the shard whose groups are used")
    j = sub.add_parser("join")
    j.add_argument("--rounds", type=int, default=4)
    j.add_argument("--members", type=int, default=4)
    j.add_argument("--heartbeat-ms", type=int, default=3000)
    args = parser.parse_args()
    {"rebalance": rebalance, "commits": commits, "join": join}[args.what](args)


if __name__ == "__main__":
    main()
