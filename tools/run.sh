#!/usr/bin/env bash
# Builds witmq and runs the daemon in the foreground with the embedded default configuration
# (127.0.0.1, data in ./data). Extra arguments go to witmqd, e.g. tools/run.sh --listen 127.0.0.1:7400
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=$(tools/build.sh)
if [ -x "$build_dir/src/daemon/witmqd" ]; then
  exec "$build_dir/src/daemon/witmqd" "$@"
fi
# Until the daemon lands, the engine's benchmark is what there is to run.
exec "$build_dir/bench/witmq_engine_bench" --benchmark_min_time=0.2 "$@"
