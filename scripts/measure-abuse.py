#!/usr/bin/env python3
"""Other clients' produce latency while hostile clients run (issue 18, item 5).

A well-behaved producer (spate-bench, open loop, acks=all, linger.ms 0, 1 KiB records) runs
for --seconds alone, then beside each attack in turn, then alone again; rounds repeat the
whole sequence (--rounds) so that the machine's drift shows. Each line gives the probe's
publish p50, p99 and p99.9 and the p99 as a ratio to the quiet runs of the same round, and
the broker's RSS and CPU seconds over the step.

Attacks (each from this process, on 127.0.0.1 only):
  idle        --idle-connections connections that never send a byte
  slowloris   400 connections each trickling a frame announced as 1 MiB, a byte a second
  nonreader   4 connections each pipelining 200 Fetch requests of a preloaded topic from
              offset 0 (1 MiB per partition) and never reading an answer
  metadata    4 processes sending Metadata v4 for 100 random unknown topics, auto-creation
              off in the request, as fast as the broker answers
  pipeline    a connection sending acks=1 Produce requests without reading the answers,
              past the broker's per-connection window

    scripts/measure-abuse.py --bench target/release/spate-bench --bootstrap 127.0.0.1:9092 \\
        --pid PID [--rate 1000] [--seconds 10] [--rounds 2] [--idle-connections 5000]
"""

import argparse
import json
import multiprocessing
import os
import random
import resource
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "clients"))
from kafka_wire import fetch_v4, frame, produce_v3, record_batch, request_header  # noqa: E402

ATTACKS = ["idle", "slowloris", "nonreader", "metadata", "pipeline"]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def connect(host, port):
    sock = socket.create_connection((host, port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def string(text):
    data = text.encode()
    return struct.pack(">h", len(data)) + data


def metadata_v4(correlation_id, topics):
    body = struct.pack(">i", len(topics)) + b"".join(string(t) for t in topics) + b"\x00"
    return frame(request_header(3, 4, correlation_id) + body)


class Attack:
    """Runs one attack on threads until stopped; holds its sockets."""

    def __init__(self, kind, host, port, topic, idle_connections, nice=0):
        self.kind, self.host, self.port, self.topic = kind, host, port, topic
        self.idle_connections, self.nice = idle_connections, nice
        self.stop = threading.Event()
        self.sockets = []
        self.threads = []
        self.processes = []

    def start(self):
        getattr(self, "start_" + self.kind)()

    def thread(self, target):
        t = threading.Thread(target=target, daemon=True)
        t.start()
        self.threads.append(t)

    def start_idle(self):
        for _ in range(self.idle_connections):
            self.sockets.append(connect(self.host, self.port))

    def start_slowloris(self):
        for _ in range(400):
            self.sockets.append(connect(self.host, self.port))
        partial = struct.pack(">i", 1 << 20) + request_header(18, 0, 1) + b"\x00" * 64

        def trickle():
            sent = 0
            while not self.stop.wait(1.0) and sent < len(partial):
                for sock in self.sockets:
                    try:
                        sock.send(partial[sent:sent + 1])
                    except OSError:
                        pass
                sent += 1
        self.thread(trickle)

    def start_nonreader(self):
        for _ in range(4):
            sock = connect(self.host, self.port)
            sock.setblocking(False)
            self.sockets.append(sock)
            requests = b"".join(fetch_v4(self.topic.encode(), 0, 0, i, max_wait_ms=0,
                                         max_bytes=1 << 20) for i in range(200))
            try:
                sock.send(requests)
            except BlockingIOError:
                pass

    def start_metadata(self):
        for _ in range(4):
            process = multiprocessing.Process(target=metadata_flood,
                                              args=(self.host, self.port, self.nice),
                                              daemon=True)
            process.start()
            self.processes.append(process)

    def start_pipeline(self):
        sock = connect(self.host, self.port)
        self.sockets.append(sock)
        batch = record_batch([b"x" * 100], timestamp=int(time.time() * 1000))
        request = produce_v3(self.topic.encode(), 0, batch, 1, acks=1)

        def flood():
            while not self.stop.is_set():
                try:
                    sock.sendall(request * 64)
                except OSError:
                    return
        self.thread(flood)

    def end(self):
        self.stop.set()
        for process in self.processes:
            process.terminate()
            process.join(5)
        for sock in self.sockets:
            sock.close()
        for t in self.threads:
            t.join(5)


def metadata_flood(host, port, nice):
    os.nice(nice)
    sock = connect(host, port)
    correlation_id = 0
    while True:
        correlation_id += 1
        topics = ["unknown-" + uuid.uuid4().hex[:12] for _ in range(100)]
        sock.sendall(metadata_v4(correlation_id, topics))
        (size,) = struct.unpack(">i", recv_exact(sock, 4))
        recv_exact(sock, size)


def recv_exact(sock, size):
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def probe(args, topic):
    """One spate-bench run: its publish latency summary (us), the errors it saw and whether
    it kept up (the bench exits 3 when it did not, or had errors: that is a result here)."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        done = subprocess.run([args.bench, "produce", "-b", args.bootstrap, "-t", topic,
                               "--rate", str(args.rate), "--duration", f"{args.seconds}s",
                               "--warmup", "2s", "--acks", "all", "--linger-ms", "0",
                               "-z", "lz4", "--json", out.name, "--quiet"],
                              stdout=subprocess.DEVNULL, timeout=args.seconds + 120)
        if done.returncode not in (0, 3):
            sys.exit(f"spate-bench failed (exit {done.returncode})")
        result = json.load(open(out.name))
    errors = sum(result.get("errors", {}).values())
    return result["latency"]["publish"], errors, done.returncode == 0


def preload(args, topic):
    """A topic with some data for the non-reading fetchers (closed loop, a few seconds)."""
    subprocess.run([args.bench, "produce", "-b", args.bootstrap, "-t", topic,
                    "--partitions", "1", "-n", "200000", "--acks", "1", "--quiet"],
                   check=True, stdout=subprocess.DEVNULL, timeout=300)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bench", default="target/release/spate-bench")
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--idle-connections", type=int, default=5000)
    parser.add_argument("--attacks", default=",".join(ATTACKS))
    parser.add_argument("--attack-nice", type=int, default=0,
                        help="niceness of the Metadata flood's processes: on a small machine "
                             "they share cores with the probe, and at 0 they slow the probe "
                             "client itself, not only the broker")
    args = parser.parse_args()
    host, port = args.bootstrap.rsplit(":", 1)
    if host not in ("127.0.0.1", "localhost"):
        sys.exit("measure-abuse.py attacks a broker on 127.0.0.1 only")
    port = int(port)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    attacks = [a for a in args.attacks.split(",") if a]
    unknown = set(attacks) - set(ATTACKS)
    if unknown:
        sys.exit(f"unknown attacks {sorted(unknown)}; choose from {ATTACKS}")
    fetched = "abuse-fetched-" + uuid.uuid4().hex[:8]
    preload(args, fetched)
    topic = "abuse-probe-" + uuid.uuid4().hex[:8]
    print(f"probe: {args.rate} records/s, acks=all, linger.ms 0, 1 KiB lz4, "
          f"{args.seconds} s per step; latencies in ms")
    print(f"{'round':>5} {'step':>10} {'p50':>7} {'p99':>7} {'p99.9':>7} {'p99/quiet':>9} "
          f"{'rss MiB':>8} {'cpu s':>6} {'errors':>6} {'kept up':>7}")
    for round_ in range(1, args.rounds + 1):
        rows = []
        for step in ["quiet", *attacks, "quiet"]:
            attack = None if step == "quiet" else Attack(step, host, port, fetched,
                                                         args.idle_connections,
                                                         args.attack_nice)
            if attack:
                attack.start()
                time.sleep(1)
            cpu = cpu_seconds(args.pid)
            latency, errors, kept = probe(args, topic)
            cpu = cpu_seconds(args.pid) - cpu
            rss = rss_mib(args.pid)
            if attack:
                attack.end()
                time.sleep(2)
            rows.append((step, latency, rss, cpu, errors, kept))
        quiet = [row[1]["p99_us"] for row in rows if row[0] == "quiet"]
        quiet_p99 = sum(quiet) / len(quiet)
        for step, lat, rss, cpu, errors, kept in rows:
            print(f"{round_:>5} {step:>10} {lat['p50_us'] / 1000:7.2f} "
                  f"{lat['p99_us'] / 1000:7.2f} {lat['p99_9_us'] / 1000:7.2f} "
                  f"{lat['p99_us'] / quiet_p99:9.2f} {rss:8.0f} {cpu:6.2f} {errors:6d} "
                  f"{'yes' if kept else 'NO':>7}", flush=True)


if __name__ == "__main__":
    main()
