"""tuning/ethtool.sh against real veth interfaces in a network namespace of the test's own.

Everything these tests change lives in that namespace: the veth pair's queue count (ethtool
-L), its RPS/RFS/XPS files and nothing global (--only nic, so the host's CPU governor, THP and
disks are not even read for changes). The namespace is deleted afterwards. veth has no IRQs,
rings, coalescing or RSS table, so those come out as "skip" lines, which the tests check too:
they are the "driver does not support this setting" path on a real driver.
"""

import os
import shutil
import subprocess
import uuid

import pytest

from conftest import ETHTOOL_SH, SYSCTL_SH, parse_commands, rollback_path, run

CMD_TIMEOUT_S = 30


def _netns_available():
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "ip (iproute2) is not installed"
    if shutil.which("ethtool") is None:
        return "ethtool is not installed"
    name = f"spate-probe-{uuid.uuid4().hex[:8]}"
    try:
        made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True,
                              timeout=CMD_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"ip netns is unavailable: {error}"
    if made.returncode != 0:
        return f"ip netns is unavailable: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=CMD_TIMEOUT_S,
                   check=False)
    return None


SKIP_REASON = _netns_available()
pytestmark = pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")


def online_cpus():
    with open("/sys/devices/system/cpu/online", encoding="utf-8") as f:
        spec = f.read().strip()
    cpus = []
    for part in spec.split(","):
        low, _, high = part.partition("-")
        cpus.extend(range(int(low), int(high or low) + 1))
    return cpus


@pytest.fixture
def netns(tmp_path):
    """A fresh namespace with a veth pair va/vb of four queues each (one, if the kernel
    refuses several). Yields (name, queues, env)."""
    name = f"spate-tuning-{uuid.uuid4().hex[:8]}"
    run(["ip", "netns", "add", name], check_rc=0)
    try:
        made = run(["ip", "-n", name, "link", "add", "va", "numtxqueues", "4", "numrxqueues",
                    "4", "type", "veth", "peer", "name", "vb", "numtxqueues", "4",
                    "numrxqueues", "4"])
        queues = 4
        if made.returncode != 0:
            run(["ip", "-n", name, "link", "add", "va", "type", "veth", "peer", "name", "vb"],
                check_rc=0)
            queues = 1
        run(["ip", "-n", name, "link", "set", "va", "up"], check_rc=0)
        run(["ip", "-n", name, "link", "set", "vb", "up"], check_rc=0)
        env = dict(os.environ)
        env.pop("SPATE_TUNING_ROOT", None)
        env.pop("SPATE_ETHTOOL", None)
        env["SPATE_TUNING_STATE_DIR"] = str(tmp_path / "state")
        yield name, queues, env
    finally:
        run(["ip", "netns", "del", name])


def in_ns(name, *argv):
    return ["ip", "netns", "exec", name, *[str(a) for a in argv]]


def queue_files(name):
    """Every RPS/RFS/XPS file of va (as seen inside the namespace) -> its bytes, plus the
    ethtool -l output, so a test can compare the interface's state byte for byte."""
    script = ("for f in /sys/class/net/va/queues/*/rps_cpus /sys/class/net/va/queues/*/"
              "rps_flow_cnt /sys/class/net/va/queues/*/xps_cpus; do "
              "[ -e \"$f\" ] && printf '%s=%s\\n' \"$f\" \"$(od -An -tx1 \"$f\" | tr -d ' \\n')\"; "
              "done; ethtool -l va")
    return run(in_ns(name, "sh", "-c", script), check_rc=0).stdout


def normalize_mask(value):
    """'00000000,00000003' and '3' are the same CPU mask."""
    return value.replace(",", "").lstrip("0") or "0"


def eth(mode, *extra):
    return [ETHTOOL_SH, mode, "--iface", "va", "--only", "nic", *extra]


def test_check_apply_twice_and_rollback_on_veth(netns):
    name, queues, env = netns
    cpus = online_cpus()
    cores = ",".join(str(c) for c in cpus[:2])
    original = queue_files(name)

    check = run(in_ns(name, *eth("--check", "--cores", cores)), env=env)
    assert check.returncode in (0, 1), check.stderr
    assert "skip   va IRQs: a virtual device (veth) has no IRQs of its own" in check.stdout
    assert "skip   va ring sizes: driver veth does not support them" in check.stdout
    assert "info   va offloads:" in check.stdout

    dry = run(in_ns(name, *eth("--dry-run", "--cores", cores)), env=env, check_rc=0)
    commands = parse_commands(dry.stdout)
    if queues == 4 and len(cpus) < 4:
        assert f"ethtool -L va rx {len(cpus[:2])} tx {len(cpus[:2])}" in commands
    assert queue_files(name) == original, "--dry-run changed the interface"

    applied = run(in_ns(name, *eth("--apply", "--cores", cores)), env=env, check_rc=0)
    assert parse_commands(applied.stdout) == commands
    if commands:
        assert queue_files(name) != original

    # Every planned write is now in place, read back through sysfs.
    for line in commands:
        if line.startswith("echo "):
            value, path = line[len("echo "):].rsplit(" > ", 1)
            have = run(in_ns(name, "cat", path), check_rc=0).stdout.strip()
            assert normalize_mask(have) == normalize_mask(value), (path, have, value)

    again = run(in_ns(name, *eth("--apply", "--cores", cores)), env=env, check_rc=0)
    assert parse_commands(again.stdout) == []
    assert "nothing to change" in again.stdout
    run(in_ns(name, *eth("--check", "--cores", cores)), env=env, check_rc=0)

    if commands:
        rollback = rollback_path(applied.stdout)
        run(in_ns(name, ETHTOOL_SH, "--rollback", rollback), env=env, check_rc=0)
    assert queue_files(name) == original


def test_single_core_shrinks_to_one_queue(netns):
    name, queues, env = netns
    if queues < 2:
        pytest.skip("the kernel refused a multi-queue veth")
    original = queue_files(name)
    cpu = online_cpus()[0]
    applied = run(in_ns(name, *eth("--apply", "--cores", str(cpu))), env=env, check_rc=0)
    assert "ethtool -L va rx 1 tx 1" in parse_commands(applied.stdout)
    listing = run(in_ns(name, "ls", "/sys/class/net/va/queues"), check_rc=0).stdout.split()
    assert listing == ["rx-0", "tx-0"]
    check = run(in_ns(name, *eth("--check", "--cores", str(cpu))), env=env, check_rc=0)
    assert "skip   va XPS: one transmit queue" in check.stdout
    run(in_ns(name, ETHTOOL_SH, "--rollback", rollback_path(applied.stdout)), env=env,
        check_rc=0)
    assert queue_files(name) == original


def test_missing_interface_in_namespace(netns):
    name, _, env = netns
    result = run(in_ns(name, ETHTOOL_SH, "--check", "--iface", "eth9", "--only", "nic"),
                 env=env, check_rc=2)
    assert "interface 'eth9' not found" in result.stderr
    assert "va" in result.stderr and "vb" in result.stderr


def test_sysctl_check_reads_namespace_values(netns):
    # net.core.somaxconn is per network namespace: a value set inside the namespace shows up
    # in a check run there, and the host's value is untouched.
    name, _, env = netns
    with open("/proc/sys/net/core/somaxconn", encoding="utf-8") as f:
        host_value = f.read()
    run(in_ns(name, "sh", "-c", "echo 128 > /proc/sys/net/core/somaxconn"), check_rc=0)
    check = run(in_ns(name, SYSCTL_SH, "--check"), env=env)
    assert "differ net.core.somaxconn: have 128, want >= 4096" in check.stdout
    with open("/proc/sys/net/core/somaxconn", encoding="utf-8") as f:
        assert f.read() == host_value
