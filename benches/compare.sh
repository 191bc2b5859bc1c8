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
# Every measurement is `/usr/bin/time -f '%e %M %U %S'` (wall s, peak RSS KiB, user and sys CPU s) on a file that
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
editcap -F pcap -r "$CAP" "$SLICE" "1-$SLICE_PACKETS" 2>/dev/null
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
  echo "tapvault: $TV ($("$TV" --version 2>/dev/null || echo '?')); ${TAPVAULT:+prebuilt binary (TAPVAULT), }workspace HEAD $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo "tcpdump: $(tcpdump --version 2>&1 | head -1)"
  echo "argus: $(dpkg-query -W -f '${Package} ${Version}' argus-server 2>/dev/null)"
  echo "tcptrace: $(dpkg-query -W -f '${Package} ${Version}' tcptrace 2>/dev/null)"
  echo "tshark: $(tshark --version 2>/dev/null | head -1)"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$OUT/env.txt" >&2

# ------------------------------------------------------------------ measuring
printf 'tool\trun\tpackets\tbytes\twall_s\tcpu_s\tpeak_rss_kib\tpeak_anon_kib\tload1\n' >"$OUT/raw.tsv"

# measure LABEL RUN PACKETS BYTES CMD...: one timed run, stdout to /dev/null.
measure() {
  local label=$1 run=$2 pkts=$3 bytes=$4; shift 4
  local tf=$TMP/time.$$ err=$OUT/stderr/$label.$run.txt load
  load=$(cut -d' ' -f1 /proc/loadavg)
  /usr/bin/time -f '%e %M %U %S' -o "$tf" "$@" >/dev/null 2>"$err" &
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
  local wall rss usr sys cpu
  read -r wall rss usr sys <"$tf"
  cpu=$(awk -v u="$usr" -v s="$sys" 'BEGIN { printf "%.2f", u + s }')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$run" "$pkts" "$bytes" "$wall" "$cpu" "$rss" "$anon" "$load" \
    >>"$OUT/raw.tsv"
  awk -v l="$label" -v r="$run" -v w="$wall" -v c="$cpu" -v m="$rss" -v a="$anon" -v ld="$load" 'BEGIN {
    printf "   %-18s run %s: %8.2f s wall %8.2f s cpu  peak RSS %8.1f MiB (anon %7.1f MiB)  load %s\n", l, r, w, c, m / 1024, a / 1024, ld }' >&2
}

say "page cache: reading $CAP"
cat "$CAP" >/dev/null
cat "$SLICE" >/dev/null

for r in $(seq "$RUNS"); do
  say "round $r of $RUNS"
  measure tapvault-shards1 "$r" "$PKTS" "$BYTES" "$TV" analyze "$CAP" --json --no-progress --shards 1
  measure tapvault-default "$r" "$PKTS" "$BYTES" "$TV" analyze "$CAP" --json --no-progress
  # reader thread + 2 shard threads + output thread (the threaded path, whatever the core count)
  measure tapvault-shards2 "$r" "$PKTS" "$BYTES" "$TV" analyze "$CAP" --json --no-progress --shards 2
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
# Rates use the best (minimum) wall time of the runs: on a shared machine the other runs measure
# the neighbours as much as the tool. The median is shown too, and packets per CPU-second
# (user + sys), which depends least on what else runs. Ratios are tapvault (--shards 1, the
# inline path; on a 2-core machine the default is the same) over the tool.
awk -F'\t' '
  NR == 1 { next }
  { t = $1; c = ++n[t]; w[t, c] = $5; u[t, c] = $6; r[t, c] = $7; a[t, c] = $8; p[t] = $3; b[t] = $4
    if (!(t in seen)) { seen[t] = 1; order[++k] = t } }
  function sorted(arr, tool, cnt, v,   i, j, x) {
    for (i = 1; i <= cnt; i++) v[i] = arr[tool, i] + 0
    for (i = 1; i <= cnt; i++) for (j = i + 1; j <= cnt; j++) if (v[j] < v[i]) { x = v[i]; v[i] = v[j]; v[j] = x }
  }
  function median(arr, tool, cnt,   v) { sorted(arr, tool, cnt, v); return (cnt % 2) ? v[(cnt + 1) / 2] : (v[cnt / 2] + v[cnt / 2 + 1]) / 2 }
  function minof(arr, tool, cnt,   v) { sorted(arr, tool, cnt, v); return v[1] }
  function maxof(arr, tool, cnt,   v) { sorted(arr, tool, cnt, v); return v[cnt] }
  function nz(x) { return x > 0 ? x : 0.01 }
  END {
    for (i = 1; i <= k; i++) {
      t = order[i]
      best[t] = nz(minof(w, t, n[t])); med[t] = nz(median(w, t, n[t])); cpu[t] = nz(minof(u, t, n[t]))
      pps[t] = p[t] / best[t]; ppm[t] = p[t] / med[t]; ppc[t] = p[t] / cpu[t]; mbs[t] = b[t] / best[t] / 1e6
      rss[t] = maxof(r, t, n[t]) / 1024; anon[t] = maxof(a, t, n[t]) / 1024
    }
    tv = "tapvault-shards1"
    printf "| tool | runs | packets | wall s best / median | packets/s (best) | packets/s (median) | MB/s (best) | CPU s | packets per CPU-s | peak RSS MiB | peak anon RSS MiB | tapvault / tool (wall) | tapvault / tool (CPU) |\n"
    printf "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    for (i = 1; i <= k; i++) {
      t = order[i]
      printf "| %s | %d | %d | %.2f / %.2f | %.0f | %.0f | %.0f | %.2f | %.0f | %.0f | %.0f | %.2fx | %.2fx |\n", t, n[t], p[t], best[t], med[t],
        pps[t], ppm[t], mbs[t], cpu[t], ppc[t], rss[t], anon[t], pps[tv] / pps[t], ppc[tv] / ppc[t]
    }
    printf "\nTargets (packets/s at best wall time; per CPU-second in brackets):\n"
    split("tcpdump:1 argus:2 tcptrace:6 tshark-slice:400", tg, " ")
    split("tapvault-shards1 tapvault-default tapvault-shards2", tvs, " ")
    for (i = 1; i <= 4; i++) {
      split(tg[i], kv, ":"); t = kv[1]; x = kv[2]
      for (j = 1; j <= 3; j++) {
        v = tvs[j]; if (!(v in seen)) continue
        ratio = pps[v] / pps[t]; rc = ppc[v] / ppc[t]
        printf "- %s >= %gx %s: %.2fx [%.2fx] -> %s\n", v, x, t, ratio, rc, (ratio >= x) ? "met" : sprintf("MISSED (%.0f%% of target)", 100 * ratio / x)
      }
    }
    for (j = 1; j <= 3; j++) {
      v = tvs[j]; if (!(v in seen)) continue
      printf "- %s peak RSS < 256 MiB: %.0f MiB -> %s (anonymous: %.0f MiB -> %s)\n", v, rss[v], (rss[v] < 256) ? "met" : "MISSED",
        anon[v], (anon[v] < 256) ? "met" : "MISSED"
    }
  }' "$OUT/raw.tsv" | tee "$OUT/summary.md"
say "results in $OUT"
