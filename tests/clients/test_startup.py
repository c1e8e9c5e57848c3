"""Starting and stopping the broker process: clean signals, clear start-up errors, one owner.

Start-up problems must end the process with a non-zero code and one clear sentence (no panic,
no backtrace); a second broker must never share a data directory or a port with a running one;
SIGTERM and SIGINT shut down cleanly even with clients connected.
"""

import functools
import os
import signal
import subprocess
import time

import pytest
from confluent_kafka import TopicPartition

import power_loss_trials
from client_helpers import (Msg, assert_healthy, ck_consume, ck_consumer, ck_partition_count,
                            ck_produce, unique_topic)
from conftest import SPATE_BIN, TARGET, free_port

spate_only = pytest.mark.skipif(TARGET == "kafka", reason="Spate's command line")


def run_spate(*args, timeout=20):
    """Runs the broker binary to completion (it is expected to exit on its own)."""
    return subprocess.run([SPATE_BIN, *args], capture_output=True, timeout=timeout, text=True,
                          stdin=subprocess.DEVNULL)


def assert_clear_failure(done):
    """A start-up failure: non-zero exit, a short message, and no panic or backtrace."""
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "panicked" not in output and "RUST_BACKTRACE" not in output, output
    assert 0 < len(output.strip().splitlines()) <= 5, output


@spate_only
def test_help_explains_every_option():
    """--help exits 0 and documents each option of the issue's command line."""
    done = run_spate("--help")
    assert done.returncode == 0, done.stderr
    for option in ("--config", "--listen", "--advertised-listener", "--data-dir", "--cores",
                   "--node-id", "--default-partitions"):
        assert option in done.stdout, option


@spate_only
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_with_clients_connected_is_a_clean_exit(broker, signum):
    """SIGTERM or SIGINT while a consumer long-polls at the tail and a producer is connected:
    exit code 0 within 10 s, and everything acknowledged is there after a start."""
    topic = unique_topic("signal")
    ck_produce(broker.bootstrap, topic, [Msg(b"k", b"v%d" % i) for i in range(100)])
    consumer = ck_consumer(broker.bootstrap, **{"fetch.wait.max.ms": 5000})
    consumer.assign([TopicPartition(topic, 0, 100)])
    consumer.poll(0.5)
    broker.proc.send_signal(signum)
    try:
        code = broker.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        raise AssertionError("no exit within 10 s of the signal")
    finally:
        consumer.close()
    assert code == 0
    broker.start()
    assert len(ck_consume(broker.bootstrap, topic, 0, 0, 100)) == 100


@spate_only
def test_a_stop_signal_during_a_stalled_start_up_ends_the_process(spate_factory, tmp_path):
    """SIGTERM while start-up waits on a disk that does not answer (recovery's reads of segment
    indexes held by a FUSE layer): the process ends, as after a crash, instead of going on
    with a start-up that may take as long as it likes and then serving; the next start
    recovers everything acknowledged. (The process cannot be gone before the held read
    returns: a read the device holds keeps any process, even one killed with kill -9, from
    exiting. So the disk answers again half a second after the signal.)"""
    why_not = power_loss_trials.available()
    if why_not:
        pytest.skip(why_not)
    gate = tmp_path / "disk-stalled"
    mount = power_loss_trials.Mount(tmp_path / "backing", tmp_path / "mnt", tmp_path / "fs.log",
                                    extra_args=["--hold-reads", ".index", gate])
    mount.start()
    broker = spate_factory("--data-dir", tmp_path / "mnt" / "data", "--cores", "1",
                           "--segment-bytes", "65536", start=False)
    try:
        (tmp_path / "mnt" / "data").mkdir()
        broker.start()
        topic = unique_topic("stalled")
        values = [b"%d-" % i + bytes(1000) for i in range(300)]  # some segments
        ck_produce(broker.bootstrap, topic, [Msg(b"k", value) for value in values],
                   **{"batch.size": 4096})
        broker.kill9()  # recovery must now read the segments' indexes
        gate.touch()
        with open(broker.log_path, "ab") as log:
            log.write(b"\n===== start held by the disk\n")
            log.flush()
            broker.proc = subprocess.Popen(broker.command(), stdin=subprocess.DEVNULL,
                                           stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True)
        deadline = time.monotonic() + 20
        while "starting spate" not in broker.log_text().split("===== start")[-1]:
            assert broker.alive() and time.monotonic() < deadline, broker.log_tail()
            time.sleep(0.05)
        time.sleep(1)
        assert "accepting clients" not in broker.log_text().split("starting spate")[-1], \
            "start-up did not stall on the held reads"
        broker.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        gate.unlink()
        try:
            code = broker.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            raise AssertionError("no exit within 10 s of SIGTERM during start-up")
        this_start = broker.log_text().split("===== start")[-1]
        assert code == 128 + signal.SIGTERM, broker.log_tail()
        assert "stopping during start-up" in this_start
        assert "accepting clients" not in this_start, "start-up went on after the signal"
        broker.start()
        assert [r.value for r in ck_consume(broker.bootstrap, topic, 0, 0, 300)] == values
    finally:
        gate.unlink(missing_ok=True)
        broker.kill9()
        mount.cut()


def test_restart_right_after_kill9(broker):
    """A supervisor restarts a crashed broker at once: a start right after kill -9, on the
    same port and data dir, serves clients (the dead process's sockets must not make the new
    one think its port is taken)."""
    topic = unique_topic("quick")
    ck_produce(broker.bootstrap, topic, [Msg(b"k", b"v")])
    broker.kill9(wait_for_port=False)
    broker.start()
    assert [r.value for r in ck_consume(broker.bootstrap, topic, 0, 0, 1)] == [b"v"]


def test_restart_right_after_clean_stops(broker):
    """Ten times: SIGTERM, wait for the exit, start at once on the same port. A broker that
    exited cleanly has released its port, so every start succeeds."""
    topic = unique_topic("restarts")
    for i in range(10):
        ck_produce(broker.bootstrap, topic, [Msg(b"k", b"%d" % i)])
        broker.restart()
    assert [r.value for r in ck_consume(broker.bootstrap, topic, 0, 0, 10)] == [
        b"%d" % i for i in range(10)]


@spate_only
def test_second_broker_on_the_same_data_dir_is_refused(broker):
    """Another process pointed at a data dir in use exits with a clear message; the first
    broker keeps serving and its files are untouched."""
    topic = unique_topic("owner")
    ck_produce(broker.bootstrap, topic, [Msg(b"k", b"v")])
    done = run_spate("--listen", f"127.0.0.1:{free_port()}", "--data-dir",
                     str(broker.data_dir), "--cores", "1")
    assert_clear_failure(done)
    assert broker.alive()
    assert_healthy(broker.bootstrap)
    assert [r.value for r in ck_consume(broker.bootstrap, topic, 0, 0, 1)] == [b"v"]


@spate_only
def test_second_broker_on_the_same_port_is_refused(broker, tmp_path):
    """Another process asked to listen on a port in use exits with a clear message instead of
    sharing the port through SO_REUSEPORT; every later connection still reaches the first
    broker (each of 20 fresh clients finds the topic only the first broker has)."""
    topic = unique_topic("port")
    ck_produce(broker.bootstrap, topic, [Msg(b"k", b"v")])
    done = run_spate("--listen", broker.bootstrap, "--data-dir", str(tmp_path / "other"),
                     "--cores", "1")
    assert_clear_failure(done)
    assert "use" in (done.stdout + done.stderr).lower()
    for _ in range(20):
        assert ck_partition_count(broker.bootstrap, topic) == 1


@spate_only
@pytest.mark.parametrize("problem", [
    "data-dir-under-a-file", "cores-zero", "bad-listen", "missing-config", "bad-config-value",
    "unknown-config-key", "connection-cap-zero", "connection-cap-host-name",
    "idle-poll-too-long",
])
def test_startup_problems_end_with_one_clear_sentence(tmp_path, problem):
    """Bad set-ups end the process with a non-zero code and a short message, not a panic."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    config = tmp_path / "spate.toml"
    port = f"127.0.0.1:{free_port()}"
    data = str(tmp_path / "data")
    args = {
        "data-dir-under-a-file": ["--listen", port, "--data-dir", str(blocker / "data")],
        "cores-zero": ["--listen", port, "--data-dir", data, "--cores", "0"],
        "bad-listen": ["--listen", "not-an-address", "--data-dir", data],
        "missing-config": ["--config", str(tmp_path / "missing.toml")],
        "bad-config-value": ["--config", str(config)],
        "unknown-config-key": ["--config", str(config)],
        "connection-cap-zero": ["--listen", port, "--data-dir", data,
                                "--max-connections-per-ip", "0"],
        "connection-cap-host-name": ["--listen", port, "--data-dir", data,
                                     "--max-connections-per-ip-overrides", "localhost:5"],
        "idle-poll-too-long": ["--listen", port, "--data-dir", data,
                               "--idle-poll-time-us", "100001"],
    }[problem]
    if problem == "bad-config-value":
        config.write_text(f'listen = "{port}"\ndata-dir = "{data}"\ndefault-partitions = "many"\n')
    if problem == "unknown-config-key":
        config.write_text(f'listen = "{port}"\ndata-dir = "{data}"\nno-such-option = 3\n')
    done = run_spate(*args)
    assert_clear_failure(done)
    says = {"connection-cap-zero": "refuses every client",
            "connection-cap-host-name": "not an IP address",
            "idle-poll-too-long": "too long"}.get(problem, "")
    assert says in done.stdout + done.stderr


@spate_only
def test_config_file_uses_the_option_names(spate_factory, tmp_path):
    """A TOML file with the long option names configures the broker: default-partitions = 3
    gives auto-created topics 3 partitions (command-line flags still win for the rest)."""
    config = tmp_path / "spate.toml"
    config.write_text("default-partitions = 3\n")
    broker = spate_factory("--default-partitions", None, "--config", str(config))
    topic = unique_topic("toml")
    ck_produce(broker.bootstrap, topic, [Msg(b"k", b"v")])
    assert ck_partition_count(broker.bootstrap, topic) == 3


def test_shards_run_on_the_cpus_the_process_may_use(spate_factory):
    """Started under `taskset -c <last CPU>` with one core, the shard runs on that CPU: glommio
    alone spreads shards over every online CPU, and put it on CPU 0, beside whatever the
    operator kept CPU 0 for (a load generator, interrupts)."""
    if TARGET == "kafka":
        pytest.skip("Spate's shard placement")
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs")
    last = cpus[-1]
    broker = spate_factory("--cores", "1", start=False)
    broker.preexec = lambda: os.sched_setaffinity(0, {last})
    broker.start()
    tasks = f"/proc/{broker.pid}/task"
    names = {int(tid): open(f"{tasks}/{tid}/comm").read().strip() for tid in os.listdir(tasks)}
    shards = [tid for tid, name in names.items() if name.startswith("spate-shard")]
    assert shards, names
    assert {tid: os.sched_getaffinity(tid) for tid in shards} == {tid: {last} for tid in shards}


def shard_states(pid, samples=50, every=0.01):
    """The scheduler states (R running or runnable, S sleeping, ...) of the process's shard
    threads, sampled `samples` times. A shard's blocking-pool threads carry its name too; the
    shard is the first of them (it starts the others)."""
    tasks = f"/proc/{pid}/task"
    first = {}
    for tid in sorted(os.listdir(tasks), key=int):
        name = open(f"{tasks}/{tid}/comm").read().strip()
        if name.startswith("spate-shard"):
            first.setdefault(name, tid)
    shards = list(first.values())
    assert shards
    states = []
    for _ in range(samples):
        for tid in shards:
            states.append(open(f"{tasks}/{tid}/stat").read().rsplit(")", 1)[1].split()[0])
        time.sleep(every)
    return states


@spate_only# Serial: on a loaded machine an idle shard that wakes on its timers waits to run (R) as often
# as it sleeps (S).
@pytest.mark.serial
def test_idle_poll_time_keeps_a_shard_polling_instead_of_sleeping(spate_factory):
    """--idle-poll-time-us: a shard out of work polls that long before it sleeps in the kernel.
    Its timers wake it every few milliseconds, so with 100 ms it polls all the time (running,
    R) and still serves; without the option the idle shard sleeps (S). Each broker on a CPU
    of its own: on the polling one's, the idle shard's timer wake-ups waited to run (R)
    behind the polling shard often enough to fail the check (36 of 50 samples asleep)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs")
    polling = spate_factory("--cores", "1", "--idle-poll-time-us", "100000", start=False)
    sleeping = spate_factory("--cores", "1", start=False)
    for broker, cpu in ((polling, cpus[-1]), (sleeping, cpus[0])):
        broker.preexec = functools.partial(os.sched_setaffinity, 0, {cpu})
        broker.start()
    for broker in (polling, sleeping):
        topic = unique_topic("poll")
        ck_produce(broker.bootstrap, topic, [Msg(b"k", b"v")])
        assert [r.value for r in ck_consume(broker.bootstrap, topic)] == [b"v"]
    time.sleep(0.5)
    polled = shard_states(polling.pid)
    slept = shard_states(sleeping.pid)
    assert polled.count("R") >= 0.8 * len(polled), polled
    assert slept.count("S") >= 0.8 * len(slept), slept


def test_the_broker_opts_out_of_transparent_huge_pages(broker):
    """The broker's memory is never collapsed into huge pages behind the shards' backs:
    mimalloc madvises its arenas for THP, and khugepaged then held a core for milliseconds
    (PR_SET_THP_DISABLE, shown by the kernel as `THP_enabled: 0`)."""
    if TARGET == "kafka":
        pytest.skip("Spate's memory settings")
    status = open(f"/proc/{broker.pid}/status").read()
    if "THP_enabled:" not in status:
        pytest.skip("kernel does not report THP_enabled (before Linux 5.0)")
    assert "THP_enabled:\t0" in status, status
    rollup = open(f"/proc/{broker.pid}/smaps_rollup").read()
    anon_huge_kib = int(rollup.split("AnonHugePages:")[1].split()[0])
    # What the runtime allocated before main() may sit in a huge page; nothing after it does.
    assert anon_huge_kib <= 8 * 1024, rollup
