#!/usr/bin/env bash
# Random faults under load against real etcd and witmqd processes, then a drain and the history
# checker (docs/CLUSTERING.md, "How it is tested"); a longer run of ChaosTest.RandomFaultsUnderLoad.
#   tools/chaos.sh --minutes N [--nodes K] [--seed S] [--history FILE]
# Faults: SIGKILL and restart (on the same data directory, and with 3 nodes on an empty one),
# SIGSTOP/SIGCONT past the lease, SIGTERM and restart, etcd stopped and started, a node's client
# link reset or blackholed, its etcd link blackholed, and with 3 nodes a whole node partitioned.
# Prints the seed, the faults injected, the time until writes were acknowledged again after each
# kind of fault, the operations and every violation. With WITMQ_CLUSTER_LOGS naming a directory,
# each node's log is kept there (<dir>/<node>.log). The history stays in FILE (default: kept
# only when the run failed); check it again with
#   build/tests/cluster/witmq-history-check FILE
# Exits 0 when the checker found nothing, 1 otherwise.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
build_dir=${WITMQ_BUILD_DIR:-$repo/build}
minutes=10

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2; exit "$1"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) minutes=${2:?}; shift 2 ;;
    --nodes) export WITMQ_CHAOS_NODES=${2:?}; shift 2 ;;
    --seed) export WITMQ_CHAOS_SEED=${2:?}; shift 2 ;;
    --history) export WITMQ_CHAOS_HISTORY=${2:?}; shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "chaos: unknown argument '$1'" >&2; usage 2 ;;
  esac
done
case "$minutes" in
  ''|*[!0-9]*|0) echo "chaos: --minutes needs a whole number of minutes above 0, not '$minutes'" >&2; exit 2 ;;
esac
case "${WITMQ_CHAOS_NODES:-1}" in
  1|2|3|4|5) ;;
  *) echo "chaos: --nodes needs 1..5, not '${WITMQ_CHAOS_NODES}'" >&2; exit 2 ;;
esac
command -v etcd >/dev/null || { echo "chaos: etcd is not installed (tools/bootstrap.sh installs etcd-server)" >&2; exit 1; }
export WITMQ_CHAOS_SEED=${WITMQ_CHAOS_SEED:-$(( $(date +%s) % 100000 ))}

[ -f "$build_dir/build.ninja" ] || "$repo/tools/build.sh" >/dev/null
cmake --build "$build_dir" --target witmqd witmq_cluster_tests witmq-history-check >&2
export WITMQ_CHAOS_SECONDS=$((minutes * 60))
export WITMQ_BUILD_DIR=$build_dir
exec "$build_dir/tests/cluster/witmq_cluster_tests" --gtest_filter='ChaosTest.RandomFaultsUnderLoad'
