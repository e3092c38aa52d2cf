#!/usr/bin/env bash
# Builds the libFuzzer targets of fuzz/ with clang into build-fuzz/ and runs them (docs/FUZZING.md).
#   tools/fuzz.sh --build               build them and write the generated seeds and dictionaries
#   tools/fuzz.sh --smoke               build, then run every target for a bounded number of runs
#                                       over its seeds; fails on any crash or sanitizer report
#                                       (the test suite runs this as witmq_fuzz_smoke)
#   tools/fuzz.sh TARGET [ARGS...]      build, then fuzz TARGET (frame, config, cloudevents, peer, http) with
#                                       its seeds and dictionary until stopped, or as ARGS say
#                                       (e.g. -max_total_time=3600 -jobs=4); new inputs are kept
#                                       in build-fuzz/corpus/TARGET/, crashes in
#                                       build-fuzz/artifacts/
# Environment: WITMQ_FUZZ_BUILD_DIR (default build-fuzz), WITMQ_FUZZ_SMOKE_SCALE (multiplies the
# smoke runs' counts, default 1).
# Needs clang++ and libclang_rt.fuzzer (Debian: clang, libclang-rt-14-dev; tools/bootstrap.sh
# installs them). Without them this fails: it never skips.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
build_dir=${WITMQ_FUZZ_BUILD_DIR:-$repo/build-fuzz}
targets=(frame config cloudevents peer records http)

die() { echo "fuzz: $*" >&2; exit 1; }

build() {
  command -v clang++ >/dev/null || die "clang++ is not installed (tools/bootstrap.sh installs clang)"
  local runtime
  runtime=$(clang++ -print-file-name=libclang_rt.fuzzer-x86_64.a)
  [ -f "$runtime" ] || die "libFuzzer's runtime is missing (tools/bootstrap.sh installs libclang-rt-14-dev)"
  local start=$SECONDS
  if [ ! -f "$build_dir/build.ninja" ]; then
    CC=clang CXX=clang++ cmake -S "$repo/fuzz" -B "$build_dir" -G Ninja >/dev/null
  fi
  cmake --build "$build_dir" -j "$(nproc)" >&2
  rm -rf "$build_dir/seeds"
  "$build_dir/witmq_fuzz_seeds" "$build_dir/seeds"
  echo "fuzz: built in $((SECONDS - start)) s" >&2
}

# The corpus directories and options of one target; the first directory is the one libFuzzer
# adds new inputs to.
target_args() {  # target_args TARGET WORK_DIR
  local seeds=$build_dir/seeds committed=$repo/fuzz/corpus
  case $1 in
    frame) echo "-dict=$seeds/frames.dict $2 $seeds/frames" ;;
    config) echo "-dict=$seeds/config.dict $2 $seeds/config $repo/config $committed/config" ;;
    cloudevents) echo "$2 $committed/cloudevents" ;;
    peer) echo "$2 $committed/peer" ;;
    records) echo "$2 $committed/records" ;;
    http) echo "-max_len=65536 $2 $committed/http" ;;
    *) die "unknown target '$1' (targets: ${targets[*]})" ;;
  esac
}

# Runs for the smoke test: each about 20-40 s on two cores, capped at 45 s on a busy machine (the
# six together stay within 3 min); one input that runs over 20 s fails the run (a hang), rather
# than the suite's timeout.
smoke_runs() {
  local scale=${WITMQ_FUZZ_SMOKE_SCALE:-1}
  case $1 in
    frame) echo $((200000 * scale)) ;;
    config) echo $((120000 * scale)) ;;
    cloudevents) echo $((200000 * scale)) ;;
    peer) echo $((200000 * scale)) ;;
    records) echo $((200000 * scale)) ;;
    http) echo $((4000 * scale)) ;;
  esac
}

smoke() {
  build
  smoke_work=$(mktemp -d)
  trap 'rm -rf "$smoke_work"' EXIT
  local work=$smoke_work
  mkdir -p "$build_dir/artifacts"
  local failed=()
  for t in "${targets[@]}"; do
    mkdir -p "$work/$t"
    local start=$SECONDS runs
    runs=$(smoke_runs "$t")
    # A target that does not end (a harness that hangs once its runs are done, as it exits) is
    # stopped well before the suite's timeout, and counts as failed.
    local status=0
    # shellcheck disable=SC2046 # target_args is a word list
    timeout -k 10 120 "$build_dir/${t}_fuzzer" -runs="$runs" -max_total_time=45 -timeout=20 \
      -print_final_stats=1 -artifact_prefix="$build_dir/artifacts/$t-" \
      $(target_args "$t" "$work/$t") >"$work/$t.log" 2>&1 || status=$?
    [ $status -ne 124 ] || echo "fuzz: $t: still running 120 s after it started" >>"$work/$t.log"
    if [ $status -eq 0 ]; then
      local execs cov
      execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$t.log")
      cov=$(grep -o 'cov: [0-9]*' "$work/$t.log" | tail -1)
      echo "fuzz: $t: ${execs:-?} runs in $((SECONDS - start)) s, ${cov:-cov: ?}, no crash" >&2
    else
      tail -60 "$work/$t.log" >&2
      echo "fuzz: $t: FAILED (the input is in $build_dir/artifacts/, docs/FUZZING.md says what next)" >&2
      failed+=("$t")
    fi
  done
  [ ${#failed[@]} -eq 0 ] || die "crashed: ${failed[*]}"
}

case ${1:-} in
  --build) build ;;
  --smoke) smoke ;;
  frame | config | cloudevents | peer | http)
    target=$1
    shift
    build
    mkdir -p "$build_dir/corpus/$target" "$build_dir/artifacts"
    # shellcheck disable=SC2046
    exec "$build_dir/${target}_fuzzer" -artifact_prefix="$build_dir/artifacts/$target-" "$@" \
      $(target_args "$target" "$build_dir/corpus/$target")
    ;;
  *)
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
