"""Prometheus metrics (issue 17, item 5): `--metrics-listen` serves `/metrics`.

Each test starts its own broker with the endpoint on a port of its own, scrapes it before and
after a known workload with real clients, parses every scrape with Prometheus's own Python
parser (`prometheus_client`), and checks that the counters and gauges moved by what was done:
records and bytes per partition, requests and errors per API, a group's members and lag,
connections per listener, a failed SASL login. One test scrapes while spate-bench's producers
saturate a one-shard broker and checks that every scrape is answered, and quickly.
"""

import base64
import hashlib
import os
import socket
import struct
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families

from client_helpers import Msg, ck_produce
from conftest import SPATE_BIN, TARGET, free_port
from kafka_wire import connect, frame, read_response, request_header

pytestmark = pytest.mark.skipif(TARGET == "kafka", reason="Spate's metrics endpoint")

SASL_HANDSHAKE = 17
SASL_AUTHENTICATE = 36
SASL_AUTHENTICATION_FAILED = 58
# spate-bench, built beside the broker (cargo build --release builds the workspace's bench).
SPATE_BENCH = os.environ.get("SPATE_BENCH", str(Path(SPATE_BIN).parent / "spate-bench"))


class Scrape:
    """One parsed scrape: samples by (name, labels), and the families as parsed."""

    def __init__(self, text):
        self.text = text
        self.families = list(text_string_to_metric_families(text))
        self.samples = {}
        for family in self.families:
            for sample in family.samples:
                key = (sample.name, frozenset(sample.labels.items()))
                assert key not in self.samples, f"duplicate series {key}"
                self.samples[key] = sample.value

    def get(self, name, default=0.0, **labels):
        return self.samples.get((name, frozenset(labels.items())), default)

    def total(self, name, **labels):
        """Sum over every series of `name` whose labels include `labels`."""
        wanted = set(labels.items())
        return sum(value for (n, series), value in self.samples.items()
                   if n == name and wanted <= series)


def scrape(port, path="/metrics", timeout=10.0):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as answer:
        assert answer.status == 200
        assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return Scrape(answer.read().decode())


def plain_users_file(path, users):
    """The --sasl-plain-users-file format: name:pbkdf2-sha256:iterations:salt:hash."""
    lines = []
    for name, password in users.items():
        salt = os.urandom(16)
        digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 10000)
        lines.append(f"{name}:pbkdf2-sha256:10000:{base64.b64encode(salt).decode()}:"
                     f"{base64.b64encode(digest).decode()}")
    path.write_text("\n".join(lines) + "\n")
    return path


def metrics_broker(spate_factory, *extra):
    """A broker with PLAINTEXT on its fixture port, SASL_PLAINTEXT (PLAIN users) on another,
    and the metrics endpoint on a third; `.metrics_port`, `.sasl_port`."""
    broker = spate_factory(start=False)
    broker.sasl_port = free_port()
    broker.metrics_port = free_port()
    users = plain_users_file(broker.workdir / "plain-users", {"alice": "alice-pw"})
    listeners = f"PLAINTEXT://127.0.0.1:{broker.port},SASL_PLAINTEXT://127.0.0.1:{broker.sasl_port}"
    broker.extra_args = ["--listen", None, "--listeners", listeners,
                         "--sasl-plain-users-file", str(users),
                         "--metrics-listen", f"127.0.0.1:{broker.metrics_port}", *extra]
    return broker.start()


def failed_plain_login(port):
    """One SASL PLAIN login with a wrong password over a raw socket; returns its error code."""
    with connect(port) as sock:
        name = b"PLAIN"
        sock.sendall(frame(request_header(SASL_HANDSHAKE, 1, 1) + struct.pack(">h", len(name))
                           + name))
        _, response = read_response(sock)
        assert struct.unpack_from(">h", response)[0] == 0
        token = b"\0alice\0wrong-password"
        sock.sendall(frame(request_header(SASL_AUTHENTICATE, 1, 2)
                           + struct.pack(">i", len(token)) + token))
        _, response = read_response(sock)
        return struct.unpack_from(">h", response)[0]


def create_topic(bootstrap, topic, partitions):
    """CreateTopics through the admin client; returns the error (None: created)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    future = admin.create_topics([NewTopic(topic, partitions, 1)],
                                 operation_timeout=10)[topic]
    try:
        future.result(timeout=20)
        return None
    except Exception as error:  # the KafkaException the client raises
        return error.args[0]


def consume_in_group(bootstrap, topic, group, count, timeout=30.0):
    """Reads `count` records of `topic` in consumer group `group` and commits them; returns
    the open consumer (the caller closes it)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "session.timeout.ms": 10000})
    consumer.subscribe([topic])
    records = 0
    deadline = time.monotonic() + timeout
    while records < count and time.monotonic() < deadline:
        msg = consumer.poll(0.2)
        if msg is not None and not msg.error():
            records += 1
    assert records == count, f"read {records} of {count} records"
    consumer.commit(asynchronous=False)
    return consumer


def assert_histograms_are_consistent(result):
    """Every histogram's buckets are cumulative and end at +Inf with its count."""
    for family in result.families:
        if family.type != "histogram":
            continue
        by_series = {}
        for sample in family.samples:
            labels = dict(sample.labels)
            le = labels.pop("le", None)
            series = by_series.setdefault(frozenset(labels.items()), {"buckets": []})
            if sample.name.endswith("_bucket"):
                series["buckets"].append((float(le), sample.value))
            elif sample.name.endswith("_count"):
                series["count"] = sample.value
        for labels, series in by_series.items():
            counts = [value for _, value in sorted(series["buckets"])]
            assert counts == sorted(counts), f"{family.name} {labels}: not cumulative"
            assert counts[-1] == series["count"], f"{family.name} {labels}: +Inf != count"


def test_metrics_count_a_known_workload(spate_factory):
    broker = metrics_broker(spate_factory)
    topic = f"metrics-{uuid.uuid4().hex[:8]}"
    group = f"group-{uuid.uuid4().hex[:8]}"
    before = scrape(broker.metrics_port)

    assert create_topic(broker.bootstrap, topic, 2) is None
    records_per_partition, value_size = 100, 200
    msgs = [Msg(None, bytes([65 + i % 26]) * value_size, partition=p)
            for p in (0, 1) for i in range(records_per_partition)]
    ck_produce(broker.bootstrap, topic, msgs)
    consumer = consume_in_group(broker.bootstrap, topic, group, len(msgs))
    during = scrape(broker.metrics_port)
    consumer.close()
    # A request that errors: the topic exists already.
    error = create_topic(broker.bootstrap, topic, 2)
    assert error is not None and error.name() == "TOPIC_ALREADY_EXISTS", error
    assert failed_plain_login(broker.sasl_port) == SASL_AUTHENTICATION_FAILED
    # Records the group has not consumed: its lag.
    ck_produce(broker.bootstrap, topic, [Msg(None, b"late", partition=0)] * 7)
    after = scrape(broker.metrics_port)

    assert_histograms_are_consistent(after)
    # Per partition: offsets, size, records and bytes in and out.
    for partition in ("0", "1"):
        series = {"topic": topic, "partition": partition}
        produced = records_per_partition + (7 if partition == "0" else 0)
        assert after.get("spate_partition_log_end_offset", **series) == produced
        assert after.get("spate_partition_high_watermark", **series) == produced
        assert after.get("spate_partition_log_start_offset", **series) == 0
        assert after.get("spate_partition_records_in_total", **series) == produced
        bytes_in = after.get("spate_partition_bytes_in_total", **series)
        assert bytes_in >= records_per_partition * value_size
        # Nothing but the produced batches went into the log.
        assert after.get("spate_partition_size_bytes", **series) == bytes_in
        # The consumer read every record of the first 100, from the tail (the batch cache).
        assert after.get("spate_partition_records_out_total", **series) >= records_per_partition
        assert after.get("spate_partition_bytes_out_total", **series) >= (
            records_per_partition * value_size)
    # Per API: requests, errors by code, latency.
    for api, at_least in (("Produce", 2), ("Fetch", 1), ("CreateTopics", 2),
                          ("OffsetCommit", 1), ("JoinGroup", 1), ("SaslHandshake", 1),
                          ("SaslAuthenticate", 1)):
        moved = (after.get("spate_api_requests_total", api=api)
                 - before.get("spate_api_requests_total", api=api))
        assert moved >= at_least, f"{api}: {moved} requests counted"
        assert (after.get("spate_api_request_latency_seconds_count", api=api)
                == after.get("spate_api_requests_total", api=api))
    assert after.get("spate_api_requests_total", api="CreateTopics") == 2
    assert after.get("spate_api_errors_total", api="CreateTopics",
                     error="TOPIC_ALREADY_EXISTS") == 1
    assert after.get("spate_api_errors_total", api="SaslAuthenticate",
                     error="SASL_AUTHENTICATION_FAILED") == 1
    assert after.total("spate_api_errors_total", api="Produce") == 0
    # Authentication failures and connections by listener.
    assert after.get("spate_authentication_failures_total", listener="SASL_PLAINTEXT",
                     mechanism="PLAIN") == 1
    assert (after.get("spate_connections_accepted_total", listener="PLAINTEXT")
            - before.get("spate_connections_accepted_total", listener="PLAINTEXT")) >= 3
    assert after.get("spate_connections_accepted_total", listener="SASL_PLAINTEXT") == 1
    assert during.get("spate_connections", listener="PLAINTEXT") >= 1
    assert after.get("spate_connections", listener="SASL_PLAINTEXT") == 0
    # The group: one member while the consumer was open, none after; lag 7 on partition 0.
    assert during.get("spate_group_members", group=group) == 1
    assert during.get("spate_group_lag", group=group) == 0
    assert after.get("spate_group_members", group=group) == 0
    assert after.get("spate_group_lag", group=group) == 7
    assert after.get("spate_group_topic_lag", group=group, topic=topic) == 7
    # Shards: busy time, the batch cache, io_uring writes of at least the produced bytes.
    assert after.total("spate_shard_busy_seconds_total") > before.total(
        "spate_shard_busy_seconds_total")
    assert after.total("spate_shard_batch_cache_reads_total", result="hit") >= 2
    written = (after.total("spate_shard_io_uring_bytes_total", op="write")
               - before.total("spate_shard_io_uring_bytes_total", op="write"))
    assert written >= records_per_partition * 2 * value_size
    assert after.total("spate_shard_partitions") >= 2
    assert len([s for (n, s) in after.samples if n == "spate_shard_busy_seconds_total"]) == 2


def test_metrics_endpoint_routes_and_off_by_default(spate_factory):
    broker = metrics_broker(spate_factory, "--cores", "1")
    for path, status in (("/", 404), ("/nope", 404)):
        with pytest.raises(urllib.error.HTTPError) as refused:
            scrape(broker.metrics_port, path)
        assert refused.value.code == status
    request = urllib.request.Request(f"http://127.0.0.1:{broker.metrics_port}/metrics",
                                     method="HEAD")
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 200 and answer.read() == b""
    # A garbage request gets an answer and the endpoint keeps serving.
    with socket.create_connection(("127.0.0.1", broker.metrics_port), timeout=10) as sock:
        sock.sendall(b"\x16\x03\x01garbage\r\n\r\n")
        assert sock.recv(64).startswith(b"HTTP/1.1 400")
    assert scrape(broker.metrics_port).total("spate_shard_partitions") >= 0
    # Without --metrics-listen nothing listens.
    plain = spate_factory()
    assert "serving Prometheus metrics" not in plain.log_text()


def test_metrics_port_in_use_is_one_sentence(tmp_path):
    port = free_port()
    holder = socket.socket()
    holder.bind(("127.0.0.1", port))
    holder.listen()
    try:
        done = subprocess.run(
            [SPATE_BIN, "--data-dir", str(tmp_path / "data"), "--cores", "1",
             "--listen", f"127.0.0.1:{free_port()}", "--metrics-listen", f"127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    finally:
        holder.close()
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.startswith("spate:")]
    assert len(lines) == 1, done.stderr
    assert "in use" in lines[0] and "--metrics-listen" in lines[0], lines[0]


# Serial: needs a whole core for the shard (busy > 0.5) and times the scrapes.
@pytest.mark.serial
def test_metrics_answer_while_producers_saturate_the_shard(spate_factory, tmp_path):
    """One shard, two native producers in a closed loop (each keeps 256 one-record Produce
    requests in flight): the shard is saturated, and every scrape is still answered."""
    if not os.access(SPATE_BENCH, os.X_OK):
        pytest.fail(f"{SPATE_BENCH} is missing; cargo build --release builds it (or set "
                    "SPATE_BENCH)")
    broker = metrics_broker(spate_factory, "--cores", "1")
    topic = f"load-{uuid.uuid4().hex[:8]}"
    load = subprocess.Popen(
        [SPATE_BENCH, "produce", "-b", broker.bootstrap, "-t", topic, "--partitions", "4",
         "--client", "native", "-P", "2", "-s", "512", "--acks", "1", "-d", "12s", "-w", "1s",
         "-q", "--delete-topic"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # Until the load runs at full speed.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if scrape(broker.metrics_port).get("spate_api_requests_total",
                                               api="Produce") > 20_000:
                break
            time.sleep(0.2)
        latencies, produced, busy, walls = [], [], [], []
        for _ in range(16):
            started = time.monotonic()
            result = scrape(broker.metrics_port, timeout=5.0)
            latencies.append(time.monotonic() - started)
            walls.append(started)
            produced.append(result.get("spate_api_requests_total", api="Produce"))
            busy.append(result.get("spate_shard_busy_seconds_total", shard="0"))
            time.sleep(0.25)
    finally:
        load.wait(timeout=60)
    busy_fraction = (busy[-1] - busy[0]) / (walls[-1] - walls[0])
    rate = (produced[-1] - produced[0]) / (walls[-1] - walls[0])
    latencies.sort()
    print(f"scrapes under load: p50 {latencies[len(latencies) // 2] * 1000:.1f} ms, "
          f"max {latencies[-1] * 1000:.1f} ms; shard busy {busy_fraction:.2f}, "
          f"{rate:.0f} produce requests/s")
    assert all(b > a for a, b in zip(produced, produced[1:])), "the load stopped"
    assert busy_fraction > 0.5, f"the shard was not saturated ({busy_fraction:.2f} busy)"
    assert latencies[-1] < 2.0, f"a scrape took {latencies[-1]:.2f} s under load"
