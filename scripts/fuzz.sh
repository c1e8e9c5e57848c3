#!/usr/bin/env bash
# Runs the libFuzzer targets in fuzz/ (cargo fuzz) for a bounded time each.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 10 s, every target)
#   scripts/fuzz.sh --build                              only build the targets (scripts/test.sh
#                                                        builds them while other tests run)
#
# scripts/test.sh runs the short form; a long run is e.g. `scripts/fuzz.sh 3600`. Each target
# starts from the committed seeds (fuzz/seeds/<target>, real client requests and the files
# they left: fuzz/capture_seeds.py) plus what earlier runs on this machine found
# ($SPATE_FUZZ_DIR/<target>, default ~/.cache/spate/fuzz), under limits that make a request
# that allocates far beyond its size a failure: -rss_limit_mb=1024, -malloc_limit_mb=256.
# With a nightly toolchain the targets are built with AddressSanitizer; with stable only,
# without a sanitizer. A crash leaves its input in $SPATE_FUZZ_DIR/artifacts/<target>/ and
# the script fails, printing how to reproduce it. Crashes found are fixed and their inputs
# kept as regression seeds in fuzz/seeds/<target>.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD_ONLY=0
if [ "${1:-}" = "--build" ]; then
    BUILD_ONLY=1
    shift
fi
SECONDS_PER_TARGET="${1:-10}"
shift || true
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
    TARGETS=(request records storage_files internal_records config_text)
fi
WORK="${SPATE_FUZZ_DIR:-$HOME/.cache/spate/fuzz}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked --quiet
fi
if cargo +nightly --version >/dev/null 2>&1; then
    TOOLCHAIN=(+nightly)
    SANITIZER=(--sanitizer address)
else
    TOOLCHAIN=()
    SANITIZER=(--sanitizer none)
fi

cd "$ROOT/fuzz"
echo "== building the fuzz targets (${TOOLCHAIN[*]:-stable}, ${SANITIZER[*]})"
cargo "${TOOLCHAIN[@]}" fuzz build -O "${SANITIZER[@]}"
if [ "$BUILD_ONLY" = 1 ]; then
    exit 0
fi

failed=()
for target in "${TARGETS[@]}"; do
    corpus="$WORK/$target"
    artifacts="$WORK/artifacts/$target"
    mkdir -p "$corpus" "$artifacts"
    echo "== $target: ${SECONDS_PER_TARGET} s"
    log="$WORK/$target.log"
    if cargo "${TOOLCHAIN[@]}" fuzz run -O "${SANITIZER[@]}" "$target" "$corpus" "seeds/$target" \
        -- -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=1024 -malloc_limit_mb=256 \
        -timeout=10 -print_final_stats=1 -artifact_prefix="$artifacts/" >"$log" 2>&1; then
        grep -E "^Done|stat::number_of_executed_units|stat::peak_rss_mb" "$log" | tr '\n' ' '
        echo
    else
        failed+=("$target")
        tail -40 "$log"
        echo "== $target FAILED: reproduce with (in fuzz/)" \
             "cargo ${TOOLCHAIN[*]} fuzz run -O ${SANITIZER[*]} $target $artifacts/<file>"
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "== fuzzing failed: ${failed[*]}"
    exit 1
fi
echo "== fuzzing passed: ${TARGETS[*]}"
