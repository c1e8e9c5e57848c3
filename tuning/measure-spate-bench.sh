#!/usr/bin/env bash
# Runs spate-bench against a Spate broker inside a private network namespace, once per set of
# per-namespace socket settings, and prints spate-bench's comparison tables.
#
#   sudo tuning/measure-spate-bench.sh [OUT_DIR]
# Environment: SPATE_BIN (default target/release/spate), SPATE_BENCH_BIN (default
# target/release/spate-bench), DURATION (default 10s), RATE for the end-to-end run (default
# 20k records/s, which one producer keeps up with on a busy two-core VM).
#
# Only per-namespace settings are varied (net.ipv4.tcp_rmem, net.ipv4.tcp_wmem,
# net.ipv4.tcp_slow_start_after_idle, net.core.somaxconn, net.ipv4.tcp_max_syn_backlog), so
# the host is never changed; the vm.*, fs.* and busy-polling keys are global and are not
# measured here. Each configuration gets a fresh broker and data dir. tuning/README.md has
# the results from the project's VM.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
OUT=${1:-$(mktemp -d /tmp/spate-measure.XXXXXX)}
SPATE_BIN=${SPATE_BIN:-$REPO/target/release/spate}
SPATE_BENCH_BIN=${SPATE_BENCH_BIN:-$REPO/target/release/spate-bench}
DURATION=${DURATION:-10s}
RATE=${RATE:-20k}
NS="spate-bench-$$"
PORT=9092

if [[ $EUID -ne 0 ]]; then
    echo "measure-spate-bench.sh: run as root (it creates a netns)" >&2
    exit 2
fi
for bin in "$SPATE_BIN" "$SPATE_BENCH_BIN"; do
    [[ -x $bin ]] || { echo "measure-spate-bench.sh: $bin is not built" >&2; exit 2; }
done
mkdir -p "$OUT"

BROKER_PID=''
cleanup() {
    [[ -n $BROKER_PID ]] && kill "$BROKER_PID" 2> /dev/null && wait "$BROKER_PID" 2> /dev/null
    ip netns del "$NS" 2> /dev/null || true
}
trap cleanup EXIT

ip netns add "$NS"
ip -n "$NS" link set lo up
# librdkafka resolves with AI_ADDRCONFIG, which finds nothing in a namespace that has only
# 127.0.0.1; any other address on lo makes IPv4 lookups work.
ip -n "$NS" addr add 10.255.0.1/32 dev lo

in_ns() {
    ip netns exec "$NS" "$@"
}

set_net() {
    in_ns sh -c "echo '$2' > /proc/sys/${1//.//}"
}

start_broker() {
    local data=$OUT/data-$1
    rm -rf "$data"
    # ip netns exec runs the broker in its own process, so $! is the broker's pid.
    ip netns exec "$NS" "$SPATE_BIN" --listen "127.0.0.1:$PORT" --data-dir "$data" \
        --cores 1 > "$OUT/broker-$1.log" 2>&1 &
    BROKER_PID=$!
    local i
    for ((i = 0; i < 50; i++)); do
        kill -0 "$BROKER_PID" 2> /dev/null || break
        in_ns bash -c "exec 3<>/dev/tcp/127.0.0.1/$PORT" 2> /dev/null && return 0
        sleep 0.1
    done
    echo "measure-spate-bench.sh: the broker did not start, see $OUT/broker-$1.log" >&2
    exit 1
}

stop_broker() {
    kill "$BROKER_PID" 2> /dev/null || true
    wait "$BROKER_PID" || true
    BROKER_PID=''
}

bench() {
    local label=$1 workload=$2
    shift 2
    # spate-bench exits non-zero when an open-loop run could not keep up; its results are
    # still written (and say so), so the comparison goes on.
    local rc=0
    in_ns timeout 300 "$SPATE_BENCH_BIN" "$workload" -b "127.0.0.1:$PORT" -d "$DURATION" -q \
        -l "$label" --broker-pid "$BROKER_PID" --json "$OUT/$workload-$label.json" "$@" \
        > "$OUT/$workload-$label.txt" || rc=$?
    if [[ ! -s $OUT/$workload-$label.json ]]; then
        echo "measure-spate-bench.sh: spate-bench $workload failed (exit $rc), see" \
            "$OUT/$workload-$label.txt" >&2
        exit 1
    fi
    [[ $rc -eq 0 ]] || echo "# $workload $label: spate-bench exit $rc: $(grep -m 1 'open loop' \
        "$OUT/$workload-$label.txt" || true)"
}

run_config() {
    local label=$1 rmem=$2 wmem=$3 slow_start=$4 somaxconn=$5
    set_net net.ipv4.tcp_rmem "$rmem"
    set_net net.ipv4.tcp_wmem "$wmem"
    set_net net.ipv4.tcp_slow_start_after_idle "$slow_start"
    set_net net.core.somaxconn "$somaxconn"
    set_net net.ipv4.tcp_max_syn_backlog $((somaxconn * 2))
    start_broker "$label"
    # Produce as fast as possible, then read it all back from the earliest offset (the
    # catch-up path), then a paced end-to-end run for latency.
    bench "$label" produce -t "catchup-$label"
    bench "$label" consume -t "catchup-$label" --from earliest
    bench "$label" e2e -t "e2e-$label" -r "$RATE"
    stop_broker
}

defaults_rmem=$(in_ns cat /proc/sys/net/ipv4/tcp_rmem | tr '\t' ' ')
defaults_wmem=$(in_ns cat /proc/sys/net/ipv4/tcp_wmem | tr '\t' ' ')
echo "# namespace defaults: tcp_rmem '$defaults_rmem', tcp_wmem '$defaults_wmem'"
run_config defaults "$defaults_rmem" "$defaults_wmem" 1 4096
run_config sysctl-conf '4096 131072 16777216' '4096 16384 16777216' 0 4096
run_config small-256k '4096 87380 262144' '4096 16384 262144' 1 4096

for workload in produce consume e2e; do
    echo "## $workload"
    "$SPATE_BENCH_BIN" compare --markdown "$OUT/$workload-defaults.json" \
        "$OUT/$workload-sysctl-conf.json" "$OUT/$workload-small-256k.json"
done
echo "# results and logs in $OUT"
