#!/usr/bin/env bash
# The TypeScript client's tests, as ctest runs them: installs the locked dev dependencies
# (npm ci; skipped when node_modules already holds exactly package-lock.json, so a second run
# needs no registry), builds with tsc into dist/ and dist-test/, and runs node --test against the
# witmqd given. Usage: scripts/ctest.sh PATH/TO/witmqd
# Exit 77 (a skip for ctest) when Node.js 20 or newer is not installed.
set -euo pipefail
witmqd=$(realpath "$1")
cd "$(dirname "$0")/.."

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "clients/js: node and npm are not installed; skipping (Node.js >= 20 needed)" >&2
  exit 77
fi
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
  echo "clients/js: node $(node --version) is older than 20; skipping" >&2
  exit 77
fi

if ! cmp -s package-lock.json node_modules/.witmq-installed-lock 2>/dev/null; then
  npm ci --no-audit --no-fund --prefer-offline
  cp package-lock.json node_modules/.witmq-installed-lock
fi
npm run --silent build
WITMQD="$witmqd" node --test --test-concurrency=2 dist-test/
