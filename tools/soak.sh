#!/usr/bin/env bash
# A soak of one witmqd under mixed load: point-to-point with completes, publish-subscribe, a guest,
# HTTP scrapes and clients connecting and leaving. Samples resident memory, open descriptors, the
# data directory's size and send latency every few seconds, and fails if any trends upward after
# the warm-up (tools/soak.py says how). docs/PERFORMANCE.md ("Soak") has a 30-minute run.
#
#   tools/soak.sh --minutes N [--build DIR] [--interval S] [--csv FILE] [soak.py options...]
#
# DIR is the build directory (default: build); witmqd and the echo guest are taken from it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
build="$here/../build"
minutes=""
args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --minutes) minutes="$2"; shift 2 ;;
    --build) build="$2"; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
if [[ -z "$minutes" ]]; then
  echo "usage: tools/soak.sh --minutes N [--build DIR] [--interval S] [--csv FILE]" >&2
  exit 2
fi
witmqd="$build/src/daemon/witmqd"
guest="$build/tests/guest/wasm/example_echo.wasm"
for f in "$witmqd" "$guest"; do
  [[ -f "$f" ]] || { echo "soak: $f is missing; build first (tools/build.sh)" >&2; exit 2; }
done
seconds="$(python3 -c "print(float('$minutes') * 60)")"
exec python3 "$here/soak.py" --witmqd "$witmqd" --guest "$guest" --seconds "$seconds" "${args[@]}"
