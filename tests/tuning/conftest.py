"""Helpers for the tuning script tests: fake /proc and /sys trees, a runner, tree snapshots.

The fake-tree tests never touch the host: every script run gets SPATE_TUNING_ROOT (so every
/proc and /sys path lands in a temporary directory) and SPATE_ETHTOOL pointing at
fake_ethtool.py. Only test_netns.py touches real kernel state, and only inside network
namespaces that it creates and deletes.
"""

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TUNING = REPO / "tuning"
SYSCTL_SH = TUNING / "sysctl.sh"
ETHTOOL_SH = TUNING / "ethtool.sh"
FAKE_ETHTOOL = Path(__file__).resolve().parent / "fake_ethtool.py"
# Every script run is bounded; the scripts take well under a second on a fake tree.
SCRIPT_TIMEOUT_S = 60

# The subdirectory of a fake tree where --apply writes rollback files; tree snapshots skip it.
STATE_SUBDIR = "var"


def run(args, env=None, timeout=SCRIPT_TIMEOUT_S, check_rc=None):
    """Runs a command and returns the CompletedProcess; asserts the exit code if asked."""
    result = subprocess.run([str(a) for a in args], env=env, capture_output=True, text=True,
                            timeout=timeout, check=False)
    if check_rc is not None:
        assert result.returncode == check_rc, (
            f"{args} exited {result.returncode}, want {check_rc}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    return result


def write(path, content):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")


def snapshot(root):
    """Every regular file under root (except the rollback state dir) -> its bytes."""
    files = {}
    real_root = os.path.realpath(root)
    for path in sorted(Path(root).rglob("*")):
        rel = path.relative_to(root)
        if rel.parts and rel.parts[0] == STATE_SUBDIR:
            continue
        # A file reached through a symlink (sys/dev/block/M:N) is recorded once, by its
        # real path.
        if os.path.realpath(path) != os.path.join(real_root, str(rel)):
            continue
        if path.is_file():
            files[str(rel)] = path.read_bytes()
    return files


def changed_files(before, after):
    """Relative paths whose bytes differ (or that appeared or vanished) between snapshots."""
    keys = set(before) | set(after)
    return {k for k in keys if before.get(k) != after.get(k)}


def parse_commands(stdout):
    """The command lines of --dry-run or --apply output (everything that is not a comment)."""
    lines = []
    for line in stdout.splitlines():
        if not line or line.startswith("#") or line.startswith("rollback file:"):
            continue
        lines.append(line)
    return lines


def parse_echo(line, root):
    """'echo VALUE > PATH' -> (PATH relative to root, VALUE); values may be single-quoted.

    A conditional raise ('[ "$(cat PATH)" -ge VALUE ] || echo VALUE > PATH') parses as its
    write.
    """
    if line.startswith("[ "):
        line = line.split(" || ", 1)[1]
    assert line.startswith("echo "), line
    value, path = line[len("echo "):].rsplit(" > ", 1)
    value = value.strip("'")
    path = path.strip("'")
    return str(Path(path).relative_to(root)), value


def rollback_path(stdout):
    for line in stdout.splitlines():
        if line.startswith("rollback file: "):
            return line[len("rollback file: "):]
    raise AssertionError(f"no 'rollback file:' line in:\n{stdout}")


# The kernel defaults of the keys in tuning/sysctl.conf, as a fake /proc/sys holds them; tabs
# separate the fields of multi-value keys, as the kernel prints them.
SYSCTL_DEFAULTS = {
    "vm/dirty_background_ratio": "10", "vm/dirty_ratio": "20",
    "vm/dirty_background_bytes": "0", "vm/dirty_bytes": "0",
    "vm/dirty_expire_centisecs": "3000", "vm/dirty_writeback_centisecs": "500",
    "vm/swappiness": "60", "vm/max_map_count": "65530", "vm/zone_reclaim_mode": "0",
    "vm/stat_interval": "1", "kernel/numa_balancing": "1",
    "fs/file-max": "9223372036854775807", "fs/nr_open": "1048576", "fs/aio-max-nr": "65536",
    "net/core/somaxconn": "4096", "net/ipv4/tcp_max_syn_backlog": "512",
    "net/core/netdev_max_backlog": "1000", "net/core/rps_sock_flow_entries": "0",
    "net/core/rmem_max": "212992", "net/core/wmem_max": "212992",
    "net/ipv4/tcp_rmem": "4096\t131072\t6291456", "net/ipv4/tcp_wmem": "4096\t16384\t4194304",
    "net/ipv4/tcp_slow_start_after_idle": "1", "net/ipv4/tcp_fastopen": "1",
    "net/core/busy_read": "0", "net/core/busy_poll": "0",
}


@pytest.fixture
def sysctl_tree(tmp_path):
    """A fake root whose /proc/sys holds kernel defaults for every key in sysctl.conf."""
    root = tmp_path / "root"
    for key, value in SYSCTL_DEFAULTS.items():
        write(root / "proc/sys" / key, value + "\n")
    return root


def fake_env(root, extra=None):
    env = dict(os.environ)
    env["SPATE_TUNING_ROOT"] = str(root)
    env["SPATE_ETHTOOL"] = str(FAKE_ETHTOOL)
    env["SPATE_FAKE_ETHTOOL_STATE"] = str(root / "ethtool-state.json")
    env.pop("SPATE_TUNING_STATE_DIR", None)
    if extra:
        env.update(extra)
    return env


# A four-queue NIC with MSI-X IRQs 40-44 (40 is its admin vector), on a four-CPU host.
NIC = "fake0"
NIC_STATE = {
    NIC: {
        "driver": "fakenic",
        "channels": {"max": {"combined": 8, "other": 1}, "cur": {"combined": 4, "other": 1}},
        "rings": {"max": {"rx": 4096, "tx": 4096}, "cur": {"rx": 512, "tx": 512}},
        "coalesce": {"adaptive-rx": "on", "adaptive-tx": "on", "rx-usecs": 8,
                     "rx-frames": 32, "tx-usecs": 16, "tx-frames": 64},
        "rss": {"default": True, "table": [i % 4 for i in range(128)]},
        "features": {"rx-checksumming": "on", "tx-checksumming": "on",
                     "scatter-gather": "on", "tcp-segmentation-offload": "on",
                     "generic-segmentation-offload": "on", "generic-receive-offload": "on",
                     "large-receive-offload": "off [fixed]"},
    },
}


@pytest.fixture
def nic_tree(tmp_path):
    """A fake root with a four-queue NIC, four CPUs with cpufreq, THP, a data disk and limits.

    Returns (root, data_dir). The data dir is a real directory (ethtool.sh stats it), and the
    fake /sys/dev/block entry for its device points at a fake disk.
    """
    root = tmp_path / "root"
    write(root / "sys/devices/system/cpu/online", "0-3\n")
    for cpu in range(4):
        freq = root / f"sys/devices/system/cpu/cpu{cpu}/cpufreq"
        write(freq / "scaling_governor", "powersave\n")
        write(freq / "scaling_available_governors", "performance powersave\n")
    thp = root / "sys/kernel/mm/transparent_hugepage"
    write(thp / "enabled", "[always] madvise never\n")
    write(thp / "defrag", "always defer defer+madvise [madvise] never\n")

    net = root / "sys/class/net" / NIC
    interrupts = ["           CPU0       CPU1       CPU2       CPU3"]
    for irq in range(40, 45):
        write(net / "device/msi_irqs" / str(irq), "msix\n")
        write(root / f"proc/irq/{irq}/smp_affinity_list", "0-3\n")
        name = f"{NIC}-admin" if irq == 40 else f"{NIC}-TxRx-{irq - 41}"
        interrupts.append(f" {irq}:  1  2  3  4  PCI-MSIX-0000:00:05.0  {irq - 40}-edge  {name}")
    write(root / "proc/interrupts", "\n".join(interrupts) + "\n")
    for queue in range(4):
        write(net / f"queues/rx-{queue}/rps_cpus", "0\n")
        write(net / f"queues/rx-{queue}/rps_flow_cnt", "0\n")
        write(net / f"queues/tx-{queue}/xps_cpus", "0\n")
    write(root / "ethtool-state.json", json.dumps(NIC_STATE, sort_keys=True, indent=1) + "\n")

    write(root / "proc/sys/net/core/rps_sock_flow_entries", "32768\n")
    write(root / "proc/self/limits",
          "Limit                     Soft Limit           Hard Limit           Units     \n"
          "Max locked memory         65536                65536                bytes     \n")

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    st = os.stat(data_dir)
    disk = root / "sys/devices/virtual/block/fakedisk"
    write(disk / "queue/scheduler", "[mq-deadline] kyber bfq none\n")
    write(disk / "queue/rotational", "0\n")
    write(disk / "queue/nr_requests", "16\n")
    link = root / f"sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to("../../devices/virtual/block/fakedisk")
    return root, data_dir
