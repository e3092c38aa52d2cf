#!/usr/bin/env bash
# Shell-level test of the witmq command-line client over TLS against a real witmqd on 127.0.0.1
# (ephemeral ports, a temporary data directory) with certificates made here by the openssl
# command: --tls with --ca-file, a client certificate for tls-client-cert required, --insecure and
# its warning, and the failures scripts see (exit 3) for an unknown CA or TLS on the plain port.
#
# Usage: cli_tls_test.sh WITMQ WITMQD. Exits 0 when every check passed, 1 otherwise, 77 (skipped)
# when the daemon binary or the openssl command is missing.
set -u

WITMQ=$(readlink -f "${1:?usage: cli_tls_test.sh WITMQ WITMQD}")
WITMQD=$(readlink -f "${2:?usage: cli_tls_test.sh WITMQ WITMQD}")
if [[ ! -x "$WITMQD" ]]; then
  echo "SKIP: witmqd not built at $WITMQD"
  exit 77
fi
if ! command -v openssl >/dev/null; then
  echo "SKIP: no openssl command"
  exit 77
fi

TEST_NAME=cli-tls-test
# shellcheck source=testlib.sh
source "$(dirname "$0")/testlib.sh"

# ---- certificates: a CA, a server certificate for 127.0.0.1, a client certificate --------------
cd "$TMP" || exit 1
ossl() { openssl "$@" >>"$TMP/openssl.log" 2>&1 </dev/null || { echo "FAIL: openssl $*"; cat "$TMP/openssl.log"; exit 1; }; }
EC=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
ossl req -x509 "${EC[@]}" -days 2 -keyout ca.key -out ca.pem -subj "/CN=witmq cli test CA" \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
ossl req -x509 "${EC[@]}" -days 2 -keyout other-ca.key -out other-ca.pem -subj "/CN=other CA" \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
printf 'basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n' >server.ext
printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n' >client.ext
ossl req "${EC[@]}" -keyout server.key -out server.csr -subj "/CN=localhost"
ossl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -set_serial 1 -days 2 -extfile server.ext -out server.pem
ossl req "${EC[@]}" -keyout client.key -out client.csr -subj "/CN=cli-client"
ossl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -set_serial 2 -days 2 -extfile client.ext -out client.pem

# ---- the daemon: plain and TLS listeners, client certificates required on TLS -------------------
"$WITMQD" --listen 127.0.0.1:0 --http-listen "" --tls-listen 127.0.0.1:0 --data-dir "$TMP/data" \
  --set tls-cert-file="$TMP/server.pem" --set tls-key-file="$TMP/server.key" \
  --set tls-client-cert=optional --set tls-client-ca-file="$TMP/ca.pem" \
  >"$TMP/daemon.out" 2>"$TMP/daemon.err" &
DAEMON_PID=$!
wait_for_ports
if [[ -z "$TLS_PORT" ]]; then
  echo "FAIL: witmqd did not report its TLS port"; cat "$TMP/daemon.err"; exit 1
fi
TLS=(--server "127.0.0.1:$TLS_PORT" --tls --ca-file "$TMP/ca.pem")

run "send over tls" 0 "$WITMQ" "${TLS[@]}" send tq "hello over tls" \
  && contains "send over tls" "$OUT" "sent 1 message to tq"
run "receive over tls" 0 "$WITMQ" "${TLS[@]}" receive tq --complete --data-only --timeout 5000 \
  && contains "receive over tls" "$OUT" "hello over tls"
run "client certificate" 0 "$WITMQ" "${TLS[@]}" --cert-file "$TMP/client.pem" --key-file "$TMP/client.key" ping \
  && contains "client certificate" "$OUT" "pong"
# The plain listener serves the same channel.
run "send plain" 0 "$WITMQ" --server "127.0.0.1:$PORT" send tq "from plain"
run "options after the command" 0 "$WITMQ" receive tq --server "127.0.0.1:$TLS_PORT" --tls \
  --ca-file "$TMP/ca.pem" --complete --data-only --timeout 5000 \
  && contains "options after the command" "$OUT" "from plain"
run "insecure" 0 "$WITMQ" --server "127.0.0.1:$TLS_PORT" --tls --insecure ping \
  && contains "insecure warning" "$ERR" "warning: --insecure"
run "unknown CA" 3 "$WITMQ" --server "127.0.0.1:$TLS_PORT" --tls --ca-file "$TMP/other-ca.pem" ping \
  && contains "unknown CA" "$ERR" "certificate did not verify"
run "tls on the plain port" 3 "$WITMQ" --server "127.0.0.1:$PORT" --tls --ca-file "$TMP/ca.pem" --connect-timeout 3000 ping
run "missing CA file" 2 "$WITMQ" --server "127.0.0.1:$TLS_PORT" --tls --ca-file "$TMP/none.pem" ping \
  && contains "missing CA file" "$ERR" "cannot open it"
run "ca-file without tls" 2 "$WITMQ" --server "127.0.0.1:$TLS_PORT" --ca-file "$TMP/ca.pem" ping \
  && contains "ca-file without tls" "$ERR" "--ca-file needs --tls"
run "cert without key" 2 "$WITMQ" --tls --cert-file "$TMP/client.pem" ping \
  && contains "cert without key" "$ERR" "--key-file"
run "still serving" 0 "$WITMQ" "${TLS[@]}" ping

kill -TERM "$DAEMON_PID"
wait "$DAEMON_PID"
RC=$?
DAEMON_PID=""
CHECKS=$((CHECKS + 1))
[[ $RC -eq 0 ]] || fail "witmqd exited with $RC after SIGTERM: $(cat "$TMP/daemon.err")"

if [[ $FAILURES -ne 0 ]]; then
  echo "$FAILURES of $CHECKS checks failed"
  exit 1
fi
echo "all $CHECKS checks passed"
