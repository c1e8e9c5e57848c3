#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need, checks formatting
# and clippy's lints (warnings are errors), builds, and runs unit tests, Rust integration
# tests, the real-client tests (kcat, confluent-kafka, kafka-python, the Java client), the
# spate-bench tests, the tuning playbook tests, a short fuzzing run (scripts/fuzz.sh) and
# librdkafka's allowlisted tests (classic and consumer group protocol, share consumer).
#
#   scripts/test.sh            everything (CI runs this through .ci/run)
#   SPATE_SKIP_LIBRDKAFKA=1    skip librdkafka's own suite (it needs a ~3 min build once)
#   SPATE_TEST_WORKERS=N       client tests run at once (default 4; 0 runs them one by one)
#
# Laid out for a 2-core machine, where most of the client tests' time is spent waiting
# (session timeouts, rebalances, long polls) rather than on the CPU:
#   1. the fuzz targets' build and librdkafka's fetch and build start in the background at
#      once, at the lowest CPU priority (nice 19): they take the CPU the steps in front leave
#      idle; their output is printed where they are waited for, and they count as steps;
#   2. formatting, clippy, the release build, the Rust tests (in front, one after the other);
#   3. the client tests in parallel (pytest-xdist: -n N -m "not serial"; each test has its own
#      broker, port and data dir, see tests/clients/README.md);
#   4. after the background builds finished: the client tests marked `serial` (they hold
#      time, CPU or disk bounds a loaded machine would miss) alone, then tests/bench,
#      tests/tuning, the fuzzing run and librdkafka's suites, one after the other.
# Every step runs even when an earlier one failed, and the script fails at the end naming them
# (a build failing in front stops it at once).
#
# Slow benchmark runs are not here: see "Measuring" in README.md (scripts/baseline.sh,
# scripts/compare.sh, cargo bench).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)

step() { printf '\n=== %s (at %d s)\n' "$*" "$SECONDS"; }

# The cargo target directory (CARGO_TARGET_DIR, as cargo has it, or target/).
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
WORKERS="${SPATE_TEST_WORKERS:-4}"

# Every test group runs even when an earlier one failed; the script fails at the end.
failed=()
run() {
  local name=$1
  shift
  "$@" || failed+=("$name")
}

# Background steps: `background ID NAME CMD...` starts CMD at the lowest CPU priority in its
# own process group, its output in a log; `collect ID` waits for it, prints the log and counts
# a failure as `run` does (and returns CMD's status). Those still running when the script exits
# (a failed build in front) are stopped.
BG_LOGS=$(mktemp -d "${TMPDIR:-/tmp}/spate-test.XXXXXX")
declare -A bg_pid=() bg_name=()
background() {
  local id=$1 name=$2
  shift 2
  bg_name[$id]=$name
  printf '\n=== %s: started in the background, its output comes when it is waited for (at %d s)\n' \
    "$name" "$SECONDS"
  setsid nice -n "${BG_NICE:-19}" "$@" >"$BG_LOGS/$id.log" 2>&1 </dev/null &
  bg_pid[$id]=$!
}
collect() {
  local id=$1 status=0
  wait "${bg_pid[$id]}" || status=$?
  unset "bg_pid[$id]"
  step "${bg_name[$id]} (ran in the background; exit code $status)"
  cat "$BG_LOGS/$id.log"
  ((status == 0)) || failed+=("${bg_name[$id]}")
  return "$status"
}
stop_background() {
  local pid
  for pid in "${bg_pid[@]}"; do
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  done
  rm -rf "$BG_LOGS"
}
trap stop_background EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The builds need room: the release build with its clippy pass, the fuzz targets with
# AddressSanitizer, librdkafka and the client tests' data dirs come to about NEED_GIB GiB on a
# clean clone (a CI run once died half-way through the build of "No space left on device").
# Say so at once, in one sentence with the fix, rather than fail late.
NEED_GIB=16
free_gib() { df -Pk "$1" | awk 'NR == 2 { print int($4 / 1048576) }'; }
mkdir -p "$TARGET_DIR"
for dir in "$TARGET_DIR" "${TMPDIR:-/tmp}" "$HOME"; do
  free=$(free_gib "$dir")
  if ((free < NEED_GIB)); then
    echo "scripts/test.sh needs about $NEED_GIB GiB free for its builds and data, but the file" \
      "system of $dir has $free GiB: free some space (old cargo target directories," \
      "$HOME/.cache/spate) or point CARGO_TARGET_DIR/TMPDIR at a larger one." >&2
    exit 1
  fi
done

step "system packages"
missing=()
# java and mvn: librdkafka's suite runs Kafka's command-line tools, fetched from Maven Central.
for tool in kcat shellcheck ethtool ip java mvn; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
# libfuse2 for the power-loss trials' FUSE file system (fusepy loads it), fuse3 for /dev/fuse's
# helpers.
ldconfig -p | grep -q 'libfuse.so.2 ' || missing+=(libfuse2)
# zstd and lz4 headers for librdkafka's build: without them its test-runner has no zstd, and
# the compression tests (0017, the share consumer's 0171) cannot use it.
[[ -f /usr/include/zstd.h ]] || missing+=(libzstd-dev)
[[ -f /usr/include/lz4.h ]] || missing+=(liblz4-dev)
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

# CPU-bound builds in separate target directories, for the steps at the end (see above).
background fuzz-build "fuzz targets' build (scripts/fuzz.sh --build)" scripts/fuzz.sh --build
if [[ "${SPATE_SKIP_LIBRDKAFKA:-0}" != 1 ]]; then
  background rdk-build "librdkafka's build (scripts/librdkafka-suite.sh --prepare)" \
    scripts/librdkafka-suite.sh --prepare
fi

step "formatting and lints (cargo fmt, cargo clippy -D warnings)"
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add rustfmt clippy
fi
run "cargo fmt" cargo fmt --all --check
run "cargo fmt (fuzz)" cargo fmt --manifest-path fuzz/Cargo.toml --check
# --release, as the build below: the build scripts and proc-macros it compiles are then the
# build's own (the code has no debug_assertions-only part that only a dev lint would see).
run "cargo clippy" cargo clippy --release --workspace --all-targets -- -D warnings

step "build (release)"
cargo build --release --workspace --all-targets

step "rust unit and integration tests"
run "cargo test" cargo test --release --workspace

step "real clients against the broker, in parallel (tests/clients -n $WORKERS -m 'not serial')"
run "tests/clients (parallel)" python3 -m pytest -q tests/clients -n "$WORKERS" -m "not serial"

# The rest runs alone: the background builds first finish.
fuzz_built=0
collect fuzz-build && fuzz_built=1
rdk_built=0
if [[ "${SPATE_SKIP_LIBRDKAFKA:-0}" != 1 ]]; then
  collect rdk-build && rdk_built=1
fi

step "real clients: the tests that measure time or load, alone (tests/clients -m serial)"
run "tests/clients (serial)" python3 -m pytest -q tests/clients -m serial

step "spate-bench against the broker (tests/bench)"
# The workspace build above made the bench; built alone (the fixture's fallback), cargo would
# unify features differently and build librdkafka and half the dependencies again.
run "tests/bench" env SPATE_BENCH_BIN="$TARGET_DIR/release/spate-bench" \
  python3 -m pytest -q tests/bench

step "tuning playbook (tests/tuning)"
run "tests/tuning" python3 -m pytest -q tests/tuning

step "fuzzing, short form (scripts/fuzz.sh; the long form is in README.md)"
if ((fuzz_built)); then
  run "fuzzing" scripts/fuzz.sh "${SPATE_FUZZ_SECONDS:-5}"
else
  echo "not run: the fuzz targets did not build (see above)"
fi

if [[ "${SPATE_SKIP_LIBRDKAFKA:-0}" != 1 ]]; then
  if ((rdk_built)); then
    # The share consumer tests spend most of their time waiting (acquisition locks of 30 s,
    # the tests' own sleeps): they run beside the other two suites, on a broker of their own,
    # at normal priority (their timing matters more than a build's).
    BG_NICE=0 background rdk-share "librdkafka's share consumer tests (KIP-932)" \
      env SPATE_BIN="$TARGET_DIR/release/spate" scripts/librdkafka-suite.sh --share
    step "librdkafka's own test suite, allowlist (scripts/librdkafka-suite.sh)"
    run "librdkafka suite" env SPATE_BIN="$TARGET_DIR/release/spate" scripts/librdkafka-suite.sh
    step "librdkafka's consumer group tests with the consumer protocol (KIP-848)"
    run "librdkafka suite (group.protocol=consumer)" env SPATE_BIN="$TARGET_DIR/release/spate" \
      scripts/librdkafka-suite.sh --group-protocol consumer
    collect rdk-share || true
  else
    echo "not run: librdkafka did not build (see above)"
  fi
fi

if ((${#failed[@]} > 0)); then
  step "FAILED: ${failed[*]}"
  exit 1
fi
step "all tests passed"
