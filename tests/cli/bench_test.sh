#!/usr/bin/env bash
# Shell-level test of witmq-bench against a real witmqd on 127.0.0.1 (an ephemeral port, a
# temporary data directory): the open loop (--rate), many channels (--channels) and their
# clean-up, and the usage errors of both (docs/CLI.md). Loads are tiny: this checks behaviour,
# not speed.
#
# Usage: bench_test.sh WITMQ WITMQ_BENCH WITMQD. Exits 0 when every check passed, 1 otherwise,
# 77 (skipped) when the daemon binary is missing.
set -u

WITMQ=${1:?usage: bench_test.sh WITMQ WITMQ_BENCH WITMQD}
BENCH=${2:?usage: bench_test.sh WITMQ WITMQ_BENCH WITMQD}
WITMQD=${3:?usage: bench_test.sh WITMQ WITMQ_BENCH WITMQD}
if [[ ! -x "$WITMQD" ]]; then
  echo "SKIP: witmqd not built at $WITMQD"
  exit 77
fi

TEST_NAME=bench-test
# shellcheck source=testlib.sh
source "$(dirname "$0")/testlib.sh"

"$WITMQD" --listen 127.0.0.1:0 --http-listen "" --data-dir "$TMP/data" >"$TMP/daemon.out" 2>"$TMP/daemon.err" &
DAEMON_PID=$!
wait_for_ports
export WITMQ_SERVER=127.0.0.1:$PORT

# ---- usage errors (exit 2) ----------------------------------------------------------------------
run "rate 0" 2 "$BENCH" --rate 0 \
  && equals "rate 0" "$ERR" "witmq-bench: --rate: '0' is not a whole number from 1 to 100000000"
run "channels without consumers for each" 2 "$BENCH" --channels 3 \
  && contains "channels without consumers for each" "$ERR" "--consumers 1 is not 0 or a multiple of --channels 3"

# ---- open loop ----------------------------------------------------------------------------------
# 300 messages at 3,000/s from 2 producers: about 0.1 s; every message arrives and is completed.
run "rate" 0 "$BENCH" --rate 3000 --messages 300 --producers 2 --complete --json
contains "rate: ok" "$OUT" '"ok": true'
contains "rate: config" "$OUT" '"rate": 3000'
contains "rate: all consumed" "$OUT" '"expected": 300'
contains "rate: completed" "$OUT" '"completed": 300'
contains "rate: lag reported" "$OUT" '"max_lag_us"'
contains "rate: confirm latency" "$OUT" '"confirm_latency_us"'
run "rate, text" 0 "$BENCH" --rate 2000 --duration 0.1 --batch 10
contains "rate, text: header" "$OUT" "open loop at 2000 msgs/s"
contains "rate, text: schedule line" "$OUT" "schedule: 2000 msgs/s asked"
contains "rate, text: latency origin" "$OUT" "from each message's intended send time"

# ---- --plot -------------------------------------------------------------------------------------
# The SVG read back: well-formed, both charts, the same percentiles as the JSON report of the run
# and throughput lines that add up to the messages moved.
run "plot" 0 "$BENCH" --messages 20000 --batch 50 --complete --json --plot "$TMP/plot.svg"
printf '%s\n' "$OUT" >"$TMP/plot.json"
CHECKS=$((CHECKS + 1))
if ! python3 "$(dirname "$0")/check_bench_plot.py" "$TMP/plot.svg" "$TMP/plot.json"; then
  fail "plot: the SVG does not match the run"
fi
run "plot, open loop" 0 "$BENCH" --rate 5000 --duration 0.5 --batch 10 --json --plot "$TMP/plot2.svg"
printf '%s\n' "$OUT" >"$TMP/plot2.json"
CHECKS=$((CHECKS + 1))
if ! python3 "$(dirname "$0")/check_bench_plot.py" "$TMP/plot2.svg" "$TMP/plot2.json"; then
  fail "plot, open loop: the SVG does not match the run"
fi
run "plot, unwritable" 1 "$BENCH" --messages 100 --plot "$TMP/no/such/dir/plot.svg" \
  && contains "plot, unwritable" "$ERR" "--plot: cannot write '$TMP/no/such/dir/plot.svg'"
run "plot, empty name" 2 "$BENCH" --plot "" \
  && contains "plot, empty name" "$ERR" "--plot: the file name is empty"

# ---- many channels ------------------------------------------------------------------------------
# Its own channels are deleted at the end; named ones (--channel NAME) are kept as NAME-0 ...
run "channels" 0 "$BENCH" --channels 5 --consumers 5 --producers 2 --messages 500 --batch 10 --complete
contains "channels: header" "$OUT" "and 4 more"
contains "channels: completed" "$OUT" "completed: 500"
run "channels listed" 0 "$WITMQ" channels
if [[ "$OUT" == *witmq-bench-* ]]; then fail "channels: left behind: $OUT"; fi
CHECKS=$((CHECKS + 1))
run "channels, pub-sub" 0 "$BENCH" --channel fan --channels 2 --consumers 4 --messages 100 \
  --kind publish-subscribe --batch 10 --json
contains "channels, pub-sub: every subscriber" "$OUT" '"expected": 200'
contains "channels, pub-sub: ok" "$OUT" '"ok": true'
run "named channels kept" 0 "$WITMQ" channels
contains "named channels kept: 0" "$OUT" "fan-0"
contains "named channels kept: 1" "$OUT" "fan-1"

# ---- a setup that fails midway leaves no channel behind --------------------------------------
kill -TERM "$DAEMON_PID"
wait "$DAEMON_PID"
"$WITMQD" --listen 127.0.0.1:0 --http-listen "" --data-dir "$TMP/data2" --set max-connections=6 \
  >"$TMP/daemon.out" 2>"$TMP/daemon.err" &
DAEMON_PID=$!
wait_for_ports
export WITMQ_SERVER=127.0.0.1:$PORT
run "too many connections" 1 "$BENCH" --channels 8 --consumers 8 --messages 10 \
  && contains "too many connections" "$ERR" "resource-exhausted"
run "no channel left after a failed setup" 0 "$WITMQ" channels --json \
  && equals "no channel left after a failed setup" "$OUT" "[]"

echo "$CHECKS checks, $FAILURES failed"
[[ $FAILURES -eq 0 ]]
