#!/usr/bin/env bash
# Runs every check CI runs: formatting, lints, then the whole test suite against real peers
# (the integration tests start the real vigie-agent and vigie-collector binaries).
# On a fresh Debian 12 machine it first installs the system packages the tests use.
set -euo pipefail
cd "$(dirname "$0")"

# Debian packages the build and the tests need (tools the tests compare against).
packages=(pkg-config libpcap-dev tcpdump procps coreutils hostname nagios-nrpe-plugin nagios4-core)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "test.sh: missing Debian packages: ${missing[*]} (run as root, or apt-get install them)" >&2
    exit 1
  fi
  echo "test.sh: installing ${missing[*]}" >&2
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace --bins
cargo test --workspace
