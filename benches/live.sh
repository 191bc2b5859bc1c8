#!/usr/bin/env bash
# live.sh: the live benchmark. The highest loss-free packet rate on a veth pair, for 64-byte and
# 1500-byte frames, of each receiver:
#   afpacket  the bare AF_PACKET TPACKET_V3 receive-and-drop loop (`tapvault rxbench`): the ceiling
#   tcpdump   `tcpdump -w` to a tmpfs file, same traffic
#   capture   tapvault capture with analysis and storage        (HOOK: trial_capture, not wired yet)
#   xsk       the bare AF_XDP receive-and-drop loop              (HOOK: trial_xsk, not wired yet)
#
# Root. Creates two network namespaces joined by one veth pair (names carry this script's pid),
# removes them on every exit path. Traffic: `tapvault blast` (realistic TCP connections, both
# ends played from the sending namespace, AF_PACKET sendmmsg with PACKET_QDISC_BYPASS) pinned to
# TX_CPU; the receiver pinned to RX_CPU. On veth the receive path's softirq work (veth_xmit ->
# netif_rx -> packet taps) runs on the SENDING CPU, so the receiver's CPU only reads the ring.
#
# Method: each trial sends for STEP_SECONDS at a target rate; it is loss-free when the receiver
# got every frame the blaster sent and the kernel reported no drops. First an unpaced trial gives
# the blaster's own maximum; if that is loss-free the result is ">= that rate" (sender-bound).
# Otherwise STEPS bisection steps between 0 and that maximum; the result is the highest achieved
# rate of a loss-free trial.
#
# Output: benches/results/live-YYYY-MM-DD-HHMMSS/{trials.tsv,summary.md,env.txt} and the table on
# stdout.
#
# Environment:
#   TAPVAULT=PATH      binary to use (default: cargo build --release here)
#   SIZES="64 1500"    frame sizes (Ethernet header included, FCS excluded)
#   MODES="afpacket tcpdump"   receivers to measure (capture and xsk once wired)
#   STEP_SECONDS=3     sending time per trial
#   STEPS=6            bisection steps after the unpaced trial
#   FLOWS=64           concurrent TCP connections
#   TX_CPU=0 RX_CPU=1  CPUs of sender and receiver
#   BUFFER_MB=32       receive buffer of every receiver (rxbench ring, tcpdump -B)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SIZES=${SIZES:-"64 1500"}
MODES=${MODES:-"afpacket tcpdump"}
STEP_SECONDS=${STEP_SECONDS:-3}
STEPS=${STEPS:-6}
FLOWS=${FLOWS:-64}
TX_CPU=${TX_CPU:-0}
RX_CPU=${RX_CPU:-1}
BUFFER_MB=${BUFFER_MB:-32}

[ "$(id -u)" = 0 ] || { echo "live.sh: needs root (namespaces, veth, packet sockets)" >&2; exit 1; }
for t in ip tcpdump taskset jq; do
    command -v "$t" >/dev/null || { echo "live.sh: $t is missing (apt-get install iproute2 tcpdump util-linux jq)" >&2; exit 1; }
done
if [ -z "${TAPVAULT:-}" ]; then
    (cd "$ROOT" && cargo build --release --locked -p tapvault >&2)
    TAPVAULT=$ROOT/target/release/tapvault
fi

TAG=$$
NS_TX=tvlb${TAG}t
NS_RX=tvlb${TAG}r
V_TX=tvl${TAG}t
V_RX=tvl${TAG}r
OUT=$ROOT/benches/results/live-$(date +%F-%H%M%S)
SCRATCH=$(mktemp -d /dev/shm/tapvault-live.XXXXXX)
PIDS=()

cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    ip netns del "$NS_TX" 2>/dev/null || true
    ip netns del "$NS_RX" 2>/dev/null || true
    rm -rf "$SCRATCH"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for ns in "$NS_TX" "$NS_RX"; do
    ip netns add "$ns"
    # No IPv6: the link then carries nothing but the blaster's frames, so counts are exact.
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
done
ip link add "$V_TX" netns "$NS_TX" type veth peer name "$V_RX" netns "$NS_RX"
ip -n "$NS_TX" link set "$V_TX" up
ip -n "$NS_RX" link set "$V_RX" up

mkdir -p "$OUT"
{
    echo "date: $(date -Is)"
    echo "kernel: $(uname -r)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //') x $(nproc)"
    echo "tapvault: $TAPVAULT ($(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?'))"
    echo "tcpdump: $(tcpdump --version 2>&1 | head -1)"
    echo "settings: SIZES='$SIZES' MODES='$MODES' STEP_SECONDS=$STEP_SECONDS STEPS=$STEPS FLOWS=$FLOWS TX_CPU=$TX_CPU RX_CPU=$RX_CPU BUFFER_MB=$BUFFER_MB"
} > "$OUT/env.txt"
printf 'mode\tframe\ttarget_pps\tsent\treceived\tkernel_drops\tachieved_pps\tloss_free\n' > "$OUT/trials.tsv"

# blast SIZE PPS: sends for STEP_SECONDS; prints the blaster's JSON line.
blast() {
    ip netns exec "$NS_TX" "$TAPVAULT" blast --iface "$V_TX" --flows "$FLOWS" --frame-size "$1" \
        --segments 200 --duration "$STEP_SECONDS" --pps "$2" --cpu "$TX_CPU"
}

# wait_for FILE TEXT: until FILE contains TEXT (10 s at most).
wait_for() {
    for _ in $(seq 100); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "live.sh: timed out waiting for '$2' in $1:" >&2
    cat "$1" >&2
    return 1
}

# Every trial_MODE SIZE PPS prints "sent received kernel_drops achieved_pps".

trial_afpacket() {
    local err=$SCRATCH/rx.err out=$SCRATCH/rx.json
    ip netns exec "$NS_RX" "$TAPVAULT" rxbench --source afpacket --iface "$V_RX" \
        --duration $((STEP_SECONDS + 20)) --idle 1 --cpus "$RX_CPU" \
        --block-size $((1 << 20)) --block-count "$BUFFER_MB" > "$out" 2> "$err" &
    local rx=$!
    PIDS+=("$rx")
    wait_for "$err" "rxbench: ready"
    local b
    b=$(blast "$1" "$2")
    wait "$rx"
    jq -r --argjson b "$b" '"\($b.packets) \(.received) \(.kernel_drops) \($b.pps)"' "$out"
}

trial_tcpdump() {
    local err=$SCRATCH/td.err
    ip netns exec "$NS_RX" taskset -c "$RX_CPU" tcpdump -n -i "$V_RX" -B $((BUFFER_MB * 1024)) \
        -w "$SCRATCH/td.pcap" 2> "$err" &
    local td=$!
    PIDS+=("$td")
    wait_for "$err" "listening on"
    local b
    b=$(blast "$1" "$2")
    # libpcap hands over a partly filled block after its 1 s timeout.
    sleep 1.5
    kill -INT "$td"
    wait "$td" || true
    local captured dropped
    captured=$(sed -n 's/^\([0-9]*\) packets\{0,1\} captured.*/\1/p' "$err")
    dropped=$(sed -n 's/^\([0-9]*\) packets\{0,1\} dropped by kernel.*/\1/p' "$err")
    rm -f "$SCRATCH/td.pcap"
    echo "$(jq -r .packets <<< "$b") ${captured:-0} ${dropped:-0} $(jq -r .pps <<< "$b")"
}

# HOOK (c): tapvault capture with analysis and storage on, on $V_RX in $NS_RX, pinned like the
# others. To wire: start the capture in the background (storage under $SCRATCH), wait until it
# is ready, blast "$1" "$2", stop it (SIGINT: drain and flush), and print
# "sent received kernel_drops achieved_pps" from its counters (received = frames through the
# pipeline; kernel_drops = every drop counter: kernel ring, worker-to-shard queues, storage).
trial_capture() {
    echo "live.sh: mode 'capture' is not wired yet (see the HOOK comment)" >&2
    return 2
}

# HOOK (d): the bare AF_XDP loop: `tapvault rxbench --source xsk ...` once rxbench has the xsk
# source kind (an XDP program must be attached to $V_RX; copy mode on veth). Then this is
# trial_afpacket with --source xsk.
trial_xsk() {
    echo "live.sh: mode 'xsk' is not wired yet (see the HOOK comment)" >&2
    return 2
}

# trial MODE SIZE PPS: runs one trial, records it; prints "achieved_pps loss_free".
trial() {
    local r sent recv drops pps ok
    r=$("trial_$1" "$2" "$3") || return 2
    read -r sent recv drops pps <<< "$r"
    ok=0
    if [ "$recv" -ge "$sent" ] && [ "$drops" -eq 0 ]; then ok=1; fi
    if [ "$recv" -gt "$sent" ]; then
        echo "live.sh: $1 received $recv > sent $sent (foreign frames on the link?)" >&2
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%.0f\t%s\n' "$1" "$2" "$3" "$sent" "$recv" "$drops" "$pps" "$ok" >> "$OUT/trials.tsv"
    printf '  %-9s %5s B  target %9s pps: sent %9s received %9s drops %8s achieved %9.0f pps %s\n' \
        "$1" "$2" "$3" "$sent" "$recv" "$drops" "$pps" "$([ $ok = 1 ] && echo loss-free || echo LOSS)" >&2
    printf '%.0f %s\n' "$pps" "$ok"
}

# search MODE SIZE: prints the loss-free rate ("N" or ">=N").
search() {
    local r max ok best=0 lo=0 hi mid
    r=$(trial "$1" "$2" 0) || return 2
    read -r max ok <<< "$r"
    if [ "$ok" = 1 ]; then echo ">=$max"; return; fi
    hi=$max
    for _ in $(seq "$STEPS"); do
        mid=$(( (lo + hi) / 2 ))
        r=$(trial "$1" "$2" "$mid") || return 2
        read -r pps ok <<< "$r"
        if [ "$ok" = 1 ]; then
            lo=$mid
            [ "$pps" -gt "$best" ] && best=$pps
        else
            hi=$mid
        fi
    done
    echo "$best"
}

declare -A RESULT
for size in $SIZES; do
    for mode in $MODES; do
        echo "== $mode, $size-byte frames" >&2
        RESULT[$mode,$size]=$(search "$mode" "$size") || RESULT[$mode,$size]="n/a"
    done
done

{
    echo "# Live benchmark: loss-free packet rate on a veth pair"
    echo
    sed 's/^/    /' "$OUT/env.txt"
    echo
    printf '| receiver |'; for s in $SIZES; do printf ' %s B (pps) | %s B (Mbit/s) |' "$s" "$s"; done; echo
    printf '|---|'; for _ in $SIZES; do printf -- '---:|---:|'; done; echo
    for mode in $MODES; do
        printf '| %s |' "$mode"
        for s in $SIZES; do
            v=${RESULT[$mode,$s]}
            n=${v#>=}
            if [[ "$n" =~ ^[0-9]+$ ]]; then
                printf ' %s | %s |' "$v" "$(( n * s * 8 / 1000000 ))"
            else
                printf ' %s | |' "$v"
            fi
        done
        echo
    done
    echo
    echo "'>=N': loss-free even unpaced, so the sender was the limit. Trials: trials.tsv."
} > "$OUT/summary.md"
cat "$OUT/summary.md"
echo "results: $OUT" >&2
