#!/usr/bin/env bash
# Crash trials (issue 18): N trials, each a broker under idempotent acks=all produce, a
# committing consumer group, offset churn and DeleteRecords, killed with kill -9 at a random
# moment (steady load, a segment roll, a retention delete, an offsets-log compaction,
# DeleteRecords, and again during start-up recovery), restarted and checked: every
# acknowledged record present once, in order, at its offset; committed offsets not below the
# last acknowledged commit; the broker serving. Alternates --durability write and fsync.
# Prints a line per trial, then the seed and the counts; exits 1 if any trial failed, naming
# its broker log (the failing trial's data dir is kept). See tests/clients/crash_trials.py.
# Not part of scripts/test.sh (tests/clients/test_crash.py runs six seeded trials there).
# --cluster: three-node trials instead (issue 14), a replicated topic (RF 3,
# min.insync.replicas 2) under idempotent acks=all produce, kill -9 of a leader, a follower or
# the active controller (and sometimes a second node while the first catches up), restart,
# then every acknowledged record once, in order, at its offset, and the replicas identical.
#
#   scripts/crash-trials.sh [N] [--seed S] [--durability write|fsync|both] [--workdir DIR]
#                           [--cluster]
#
# Environment: SPATE_BIN (default target/release/spate, or --spate-bin PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
trials=200
if [[ "${1:-}" =~ ^[0-9]+$ ]]; then
  trials=$1
  shift
fi
exec python3 tests/clients/crash_trials.py --trials "$trials" "$@"
