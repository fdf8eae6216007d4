#!/usr/bin/env bash
# Soak test of `kaudit run`: the load generator at a fixed rate (half of saturation by default)
# for 10 minutes, RSS of kaudit sampled every second; prints the RSS minute by minute, after
# warm-up (the first two minutes) and at the end, min/max after warm-up, and fails if it is not
# flat within 10%.
# Usage: ./integration/soak.sh [RATE events/s, default 20000] [SECONDS, default 600]
set -euo pipefail
cd "$(dirname "$0")/.."
rate=${1:-20000}; secs=${2:-600}
cargo build --release --quiet --bin kaudit --example loadgen
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port); mport=$(free_port)
samples=${KAUDIT_SOAK_SAMPLES:-$(mktemp)}
KAUDIT__SHIM__LISTEN=127.0.0.1:$port KAUDIT__TELEMETRY__LISTEN=127.0.0.1:$mport \
  ./target/release/kaudit run > /dev/null 2> /tmp/kaudit-soak.log &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
( while kill -0 $pid 2>/dev/null; do awk '/VmRSS/ {print $2}' /proc/$pid/status >> "$samples"; sleep 1; done ) &
./target/release/examples/loadgen --url "http://127.0.0.1:$port/k8s_audit" --seconds "$secs" --concurrency 8 --rate "$rate"
curl -s "http://127.0.0.1:$mport/metrics" | grep -E '^kaudit_(events_(received|published|evaluated)_total)' | sed 's/^/  /'
python3 - "$samples" <<'PY'
import sys
rss = [int(l) for l in open(sys.argv[1]) if l.strip()]
print("RSS by minute (MiB):", " ".join(f"{max(rss[i:i+60])/1024:.1f}" for i in range(0, len(rss), 60)))
warm = rss[120:] if len(rss) > 240 else rss[len(rss)//2:]
lo, hi = min(warm), max(warm)
print(f"RSS samples: {len(rss)}; after warm-up {warm[0]/1024:.0f} MiB, at the end {warm[-1]/1024:.0f} MiB, "
      f"min {lo/1024:.0f} MiB, max {hi/1024:.0f} MiB, spread {100*(hi-lo)/lo:.1f}%")
sys.exit(0 if hi <= lo * 1.10 else 1)
PY
