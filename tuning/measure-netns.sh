#!/usr/bin/env bash
# Measures, inside private network namespaces, what the per-namespace socket settings of
# tuning/sysctl.conf do to loopback TCP (iperf3 throughput for each socket buffer setting),
# what the offloads that tuning/ethtool.sh reports do over a veth pair, and how long clients
# wait to connect when a burst of connections meets a small accept queue.
# Nothing outside the namespace changes: net.ipv4.tcp_{rmem,wmem}, net.core.somaxconn and
# net.ipv4.tcp_max_syn_backlog are per network namespace. net.core.{rmem,wmem}_max are
# read-only inside a namespace (they mirror the host's), so their effect is not measured here.
#
#   sudo tuning/measure-netns.sh [SECONDS_PER_RUN] [REPEATS]
#
# Needs root, ip (iproute2), iperf3, ethtool and python3. tuning/README.md has the results from the
# project's VM and says what they do and do not show.
set -euo pipefail

SECONDS_PER_RUN=${1:-5}
REPEATS=${2:-3}
HERE=$(cd "$(dirname "$0")" && pwd)
NS="spate-measure-$$"

[[ $EUID -eq 0 ]] || { echo "measure-netns.sh: run as root (it creates a netns)" >&2; exit 2; }
for tool in ip iperf3 python3 ethtool; do
    command -v "$tool" > /dev/null || { echo "measure-netns.sh: $tool is missing" >&2; exit 2; }
done

ip netns add "$NS"
trap 'ip netns del "$NS" 2> /dev/null || true' EXIT
ip -n "$NS" link set lo up

in_ns() {
    ip netns exec "$NS" "$@"
}

set_net() {
    local key=$1 value=$2
    in_ns sh -c "echo '$value' > /proc/sys/${key//.//}"
}

# One iperf3 run on loopback; prints receiver Gbit/s. Extra arguments go to the client.
iperf_once() {
    in_ns iperf3 -s -1 -D > /dev/null
    sleep 0.3
    in_ns iperf3 -c 127.0.0.1 -t "$SECONDS_PER_RUN" -J "$@" | python3 -c '
import json, sys
print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e9))'
}

# Prints "median (min-max)" of REPEATS runs.
iperf_series() {
    local values=() i
    for ((i = 0; i < REPEATS; i++)); do
        values+=("$(iperf_once "$@")")
    done
    printf '%s\n' "${values[@]}" | sort -n | awk '
        { v[NR] = $1 } END { printf "%s Gbit/s (%s-%s)", v[int((NR + 1) / 2)], v[1], v[NR] }'
}

buffers() {
    set_net net.ipv4.tcp_rmem "$1"
    set_net net.ipv4.tcp_wmem "$2"
}

echo "# loopback iperf3, one stream, ${SECONDS_PER_RUN}s x $REPEATS, median (min-max)"
defaults="rmem_max=$(in_ns cat /proc/sys/net/core/rmem_max)"
defaults+=" tcp_rmem='$(in_ns cat /proc/sys/net/ipv4/tcp_rmem | tr '\t' ' ')'"
defaults+=" tcp_wmem='$(in_ns cat /proc/sys/net/ipv4/tcp_wmem | tr '\t' ' ')'"
saved_tcp_rmem=$(in_ns cat /proc/sys/net/ipv4/tcp_rmem)
saved_tcp_wmem=$(in_ns cat /proc/sys/net/ipv4/tcp_wmem)
echo "namespace defaults ($defaults): $(iperf_series)"

buffers '4096 131072 16777216' '4096 16384 16777216'
echo "sysctl.conf tcp_rmem/tcp_wmem (16 MiB maxima): $(iperf_series)"

buffers '4096 87380 262144' '4096 16384 262144'
echo "small autotuning maxima (256 KiB): $(iperf_series)"

buffers "$saved_tcp_rmem" "$saved_tcp_wmem"
echo "explicit 64 KiB socket buffers (-w 64K, like the Java client's receive.buffer.bytes):" \
    "$(iperf_series -w 64K)"

# A veth pair between this namespace and a second one: the offloads ethtool.sh reports.
PEER="$NS-peer"
ip netns add "$PEER"
trap 'ip netns del "$NS" 2> /dev/null || true; ip netns del "$PEER" 2> /dev/null || true' EXIT
ip -n "$NS" link add va type veth peer name vb netns "$PEER"
ip -n "$NS" addr add 10.254.0.1/24 dev va
ip -n "$PEER" addr add 10.254.0.2/24 dev vb
ip -n "$NS" link set va up
ip -n "$PEER" link set vb up

# One iperf3 run from the peer namespace to this one over the veth pair.
veth_series() {
    local values=() i
    for ((i = 0; i < REPEATS; i++)); do
        in_ns iperf3 -s -1 -D > /dev/null
        sleep 0.3
        values+=("$(ip netns exec "$PEER" iperf3 -c 10.254.0.1 -t "$SECONDS_PER_RUN" -J |
            python3 -c '
import json, sys
print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e9))')")
    done
    printf '%s\n' "${values[@]}" | sort -n | awk '
        { v[NR] = $1 } END { printf "%s Gbit/s (%s-%s)", v[int((NR + 1) / 2)], v[1], v[NR] }'
}

echo "# veth between two namespaces, one stream, ${SECONDS_PER_RUN}s x $REPEATS"
echo "veth defaults (sender TSO/GSO on, receiver GRO off): $(veth_series)"
in_ns ethtool -K va gro on > /dev/null
echo "receiver GRO on: $(veth_series)"
ip netns exec "$PEER" ethtool -K vb tso off gso off > /dev/null
echo "receiver GRO on, sender TSO and GSO off: $(veth_series)"

echo "# accept burst: 2000 connects at once, listener accepts nothing for 3 s"
for backlog in 128 4096; do
    set_net net.core.somaxconn "$backlog"
    set_net net.ipv4.tcp_max_syn_backlog $((backlog * 2))
    echo "somaxconn=$backlog tcp_max_syn_backlog=$((backlog * 2)):" \
        "$(in_ns python3 "$HERE/accept_burst.py" 2000 3)"
done
