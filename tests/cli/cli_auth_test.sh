#!/usr/bin/env bash
# The witmq command-line client against a real witmqd with anonymous access off
# (docs/SECURITY.md): --token and $WITMQ_TOKEN authenticate, a missing or wrong token and a
# missing grant are errors with the server's reason, and the token appears in no log.
#
# Usage: cli_auth_test.sh WITMQ WITMQD. Exits 0 when every check passed, 1 otherwise, 77 (skipped)
# when the daemon binary is missing.
set -u

WITMQ=${1:?usage: cli_auth_test.sh WITMQ WITMQD}
WITMQD=${2:?usage: cli_auth_test.sh WITMQ WITMQD}
if [[ ! -x "$WITMQD" ]]; then
  echo "SKIP: witmqd not built at $WITMQD"
  exit 77
fi

TEST_NAME=cli-auth-test
# shellcheck source=testlib.sh
source "$(dirname "$0")/testlib.sh"

# Two identities made the way docs/SECURITY.md says: witmqd --generate-token.
read_token() { sed -n "s/^$1: *//p" "$2"; }
"$WITMQD" --generate-token >"$TMP/app"
"$WITMQD" --generate-token >"$TMP/ops"
APP_TOKEN=$(read_token token "$TMP/app")
OPS_TOKEN=$(read_token token "$TMP/ops")
HASHED=$(printf '%s\n' "$APP_TOKEN" | "$WITMQD" --hash-token)
CHECKS=$((CHECKS + 1))
[[ "$HASHED" == "$(read_token token-sha256 "$TMP/app")" ]] || fail "--hash-token disagrees with --generate-token"
cat >"$TMP/witmqd.json" <<JSON
{"log-level": "debug",
 "anonymous": {"enabled": false},
 "identities": [
   {"name": "app", "token-sha256": "$(read_token token-sha256 "$TMP/app")",
    "send": ["jobs.*"], "receive": ["jobs.*"]},
   {"name": "ops", "token-sha256": "$(read_token token-sha256 "$TMP/ops")",
    "manage": ["*"], "monitor": true}]}
JSON

"$WITMQD" --config "$TMP/witmqd.json" --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
  --data-dir "$TMP/data" >"$TMP/daemon.out" 2>"$TMP/daemon.err" &
DAEMON_PID=$!
wait_for_ports
export WITMQ_SERVER=127.0.0.1:$PORT
unset WITMQ_TOKEN

run "no token" 1 "$WITMQ" send jobs.a x \
  && contains "no token" "$ERR" "a token is required: anonymous access is off"
run "wrong token" 1 "$WITMQ" --token witmq_wrong send jobs.a x \
  && contains "wrong token" "$ERR" "the token matches no identity"
run "send with --token" 0 "$WITMQ" --token "$APP_TOKEN" send jobs.a hello
run "receive with WITMQ_TOKEN" 0 env WITMQ_TOKEN="$APP_TOKEN" "$WITMQ" receive jobs.a --complete --timeout 5000 \
  && contains "receive with WITMQ_TOKEN" "$OUT" "hello"
run "send outside the grants" 1 "$WITMQ" --token "$APP_TOKEN" send billing x \
  && contains "send outside the grants" "$ERR" "identity 'app' may not send to channel 'billing'"
run "declare without manage" 1 "$WITMQ" --token "$APP_TOKEN" declare jobs.b --kind queue \
  && contains "declare without manage" "$ERR" "may not manage channel 'jobs.b'"
run "declare with manage" 0 "$WITMQ" --token "$OPS_TOKEN" declare jobs.b --kind queue
run "channels without monitor" 0 "$WITMQ" --token "$APP_TOKEN" channels \
  && contains "channels without monitor" "$OUT" "jobs.a"

kill -TERM "$DAEMON_PID"
wait "$DAEMON_PID"
DAEMON_PID=""
CHECKS=$((CHECKS + 1))
if grep -q -F -e "$APP_TOKEN" -e "$OPS_TOKEN" "$TMP/daemon.err" "$TMP/daemon.out"; then
  fail "a token appears in the daemon's log"
fi

echo "$CHECKS checks, $FAILURES failed"
[[ $FAILURES -eq 0 ]]
