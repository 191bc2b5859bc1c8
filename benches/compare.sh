#!/usr/bin/env bash
# compare.sh [CAPTURE.pcap]
#
# tapvault analyze side by side with tcpdump, argus, tcptrace and tshark on ONE large realistic
# capture, in one run, on this machine. Writes benches/results/YYYY-MM-DD-HHMM/ (raw.tsv with
# every run, summary.md with the table, env.txt, the tools' stderr) and prints the table.
#
# The capture (default /var/tmp/tapvault-bench/bulk.pcap) is made with
# ../shared/bench/make-bulk.sh (root, network namespaces, ~1-2 minutes, ~4-5 GB, ~7 M packets)
# unless it exists and is fresh: non-empty, newer than make-bulk.sh and younger than
# MAX_AGE_DAYS days. FORCE_REGEN=1 makes it anew.
#
# Environment:
#   RUNS=3               runs of each tool on the full capture (tshark runs once, on a slice)
#   SLICE_PACKETS=20000  packets in the tshark slice (the capture's first ones)
#   TAPVAULT=PATH        tapvault binary to use (default: cargo build --release in this workspace)
#   BULK_SECONDS=55      duration handed to make-bulk.sh
#   MAX_AGE_DAYS=7       freshness of an existing capture
#   SKIP_INSTALL=1       do not apt-get install missing peers
#
# Every measurement is `/usr/bin/time -f '%e %M'` (wall seconds, peak RSS KiB) on a file that
# was read into the page cache first; for tapvault the peak anonymous RSS is sampled from
# /proc as well (the capture is memory-mapped, so peak RSS includes page-cache pages of the
# file that the process touched).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
CAP=${1:-/var/tmp/tapvault-bench/bulk.pcap}
RUNS=${RUNS:-3}
SLICE_PACKETS=${SLICE_PACKETS:-20000}
MAX_AGE_DAYS=${MAX_AGE_DAYS:-7}
MAKE_BULK=$ROOT/../shared/bench/make-bulk.sh

say() { printf '== %s\n' "$*" >&2; }
die() { printf 'compare.sh: %s\n' "$*" >&2; exit 1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# ------------------------------------------------------------------ tools (idempotent)
need_pkgs=()
want() { command -v "$1" >/dev/null 2>&1 || need_pkgs+=("$2"); }
want tcpdump tcpdump
want argus argus-server          # Debian's argus-server provides /usr/sbin/argus
want tcptrace tcptrace
want tshark tshark
want capinfos wireshark-common
want editcap wireshark-common
[ -x /usr/bin/time ] || need_pkgs+=(time)
if [ ! -s "$CAP" ] || [ "${FORCE_REGEN:-0}" = 1 ]; then
  # make-bulk.sh's own needs
  want iperf3 iperf3; want wrk wrk; want nginx nginx-light; want ethtool ethtool; want ip iproute2
fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
  [ "${SKIP_INSTALL:-0}" = 1 ] && die "missing: ${need_pkgs[*]}"
  say "installing: ${need_pkgs[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=300 \
    "${need_pkgs[@]}" >/dev/null || {
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=300 \
      "${need_pkgs[@]}" >/dev/null
  }
fi

# ------------------------------------------------------------------ the capture
fresh() {
  [ -s "$CAP" ] && [ "${FORCE_REGEN:-0}" != 1 ] || return 1
  [ ! -e "$MAKE_BULK" ] || [ "$CAP" -nt "$MAKE_BULK" ] || return 1
  [ -n "$(find "$CAP" -mtime -"$MAX_AGE_DAYS" 2>/dev/null)" ] || return 1
  capinfos -c "$CAP" >/dev/null 2>&1
}
if fresh; then
  say "reusing $CAP"
else
  [ -x "$MAKE_BULK" ] || [ -f "$MAKE_BULK" ] || die "cannot find $MAKE_BULK"
  say "making $CAP with make-bulk.sh (takes a few minutes)"
  mkdir -p "$(dirname "$CAP")"
  rm -f "$CAP"
  as_root bash "$MAKE_BULK" "$CAP" "${BULK_SECONDS:-55}" >&2
fi

# ------------------------------------------------------------------ tapvault
if [ -n "${TAPVAULT:-}" ]; then
  TV=$TAPVAULT
else
  say "building tapvault (release)"
  (cd "$ROOT" && cargo build --release --quiet --bin tapvault) || die "release build failed"
  TV=$ROOT/target/release/tapvault
fi
[ -x "$TV" ] || die "no tapvault binary at $TV"

# ------------------------------------------------------------------ results folder
OUT=$HERE/results/$(date +%Y-%m-%d-%H%M)
mkdir -p "$OUT/stderr"
TMP=$(mktemp -d /tmp/tapvault-compare.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

SLICE=$TMP/slice.pcap
editcap -r "$CAP" "$SLICE" "1-$SLICE_PACKETS" 2>/dev/null
PKTS=$(capinfos -c -M "$CAP" | awk -F': *' '/Number of packets/ {print $2}')
SLICE_PKTS=$(capinfos -c -M "$SLICE" | awk -F': *' '/Number of packets/ {print $2}')
BYTES=$(stat -c %s "$CAP")
SLICE_BYTES=$(stat -c %s "$SLICE")
[ -n "$PKTS" ] && [ "$PKTS" -gt 0 ] || die "capinfos found no packets in $CAP"

{
  echo "date: $(date -Is)"
  echo "host: $(uname -srm); $(nproc) cores; $(lscpu | sed -n 's/^Model name: *//p' | head -1)"
  echo "memory: $(free -g | awk '/Mem:/ {print $2 " GiB"}')"
  echo "capture: $CAP ($BYTES bytes, $PKTS packets); slice: $SLICE_PKTS packets, $SLICE_BYTES bytes"
  echo "tapvault: $TV ($("$TV" --version 2>/dev/null || echo '?')); workspace HEAD $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo "tcpdump: $(tcpdump --version 2>&1 | head -1)"
  echo "argus: $(dpkg-query -W -f '${Package} ${Version}' argus-server 2>/dev/null)"
  echo "tcptrace: $(dpkg-query -W -f '${Package} ${Version}' tcptrace 2>/dev/null)"
  echo "tshark: $(tshark --version 2>/dev/null | head -1)"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$OUT/env.txt" >&2

# ------------------------------------------------------------------ measuring
printf 'tool\trun\tpackets\tbytes\twall_s\tpeak_rss_kib\tpeak_anon_kib\tload1\n' >"$OUT/raw.tsv"

# measure LABEL RUN PACKETS BYTES CMD...: one timed run, stdout to /dev/null.
measure() {
  local label=$1 run=$2 pkts=$3 bytes=$4; shift 4
  local tf=$TMP/time.$$ err=$OUT/stderr/$label.$run.txt load
  load=$(cut -d' ' -f1 /proc/loadavg)
  /usr/bin/time -f '%e %M' -o "$tf" "$@" >/dev/null 2>"$err" &
  local tpid=$! cpid="" anon=0 a
  # Sample the child's anonymous RSS (page-cache pages of a mapped file are not in it).
  while kill -0 "$tpid" 2>/dev/null; do
    [ -n "$cpid" ] || cpid=$(pgrep -P "$tpid" | head -1 || true)
    if [ -n "$cpid" ]; then
      a=$(awk '/^RssAnon:/ {print $2}' "/proc/$cpid/status" 2>/dev/null || true)
      [ -n "$a" ] && [ "$a" -gt "$anon" ] && anon=$a
    fi
    sleep 0.05
  done
  wait "$tpid" || die "$label run $run failed (see $err)"
  read -r wall rss <"$tf"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$run" "$pkts" "$bytes" "$wall" "$rss" "$anon" "$load" \
    >>"$OUT/raw.tsv"
  awk -v l="$label" -v r="$run" -v w="$wall" -v m="$rss" -v a="$anon" 'BEGIN {
    printf "   %-18s run %s: %8.2f s  peak RSS %8.1f MiB  (anon %7.1f MiB)\n", l, r, w, m / 1024, a / 1024 }' >&2
}

say "page cache: reading $CAP"
cat "$CAP" >/dev/null
cat "$SLICE" >/dev/null

for r in $(seq "$RUNS"); do
  say "round $r of $RUNS"
  measure tapvault-shards1 "$r" "$PKTS" "$BYTES" "$TV" analyze "$CAP" --json --no-progress --shards 1
  measure tapvault-default "$r" "$PKTS" "$BYTES" "$TV" analyze "$CAP" --json --no-progress
  measure tcpdump "$r" "$PKTS" "$BYTES" tcpdump -r "$CAP" -w /dev/null
  measure argus "$r" "$PKTS" "$BYTES" argus -r "$CAP" -w "$TMP/x.argus"
  rm -f "$TMP/x.argus"
  measure tcptrace "$r" "$PKTS" "$BYTES" tcptrace -l -r "$CAP"
done
say "tshark (two-pass expert analysis) on the first $SLICE_PKTS packets"
measure tshark-slice 1 "$SLICE_PKTS" "$SLICE_BYTES" tshark -2 -q -z expert -r "$SLICE"
# tapvault on the same slice, for a like-for-like line (the full-file rate is the one compared)
measure tapvault-slice 1 "$SLICE_PKTS" "$SLICE_BYTES" "$TV" analyze "$SLICE" --json --no-progress --shards 1
# tapvault's own frame count must agree with capinfos
"$TV" analyze "$CAP" --json --no-progress --shards 1 --summary-json "$OUT/tapvault-summary.json" >/dev/null 2>&1
TV_FRAMES=$(sed -n 's/^ *"frames": *\([0-9]*\).*/\1/p' "$OUT/tapvault-summary.json" | head -1)
echo "tapvault summary frames: $TV_FRAMES (capinfos: $PKTS)" | tee -a "$OUT/env.txt" >&2

# ------------------------------------------------------------------ table
awk -F'\t' -v runs="$RUNS" '
  NR == 1 { next }
  { n[$1]++; w[$1, n[$1]] = $5; r[$1, n[$1]] = $6; a[$1, n[$1]] = $7; p[$1] = $3; b[$1] = $4
    if (!($1 in seen)) { seen[$1] = 1; order[++k] = $1 } }
  function median(arr, tool, cnt,   i, j, t, v) {
    for (i = 1; i <= cnt; i++) v[i] = arr[tool, i]
    for (i = 1; i <= cnt; i++) for (j = i + 1; j <= cnt; j++) if (v[j] + 0 < v[i] + 0) { t = v[i]; v[i] = v[j]; v[j] = t }
    return (cnt % 2) ? v[(cnt + 1) / 2] : (v[cnt / 2] + v[cnt / 2 + 1]) / 2
  }
  function maxof(arr, tool, cnt,   i, m) { m = 0; for (i = 1; i <= cnt; i++) if (arr[tool, i] + 0 > m) m = arr[tool, i] + 0; return m }
  END {
    for (i = 1; i <= k; i++) {
      t = order[i]; mw = median(w, t, n[t]); if (mw <= 0) mw = 0.001
      pps[t] = p[t] / mw; mbs[t] = b[t] / mw / 1e6; wall[t] = mw
      rss[t] = maxof(r, t, n[t]) / 1024; anon[t] = maxof(a, t, n[t]) / 1024
    }
    printf "| tool | runs | packets | median wall s | packets/s | MB/s | peak RSS MiB | peak anon RSS MiB | tapvault-shards1 / tool | tapvault-default / tool |\n"
    printf "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    for (i = 1; i <= k; i++) {
      t = order[i]
      printf "| %s | %d | %d | %.2f | %.0f | %.0f | %.0f | %.0f | %.2fx | %.2fx |\n", t, n[t], p[t], wall[t], pps[t], mbs[t], rss[t], anon[t],
        pps["tapvault-shards1"] / pps[t], pps["tapvault-default"] / pps[t]
    }
    printf "\nTargets (packets/s; tapvault-shards1 | tapvault-default):\n"
    split("tcpdump:1 argus:2 tcptrace:6 tshark-slice:400", tg, " ")
    for (i = 1; i <= 4; i++) {
      split(tg[i], kv, ":"); t = kv[1]; x = kv[2]
      for (j = 1; j <= 2; j++) {
        tv = (j == 1) ? "tapvault-shards1" : "tapvault-default"
        ratio = pps[tv] / pps[t]
        printf "- %s >= %gx %s: %.2fx -> %s\n", tv, x, t, ratio, (ratio >= x) ? "met" : sprintf("MISSED (%.0f%% of target)", 100 * ratio / x)
      }
    }
    for (j = 1; j <= 2; j++) {
      tv = (j == 1) ? "tapvault-shards1" : "tapvault-default"
      printf "- %s peak RSS < 256 MiB: %.0f MiB -> %s (anonymous: %.0f MiB -> %s)\n", tv, rss[tv], (rss[tv] < 256) ? "met" : "MISSED",
        anon[tv], (anon[tv] < 256) ? "met" : "MISSED"
    }
  }' "$OUT/raw.tsv" | tee "$OUT/summary.md"
say "results in $OUT"
