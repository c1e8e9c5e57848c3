#!/usr/bin/env bash
# The first end-to-end figure, next to what the machine itself can do, in one run:
#   1. O_DIRECT sequential write MB/s on the data dir's file system (dd oflag=direct, 1 MiB),
#   2. loopback TCP MB/s (iperf3, one stream),
#   3. Spate produce MB/s at maximum rate (closed loop) and publish/end-to-end latency at a
#      moderate fixed rate (open loop), both with spate-bench (librdkafka inside).
# Not part of the test suite: it takes about a minute and wants a quiet machine.
#
#   scripts/baseline.sh [--out DIR]
#
# Environment: SPATE_BIN (default target/release/spate), SPATE_BENCH_BIN (default
# target/release/spate-bench), SPATE_CORES (default: all), DATA_PARENT (default: the repo, so
# the data dir is on the disk the broker would use; /tmp may be tmpfs), RATE (default 20000).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT="$ROOT/bench/results/baseline-$(date -u +%Y%m%dT%H%M%SZ)"
[[ "${1:-}" == "--out" ]] && OUT=$2
mkdir -p "$OUT"
SPATE_BIN=${SPATE_BIN:-$ROOT/target/release/spate}
BENCH_BIN=${SPATE_BENCH_BIN:-$ROOT/target/release/spate-bench}
RATE=${RATE:-20000}
DATA=$(mktemp -d -p "${DATA_PARENT:-$ROOT}" spate-baseline.XXXXXX)
PORT=$((20000 + RANDOM % 20000))
BROKER_PID=""
cleanup() {
  [[ -n "$BROKER_PID" ]] && kill "$BROKER_PID" 2>/dev/null && wait "$BROKER_PID" 2>/dev/null
  rm -rf "$DATA"
}
trap cleanup EXIT

for tool in dd iperf3; do
  if ! command -v "$tool" >/dev/null; then
    echo "baseline: $tool is missing; apt-get install -y $tool"
    exit 2
  fi
done
[[ -x "$SPATE_BIN" && -x "$BENCH_BIN" ]] || {
  echo "baseline: build first: cargo build --release --workspace"; exit 2; }

echo "== O_DIRECT write, 1 GiB in 1 MiB blocks" | tee "$OUT/summary.txt"
dd if=/dev/zero of="$DATA/dd.bin" bs=1M count=1024 oflag=direct conv=fdatasync 2>&1 \
  | tail -1 | tee -a "$OUT/summary.txt"
rm -f "$DATA/dd.bin"

echo "== loopback TCP, iperf3 one stream, 5 s" | tee -a "$OUT/summary.txt"
iperf3 -s -1 -p $((PORT + 1)) -B 127.0.0.1 >/dev/null 2>&1 &
sleep 0.5
iperf3 -c 127.0.0.1 -p $((PORT + 1)) -t 5 -f M 2>&1 | grep -E "receiver" | tee -a "$OUT/summary.txt"

CORES_ARGS=()
[[ -n "${SPATE_CORES:-}" ]] && CORES_ARGS=(--cores "$SPATE_CORES")
"$SPATE_BIN" --listen 127.0.0.1:$PORT --data-dir "$DATA/spate" "${CORES_ARGS[@]}" \
  >"$OUT/broker.log" 2>&1 &
BROKER_PID=$!
for _ in $(seq 1 100); do
  (echo >/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break
  sleep 0.1
done

echo "== spate produce, closed loop, 1 KiB, no compression, acks=all, 4 partitions" \
  | tee -a "$OUT/summary.txt"
"$BENCH_BIN" produce -b 127.0.0.1:$PORT -t baseline-max --partitions 4 -s 1024 \
  --payload random -a all -d 10s -w 2s --broker-pid "$BROKER_PID" \
  --json "$OUT/max.json" >"$OUT/max.txt" 2>&1 || true
grep -E "^produced|^publish |^cpu" "$OUT/max.txt" | tee -a "$OUT/summary.txt"

echo "== spate e2e, open loop $RATE records/s, 1 KiB, lz4, acks=all, 4 partitions" \
  | tee -a "$OUT/summary.txt"
"$BENCH_BIN" e2e -b 127.0.0.1:$PORT -t baseline-rate --partitions 4 -s 1024 -z lz4 -a all \
  -r "$RATE" -d 10s -w 2s --broker-pid "$BROKER_PID" --json "$OUT/rate.json" \
  --hgrm "$OUT/rate.hgrm" --plot "$OUT/rate.svg" >"$OUT/rate.txt" 2>&1 || true
grep -E "^produced|^consumed|^publish |^end-to-end |^open loop|^cpu" "$OUT/rate.txt" \
  | tee -a "$OUT/summary.txt"
echo "results in $OUT"
