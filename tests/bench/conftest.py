"""Fixtures for the spate-bench tests: a real broker, the spate-bench binary, and helpers.

Environment:
    SPATE_BIN               broker binary (default target/release/spate of this repository)
    SPATE_BENCH_BIN         spate-bench binary; without it the fixture builds bench/ with cargo
    SPATE_BENCH_BOOTSTRAP   use this running broker instead of starting Spate (for example the
                            Apache Kafka reference from scripts/kafka-reference.sh)
    SPATE_BENCH_BROKER_PID  pid of that broker (found from its listening port when not given);
                            the pause test sends it SIGSTOP/SIGCONT
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# The repository's own build, wherever it was cloned (or CARGO_TARGET_DIR, as cargo does).
_TARGET_DIR = Path(os.environ.get("CARGO_TARGET_DIR",
                                  Path(__file__).resolve().parents[2] / "target"))
SPATE_BIN = os.environ.get("SPATE_BIN", str(_TARGET_DIR / "release" / "spate"))
BROKER_START_TIMEOUT_S = 30.0
BROKER_STOP_TIMEOUT_S = 15.0
# A release build of librdkafka and the bench from scratch takes minutes on two busy cores.
BUILD_TIMEOUT_S = 1800
# Partitions of the topics the broker creates on first use, and of the bench's topics.
PARTITIONS = 4


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_accepts(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def listening_pid(port):
    """The pid of the process listening on 127.0.0.1:port or 0.0.0.0:port, or None.

    Reads /proc/net/tcp for the listening socket's inode, then finds the process holding it.
    """
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{inode}]")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    return int(proc.name)
        except OSError:
            continue
    return None


class Broker:
    """The broker under test: either a Spate process this fixture owns, or an external one."""

    def __init__(self, bootstrap, pid, proc=None, workdir=None):
        self.bootstrap = bootstrap
        self.pid = pid
        self.proc = proc
        self.workdir = workdir

    def log_tail(self, lines=40):
        if not self.workdir:
            return ""
        try:
            text = (Path(self.workdir) / "broker.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def start_spate():
    workdir = tempfile.mkdtemp(prefix="spate-bench-test-")
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    # One core for the broker leaves the other to the bench on a two-core machine.
    command = [SPATE_BIN, "--listen", bootstrap, "--data-dir", str(Path(workdir) / "data"),
               "--cores", "1", "--default-partitions", str(PARTITIONS)]
    (Path(workdir) / "data").mkdir()
    log = open(Path(workdir) / "broker.log", "wb")
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    broker = Broker(bootstrap, proc.pid, proc, workdir)
    deadline = time.monotonic() + BROKER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"spate exited during start-up ({proc.returncode}):\n"
                               + broker.log_tail())
        if port_accepts(port):
            return broker
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("spate did not accept connections in time:\n" + broker.log_tail())


def stop_spate(broker):
    proc = broker.proc
    if proc.poll() is None:
        # A broker left stopped by a failed pause test must be able to see SIGTERM.
        os.kill(proc.pid, signal.SIGCONT)
        proc.terminate()
        try:
            proc.wait(timeout=BROKER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=BROKER_STOP_TIMEOUT_S)
    shutil.rmtree(broker.workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def broker():
    external = os.environ.get("SPATE_BENCH_BOOTSTRAP")
    if external:
        pid = os.environ.get("SPATE_BENCH_BROKER_PID")
        port = int(external.rsplit(":", 1)[1])
        yield Broker(external, int(pid) if pid else listening_pid(port))
        return
    if not os.access(SPATE_BIN, os.X_OK):
        pytest.skip(f"no broker: {SPATE_BIN} is missing and SPATE_BENCH_BOOTSTRAP is not set")
    spate = start_spate()
    try:
        yield spate
    finally:
        stop_spate(spate)


# Set by pytest_sessionstart: (path, None) or (None, reason the build failed).
_BENCH_BUILD = (None, "not built")


def build_bench():
    """Builds bench/ with cargo and returns (executable, None) or (None, why not).

    cargo prints where it put the executable; that works whether bench/ is a workspace member
    (root target/) or still builds alone.
    """
    try:
        build = subprocess.run(
            ["cargo", "build", "--release", "--manifest-path",
             str(REPO / "bench" / "Cargo.toml"), "--message-format=json-render-diagnostics"],
            cwd=REPO, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return None, f"cargo build of bench/ took more than {BUILD_TIMEOUT_S} s"
    if build.returncode != 0:
        return None, f"cargo build of bench/ failed:\n{build.stderr[-4000:]}"
    for line in build.stdout.splitlines():
        message = json.loads(line)
        if message.get("reason") == "compiler-artifact" and message.get("executable") \
                and message["target"]["name"] == "spate-bench":
            return message["executable"], None
    return None, "cargo did not report a spate-bench executable"


def pytest_sessionstart(session):
    # Built here, before any test starts, so that the per-test timeout does not count a
    # first build of librdkafka.
    global _BENCH_BUILD
    given = os.environ.get("SPATE_BENCH_BIN")
    _BENCH_BUILD = (given, None) if given else build_bench()


@pytest.fixture(scope="session")
def bench_bin():
    path, failure = _BENCH_BUILD
    if failure:
        pytest.fail(failure)
    return path


@pytest.fixture
def topic(request):
    """A topic name no other test (or earlier run) uses."""
    name = request.node.name.replace("[", "-").replace("]", "").replace("_", "-")
    return f"bench-{name}-{uuid.uuid4().hex[:8]}"
