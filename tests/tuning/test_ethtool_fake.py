"""tuning/ethtool.sh against a fake /proc and /sys and a fake ethtool (fake_ethtool.py).

The fake NIC has four combined queues (eight at most), MSI-X IRQs 41-44 for its queues, rings,
coalescing and an RSS table; the fake host has four CPUs with cpufreq, THP "always", a flash
data disk on mq-deadline and a 64 KiB RLIMIT_MEMLOCK. The broker runs on CPUs 1-2.
"""

import json
import os
import shutil

import pytest

from conftest import (ETHTOOL_SH, NIC, changed_files, fake_env, parse_commands, parse_echo,
                      rollback_path, run, snapshot, write)


def args(mode, data_dir, *extra):
    return [ETHTOOL_SH, mode, "--iface", NIC, "--cores", "1-2", "--data-dir", data_dir, *extra]


def findings(stdout, tag="differ"):
    return [line for line in stdout.splitlines() if line.startswith(tag)]


def test_check_reports_each_difference(nic_tree):
    root, data_dir = nic_tree
    result = run(args("--check", data_dir), env=fake_env(root), check_rc=1)
    out = result.stdout
    assert "differ fake0 channels: have combined 4, want 2" in out
    assert "differ fake0 RSS: the indirection table uses queues 0-3 unevenly" in out
    assert "differ IRQ 41 (fake0-TxRx-0, queue 0): on CPUs 0-3, want CPU 1" in out
    assert "differ IRQ 42 (fake0-TxRx-1, queue 1): on CPUs 0-3, want CPU 2" in out
    # Queues 2 and 3 go away, and the admin vector is not a queue: none of them is moved.
    assert "IRQ 43" not in out and "IRQ 44" not in out and "IRQ 40" not in out
    assert "differ fake0 tx-0 xps_cpus: have 0, want 2" in out
    assert "differ fake0 tx-1 xps_cpus: have 0, want 4" in out
    # Two queues with their own IRQs for two cores: RPS stays off.
    assert "RPS off" in out
    assert "differ fake0 rings (latency): rx 512 (want 1024, max 4096)" in out
    assert "differ fake0 coalescing (latency): adaptive-rx is on, want off" in out
    assert "differ fake0 coalescing (latency): rx-usecs is 8, want 0" in out
    assert "differ CPU 1 governor: have powersave, want performance" in out
    assert "CPU 0 governor" not in out and "CPU 3 governor" not in out
    assert "differ transparent_hugepage/enabled: have always, want madvise" in out
    assert "ok     transparent_hugepage/defrag = madvise" in out
    assert "differ fakedisk scheduler: have mq-deadline, want none" in out
    assert "warn   RLIMIT_MEMLOCK is 64 KiB, below the 1024 KiB" in out
    assert out.startswith("differ fake0 channels") or out.startswith("ok")
    assert "info   fake0 offloads: rx-csum=on tx-csum=on sg=on tso=on gso=on gro=on" in out


def test_apply_changes_exactly_what_dry_run_listed(nic_tree, tmp_path):
    root, data_dir = nic_tree
    log = tmp_path / "ethtool.log"
    env = fake_env(root, {"SPATE_FAKE_ETHTOOL_LOG": str(log)})
    dry = run(args("--dry-run", data_dir), env=env, check_rc=0)
    commands = parse_commands(dry.stdout)
    echo_lines = [line for line in commands if line.startswith(("echo ", "[ "))]
    ethtool_lines = [line for line in commands if line.startswith("ethtool ")]
    assert len(echo_lines) + len(ethtool_lines) == len(commands)
    planned = dict(parse_echo(line, root) for line in echo_lines)
    # The RSS table shrinks before the queues do.
    assert ethtool_lines[:2] == ["ethtool -X fake0 equal 2", "ethtool -L fake0 combined 2"]
    assert not log.exists(), "--dry-run ran a changing ethtool command"

    before = snapshot(root)
    applied = run(args("--apply", data_dir), env=env, check_rc=0)
    after = snapshot(root)
    assert parse_commands(applied.stdout) == commands
    assert log.read_text().splitlines() == ethtool_lines
    # Every file the plan names changed to the planned value, and nothing else changed except
    # the fake NIC's state, which the ethtool commands change.
    assert changed_files(before, after) == set(planned) | {"ethtool-state.json"}
    for path, value in planned.items():
        if path.endswith(("scheduler", "enabled", "defrag")):
            # Selector files show the list with the chosen word bracketed.
            assert f"[{value}]" in after[path].decode()
        else:
            assert after[path] == (value + "\n").encode()
    nic = json.loads(after["ethtool-state.json"])[NIC]
    assert nic["channels"]["cur"]["combined"] == 2
    assert nic["rings"]["cur"] == {"rx": 1024, "tx": 1024}
    assert nic["coalesce"]["adaptive-rx"] == "off"
    assert nic["coalesce"]["rx-usecs"] == 0
    assert set(nic["rss"]["table"]) == {0, 1}


def test_apply_twice_is_harmless(nic_tree):
    root, data_dir = nic_tree
    env = fake_env(root)
    run(args("--apply", data_dir), env=env, check_rc=0)
    state_dir = root / "var/lib/spate/tuning"
    rollbacks = sorted(os.listdir(state_dir))
    before = snapshot(root)
    second = run(args("--apply", data_dir), env=env, check_rc=0)
    assert "# nothing to change; no rollback file written" in second.stdout
    assert parse_commands(second.stdout) == []
    assert snapshot(root) == before
    assert sorted(os.listdir(state_dir)) == rollbacks
    # What remains is what a script cannot fix: the memlock limit of a process yet to start.
    check = run(args("--check", data_dir), env=env, check_rc=1)
    assert findings(check.stdout) == []
    assert [line.split()[1] for line in findings(check.stdout, "warn")] == ["RLIMIT_MEMLOCK"]


def test_check_passes_once_applied_and_memlock_is_enough(nic_tree):
    root, data_dir = nic_tree
    write(root / "proc/self/limits", "Max locked memory         unlimited            "
          "unlimited            bytes     \n")
    env = fake_env(root)
    run(args("--check", data_dir), env=env, check_rc=1)
    run(args("--apply", data_dir), env=env, check_rc=0)
    run(args("--check", data_dir), env=env, check_rc=0)


def test_rollback_restores_every_value_byte_for_byte(nic_tree):
    root, data_dir = nic_tree
    env = fake_env(root)
    original = snapshot(root)
    applied = run(args("--apply", data_dir), env=env, check_rc=0)
    assert snapshot(root) != original
    result = run([ETHTOOL_SH, "--rollback", rollback_path(applied.stdout)], env=env, check_rc=0)
    assert "0 failed" in result.stdout
    restored = snapshot(root)
    assert changed_files(original, restored) == set()
    # The RSS table went back to the driver default, not to a user-set equal spread.
    assert json.loads(restored["ethtool-state.json"])[NIC]["rss"]["default"] is True


def test_throughput_profile(nic_tree):
    root, data_dir = nic_tree
    dry = run(args("--dry-run", data_dir, "--profile", "throughput"), env=fake_env(root),
              check_rc=0)
    commands = parse_commands(dry.stdout)
    assert "ethtool -G fake0 rx 4096 tx 4096" in commands
    assert "ethtool -C fake0 adaptive-tx off" in commands
    assert "ethtool -C fake0 rx-usecs 100" in commands
    assert "ethtool -C fake0 tx-frames 128" in commands


def test_unsupported_driver_settings_are_skipped(nic_tree):
    root, data_dir = nic_tree
    state = json.loads((root / "ethtool-state.json").read_text())
    state[NIC]["rings"] = None
    state[NIC]["rss"] = None
    # A driver with fixed-time coalescing only: no adaptive moderation to turn off.
    state[NIC]["coalesce"] = {"rx-usecs": 0, "rx-frames": 1}
    (root / "ethtool-state.json").write_text(json.dumps(state, sort_keys=True, indent=1) + "\n")
    env = fake_env(root)
    check = run(args("--check", data_dir), env=env, check_rc=1)
    assert "skip   fake0 ring sizes: driver fakenic does not support them" in check.stdout
    assert "skip   fake0 RSS: driver fakenic has no RSS indirection table" in check.stdout
    assert "skip   fake0 coalescing: driver fakenic does not support: adaptive-rx" \
        in check.stdout
    commands = parse_commands(run(args("--dry-run", data_dir), env=env, check_rc=0).stdout)
    assert not [c for c in commands if c.startswith(("ethtool -G", "ethtool -X", "ethtool -C"))]
    run(args("--apply", data_dir), env=env, check_rc=0)


def test_single_queue_nic_gets_rps_and_rfs(nic_tree):
    root, data_dir = nic_tree
    state = json.loads((root / "ethtool-state.json").read_text())
    state[NIC]["channels"] = {"max": {"combined": 1}, "cur": {"combined": 1}}
    (root / "ethtool-state.json").write_text(json.dumps(state, sort_keys=True, indent=1) + "\n")
    dry = run(args("--dry-run", data_dir), env=fake_env(root), check_rc=0)
    commands = parse_commands(dry.stdout)
    rx0 = root / "sys/class/net/fake0/queues/rx-0"
    # The one queue's packets are spread over both broker cores (mask 6 = CPUs 1 and 2),
    # and RFS gets the whole flow table.
    assert f"echo 6 > {rx0}/rps_cpus" in commands
    assert f"echo 32768 > {rx0}/rps_flow_cnt" in commands
    assert f"echo 1 > {root}/proc/irq/41/smp_affinity_list" in commands


def test_irqbalance_is_reported(nic_tree):
    root, data_dir = nic_tree
    write(root / "proc/1234/comm", "irqbalance\n")
    check = run(args("--check", data_dir), env=fake_env(root), check_rc=1)
    assert "warn   irqbalance is running" in check.stdout


def test_queue_depth_is_raised_when_the_scheduler_is_right(nic_tree):
    root, data_dir = nic_tree
    write(root / "sys/devices/virtual/block/fakedisk/queue/scheduler", "[none] mq-deadline\n")
    dry = run(args("--dry-run", data_dir), env=fake_env(root), check_rc=0)
    queue = root / "sys/devices/virtual/block/fakedisk/queue"
    # 16 requests in flight per shard, two shards.
    assert f"echo 32 > {queue}/nr_requests" in parse_commands(dry.stdout)


def test_host_only_needs_no_interface(nic_tree):
    root, data_dir = nic_tree
    check = run([ETHTOOL_SH, "--check", "--only", "host", "--data-dir", data_dir],
                env=fake_env(root), check_rc=1)
    assert "fake0" not in check.stdout
    # Without --cores every online CPU is a broker core.
    assert "CPU 0 governor" in check.stdout and "CPU 3 governor" in check.stdout


def test_clear_errors(nic_tree):
    root, data_dir = nic_tree
    env = fake_env(root)
    result = run([ETHTOOL_SH, "--check", "--iface", "nope0"], env=env, check_rc=2)
    assert "interface 'nope0' not found (interfaces here: fake0)" in result.stderr
    result = run([ETHTOOL_SH, "--check"], env=env, check_rc=2)
    assert "--iface is required" in result.stderr
    result = run(args("--check", data_dir, "--cores", "7"), env=env, check_rc=2)
    assert "CPU 7 in --cores is not online" in result.stderr
    result = run(args("--check", data_dir, "--profile", "fast"), env=env, check_rc=2)
    assert "--profile must be latency or throughput" in result.stderr
    no_tool = fake_env(root, {"SPATE_ETHTOOL": "/nonexistent/ethtool"})
    result = run(args("--check", data_dir), env=no_tool, check_rc=2)
    assert "install ethtool" in result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) missing")
def test_apply_without_root_is_a_clear_error():
    env = dict(os.environ)
    env.pop("SPATE_TUNING_ROOT", None)
    result = run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                  ETHTOOL_SH, "--apply", "--only", "host"], env=env, check_rc=2)
    assert "must run as root" in result.stderr
    assert not parse_commands(result.stdout)


def mountinfo(data_dir, point, fstype, options):
    """A fake /proc/self/mountinfo with `/` and the mount at POINT of DATA_DIR's device."""
    st = os.stat(data_dir)
    dev = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    return ("22 27 0:21 / /proc rw,relatime - proc proc rw\n"
            f"27 1 {dev} / / rw,relatime - ext4 /dev/fake rw\n"
            f"31 27 {dev} / {point} rw,noatime - {fstype} /dev/fake {options}\n")


@pytest.mark.parametrize("fstype,options,verdict", [
    ("ext4", "rw,discard,errors=remount-ro", "warn"),
    ("xfs", "rw,attr2,discard,inode64", "warn"),
    ("ext4", "rw,nodiscard", "ok"),
    ("btrfs", "rw,ssd,discard=async,space_cache=v2", "ok"),
])
def test_online_discard_on_the_data_file_system_is_reported(nic_tree, fstype, options, verdict):
    root, data_dir = nic_tree
    # The data dir's own mount, not `/` (whose options say nothing), decides.
    point = os.path.dirname(os.path.realpath(data_dir))
    write(root / "proc/self/mountinfo", mountinfo(data_dir, point, fstype, options))
    check = run([ETHTOOL_SH, "--check", "--only", "host", "--data-dir", data_dir],
                env=fake_env(root), check_rc=1)
    lines = [line for line in check.stdout.splitlines() if f"holds {data_dir}" in line]
    assert len(lines) == 1, check.stdout
    assert lines[0].startswith(f"{verdict:<6} {point} ({fstype}, holds {data_dir})")
    if verdict == "warn":
        assert "nodiscard" in lines[0] and "fstrim.timer" in lines[0]
    # --apply plans nothing for it: the fix is the operator's, in /etc/fstab.
    dry = run([ETHTOOL_SH, "--dry-run", "--only", "host", "--data-dir", data_dir],
              env=fake_env(root), check_rc=0)
    assert not [line for line in parse_commands(dry.stdout) if "mount" in line]


def test_discard_check_skips_without_mountinfo(nic_tree):
    root, data_dir = nic_tree
    check = run([ETHTOOL_SH, "--check", "--only", "host", "--data-dir", data_dir],
                env=fake_env(root), check_rc=1)
    assert "skip   data dir mount options: cannot read" in check.stdout


STAT_HEAD = "cpu  {user} 0 {system} {idle} 0 0 0 {steal} 0 0\n"


@pytest.mark.parametrize("steal, verdict, percent", [
    (0, "ok", "0.000"),
    (9, "ok", "0.009"),         # 90 ppm: the rounding of a host that barely takes anything
    (200, "warn", "0.200"),     # this project's VM: 0.15%, all of it in 100 ms stops
])
def test_host_steal_is_reported_with_its_share_since_boot(nic_tree, steal, verdict, percent):
    root, _ = nic_tree
    # 100,000 ticks of CPU time in all, `steal` of them stolen.
    write(root / "proc/stat", STAT_HEAD.format(user=60_000, system=10_000,
                                                idle=30_000 - steal, steal=steal)
          + "cpu0 0 0 0 0 0 0 0 0 0 0\nintr 0\n")
    check = run([ETHTOOL_SH, "--check", "--only", "host"],
                env=fake_env(root, {"SPATE_TUNING_STEAL_SECONDS": "0"}), check_rc=None)
    lines = [line for line in check.stdout.splitlines() if "host steal" in line]
    assert len(lines) == 1, check.stdout
    assert lines[0].startswith(f"{verdict:<6} host steal:"), lines[0]
    assert f"{percent}% of" in lines[0]
    if verdict == "warn":
        assert "dedicated, pinned vCPUs" in lines[0]
        # A finding, so --check fails; --apply has nothing to do for it.
        assert check.returncode == 1
        dry = run([ETHTOOL_SH, "--dry-run", "--only", "host"],
                  env=fake_env(root, {"SPATE_TUNING_STEAL_SECONDS": "0"}), check_rc=0)
        # (the fake root's path has the test's name in it, so commands are matched by what
        # they would touch)
        assert "# warn: host steal:" in dry.stdout
        assert not [line for line in parse_commands(dry.stdout) if "proc/stat" in line]


def test_host_steal_check_skips_without_proc_stat(nic_tree):
    root, _ = nic_tree
    check = run([ETHTOOL_SH, "--check", "--only", "host"], env=fake_env(root), check_rc=None)
    assert "skip   host steal: cannot read" in check.stdout
