"""Corruption trials, short form (issue 18): one file of a stopped broker's data dir damaged
per trial, seeded; see corruption_trials.py for the long form and what each outcome means."""

import pytest

import corruption_trials
from conftest import TARGET

TRIALS = 16


@pytest.mark.parametrize("stop", ["sigterm", "kill9"])
def test_damaged_files_are_recovered_or_refused_never_served_wrong(tmp_path, stop):
    if TARGET == "kafka":
        pytest.skip("Spate's data dir layout")
    seed = 20261205 if stop == "sigterm" else 5122026
    lines = []
    counts, failures = corruption_trials.run(TRIALS, seed, tmp_path, stop, say=lines.append)
    print("\n".join(lines))
    print(f"seed {seed}: {dict(counts)}")
    assert not failures, "\n".join(failures)
    assert sum(counts.values()) == TRIALS
