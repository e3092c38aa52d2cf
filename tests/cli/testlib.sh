# Shared by the shell tests of tests/cli/: a temporary directory removed on exit with the daemon
# it started, the check helpers, and reading the ports witmqd prints. Source it after setting
# TEST_NAME; it defines TMP, DAEMON_PID, CHECKS and FAILURES.

TMP=$(mktemp -d "${TMPDIR:-/tmp}/witmq-${TEST_NAME:?}.XXXXXX")
DAEMON_PID=""
cleanup() {
  if [[ -n "$DAEMON_PID" ]]; then kill -KILL "$DAEMON_PID" 2>/dev/null; wait "$DAEMON_PID" 2>/dev/null; fi
  rm -rf "$TMP"
}
trap cleanup EXIT

FAILURES=0
CHECKS=0
fail() {
  echo "FAIL: $*"
  FAILURES=$((FAILURES + 1))
}

# run NAME EXPECTED_RC CMD...: runs CMD with stdin from $STDIN (default empty), keeps its stdout
# in $OUT and stderr in $ERR, and checks the exit code.
STDIN=/dev/null
run() {
  local name=$1 expected=$2
  shift 2
  CHECKS=$((CHECKS + 1))
  "$@" <"$STDIN" >"$TMP/out" 2>"$TMP/err"
  RC=$?
  OUT=$(cat "$TMP/out")
  ERR=$(cat "$TMP/err")
  if [[ $RC -ne $expected ]]; then
    fail "$name: exit code $RC, expected $expected; stdout: '$OUT'; stderr: '$ERR'"
    return 1
  fi
  return 0
}
contains() {  # contains NAME HAYSTACK NEEDLE
  CHECKS=$((CHECKS + 1))
  if [[ "$2" != *"$3"* ]]; then fail "$1: expected to find '$3' in '$2'"; fi
}
equals() {  # equals NAME ACTUAL EXPECTED
  CHECKS=$((CHECKS + 1))
  if [[ "$2" != "$3" ]]; then fail "$1: got '$2', expected '$3'"; fi
}

# wait_for_ports: waits (30 s at most) for the daemon started as $DAEMON_PID with its stdout in
# $TMP/daemon.out to print its ready lines, then sets PORT (listening on) and TLS_PORT (tls
# listening on; "" when there is no TLS listener). witmqd prints the lines in one write. Exits
# the test when the daemon stopped or printed nothing.
wait_for_ports() {
  PORT=""
  TLS_PORT=""
  for _ in $(seq 1 300); do
    PORT=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$TMP/daemon.out" | head -n1)
    if [[ -n "$PORT" ]]; then
      TLS_PORT=$(sed -n 's/^tls listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$TMP/daemon.out" | head -n1)
      return 0
    fi
    if ! kill -0 "$DAEMON_PID" 2>/dev/null; then break; fi
    sleep 0.1
  done
  echo "FAIL: witmqd did not report its port"
  cat "$TMP/daemon.err"
  exit 1
}
