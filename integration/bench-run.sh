#!/usr/bin/env bash
# End-to-end benchmark of `kaudit run`: the load generator posts EventList batches of 400 over
# HTTP/2 to the shim; shim, detector and generator share this machine's cores. Reports events/s
# accepted, p50/p99 response time, and what the detector evaluated.
# Usage: ./integration/bench-run.sh [SECONDS] [CONCURRENCY] [RATE events/s, 0 = unbounded]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}; conc=${2:-8}; rate=${3:-0}
cargo build --release --quiet --bin kaudit --example loadgen
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port); mport=$(free_port)
KAUDIT__SHIM__LISTEN=127.0.0.1:$port KAUDIT__TELEMETRY__LISTEN=127.0.0.1:$mport \
  ./target/release/kaudit run > /dev/null 2> /tmp/kaudit-bench-run.log &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
./target/release/examples/loadgen --url "http://127.0.0.1:$port/k8s_audit" --seconds "$secs" --concurrency "$conc" --rate "$rate"
sleep 1
curl -s "http://127.0.0.1:$mport/metrics" | grep -E '^kaudit_(events_(received|published|evaluated)_total|alerts_total)' | sed 's/^/  /'
