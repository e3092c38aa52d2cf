#!/usr/bin/env bash
# Installs the Debian packages witmq needs to build, test and run — only those missing, so a
# second run does nothing. Debian bookworm; run as root or with sudo available.
set -euo pipefail

packages=(
  g++ cmake ninja-build pkg-config git
  libboost-dev librocksdb-dev nlohmann-json3-dev libfmt-dev libssl-dev
  libgtest-dev libgmock-dev libbenchmark-dev libjemalloc-dev
  wabt clang lld wasi-libc libclang-rt-14-dev-wasm32
  libclang-rt-14-dev
  # The compiled guest tier ("engine": "aot") runs wasm2c (wabt) and cc on the daemon's machine.
  gcc libc6-dev
  python3 curl procps openssl
  # The Python client (clients/python): its tests, and building it offline with pip in a venv.
  python3-pytest python3-setuptools python3-wheel python3-venv
  # The cluster tests and tools/cluster.sh start their own etcd; a single witmqd never needs it.
  etcd-server
  # The web console's tests drive a real headless browser (tests/console/).
  chromium chromium-driver python3-selenium
)
# The TypeScript client's tests (clients/js) and the component guests of the guest tests (built
# with jco, npm ci into the build tree) need Node.js and npm: Debian's only when no node is
# installed at all (a Node.js from elsewhere bundles its own npm, which Debian's would conflict
# with). They are skipped when node is older than 20, as bookworm's is.
if ! command -v node >/dev/null 2>&1; then
  packages+=(nodejs npm)
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
# npm: Debian's package, unless the installed nodejs already brings its own (nodesource's does,
# and conflicts with Debian's).
if command -v node >/dev/null 2>&1 && ! command -v npm >/dev/null 2>&1; then
  missing+=(npm)
fi

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "bootstrap: installing ${missing[*]}" >&2
as_root=()
if [ "$(id -u)" -ne 0 ]; then
  as_root=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
