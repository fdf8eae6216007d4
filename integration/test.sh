#!/usr/bin/env bash
# Runs every test of kaudit: unit tests, integration tests, and (as transports land) the tests
# against real brokers. It installs and starts what the tests need when it is missing, and
# stops what it started. Usage: ./integration/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }

# Build tools the crates need (rdkafka builds librdkafka from source; jq for the benchmark).
if ! need cc || ! need pkg-config || ! need make; then
  echo "test.sh: installing build tools" >&2
  apt-get update -qq && apt-get install -y -qq build-essential pkg-config >/dev/null
fi

cargo --version
cargo test --all-targets --locked 2>&1
