#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need, checks formatting
# and clippy's lints (warnings are errors), builds, and runs unit tests, Rust integration
# tests, the real-client tests (kcat, confluent-kafka, kafka-python), the spate-bench tests,
# the tuning playbook tests, a short fuzzing run (scripts/fuzz.sh) and librdkafka's smoke set.
#
#   scripts/test.sh            everything (CI runs this through .ci/run)
#   SPATE_SKIP_LIBRDKAFKA=1    skip librdkafka's own suite (it needs a ~3 min build once)
#
# Slow benchmark runs are not here: see "Measuring" in README.md (scripts/baseline.sh,
# scripts/compare.sh, cargo bench).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)

step() { printf '\n=== %s (at %d s)\n' "$*" "$SECONDS"; }

# Every test group runs even when an earlier one failed; the script fails at the end.
failed=()
run() {
  local name=$1
  shift
  "$@" || failed+=("$name")
}

step "system packages"
missing=()
# java and mvn: librdkafka's suite runs Kafka's command-line tools, fetched from Maven Central.
for tool in kcat shellcheck ethtool ip java mvn; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
# libfuse2 for the power-loss trials' FUSE file system (fusepy loads it), fuse3 for /dev/fuse's
# helpers.
ldconfig -p | grep -q 'libfuse.so.2 ' || missing+=(libfuse2)
if ((${#missing[@]} > 0)); then
  packages=()
  for tool in "${missing[@]}"; do
    case "$tool" in
      ip) packages+=(iproute2) ;;
      libfuse2) packages+=(libfuse2 fuse3) ;;
      java) packages+=(default-jre-headless) ;;
      mvn) packages+=(maven) ;;
      *) packages+=("$tool") ;;
    esac
  done
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${packages[@]}" >/dev/null
fi

step "python packages"
python3 -m pip install -q -r tests/clients/requirements.txt -r tests/bench/requirements.txt

step "formatting and lints (cargo fmt, cargo clippy -D warnings)"
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add rustfmt clippy
fi
run "cargo fmt" cargo fmt --all --check
run "cargo fmt (fuzz)" cargo fmt --manifest-path fuzz/Cargo.toml --check
run "cargo clippy" cargo clippy --workspace --all-targets -- -D warnings

step "build (release)"
cargo build --release --workspace --all-targets

step "rust unit and integration tests"
run "cargo test" cargo test --release --workspace

step "real clients against the broker (tests/clients)"
run "tests/clients" python3 -m pytest -q tests/clients

step "spate-bench against the broker (tests/bench)"
# The workspace build above made the bench; built alone (the fixture's fallback), cargo would
# unify features differently and build librdkafka and half the dependencies again.
run "tests/bench" env SPATE_BENCH_BIN="$ROOT/target/release/spate-bench" \
  python3 -m pytest -q tests/bench

step "tuning playbook (tests/tuning)"
run "tests/tuning" python3 -m pytest -q tests/tuning

step "fuzzing, short form (scripts/fuzz.sh; the long form is in README.md)"
run "fuzzing" scripts/fuzz.sh "${SPATE_FUZZ_SECONDS:-5}"

if [[ "${SPATE_SKIP_LIBRDKAFKA:-0}" != 1 ]]; then
  step "librdkafka's own test suite, allowlist (scripts/librdkafka-suite.sh)"
  run "librdkafka suite" env SPATE_BIN="$ROOT/target/release/spate" scripts/librdkafka-suite.sh
  step "librdkafka's consumer group tests with the consumer protocol (KIP-848)"
  run "librdkafka suite (group.protocol=consumer)" env SPATE_BIN="$ROOT/target/release/spate" \
    scripts/librdkafka-suite.sh --group-protocol consumer
fi

if ((${#failed[@]} > 0)); then
  step "FAILED: ${failed[*]}"
  exit 1
fi
step "all tests passed"
