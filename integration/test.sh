#!/usr/bin/env bash
# Runs every test of kaudit: unit tests, integration tests, and the tests against real brokers
# (a NATS server with JetStream and tansu, a Kafka-compatible broker, which the tests start on
# free loopback ports and stop). It installs what is missing first: build tools, nats-server
# (Debian package) and tansu (cargo install, ~20 minutes the first time; reused afterwards).
# Usage: ./integration/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

need() { command -v "$1" >/dev/null 2>&1; }
apt_updated=
apt_install() {
  [ -n "$apt_updated" ] || { apt-get update -qq; apt_updated=1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# Build tools (rdkafka builds librdkafka from source; it links OpenSSL and zlib).
need cc && need c++ && need make && need pkg-config || apt_install build-essential pkg-config
[ -f /usr/include/openssl/ssl.h ] || apt_install libssl-dev
[ -f /usr/include/zlib.h ] || apt_install zlib1g-dev
need curl || apt_install curl
need nats-server || apt_install nats-server
if ! need tansu; then
  echo "test.sh: installing tansu (a Kafka-compatible broker) with cargo; this takes a while once" >&2
  cargo install tansu --locked --features dynostore
fi

cargo --version
nats-server --version
tansu --version 2>/dev/null || true
# Benchmarks and tools must keep compiling; they hold no tests.
cargo build --locked --examples --benches
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
# One test at a time: the broker tests start processes on ports they pick free, and two tests
# picking at once could be handed the same port.
cargo test --locked --lib --bins --tests -- --test-threads=1 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
passed=$(grep -Eo '^test result: [a-zA-Z]+\. [0-9]+ passed' "$log" | awk '{s+=$4} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed;' "$log" | awk '{s+=$1} END {print s+0}')
echo "tests: $passed passed, $failed failed"
exit "$status"
