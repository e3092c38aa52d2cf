#!/usr/bin/env bash
# Configures and builds witmq. Usage: tools/build.sh [--sanitize | --tsan] [extra cmake -D options...]
# Builds into build/ (or build-asan/ with --sanitize, build-tsan/ with --tsan).
#   WITMQ_BUILD_TARGETS="a b": build only these targets (default: everything).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/bootstrap.sh

build_dir=build
cmake_args=(-DCMAKE_BUILD_TYPE=Release)
case "${1:-}" in
  --sanitize)
    shift
    build_dir=build-asan
    cmake_args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DWITMQ_SANITIZE=ON)
    ;;
  --tsan)
    shift
    build_dir=build-tsan
    cmake_args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DWITMQ_TSAN=ON)
    ;;
esac

cmake -S . -B "$build_dir" -G Ninja "${cmake_args[@]}" "$@" >/dev/null
targets=()
for t in ${WITMQ_BUILD_TARGETS:-}; do targets+=(--target "$t"); done
# Build output goes to stderr: callers read the build directory from stdout.
cmake --build "$build_dir" -j "$(nproc)" "${targets[@]}" >&2
echo "$build_dir"
