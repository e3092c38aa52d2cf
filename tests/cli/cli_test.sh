#!/usr/bin/env bash
# Shell-level test of the witmq command-line client against a real witmqd on 127.0.0.1 (an
# ephemeral port, a temporary data directory): sending from arguments and stdin, receiving with
# settlement, the admin commands, and the exit codes scripts rely on (docs/CLI.md).
#
# Usage: cli_test.sh WITMQ WITMQD. Exits 0 when every check passed, 1 otherwise, 77 (skipped) when
# the daemon binary is missing.
set -u

WITMQ=${1:?usage: cli_test.sh WITMQ WITMQD}
WITMQD=${2:?usage: cli_test.sh WITMQ WITMQD}
if [[ ! -x "$WITMQD" ]]; then
  echo "SKIP: witmqd not built at $WITMQD"
  exit 77
fi

TEST_NAME=cli-test
# shellcheck source=testlib.sh
source "$(dirname "$0")/testlib.sh"

# ---- start the daemon ---------------------------------------------------------------------------
"$WITMQD" --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --data-dir "$TMP/data" >"$TMP/daemon.out" 2>"$TMP/daemon.err" &
DAEMON_PID=$!
wait_for_ports
export WITMQ_SERVER=127.0.0.1:$PORT

# ---- help and usage errors (exit 2) ------------------------------------------------------------
run "help" 0 "$WITMQ" --help && contains "help" "$OUT" "Exit codes"
run "send --help" 0 "$WITMQ" send --help && contains "send --help" "$OUT" "--count"
run "unknown command" 2 "$WITMQ" frobnicate && contains "unknown command" "$ERR" "unknown command 'frobnicate'"
run "missing channel" 2 "$WITMQ" send && contains "missing channel" "$ERR" "missing CHANNEL"
run "bad option value" 2 "$WITMQ" receive q --max zero && contains "bad option" "$ERR" "--max"
run "auto settlement with --complete" 2 "$WITMQ" --server 127.0.0.1:1 receive q --ext settlement=auto --complete \
  && contains "auto settlement with --complete" "$ERR" "excludes --complete"
run "ping" 0 "$WITMQ" ping && contains "ping" "$OUT" "pong from witmqd/"

# ---- send: argument, stdin, --count, --lines, --meta -------------------------------------------
printf 'hello from stdin' >"$TMP/in1"
STDIN="$TMP/in1" run "send stdin" 0 "$WITMQ" send q1 - && equals "send stdin" "$OUT" "sent 1 message to q1"
run "send --count" 0 "$WITMQ" send q1 world --count 3 --meta k=v --format cloudevents \
  && equals "send --count" "$OUT" "sent 3 messages to q1"
run "send --json" 0 "$WITMQ" send json-q x --count 2 --json && equals "send --json" "$OUT" '{"channel":"json-q","sent":2}'
run "declare --json" 0 "$WITMQ" declare json-q --kind point-to-point --json \
  && equals "declare --json" "$OUT" '{"declared":"json-q"}'
run "delete --json" 0 "$WITMQ" --json delete json-q && equals "delete --json" "$OUT" '{"deleted":"json-q"}'
run "stats after send" 0 "$WITMQ" stats q1 && contains "stats after send" "$OUT" "depth: 4"
run "channels" 0 "$WITMQ" channels && contains "channels" "$OUT" "q1"
run "channels --json" 0 "$WITMQ" channels --json && contains "channels --json" "$OUT" '"name":"q1"'

# ---- receive with --complete --------------------------------------------------------------------
run "receive first" 0 "$WITMQ" receive q1 --complete --timeout 5000
contains "receive first data" "$OUT" "hello from stdin"
contains "receive first header" "$OUT" "--- q1/"
run "receive 3 data-only" 0 "$WITMQ" receive q1 --max 3 --complete --data-only --timeout 5000
equals "receive 3 data-only" "$OUT" $'world\nworld\nworld'
run "depth after completes" 0 "$WITMQ" stats q1 --json && contains "depth after completes" "$OUT" '"depth":0'

printf 'a\nb\nc\n' >"$TMP/lines"
STDIN="$TMP/lines" run "send --lines" 0 "$WITMQ" send q2 --lines --meta src=test \
  && equals "send --lines" "$OUT" "sent 3 messages to q2"
run "receive --json" 0 "$WITMQ" receive q2 --max 3 --complete --json --timeout 5000
equals "receive --json lines" "$(printf '%s\n' "$OUT" | wc -l)" "3"
contains "receive --json data" "$OUT" '"data":"a"'
contains "receive --json metadata" "$OUT" '"src":"test"'
contains "receive --json attempt" "$OUT" '"attempt":1'

# ---- receive never acquires more than --max, even with a larger --ext batch-size ----------------
run "send for batch-size" 0 "$WITMQ" send bs m --count 3
run "receive batch-size above --max" 0 "$WITMQ" receive bs --ext batch-size=3 --max 1 --complete --data-only \
  && equals "receive batch-size above --max" "$OUT" "m"
run "stats after batch-size" 0 "$WITMQ" stats bs --json && contains "stats after batch-size" "$OUT" '"depth":2'
# The two left were never acquired, so they come as first attempts.
run "receive rest after batch-size" 0 "$WITMQ" receive bs --max 2 --complete --json --timeout 5000
equals "rest after batch-size: first attempts" "$(grep -c '"attempt":1,' <<<"$OUT")" "2"

# ---- nothing within the timeout (exit 4) --------------------------------------------------------
run "receive timeout" 4 "$WITMQ" receive q1 --timeout 200 && contains "receive timeout" "$ERR" "no message on 'q1' within 200 ms"

# ---- refused requests (exit 1) ------------------------------------------------------------------
run "declare kind change" 1 "$WITMQ" declare q1 --kind publish-subscribe \
  && contains "declare kind change" "$ERR" "already-exists"
run "declare bad setting" 1 "$WITMQ" declare q3 --kind point-to-point --set max-deliveries=lots \
  && contains "declare bad setting" "$ERR" "max-deliveries"
run "stats unknown channel" 1 "$WITMQ" stats no-such-channel && contains "stats unknown channel" "$ERR" "not-found"
run "delete unknown channel" 1 "$WITMQ" delete no-such-channel && contains "delete unknown channel" "$ERR" "not-found"
run "receive bad extension" 1 "$WITMQ" receive q1 --ext bogus=1 --timeout 100 \
  && contains "receive bad extension" "$ERR" "bogus"

# ---- declare, dead letters, replay, purge, delete -----------------------------------------------
run "declare" 0 "$WITMQ" declare dl --kind point-to-point --set abandon-policy=dead-letter \
  && equals "declare" "$OUT" "declared dl"
run "declare --kind queue" 0 "$WITMQ" declare alias-q --kind queue \
  && run "stats alias queue" 0 "$WITMQ" stats alias-q && contains "stats alias queue" "$OUT" "kind: point-to-point"
run "declare --kind topic" 0 "$WITMQ" declare alias-t --kind topic \
  && run "stats alias topic" 0 "$WITMQ" stats alias-t && contains "stats alias topic" "$OUT" "kind: publish-subscribe"
run "send poison" 0 "$WITMQ" send dl poison
run "receive --abandon" 0 "$WITMQ" receive dl --abandon --data-only --timeout 5000 \
  && equals "receive --abandon" "$OUT" "poison"
DEAD=""
for _ in $(seq 1 50); do
  "$WITMQ" dead-letters dl --data-only >"$TMP/dead" 2>"$TMP/dead.err"
  DEAD=$(cat "$TMP/dead")
  [[ -n "$DEAD" ]] && break
  sleep 0.1
done
equals "dead-letters" "$DEAD" "poison"
run "dead-letters text" 0 "$WITMQ" dead-letters dl && contains "dead-letters text" "$OUT" "witmq-dlq-source: dl"
run "replay" 0 "$WITMQ" replay dl && equals "replay" "$OUT" "moved 1 message from dl.dlq"
run "receive replayed" 0 "$WITMQ" receive dl --complete --data-only --timeout 5000 \
  && equals "receive replayed" "$OUT" "poison"
# A dead-letter channel is created with its first dead letter: before that it is empty for both
# dead-letters and replay. A source channel that does not exist is not-found for both.
run "send fresh" 0 "$WITMQ" send fresh x
run "dead-letters never written" 0 "$WITMQ" dead-letters fresh && equals "dead-letters never written" "$OUT" ""
run "dead-letters never written, named" 0 "$WITMQ" dead-letters fresh.dlq \
  && equals "dead-letters never written, named" "$OUT" ""
run "replay never written" 0 "$WITMQ" replay fresh && equals "replay never written" "$OUT" "moved 0 messages from fresh.dlq"
run "replay never written, named" 0 "$WITMQ" replay fresh.dlq --json \
  && equals "replay never written, named" "$OUT" '{"channel":"fresh.dlq","moved":0}'
for cmd in dead-letters replay; do
  run "$cmd missing source" 1 "$WITMQ" $cmd nowhere \
    && equals "$cmd missing source" "$ERR" "witmq $cmd: channel-stats: not-found: channel 'nowhere' does not exist"
  run "$cmd missing source, named" 1 "$WITMQ" $cmd nowhere.dlq \
    && equals "$cmd missing source, named" "$ERR" "witmq $cmd: channel-stats: not-found: channel 'nowhere.dlq' does not exist"
done
run "send for purge" 0 "$WITMQ" send dl x --count 5
run "purge" 0 "$WITMQ" purge dl && equals "purge" "$OUT" "purged 5 messages from dl"
run "receive after purge" 4 "$WITMQ" receive dl --timeout 100
run "delete" 0 "$WITMQ" delete dl && equals "delete" "$OUT" "deleted dl"
run "stats deleted" 1 "$WITMQ" stats dl

# ---- request and respond ------------------------------------------------------------------------
run "declare svc" 0 "$WITMQ" declare svc --kind point-to-point
"$WITMQ" respond svc --exec 'tr a-z A-Z' --max 1 >"$TMP/respond.out" 2>"$TMP/respond.err" &
RESPONDER=$!
run "request, exec responder" 0 "$WITMQ" request svc hello --timeout 10000 --data-only \
  && equals "request, exec responder" "$OUT" "HELLO"
wait "$RESPONDER"
equals "respond --max 1 exit code" "$?" "0"
equals "respond summary" "$(cat "$TMP/respond.out")" "answered 1 request on svc"
"$WITMQ" respond svc --echo --max 1 >/dev/null 2>"$TMP/respond.err" &
RESPONDER=$!
STDIN="$TMP/in1" run "request from stdin, echo responder" 0 "$WITMQ" request svc - --timeout 10000 --json \
  && contains "request from stdin, echo responder" "$OUT" '"data":"hello from stdin"' \
  && contains "reply carries the correlation id" "$OUT" 'witmq-correlation-id'
wait "$RESPONDER"
run "request, no responder" 4 "$WITMQ" request nobody-svc x --timeout 200 \
  && equals "request, no responder" "$ERR" "witmq request: no reply on 'nobody-svc' within 200 ms"
"$WITMQ" respond svc --exec 'cat >/dev/null; echo broken >&2; exit 3' >/dev/null 2>"$TMP/respond.err" &
RESPONDER=$!
run "request, failing responder" 4 "$WITMQ" request svc x --timeout 500
kill "$RESPONDER"
wait "$RESPONDER" 2>/dev/null
contains "failing responder abandons" "$(cat "$TMP/respond.err")" "exited with status 3; the request is abandoned"
run "respond needs --exec or --echo" 2 "$WITMQ" respond svc \
  && contains "respond needs --exec or --echo" "$ERR" "give one of --exec CMD and --echo"
run "request --replies 0" 2 "$WITMQ" request svc x --replies 0 && contains "request --replies 0" "$ERR" "--replies"
run "request --timeout 0" 2 "$WITMQ" request svc x --timeout 0 && contains "request --timeout 0" "$ERR" "--timeout"
# Scatter-gather: two responders on a publish-subscribe channel, --replies 2.
run "declare fan" 0 "$WITMQ" declare fan --kind publish-subscribe
"$WITMQ" respond fan --echo --max 1 >/dev/null 2>&1 &
R1=$!
"$WITMQ" respond fan --exec 'sed s/^/2:/' --max 1 >/dev/null 2>&1 &
R2=$!
for _ in $(seq 1 100); do
  [[ $("$WITMQ" stats fan --json | grep -o '"durable":false' | wc -l) -ge 2 ]] && break
  sleep 0.1
done
run "request --replies 2" 0 "$WITMQ" request fan hi --replies 2 --timeout 10000 --data-only \
  && equals "request --replies 2" "$(sort <<<"$OUT")" $'2:hi\nhi'
wait "$R1" "$R2"

# ---- server down (exit 3) -----------------------------------------------------------------------
kill -TERM "$DAEMON_PID"
wait "$DAEMON_PID"
DAEMON_RC=$?
DAEMON_PID=""
equals "witmqd exit code after SIGTERM" "$DAEMON_RC" "0"
run "send, server down" 3 "$WITMQ" send q1 late && contains "send, server down" "$ERR" "cannot connect to 127.0.0.1:$PORT"
run "receive, server down" 3 "$WITMQ" --connect-timeout 500 receive q1 --timeout 100

echo "$CHECKS checks, $FAILURES failed"
[[ $FAILURES -eq 0 ]]
