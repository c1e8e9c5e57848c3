"""Fixtures that run a real broker process for the client integration tests.

Every test gets its own broker: a fresh port on 127.0.0.1 and a fresh data directory under
pytest's tmp_path. The broker's stdout and stderr go to a log file in that directory; when a
test fails, the log is attached to the failure report. Tests can run in parallel (pytest -n,
pytest-xdist): ports are reserved machine-wide (free_port), Java builds are shared under a
lock (java_build.py), and the tests marked `serial` are left to a run of their own (README.md).

Environment:
    SPATE_BIN           the broker binary (default target/release/spate of this
                        repository, or of $CARGO_TARGET_DIR)
    SPATE_TEST_TARGET   "spate" (default) or "kafka": run the very same tests against Apache
                        Kafka, to check that the tests themselves expect Kafka's behaviour
    KAFKA_LIBS          Kafka's jars for SPATE_TEST_TARGET=kafka (default
                        ~/.cache/spate/kafka-4.3.1/libs, filled by scripts/kafka-reference.sh
                        fetch)
    SPATE_KEEP_DATA     set to keep each test's data directory (removed at teardown otherwise)
"""

import base64
import contextlib
import fcntl
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from kafka_wire import api_versions_answered

# The repository's own build, wherever it was cloned (or CARGO_TARGET_DIR, as cargo does).
_TARGET_DIR = Path(os.environ.get("CARGO_TARGET_DIR",
                                  Path(__file__).resolve().parents[2] / "target"))
SPATE_BIN = os.environ.get("SPATE_BIN", str(_TARGET_DIR / "release" / "spate"))
TARGET = os.environ.get("SPATE_TEST_TARGET", "spate")
KAFKA_LIBS = os.environ.get(
    "KAFKA_LIBS", os.path.expanduser("~/.cache/spate/kafka-4.3.1/libs"))

START_TIMEOUT_S = 60.0 if TARGET == "kafka" else 30.0
STOP_TIMEOUT_S = 30.0
# What Rust writes to stderr (the broker's log) before aborting: a panic, a failed allocation.
CRASH_MARKS = ("panicked", "memory allocation of")


# Ports for brokers, listeners and other servers the tests start. They come from below the
# kernel's ephemeral range, so no client's outgoing connection can be holding one (bind(0)
# would hand out a port from that range), and below the ports the measuring scripts take
# (20000-39999, 19092: scripts/baseline.sh, kafka-reference.sh, measure-compaction.py), so a
# test run never takes a port from a measurement. Each port handed out is reserved machine-wide
# for PORT_RESERVE_S by a file in PORT_RESERVATIONS: parallel workers (pytest -n), and other
# test runs on the same machine, never get the same port while a test may still use it, also
# across a broker's restarts on its port.
MACHINE_LOCKS = Path(tempfile.gettempdir()) / "spate-tests"
PORT_RESERVATIONS = MACHINE_LOCKS / "ports"
PORT_RESERVE_S = 30 * 60  # longer than any test (the longest timeout mark is 600 s)
PORTS = (10000, 19000)


def _port_candidates():
    try:
        ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    end = min(PORTS[1], ephemeral_low)
    return range(PORTS[0], end) if end - PORTS[0] >= 4096 else None


_PORTS = _port_candidates()
# Its own generator: seeded trials (crash_trials.py) keep their sequences of random numbers.
_PORT_RANDOM = random.Random()


def _kernel_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _bindable(port):
    # No SO_REUSEADDR: a port with connections of an earlier user in TIME_WAIT is passed over.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _reserve(port):
    """Reserves `port` unless another process (or this one) did within PORT_RESERVE_S."""
    marker = PORT_RESERVATIONS / str(port)
    with open(PORT_RESERVATIONS / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if time.time() - marker.stat().st_mtime < PORT_RESERVE_S:
                return False
        except FileNotFoundError:
            pass
        marker.write_text(f"{os.getpid()}\n")
        return True


@contextlib.contextmanager
def machine_lock(name):
    """A lock that every test process on this machine shares (parallel workers, other runs),
    around steps that are not safe at once, e.g. `mount -o loop` picking a free loop device."""
    MACHINE_LOCKS.mkdir(parents=True, exist_ok=True)
    with open(MACHINE_LOCKS / f"{name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def free_port():
    """A TCP port on 127.0.0.1 that nobody listens on right now and that no other test (of
    this run or another one on this machine) was given in the last PORT_RESERVE_S."""
    PORT_RESERVATIONS.mkdir(parents=True, exist_ok=True)
    for _ in range(10_000):
        port = _PORT_RANDOM.choice(_PORTS) if _PORTS else _kernel_port()
        if _bindable(port) and _reserve(port):
            return port
    raise RuntimeError(f"no free port: every candidate is in use or reserved ({PORT_RESERVATIONS})")


def port_accepts(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def port_listening(port):
    """True when some socket listens on the TCP port (read from /proc, no connection made)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":
                return True
    return False


class Broker:
    """One broker process bound to one port and one data directory.

    The port and the data directory stay the same across restarts, so clients can reconnect
    and the broker finds its own files again.
    """

    def __init__(self, workdir, extra_args, index):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.workdir / "data"
        self.data_dir.mkdir(exist_ok=True)
        self.log_path = self.workdir / f"broker-{index}.log"
        self.extra_args = list(extra_args)
        self.port = free_port()
        self.host = "127.0.0.1"
        self.proc = None
        self.starts = 0
        # Runs in the child before exec (limits, capabilities): see test_scale.py.
        self.preexec = None

    @property
    def bootstrap(self):
        return f"{self.host}:{self.port}"

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def command(self):
        """The broker's command line; extra arguments replace a default flag of that name
        (a value of None drops the default flag)."""
        flags = {"--listen": self.bootstrap, "--data-dir": str(self.data_dir), "--cores": "2",
                 "--default-partitions": "1"}
        extra = list(self.extra_args)
        rest = []
        while extra:
            flag = extra.pop(0)
            if flag in flags and extra:
                flags[flag] = extra.pop(0)
            else:
                rest.append(flag)
        pairs = [(flag, value) for flag, value in flags.items() if value is not None]
        return [SPATE_BIN, *(str(part) for pair in pairs for part in pair), *rest]

    def start(self):
        """Starts the process and waits until it answers an ApiVersions request."""
        assert not self.alive(), "broker already running"
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start #{self.starts}: {' '.join(self.command())}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True, preexec_fn=self.preexec)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if not self.alive():
                raise AssertionError(
                    f"broker exited during start-up with code {self.proc.returncode}:\n"
                    + self.log_tail())
            if port_accepts(self.port) and self.ready():
                return self
            time.sleep(0.05)
        self.kill9()
        raise AssertionError(f"broker did not answer ApiVersions within {START_TIMEOUT_S} s:\n"
                             + self.log_tail())

    def ready(self):
        # A request answered, not only an accepted connection: right after a crash the dead
        # process's listening socket can still accept connections it will never serve.
        return api_versions_answered(self.port)

    def stop(self, timeout=STOP_TIMEOUT_S):
        """SIGTERM, then waits for a clean exit; returns the exit code.

        A broker that does not exit within `timeout` is killed and the call fails: a clean
        shutdown that hangs is a bug.
        """
        if not self.alive():
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            raise AssertionError(f"broker did not exit within {timeout} s of SIGTERM")

    def kill9(self, wait_for_port=True):
        """SIGKILL, as a crash would; waits until the process is gone.

        The kernel tears an io_uring down after its process exited, so the dead broker's
        listening sockets can outlive it briefly; by default this also waits until nothing
        listens on the port (test_startup.py covers a restart without waiting).
        """
        if self.alive():
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        deadline = time.monotonic() + 10
        while wait_for_port and port_listening(self.port) and time.monotonic() < deadline:
            time.sleep(0.02)

    def restart(self):
        """Clean stop (SIGTERM) and start on the same port and data directory."""
        code = self.stop()
        assert code == 0, f"broker exited with code {code} on SIGTERM:\n{self.log_tail()}"
        return self.start()

    def close(self):
        self.kill9()

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines=60):
        return "\n".join(self.log_text().splitlines()[-lines:])

    def partition_dir(self, topic, partition):
        return self.data_dir / f"{topic}-{partition}"


class KafkaBroker(Broker):
    """Apache Kafka (KRaft, one node) behind the same interface, to validate the tests."""

    def __init__(self, workdir, extra_args, index):
        super().__init__(workdir, extra_args, index)
        self.controller_port = free_port()
        self.partitions = 1
        args = list(extra_args)
        while args:
            flag = args.pop(0)
            if flag == "--default-partitions":
                self.partitions = int(args.pop(0))
            else:
                raise ValueError(f"no Kafka equivalent for {flag}")
        self.config_path = self.workdir / "server.properties"

    def command(self):
        return ["java", "-Xmx768m", "-XX:+UseG1GC", "-XX:TieredStopAtLevel=1",
                f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
                "-cp", f"{KAFKA_LIBS}/*", "kafka.Kafka", str(self.config_path)]

    def start(self):
        if not self.config_path.exists():
            self._format()
        server_log = self.workdir / "server.log"
        self.server_log_start = server_log.stat().st_size if server_log.exists() else 0
        return Broker.start(self)

    def ready(self):
        # Kafka accepts connections before it is ready to serve; wait for its own log line.
        server_log = self.workdir / "server.log"
        if not server_log.exists():
            return False
        with open(server_log, "rb") as log:
            log.seek(self.server_log_start)
            return b"Kafka Server started" in log.read()

    def stop(self, timeout=STOP_TIMEOUT_S):
        code = super().stop(timeout)
        return 0 if code == 128 + signal.SIGTERM else code  # the JVM's exit code on SIGTERM

    def log_text(self):
        text = super().log_text()
        server_log = self.workdir / "server.log"
        if server_log.exists():
            text += "\n" + server_log.read_text(errors="replace")
        return text

    def _format(self):
        if not Path(KAFKA_LIBS).is_dir():
            pytest.skip(f"no Kafka jars in {KAFKA_LIBS}; run scripts/kafka-reference.sh fetch")
        self.config_path.write_text(f"""\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{self.controller_port}
listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={self.data_dir}
metadata.log.dir={self.workdir / 'metadata'}
num.partitions={self.partitions}
auto.create.topics.enable=true
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
""")
        (self.workdir / "log4j2.properties").write_text(f"""\
rootLogger.level=INFO
rootLogger.appenderRef.file.ref=FILE
appender.file.type=File
appender.file.name=FILE
appender.file.fileName={self.workdir / 'server.log'}
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%d] %p %m (%c)%n
""")
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        done = subprocess.run(
            ["java", "-cp", f"{KAFKA_LIBS}/*", "kafka.tools.StorageTool", "format",
             f"--cluster-id={cluster_id}", "-c", str(self.config_path)], capture_output=True, timeout=120)
        assert done.returncode == 0, f"formatting Kafka's storage failed: {done.stderr}"


def pytest_sessionstart(session):
    """Under pytest-xdist (-n N), the controller resolves the Java programs' Maven classpaths
    once before the workers start (java_build.py): no test then waits, within its time bound,
    for another worker's download. A failure here is left to the tests (they skip)."""
    config = session.config
    if not hasattr(config, "workerinput") and not config.option.collectonly \
            and (config.getoption("numprocesses", None) or 0) > 0:
        import java_build

        for pom, timeout in ((java_build.CLIENTS_POM, 240), (java_build.CONNECT_POM, 300)):
            java_build.resolve_classpath(pom, timeout)


def pytest_configure(config):
    # Under pytest-xdist's load scheduling, a worker gets one more test whenever it finishes
    # one (instead of chunks of consecutive tests), so that the long tests sorted first
    # (below) spread over the workers. Tests of a file share no state (each has its own
    # broker) beyond a few cheap module fixtures.
    if getattr(config.option, "maxschedchunk", False) is None:
        config.option.maxschedchunk = 1


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist, the tests with a longer time bound (their timeout mark: Java
    clients, crash trials, rebalances) go first, so that they spread over the workers from
    the start instead of one of them starting last; every worker sorts alike."""
    if hasattr(config, "workerinput"):
        def bound(item):
            mark = item.get_closest_marker("timeout")
            return -(mark.args[0] if mark and mark.args else 0)
        items.sort(key=bound)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attaches the logs of the test's brokers to a failed test's report."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for broker in getattr(item, "_spate_brokers", []):
            report.sections.append((f"broker log {broker.log_path}", broker.log_tail(200)))


@pytest.fixture
def spate_factory(tmp_path, request):
    """Starts brokers with extra arguments: `spate_factory("--default-partitions", "4")`.

    Every broker started here is killed at teardown, whatever the test did.
    """
    brokers = []
    request.node._spate_brokers = brokers

    def start(*extra_args, start=True):
        if TARGET == "spate" and not os.access(SPATE_BIN, os.X_OK):
            pytest.fail(f"broker binary {SPATE_BIN} is missing; build it or set SPATE_BIN")
        cls = KafkaBroker if TARGET == "kafka" else Broker
        broker = cls(tmp_path / f"broker{len(brokers)}", extra_args, len(brokers))
        brokers.append(broker)
        return broker.start() if start else broker

    yield start
    for broker in brokers:
        broker.close()
        # Data directories can be large (preallocated segments); the logs stay for debugging.
        if not os.environ.get("SPATE_KEEP_DATA"):
            shutil.rmtree(broker.data_dir, ignore_errors=True)
    # A panic aborts the broker; a test that never talked to it again would still pass.
    crashed = [b for b in brokers
               if TARGET == "spate" and any(mark in b.log_text() for mark in CRASH_MARKS)]
    if crashed:
        pytest.fail(f"the broker panicked or aborted; see {crashed[0].log_path}:\n"
                    + crashed[0].log_tail(40), pytrace=False)


@pytest.fixture
def broker(spate_factory):
    """A broker with the default flags (topics auto-created with 1 partition)."""
    return spate_factory()


@pytest.fixture
def broker4(spate_factory):
    """A broker that auto-creates topics with 4 partitions."""
    return spate_factory("--default-partitions", "4")
