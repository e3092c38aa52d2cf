#!/usr/bin/env bash
# Performs the steps of docker/Dockerfile without a Docker engine, to prove them: a clean Debian
# bookworm root made with debootstrap stands in for each stage's base image, and every
# instruction is carried out in it through chroot:
#   FROM ... AS NAME   a fresh copy of the bookworm root (minbase, the size of bookworm-slim)
#   ENV / WORKDIR      the environment and directory of the RUNs that follow
#   COPY               from the checkout (minus .dockerignore's build*/, data/, .git/) or --from=
#   RUN                /bin/sh -c in the chroot, as root or the USER set before it
# Then the last stage runs like the container would: ENTRYPOINT + CMD as its USER, inside a
# network namespace of its own (only a loopback, so 0.0.0.0 binds nothing on the host), until the
# HEALTHCHECK command succeeds; then SIGTERM must stop it with exit code 0.
#
# Takes minutes and downloads the packages, so it is opt-in: ctest runs it as witmq_check_docker
# with --if-enabled, which skips (exit 77) unless WITMQ_CHECK_DOCKER=1. Needs root, network access
# to a Debian mirror and python3.
#   tools/check-docker.sh [--if-enabled] [WORK_DIR]
#     WORK_DIR: default a new directory under /var/tmp, removed at the end unless
#     WITMQ_CHECK_DOCKER_KEEP=1; a WORK_DIR given is kept, and its bookworm root is reused.
# Environment: WITMQ_DEBIAN_MIRROR (default http://deb.debian.org/debian).
set -euo pipefail
# The whole script is one compound command, read before any of it runs: editing this file while
# a check is running cannot change what that run does.
{
if [ "${1:-}" = --if-enabled ]; then
  shift
  if [ "${WITMQ_CHECK_DOCKER:-0}" != 1 ]; then
    echo "check-docker: skipped (set WITMQ_CHECK_DOCKER=1 to run it: minutes, downloads)" >&2
    exit 77
  fi
fi

repo=$(cd "$(dirname "$0")/.." && pwd)
dockerfile="$repo/docker/Dockerfile"
mirror=${WITMQ_DEBIAN_MIRROR:-http://deb.debian.org/debian}
if [ -n "${1:-}" ]; then
  work=$1
  remove_work=0
else
  work=$(mktemp -d /var/tmp/witmq-check-docker.XXXXXX)
  remove_work=$([ "${WITMQ_CHECK_DOCKER_KEEP:-0}" = 1 ] && echo 0 || echo 1)
fi
mkdir -p "$work"

say() { echo "check-docker: $*" >&2; }
die() { say "FAILED: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap and chroot)"
command -v python3 >/dev/null || die "python3 is needed to read the Dockerfile's JSON forms"
if ! command -v debootstrap >/dev/null; then
  say "installing debootstrap"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi

mounted=()
daemon_pid=
cleanup() {
  if [ -n "$daemon_pid" ]; then kill -KILL "$daemon_pid" 2>/dev/null || true; fi
  local still_mounted=0
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
    umount -l "${mounted[$i]}" 2>/dev/null || true
    if mountpoint -q "${mounted[$i]}"; then still_mounted=1; fi
  done
  # Never remove through a bind mount of the host's /dev, /proc or /sys.
  if [ "$remove_work" = 1 ] && [ "$still_mounted" = 0 ]; then rm -rf --one-file-system "$work"; fi
}
trap cleanup EXIT

# ---- the base image -------------------------------------------------------------------------
base="$work/base"
if [ ! -x "$base/bin/sh" ]; then
  say "debootstrap bookworm (minbase) from $mirror into $base"
  start=$(date +%s)
  debootstrap --variant=minbase bookworm "$base" "$mirror" >"$work/debootstrap.log" 2>&1 ||
    die "debootstrap (see $work/debootstrap.log)"
  # The sources of the debian:bookworm image: the release, its updates and security.
  cat >"$base/etc/apt/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
EOF
  say "debootstrap took $(($(date +%s) - start)) s"
fi

# ---- the Dockerfile, one instruction per line -------------------------------------------------
# Continuation lines joined, comments and blank lines dropped.
instructions=$(sed -e 's/^[[:space:]]*#.*$//' "$dockerfile" | awk '
  /^[[:space:]]*$/ { next }
  { line = line $0 }
  /\\[[:space:]]*$/ { sub(/\\[[:space:]]*$/, "", line); next }
  { print line; line = "" }')

json_words() { python3 -c 'import json, sys; print("\n".join(json.loads(sys.argv[1])))' "$1"; }

declare -A stage_root
root=
stage=
workdir=/
user=root
envs=()
entrypoint=()
cmd=()
healthcheck=

setup_root() {
  cp -a "$base" "$1"
  cp /etc/resolv.conf "$1/etc/resolv.conf"
  for fs in proc sys dev; do
    mount --bind "/$fs" "$1/$fs"
    mounted+=("$1/$fs")
  done
}

in_root() {  # in_root USER COMMAND: runs COMMAND with /bin/sh -c in the current stage's root
  local as=$1
  shift
  local spec=()
  if [ "$as" != root ]; then spec=(--userspec="$as:$as"); fi
  chroot "${spec[@]}" "$root" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root "${envs[@]}" /bin/sh -c "cd '$workdir' && $1"
}

copy_in() {  # copy_in FROM_DIR SOURCE... DEST
  local from=$1
  shift
  local args=("$@")
  local dest=${args[-1]}
  unset 'args[-1]'
  [[ $dest == /* ]] || dest="$workdir/$dest"
  for src in "${args[@]}"; do
    local target="$root$dest"
    if [ ${#args[@]} -gt 1 ] || [[ $dest == */ ]]; then
      mkdir -p "$target"
    else
      mkdir -p "$(dirname "$target")"
    fi
    if [ -d "$from/$src" ]; then
      mkdir -p "$target"
      # The context without what .dockerignore leaves out.
      tar -C "$from/$src" --exclude='./build*' --exclude=./data --exclude=./.git \
        --exclude='__pycache__' -cf - . | tar -C "$target" -xf -
    else
      cp -a "$from/$src" "$target"
    fi
  done
}

while IFS= read -r line; do
  keyword=${line%%[[:space:]]*}
  rest=${line#"$keyword"}
  rest=${rest#"${rest%%[![:space:]]*}"}
  case ${keyword^^} in
    FROM)
      read -r image _as name <<<"$rest"
      case $image in
        debian:bookworm | debian:bookworm-slim) ;;
        *) die "FROM $image: only debian:bookworm images are reproduced here" ;;
      esac
      stage=$name
      root="$work/stage-$stage"
      rm -rf "$root"
      setup_root "$root"
      stage_root[$stage]=$root
      workdir=/
      user=root
      envs=()
      say "stage $stage: FROM $image"
      ;;
    ENV)
      envs+=("$rest")
      ;;
    WORKDIR)
      workdir=$rest
      mkdir -p "$root$workdir"
      ;;
    COPY)
      from_dir=$repo
      if [[ $rest == --from=* ]]; then
        from_stage=${rest%%[[:space:]]*}
        from_stage=${from_stage#--from=}
        rest=${rest#*[[:space:]]}
        from_dir=${stage_root[$from_stage]:?COPY --from=$from_stage: no such stage}
      fi
      read -r -a words <<<"$rest"
      say "stage $stage: COPY ${words[*]}"
      copy_in "$from_dir" "${words[@]}"
      ;;
    RUN)
      say "stage $stage: RUN $rest"
      start=$(date +%s)
      in_root "$user" "$rest" >>"$work/run-$stage.log" 2>&1 ||
        die "stage $stage: RUN $rest (see $work/run-$stage.log)"
      say "stage $stage: RUN took $(($(date +%s) - start)) s"
      ;;
    USER)
      user=$rest
      ;;
    ENTRYPOINT)
      mapfile -t entrypoint < <(json_words "$rest")
      ;;
    CMD)
      mapfile -t cmd < <(json_words "$rest")
      ;;
    HEALTHCHECK)
      healthcheck=${rest#*CMD }
      ;;
    VOLUME | EXPOSE | STOPSIGNAL | LABEL | ARG) ;;
    *) die "instruction $keyword is not reproduced by this script" ;;
  esac
done <<<"$instructions"

# ---- the container: ENTRYPOINT + CMD as USER, in its own network namespace --------------------
[ -n "$healthcheck" ] || die "the Dockerfile has no HEALTHCHECK"
id_line=$(chroot "$root" id "$user") || die "USER $user does not exist in the image"
say "runtime image: $(du -sh --exclude=proc --exclude=sys --exclude=dev "$root" | cut -f1) (bookworm minbase $(du -sh --exclude=proc --exclude=sys --exclude=dev "$base" | cut -f1)); user $id_line"
chroot "$root" ldd /usr/bin/witmqd | grep -q "not found" && die "witmqd misses libraries: $(chroot "$root" ldd /usr/bin/witmqd | grep 'not found')"

command_line=$(printf "'%s' " "${entrypoint[@]}" "${cmd[@]}")
say "running as $user: $command_line"
# One network namespace for the daemon and the health checks: a fresh loopback only.
unshare --net /bin/sh -c "
  ip link set lo up
  chroot --userspec='$user:$user' '$root' /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/var/lib/witmq \
    /bin/sh -c \"cd '$workdir' && exec $command_line\" >'$work/daemon.out' 2>'$work/daemon.err' &
  pid=\$!
  healthy=
  for i in \$(seq 1 100); do
    if chroot --userspec='$user:$user' '$root' /bin/sh -c '$healthcheck' >'$work/health.out' 2>&1; then
      healthy=1
      break
    fi
    sleep 0.2
  done
  ps -o user=,pid=,args= -p \$pid >'$work/daemon.ps' 2>&1 || true
  kill -TERM \$pid
  wait \$pid
  code=\$?
  echo \"\$code\" >'$work/daemon.exit'
  [ -n \"\$healthy\" ] || exit 3
  exit \$code
" || {
  cat "$work/daemon.err" >&2
  die "the container did not become healthy or did not stop with 0 (exit $(cat "$work/daemon.exit" 2>/dev/null))"
}
say "healthcheck: $(cat "$work/health.out")"
say "process: $(cat "$work/daemon.ps")"
say "log:"
sed 's/^/  /' "$work/daemon.err" >&2
say "OK: image steps built witmqd, it ran as $user, answered $healthcheck and stopped with 0"
exit 0
}
