#!/usr/bin/env bash
# Builds witmq and runs every test. Usage: tools/test.sh [--sanitize | --tsan] [extra cmake -D options...]
#   --sanitize  build with AddressSanitizer + UndefinedBehaviorSanitizer into build-asan/
#   --tsan      build with ThreadSanitizer into build-tsan/ and run the broker and storage tests
#               (the layers where threads share state; a report fails the run)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--tsan" ]; then
  build_dir=$(WITMQ_BUILD_TARGETS="witmq_broker_tests witmq_storage_tests" tools/build.sh "$@")
  export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}
  status=0
  for t in witmq_storage_tests witmq_broker_tests; do
    echo "== $t (ThreadSanitizer)"
    "$build_dir/tests/$t" || status=1
  done
  exit $status
fi
build_dir=$(tools/build.sh "$@")
cd "$build_dir"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
ctest --output-on-failure -j "$(nproc)" --timeout 600
