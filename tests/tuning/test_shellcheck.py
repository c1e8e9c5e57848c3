"""The tuning scripts are shellcheck clean (with -x, so common.sh is checked as sourced)."""

import shutil

import pytest

from conftest import TUNING, run


@pytest.mark.skipif(shutil.which("shellcheck") is None,
                    reason="shellcheck is not installed (apt-get install shellcheck)")
def test_shellcheck_clean():
    scripts = sorted(TUNING.glob("*.sh"))
    assert {p.name for p in scripts} >= {"common.sh", "sysctl.sh", "ethtool.sh"}
    result = run(["shellcheck", "-x", "--severity=style", *scripts], check_rc=None)
    assert result.returncode == 0, result.stdout + result.stderr


def test_scripts_are_strict_and_short_lined():
    for path in sorted(TUNING.glob("*.sh")):
        text = path.read_text(encoding="utf-8")
        if path.name != "common.sh":
            assert "set -euo pipefail" in text, path
        for number, line in enumerate(text.splitlines(), 1):
            assert len(line) <= 100, f"{path}:{number} is {len(line)} columns"
