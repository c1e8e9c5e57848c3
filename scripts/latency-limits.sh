#!/usr/bin/env bash
# Spate's latency next to the machine's own limits, measured in the same run (issue 11):
#   1. loopback TCP round trip (sockperf ping-pong, 64 B) against Spate's end-to-end latency
#      at 1,000 records/s (linger.ms=0, acks=all, 1 KiB lz4, 4 partitions);
#   2. the device's 16 KiB O_DIRECT write + fdatasync, back to back (fio, io_uring) and one
#      pair per millisecond (the broker's rate), against Spate's publish latency at 1,000
#      records/s under --durability fsync;
#   3. a 1,000 records/s producer alone, then while a consumer reads a cold backlog from the
#      start as fast as it can, again each time it reaches the end (catch-up interference),
#      same broker, same run: the client's latencies and the broker's own (the share of its
#      Produce requests over 1 and 5 ms, from its histogram), as on a small machine the
#      consumer's CPU on the load core shows in the producer's figures too.
# The broker runs on BROKER_CPUS (default: the last CPU), the load on the others. Not part of
# the test suite: it takes a few minutes and wants a quiet machine.
#
#   scripts/latency-limits.sh [--out DIR] [--backlog-gb N] [--duration SECS] [--client C]
#
# --client native measures Spate's producers with spate-bench's own client (one Produce
# request per record) instead of librdkafka (the default), whose own hand-offs between threads
# add to every publish latency; the consumers are librdkafka either way.
# Environment: SPATE_BIN, SPATE_BENCH_BIN (default target/release/...), DATA_PARENT (default:
# the repo, so the data dir is on the disk the broker would use; /tmp may be tmpfs).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT="$ROOT/bench/results/latency-limits-$(date -u +%Y%m%dT%H%M%SZ)"
BACKLOG_GB=3
DURATION=20
CLIENT=librdkafka
while (($#)); do
  case "$1" in
    --out) OUT=$2; shift 2 ;;
    --backlog-gb) BACKLOG_GB=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --client) CLIENT=$2; shift 2 ;;
    *) echo "usage: $0 [--out DIR] [--backlog-gb N] [--duration SECS] [--client C]" >&2
       exit 2 ;;
  esac
done
mkdir -p "$OUT"
SPATE_BIN=${SPATE_BIN:-$ROOT/target/release/spate}
BENCH_BIN=${SPATE_BENCH_BIN:-$ROOT/target/release/spate-bench}
CPUS=$(nproc)
BROKER_CPUS=${BROKER_CPUS:-$((CPUS - 1))}
LOAD_CPUS=${LOAD_CPUS:-0}
DATA=$(mktemp -d -p "${DATA_PARENT:-$ROOT}" spate-limits.XXXXXX)
PORT=$((20000 + RANDOM % 20000))
BROKER_PID=""
SERVER_PID=""
cleanup() {
  [[ -n "$BROKER_PID" ]] && kill "$BROKER_PID" 2>/dev/null && wait "$BROKER_PID" 2>/dev/null
  [[ -n "$SERVER_PID" ]] && kill "$SERVER_PID" 2>/dev/null
  rm -rf "$DATA"
}
trap cleanup EXIT

for tool in sockperf fio curl bc; do
  command -v "$tool" >/dev/null || { echo "latency-limits: apt-get install -y $tool"; exit 2; }
done
[[ -x "$SPATE_BIN" && -x "$BENCH_BIN" ]] || {
  echo "latency-limits: build first: cargo build --release --workspace"; exit 2; }

log() { printf '== %s\n' "$*" | tee -a "$OUT/summary.txt"; }

start_broker() {
  rm -rf "$DATA/broker"
  mkdir -p "$DATA/broker"
  taskset -c "$BROKER_CPUS" "$SPATE_BIN" --listen "127.0.0.1:$PORT" --data-dir "$DATA/broker" \
    --cores 1 "$@" >"$OUT/broker.log" 2>&1 &
  BROKER_PID=$!
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "latency-limits: the broker did not start (see $OUT/broker.log)"; exit 1
}

stop_broker() {
  kill "$BROKER_PID"; wait "$BROKER_PID" 2>/dev/null || true; BROKER_PID=""
}

# bench NAME WORKLOAD ARGS...: one spate-bench run, its table kept in NAME.txt.
bench() {
  local name=$1 workload=$2
  shift 2
  taskset -c "$LOAD_CPUS" "$BENCH_BIN" "$workload" -b "127.0.0.1:$PORT" -q --label "$name" \
    --json "$OUT/$name.json" "$@" >"$OUT/$name.txt" 2>&1 || true
  grep -E '^(publish|end-to-end) ' "$OUT/$name.txt" | sed "s/^/$name: /" | tee -a "$OUT/summary.txt"
}

LOW_RATE=(--rate 1000 --linger-ms 0 --acks all --compression lz4 -s 1024 --partitions 4
          --duration "${DURATION}s" --warmup 3s --client "$CLIENT")
log "producers: $CLIENT"

log "1. loopback round trip (sockperf ping-pong, 64 B, full round trip, microseconds)"
taskset -c "$BROKER_CPUS" sockperf server -i 127.0.0.1 -p $((PORT + 1)) --tcp >/dev/null 2>&1 &
SERVER_PID=$!
sleep 1
taskset -c "$LOAD_CPUS" sockperf ping-pong -i 127.0.0.1 -p $((PORT + 1)) --tcp -m 64 \
  -t "$DURATION" --full-rtt >"$OUT/sockperf.txt" 2>&1 || true
kill "$SERVER_PID"; SERVER_PID=""
grep -E 'percentile (50|99|99\.9)\.0+ =' "$OUT/sockperf.txt" | sed 's/^sockperf: //' |
  tee -a "$OUT/summary.txt"

log "1. Spate end-to-end at 1,000 records/s (ms)"
start_broker
bench e2e-1k e2e "${LOW_RATE[@]}" --topic e2e-1k
stop_broker

log "2. device: 16 KiB O_DIRECT write + fdatasync, io_uring (fio, microseconds)"
fio --name=fsync --directory="$DATA" --size=64m --ioengine=io_uring --direct=1 --rw=write \
  --bs=16k --iodepth=1 --fdatasync=1 --runtime="$DURATION" --time_based \
  --output-format=json >"$OUT/fio.json" 2>/dev/null || true
rm -f "$DATA"/fsync.*
python3 - "$OUT/fio.json" <<'EOF' | tee -a "$OUT/summary.txt"
import json, sys
job = json.load(open(sys.argv[1]))["jobs"][0]
write = job["write"]["clat_ns"]["percentile"]
sync = job["sync"]["lat_ns"]["percentile"]
for name, pct in (("write", write), ("fdatasync", sync)):
    print(f"{name}: p50 {pct['50.000000'] / 1000:.0f} us, p99 {pct['99.000000'] / 1000:.0f} us, "
          f"p99.9 {pct['99.900000'] / 1000:.0f} us")
EOF
# The same operation at the broker's rate: back to back, the device answers faster than when
# each write comes alone (on the 2-core VM, fdatasync p99 ~110 us back to back, ~480 us at
# 1,000/s). Write and fdatasync timed together, one pair per millisecond: the like-for-like
# reference for a publish at 1,000 records/s.
log "2. device: the same 16 KiB O_DIRECT write + fdatasync, one pair per ms (microseconds)"
python3 - "$DATA/paced" "$DURATION" <<'EOF' | tee -a "$OUT/summary.txt"
import mmap, os, sys, time
path, duration = sys.argv[1], float(sys.argv[2])
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o600)
size = 64 << 20
os.posix_fallocate(fd, 0, size)
buf = mmap.mmap(-1, 16384)
buf.write(os.urandom(16384))
took, at, due = [], 0, time.perf_counter()
end = due + duration
while due < end:
    # Asleep between pairs, as the broker is between requests (a spinning CPU keeps the
    # virtual machine awake and flatters the device).
    time.sleep(max(0.0, due - time.perf_counter()))
    began = time.perf_counter()
    os.pwrite(fd, buf, at)
    os.fdatasync(fd)
    took.append(time.perf_counter() - began)
    at = (at + 16384) % size
    due += 0.001
os.close(fd)
os.unlink(path)
took.sort()
def pct(q):
    return took[min(len(took) - 1, int(q * len(took)))] * 1e6
print(f"write+fdatasync at 1,000/s: p50 {pct(0.5):.0f} us, p99 {pct(0.99):.0f} us, "
      f"p99.9 {pct(0.999):.0f} us")
EOF
log "2. Spate --durability fsync at 1,000 records/s (ms)"
start_broker --durability fsync
bench fsync-1k produce "${LOW_RATE[@]}" --topic fsync-1k
stop_broker

log "3. a 1,000 records/s producer alone, then beside a catch-up consumer (ms)"
METRICS_PORT=$((PORT + 2))
start_broker --metrics-listen "127.0.0.1:$METRICS_PORT"
taskset -c "$LOAD_CPUS" "$BENCH_BIN" produce -b "127.0.0.1:$PORT" -q --topic backlog \
  --partitions 4 -s 1024 --payload random --acks 1 -n $((BACKLOG_GB * 1024 * 1024)) \
  --warmup 0s >"$OUT/backlog.txt" 2>&1 || true
sync
echo 1 >/proc/sys/vm/drop_caches 2>/dev/null || echo "(cannot drop caches: not root)" |
  tee -a "$OUT/summary.txt"

# The broker's own Produce latency histogram (frame read to answer queued), scraped before
# and after a run: the client's figures also hold the load generators' contention for their
# one core, which this separates from the broker's.
produce_buckets() {
  curl -s "127.0.0.1:$METRICS_PORT/metrics" | grep 'latency_seconds_bucket{api="Produce"' >"$1"
}
inside_broker() {
  python3 - "$1" "$2" "$3" <<'EOF'
import re, sys
def load(path):
    found = {}
    for line in open(path):
        m = re.search(r'le="([^"]+)"\} (\d+)', line)
        if m:
            found[m.group(1)] = int(m.group(2))
    return found
before, after = load(sys.argv[1]), load(sys.argv[2])
total = after["+Inf"] - before["+Inf"]
over = {le: 100 * (total - (after[le] - before[le])) / max(total, 1) for le in ("0.001", "0.005")}
print(f"{sys.argv[3]}: inside the broker {total} produce requests, over 1 ms {over['0.001']:.2f}%, "
      f"over 5 ms {over['0.005']:.2f}%")
EOF
}

produce_buckets "$OUT/alone.before"
bench alone produce "${LOW_RATE[@]}" --topic live
produce_buckets "$OUT/alone.after"
inside_broker "$OUT/alone.before" "$OUT/alone.after" alone | tee -a "$OUT/summary.txt"
# The consumer reads the cold backlog from the start, again (caches dropped) each time it
# reaches the end, until the producer's run is over: a fast disk reads a few GiB in seconds.
DONE_FLAG="$OUT/.producer-done"
rm -f "$DONE_FLAG"
(
  pass=0
  while [[ ! -e "$DONE_FLAG" ]]; do
    pass=$((pass + 1))
    echo 1 >/proc/sys/vm/drop_caches 2>/dev/null || true
    began=$(date +%s.%N)
    taskset -c "$LOAD_CPUS" "$BENCH_BIN" consume -b "127.0.0.1:$PORT" -q --topic backlog \
      --from earliest -n $((BACKLOG_GB * 1024 * 1024)) --duration 300s --warmup 0s \
      >"$OUT/catch-up-$pass.txt" 2>&1 || true
    took=$(echo "$(date +%s.%N) - $began" | bc)
    if [[ -e "$DONE_FLAG" ]]; then
      printf 'catch-up consumer pass %d: stopped with the producer after %.1f s\n' "$pass" \
        "$took" >>"$OUT/catch-up.txt"
    else
      printf 'catch-up consumer pass %d: %s GiB in %.1f s\n' "$pass" "$BACKLOG_GB" "$took" \
        >>"$OUT/catch-up.txt"
    fi
  done
) &
CONSUMER=$!
sleep 2
produce_buckets "$OUT/beside.before"
bench beside-catch-up produce "${LOW_RATE[@]}" --topic live
produce_buckets "$OUT/beside.after"
touch "$DONE_FLAG"
inside_broker "$OUT/beside.before" "$OUT/beside.after" beside-catch-up |
  tee -a "$OUT/summary.txt"
pkill -P "$CONSUMER" 2>/dev/null || true
wait "$CONSUMER" 2>/dev/null || true
tee -a "$OUT/summary.txt" <"$OUT/catch-up.txt"
stop_broker
echo "results in $OUT"
