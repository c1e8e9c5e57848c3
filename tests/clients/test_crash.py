"""Crash trials, short form (issue 18): six seeded trials, one per kill moment (steady load, a
segment roll, a retention delete, an offsets-log compaction, DeleteRecords, a SIGTERM's
shutdown), alternating `--durability write` and `fsync`, some also killed during start-up
recovery; and three cluster trials (issue 14), one per role killed (a leader, a follower, the
active controller) of a replicated topic. See crash_trials.py for the long form
(`scripts/crash-trials.sh N [--cluster]`) and the checks."""

import pytest

import crash_trials
from conftest import TARGET

# Not serial: under the other tests' load a cluster trial once lost acknowledged records (a
# leader acknowledged past a follower its pending ISR change was adding; fixed with Kafka's
# maximal ISR, see docs/ARCHITECTURE.md, Replication), which the trials alone on a quiet
# machine never showed. Each trial also fails on the leaders' check of that invariant.

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


CLUSTER_SEED = 20261206


@pytest.mark.timeout(420)
def test_kill9_in_a_cluster_loses_and_duplicates_nothing_acknowledged(tmp_path):
    """Three cluster trials (see crash_trials.py, `--cluster`): kill -9 of a partition's
    leader, of a follower and of the active controller under idempotent acks=all produce to a
    topic of replication factor 3 (min.insync.replicas 2), restart, then every acknowledged
    record once, in order, at its offset, and the three replicas identical."""
    if TARGET == "kafka":
        pytest.skip("Spate's cluster options")
    trials = len(crash_trials.CLUSTER_ROLES)
    lines = []
    outcomes, failures = crash_trials.run_cluster(trials, CLUSTER_SEED, tmp_path, "both",
                                                  say=lines.append)
    print("\n".join(lines + crash_trials.cluster_summary(CLUSTER_SEED, outcomes, 0)[1:]))
    assert not failures, f"seed {CLUSTER_SEED}:\n" + "\n".join(failures)
    assert len(outcomes) == trials
    assert all(outcome.acked > 0 and outcome.kills for outcome in outcomes)
