#!/usr/bin/env bash
# live.sh: the live benchmark. The highest loss-free packet rate on a veth pair, for 64-byte and
# 1500-byte frames, of each receiver:
#   afpacket          the bare AF_PACKET TPACKET_V3 receive-and-drop loop (`tapvault rxbench`):
#                     the ceiling of the af_packet source
#   xsk               the bare AF_XDP receive-and-drop loop (`tapvault rxbench --source xsk`, the
#                     XDP program redirecting to one socket per RX queue): the ceiling of af_xdp
#   tcpdump           `tcpdump -w` to a file under DATA_ROOT, same traffic
#   capture-afpacket  `tapvault capture` with analysis and storage (pcap segments + flow
#                     records under DATA_ROOT), capture.source = af_packet
#   capture-xsk       the same with capture.source = af_xdp
#
# Root. Creates two network namespaces joined by one veth pair (names carry this script's pid),
# removes them on every exit path. Traffic: `tapvault blast` (realistic TCP connections, both
# ends played from the sending namespace, AF_PACKET sendmmsg with PACKET_QDISC_BYPASS) pinned to
# TX_CPU; the receiver pinned to RX_CPU. On veth the receive path's softirq work (veth_xmit ->
# netif_rx -> packet taps) runs on the SENDING CPU, so the receiver's CPU only reads the ring.
#
# Method: each trial sends for STEP_SECONDS at a target rate; it is loss-free when the receiver
# got every frame the blaster sent and the kernel reported no drops, the receiving veth's
# refusals included (if_dropped: a full input queue; the blaster retries those frames, a tap
# could not). First an unpaced trial gives
# the blaster's own maximum; if that is loss-free the result is ">= that rate" (sender-bound).
# Otherwise STEPS bisection steps between 0 and that maximum; the result is the highest achieved
# rate of a loss-free trial.
#
# Cost: every trial also records RX_CPU's busy time (wall time minus its cpuidle residency) and
# the CPU time of the receiver's and NAPI threads (schedstat), from the start of sending to
# SETTLE_SECONDS after its end. The summary turns the busy time into ns per frame and the rate
# at which that work would fill the core, which decides what a sender-bound trial cannot.
#
# Output: benches/results/live-YYYY-MM-DD-HHMMSS/{trials.tsv,summary.md,env.txt} and the table on
# stdout.
#
# Environment:
#   TAPVAULT=PATH      binary to use (default: cargo build --release here)
#   SIZES="64 1500"    frame sizes (Ethernet header included, FCS excluded)
#   MODES="afpacket xsk tcpdump capture-afpacket capture-xsk"   receivers to measure
#   STEP_SECONDS=3     sending time per trial
#   STEPS=6            bisection steps after the unpaced trial
#   FLOWS=64           concurrent TCP connections
#   PAYLOAD=random     what the data segments carry (`tapvault blast --payload`): random
#                      (incompressible, like TLS, which most tapped traffic is), text
#                      (English-like prose; compresses ~2.4x, slowly: the costly case for the
#                      packet store) or pattern (the alphabet repeated; compresses ~50x, almost
#                      free: what every run before session 9 sent)
#   ZSTD_LEVEL=1       storage.zstd_level of `tapvault capture` (1..22, or a fast level, -1 and below)
#   ZSTD_ADAPTIVE=true storage.zstd_adaptive of `tapvault capture` (pass incompressible frames
#                      through)
#   TX_CPU=0 RX_CPU=1  CPUs of sender and receiver
#   BUFFER_MB=32       receive buffer of the AF_PACKET receivers (rxbench ring, tcpdump -B,
#                      capture.block_count of 1 MiB blocks)
#   UMEM_FRAMES=16384  UMEM frames (4 KiB) per AF_XDP socket (rxbench xsk, capture.umem_frames);
#                      the fill and RX rings get as many entries, up to 65536, in both
#   XDP_MODE=auto      XDP attach mode of the AF_XDP receivers (auto: driver mode on veth)
#   CAPTURE_CPUS=$RX_CPU  CPUs of the whole `tapvault capture` process (taskset; its worker is
#                      pinned to RX_CPU); RX_CPU alone gives it the one core every other receiver
#                      gets
#   RX_KERNEL=sender   where the kernel's receive work runs. `sender` (veth's default): in the
#                      sending CPU's softirq, so the receiver's CPU only reads rings and the
#                      sender is usually the limit. `receiver`: on RX_CPU, as a NIC's interrupt
#                      and NAPI would be: RPS steers AF_PACKET delivery there (rps_cpus of the
#                      receiving veth), and veth's NAPI (the XDP program and the copy into the
#                      UMEM) runs threaded, its kernel thread pinned to RX_CPU once attached.
#                      The receiver then pays for its kernel work, and the sender outruns it.
#   SETTLE_SECONDS=1   after each send, how long RX_CPU's busy time keeps counting (the cost
#                      table of the summary)
#   COST_PPS=0         when set, every receiver first gets a trial at this rate, and the cost
#                      table compares the receivers on it (the same traffic for all)
#   PIPELINE=auto      flow.pipeline of `tapvault capture`: auto (inline when the process has one
#                      CPU, as with the default CAPTURE_CPUS), inline or threaded
#   DATA_ROOT=DIR      where tcpdump and capture write (default: a tmpfs directory under /dev/shm,
#                      so the disk is not what is measured); removed after each trial
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SIZES=${SIZES:-"64 1500"}
MODES=${MODES:-"afpacket xsk tcpdump capture-afpacket capture-xsk"}
STEP_SECONDS=${STEP_SECONDS:-3}
STEPS=${STEPS:-6}
SETTLE_SECONDS=${SETTLE_SECONDS:-1}
COST_PPS=${COST_PPS:-0}
# rxbench stops after this long without frames: past the settle time, so that its threads (and
# the NAPI thread of its XDP program) are still there for the second reading of rx_threads_ns.
RX_IDLE=$(awk -v s="$SETTLE_SECONDS" 'BEGIN {print s + 1}')
FLOWS=${FLOWS:-64}
PAYLOAD=${PAYLOAD:-random}
ZSTD_LEVEL=${ZSTD_LEVEL:-1}
ZSTD_ADAPTIVE=${ZSTD_ADAPTIVE:-true}
TX_CPU=${TX_CPU:-0}
RX_CPU=${RX_CPU:-1}
BUFFER_MB=${BUFFER_MB:-32}
UMEM_FRAMES=${UMEM_FRAMES:-16384}
XSK_RING=$(( UMEM_FRAMES < 65536 ? UMEM_FRAMES : 65536 ))
XDP_MODE=${XDP_MODE:-auto}
CAPTURE_CPUS=${CAPTURE_CPUS:-$RX_CPU}
RX_KERNEL=${RX_KERNEL:-sender}
PIPELINE=${PIPELINE:-auto}
[[ "$COST_PPS" =~ ^[0-9]+$ ]] || { echo "live.sh: COST_PPS must be a whole number of packets per second, not '$COST_PPS'" >&2; exit 2; }
[[ "$SETTLE_SECONDS" =~ ^[0-9]+(\.[0-9]+)?$ ]] || { echo "live.sh: SETTLE_SECONDS must be a number of seconds, not '$SETTLE_SECONDS'" >&2; exit 2; }
case "$PAYLOAD" in pattern | random | text) ;; *) echo "live.sh: PAYLOAD must be pattern, random or text, not '$PAYLOAD'" >&2; exit 2 ;; esac
[[ "$ZSTD_LEVEL" =~ ^-?[0-9]+$ ]] || { echo "live.sh: ZSTD_LEVEL must be a whole number, not '$ZSTD_LEVEL'" >&2; exit 2; }
case "$ZSTD_ADAPTIVE" in true | false) ;; *) echo "live.sh: ZSTD_ADAPTIVE must be true or false, not '$ZSTD_ADAPTIVE'" >&2; exit 2 ;; esac
case "$RX_KERNEL" in sender | receiver) ;; *) echo "live.sh: RX_KERNEL must be sender or receiver, not '$RX_KERNEL'" >&2; exit 2 ;; esac

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
DATA_ROOT=${DATA_ROOT:-$SCRATCH}
mkdir -p "$DATA_ROOT"
PIDS=()

cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    ip netns del "$NS_TX" 2>/dev/null || true
    ip netns del "$NS_RX" 2>/dev/null || true
    rm -rf "$SCRATCH" "$DATA_ROOT/store" "$DATA_ROOT/td.pcap"
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
if [ "$RX_KERNEL" = receiver ]; then
    ip netns exec "$NS_RX" sh -c "printf '%x' $((1 << RX_CPU)) > /sys/class/net/$V_RX/queues/rx-0/rps_cpus"
fi

# pin_napi: with RX_KERNEL=receiver, once the receiver is ready: makes the receiving veth's NAPI
# threaded (it exists only while an XDP program is attached, so this fails harmlessly for the
# AF_PACKET receivers, which RPS serves) and pins its kernel threads (named napi/<dev>-<id>, cut
# to 15 characters) to RX_CPU. Prints how many it pinned.
pin_napi() {
    [ "$RX_KERNEL" = receiver ] || return 0
    ip netns exec "$NS_RX" sh -c "echo 1 > /sys/class/net/$V_RX/threaded" 2>/dev/null || true
    local prefix pid comm n=0
    prefix=$(printf '%.15s' "napi/$V_RX")
    while read -r pid comm; do
        if [ "${comm#"$prefix"}" != "$comm" ] || [ "$comm" = "$prefix" ]; then
            taskset -pc "$RX_CPU" "$pid" >/dev/null
            n=$((n + 1))
        fi
    done < <(ps -e -o pid=,comm=)
    echo "$n"
}

mkdir -p "$OUT"
{
    echo "date: $(date -Is)"
    echo "kernel: $(uname -r)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //') x $(nproc)"
    echo "tapvault: $TAPVAULT ($(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?'))"
    echo "tcpdump: $(tcpdump --version 2>&1 | head -1)"
    echo "settings: SIZES='$SIZES' MODES='$MODES' STEP_SECONDS=$STEP_SECONDS STEPS=$STEPS FLOWS=$FLOWS PAYLOAD=$PAYLOAD ZSTD_LEVEL=$ZSTD_LEVEL ZSTD_ADAPTIVE=$ZSTD_ADAPTIVE TX_CPU=$TX_CPU RX_CPU=$RX_CPU BUFFER_MB=$BUFFER_MB UMEM_FRAMES=$UMEM_FRAMES XDP_MODE=$XDP_MODE CAPTURE_CPUS=$CAPTURE_CPUS RX_KERNEL=$RX_KERNEL PIPELINE=$PIPELINE"
    echo "data root: $DATA_ROOT ($(stat -f -c %T "$DATA_ROOT"))"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} > "$OUT/env.txt"
HAVE_CPUIDLE=0
if compgen -G "/sys/devices/system/cpu/cpu$RX_CPU/cpuidle/state*/time" >/dev/null; then
    HAVE_CPUIDLE=1
else
    echo "live.sh: CPU $RX_CPU has no cpuidle states; the cost table will be empty" >&2
fi
printf 'mode\tframe\ttarget_pps\tsent\treceived\tkernel_drops\tachieved_pps\tloss_free\trx_cpu_busy_s\treceiver_threads_cpu_s\tqueue_core_cpu_s\tif_refused\n' > "$OUT/trials.tsv"

# rx_clock: "now idle" in ns: the wall clock, and RX_CPU's idle residency so far from cpuidle
# (/sys/devices/system/cpu/cpuN/cpuidle/state*/time, microseconds, measured by the kernel at
# every idle entry and exit). The difference between two readings' changes is RX_CPU's busy
# time, exact and whatever ran: the receiver, the NAPI thread, softirq delivery through RPS
# (which the scheduler charges to whichever task it interrupted, the idle task included).
# /proc/stat's tick sampling is not used: paced traffic lines up with the tick, and its busy
# figure for one trial swung between 37 % and 100 %.
rx_clock() {
    local idle=0 t v
    if [ "$HAVE_CPUIDLE" = 0 ]; then echo "0 0"; return; fi
    for t in /sys/devices/system/cpu/cpu"$RX_CPU"/cpuidle/state*/time; do
        read -r v < "$t" && idle=$((idle + v))
    done
    echo "$(date +%s%N) $((idle * 1000))"
}

# rx_threads_ns PID: CPU time so far, in ns, from schedstat (exact per task), as "all core":
# all = every thread of PID (the receiver), the receiving veth's NAPI kernel threads (the XDP
# program and the copy into the UMEM run there once threaded) and ksoftirqd on RX_CPU;
# core = what an appliance keeps on the RX queue's core: the NAPI threads, ksoftirqd and the
# receiving thread (rxbench's rx*, the capture's worker, tcpdump), without the capture's
# other threads (flow shards, spill, flow log, pcap I/O), which can run on other cores.
rx_threads_ns() {
    local prefix t sum=0 core=0 v comm
    prefix=$(printf '%.15s' "napi/$V_RX")
    for t in /proc/"$1"/task/*; do
        read -r v _ < "$t/schedstat" 2>/dev/null || continue
        read -r comm < "$t/comm" 2>/dev/null || continue
        sum=$((sum + v))
        case "$comm" in rx[0-9]* | tapvault-worke* | tcpdump) core=$((core + v)) ;; esac
    done
    for t in /proc/[0-9]*; do
        read -r comm < "$t/comm" 2>/dev/null || continue
        if [ "${comm#"$prefix"}" != "$comm" ] || [ "$comm" = "$prefix" ] || [ "$comm" = "ksoftirqd/$RX_CPU" ]; then
            read -r v _ < "$t/schedstat" 2>/dev/null && sum=$((sum + v)) && core=$((core + v))
        fi
    done
    echo "$sum $core"
}

# if_dropped: frames the receiving veth refused so far (rx_dropped + rx_missed_errors): its
# input queue was full (the CPU backlog for AF_PACKET through RPS), or an XDP redirect failed
# (AF_XDP: the same frames as the socket's fill-ring drops). The blaster retries a frame its
# send was refused for (ENOBUFS), so such a frame is not lost here, but a tap or SPAN port
# cannot retry: a trial with any is not loss-free (trials.tsv column if_refused, kept apart
# from the receiver's own drop count, which may include the same frames).
if_dropped() {
    local d m
    d=$(ip netns exec "$NS_RX" cat "/sys/class/net/$V_RX/statistics/rx_dropped")
    m=$(ip netns exec "$NS_RX" cat "/sys/class/net/$V_RX/statistics/rx_missed_errors")
    echo $((d + m))
}

# blast SIZE PPS PID: sends for STEP_SECONDS; prints the blaster's JSON line. Also writes to
# $SCRATCH/cost "busy threads core": RX_CPU's busy time (rx_clock) and the receive work's CPU
# time (rx_threads_ns PID: all, queue core), in ns, from the start of sending to SETTLE_SECONDS after its end (the
# receiver drains its ring and its storage catches up).
blast() {
    local w0 i0 t0 c0 w1 i1 t1 c1 d0 d1 out
    d0=$(if_dropped)
    read -r w0 i0 < <(rx_clock)
    read -r t0 c0 < <(rx_threads_ns "$3")
    out=$(ip netns exec "$NS_TX" "$TAPVAULT" blast --iface "$V_TX" --flows "$FLOWS" --frame-size "$1" \
        --payload "$PAYLOAD" --segments 200 --duration "$STEP_SECONDS" --pps "$2" --cpu "$TX_CPU")
    sleep "$SETTLE_SECONDS"
    read -r w1 i1 < <(rx_clock)
    read -r t1 c1 < <(rx_threads_ns "$3")
    echo "$(( (w1 - w0) - (i1 - i0) )) $((t1 - t0)) $((c1 - c0))" > "$SCRATCH/cost"
    d1=$(if_dropped)
    echo $((d1 - d0)) > "$SCRATCH/ifdrop"
    echo "$out"
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

# Every trial_MODE SIZE PPS prints "sent received drops achieved_pps".

# rxbench_trial SOURCE SIZE PPS [ARGS...]: the bare receive-and-drop loop on SOURCE.
rxbench_trial() {
    local src=$1 size=$2 pps=$3 err=$SCRATCH/rx.err out=$SCRATCH/rx.json
    shift 3
    ip netns exec "$NS_RX" "$TAPVAULT" rxbench --source "$src" --iface "$V_RX" \
        --duration $((STEP_SECONDS + 20)) --idle "$RX_IDLE" --cpus "$RX_CPU" "$@" > "$out" 2> "$err" &
    local rx=$!
    PIDS+=("$rx")
    wait_for "$err" "rxbench: ready" || return 2
    grep -q "^rxbench: ready" "$SCRATCH/seen.$src" 2>/dev/null || grep "rxbench: ready" "$err" | tee "$SCRATCH/seen.$src" >&2
    echo "  napi threads pinned: $(pin_napi)" >&2
    local b
    b=$(blast "$size" "$pps" "$rx")
    wait "$rx"
    jq -r --argjson b "$b" '"\($b.packets) \(.received) \(.kernel_drops) \($b.pps)"' "$out"
}

# The ceiling on AF_PACKET: TPACKET_V3, BUFFER_MB blocks of 1 MiB.
trial_afpacket() {
    rxbench_trial afpacket "$1" "$2" --block-size $((1 << 20)) --block-count "$BUFFER_MB"
}

# The ceiling on AF_XDP: the XDP program (XDP_MODE) redirecting to one socket per RX queue
# (copy mode on veth), UMEM_FRAMES frames of 4 KiB each, rings of XSK_RING. Queue 0 only: a veth
# has one real RX queue unless created with numrxqueues (its num_rx_queues shows the maximum),
# and the sender's frames arrive on it.
trial_xsk() {
    rxbench_trial xsk "$1" "$2" --umem-frames "$UMEM_FRAMES" --ring-size "$XSK_RING" \
        --xdp-mode "$XDP_MODE" --queues 0
}

trial_tcpdump() {
    local err=$SCRATCH/td.err
    ip netns exec "$NS_RX" taskset -c "$RX_CPU" tcpdump -n -i "$V_RX" -B $((BUFFER_MB * 1024)) \
        -w "$DATA_ROOT/td.pcap" 2> "$err" &
    local td=$!
    PIDS+=("$td")
    wait_for "$err" "listening on" || return 2
    local b
    b=$(blast "$1" "$2" "$td")
    # libpcap hands over a partly filled block after its 1 s timeout.
    sleep 1.5
    kill -INT "$td"
    wait "$td" || true
    local captured dropped
    captured=$(sed -n 's/^\([0-9]*\) packets\{0,1\} captured.*/\1/p' "$err")
    dropped=$(sed -n 's/^\([0-9]*\) packets\{0,1\} dropped by kernel.*/\1/p' "$err")
    rm -f "$DATA_ROOT/td.pcap"
    echo "$(jq -r .packets <<< "$b") ${captured:-0} ${dropped:-0} $(jq -r .pps <<< "$b")"
}

# capture_trial SOURCE SIZE PPS: `tapvault capture` with analysis and storage (pcap segments
# and flow records under DATA_ROOT) on SOURCE (af_packet or af_xdp), the whole process on
# CAPTURE_CPUS (taskset; its worker pinned to RX_CPU), no API. Ready once it prints
# "capturing from"; stopped by SIGINT (drain, flush, close the stores), then its report:
# received = frames through the pipeline; drops = every drop counter it has (kernel ring,
# fill ring, invalid descriptors, XDP no-socket and errors, worker-to-shard hand-off, storage,
# the interface's drops are counted for every receiver alike, by trial()).
# Also records the process's CPU time (utime + stime) in $SCRATCH/cpu.tsv.
capture_trial() {
    local src=$1 size=$2 pps=$3 err=$SCRATCH/cap.err rep=$SCRATCH/cap.json dir=$DATA_ROOT/store
    rm -rf "$dir" "$rep"
    local per_source
    if [ "$src" = af_xdp ]; then
        per_source=(--set capture.queues=0 --set capture.umem_frames="$UMEM_FRAMES"
            --set capture.xdp_mode="$XDP_MODE")
    else
        per_source=(--set capture.workers=1 --set capture.block_count="$BUFFER_MB")
    fi
    taskset -c "$CAPTURE_CPUS" "$TAPVAULT" capture --netns "$NS_RX" --no-api --status-every 0 \
        --duration $((STEP_SECONDS + 60)) --data-dir "$dir" --report-json "$rep" --log-level warn \
        --set capture.source="$src" --set capture.interface="$V_RX" \
        --set capture.cpus="$RX_CPU" --set flow.pipeline="$PIPELINE" \
        --set storage.zstd_level="$ZSTD_LEVEL" --set storage.zstd_adaptive="$ZSTD_ADAPTIVE" \
        "${per_source[@]}" 2> "$err" &
    local cap=$!
    PIDS+=("$cap")
    wait_for "$err" "capturing from" || return 2
    pin_napi >/dev/null
    local t0 b t1
    t0=$(cpu_ticks "$cap")
    b=$(blast "$size" "$pps" "$cap")
    sleep 0.5
    t1=$(cpu_ticks "$cap")
    kill -INT "$cap"
    if ! wait "$cap"; then
        echo "live.sh: tapvault capture failed:" >&2
        cat "$err" >&2
        return 2
    fi
    local sent
    sent=$(jq -r .packets <<< "$b")
    printf '%s\t%s\t%s\t%s\t%s\n' "capture-${src/_/}" "$size" "$sent" "$((t1 - t0))" "$(getconf CLK_TCK)" >> "$SCRATCH/cpu.tsv"
    rm -rf "$dir"
    cp "$rep" "$OUT/capture-${src/_/}-$size-$pps.json"
    jq -r --argjson b "$b" '
        (.kernel_ring_full + .kernel_fill_ring_empty + .kernel_invalid_descs + .handoff_dropped
         + .source_errors
         + (if .xdp then .xdp.no_socket + .xdp.errors else 0 end)
         + (if .storage then .storage.packets_dropped + .storage.records_dropped else 0 end)
         ) as $d
        | "\($b.packets) \(.frames) \($d) \($b.pps)"' "$rep"
}

# cpu_ticks PID: user + system CPU time of PID so far, in clock ticks.
cpu_ticks() {
    # Fields 14 and 15 of /proc/PID/stat, counted after the ")" that ends the command name.
    sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}

trial_capture_afpacket() { capture_trial af_packet "$@"; }
trial_capture_xsk() { capture_trial af_xdp "$@"; }

# trial MODE SIZE PPS: runs one trial, records it; prints "achieved_pps loss_free".
trial() {
    local r sent recv drops pps ok
    r=$("trial_${1//-/_}" "$2" "$3") || return 2
    read -r sent recv drops pps <<< "$r"
    local refused
    refused=$(cat "$SCRATCH/ifdrop")
    ok=0
    if [ "$recv" -ge "$sent" ] && [ "$drops" -eq 0 ] && [ "$refused" -eq 0 ]; then ok=1; fi
    if [ "$recv" -gt "$sent" ]; then
        echo "live.sh: $1 received $recv > sent $sent (foreign frames on the link?)" >&2
    fi
    local busy_s threads_s core_s
    read -r busy_s threads_s core_s < <(awk '{printf "%.3f %.3f %.3f\n", $1 / 1e9, $2 / 1e9, $3 / 1e9}' "$SCRATCH/cost")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%.0f\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$sent" "$recv" "$drops" "$pps" "$ok" "$busy_s" "$threads_s" "$core_s" "$refused" >> "$OUT/trials.tsv"
    printf '  %-9s %5s B  target %9s pps: sent %9s received %9s drops %8s refused %8s achieved %9.0f pps %s, RX CPU busy %s s (threads %s s, queue core %s s)\n' \
        "$1" "$2" "$3" "$sent" "$recv" "$drops" "$refused" "$pps" "$([ $ok = 1 ] && echo loss-free || echo LOSS)" "$busy_s" "$threads_s" "$core_s" >&2
    printf '%.0f %s\n' "$pps" "$ok"
}

# search MODE SIZE: prints the loss-free rate ("N" or ">=N").
search() {
    local r max ok best=0 lo=0 hi mid
    if [ "$COST_PPS" -gt 0 ]; then
        r=$(trial "$1" "$2" "$COST_PPS") || return 2
        read -r pps ok <<< "$r"
        [ "$ok" = 1 ] && best=$pps
    fi
    r=$(trial "$1" "$2" 0) || return 2
    read -r max ok <<< "$r"
    if [ "$ok" = 1 ]; then echo ">=$max"; return; fi
    [ "$best" -gt 0 ] && lo=$COST_PPS
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
    echo
    if [ -s "$SCRATCH/cpu.tsv" ]; then
        mhz=$(awk -F: '/^cpu MHz/ {print $2; exit}' /proc/cpuinfo | tr -d ' ')
        echo "CPU time of \`tapvault capture\` per frame sent (all its threads; the trial with the most"
        echo "frames per mode and size; cycles at ${mhz} MHz from /proc/cpuinfo). Unless built with"
        echo "IRQ_TIME_ACCOUNTING, the kernel charges softirq work to the task it interrupts, so for"
        echo "af_packet this includes part of the kernel's RPS delivery; for af_xdp the NAPI thread's"
        echo "work (the XDP program, the UMEM copy) is not in it. Compare sources with the table below."
        echo
        echo "| receiver | frame | frames | CPU s | ns/frame | cycles/frame |"
        echo "|---|---:|---:|---:|---:|---:|"
        sort -t$'\t' -k1,1 -k2,2n -k3,3nr "$SCRATCH/cpu.tsv" | awk -F'\t' -v mhz="$mhz" '
            !seen[$1 FS $2]++ && $3 > 0 {
                s = $4 / $5
                printf "| %s | %s B | %d | %.2f | %.0f | %.0f |\n", $1, $2, $3, s, s * 1e9 / $3, s * mhz * 1e6 / $3
            }'
        echo
    fi
    echo "Cost per frame on the receiving core, and the capacity it implies. Per receiver, the"
    echo "loss-free trial with the most frames (at COST_PPS=${COST_PPS} when set, the same traffic for"
    echo "all), from the start of sending to ${SETTLE_SECONDS} s after its end:"
    echo "- RX CPU busy: wall time minus CPU ${RX_CPU}'s idle residency (cpuidle, exact): everything that"
    echo "  ran there, the receiver, the NAPI thread, softirq delivery through RPS;"
    echo "- threads: the receiver's threads (wherever they ran), the veth's NAPI threads and"
    echo "  ksoftirqd/${RX_CPU} (schedstat). With CAPTURE_CPUS=RX_CPU and RX_KERNEL=receiver the two agree"
    echo "  for the AF_XDP receivers; softirq delivery to AF_PACKET is only in the first;"
    echo "- queue core: of those threads the NAPI threads, ksoftirqd and the receiving thread only"
    echo "  (the capture's worker): what an appliance keeps on the RX queue's core, and the capacity"
    echo "  that work leaves one queue when the other threads run on other cores."
    echo "Capacity = frames / busy seconds: the rate at which that work would fill the core, which a"
    echo "sender-bound trial cannot show. The cost per frame falls as the rate rises (larger batches,"
    echo "fewer wake-ups), so a capacity taken below saturation is a lower bound, and receivers compare"
    echo "fairly only at one rate (COST_PPS). With RX_KERNEL=sender the kernel's receive work is on"
    echo "the sender's CPU and in neither figure."
    echo
    echo "| receiver | frame | at pps | frames | RX CPU busy s | ns/frame | capacity (pps) | threads s | queue core ns/frame | queue core capacity (pps) |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    awk -F'\t' -v cost="$COST_PPS" 'NR > 1 && $8 == 1 && $9 > 0 && (cost == 0 || $3 == cost) {
            k = $1 FS $2
            if (!(k in best) || $5 > frames[k]) { best[k] = $0; frames[k] = $5 }
        }
        END { for (k in best) print best[k] }' "$OUT/trials.tsv" | sort -t$'\t' -k2,2n -k1,1 |
        awk -F'\t' '{
            printf "| %s | %s B | %.0f | %d | %.2f | %.0f | %.0f | %.2f | %.0f | %.0f |\n", $1, $2, $7, $5,
                $9, $9 * 1e9 / $5, $5 / $9, $10, $11 * 1e9 / $5, ($11 > 0 ? $5 / $11 : 0)
        }'
    echo
    echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
} > "$OUT/summary.md"
cp "$SCRATCH/cpu.tsv" "$OUT/cpu.tsv" 2>/dev/null || true
cat "$OUT/summary.md"
echo "results: $OUT" >&2
