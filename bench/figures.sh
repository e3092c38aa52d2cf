#!/usr/bin/env bash
# Produces the figures of docs/PERFORMANCE.md from a Release build: the in-process benchmarks
# (storage, engine, guest) and witmq-bench against a witmqd started here on 127.0.0.1 with a
# temporary data directory (stopped and removed at the end).
#
#   bench/figures.sh [BUILD_DIR]        (default: build)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
min_time=${WITMQ_BENCH_MIN_TIME:-0.5}

echo "== in-process: storage appends, 128 B and 1 KiB, batch 100"
"$build/bench/witmq_storage_bench" --benchmark_min_time="$min_time" \
  --benchmark_filter='BM_Append/.*/batch:100/real_time/threads:1'
echo "== in-process: broker send and acquire+complete"
"$build/bench/witmq_engine_bench" --benchmark_min_time="$min_time" --benchmark_filter='batch:100/'
echo "== in-process: a trivial guest draining 20,000 x 128 B"
"$build/bench/witmq_guest_bench"

data=$(mktemp -d)
out=$(mktemp)
"$build/src/daemon/witmqd" --listen 127.0.0.1:0 --http-listen "" --data-dir "$data" >"$out" 2>/dev/null &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$data" "$out"' EXIT
for _ in $(seq 300); do grep -q '^listening on' "$out" && break; sleep 0.1; done
server=$(sed -n 's/^listening on //p' "$out" | head -n 1)
bench=("$build/src/cli/witmq-bench" --server "$server")

for size in 128 1024; do
  echo "== end to end: point-to-point, durability group, complete each, $size B"
  "${bench[@]}" --messages 1000000 --size "$size" --durability group --complete
done
for run in "128 2000000" "1024 500000"; do
  read -r size count <<<"$run"
  echo "== end to end: publish-subscribe, durability none, streaming, $size B"
  "${bench[@]}" --messages "$count" --size "$size" --kind publish-subscribe --durability none \
    --consume-mode stream --batch 1000 --credit 10000 --receive-batch 5000
done
echo "== end to end: point-to-point, durability sync, complete each, 128 B"
"${bench[@]}" --messages 200000 --durability sync --complete
echo "== scale: point-to-point, group, complete each, 4 producers x 4 consumers, 1 KiB"
"${bench[@]}" --producers 4 --consumers 4 --size 1024 --messages 400000 --durability group --complete
echo "== scale: same, 64 KiB"
"${bench[@]}" --producers 4 --consumers 4 --size 65536 --messages 10000 --batch 10 \
  --receive-batch 100 --durability group --complete
echo "== scale: 1,000 channels, one consumer each, 4 producers, group, complete each, 128 B"
"${bench[@]}" --channels 1000 --consumers 1000 --producers 4 --messages 400000 --batch 10 \
  --pipeline 32 --durability group --complete
