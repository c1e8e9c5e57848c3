"""Three-node clusters of Spate or of Apache Kafka on 127.0.0.1, for the measuring scripts
(scripts/measure-metadata.py, scripts/measure-replication.py --against-kafka).

Each node is a broker and a controller voter on fresh temporary data dirs under one root:
- Spate: `spate --cores 1 --node-id N --controller-listen ... --controller-quorum-voters ...`
  (`--min-free-bytes 0`), plus what a subclass's `node_args` adds;
- Kafka (4.3.1, `KAFKA_VERSION`, from the Maven jars scripts/kafka-reference.sh fetches into
  ~/.cache/spate/kafka-<version>/libs: `fetch_kafka()`): KRaft combined mode
  (`process.roles=broker,controller`, static `controller.quorum.voters`), each node's storage
  formatted with one cluster id, Kafka's shipped thread counts and socket buffers, G1 with
  kafka-run-class.sh's flags and a fixed heap (`-Xms`=`-Xmx`), plus the properties a
  subclass's `extra_properties` adds.

A `Process` is one node's process (start, SIGTERM, kill -9, its log); a `Cluster` starts,
stops and removes the three. Every process runs in its own session and is killed by
`cleanup()`.
"""

import base64
import os
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "clients"))

from kafka_wire import frame, request_header  # noqa: E402

KAFKA_VERSION = os.environ.get("KAFKA_VERSION", "4.3.1")
KAFKA_LIBS = Path.home() / ".cache" / "spate" / f"kafka-{KAFKA_VERSION}" / "libs"
KAFKA_SCRIPT = ROOT / "scripts" / "kafka-reference.sh"
WAIT_LIMIT_S = 900


def fetch_kafka():
    """Kafka's jars into KAFKA_LIBS (once; Maven Central through mvn)."""
    subprocess.run([str(KAFKA_SCRIPT), "fetch"], check=True)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def raise_nofile():
    """The child's soft open-file limit up to its hard limit."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def recv_exact(sock, size):
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(min(size - len(data), 1 << 20))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {size} bytes")
        data += chunk
    return bytes(data)


METADATA_ALL_V7 = frame(request_header(3, 7, 7) + struct.pack(">i", -1) + b"\x00")


def metadata_all(sock):
    """One Metadata v7 request for all topics on `sock`: the answer after the correlation
    id, and its size on the wire."""
    sock.sendall(METADATA_ALL_V7)
    (size,) = struct.unpack(">i", recv_exact(sock, 4))
    payload = recv_exact(sock, size)
    return payload[4:], size + 4


def parse_metadata_v7(data):
    """(broker ids, controller id, {topic: [(error, leader, replicas, isr)]})."""
    position = 4
    (count,) = struct.unpack_from(">i", data, position)
    position += 4
    brokers = set()
    for _ in range(count):
        node_id, size = struct.unpack_from(">ih", data, position)
        position += 6 + size + 4
        (rack,) = struct.unpack_from(">h", data, position)
        position += 2 + max(rack, 0)
        brokers.add(node_id)
    (size,) = struct.unpack_from(">h", data, position)
    position += 2 + max(size, 0)
    (controller,) = struct.unpack_from(">i", data, position)
    position += 4
    (count,) = struct.unpack_from(">i", data, position)
    position += 4
    topics = {}
    for _ in range(count):
        _, size = struct.unpack_from(">hh", data, position)
        position += 4
        name = data[position:position + size].decode()
        position += size + 1
        (partition_count,) = struct.unpack_from(">i", data, position)
        position += 4
        partitions = []
        for _ in range(partition_count):
            error, _, leader, _ = struct.unpack_from(">hiii", data, position)
            position += 14
            lists = []
            for _ in range(3):  # replicas, isr, offline
                (n,) = struct.unpack_from(">i", data, position)
                lists.append(list(struct.unpack_from(f">{n}i", data, position + 4)))
                position += 4 + 4 * n
            partitions.append((error, leader, lists[0], lists[1]))
        topics[name] = partitions
    return brokers, controller, topics


def node_metadata(port):
    """parse_metadata_v7 of one node's answer, or None when it does not answer."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            data, _ = metadata_all(sock)
        return parse_metadata_v7(data)
    except (OSError, struct.error, ConnectionError):
        return None


class Process:
    """One node's process: its command, its log, start, SIGTERM, kill -9."""

    def __init__(self, node_id, port, workdir):
        self.node_id = node_id
        self.port = port
        self.dir = workdir
        self.proc = None
        self.log_from = 0

    @property
    def pid(self):
        return self.proc.pid

    def log_since_start(self, log_name):
        """What the node logged since its latest start."""
        with open(self.dir / log_name, "rb") as log:
            log.seek(self.log_from)
            return log.read().decode(errors="replace")

    def check_alive(self):
        if self.proc.poll() is not None:
            raise SystemExit(f"node {self.node_id} exited with {self.proc.returncode}; "
                             f"see {self.dir}")

    def start(self, command, log_name, env=None, cpus=None):
        """Starts the process (on the CPUs `cpus` when given, else on this process's);
        `log_name` is the node's log, read from where it ends now."""
        path = self.dir / log_name
        self.log_from = path.stat().st_size if path.exists() else 0
        log = open(self.dir / "stdout.log", "ab")

        def prepare():
            raise_nofile()
            if cpus is not None:
                os.sched_setaffinity(0, cpus)

        self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True,
                                     preexec_fn=prepare, env=env)
        log.close()

    def term(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, limit=WAIT_LIMIT_S):
        if self.proc:
            try:
                self.proc.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                self.kill9()
                raise SystemExit(f"node {self.node_id} did not exit within {limit} s")

    def kill9(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=60)
        while self.proc and alive(self.proc.pid):
            time.sleep(0.02)


class Cluster:
    """Three nodes of one side; subclasses say how a node starts."""

    name = ""

    def __init__(self, count=3):
        self.root = Path(tempfile.mkdtemp(prefix=f"cluster-{self.name}-"))
        self.controller_ports = [free_port() for _ in range(count)]
        self.nodes = []
        for i in range(count):
            workdir = self.root / f"node{i + 1}"
            workdir.mkdir()
            self.nodes.append(Process(i + 1, free_port(), workdir))
        self.voters = ",".join(f"{i + 1}@127.0.0.1:{port}"
                               for i, port in enumerate(self.controller_ports))

    @property
    def bootstrap(self):
        return ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def node(self, node_id):
        return self.nodes[node_id - 1]

    def start_all(self):
        for node in self.nodes:
            self.start_node(node)

    def wait_formed(self, limit=WAIT_LIMIT_S):
        """Until every node's Metadata lists every node as a broker and a controller."""
        began = time.monotonic()
        wanted = set(range(1, len(self.nodes) + 1))
        pending = list(self.nodes)
        while pending:
            pending = [n for n in pending if not self.formed_at(n, wanted)]
            if not pending:
                break
            for node in self.nodes:
                node.check_alive()
            if time.monotonic() - began > limit:
                raise SystemExit(f"{self.name}: not formed within {limit} s; see {self.root}")
            time.sleep(0.2)
        return time.monotonic() - began

    @staticmethod
    def formed_at(node, wanted):
        found = node_metadata(node.port)
        return found is not None and found[0] == wanted and found[1] >= 0

    def term_all(self):
        began = time.monotonic()
        for node in self.nodes:
            node.term()
        for node in self.nodes:
            node.wait()
        return time.monotonic() - began

    def kill_all(self):
        for node in self.nodes:
            node.kill9()

    def cleanup(self):
        self.kill_all()
        shutil.rmtree(self.root, ignore_errors=True)


def spread_cpu(index):
    """The CPU for the `index`th (from 0) of several single-core nodes on this machine, in
    turn over the CPUs this process may use."""
    allowed = sorted(os.sched_getaffinity(0))
    return allowed[index % len(allowed)]


class SpateCluster(Cluster):
    """`spread`: each node on one CPU of its own, in turn over the CPUs (`spread_cpu`).
    Without it every node may use every CPU, and a node pins its shard to the first of
    them: with `--cores 1`, all three shards share CPU 0."""

    name = "spate"

    def __init__(self, binary, spread=False):
        self.binary = binary
        self.spread = spread
        super().__init__()

    def node_args(self, node):
        """More command-line arguments for `node`'s next start."""
        return []

    def start_node(self, node):
        command = [self.binary, "--listen", f"127.0.0.1:{node.port}",
                   "--data-dir", str(node.dir / "data"), "--cores", "1",
                   "--min-free-bytes", "0", "--node-id", str(node.node_id),
                   "--controller-listen", f"127.0.0.1:{self.controller_ports[node.node_id - 1]}",
                   "--controller-quorum-voters", self.voters, *self.node_args(node)]
        cpus = {spread_cpu(node.node_id - 1)} if self.spread else None
        node.start(command, "stdout.log", cpus=cpus)


class KafkaCluster(Cluster):
    name = "kafka"

    def __init__(self, heap):
        self.heap = heap
        super().__init__()
        cluster_id = base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
        for node in self.nodes:
            self.write_config(node)
        formats = [subprocess.Popen(
            ["java", "-cp", f"{KAFKA_LIBS}/*",
             f"-Dlog4j2.configurationFile={node.dir}/log4j2.properties",
             "kafka.tools.StorageTool", "format", "-t", cluster_id,
             "-c", str(node.dir / "server.properties")],
            stdout=open(node.dir / "format.log", "wb"), stderr=subprocess.STDOUT)
            for node in self.nodes]
        for node, done in zip(self.nodes, formats):
            if done.wait(timeout=300) != 0:
                self.cleanup()
                raise SystemExit("kafka-storage format failed:\n"
                                 + (node.dir / "format.log").read_text(errors="replace"))

    def extra_properties(self):
        """More server.properties lines (`key=value`), written at each start."""
        return []

    def write_config(self, node):
        controller = self.controller_ports[node.node_id - 1]
        extra = "".join(f"{line}\n" for line in self.extra_properties())
        (node.dir / "server.properties").write_text(f"""\
process.roles=broker,controller
node.id={node.node_id}
controller.quorum.voters={self.voters}
listeners=PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=PLAINTEXT://127.0.0.1:{node.port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={node.dir}/data
metadata.log.dir={node.dir}/metadata
num.network.threads=3
num.io.threads=8
socket.send.buffer.bytes=102400
socket.receive.buffer.bytes=102400
socket.request.max.bytes=104857600
log.segment.bytes=1073741824
num.recovery.threads.per.data.dir=1
num.partitions=1
default.replication.factor=3
offsets.topic.replication.factor=3
transaction.state.log.replication.factor=3
group.initial.rebalance.delay.ms=0
{extra}""")
        (node.dir / "log4j2.properties").write_text(f"""\
rootLogger.level=INFO
rootLogger.appenderRef.file.ref=FILE
appender.file.type=File
appender.file.name=FILE
appender.file.fileName={node.dir}/server.log
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%d] %p %m (%c)%n
""")

    def start_node(self, node):
        self.write_config(node)
        command = ["java", f"-Xms{self.heap}", f"-Xmx{self.heap}", "-server", "-XX:+UseG1GC",
                   "-XX:MaxGCPauseMillis=20", "-XX:InitiatingHeapOccupancyPercent=35",
                   "-XX:+ExplicitGCInvokesConcurrent", "-XX:MaxInlineLevel=15",
                   "-Djava.awt.headless=true",
                   f"-Dlog4j2.configurationFile={node.dir}/log4j2.properties",
                   "-cp", f"{KAFKA_LIBS}/*", "kafka.Kafka", str(node.dir / "server.properties")]
        node.start(command, "server.log")
