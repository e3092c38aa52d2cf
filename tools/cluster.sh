#!/usr/bin/env bash
# Starts a 3-node witmq cluster on this machine, to try it (docs/CLUSTERING.md): one etcd and
# three witmqd (n1, n2, n3), all on 127.0.0.1, their data and logs in a temporary directory.
# Ctrl-C (or SIGTERM) stops them all and removes the directory (WITMQ_CLUSTER_KEEP=1 keeps it).
#   tools/cluster.sh [--no-build] [extra witmqd arguments for every node...]
# Ports (WITMQ_CLUSTER_PORT_BASE, default 7410): node i listens on BASE+10*(i-1) (protocol) and
# BASE+10*(i-1)+1 (HTTP) and BASE+10*(i-1)+2 (the peer link): 7410/7411/7412, 7420/7421/7422,
# 7430/7431/7432. etcd: WITMQ_CLUSTER_ETCD_PORT (default 2379) for clients and the next port for
# its peer URL. The peer link's secret is made afresh for each run, in the temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = --no-build ]; then
  shift
  build_dir=build
else
  build_dir=$(WITMQ_BUILD_TARGETS="witmqd witmq" tools/build.sh)
fi
witmqd="$build_dir/src/daemon/witmqd"
[ -x "$witmqd" ] || { echo "cluster: $witmqd is not built" >&2; exit 1; }
command -v etcd >/dev/null || { echo "cluster: etcd is not installed (tools/bootstrap.sh installs etcd-server)" >&2; exit 1; }

base=${WITMQ_CLUSTER_PORT_BASE:-7410}
etcd_port=${WITMQ_CLUSTER_ETCD_PORT:-2379}
dir=$(mktemp -d "${TMPDIR:-/tmp}/witmq-cluster.XXXXXX")
pids=()
stop_all() {
  trap - INT TERM EXIT
  echo "cluster: stopping" >&2
  # The nodes first (each revokes its lease), then etcd.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill -TERM "${pids[$i]}" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "${WITMQ_CLUSTER_KEEP:-0}" = 1 ]; then
    echo "cluster: data and logs kept in $dir" >&2
  else
    rm -rf "$dir"
  fi
  exit "$1"
}
# Ctrl-C or SIGTERM: a normal stop. Anything else that ends the script (a failed start, every
# process ended) stops the rest and fails.
trap 'stop_all 0' INT TERM
trap 'stop_all 1' EXIT

etcd --name witmq-cluster --data-dir "$dir/etcd" \
  --listen-client-urls "http://127.0.0.1:$etcd_port" \
  --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$((etcd_port + 1))" \
  --initial-advertise-peer-urls "http://127.0.0.1:$((etcd_port + 1))" \
  --initial-cluster "witmq-cluster=http://127.0.0.1:$((etcd_port + 1))" \
  >"$dir/etcd.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 150); do
  if curl -fsS -X POST -d '{"key":"AA=="}' "http://127.0.0.1:$etcd_port/v3/kv/range" >/dev/null 2>&1; then
    break
  fi
  sleep 0.2
done
curl -fsS -X POST -d '{"key":"AA=="}' "http://127.0.0.1:$etcd_port/v3/kv/range" >/dev/null ||
  { echo "cluster: etcd did not answer on 127.0.0.1:$etcd_port (log: $dir/etcd.log)" >&2; exit 1; }

# The peer link's shared secret, made afresh for this run and readable by its owner alone.
(umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$dir/peer-token")

for i in 1 2 3; do
  port=$((base + 10 * (i - 1)))
  "$witmqd" --listen "127.0.0.1:$port" --http-listen "127.0.0.1:$((port + 1))" \
    --data-dir "$dir/n$i" \
    --set "cluster-node-id=n$i" \
    --set "cluster-etcd-endpoints=[\"127.0.0.1:$etcd_port\"]" \
    --set "cluster-peer-listen=127.0.0.1:$((port + 2))" \
    --set "cluster-peer-token-file=$dir/peer-token" \
    "$@" >"$dir/n$i.out" 2>"$dir/n$i.log" &
  pids+=($!)
  # Started one after the other: each has joined when it prints its address.
  for _ in $(seq 1 150); do
    grep -q '^listening on' "$dir/n$i.out" 2>/dev/null && break
    kill -0 "${pids[-1]}" 2>/dev/null || { cat "$dir/n$i.log" >&2; exit 1; }
    sleep 0.2
  done
  grep -q '^listening on' "$dir/n$i.out" || { echo "cluster: n$i did not start (log: $dir/n$i.log)" >&2; exit 1; }
done

cat <<INFO
cluster: etcd on 127.0.0.1:$etcd_port; nodes (logs in $dir):
  n1  protocol 127.0.0.1:$base  http 127.0.0.1:$((base + 1))
  n2  protocol 127.0.0.1:$((base + 10))  http 127.0.0.1:$((base + 11))
  n3  protocol 127.0.0.1:$((base + 20))  http 127.0.0.1:$((base + 21))
  curl -s 127.0.0.1:$((base + 1))/v1/cluster
  $build_dir/src/cli/witmq --server 127.0.0.1:$base cluster
Writes are acknowledged once a majority of each channel's replicas holds them; a new leader serves them.
Ctrl-C stops them all.
INFO
# A node that ends (killed to watch a failover, say) leaves the others running; the script ends
# when all have ended, keeping the logs.
alive() {
  local n=0
  for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && n=$((n + 1)); done
  echo "$n"
}
while [ "$(alive)" -gt 0 ]; do
  wait -n 2>/dev/null || true
  echo "cluster: a process ended; $(alive) of ${#pids[@]} still running (logs: $dir)" >&2
done
WITMQ_CLUSTER_KEEP=1
stop_all 1
