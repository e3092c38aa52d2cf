#!/usr/bin/env bash
# witmq next to its peers, the same load on each, one system at a time, on this machine:
#
#   bench/peers/run.sh [--build DIR] [--rounds N] [--messages N] [--rabbit-messages N]
#                      [--size BYTES] [--window N] [--witmq-batch N]
#                      [--only p2p|pubsub|pubsub-acked]
#                      [--timeout S]
#
# Defaults: 2 rounds, 200,000 messages (50,000 for RabbitMQ, about ten times slower here),
# 128 B, a window of 1,000 unconfirmed messages: the peers publish them one by one, witmq in
# sends of --witmq-batch messages (default 100; --pipeline is window / batch), so
# --witmq-batch 1 publishes one message per request as the peers do. Each run ends when every
# message arrived or nothing moved for 30 s; --timeout S (default 300) bounds a run outright.
#
# Installs what is missing (Debian: nats-server, rabbitmq-server, libnats-dev, librabbitmq-dev;
# none of them is needed to build or run witmq), builds the C load generators next to this script
# (nats_bench.c, rabbit_bench.c) with the system compiler into a temporary directory, and then,
# for each scenario, alternates witmq and the peer (witmq, peer, witmq, peer, ... --rounds times).
# Every run gets a fresh server: witmqd, nats-server or rabbitmq-server started here on 127.0.0.1
# with non-default ports and a temporary directory, and stopped after the run; nothing of it is
# left behind (a trap stops every process this script started and removes the directory).
#
# Scenarios (the shape of witmq-bench; --size bytes per message):
#   p2p     1 producer with --window unconfirmed messages, 1 consumer acknowledging each message:
#           witmq `group` (fsync, shared) vs RabbitMQ quorum queue (fsync before the confirm),
#           witmq `none` (in memory, on disk at the next flush: it promises less than
#           JetStream) vs JetStream file storage (written, no fsync: the Debian nats-server 2.9
#           has no sync_interval setting to fsync each write).
#   pubsub  1 publisher, 1 and 4 subscribers each receiving every message:
#           witmq publish-subscribe `none`, streaming vs NATS core (memory only, nothing stored).
#   pubsub-acked  the same with a window of unconfirmed sends and subscribers that acknowledge
#           each message: witmq `group` vs RabbitMQ (a fanout exchange to one quorum queue per
#           subscriber), witmq `none` vs JetStream (a durable consumer per subscriber).
#
# Prints one table: per system the consumed rate of each run, the median, median p50/p99
# latency, and witmq's ratio to the peer (median / median). Needs a build of witmqd and
# witmq-bench (tools/build.sh, Release).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$root/build
rounds=2
messages=200000
rabbit_messages=50000
size=128
window=1000
witmq_batch=100
only=""
run_timeout=300

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$(cd "$2" && pwd); shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --messages) messages=$2; shift 2 ;;
    --rabbit-messages) rabbit_messages=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --window) window=$2; shift 2 ;;
    --witmq-batch) witmq_batch=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    --timeout) run_timeout=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "run.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
for v in rounds messages rabbit_messages size window witmq_batch run_timeout; do
  if ! [[ ${!v} =~ ^[1-9][0-9]*$ ]]; then
    echo "run.sh: --${v//_/-} '${!v}' is not a whole number above 0" >&2
    exit 2
  fi
done
if [ "$size" -lt 16 ]; then echo "run.sh: --size must be at least 16" >&2; exit 2; fi
if [ "$witmq_batch" -gt 10000 ] || [ "$window" -lt "$witmq_batch" ] ||
  [ $((window % witmq_batch)) -ne 0 ] || [ $((window / witmq_batch)) -gt 10000 ]; then
  echo "run.sh: --window must be a multiple of --witmq-batch (at most 10000 of them)," \
    "--witmq-batch at most 10000" >&2
  exit 2
fi
case "$only" in
  "" | p2p | pubsub | pubsub-acked) ;;
  *) echo "run.sh: --only p2p, pubsub or pubsub-acked" >&2; exit 2 ;;
esac
for b in "$build/src/daemon/witmqd" "$build/src/cli/witmq-bench"; do
  if [ ! -x "$b" ]; then echo "run.sh: $b is missing: build witmq first (tools/build.sh)" >&2; exit 2; fi
done

# --- install what is missing -------------------------------------------------------------
packages=(nats-server rabbitmq-server libnats-dev librabbitmq-dev gcc python3 procps)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "run.sh: installing ${missing[*]}" >&2
  as_root=()
  [ "$(id -u)" -ne 0 ] && as_root=(sudo)
  # The packages' own services must not start: this script runs its own instances. A
  # policy-rc.d that denies starting services is put in place for the install if there is none.
  added_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee /usr/sbin/policy-rc.d >/dev/null
    "${as_root[@]}" chmod 755 /usr/sbin/policy-rc.d
    added_policy=yes
  fi
  export DEBIAN_FRONTEND=noninteractive
  status=0
  { "${as_root[@]}" apt-get update -qq &&
    "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } ||
    status=$?
  [ -n "$added_policy" ] && "${as_root[@]}" rm -f /usr/sbin/policy-rc.d
  if [ $status -ne 0 ]; then echo "run.sh: apt-get failed ($status)" >&2; exit 1; fi
fi

# --- everything this script starts lives here and dies with it ----------------------------
tmp=$(mktemp -d /tmp/witmq-peers.XXXXXX)
pids=()
rabbit_env=()
child=""
cleanup() {
  set +e
  if [ -n "$child" ]; then
    kill -TERM "$child" 2>/dev/null
    wait "$child" 2>/dev/null
    child=""
  fi
  if [ ${#rabbit_env[@]} -gt 0 ]; then
    env "${rabbit_env[@]}" timeout 60 /usr/lib/rabbitmq/bin/rabbitmqctl -n "$rabbit_node" stop \
      >/dev/null 2>&1
  fi
  for p in "${pids[@]}"; do
    kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null
  done
  for p in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$p" 2>/dev/null || kill -KILL "$p" 2>/dev/null
    wait "$p" 2>/dev/null
  done
  pids=()
  if [ ${#rabbit_env[@]} -gt 0 ]; then
    env "${rabbit_env[@]}" epmd -kill >/dev/null 2>&1
    rabbit_env=()
  fi
}
trap 'cleanup; rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

# A free loopback port (the kernel's choice; a race with other programs is unlikely here).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Starts "$@" in its own process group, remembered for cleanup.
spawn() {
  local out=$1
  shift
  setsid "$@" >"$out" 2>&1 &
  pids+=($!)
}
# bounded OUT COMMAND...: runs COMMAND for at most --timeout seconds, its stdout to OUT, its
# stderr to $tmp/err, and returns its status. It runs in the background while the script waits
# for it, so that a signal to the script is acted on at once (bash runs a trap only after the
# foreground command it is waiting for has ended).
bounded() {
  local out=$1 status=0
  shift
  timeout "$run_timeout" "$@" >"$out" 2>"$tmp/err" &
  child=$!
  wait "$child" || status=$?
  child=""
  return $status
}
wait_port() {
  local port=$1
  for _ in $(seq 600); do
    (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "run.sh: nothing listens on 127.0.0.1:$port after 60 s" >&2
  return 1
}

echo "run.sh: building the load generators" >&2
cc -O2 -Wall -Wextra -o "$tmp/nats_bench" "$here/nats_bench.c" -lnats -lpthread
cc -O2 -Wall -Wextra -o "$tmp/rabbit_bench" "$here/rabbit_bench.c" -lrabbitmq -lpthread

results=$tmp/results
: >"$results"
# record SCENARIO SYSTEM PAIR PROMISE TEXT: TEXT is a generator's RESULT line or witmq-bench's
# JSON; PAIR is the witmq system a peer is compared with (empty for witmq itself).
record() {
  python3 - "$@" >>"$results" <<'EOF'
import json, sys
scenario, system, pair, promise, text = sys.argv[1:6]
r = dict(msgs=0.0, p50=0.0, p99=0.0, ok=False)
if text.lstrip().startswith("{"):
    j = json.loads(text)
    r = dict(msgs=j["consumers"]["msgs_per_s"], p50=j["latency_us"]["p50"] / 1000,
             p99=j["latency_us"]["p99"] / 1000, ok=j["ok"])
    if not j["ok"]:
        print(f"run.sh: {system}: consumed {j['consumers']['messages']} of {j['expected']}; "
              f"{'; '.join(j['errors'])}", file=sys.stderr)
elif text.startswith("RESULT "):
    kv = dict(f.split("=", 1) for f in text.split()[1:])
    r = dict(msgs=float(kv["msgs_per_s"]), p50=float(kv["p50_ms"]), p99=float(kv["p99_ms"]),
             ok=kv["ok"] == "1")
print(json.dumps(dict(scenario=scenario, system=system, pair=pair, promise=promise, **r)))
EOF
}

# --- one run of each system ---------------------------------------------------------------
run_witmq() {  # SCENARIO SYSTEM PROMISE witmq-bench arguments...
  local scenario=$1 system=$2 promise=$3
  shift 3
  local data=$tmp/witmq-data out=$tmp/witmqd.out
  rm -rf "$data"
  mkdir -p "$data"
  spawn "$out" "$build/src/daemon/witmqd" --listen 127.0.0.1:0 --http-listen "" --data-dir "$data"
  local server=""
  for _ in $(seq 300); do
    server=$(sed -n 's/^listening on //p' "$out" | head -n 1)
    [ -n "$server" ] && break
    sleep 0.1
  done
  local json
  json="failed: witmqd did not start: $(cat "$out")"
  if [ -n "$server" ]; then
    bounded "$tmp/json" "$build/src/cli/witmq-bench" --server "$server" --json \
      --drain-timeout 30000 "$@" || true
    json=$(cat "$tmp/json")
    [ -n "$json" ] || json="failed: $(cat "$tmp/err")"
  fi
  [[ $json == failed* ]] && echo "run.sh: $system: $json" >&2
  record "$scenario" "$system" "" "$promise" "$json"
  cleanup
}

run_nats() {  # SCENARIO SYSTEM PAIR PROMISE jetstream(0|1) nats_bench arguments...
  local scenario=$1 system=$2 pair=$3 promise=$4 js=$5
  shift 5
  local port dir=$tmp/nats
  port=$(free_port)
  rm -rf "$dir"
  mkdir -p "$dir"
  {
    echo "listen: 127.0.0.1:$port"
    echo "max_payload: 1048576"
    [ "$js" = 1 ] && echo "jetstream { store_dir: \"$dir/js\" }"
  } >"$dir/nats.conf"
  spawn "$dir/log" nats-server -c "$dir/nats.conf"
  local line=""
  if wait_port "$port"; then
    bounded "$tmp/gen.out" "$tmp/nats_bench" --url "nats://127.0.0.1:$port" "$@" || true
    line=$(grep '^RESULT' "$tmp/gen.out" || true)
  fi
  [ -n "$line" ] || { echo "run.sh: $system: $(tail -3 "$tmp/err")" >&2; line=failed; }
  record "$scenario" "$system" "$pair" "$promise" "$line"
  cleanup
}

rabbit_node=""
run_rabbit() {  # SCENARIO SYSTEM PAIR PROMISE rabbit_bench arguments...
  local scenario=$1 system=$2 pair=$3 promise=$4
  shift 4
  local dir=$tmp/rabbit port dist epmd
  port=$(free_port)
  dist=$(free_port)
  epmd=$(free_port)
  rm -rf "$dir"
  mkdir -p "$dir/home" "$dir/mnesia" "$dir/log"
  echo "[]." >"$dir/enabled_plugins"
  : >"$dir/rabbitmq-env.conf"
  printf 'listeners.tcp.1 = 127.0.0.1:%s\nloopback_users.guest = true\n' "$port" >"$dir/rabbitmq.conf"
  rabbit_node="witmq-peers-$$@localhost"
  # Its own node name, ports (AMQP, distribution, epmd), cookie (in HOME), config and data: it
  # does not meet a system rabbitmq-server or epmd. Schedulers do not busy-wait, so an idle
  # node does not take CPU from the next system measured.
  rabbit_env=(
    HOME="$dir/home" RABBITMQ_NODENAME="$rabbit_node" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    RABBITMQ_NODE_PORT="$port" RABBITMQ_DIST_PORT="$dist" ERL_EPMD_PORT="$epmd"
    ERL_EPMD_ADDRESS=127.0.0.1 RABBITMQ_CONF_ENV_FILE="$dir/rabbitmq-env.conf"
    RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf" RABBITMQ_ADVANCED_CONFIG_FILE="$dir/advanced.config"
    RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" RABBITMQ_MNESIA_BASE="$dir/mnesia"
    RABBITMQ_LOG_BASE="$dir/log" RABBITMQ_PLUGINS_EXPAND_DIR="$dir/plugins-expand"
    RABBITMQ_PID_FILE="$dir/rabbit.pid" RABBITMQ_FEATURE_FLAGS_FILE="$dir/feature_flags"
    RABBITMQ_QUORUM_DIR="$dir/quorum"
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1} +sbwt none +sbwtdcpu none +sbwtdio none"
    RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
  )
  spawn "$dir/out" env "${rabbit_env[@]}" /usr/lib/rabbitmq/bin/rabbitmq-server
  # rabbitmqctl await_startup fails at once while the node has not registered yet: retry it
  # (for at most 3 minutes) as long as the server runs.
  local started="" deadline=$((SECONDS + 180))
  while [ $SECONDS -lt $deadline ] && kill -0 "${pids[-1]}" 2>/dev/null; do
    if bounded "$dir/await" env "${rabbit_env[@]}" /usr/lib/rabbitmq/bin/rabbitmqctl \
      -n "$rabbit_node" await_startup --timeout 60; then
      started=yes
      break
    fi
    sleep 1
  done
  if [ -z "$started" ]; then
    echo "run.sh: rabbitmq-server did not start: $(tail -5 "$dir/out") $(tail -3 "$tmp/err")" >&2
    record "$scenario" "$system" "$pair" "$promise" failed
    cleanup
    return
  fi
  local line
  bounded "$tmp/gen.out" "$tmp/rabbit_bench" --port "$port" "$@" || true
  line=$(grep '^RESULT' "$tmp/gen.out" || true)
  [ -n "$line" ] || { echo "run.sh: $system: $(tail -3 "$tmp/err")" >&2; line=failed; }
  record "$scenario" "$system" "$pair" "$promise" "$line"
  cleanup
}

# --- the scenarios --------------------------------------------------------------------------
pipeline=$((window / witmq_batch))
witmq_p2p=(--messages "$messages" --size "$size" --batch "$witmq_batch" --pipeline "$pipeline"
  --complete --receive-batch 1000)
witmq_pubsub=(--messages "$messages" --size "$size" --batch "$witmq_batch" --pipeline "$pipeline"
  --kind publish-subscribe --durability none --consume-mode stream --credit 10000
  --receive-batch 1000)
declare -A promise_of=(
  [group]="fsync before ok (shared by concurrent writes)"
  [none]="in memory before ok (on disk at the next flush or a clean stop)"
  [rabbit]="fsync before the confirm (quorum queue, Raft log)"
  [js]="written to the stream file before the ack, no fsync"
  [core]="nothing stored, no publish confirmation"
)

say() { echo "run.sh: $(date -u +%H:%M:%S) $*" >&2; }
if [ -z "$only" ] || [ "$only" = p2p ]; then
  for r in $(seq "$rounds"); do
    say "p2p round $r/$rounds: witmq group"
    run_witmq "p2p acked" "witmq group" "${promise_of[group]}" "${witmq_p2p[@]}" \
      --durability group
    say "p2p round $r/$rounds: RabbitMQ quorum queue"
    run_rabbit "p2p acked" "RabbitMQ quorum" "witmq group" "${promise_of[rabbit]}" --messages \
      "$rabbit_messages" --size "$size" --window "$window" --prefetch 1000 --subs 1 \
      --timeout 30
    say "p2p round $r/$rounds: witmq none"
    run_witmq "p2p acked" "witmq none" "${promise_of[none]}" "${witmq_p2p[@]}" \
      --durability none
    say "p2p round $r/$rounds: JetStream file"
    run_nats "p2p acked" "JetStream file" "witmq none" "${promise_of[js]}" 1 --mode js --messages \
      "$messages" --size "$size" --window "$window" --fetch 1000 --timeout 30
  done
fi
if [ -z "$only" ] || [ "$only" = pubsub ]; then
  for subs in 1 4; do
    for r in $(seq "$rounds"); do
      say "pub-sub x$subs round $r/$rounds: witmq none"
      run_witmq "pub-sub x$subs" "witmq none" "${promise_of[none]}" "${witmq_pubsub[@]}" \
        --consumers "$subs"
      say "pub-sub x$subs round $r/$rounds: NATS core"
      run_nats "pub-sub x$subs" "NATS core" "witmq none" "${promise_of[core]}" 0 --mode core --messages \
        "$messages" --size "$size" --subs "$subs" --timeout 30
    done
  done
fi
if [ -z "$only" ] || [ "$only" = pubsub-acked ]; then
  for subs in 1 4; do
    sc="pub-sub acked x$subs"
    for r in $(seq "$rounds"); do
      say "$sc round $r/$rounds: witmq group"
      run_witmq "$sc" "witmq group" "${promise_of[group]}" "${witmq_p2p[@]}" \
        --kind publish-subscribe --durability group --consumers "$subs"
      say "$sc round $r/$rounds: RabbitMQ quorum queues"
      run_rabbit "$sc" "RabbitMQ quorum" "witmq group" "${promise_of[rabbit]}" --messages \
        "$rabbit_messages" --size "$size" --window "$window" --prefetch 1000 --subs "$subs" \
        --timeout 30
      say "$sc round $r/$rounds: witmq none"
      run_witmq "$sc" "witmq none" "${promise_of[none]}" "${witmq_p2p[@]}" \
        --kind publish-subscribe --durability none --consumers "$subs"
      say "$sc round $r/$rounds: JetStream file"
      run_nats "$sc" "JetStream file" "witmq none" "${promise_of[js]}" 1 --mode js --messages \
        "$messages" --size "$size" --window "$window" --fetch 1000 --subs "$subs" --timeout 30
    done
  done
fi

# --- the table ------------------------------------------------------------------------------
load=$(cut -d' ' -f1-3 /proc/loadavg)
python3 - "$results" "$size" "$window" "$rounds" "$(nproc)" "$load" "$witmq_batch" <<'EOF'
import json, statistics, sys
path, size, window, rounds, cpus, load, batch = sys.argv[1:8]
rows = [json.loads(l) for l in open(path) if l.strip()]
print(f"\n{size} B messages, window {window} unconfirmed (witmq: sends of {batch}), "
      f"{rounds} round(s) alternated; "
      f"{cpus} CPUs, load average {load} at the end; rates are messages consumed per second "
      f"(all consumers together), latency send to receipt")
head = ("scenario", "system", "promise on ok", "runs (msgs/s)", "median", "p50/p99 ms",
        "witmq / peer")
out = []
scenarios = list(dict.fromkeys(r["scenario"] for r in rows))
for sc in scenarios:
    systems = list(dict.fromkeys(r["system"] for r in rows if r["scenario"] == sc))
    med = {}
    for s in systems:
        rs = [r for r in rows if r["scenario"] == sc and r["system"] == s]
        good = [r for r in rs if r["ok"]]
        med[s] = statistics.median([r["msgs"] for r in good]) if good else 0.0
        lat = (f"{statistics.median([r['p50'] for r in good]):.1f}/"
               f"{statistics.median([r['p99'] for r in good]):.1f}") if good else "-"
        runs = "; ".join(f"{r['msgs']:,.0f}" + ("" if r["ok"] else " (failed)") for r in rs)
        out.append([sc, s, rs[0]["promise"], runs, f"{med[s]:,.0f}", lat, ""])
    # witmq's ratio to each peer, against the witmq setting that promises the like.
    pair = {r["system"]: r["pair"] for r in rows if r["scenario"] == sc}
    for row in out:
        p = pair.get(row[1]) if row[0] == sc else None
        if p and med.get(p, 0) > 0 and med[row[1]] > 0:
            row[6] = f"{med[p] / med[row[1]]:.2f}x ({p})"
widths = [max(len(str(x)) for x in col) for col in zip(head, *out)]
print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
for row in out:
    print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)))
EOF
