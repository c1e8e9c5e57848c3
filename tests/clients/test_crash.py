"""Crash trials, short form (issue 18): six seeded trials, one per kill moment (steady load, a
segment roll, a retention delete, an offsets-log compaction, DeleteRecords, a SIGTERM's
shutdown), alternating `--durability write` and `fsync`, some also killed during start-up
recovery; see crash_trials.py for the long form (`scripts/crash-trials.sh N`) and the checks."""

import pytest

import crash_trials
from conftest import TARGET

SEED = 20261205


@pytest.mark.timeout(420)
def test_kill9_under_load_loses_and_duplicates_nothing_acknowledged(tmp_path):
    if TARGET == "kafka":
        pytest.skip("Spate's data dir layout and start-up log lines")
    trials = len(crash_trials.MOMENTS)
    lines = []
    outcomes, failures = crash_trials.run(trials, SEED, tmp_path, "both", say=lines.append)
    print("\n".join(lines + crash_trials.summary(SEED, outcomes, 0)[1:]))
    assert not failures, f"seed {SEED}:\n" + "\n".join(failures)
    assert len(outcomes) == trials
    assert all(outcome.acked > 0 for outcome in outcomes)
    # The seed is picked so that the short form covers a kill during start-up too.
    assert any(outcome.recovery_kills for outcome in outcomes), f"seed {SEED}"
