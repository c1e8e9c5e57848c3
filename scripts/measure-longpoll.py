#!/usr/bin/env python3
"""Fetch long-poll measurements against a running broker (issue 5):

1. wake latency: a consumer long-polls an idle partition (fetch.wait.max.ms 500); every
   100 ms a producer (acks=1, linger 0) sends one record carrying its send time; the
   consumer's receive time minus that send time, over N records, as percentiles in ms.
2. idle cost: C raw connections each park a Fetch (max_wait 30 s, min_bytes 1) on an idle
   partition; the broker's CPU seconds over W seconds (from /proc/<pid>/stat), compared with
   the same W seconds with no fetches parked.

    scripts/measure-longpoll.py --bootstrap 127.0.0.1:9092 --pid PID [--records 100]
                                [--connections 10000] [--window 10]
"""

import argparse
import os
import resource
import selectors
import socket
import struct
import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def percentiles(values):
    values = sorted(values)
    pick = lambda q: values[min(len(values) - 1, int(q * len(values)))]
    return {"p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": values[-1]}


def create_topic(bootstrap, name):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(name, 1, 1)]).values():
        future.result(timeout=30)


def wake_latency(bootstrap, records):
    topic = "longpoll-" + uuid.uuid4().hex[:8]
    create_topic(bootstrap, topic)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused",
                         "fetch.wait.max.ms": 500, "fetch.min.bytes": 1,
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    producer = Producer({"bootstrap.servers": bootstrap, "acks": 1, "linger.ms": 0})
    consumer.poll(1.0)
    latencies = []
    for _ in range(records):
        time.sleep(0.1)
        producer.produce(topic, struct.pack(">d", time.time()))
        producer.poll(0)
        deadline = time.time() + 5
        while time.time() < deadline:
            message = consumer.poll(0.01)
            if message is not None and not message.error():
                sent = struct.unpack(">d", message.value())[0]
                latencies.append((time.time() - sent) * 1000)
                break
    producer.flush(10)
    consumer.close()
    return percentiles(latencies), len(latencies)


def fetch_v4(correlation_id, topic, max_wait_ms):
    client = b"longpoll"
    body = struct.pack(">iiiib", -1, max_wait_ms, 1, 1 << 20, 0)
    body += struct.pack(">i", 1) + struct.pack(">h", len(topic)) + topic.encode()
    body += struct.pack(">i", 1) + struct.pack(">iqi", 0, 0, 1 << 20)
    header = struct.pack(">hhih", 1, 4, correlation_id, len(client)) + client
    frame = header + body
    return struct.pack(">i", len(frame)) + frame


def idle_cost(bootstrap, pid, connections, window):
    topic = "idle-" + uuid.uuid4().hex[:8]
    create_topic(bootstrap, topic)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, connections + 1024)), hard))
    host, port = bootstrap.rsplit(":", 1)
    before = cpu_seconds(pid)
    time.sleep(window)
    baseline = cpu_seconds(pid) - before
    sockets = []
    selector = selectors.DefaultSelector()
    for i in range(connections):
        sock = socket.create_connection((host, int(port)), timeout=10)
        sock.sendall(fetch_v4(i, topic, 30_000))
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
        sockets.append(sock)
    time.sleep(1)
    before = cpu_seconds(pid)
    answered = 0
    deadline = time.time() + window
    while time.time() < deadline:
        for _key, _ in selector.select(timeout=0.5):
            answered += 1
    parked = cpu_seconds(pid) - before
    for sock in sockets:
        sock.close()
    return baseline, parked, answered


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--records", type=int, default=100)
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--window", type=float, default=10.0)
    args = parser.parse_args()
    stats, count = wake_latency(args.bootstrap, args.records)
    print(f"wake latency over {count} records (ms): " +
          ", ".join(f"{k} {v:.2f}" for k, v in stats.items()))
    baseline, parked, answered = idle_cost(args.bootstrap, args.pid, args.connections,
                                           args.window)
    print(f"broker CPU over {args.window:.0f} s: idle {baseline:.3f} s, with "
          f"{args.connections} parked fetches {parked:.3f} s "
          f"({answered} answered early, expected 0)")


if __name__ == "__main__":
    main()
