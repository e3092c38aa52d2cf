#!/usr/bin/env bash
# Open-loop latency of acknowledged point-to-point (docs/PERFORMANCE.md): measures the peak rate
# of witmq-bench closed loop, then sends at 10%, 50% and 90% of it with --rate and reports
# p50/p99/p99.9 from each message's intended send time. Every run gets a fresh witmqd on
# 127.0.0.1 with a temporary data directory, stopped and removed after it.
#
#   bench/open_loop.sh [--build DIR] [--durability sync|group|none] [--rounds N]
#                      [--seconds S] [--size BYTES]
#
# First it times the disk: 500 fdatasync calls after 4 KiB appends to a file in the temporary
# directory (where the data directories go), as durability group and sync wait for one.
# Peak: --rounds closed-loop runs of 300,000 messages (batch 100, pipeline 8, complete each), the
# median of the consumed rates. Each rate then runs --rounds times for --seconds, alternating
# the rates (10%, 50%, 90%, 10%, ...); the table gives the median of each percentile.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$root/build
durability=group
rounds=3
seconds=10
size=128
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$(cd "$2" && pwd); shift 2 ;;
    --durability) durability=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    -h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "open_loop.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
for v in rounds seconds size; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "open_loop.sh: --$v '${!v}' is not a whole number above 0" >&2; exit 2; }
done
case "$durability" in sync | group | none) ;; *) echo "open_loop.sh: --durability sync, group or none" >&2; exit 2 ;; esac

tmp=$(mktemp -d /tmp/witmq-open-loop.XXXXXX)
pid=""
stop() {
  if [ -n "$pid" ]; then
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=""
  fi
  rm -rf "$tmp/data"
}
trap 'stop; rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

# bench ARGS...: one witmq-bench run against a fresh witmqd; its JSON report in $tmp/json.
bench() {
  mkdir -p "$tmp/data"
  "$build/src/daemon/witmqd" --listen 127.0.0.1:0 --http-listen "" --data-dir "$tmp/data" \
    >"$tmp/out" 2>"$tmp/err" &
  pid=$!
  local server=""
  for _ in $(seq 300); do
    server=$(sed -n 's/^listening on //p' "$tmp/out" | head -n 1)
    [ -n "$server" ] && break
    sleep 0.1
  done
  [ -n "$server" ] || { echo "open_loop.sh: witmqd did not start: $(cat "$tmp/err")" >&2; exit 1; }
  timeout $((seconds * 3 + 120)) "$build/src/cli/witmq-bench" --server "$server" --json \
    --durability "$durability" --complete --size "$size" "$@" >"$tmp/json" || true
  stop
}
# field EXPR FALLBACK: EXPR over the last report (j), or FALLBACK when there is none.
field() {
  python3 -c 'import json,sys
try:
    j = json.load(open(sys.argv[3])); print(eval(sys.argv[1]))
except Exception:
    print(sys.argv[2])' "$1" "$2" "$tmp/json"
}

python3 - "$tmp" <<'EOF'
import os, sys, time
path = os.path.join(sys.argv[1], "fsync-probe")
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
lat = []
for _ in range(500):
    os.write(fd, b"x" * 4096)
    t = time.perf_counter_ns()
    os.fdatasync(fd)
    lat.append(time.perf_counter_ns() - t)
os.close(fd)
os.remove(path)
lat.sort()
print(f"disk: fdatasync after a 4 KiB append, 500 times: p50 {lat[249] / 1e6:.3f} ms, "
      f"p99 {lat[494] / 1e6:.3f} ms, max {lat[-1] / 1e6:.3f} ms")
EOF

peaks=()
for r in $(seq "$rounds"); do
  bench --messages 300000
  p=$(field 'round(j["consumers"]["msgs_per_s"]) if j["ok"] else 0' 0)
  echo "open_loop.sh: closed loop run $r: $p msgs/s" >&2
  peaks+=("$p")
done
peak=$(printf '%s\n' "${peaks[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
[ "$peak" -gt 0 ] || { echo "open_loop.sh: no closed-loop run succeeded" >&2; exit 1; }

: >"$tmp/runs"
for r in $(seq "$rounds"); do
  for pct in 10 50 90; do
    rate=$((peak * pct / 100))
    [ "$rate" -ge 1 ] || rate=1
    bench --rate "$rate" --duration "$seconds" --pipeline 256
    line=$(field '" ".join(str(x) for x in [j["ok"], j["consumers"]["msgs_per_s"], j["latency_us"]["p50"], j["latency_us"]["p99"], j["latency_us"]["p99.9"], j["max_lag_us"]])' "False 0 0 0 0 0")
    echo "open_loop.sh: $pct% ($rate msgs/s) run $r: ok, msgs/s, p50, p99, p99.9, lag (us): $line" >&2
    echo "$pct $rate $line" >>"$tmp/runs"
  done
done

python3 - "$tmp/runs" "$peak" "${peaks[*]}" "$durability" "$size" "$seconds" "$(nproc)" \
  "$(cut -d' ' -f1-3 /proc/loadavg)" <<'EOF'
import statistics, sys
path, peak, peaks, durability, size, seconds, cpus, load = sys.argv[1:9]
rows = [l.split() for l in open(path) if l.strip()]
print(f"\nacked point-to-point, durability {durability}, {size} B, complete each; peak (closed "
      f"loop, median of {peaks}) {int(peak):,} msgs/s; {seconds} s per run; {cpus} CPUs, load "
      f"average {load} at the end")
print(f"{'load':>5} {'rate':>9} {'runs ok':>7} {'msgs/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
      f"{'p99.9 ms':>9} {'max lag ms':>10}")
for pct in ("10", "50", "90"):
    rs = [r for r in rows if r[0] == pct]
    good = [r for r in rs if r[2] == "True"]
    med = lambda i: statistics.median(float(r[i]) for r in good) if good else float("nan")
    print(f"{pct + '%':>5} {int(rs[0][1]):>9,} {len(good)}/{len(rs):<5} {med(3):>9,.0f} "
          f"{med(4) / 1000:>8.3f} {med(5) / 1000:>8.3f} {med(6) / 1000:>9.3f} "
          f"{med(7) / 1000:>10.3f}")
EOF
