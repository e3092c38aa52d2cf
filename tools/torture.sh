#!/usr/bin/env bash
# Runs the randomized concurrency test against the real witmqd (docs/TORTURE.md) for longer than
# the suite's short run.
#   tools/torture.sh --minutes N [--seed S] [--clients C] [--margin-ms M] [--ping-bound-ms P]
# Builds witmqd and the daemon tests in build/ (or $WITMQ_BUILD_DIR) first. Prints the seed; a
# failure is repeated with --seed S. Exits 0 when every invariant held, 1 otherwise.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
build_dir=${WITMQ_BUILD_DIR:-$repo/build}
minutes=5

usage() { sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//' >&2; exit "$1"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) minutes=${2:?}; shift 2 ;;
    --seed) export WITMQ_TORTURE_SEED=${2:?}; shift 2 ;;
    --clients) export WITMQ_TORTURE_CLIENTS=${2:?}; shift 2 ;;
    --margin-ms) export WITMQ_TORTURE_MARGIN_MS=${2:?}; shift 2 ;;
    --ping-bound-ms) export WITMQ_TORTURE_PING_BOUND_MS=${2:?}; shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "torture: unknown argument '$1'" >&2; usage 2 ;;
  esac
done
case "$minutes" in
  ''|*[!0-9]*|0) echo "torture: --minutes needs a whole number of minutes above 0, not '$minutes'" >&2; exit 2 ;;
esac

[ -f "$build_dir/build.ninja" ] || "$repo/tools/build.sh" >/dev/null
cmake --build "$build_dir" --target witmqd witmq_daemon_tests >&2
export WITMQ_TORTURE_SECONDS=$((minutes * 60))
export WITMQ_BUILD_DIR=$build_dir
exec "$build_dir/tests/daemon/witmq_daemon_tests" \
  --gtest_filter='TortureTest.RandomOperationsAgainstTheRealDaemon'
