#!/usr/bin/env bash
# Measures the failover time of a 3-node cluster with default settings (docs/CLUSTERING.md): one
# etcd and three witmqd on 127.0.0.1 (etcd on WITMQ_FAILOVER_ETCD_PORT, default 17379, and the
# next port; nodes on WITMQ_FAILOVER_PORT_BASE, default 17410, +10 per node, HTTP one above),
# their data in a temporary directory removed at the end. Each run declares a channel, sends one
# message, SIGKILLs the channel's leader, then sends through another node every 20 ms (each send
# a fresh `witmq send`) until one is acknowledged, and prints the time from the SIGKILL. The
# killed node is started again (on its data) before the next run.
#   tools/failover-time.sh [RUNS] [extra witmqd arguments for every node...]
# With WITMQ_FAILOVER_RESTART_NEXT=MS each run also restarts (SIGKILL, start again) the replica
# next in line for the channel (the first other member of its in-sync set in placement order) MS
# milliseconds after the leader's SIGKILL, before it sends again: a crash during a rolling
# restart. (The sends start once that node is up: keep MS under the lease TTL's 3 s or so.)
# With WITMQ_FAILOVER_KEEP=1 the temporary directory (etcd's and each node's log, and runs.log:
# when each leader was SIGKILLed, in Unix ms, to read the node logs against) is kept, and its path
# printed at the end.
# Needs witmqd and witmq built (build/, or WITMQ_BUILD_DIR) and etcd installed.
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
build_dir=${WITMQ_BUILD_DIR:-$repo/build}
witmqd="$build_dir/src/daemon/witmqd"
witmq="$build_dir/src/cli/witmq"
runs=${1:-5}
shift || true
base=${WITMQ_FAILOVER_PORT_BASE:-17410}
etcd_port=${WITMQ_FAILOVER_ETCD_PORT:-17379}
for b in "$witmqd" "$witmq"; do [ -x "$b" ] || { echo "failover-time: $b is not built" >&2; exit 1; }; done
command -v etcd >/dev/null || { echo "failover-time: etcd is not installed" >&2; exit 1; }

dir=$(mktemp -d -t witmq-failover.XXXXXX)
declare -A pid
stop_all() {
  for p in "${pid[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pid[@]}"; do wait "$p" 2>/dev/null; done
  if [ "${WITMQ_FAILOVER_KEEP:-0}" = 1 ]; then
    echo "failover-time: logs kept in $dir" >&2
  else
    rm -rf "$dir"
  fi
}
trap stop_all EXIT

etcd --name failover --data-dir "$dir/etcd" \
  --listen-client-urls "http://127.0.0.1:$etcd_port" \
  --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$((etcd_port + 1))" \
  --initial-advertise-peer-urls "http://127.0.0.1:$((etcd_port + 1))" \
  --initial-cluster "failover=http://127.0.0.1:$((etcd_port + 1))" >"$dir/etcd.log" 2>&1 &
pid[etcd]=$!
for _ in $(seq 1 100); do
  curl -fsS -X POST -d '{"key":"AA=="}' "http://127.0.0.1:$etcd_port/v3/kv/range" >/dev/null 2>&1 && break
  sleep 0.1
done

start_node() {
  local i=$1 port=$((base + 10 * ($1 - 1)))
  "$witmqd" --listen "127.0.0.1:$port" --http-listen "127.0.0.1:$((port + 1))" \
    --data-dir "$dir/n$i" --set "cluster-node-id=n$i" \
    --set "cluster-etcd-endpoints=[\"127.0.0.1:$etcd_port\"]" \
    --set "cluster-peer-token=failover-time-measurement-secret" \
    "${extra[@]}" >"$dir/n$i.out" 2>>"$dir/n$i.log" &
  pid[n$i]=$!
  for _ in $(seq 1 150); do
    grep -q '^listening on' "$dir/n$i.out" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "failover-time: n$i did not start (log: $dir/n$i.log)" >&2
  return 1
}
extra=("$@")
for i in 1 2 3; do start_node "$i" || exit 1; done

now_ms() { echo $(($(date +%s%N) / 1000000)); }
# The first in-sync replica of channel $1, in placement order, other than node $2.
next_of() {
  curl -s "127.0.0.1:$((base + 1))/v1/cluster" | python3 -c "
import json, sys
v = json.load(sys.stdin)
c = next(c for c in v.get('channels', []) if c['name'] == sys.argv[1])
print(next((r for r in c['replicas'] if r != sys.argv[2] and r in c['in-sync']), ''))
" "$1" "$2" 2>/dev/null
}
leader_of() {
  curl -s "127.0.0.1:$((base + 1))/v1/cluster" | python3 -c "
import json, sys
v = json.load(sys.stdin)
print(next((c['leader'] or '') for c in v.get('channels', []) if c['name'] == sys.argv[1]))
" "$1" 2>/dev/null
}

for run in $(seq 1 "$runs"); do
  ch="failover-$run"
  "$witmq" --server "127.0.0.1:$base,127.0.0.1:$((base + 10))" declare "$ch" \
    --kind point-to-point >/dev/null || exit 1
  leader=""
  for _ in $(seq 1 100); do
    leader=$(leader_of "$ch")
    [ -n "$leader" ] && break
    sleep 0.1
  done
  [ -n "$leader" ] || { echo "run $run: $ch got no leader" >&2; exit 1; }
  i=${leader#n}
  entry=$((i == 1 ? base + 10 : base))
  "$witmq" --server "127.0.0.1:$entry" send "$ch" before >/dev/null || exit 1
  next=""
  if [ -n "${WITMQ_FAILOVER_RESTART_NEXT:-}" ]; then
    next=$(next_of "$ch" "$leader")
    [ -n "$next" ] || { echo "run $run: $ch has no in-sync replica besides $leader" >&2; exit 1; }
  fi
  t0=$(now_ms)
  echo "run $run: $ch leader $leader SIGKILLed at $t0" >>"$dir/runs.log"
  kill -KILL "${pid[$leader]}"
  wait "${pid[$leader]}" 2>/dev/null
  if [ -n "$next" ]; then
    sleep "$(awk -v ms="$WITMQ_FAILOVER_RESTART_NEXT" 'BEGIN { print ms / 1000 }')"
    kill -KILL "${pid[$next]}"
    wait "${pid[$next]}" 2>/dev/null
    start_node "${next#n}" || exit 1
    echo "run $run: $ch next in line $next restarted, up at $(now_ms)" >>"$dir/runs.log"
  fi
  took=""
  while [ $(($(now_ms) - t0)) -lt 30000 ]; do
    if "$witmq" --server "127.0.0.1:$entry" --connect-timeout 1000 send "$ch" after >/dev/null 2>&1; then
      took=$(($(now_ms) - t0))
      break
    fi
    sleep 0.02
  done
  if [ -z "$took" ]; then
    echo "run $run: $ch not writable within 30 s of the SIGKILL of its leader $leader"
  else
    echo "run $run: leader $leader SIGKILLed; $ch writable through 127.0.0.1:$entry after $took ms"
    echo "run $run: writable at $((t0 + took)) ($took ms)" >>"$dir/runs.log"
  fi
  start_node "$i" || exit 1
  sleep 8  # the returning node settles and gets its channels back (one lease TTL)
done
