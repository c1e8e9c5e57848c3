#!/usr/bin/env bash
# Checks, previews, applies and rolls back NIC and host settings for a Spate broker.
#
#   ethtool.sh --check     --iface IF [options]   one line per finding; exit 0 when all is well
#   ethtool.sh --dry-run   --iface IF [options]   the exact commands --apply would run
#   ethtool.sh --apply     --iface IF [options]   save current values to a rollback file, apply
#   ethtool.sh --rollback FILE                    restore the values saved by --apply
# Options:
#   --iface IF          the interface clients reach the broker on (required unless --only host)
#   --cores LIST        the CPUs the broker runs on, e.g. 0-3,8 (default: all online CPUs)
#   --profile P         latency (default) or throughput: ring sizes and interrupt coalescing
#   --data-dir DIR      the broker's data dir: check its device's I/O scheduler and queue depth,
#                       and its file system's discard mount option
#   --only nic|host     only the NIC part, or only the host part (governor, THP, disk, memlock,
#                       host steal)
#   --state-dir DIR     where --apply writes rollback files (default /var/lib/spate/tuning)
# Environment: SPATE_TUNING_ROOT=DIR runs against a fake /proc and /sys under DIR, and
# SPATE_ETHTOOL=PATH replaces the ethtool binary (both for tests); SPATE_TUNING_STEAL_SECONDS
# is how long the host steal check samples (default 2).
#
# What it sets, and why (tuning/README.md has the long version):
# - One NIC queue per broker core, each queue's IRQs pinned to its own broker core, the RSS
#   table spread evenly over those queues, and XPS mapping each core to its own transmit
#   queue: a connection's packets, interrupts and transmit completions then stay on one core.
# - When the NIC has fewer queues than broker cores, or no IRQs at all (virtio, veth), RPS
#   spreads receive processing over the broker cores and RFS (rps_flow_cnt) steers each flow
#   to the core whose shard reads the socket.
# - Ring sizes and interrupt coalescing per profile; offloads are reported, not changed.
# - Host: the performance CPU governor on broker cores, transparent huge pages not "always",
#   the data device's I/O scheduler and queue depth; RLIMIT_MEMLOCK, irqbalance and a data
#   file system mounted with online discard are reported with the fix, because a script
#   cannot change them for a process yet to start (or should not edit /etc/fstab).
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

PROG=$(basename "$0")
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=common.sh
. "$HERE/common.sh"

IFACE=''
CORES_SPEC=''
PROFILE=latency
DATA_DIR=''
ONLY=''

# The broker cores, in the order queues are assigned to them.
CORES=()
# Receive and transmit queue counts once the plan has run.
RX_QUEUES=0
TX_QUEUES=0
# Whether the interface has per-queue IRQs that this script pins.
HAVE_QUEUE_IRQS=0
DRIVER=unknown

# Ring size for the latency profile. Intel DDIO places received packets in a small slice of
# the last-level cache; with rings much larger than this, packets are evicted to memory before
# the stack reads them (Farshin et al., "Reexamining Direct Cache Access", USENIX ATC 2020).
RING_SIZE_LATENCY=1024
# glommio needs 512 KiB of locked memory per executor for its io_uring rings (DESIGN.md 4).
MEMLOCK_PER_CORE_BYTES=$((512 * 1024))
# I/O requests one shard keeps in flight: DmaStreamWriter write-behind (up to 8), two catch-up
# reads, an fdatasync and index writes, rounded up to a power of two.
REQUESTS_PER_CORE=16
# Size of the RFS socket flow table set by sysctl.conf; each receive queue gets a share.
RPS_SOCK_FLOW_ENTRIES=32768

usage() {
    sed -n '2,18s/^# \{0,1\}//p' "$0"
}

# ---------------------------------------------------------------------------------------------
# CPU lists and masks.

# Prints the CPUs of a cpuset(7) list ("0-3,8") one per line, in order, without duplicates.
parse_cpu_list() {
    local spec=$1 part low high cpu
    local -a parts
    local -A seen=()
    [[ $spec =~ ^[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*$ ]] || return 1
    IFS=, read -r -a parts <<< "$spec"
    for part in "${parts[@]}"; do
        low=${part%-*}
        high=${part#*-}
        [[ $low -le $high ]] || return 1
        for ((cpu = low; cpu <= high; cpu++)); do
            if [[ -z ${seen[$cpu]:-} ]]; then
                seen[$cpu]=1
                printf '%s\n' "$cpu"
            fi
        done
    done
}

# Prints the kernel bitmap for a set of CPUs: hex, 32-bit words separated by commas, the way
# rps_cpus and xps_cpus accept it ("0" for no CPU).
cpu_mask() {
    local -a words=()
    local cpu top=0 i out=''
    for cpu in "$@"; do
        i=$((cpu / 32))
        words[i]=$((${words[i]:-0} | (1 << (cpu % 32))))
        [[ $i -gt $top ]] && top=$i
    done
    if [[ $# -eq 0 ]]; then
        printf '0'
        return
    fi
    out=$(printf '%x' "${words[top]:-0}")
    for ((i = top - 1; i >= 0; i--)); do
        out+=$(printf ',%08x' "${words[i]:-0}")
    done
    printf '%s' "$out"
}

# A bitmap as read from sysfs ("00000000,00000003") reduced to compare with cpu_mask's form.
mask_normalize() {
    local mask=${1//,/}
    mask=${mask,,}
    mask=${mask#"${mask%%[!0]*}"}
    printf '%s' "${mask:-0}"
}

# ---------------------------------------------------------------------------------------------
# ethtool output parsing. ethtool 6.1 has no JSON output for -l, -g and -c, so the text is
# parsed: "Section:" headers, then "Key:<tabs>value" lines.

# field TEXT SECTION KEY: the value of KEY in SECTION ("" for the first section with KEY).
field() {
    awk -v section="$2" -v key="$3" '
        /:$/ && !/\t/ { current = substr($0, 1, length($0) - 1); next }
        {
            split($0, kv, ":")
            k = kv[1]; gsub(/^[ \t]+|[ \t]+$/, "", k)
            if (k != key || (section != "" && current != section)) next
            v = substr($0, index($0, ":") + 1); gsub(/^[ \t]+|[ \t]+$/, "", v)
            print v; exit
        }' <<< "$1"
}

is_number() {
    [[ $1 =~ ^[0-9]+$ ]]
}

min() {
    if [[ $1 -le $2 ]]; then printf '%s' "$1"; else printf '%s' "$2"; fi
}

run_ethtool() {
    "$ETHTOOL" "$@" 2>&1
}

# ---------------------------------------------------------------------------------------------
# NIC: queues, RSS, IRQs, RPS/RFS/XPS, rings, coalescing, offloads.

count_queue_dirs() {
    local kind=$1 n=0 dir
    for dir in "$ROOT/sys/class/net/$IFACE/queues/$kind"-*; do
        [[ -d $dir ]] && n=$((n + 1))
    done
    printf '%s' "$n"
}

# Decides the queue counts. Sets CHANNEL_ARGS/CHANNEL_UNDO when a change is needed, and
# RX_QUEUES/TX_QUEUES to the counts the rest of the plan assumes.
decide_channels() {
    CHANNEL_ARGS=''
    CHANNEL_UNDO=''
    RX_QUEUES=$(count_queue_dirs rx)
    TX_QUEUES=$(count_queue_dirs tx)
    local out ncores=${#CORES[@]}
    if ! out=$(run_ethtool -l "$IFACE"); then
        report skip "$IFACE channels: driver $DRIVER cannot report or change its queue" \
            "count ($(head -n 1 <<< "$out")); using its $RX_QUEUES receive queue(s) as they are"
        return
    fi
    local max_c cur_c max_rx cur_rx max_tx cur_tx
    max_c=$(field "$out" 'Pre-set maximums' Combined)
    cur_c=$(field "$out" 'Current hardware settings' Combined)
    max_rx=$(field "$out" 'Pre-set maximums' RX)
    cur_rx=$(field "$out" 'Current hardware settings' RX)
    max_tx=$(field "$out" 'Pre-set maximums' TX)
    cur_tx=$(field "$out" 'Current hardware settings' TX)
    if is_number "$max_c" && [[ $max_c -gt 0 ]] && is_number "$cur_c"; then
        local want
        want=$(min "$ncores" "$max_c")
        RX_QUEUES=$want
        TX_QUEUES=$want
        if [[ $cur_c -eq $want ]]; then
            report ok "$IFACE channels: combined $cur_c (one per broker core, driver max $max_c)"
        else
            report differ "$IFACE channels: have combined $cur_c, want $want" \
                "(one per broker core; driver max $max_c)"
            CHANNEL_ARGS="-L combined $want"
            CHANNEL_UNDO="-L combined $cur_c"
        fi
        return
    fi
    if is_number "$max_rx" && [[ $max_rx -gt 0 ]] && is_number "$cur_rx"; then
        local want_rx want_tx='' args='' undo=''
        want_rx=$(min "$ncores" "$max_rx")
        RX_QUEUES=$want_rx
        if [[ $cur_rx -ne $want_rx ]]; then
            args+=" rx $want_rx"
            undo+=" rx $cur_rx"
        fi
        if is_number "$max_tx" && [[ $max_tx -gt 0 ]] && is_number "$cur_tx"; then
            want_tx=$(min "$ncores" "$max_tx")
            TX_QUEUES=$want_tx
            if [[ $cur_tx -ne $want_tx ]]; then
                args+=" tx $want_tx"
                undo+=" tx $cur_tx"
            fi
        fi
        if [[ -z $args ]]; then
            report ok "$IFACE channels: rx $cur_rx tx ${cur_tx:-n/a} (one per broker core," \
                "driver max rx $max_rx tx $max_tx)"
        else
            report differ "$IFACE channels: have rx $cur_rx tx $cur_tx, want rx $want_rx" \
                "tx ${want_tx:-$cur_tx} (one per broker core; driver max rx $max_rx tx $max_tx)"
            CHANNEL_ARGS="-L$args"
            CHANNEL_UNDO="-L$undo"
        fi
        return
    fi
    report skip "$IFACE channels: driver $DRIVER does not let the queue count change" \
        "(combined $cur_c, rx $cur_rx, tx $cur_tx)"
}

plan_channels() {
    if [[ -n $CHANNEL_ARGS ]]; then
        plan_ethtool "$IFACE" "$CHANNEL_ARGS" "$CHANNEL_UNDO"
    fi
}

# Checks that the RSS indirection table spreads flows evenly over queues 0..RX_QUEUES-1.
plan_rss() {
    local out
    if ! out=$(run_ethtool -x "$IFACE"); then
        report skip "$IFACE RSS: driver $DRIVER has no RSS indirection table" \
            "($(tail -n 1 <<< "$out"))"
        return
    fi
    local -a table=()
    local line entry
    while IFS= read -r line; do
        if [[ $line =~ ^[[:space:]]*[0-9]+:((\ |$'\t'|[0-9])+)$ ]]; then
            for entry in ${BASH_REMATCH[1]}; do
                table+=("$entry")
            done
        fi
    done <<< "$out"
    if [[ ${#table[@]} -eq 0 ]]; then
        report skip "$IFACE RSS: the driver reports no indirection table entries"
        return
    fi
    local -A counts=()
    local q top=0 lowest='' highest=0 interleaved=1 i
    for i in "${!table[@]}"; do
        q=${table[i]}
        counts[$q]=$((${counts[$q]:-0} + 1))
        [[ $q -gt $top ]] && top=$q
    done
    local ok=1
    for ((q = 0; q < RX_QUEUES; q++)); do
        local c=${counts[$q]:-0}
        [[ -z $lowest || $c -lt $lowest ]] && lowest=$c
        [[ $c -gt $highest ]] && highest=$c
    done
    [[ $top -ge $RX_QUEUES || $lowest -eq 0 || $((highest - lowest)) -gt 1 ]] && ok=0
    if [[ $ok -eq 1 ]]; then
        report ok "$IFACE RSS: ${#table[@]} entries spread evenly over queues 0-$((RX_QUEUES - 1))"
        return
    fi
    report differ "$IFACE RSS: the indirection table uses queues 0-$top unevenly; want an even" \
        "spread over queues 0-$((RX_QUEUES - 1))"
    # The undo: the driver default when the table was the default layout for the current
    # queue count, an equal spread when it was one, and per-queue weights otherwise (those
    # restore each queue's share, not the order of a hand-made table).
    for i in "${!table[@]}"; do
        [[ ${table[i]} -eq $((i % (top + 1))) ]] || interleaved=0
    done
    local undo
    if [[ $interleaved -eq 1 && $((top + 1)) -eq $(count_queue_dirs rx) ]]; then
        undo='-X default'
    elif [[ $interleaved -eq 1 ]]; then
        undo="-X equal $((top + 1))"
    else
        undo='-X weight'
        for ((q = 0; q <= top; q++)); do
            undo+=" ${counts[$q]:-0}"
        done
    fi
    plan_ethtool "$IFACE" "-X equal $RX_QUEUES" "$undo"
}

# Prints "IRQ QUEUE NAME" for each IRQ that serves one of the interface's queues.
queue_irqs() {
    local dev="$ROOT/sys/class/net/$IFACE/device" dir irq name lname
    local -a irqs=()
    for dir in "$dev/msi_irqs" "$dev/../msi_irqs"; do
        if [[ -d $dir ]]; then
            for irq in "$dir"/*; do
                [[ -e $irq ]] && irqs+=("${irq##*/}")
            done
            break
        fi
    done
    if [[ ${#irqs[@]} -eq 0 && -r "$dev/irq" ]]; then
        irqs+=("$(read_value "$dev/irq")")
    fi
    for irq in "${irqs[@]}"; do
        name=$(awk -v irq="$irq:" '$1 == irq { print $NF; exit }' "$ROOT/proc/interrupts" \
            2> /dev/null) || name=''
        lname=${name,,}
        if [[ $lname =~ (txrx|rx|tx|input|output|comp|fp|queue)[-_.]?([0-9]+)(@.*)?$ ]]; then
            printf '%s %s %s\n' "$irq" "${BASH_REMATCH[2]}" "$name"
        fi
    done | sort -n
}

irqbalance_running() {
    local comm
    for comm in "$ROOT"/proc/[0-9]*/comm; do
        if [[ -r $comm && $(read_value "$comm") == irqbalance ]]; then
            return 0
        fi
    done
    return 1
}

plan_irqs() {
    if [[ ! -e "$ROOT/sys/class/net/$IFACE/device" ]]; then
        report skip "$IFACE IRQs: a virtual device ($DRIVER) has no IRQs of its own;" \
            "RPS and XPS below place its work"
        return
    fi
    local lines
    lines=$(queue_irqs)
    if [[ -z $lines ]]; then
        report skip "$IFACE IRQs: cannot tell which IRQs serve its queues (no MSI-X vector" \
            "named like rx-N, TxRx-N, input.N or compN in /proc/interrupts)"
        return
    fi
    HAVE_QUEUE_IRQS=1
    local irq queue name path want have ncores=${#CORES[@]} good=0
    while read -r irq queue name; do
        path="$ROOT/proc/irq/$irq/smp_affinity_list"
        snapshot_path "$path"
        if [[ $queue -ge $RX_QUEUES && $queue -ge $TX_QUEUES ]]; then
            continue
        fi
        want=${CORES[queue % ncores]}
        if ! have=$(read_value "$path"); then
            report skip "IRQ $irq ($name): cannot read $path"
            continue
        fi
        if [[ $have == "$want" ]]; then
            good=$((good + 1))
        else
            report differ "IRQ $irq ($name, queue $queue): on CPUs $have, want CPU $want"
            plan_write "$path" "$want"
        fi
    done <<< "$lines"
    [[ $good -gt 0 ]] && report ok "$IFACE IRQs: $good queue IRQ(s) already on their own core"
    if irqbalance_running; then
        report warn "irqbalance is running and will move the pinned IRQs again: stop it" \
            "(systemctl disable --now irqbalance) or ban the broker cores in" \
            "/etc/default/irqbalance (IRQBALANCE_BANNED_CPULIST)"
    fi
}

# Largest power of two that is <= N (at least 1).
pow2_floor() {
    local n=$1 p=1
    while [[ $((p * 2)) -le $n ]]; do
        p=$((p * 2))
    done
    printf '%s' "$p"
}

plan_rps_xps() {
    local base="$ROOT/sys/class/net/$IFACE/queues" dir q ncores=${#CORES[@]}
    for dir in "$base"/rx-* "$base"/tx-*; do
        [[ -e $dir/rps_cpus ]] && snapshot_path "$dir/rps_cpus"
        [[ -e $dir/rps_flow_cnt ]] && snapshot_path "$dir/rps_flow_cnt"
        [[ -e $dir/xps_cpus ]] && snapshot_path "$dir/xps_cpus"
    done
    # RPS costs an inter-processor interrupt per batch of packets; it is only worth it when
    # the hardware cannot already deliver each queue's packets on a broker core.
    local use_rps=1 rps_mask flow_cnt
    if [[ $HAVE_QUEUE_IRQS -eq 1 && $RX_QUEUES -ge $ncores ]]; then
        use_rps=0
    fi
    if [[ $use_rps -eq 1 ]]; then
        rps_mask=$(cpu_mask "${CORES[@]}")
        flow_cnt=$(pow2_floor $((RPS_SOCK_FLOW_ENTRIES / RX_QUEUES)))
    else
        rps_mask=0
    fi
    local path have good=0 why
    if [[ $use_rps -eq 1 ]]; then
        why='RPS+RFS over the broker cores'
    else
        why='RPS off: each queue already interrupts its own broker core'
    fi
    for ((q = 0; q < RX_QUEUES; q++)); do
        path="$base/rx-$q/rps_cpus"
        if [[ -d $base/rx-$q && ! -e $path ]]; then
            report skip "$IFACE RPS: this kernel has no RPS ($path missing)"
            break
        fi
        have=$(read_value "$path") || have=''
        if [[ -n $have && $(mask_normalize "$have") == "$(mask_normalize "$rps_mask")" ]]; then
            good=$((good + 1))
        else
            report differ "$IFACE rx-$q rps_cpus: have ${have:-none}, want $rps_mask ($why)"
            plan_write "$path" "$rps_mask"
        fi
        if [[ $use_rps -eq 1 ]]; then
            path="$base/rx-$q/rps_flow_cnt"
            have=$(read_value "$path") || have=''
            if [[ $have == "$flow_cnt" ]]; then
                good=$((good + 1))
            else
                report differ "$IFACE rx-$q rps_flow_cnt: have ${have:-none}, want $flow_cnt" \
                    "(RFS: $RPS_SOCK_FLOW_ENTRIES flow entries shared by $RX_QUEUES queue(s))"
                plan_write "$path" "$flow_cnt"
            fi
        fi
    done
    [[ $good -gt 0 ]] && report ok "$IFACE RPS: $good queue setting(s) already right ($why)"
    if [[ $use_rps -eq 1 ]]; then
        local entries
        entries=$(read_value "$ROOT/proc/sys/net/core/rps_sock_flow_entries") || entries=''
        if [[ -n $entries && $entries -eq 0 ]]; then
            report warn "net.core.rps_sock_flow_entries is 0, so RFS is off even with" \
                "rps_flow_cnt set: apply tuning/sysctl.conf (tuning/sysctl.sh --apply)"
        fi
    fi

    if [[ $TX_QUEUES -le 1 ]]; then
        report skip "$IFACE XPS: one transmit queue, nothing to map"
        return
    fi
    good=0
    local i want
    for ((q = 0; q < TX_QUEUES; q++)); do
        path="$base/tx-$q/xps_cpus"
        if [[ -d $base/tx-$q && ! -e $path ]]; then
            report skip "$IFACE XPS: not supported here ($path missing)"
            return
        fi
        local -a mapped=()
        for ((i = q; i < ncores; i += TX_QUEUES)); do
            mapped+=("${CORES[i]}")
        done
        want=$(cpu_mask "${mapped[@]}")
        have=$(read_value "$path") || have=''
        if [[ -n $have && $(mask_normalize "$have") == "$(mask_normalize "$want")" ]]; then
            good=$((good + 1))
        else
            report differ "$IFACE tx-$q xps_cpus: have ${have:-none}, want $want" \
                "(each broker core transmits on its own queue)"
            plan_write "$path" "$want"
        fi
    done
    [[ $good -gt 0 ]] && report ok "$IFACE XPS: $good transmit queue(s) already mapped"
    return 0
}

plan_rings() {
    local out
    if ! out=$(run_ethtool -g "$IFACE"); then
        report skip "$IFACE ring sizes: driver $DRIVER does not support them" \
            "($(tail -n 1 <<< "$out"))"
        return
    fi
    local dir max cur want args='' undo='' summary=''
    for dir in RX TX; do
        max=$(field "$out" 'Pre-set maximums' "$dir")
        cur=$(field "$out" 'Current hardware settings' "$dir")
        if ! is_number "$max" || ! is_number "$cur"; then
            continue
        fi
        if [[ $PROFILE == throughput ]]; then
            want=$max
        else
            want=$(min "$max" "$RING_SIZE_LATENCY")
        fi
        summary+=" ${dir,,} $cur (want $want, max $max)"
        if [[ $cur -ne $want ]]; then
            args+=" ${dir,,} $want"
            undo+=" ${dir,,} $cur"
        fi
    done
    if [[ -z $summary ]]; then
        report skip "$IFACE ring sizes: the driver reports no RX/TX ring sizes"
    elif [[ -z $args ]]; then
        report ok "$IFACE rings ($PROFILE):$summary"
    else
        report differ "$IFACE rings ($PROFILE):$summary"
        plan_ethtool "$IFACE" "-G$args" "-G$undo"
    fi
}

plan_coalescing() {
    local out
    if ! out=$(run_ethtool -c "$IFACE"); then
        report skip "$IFACE coalescing: driver $DRIVER does not support it" \
            "($(tail -n 1 <<< "$out"))"
        return
    fi
    # Latency: an interrupt for every received packet, no adaptive moderation that would
    # delay packets under load; transmit completions only free buffers, so they keep the
    # driver's setting. Throughput: at most one interrupt per 100 us or 128 frames per queue
    # (about 10k interrupts/s at 10 GbE line rate instead of 800k).
    local -a wanted
    if [[ $PROFILE == throughput ]]; then
        wanted=(adaptive-rx off adaptive-tx off rx-usecs 100 rx-frames 128 tx-usecs 100
            tx-frames 128)
    else
        wanted=(adaptive-rx off rx-usecs 0 rx-frames 1)
    fi
    local adaptive i key want have unsupported='' good=''
    adaptive=$(grep -m 1 '^Adaptive RX:' <<< "$out") || adaptive=''
    for ((i = 0; i < ${#wanted[@]}; i += 2)); do
        key=${wanted[i]}
        want=${wanted[i + 1]}
        case $key in
            adaptive-rx) have=$(sed -n 's/^Adaptive RX: *\([^ ]*\).*/\1/p' <<< "$adaptive") ;;
            adaptive-tx) have=$(sed -n 's/.*TX: *\([^ ]*\).*/\1/p' <<< "$adaptive") ;;
            *) have=$(field "$out" '' "$key") ;;
        esac
        if [[ -z $have || $have == n/a ]]; then
            unsupported+=" $key"
        elif [[ $have == "$want" ]]; then
            good+=" $key=$have"
        else
            report differ "$IFACE coalescing ($PROFILE): $key is $have, want $want"
            plan_ethtool "$IFACE" "-C $key $want" "-C $key $have"
        fi
    done
    [[ -n $good ]] && report ok "$IFACE coalescing ($PROFILE):$good"
    [[ -n $unsupported ]] && report skip "$IFACE coalescing: driver $DRIVER does not" \
        "support:$unsupported"
    return 0
}

report_offloads() {
    local out
    if ! out=$(run_ethtool -k "$IFACE"); then
        report skip "$IFACE offloads: driver $DRIVER cannot report them"
        return
    fi
    local pair name short value summary='' off=''
    for pair in rx-checksumming:rx-csum tx-checksumming:tx-csum scatter-gather:sg \
        tcp-segmentation-offload:tso generic-segmentation-offload:gso \
        generic-receive-offload:gro large-receive-offload:lro rx-gro-hw:hw-gro \
        ntuple-filters:ntuple receive-hashing:rxhash; do
        name=${pair%%:*}
        short=${pair#*:}
        value=$(sed -n "s/^$name: *\\([a-z]*\\)\\( \\[fixed\\]\\)\\{0,1\\}.*/\\1\\2/p" <<< "$out")
        [[ -z $value ]] && continue
        value=${value/ \[fixed\]/(fixed)}
        summary+=" $short=$value"
        case $short in
            tso | gso | gro) [[ $value == off* ]] && off+=" $short" ;;
        esac
    done
    local note=''
    if [[ -n $off ]]; then
        note="; off:$off (TSO/GSO cut the CPU cost of large fetch responses, GRO of large"
        note+=" produce requests; turn them on with ethtool -K $IFACE <name> on)"
    fi
    report info "$IFACE offloads:$summary$note"
}

nic_section() {
    [[ -n $IFACE ]] || die '--iface is required for the NIC settings (or use --only host)'
    if [[ ! -e "$ROOT/sys/class/net/$IFACE" ]]; then
        local have='' dir
        for dir in "$ROOT"/sys/class/net/*; do
            [[ -e $dir ]] && have+="${have:+ }${dir##*/}"
        done
        die "interface '$IFACE' not found (interfaces here: ${have:-none})"
    fi
    command -v "$ETHTOOL" > /dev/null ||
        die "'$ETHTOOL' not found: install ethtool (apt-get install ethtool)"
    local info
    if info=$(run_ethtool -i "$IFACE"); then
        DRIVER=$(awk '$1 == "driver:" { print $2 }' <<< "$info")
        DRIVER=${DRIVER:-unknown}
    fi
    local before
    before=$(count_queue_dirs rx)
    decide_channels
    # Shrinking the queue count fails while the RSS table still points at the queues that go
    # away, so the table changes first then; growing needs the queues before the table.
    if [[ $RX_QUEUES -lt $before ]]; then
        plan_rss
        plan_channels
    else
        plan_channels
        plan_rss
    fi
    plan_irqs
    plan_rps_xps
    plan_rings
    plan_coalescing
    report_offloads
}

# ---------------------------------------------------------------------------------------------
# Host: CPU governor, transparent huge pages, data device, RLIMIT_MEMLOCK.

plan_governor() {
    local cpu dir have avail none='' good=''
    for cpu in "${CORES[@]}"; do
        dir="$ROOT/sys/devices/system/cpu/cpu$cpu/cpufreq"
        if [[ ! -r $dir/scaling_governor ]]; then
            none+="${none:+,}$cpu"
            continue
        fi
        have=$(read_value "$dir/scaling_governor")
        if [[ $have == performance ]]; then
            good+="${good:+,}$cpu"
            continue
        fi
        avail=$(read_value "$dir/scaling_available_governors") || avail=''
        if [[ " $avail " == *' performance '* ]]; then
            report differ "CPU $cpu governor: have $have, want performance (frequency ramps" \
                "add latency to the first requests after a quiet spell)"
            plan_write "$dir/scaling_governor" performance
        else
            report skip "CPU $cpu governor: $have; the driver offers no performance governor" \
                "(available: ${avail:-unknown})"
        fi
    done
    [[ -n $good ]] && report ok "CPU governor: performance on CPUs $good"
    [[ -n $none ]] && report skip "CPU governor: no cpufreq on CPUs $none (a VM or a" \
        "fixed-frequency CPU); nothing to set"
    return 0
}

plan_thp() {
    local base="$ROOT/sys/kernel/mm/transparent_hugepage" file have
    for file in enabled defrag; do
        if [[ ! -r $base/$file ]]; then
            report skip "transparent huge pages: $base/$file missing (kernel without THP)"
            continue
        fi
        have=$(selected_word "$(read_value "$base/$file")")
        if [[ $have == always ]]; then
            report differ "transparent_hugepage/$file: have always, want madvise (with always," \
                "page faults can stall a shard in compaction and khugepaged rewrites memory)"
            plan_select "$base/$file" madvise
        else
            report ok "transparent_hugepage/$file = $have"
        fi
    done
}

# Prints the sysfs directory of the whole disk that holds DIR, and of the disks under it when
# it is a device-mapper or md device.
data_disks() {
    local dev blk real slave
    dev=$(stat -c '%Hd:%Ld' -- "$DATA_DIR")
    blk="$ROOT/sys/dev/block/$dev"
    if [[ ! -e $blk ]]; then
        return 1
    fi
    real=$(cd -- "$blk" && pwd -P)
    [[ -e $real/partition ]] && real=$(dirname -- "$real")
    printf '%s\n' "$real"
    for slave in "$real"/slaves/*; do
        [[ -e $slave ]] || continue
        slave=$(cd -- "$slave" && pwd -P)
        [[ -e $slave/partition ]] && slave=$(dirname -- "$slave")
        printf '%s\n' "$slave"
    done
}

plan_disk() {
    if [[ -z $DATA_DIR ]]; then
        report skip "data device: no --data-dir given; I/O scheduler and queue depth not checked"
        return
    fi
    [[ -d $DATA_DIR ]] || die "data dir '$DATA_DIR' does not exist"
    local disks
    if ! disks=$(data_disks); then
        report skip "data device: $DATA_DIR is not on a block device (tmpfs, overlay or" \
            "network file system?); nothing to check"
        return
    fi
    local disk name queue have want rotational list need nr depth changed
    need=$((REQUESTS_PER_CORE * ${#CORES[@]}))
    while read -r disk; do
        name=${disk##*/}
        queue=$disk/queue
        changed=0
        if [[ -r $queue/scheduler ]]; then
            list=$(read_value "$queue/scheduler")
            have=$(selected_word "$list")
            rotational=$(read_value "$queue/rotational") || rotational=0
            # glommio orders I/O itself (shares and latency classes); on flash a kernel
            # scheduler only adds latency. A spinning disk still needs deadline's anti-
            # starvation.
            if [[ $rotational == 1 ]]; then want=mq-deadline; else want=none; fi
            if [[ $have == "$want" ]]; then
                report ok "$name scheduler = $have (rotational=$rotational)"
            elif [[ " ${list//[\[\]]/} " != *" $want "* ]]; then
                report skip "$name scheduler: $have; $want is not available ($list)"
            else
                report differ "$name scheduler: have $have, want $want (rotational=$rotational)"
                plan_select "$queue/scheduler" "$want"
                changed=1
            fi
        fi
        depth=$(read_value "$disk/device/queue_depth") || depth=''
        depth=${depth:+, device queue_depth $depth}
        if ! nr=$(read_value "$queue/nr_requests"); then
            continue
        fi
        if [[ $changed -eq 1 ]]; then
            # The scheduler change resets nr_requests to that scheduler's default, which the
            # plan cannot know in advance; a conditional raise after it covers every case.
            if [[ $nr -ge $need ]]; then
                report ok "$name nr_requests = $nr (want >= $need; raised again after the" \
                    "scheduler change if that lowers it)"
            else
                report differ "$name nr_requests: have $nr, want >= $need ($REQUESTS_PER_CORE" \
                    "in flight per shard$depth)"
            fi
            plan_raise "$queue/nr_requests" "$need"
        elif [[ $nr -ge $need ]]; then
            report ok "$name nr_requests = $nr (want >= $need: $REQUESTS_PER_CORE per core$depth)"
        else
            report differ "$name nr_requests: have $nr, want >= $need ($REQUESTS_PER_CORE in" \
                "flight per shard$depth)"
            plan_write "$queue/nr_requests" "$need"
        fi
    done <<< "$disks"
}

# Online discard on the data dir's file system: every removed segment (retention, the
# cleaner's swaps, DeleteRecords) then waits for the device to discard its extents when its
# last descriptor closes. Spate closes removed files off its shards' threads, so a shard no
# longer stalls there, but the discards still queue behind the device's other I/O. A warning
# and not a plan: a mount option belongs in /etc/fstab, which this script does not edit.
# btrfs's discard=async batches its discards and is fine.
check_discard() {
    local mountinfo="$ROOT/proc/self/mountinfo" dev real found
    if [[ ! -r $mountinfo ]]; then
        report skip "data dir mount options: cannot read $mountinfo"
        return
    fi
    dev=$(stat -c '%Hd:%Ld' -- "$DATA_DIR")
    real=$(cd -- "$DATA_DIR" && pwd -P)
    # The mount of DIR's device whose mount point is the longest prefix of DIR's real path;
    # prints the mount point, the file system type and both option lists.
    found=$(awk -v dev="$dev" -v path="$real" '
        $3 == dev {
            point = $5
            gsub(/\\040/, " ", point)
            if (!(path == point || point == "/" || index(path, point "/") == 1)) next
            if (length(point) <= best) next
            best = length(point)
            for (i = 7; $i != "-"; i++) {}
            line = point "\t" $(i + 1) "\t" $6 "," $(i + 3)
        }
        END { if (best > 0) print line }
    ' "$mountinfo")
    if [[ -z $found ]]; then
        report skip "data dir mount options: no mount of device $dev holds $real in $mountinfo"
        return
    fi
    local point fstype options
    IFS=$'\t' read -r point fstype options <<< "$found"
    if [[ ",$options," == *,discard,* || ",$options," == *,discard=sync,* ]]; then
        report warn "$point ($fstype, holds $DATA_DIR) is mounted with online discard: each" \
            "removed segment waits for the device to discard its blocks; mount it with" \
            "nodiscard in /etc/fstab (mount -o remount,nodiscard $point for now) and trim" \
            "weekly instead (systemctl enable --now fstrim.timer)"
    else
        report ok "$point ($fstype, holds $DATA_DIR) has no online discard (periodic fstrim" \
            "is the way to trim)"
    fi
}

check_memlock() {
    local limits="$ROOT/proc/self/limits" soft need
    need=$((MEMLOCK_PER_CORE_BYTES * ${#CORES[@]}))
    soft=$(awk '/^Max locked memory/ { print $4; exit }' "$limits" 2> /dev/null) || soft=''
    if [[ -z $soft ]]; then
        report skip "RLIMIT_MEMLOCK: cannot read $limits"
    elif [[ $soft == unlimited ]] || [[ $soft -ge $need ]]; then
        report ok "RLIMIT_MEMLOCK = $soft (want >= $need bytes: 512 KiB x ${#CORES[@]} cores)"
    else
        report warn "RLIMIT_MEMLOCK is $((soft / 1024)) KiB, below the $((need / 1024)) KiB" \
            "spate needs (512 KiB per core for io_uring); raise it where spate starts:" \
            "LimitMEMLOCK=infinity in its systemd unit, ulimit -l unlimited, or a memlock line" \
            "in /etc/security/limits.conf"
    fi
}

# Host steal (virtual machines): time the host gave to something else while one of this
# machine's CPUs had work. On Spate's two-core development VM it came as stops of 100-110 ms,
# each stalling every thread on that CPU, broker and clients alike (bench/README.md, "Host
# steal"): a floor under tail latency that no setting inside the machine removes. Reported,
# not planned: the fix is the host's. The share since boot, and the steal of a short sample
# (SPATE_TUNING_STEAL_SECONDS, default 2).
STEAL_WARN_PPM=100
check_steal() {
    local stat="$ROOT/proc/stat" seconds=${SPATE_TUNING_STEAL_SECONDS:-2}
    local steal total steal_before ppm sample_ms percent
    if [[ ! -r $stat ]]; then
        report skip "host steal: cannot read $stat"
        return
    fi
    steal_and_total() {
        awk '/^cpu / { for (i = 2; i <= NF; i++) total += $i; print $9 + 0, total + 0; exit }' \
            "$stat"
    }
    read -r steal_before _ <<< "$(steal_and_total)"
    sleep "$seconds"
    read -r steal total <<< "$(steal_and_total)"
    if [[ -z $total || $total -eq 0 ]]; then
        report skip "host steal: no cpu line in $stat"
        return
    fi
    ppm=$((steal * 1000000 / total))
    sample_ms=$(((steal - steal_before) * 1000 / $(getconf CLK_TCK)))
    percent=$(awk -v ppm="$ppm" 'BEGIN { printf "%.3f", ppm / 10000 }')
    if ((ppm < STEAL_WARN_PPM)); then
        report ok "host steal: $percent% of CPU time since boot, $sample_ms ms in the last" \
            "${seconds} s"
    else
        report warn "host steal: the host took $percent% of this machine's CPU time since boot" \
            "($sample_ms ms in the last ${seconds} s); every thread on a CPU the host stops" \
            "stops with it (on Spate's development VM: 100 ms at a time), a floor under tail" \
            "latency that no setting here removes: give the VM dedicated, pinned vCPUs" \
            "without CPU overcommit or quota, or use bare metal; spate-bench reports each" \
            "run's steal"
    fi
    unset -f steal_and_total
}

host_section() {
    plan_governor
    plan_thp
    plan_disk
    [[ -z $DATA_DIR ]] || check_discard
    check_memlock
    check_steal
}

# ---------------------------------------------------------------------------------------------

main() {
    while [[ $# -gt 0 ]]; do
        if parse_common_option "$@"; then
            shift "$SHIFT_BY"
            continue
        fi
        case $1 in
            --iface | --cores | --profile | --data-dir | --only)
                [[ $# -ge 2 ]] || die "$1 needs a value"
                case $1 in
                    --iface) IFACE=$2 ;;
                    --cores) CORES_SPEC=$2 ;;
                    --profile) PROFILE=$2 ;;
                    --data-dir) DATA_DIR=$2 ;;
                    --only) ONLY=$2 ;;
                esac
                shift 2
                ;;
            -h | --help)
                usage
                exit 0
                ;;
            *) die "unknown argument '$1' (see --help)" ;;
        esac
    done
    [[ -n $MODE ]] || die 'choose a mode: --check, --dry-run, --apply or --rollback FILE'
    if [[ $MODE == rollback ]]; then
        run_rollback
        return
    fi
    case $PROFILE in
        latency | throughput) ;;
        *) die "--profile must be latency or throughput, not '$PROFILE'" ;;
    esac
    case $ONLY in
        '' | nic | host) ;;
        *) die "--only must be nic or host, not '$ONLY'" ;;
    esac
    local online
    online=$(read_value "$ROOT/sys/devices/system/cpu/online") ||
        die "cannot read $ROOT/sys/devices/system/cpu/online"
    local -a online_cpus
    mapfile -t online_cpus < <(parse_cpu_list "$online") || true
    [[ ${#online_cpus[@]} -gt 0 ]] || die "cannot parse the online CPU list '$online'"
    if [[ -z $CORES_SPEC ]]; then
        CORES=("${online_cpus[@]}")
    else
        mapfile -t CORES < <(parse_cpu_list "$CORES_SPEC") || true
        [[ ${#CORES[@]} -gt 0 ]] || die "--cores '$CORES_SPEC' is not a CPU list like 0-3,8"
        local cpu
        for cpu in "${CORES[@]}"; do
            [[ " ${online_cpus[*]} " == *" $cpu "* ]] ||
                die "CPU $cpu in --cores is not online (online: $online)"
        done
    fi
    if [[ $ONLY != host ]]; then
        nic_section
    fi
    if [[ $ONLY != nic ]]; then
        host_section
    fi
    finish
}

main "$@"
