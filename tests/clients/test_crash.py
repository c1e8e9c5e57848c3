"""Crash trials, short form (issue 18): six seeded trials, each a broker under load killed
with SIGKILL at one of the kill moments (steady load, a roll, a retention delete, an offsets-log
compaction, DeleteRecords; two of them also killed again during start-up recovery), alternating
`--durability write` and `fsync`; see crash_trials.py for the long form and what is checked."""

import pytest

import crash_trials
from conftest import TARGET

TRIALS = 6
SEED = 20261205


@pytest.mark.timeout(420)
def test_kill9_under_load_loses_and_duplicates_nothing_acknowledged(tmp_path):
    if TARGET == "kafka":
        pytest.skip("Spate's data dir layout and start-up log lines")
    lines = []
    outcomes, failures = crash_trials.run(TRIALS, SEED, tmp_path, "both", say=lines.append)
    print("\n".join(lines + crash_trials.summary(SEED, outcomes, 0)[1:]))
    assert not failures, f"seed {SEED}:\n" + "\n".join(failures)
    assert len(outcomes) == TRIALS
    assert all(outcome.acked > 0 for outcome in outcomes)
