#!/usr/bin/env bash
# End-to-end benchmark through a real broker: loadgen → shim → broker → detector(s) → alerts
# topic → alertlat. Starts its own broker (nats-server, or Apache Kafka with
# integration/kafka/broker.sh — run ./integration/test.sh once to fetch its jars) on free ports.
# Usage: ./integration/bench-broker.sh nats|kafka DETECTORS RATE_EVENTS_PER_S [SECONDS]
# (RATE 0: as fast as the shim answers). The load comes as 8 clusters (one's events stay on one
# partition and so with one detector); a 5 s warm-up on other clusters comes first.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
bus=${1:?nats or kafka}; detectors=${2:-1}; rate=${3:-20000}; secs=${4:-20}
cargo build --release --quiet --bin kaudit --example loadgen --example alertlat
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
bport=$(port); sport=$(port)
if [ "$bus" = nats ]; then
  nats-server -a 127.0.0.1 -p "$bport" -js -sd "$work/js" > "$work/broker.log" 2>&1 & pids+=($!)
  export KAUDIT__BUS__NATS__URL="nats://127.0.0.1:$bport"
else
  ./integration/kafka/broker.sh "$work/kafka" "$bport" "$(port)" > "$work/broker.log" 2>&1 & pids+=($!)
  export KAUDIT__BUS__KAFKA__BROKERS="127.0.0.1:$bport"
fi
for _ in $(seq 600); do (echo > /dev/tcp/127.0.0.1/$bport) 2>/dev/null && break; sleep 0.1; done
pipeline=pipelines/$bus.toml
KAUDIT__SHIM__LISTEN=127.0.0.1:$sport ./target/release/kaudit shim --pipeline "$pipeline" > "$work/shim.log" 2>&1 & pids+=($!)
mports=()
for i in $(seq "$detectors"); do
  mp=$(port); mports+=("$mp")
  KAUDIT__TELEMETRY__LISTEN=127.0.0.1:$mp KAUDIT__BUS__KAFKA__GROUP_INSTANCE_ID=bench-$i \
    ./target/release/kaudit detect --pipeline "$pipeline" > "$work/detector-$i.log" 2>&1 & pids+=($!)
done
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$sport/healthz" >/dev/null && break; sleep 0.1; done
sleep 3   # let the consumer group settle
# Warm up (the JVM's JIT, librdkafka's connections) on another cluster: its alerts have dedup
# keys of their own and alertlat counts only events received after it is ready.
./target/release/examples/loadgen --url "http://127.0.0.1:$sport/k8s_audit/warmup" --clusters 8 --seconds 5 --concurrency 8 --rate "$rate" > /dev/null
sleep 2   # the warm-up evaluated
evaluated() { curl -s "http://127.0.0.1:$1/metrics" | awk '/^kaudit_events_evaluated_total/ {s += $NF} END {print s + 0}'; }
before=()
for mp in "${mports[@]}"; do before+=("$(evaluated "$mp")"); done
./target/release/examples/alertlat "$pipeline" $((secs + 8)) > "$work/alertlat.out" & latpid=$!
# A Kafka consumer joins its group in a few seconds: do not count that as latency.
if [ "$bus" = kafka ]; then sleep 6; else sleep 1; fi
./target/release/examples/loadgen --url "http://127.0.0.1:$sport/k8s_audit/bench" --clusters 8 --seconds "$secs" --concurrency 8 --rate "$rate"
wait $latpid || true
cat "$work/alertlat.out" | grep -v ready
total=0
for i in $(seq "$detectors"); do
  n=$(( $(evaluated "${mports[$((i-1))]}") - ${before[$((i-1))]:-0} ))
  a=$(curl -s "http://127.0.0.1:${mports[$((i-1))]}/metrics" | awk '/^kaudit_alerts_total/ {s+=$NF} END {print s+0}')
  echo "detector $i evaluated ${n:-0} events after the warm-up, emitted $a alerts in all"; total=$((total + ${n:-0}))
done
echo "evaluated in all: $total events ($((total / secs)) events/s over the ${secs}s of load)"
