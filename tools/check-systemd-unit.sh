#!/usr/bin/env bash
# Checks config/witmqd.service with `systemd-analyze verify`: every directive known to this
# systemd and well-formed, ExecStart executable. verify only warns about an unknown or malformed
# directive, so any line it prints fails the check. Also checks that
# config/witmqd.production.json loads, and prints the unit's sandboxing exposure score.
# Exits 77 (skipped under ctest) when systemd-analyze is not installed (Debian: systemd).
# Usage: tools/check-systemd-unit.sh [WITMQD]    (default: build/src/daemon/witmqd)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
witmqd=${1:-$repo/build/src/daemon/witmqd}

if ! command -v systemd-analyze >/dev/null; then
  echo "check-systemd-unit: skipped: systemd-analyze is not installed" >&2
  exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# verify wants ExecStart's program to exist: point the copy at the built witmqd.
sed "s#/usr/bin/witmqd#$witmqd#g" "$repo/config/witmqd.service" >"$tmp/witmqd.service"
if ! out=$(systemd-analyze verify "$tmp/witmqd.service" 2>&1) || [ -n "$out" ]; then
  echo "check-systemd-unit: config/witmqd.service: ${out:-systemd-analyze verify failed}" >&2
  exit 1
fi
"$witmqd" --config "$repo/config/witmqd.production.json" --check-config >/dev/null
exposure=$(systemd-analyze security --offline=yes "$tmp/witmqd.service" 2>/dev/null | tail -1 || true)
echo "check-systemd-unit: config/witmqd.service verifies; ${exposure#→ }"
