"""Captures real client requests and the files they leave as seeds for the fuzz targets.

    python3 fuzz/capture_seeds.py [--seeds fuzz/seeds]

starts the release broker behind a relay on 127.0.0.1 (the broker advertises the relay, so
clients send every request through it), drives librdkafka (producer, idempotent and
transactional producers, a consumer group that commits, the admin API) and kafka-python
through it, and writes each request frame (without its 4-byte length, as the broker's
decoder sees it) to one file named after its API key, version and content hash. At most
`--per-version` frames are kept per API key and version (seeds/request). After the broker
stops, the files in its data dir seed the other targets, in each target's input layout:
record batches of every codec and of the internal logs (seeds/records), index pairs,
clean-stop records and producer snapshots (seeds/storage_files), and the keys and values of
the internal logs' records (seeds/internal_records). scripts/fuzz.sh starts every run from
these seeds.
"""

import argparse
import collections
import hashlib
import socket
import struct
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "clients"))

from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import (AdminClient, ConfigResource, NewPartitions,  # noqa: E402
                                   NewTopic)

from conftest import Broker, free_port  # noqa: E402

TIMEOUT_S = 30
SEED_BYTES_MAX = 16 * 1024


class Relay:
    """Forwards connections from its port to the broker's, recording client frames."""

    def __init__(self, port, upstream_port, out_dir, per_version):
        self.upstream_port = upstream_port
        self.out_dir = out_dir
        self.per_version = per_version
        self.kept = collections.Counter()
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", port))
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            client, _ = self.listener.accept()
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self.requests, args=(client, upstream), daemon=True).start()
            threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()

    def requests(self, client, upstream):
        buffered = b""

        def frames(chunk):
            nonlocal buffered
            buffered += chunk
            while len(buffered) >= 4:
                (size,) = struct.unpack(">i", buffered[:4])
                if len(buffered) < 4 + size:
                    break
                self.keep(buffered[4:4 + size])
                buffered = buffered[4 + size:]

        pipe(client, upstream, frames)

    def keep(self, frame):
        if len(frame) < 4:
            return
        key, version = struct.unpack(">hh", frame[:4])
        digest = hashlib.sha1(frame).hexdigest()[:16]
        with self.lock:
            if self.kept[(key, version)] >= self.per_version:
                return
            self.kept[(key, version)] += 1
        (self.out_dir / f"k{key:02d}-v{version:02d}-{digest}").write_bytes(frame)


def pipe(source, sink, seen=None):
    """Forwards bytes until either side closes; `seen` gets each chunk forwarded."""
    while True:
        try:
            chunk = source.recv(65536)
        except OSError:
            chunk = b""
        if not chunk:
            close_both(source, sink)
            return
        try:
            sink.sendall(chunk)
        except OSError:
            close_both(source, sink)
            return
        if seen is not None:
            seen(chunk)


def close_both(*sockets):
    for sock in sockets:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def drive_librdkafka(bootstrap):
    common = {"bootstrap.servers": bootstrap}
    admin = AdminClient(common)
    topics = [NewTopic("seeds-a", 3, 1, config={"retention.ms": "600000"}),
              NewTopic("seeds-b", 1, 1)]
    for future in admin.create_topics(topics, operation_timeout=TIMEOUT_S).values():
        future.result(timeout=TIMEOUT_S)
    admin.create_partitions([NewPartitions("seeds-b", 2)])["seeds-b"].result(timeout=TIMEOUT_S)
    resource = ConfigResource("topic", "seeds-a")
    for future in admin.describe_configs([resource]).values():
        future.result(timeout=TIMEOUT_S)
    for codec in ("none", "gzip", "snappy", "lz4", "zstd"):
        producer = Producer({**common, "compression.type": codec, "enable.idempotence": True,
                             "linger.ms": 5})
        for i in range(50):
            producer.produce("seeds-a", key=f"k{i}".encode(), value=f"v{i}".encode() * 10,
                             headers=[("h", b"x")])
        producer.flush(TIMEOUT_S)
    admin.create_topics([NewTopic("seeds-c", 1, 1, config={"segment.bytes": "1048576"})],
                        operation_timeout=TIMEOUT_S)["seeds-c"].result(timeout=TIMEOUT_S)
    producer = Producer({**common, "enable.idempotence": True})
    for i in range(2_500):  # 2.5 MiB: the 1 MiB segments roll, leaving indexes and snapshots
        producer.produce("seeds-c", value=bytes([i % 256]) * 1024)
    producer.flush(TIMEOUT_S)
    txn = Producer({**common, "transactional.id": "seeds-txn"})
    txn.init_transactions(TIMEOUT_S)
    consumer = Consumer({**common, "group.id": "seeds-group", "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    consumer.subscribe(["seeds-a"])
    seen = 0
    while seen < 100:
        message = consumer.poll(1.0)
        if message is not None and message.error() is None:
            seen += 1
    consumer.commit(asynchronous=False)
    txn.begin_transaction()
    txn.produce("seeds-b", value=b"in a transaction")
    txn.send_offsets_to_transaction(consumer.position(consumer.assignment()),
                                    consumer.consumer_group_metadata())
    txn.commit_transaction(TIMEOUT_S)
    consumer.close()
    admin.delete_records([TopicPartition("seeds-a", 0, 1)])
    list(admin.list_consumer_groups().result(timeout=TIMEOUT_S).valid)
    admin.describe_consumer_groups(["seeds-group"])["seeds-group"].result(timeout=TIMEOUT_S)
    for future in admin.delete_topics(["seeds-b"], operation_timeout=TIMEOUT_S).values():
        future.result(timeout=TIMEOUT_S)


def drive_acls(bootstrap):
    """CreateAcls, DescribeAcls and DeleteAcls (the broker runs the authorizer with the
    anonymous client as super user)."""
    from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation,
                                       AclPermissionType, ResourcePatternType, ResourceType)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    acls = [AclBinding(ResourceType.TOPIC, "seeds-", ResourcePatternType.PREFIXED,
                       "User:alice", "*", AclOperation.READ, AclPermissionType.ALLOW),
            AclBinding(ResourceType.GROUP, "seeds-group", ResourcePatternType.LITERAL,
                       "User:bob", "10.0.0.1", AclOperation.ALL, AclPermissionType.DENY)]
    for future in admin.create_acls(acls).values():
        future.result(timeout=TIMEOUT_S)
    every = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                             AclOperation.ANY, AclPermissionType.ANY)
    matching = AclBindingFilter(ResourceType.TOPIC, "seeds-a", ResourcePatternType.MATCH, None,
                                None, AclOperation.ANY, AclPermissionType.ANY)
    admin.describe_acls(matching).result(timeout=TIMEOUT_S)
    for future in admin.delete_acls([every]).values():
        future.result(timeout=TIMEOUT_S)


def drive_kafka_python(bootstrap):
    from kafka import KafkaConsumer, KafkaProducer
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for i in range(20):
        producer.send("seeds-a", value=b"kafka-python %d" % i)
    producer.flush(TIMEOUT_S)
    producer.close()
    consumer = KafkaConsumer("seeds-a", bootstrap_servers=bootstrap, group_id="seeds-kp",
                             auto_offset_reset="earliest", consumer_timeout_ms=3000)
    for _ in consumer:
        pass
    consumer.commit()
    consumer.close()


def harvest(data_dir, seeds):
    """Seeds for the file and record targets from the stopped broker's data dir."""
    targets = ("records", "storage_files", "internal_records", "config_text")
    out = {name: seeds / name for name in targets}
    for path in out.values():
        path.mkdir(parents=True, exist_ok=True)

    def write(target, content):
        digest = hashlib.sha1(content).hexdigest()[:16]
        (out[target] / digest).write_bytes(content)

    for log in sorted(data_dir.rglob("*.log")):
        internal = log.parent.name.startswith("__")
        # Small batches only: libFuzzer mutates a seed as a whole (-max_len).
        small = [batch for batch in batches(log.read_bytes()) if len(batch) <= SEED_BYTES_MAX]
        for batch in small[:3]:
            write("records", b"\x00" + batch)
            if internal:
                for key, value in records_of(batch):
                    # internal_records: selector, key length, key, value (odd: a tombstone).
                    selector = 0 if "offsets" in log.parent.name else 1
                    write("internal_records", bytes([selector]) + struct.pack("<H", len(key))
                          + key + (value or b""))
        index = log.with_suffix(".index")
        times = log.with_suffix(".timeindex")
        if index.exists() and times.exists():
            offsets = index.read_bytes()
            write("storage_files", b"\x00" + struct.pack("<QH", log.stat().st_size,
                                                        len(offsets))
                  + offsets + times.read_bytes())
    for path in data_dir.rglob("*"):
        if path.name.startswith("clean-stop-") and path.is_file():
            write("storage_files", b"\x01" + path.read_bytes())
        elif path.suffix == ".snapshot":
            write("storage_files", b"\x02" + path.read_bytes())
        elif path.suffix == ".toml":
            write("config_text", b"\x00" + path.read_bytes())
    # config_text's other inputs: a config file, topic overrides, a voter list.
    write("config_text", b"\x01listen = \"127.0.0.1:9092\"\ncores = 1\ndurability = \"fsync\"\n")
    write("config_text", b"\x02retention.ms=60000\nsegment.bytes=1048576\ncleanup.policy=delete\n")
    write("config_text", b"\x031@127.0.0.1:9093,2@127.0.0.1:9193,3@[::1]:9293")


def batches(data):
    """The whole v2 batches at the start of a segment's bytes."""
    at = 0
    while at + 12 <= len(data):
        (length,) = struct.unpack(">i", data[at + 8:at + 12])
        end = at + 12 + length
        if length <= 0 or end > len(data):
            return
        yield data[at:end]
        at = end


def records_of(batch):
    """(key, value) of each record of an uncompressed v2 batch; nothing for others."""
    (attributes,) = struct.unpack(">h", batch[21:23])
    if attributes & 7:
        return
    (count,) = struct.unpack(">i", batch[57:61])
    at = 61
    for _ in range(count):
        length, at = varint(batch, at)
        end = at + length
        at += 1  # attributes
        _, at = varint(batch, at)  # timestamp delta
        _, at = varint(batch, at)  # offset delta
        key_len, at = varint(batch, at)
        key = batch[at:at + max(key_len, 0)]
        at += max(key_len, 0)
        value_len, at = varint(batch, at)
        value = None if value_len < 0 else batch[at:at + value_len]
        yield key, value
        at = end


def varint(data, at):
    """A zigzag varint, as Kafka's records encode their fields."""
    shift = raw = 0
    while True:
        byte = data[at]
        at += 1
        raw |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return (raw >> 1) ^ -(raw & 1), at


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=Path, default=ROOT / "fuzz" / "seeds")
    parser.add_argument("--per-version", type=int, default=4)
    args = parser.parse_args()
    requests = args.seeds / "request"
    requests.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="spate-seeds-") as workdir:
        relay_port = free_port()
        broker = Broker(workdir, ["--advertised-listener", f"127.0.0.1:{relay_port}",
                                  "--authorizer", "acl", "--super-users", "User:ANONYMOUS"], 0)
        broker.start()
        try:
            relay = Relay(relay_port, broker.port, requests, args.per_version)
            bootstrap = f"127.0.0.1:{relay_port}"
            drive_librdkafka(bootstrap)
            drive_acls(bootstrap)
            drive_kafka_python(bootstrap)
        finally:
            broker.stop()
        harvest(broker.data_dir, args.seeds)
    kept = sum(relay.kept.values())
    print(f"{kept} request frames over {len(relay.kept)} API versions in {requests}")


if __name__ == "__main__":
    main()
