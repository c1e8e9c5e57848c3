#!/usr/bin/env bash
# Runs one named workload against Spate and against Apache Kafka in the same run, and writes
# the side-by-side table and one latency plot to a results folder.
#
#   scripts/compare.sh WORKLOAD [--spate ADDR] [--kafka ADDR] [--out DIR]
#                               [--duration SECS] [--warmup SECS] [--no-pin]
#   scripts/compare.sh --list
#
# Without --spate, the script starts Spate itself ($SPATE_BIN, default target/release/spate,
# one core, a temporary data directory). Without --kafka, it starts the Apache Kafka reference
# broker with scripts/kafka-reference.sh; where Maven Central cannot be reached that is said
# once and the run compares whatever brokers it has. Brokers the script started are stopped at
# the end; brokers given by address are left running.
#
# Fairness on a small machine: unless --no-pin is given, every broker process (all its threads)
# is pinned to the CPUs in BROKER_CPUS (default: the last CPU) and the bench to BENCH_CPUS
# (default: all the others), so each broker gets the same CPU and never competes with the
# load generator. In a sweep each broker is stopped (SIGSTOP) while the other is loaded, so
# that neither's background work runs in the other's measurement. The broker's CPU seconds (user + system, from /proc/<pid>/stat before and
# after) are reported per run.
#
# Results: <out>/<label>.json, .hgrm files and .svg per broker, compare.txt (table),
# compare.md (the same as Markdown), compare.svg (both runs on one plot), cpu.txt.
# The `sweep` workload runs one `spate-bench sweep` over both brokers instead (a ladder of
# open-loop rates, the brokers alternating at each rate) and writes sweep.txt (table), sweep.md,
# sweep.json and sweep.svg (latency against offered load); --duration and --warmup are per step
# there (default 10 s and 2 s); before the ladder each broker gets SWEEP_WARM_UP (default 30s)
# of unmeasured load at the first rate, so that Kafka's JVM is not measured compiling.
# Default out: bench/results/<workload>-<UTC time>.
#
# Environment: SPATE_BIN, SPATE_BENCH_BIN (else bench/ is built with cargo), BROKER_CPUS,
# BENCH_CPUS, SPATE_CORES (default 1), KAFKA_REF_PORT (default 19092).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SPATE_BIN="${SPATE_BIN:-${REPO}/target/release/spate}"
SPATE_CORES="${SPATE_CORES:-1}"
CPU_COUNT="$(nproc)"
BROKER_CPUS="${BROKER_CPUS:-$((CPU_COUNT - 1))}"
if (( CPU_COUNT > 1 )); then
    BENCH_CPUS="${BENCH_CPUS:-0-$((CPU_COUNT - 2))}"
else
    BENCH_CPUS="${BENCH_CPUS:-0}"
fi
DURATION=""
WARMUP=""
# Per run of the single-rate workloads, per step of `sweep` (which has many).
RUN_DURATION="30s"
RUN_WARMUP="5s"
STEP_DURATION="10s"
STEP_WARMUP="2s"
# How long Spate may take to accept connections after it starts.
SPATE_READY_SECS=30

log() { echo "compare: $*" >&2; }

# Named workloads: the arguments spate-bench gets (besides address, topic, outputs).
# Keep the names stable: results folders and notes refer to them.
workload_args() {
    local common=(--partitions 4 --record-size 1024 --payload text --producers 1 --consumers 1)
    case "$1" in
        lz4-1k-acks-all-fixed)
            # The moderate fixed-rate case: latency at a load both brokers carry easily.
            echo e2e "${common[@]}" --compression lz4 --acks all --rate 5000 --arrival constant
            ;;
        lz4-1k-acks-all-poisson)
            echo e2e "${common[@]}" --compression lz4 --acks all --rate 5000 --arrival poisson
            ;;
        lz4-1k-acks-all-max)
            # Closed loop: the most each broker takes; latency here is mostly queueing.
            echo e2e "${common[@]}" --compression lz4 --acks all
            ;;
        none-100b-acks-1-max)
            echo produce --partitions 4 --record-size 100 --payload random --compression none \
                --acks 1
            ;;
        none-1k-acks-0-max)
            # The bench's own ceiling: acks=0 lets the client send without waiting.
            echo produce "${common[@]}" --compression none --acks 0
            ;;
        sweep)
            # Publish latency against offered load, one request per record (linger 0): where
            # each broker's latency bends, and the rate at which it no longer keeps up.
            echo sweep "${common[@]}" --compression lz4 --acks all --linger-ms 0 \
                --rates 1k..100k
            ;;
        sweep-native)
            # The same through spate-bench's own producer (one Produce request per record,
            # pipelined), which drives ~60,000 requests/s from one core where librdkafka at
            # linger 0 fills its core at ~20,000 and then batches.
            echo sweep "${common[@]}" --compression lz4 --acks all --linger-ms 0 \
                --client native --rates 1k..100k
            ;;
        *)
            return 1
            ;;
    esac
}
WORKLOADS=(lz4-1k-acks-all-fixed lz4-1k-acks-all-poisson lz4-1k-acks-all-max
    none-100b-acks-1-max none-1k-acks-0-max sweep sweep-native)

usage() {
    sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    echo "workloads: ${WORKLOADS[*]}" >&2
    exit 64
}

WORKLOAD=""
SPATE_ADDR=""
KAFKA_ADDR=""
OUT=""
PIN=1
while (( $# > 0 )); do
    case "$1" in
        --spate) SPATE_ADDR="$2"; shift 2 ;;
        --kafka) KAFKA_ADDR="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --duration) DURATION="$2"; shift 2 ;;
        --warmup) WARMUP="$2"; shift 2 ;;
        --no-pin) PIN=0; shift ;;
        --list) printf '%s\n' "${WORKLOADS[@]}"; exit 0 ;;
        -h|--help) usage ;;
        -*) log "unknown option $1"; usage ;;
        *) [[ -z "${WORKLOAD}" ]] || usage; WORKLOAD="$1"; shift ;;
    esac
done
[[ -n "${WORKLOAD}" ]] || usage
if ! BENCH_ARGS_TEXT="$(workload_args "${WORKLOAD}")"; then
    log "unknown workload '${WORKLOAD}'"
    usage
fi
read -r -a BENCH_ARGS <<< "${BENCH_ARGS_TEXT}"
if [[ "${WORKLOAD}" == sweep* ]]; then
    DURATION="${DURATION:-${STEP_DURATION}}"
    WARMUP="${WARMUP:-${STEP_WARMUP}}"
else
    DURATION="${DURATION:-${RUN_DURATION}}"
    WARMUP="${WARMUP:-${RUN_WARMUP}}"
fi
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
OUT="${OUT:-${REPO}/bench/results/${WORKLOAD}-${STAMP}}"
mkdir -p "${OUT}"

# What to clean up on exit.
STARTED_SPATE_PID=""
STARTED_SPATE_DIR=""
STARTED_KAFKA=0
PAUSED_PIDS=()
cleanup() {
    # A sweep stops the idle broker during the other's steps; never leave one stopped.
    for pid in "${PAUSED_PIDS[@]}"; do
        kill -CONT "${pid}" 2>/dev/null || true
    done
    if [[ -n "${STARTED_SPATE_PID}" ]]; then
        kill -TERM "${STARTED_SPATE_PID}" 2>/dev/null || true
        wait "${STARTED_SPATE_PID}" 2>/dev/null || true
    fi
    [[ -n "${STARTED_SPATE_DIR}" ]] && rm -rf "${STARTED_SPATE_DIR}"
    if (( STARTED_KAFKA )); then
        "${REPO}/scripts/kafka-reference.sh" stop || true
    fi
}
trap cleanup EXIT

bench_bin() {
    if [[ -n "${SPATE_BENCH_BIN:-}" ]]; then
        echo "${SPATE_BENCH_BIN}"
        return
    fi
    log "building spate-bench (cargo build --release)"
    cargo build --release --manifest-path "${REPO}/bench/Cargo.toml" \
        --message-format=json-render-diagnostics 2> "${OUT}/build.log" \
        | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") \
            and m["target"]["name"] == "spate-bench":
        print(m["executable"])'
}

# The pid listening on the port of ADDR (host:port), if this machine has it.
pid_of_listener() {
    local port="${1##*:}"
    ss -Hltnp "sport = :${port}" 2>/dev/null | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

start_spate() {
    if [[ ! -x "${SPATE_BIN}" ]]; then
        log "no Spate binary at ${SPATE_BIN} (build it with cargo build --release); skipping Spate"
        return 1
    fi
    local port
    port="$(free_port)"
    STARTED_SPATE_DIR="$(mktemp -d /tmp/spate-compare.XXXXXX)"
    "${SPATE_BIN}" --listen "127.0.0.1:${port}" --data-dir "${STARTED_SPATE_DIR}/data" \
        --cores "${SPATE_CORES}" --default-partitions 4 > "${OUT}/spate.log" 2>&1 &
    STARTED_SPATE_PID=$!
    local waited=0
    until (exec 3<>"/dev/tcp/127.0.0.1/${port}") 2>/dev/null; do
        if ! kill -0 "${STARTED_SPATE_PID}" 2>/dev/null; then
            log "Spate exited during start-up; see ${OUT}/spate.log"
            STARTED_SPATE_PID=""
            return 1
        fi
        if (( waited >= SPATE_READY_SECS * 10 )); then
            log "Spate did not accept connections within ${SPATE_READY_SECS} s"
            return 1
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    SPATE_ADDR="127.0.0.1:${port}"
}

if [[ -z "${SPATE_ADDR}" ]]; then
    start_spate || true
fi
if [[ -z "${KAFKA_ADDR}" ]]; then
    # A reference broker that was already running is used and left running.
    already_running=0
    "${REPO}/scripts/kafka-reference.sh" status > /dev/null 2>&1 && already_running=1
    if KAFKA_ADDR="$("${REPO}/scripts/kafka-reference.sh" start)"; then
        (( already_running )) || STARTED_KAFKA=1
    else
        log "the Apache Kafka reference broker is not available (see above); comparing without it"
        KAFKA_ADDR=""
    fi
fi

BROKERS=()
[[ -n "${SPATE_ADDR}" ]] && BROKERS+=("spate=${SPATE_ADDR}")
[[ -n "${KAFKA_ADDR}" ]] && BROKERS+=("kafka=${KAFKA_ADDR}")
if (( ${#BROKERS[@]} == 0 )); then
    log "no broker to run against: give --spate ADDR and/or --kafka ADDR"
    exit 1
fi

BENCH="$(bench_bin)"
[[ -x "${BENCH}" ]] || { log "could not build spate-bench; see ${OUT}/build.log"; exit 1; }
BENCH_PREFIX=()
if (( PIN )) && (( CPU_COUNT > 1 )); then
    BENCH_PREFIX=(taskset -c "${BENCH_CPUS}")
fi

cpu_seconds() {
    # utime + stime are fields 14 and 15; the command name may contain spaces, so count
    # fields after the last ')'.
    local stat ticks
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || { echo 0; return; }
    ticks="$(getconf CLK_TCK)"
    awk -v ticks="${ticks}" '{ sub(/.*\) /, ""); printf "%.2f\n", ($12 + $13) / ticks }' \
        <<< "${stat}"
}

# Pins the broker listening on ADDR to BROKER_CPUS (unless --no-pin) and prints its pid, or
# nothing when no local process listens there.
pin_broker() {
    local label="$1" addr="$2" pid
    pid="$(pid_of_listener "${addr}" || true)"
    if [[ -z "${pid}" ]]; then
        log "${label}: no local process listens on ${addr}; its CPU time is not measured"
        return 0
    fi
    if (( PIN )) && (( CPU_COUNT > 1 )); then
        taskset -a -p -c "${BROKER_CPUS}" "${pid}" > /dev/null
    fi
    echo "${pid}"
}

log "workload ${WORKLOAD}: spate-bench ${BENCH_ARGS[*]} --duration ${DURATION} --warmup ${WARMUP}"
log "results in ${OUT}"

if [[ "${WORKLOAD}" == sweep* ]]; then
    # One bench process sweeps every broker, alternating at each rate, so that both ladders
    # are measured over the same span of time on this machine.
    target_args=()
    for entry in "${BROKERS[@]}"; do
        label="${entry%%=*}"
        addr="${entry#*=}"
        pid="$(pin_broker "${label}" "${addr}")"
        log "${label} (${addr}, pid ${pid:-unknown})"
        target_args+=(-b "${addr}" --label "${label}")
        [[ -n "${pid}" ]] && target_args+=(--broker-pid "${pid}") && PAUSED_PIDS+=("${pid}")
    done
    # Pinned to the same CPU, an idle broker's background work (a JVM's compiler and
    # collector) would run inside the other's measurement: each is stopped while the other
    # is loaded, when every broker's pid is known.
    if (( PIN )) && (( CPU_COUNT > 1 )) && (( ${#PAUSED_PIDS[@]} == ${#BROKERS[@]} )); then
        target_args+=(--pause-idle-brokers)
    fi
    labels="$(printf '%s\n' "${BROKERS[@]%%=*}" | paste -sd, - | sed 's/,/ vs /g')"
    status=0
    "${BENCH_PREFIX[@]}" "${BENCH}" "${BENCH_ARGS[@]}" "${target_args[@]}" \
        -t "compare-sweep-${STAMP}" --duration "${DURATION}" --warmup "${WARMUP}" \
        --warm-up-brokers "${SWEEP_WARM_UP:-30s}" \
        --json "${OUT}/sweep.json" --table "${OUT}/sweep.md" --plot "${OUT}/sweep.svg" \
        --title "sweep: ${labels}, publish latency against offered load" \
        > "${OUT}/sweep.txt" || status=$?
    echo
    cat "${OUT}/sweep.txt"
    # Exit code 3: a step could not run, or the sweep was interrupted; the table says which.
    if (( status != 0 && status != 3 )); then
        log "spate-bench sweep failed (exit ${status})"
        exit 1
    fi
    log "wrote ${OUT}/sweep.txt, sweep.md, sweep.json, sweep.svg"
    exit 0
fi

: > "${OUT}/cpu.txt"
JSONS=()
for entry in "${BROKERS[@]}"; do
    label="${entry%%=*}"
    addr="${entry#*=}"
    pid="$(pin_broker "${label}" "${addr}")"
    pid_args=()
    [[ -n "${pid}" ]] && pid_args=(--broker-pid "${pid}")
    before="$([[ -n "${pid}" ]] && cpu_seconds "${pid}" || echo 0)"
    log "${label} (${addr}, pid ${pid:-unknown})"
    status=0
    "${BENCH_PREFIX[@]}" "${BENCH}" "${BENCH_ARGS[@]}" -b "${addr}" \
        -t "compare-${WORKLOAD}-${label}-${STAMP}" --duration "${DURATION}" \
        --warmup "${WARMUP}" --label "${label}" "${pid_args[@]}" \
        --json "${OUT}/${label}.json" --hgrm "${OUT}/${label}.hgrm" \
        --plot "${OUT}/${label}.svg" --delete-topic > "${OUT}/${label}.txt" || status=$?
    after="$([[ -n "${pid}" ]] && cpu_seconds "${pid}" || echo 0)"
    cat "${OUT}/${label}.txt"
    # Exit code 3 is a completed run with errors or an open loop that fell behind: still a
    # result, and the table says which.
    if (( status != 0 && status != 3 )); then
        log "${label}: spate-bench failed (exit ${status})"
        continue
    fi
    echo "${label} pid=${pid:-unknown} cpu_seconds_whole_bench_run=$(awk -v a="${after}" \
        -v b="${before}" 'BEGIN { printf "%.2f", a - b }')" >> "${OUT}/cpu.txt"
    JSONS+=("${OUT}/${label}.json")
done

if (( ${#JSONS[@]} == 0 )); then
    log "no run completed"
    exit 1
fi
labels="$(printf '%s\n' "${BROKERS[@]%%=*}" | paste -sd, - | sed 's/,/ vs /g')"
title="${WORKLOAD}: ${labels}"
"${BENCH}" compare "${JSONS[@]}" --plot "${OUT}/compare.svg" --title "${title}" \
    > "${OUT}/compare.txt"
"${BENCH}" compare "${JSONS[@]}" --markdown > "${OUT}/compare.md"
echo
cat "${OUT}/compare.txt"
echo
cat "${OUT}/cpu.txt"
log "wrote ${OUT}/compare.txt, compare.md, compare.svg"
