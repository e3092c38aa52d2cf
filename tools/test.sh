#!/usr/bin/env bash
# Builds witmq and runs every test. Usage: tools/test.sh [--sanitize]
#   --sanitize  build with AddressSanitizer + UndefinedBehaviorSanitizer into build-asan/
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=$(tools/build.sh "$@")
cd "$build_dir"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
ctest --output-on-failure -j "$(nproc)" --timeout 600
