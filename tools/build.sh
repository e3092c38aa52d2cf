#!/usr/bin/env bash
# Configures and builds witmq. Usage: tools/build.sh [--sanitize] [extra cmake -D options...]
# Builds into build/ (or build-asan/ with --sanitize).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/bootstrap.sh

build_dir=build
cmake_args=(-DCMAKE_BUILD_TYPE=Release)
if [ "${1:-}" = "--sanitize" ]; then
  shift
  build_dir=build-asan
  cmake_args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DWITMQ_SANITIZE=ON)
fi

cmake -S . -B "$build_dir" -G Ninja "${cmake_args[@]}" "$@" >/dev/null
# Build output goes to stderr: callers read the build directory from stdout.
cmake --build "$build_dir" -j "$(nproc)" >&2
echo "$build_dir"
