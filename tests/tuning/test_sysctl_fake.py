"""tuning/sysctl.sh against a fake /proc/sys: check, dry-run, apply, apply again, rollback."""

import os
import shutil
import subprocess

import pytest

from conftest import (SYSCTL_SH, TUNING, changed_files, fake_env, parse_commands, parse_echo,
                      rollback_path, run, snapshot, write)


def test_check_reports_each_difference_and_fails(sysctl_tree):
    result = run([SYSCTL_SH, "--check"], env=fake_env(sysctl_tree), check_rc=1)
    lines = result.stdout.splitlines()
    differ = {line.split()[1].rstrip(":") for line in lines if line.startswith("differ")}
    assert "vm.swappiness" in differ
    assert "net.core.rmem_max" in differ
    assert "net.ipv4.tcp_wmem" in differ
    # Defaults that already match are reported as ok, not as findings.
    assert any(line.startswith("ok") and "net.core.somaxconn" in line for line in lines)
    assert "net.core.somaxconn" not in differ
    assert "vm.swappiness: have 60, want <= 1" in result.stdout


def test_apply_changes_exactly_what_dry_run_listed(sysctl_tree):
    env = fake_env(sysctl_tree)
    dry = run([SYSCTL_SH, "--dry-run"], env=env, check_rc=0)
    planned = dict(parse_echo(line, sysctl_tree) for line in parse_commands(dry.stdout))
    assert planned, "the defaults differ from the recommendation, so the plan is not empty"
    before = snapshot(sysctl_tree)
    applied = run([SYSCTL_SH, "--apply"], env=env, check_rc=0)
    after = snapshot(sysctl_tree)
    assert changed_files(before, after) == set(planned)
    for path, value in planned.items():
        assert after[path] == (value + "\n").encode()
    # --apply prints the same commands as --dry-run, in the same order.
    assert parse_commands(applied.stdout) == parse_commands(dry.stdout)
    run([SYSCTL_SH, "--check"], env=env, check_rc=0)


def test_apply_twice_is_harmless(sysctl_tree):
    env = fake_env(sysctl_tree)
    first = run([SYSCTL_SH, "--apply"], env=env, check_rc=0)
    state_dir = sysctl_tree / "var/lib/spate/tuning"
    rollbacks = sorted(os.listdir(state_dir))
    assert len(rollbacks) == 1
    before = snapshot(sysctl_tree)
    second = run([SYSCTL_SH, "--apply"], env=env, check_rc=0)
    assert "nothing to change" in second.stdout
    assert snapshot(sysctl_tree) == before
    assert sorted(os.listdir(state_dir)) == rollbacks
    # The first rollback file still restores the original state.
    assert rollback_path(first.stdout).startswith(str(state_dir))


def test_rollback_restores_every_value_byte_for_byte(sysctl_tree):
    # A host that uses vm.dirty_bytes: applying vm.dirty_ratio clears it on a real kernel, so
    # the rollback file must hold it too.
    write(sysctl_tree / "proc/sys/vm/dirty_bytes", "268435456\n")
    write(sysctl_tree / "proc/sys/vm/dirty_ratio", "0\n")
    env = fake_env(sysctl_tree)
    original = snapshot(sysctl_tree)
    applied = run([SYSCTL_SH, "--apply"], env=env, check_rc=0)
    assert snapshot(sysctl_tree) != original
    # Emulate the kernel's coupling of the pair.
    write(sysctl_tree / "proc/sys/vm/dirty_bytes", "0\n")
    rollback = rollback_path(applied.stdout)
    assert "proc/sys/vm/dirty_bytes" in open(rollback, encoding="utf-8").read()
    run([SYSCTL_SH, "--rollback", rollback], env=env, check_rc=0)
    assert snapshot(sysctl_tree) == original
    # A tab-separated multi-field value comes back with its tabs.
    assert original["proc/sys/net/ipv4/tcp_wmem"] == b"4096\t16384\t4194304\n"


def test_higher_limits_are_never_lowered(sysctl_tree):
    write(sysctl_tree / "proc/sys/net/core/somaxconn", "65535\n")
    write(sysctl_tree / "proc/sys/net/ipv4/tcp_rmem", "8192\t262144\t67108864\n")
    write(sysctl_tree / "proc/sys/net/ipv4/tcp_wmem", "8192\t16384\t1048576\n")
    dry = run([SYSCTL_SH, "--dry-run"], env=fake_env(sysctl_tree), check_rc=0)
    planned = dict(parse_echo(line, sysctl_tree) for line in parse_commands(dry.stdout))
    assert "proc/sys/net/core/somaxconn" not in planned
    assert "proc/sys/net/ipv4/tcp_rmem" not in planned
    # Only the field below the recommendation moves; the larger minimum stays.
    assert planned["proc/sys/net/ipv4/tcp_wmem"] == "8192 16384 16777216"


def test_missing_key_is_skipped_not_failed(sysctl_tree):
    (sysctl_tree / "proc/sys/kernel/numa_balancing").unlink()
    env = fake_env(sysctl_tree)
    run([SYSCTL_SH, "--apply"], env=env, check_rc=0)
    result = run([SYSCTL_SH, "--check"], env=env, check_rc=0)
    assert "skip   kernel.numa_balancing: not present on this kernel" in result.stdout


def test_rollback_refuses_paths_outside_proc_and_sys(sysctl_tree, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    bad = tmp_path / "bad.rollback"
    bad.write_text("# spate-tuning rollback v1\n"
                   f"file\t{victim}\t6f776e65640a\n")
    result = run([SYSCTL_SH, "--rollback", bad], env=fake_env(sysctl_tree), check_rc=2)
    assert "refusing to restore" in result.stderr
    assert victim.read_text() == "keep\n"
    other = tmp_path / "other.txt"
    other.write_text("not a rollback file\n")
    result = run([SYSCTL_SH, "--rollback", other], env=fake_env(sysctl_tree), check_rc=2)
    assert "not a spate tuning rollback file" in result.stderr


def test_usage_errors_exit_2(sysctl_tree):
    env = fake_env(sysctl_tree)
    assert "choose a mode" in run([SYSCTL_SH], env=env, check_rc=2).stderr
    assert "unknown argument" in run([SYSCTL_SH, "--bogus"], env=env, check_rc=2).stderr
    run([SYSCTL_SH, "--check", "--apply"], env=env, check_rc=2)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) missing")
def test_apply_without_root_is_a_clear_error():
    env = dict(os.environ)
    env.pop("SPATE_TUNING_ROOT", None)
    result = run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                  SYSCTL_SH, "--apply"], env=env, check_rc=2)
    assert "must run as root" in result.stderr
    assert result.stdout == ""


def _can_unshare_mounts():
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("sysctl") is None:
        return False
    try:
        probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, timeout=10,
                               check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


@pytest.mark.skipif(not _can_unshare_mounts(),
                    reason="needs root, unshare(1) and sysctl(8) for a private mount namespace")
def test_sysctl_p_loads_the_file(sysctl_tree):
    # sysctl(8) always writes /proc/sys, so the fake tree is bind-mounted over /proc/sys in a
    # private mount namespace: the host's settings are never touched.
    script = f'mount --bind "{sysctl_tree}/proc/sys" /proc/sys && sysctl -p "{TUNING}/sysctl.conf"'
    result = run(["unshare", "-m", "sh", "-c", script], check_rc=0)
    assert "vm.swappiness = 1" in result.stdout
    assert (sysctl_tree / "proc/sys/vm/swappiness").read_text() == "1\n"
    assert (sysctl_tree / "proc/sys/net/ipv4/tcp_rmem").read_text() == "4096 131072 16777216\n"
    # What sysctl -p wrote is what sysctl.sh checks for.
    run([SYSCTL_SH, "--check"], env=fake_env(sysctl_tree), check_rc=0)
