#!/usr/bin/env python3
"""Log cleaner throughput and its effect on producers, Spate beside Apache Kafka (issue 19).

For each broker in turn (the other one not running), pinned to BROKER_CPU with the load on
BENCH_CPU:
1. four compacted topics of one partition (`segment.bytes` 16 MiB) are filled with RECORDS
   records each (1 KiB values that lz4 halves, keys drawn from KEYS per topic), while
   `min.cleanable.dirty.ratio` 0.99 keeps the cleaner away;
2. `spate-bench sweep` publishes at 1,000 records/s (linger 0, acks=all, 1 KiB lz4) to
   another topic for WINDOW seconds: producers' latency without the cleaner;
3. the four topics' ratio is lowered to 0.01 (IncrementalAlterConfigs) and the same load
   runs again for WINDOW seconds while the cleaner works through the backlog.
The cleaner's throughput is read from each broker's own log: Spate's "cleaned a compacted log"
lines (read_bytes, elapsed_ms), Kafka's LogCleaner statistics ("N MB of log processed in S
seconds"). Both cleaners run with their defaults otherwise (one thread, no I/O limit, Kafka's
128 MiB dedupe buffer; the check interval is set to 1 s on both so cleaning starts at once).

    scripts/measure-compaction.py [--records 250000] [--keys 50000] [--window 30]
                                  [--brokers spate,kafka] [--settle 20]
                                  [--cleaner-io-bytes-per-second N]

Unthrottled, Spate's cleaner is through the backlog in about 3 s of the 30 s window, so
the window's percentiles are mostly of idle time. `--cleaner-io-bytes-per-second` holds both
cleaners' I/O to that rate (Spate's `--log-cleaner-io-max-bytes-per-second`, Kafka's
`log.cleaner.io.max.bytes.per.second`), e.g. 50000000 for a clean that spans the window;
the table's "clean s" column says how much of it the clean took.

Environment: SPATE_BIN (default target/release/spate), SPATE_ARGS (more options for it), SPATE_BENCH_BIN (default
target/release/spate-bench), BROKER_CPU (default the last CPU), BENCH_CPU (default 0).
Prints one table; not part of scripts/test.sh.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                   NewTopic)

REPO = Path(__file__).resolve().parent.parent
SPATE_BIN = os.environ.get("SPATE_BIN", str(REPO / "target/release/spate"))
BENCH_BIN = os.environ.get("SPATE_BENCH_BIN", str(REPO / "target/release/spate-bench"))
BROKER_CPU = os.environ.get("BROKER_CPU", str(os.cpu_count() - 1))
BENCH_CPU = os.environ.get("BENCH_CPU", "0")
KAFKA_PORT = 19092
TOPICS = [f"compacted-{i}" for i in range(4)]
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def wait_port(port, seconds=60):
    import socket
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    sys.exit(f"measure-compaction: nothing listens on 127.0.0.1:{port} after {seconds} s")


def fill(bootstrap, records, keys):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    config = {"cleanup.policy": "compact", "segment.bytes": str(16 << 20),
              "min.cleanable.dirty.ratio": "0.99", "min.compaction.lag.ms": "0"}
    new = [NewTopic(t, 1, 1, config=config) for t in TOPICS] + [NewTopic("latency", 4, 1)]
    for future in admin.create_topics(new).values():
        future.result(timeout=60)
    # Half random, half zeros, new for each record: lz4 halves it, as the text payloads of
    # the other benchmarks.
    zeros = bytes(512)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "acks": "all",
                         "compression.type": "lz4", "batch.size": 262144,
                         "queue.buffering.max.messages": 500000})
    started = time.time()
    for i in range(records):
        for n, topic in enumerate(TOPICS):
            key = b"key-%d" % ((i * 7919 + n * 31) % keys)
            while True:
                try:
                    producer.produce(topic, key=key, value=os.urandom(512) + zeros)
                    break
                except BufferError:
                    producer.poll(0.01)
        if i % 1000 == 0:
            producer.poll(0)
    if producer.flush(300) != 0:
        sys.exit("measure-compaction: records left unacknowledged after 300 s")
    return 4 * records * 1024 / (time.time() - started) / 1e6


def release_cleaner(bootstrap, kafka):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resources = [ConfigResource(ConfigResource.Type.TOPIC, t, incremental_configs=[
        ConfigEntry("min.cleanable.dirty.ratio", "0.01",
                    incremental_operation=AlterConfigOpType.SET)]) for t in TOPICS]
    for future in admin.incremental_alter_configs(resources).values():
        future.result(timeout=30)


def latency(bootstrap, pid, label, window):
    out = subprocess.run(
        ["taskset", "-c", BENCH_CPU, BENCH_BIN, "sweep", "-b", bootstrap, "--label", label,
         "--broker-pid", str(pid), "-t", "latency", "--partitions", "4", "--record-size",
         "1024", "--payload", "text", "--producers", "1", "--consumers", "1",
         "--compression", "lz4", "--acks", "all", "--linger-ms", "0", "--client", "native",
         "--rates", "1k", "--duration", f"{window}s", "--warmup", "1s",
         "--warm-up-brokers", "3s"], capture_output=True, text=True, timeout=window * 4 + 120)
    for line in out.stdout.splitlines():
        if line.startswith(label + " "):
            fields = line.split()
            # p50, p99, p99.9, then the host steal episodes the run met and its steal-free
            # p99.9 (bench/README.md, "Host steal"; "-" where /proc/stat has no steal).
            return (float(fields[3]), float(fields[4]), float(fields[5]), fields[6], fields[7])
    sys.exit(f"measure-compaction: spate-bench gave no row for {label}:\n{out.stdout}"
             f"\n{out.stderr[-2000:]}")


def spate_cleaned(log_path):
    read = elapsed = 0.0
    cleans = 0
    for line in open(log_path, errors="replace"):
        line = ANSI.sub("", line)
        if "cleaned a compacted log" not in line:
            continue
        if not any(t + "-0" in line for t in TOPICS):
            continue
        read += float(re.search(r"read_bytes=(\d+)", line).group(1))
        elapsed += float(re.search(r"elapsed_ms=(\d+)", line).group(1)) / 1000
        cleans += 1
    return cleans, read / 1e6, elapsed


def kafka_cleaned(log_path):
    mb = seconds = 0.0
    cleans = 0
    for line in open(log_path, errors="replace"):
        found = re.search(r"([\d.,]+) MB of log processed in ([\d.,]+) seconds", line)
        if found:
            mb += float(found.group(1).replace(",", ""))
            seconds += float(found.group(2).replace(",", ""))
            cleans += 1
    return cleans, mb, seconds


def wait_cleaned(count_fn, log_path, seconds=180):
    deadline = time.time() + seconds
    while time.time() < deadline:
        cleans, _, _ = count_fn(log_path)
        if cleans >= len(TOPICS):
            return
        time.sleep(1)
    print(f"measure-compaction: fewer than {len(TOPICS)} cleans logged after {seconds} s",
          file=sys.stderr)


def cleaner_limit_args(args):
    if not args.cleaner_io_bytes_per_second:
        return []
    return ["--log-cleaner-io-max-bytes-per-second", str(args.cleaner_io_bytes_per_second)]


def run_spate(args, workdir):
    port = 21900
    log_path = workdir / "spate.log"
    proc = subprocess.Popen(
        ["taskset", "-c", BROKER_CPU, SPATE_BIN, "--cores", "1", "--listen",
         f"127.0.0.1:{port}", "--data-dir", str(workdir / "spate-data"),
         "--log-cleaner-backoff-ms", "1000", *cleaner_limit_args(args),
         *os.environ.get("SPATE_ARGS", "").split()],
        stdout=open(log_path, "w"), stderr=subprocess.STDOUT)
    try:
        wait_port(port)
        bootstrap = f"127.0.0.1:{port}"
        fill_mbs = fill(bootstrap, args.records, args.keys)
        time.sleep(args.settle)
        idle = latency(bootstrap, proc.pid, "spate", args.window)
        release_cleaner(bootstrap, False)
        busy = latency(bootstrap, proc.pid, "spate", args.window)
        wait_cleaned(spate_cleaned, log_path)
        return fill_mbs, idle, busy, spate_cleaned(log_path)
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def run_kafka(args, workdir):
    script = str(REPO / "scripts/kafka-reference.sh")
    env = dict(os.environ, KAFKA_REF_PORT=str(KAFKA_PORT))
    subprocess.run([script, "start"], check=True, env=env, stdout=subprocess.DEVNULL)
    try:
        status = subprocess.run([script, "status"], env=env, capture_output=True,
                                text=True).stdout
        pid = int(re.search(r"pid=(\d+)", status).group(1))
        kafka_dir = re.search(r"dir=(\S+)", status).group(1)
        subprocess.run(["taskset", "-a", "-p", "-c", BROKER_CPU, str(pid)], check=True,
                       stdout=subprocess.DEVNULL)
        bootstrap = f"127.0.0.1:{KAFKA_PORT}"
        admin = AdminClient({"bootstrap.servers": bootstrap})
        configs = [("log.cleaner.backoff.ms", "1000")]
        if args.cleaner_io_bytes_per_second:
            configs.append(("log.cleaner.io.max.bytes.per.second",
                            str(args.cleaner_io_bytes_per_second)))
        broker = ConfigResource(ConfigResource.Type.BROKER, "1", incremental_configs=[
            ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)
            for name, value in configs])
        for future in admin.incremental_alter_configs([broker]).values():
            future.result(timeout=30)
        fill_mbs = fill(bootstrap, args.records, args.keys)
        time.sleep(args.settle)
        idle = latency(bootstrap, pid, "kafka", args.window)
        release_cleaner(bootstrap, True)
        busy = latency(bootstrap, pid, "kafka", args.window)
        log_path = Path(kafka_dir) / "server.log"
        wait_cleaned(kafka_cleaned, log_path)
        return fill_mbs, idle, busy, kafka_cleaned(log_path)
    finally:
        subprocess.run([script, "stop"], env=env, stdout=subprocess.DEVNULL)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=250_000, help="records per topic")
    parser.add_argument("--keys", type=int, default=50_000, help="distinct keys per topic")
    parser.add_argument("--window", type=int, default=30, help="seconds of each latency run")
    parser.add_argument("--brokers", default="spate,kafka")
    parser.add_argument("--cleaner-io-bytes-per-second", type=int, default=0,
                        help="hold both cleaners' I/O to this rate (0: no limit)")
    parser.add_argument("--settle", type=int, default=20,
                        help="seconds between the fill and the first latency run (the virtual "
                        "disk stays slow for a while after gigabytes of writes)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="measure-compaction-") as tmp:
        for broker in args.brokers.split(","):
            run = {"spate": run_spate, "kafka": run_kafka}[broker]
            fill_mbs, idle, busy, (cleans, mb, seconds) = run(args, Path(tmp))
            rows.append((broker, fill_mbs, cleans, mb, seconds, idle, busy))
            print(f"measure-compaction: {broker} done", file=sys.stderr, flush=True)
    print("broker  fill MB/s  cleans  cleaned MB  clean s  cleaner MB/s  "
          "p50/p99/p99.9 ms idle  p50/p99/p99.9 ms cleaning  p99 change  "
          "steal episodes idle/cleaning (steal-free p99.9 ms)")
    for broker, fill_mbs, cleans, mb, seconds, idle, busy in rows:
        rate = mb / seconds if seconds else float("nan")
        change = (busy[1] / idle[1] - 1) * 100
        print(f"{broker:6}  {fill_mbs:9.0f}  {cleans:6}  {mb:10.0f}  {seconds:7.1f}  "
              f"{rate:12.0f}  {idle[0]:.3f}/{idle[1]:.3f}/{idle[2]:.3f}       "
              f"{busy[0]:.3f}/{busy[1]:.3f}/{busy[2]:.3f}           {change:+.0f}%  "
              f"{idle[3]}/{busy[3]} ({idle[4]}/{busy[4]})")


if __name__ == "__main__":
    main()
