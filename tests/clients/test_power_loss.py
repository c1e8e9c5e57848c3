"""Power-loss trials, short form (issue 18, item 2): three seeded trials under
`--durability fsync` lose nothing acknowledged, and one under `--durability write` loses what
it acknowledged, which shows the simulated power cut really drops unsynced data. See
power_loss_trials.py for the long form and how the cut is simulated (a FUSE file system)."""

import random

import pytest

import power_loss_trials
from conftest import TARGET

pytestmark = [
    pytest.mark.skipif(TARGET != "spate", reason="runs Spate's binary on a FUSE data dir"),
    pytest.mark.skipif(power_loss_trials.available() is not None,
                       reason=str(power_loss_trials.available())),
]


def test_nothing_acknowledged_under_fsync_is_lost_at_a_power_cut(tmp_path):
    seed = random.randrange(1 << 30)
    lines = []
    acknowledged, lost, duplicated = power_loss_trials.run(3, seed, tmp_path, "fsync",
                                                           say=lines.append)
    report = "\n".join(lines)
    assert acknowledged > 0, report
    assert (lost, duplicated) == (0, 0), report


def test_a_power_cut_drops_what_write_durability_never_synced(tmp_path):
    lines = []
    acknowledged, lost, _ = power_loss_trials.run(1, 11, tmp_path, "write", say=lines.append)
    report = "\n".join(lines)
    assert acknowledged > 0 and lost > 0, report
