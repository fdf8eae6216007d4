#!/usr/bin/env bash
# kaudit tail's throughput into NATS JetStream: a generated audit log of N events, a nats-server
# of its own (temporary store), the time from start until the checkpoint covers the whole file.
# Usage: ./integration/bench-tail.sh [EVENTS] [BATCH_LINES]   (defaults 200000, 500)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-200000}
batch=${2:-500}
cargo build --release --quiet --bin kaudit --example gen_events
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
nats-server -js -p "$port" -sd "$dir/nats" > "$dir/nats.log" 2>&1 &
nats=$!
trap 'kill $nats 2>/dev/null; pkill -f "kaudit tail $dir" 2>/dev/null; rm -rf "$dir"' EXIT
./target/release/examples/gen_events "$n" > "$dir/audit.log"
printf '[bus]\nkind = "nats"\n[bus.nats]\nurl = "nats://127.0.0.1:%s"\n' "$port" > "$dir/pipeline.toml"
sleep 0.5
len=$(stat -c %s "$dir/audit.log")
start=$(date +%s.%N)
./target/release/kaudit tail "$dir/audit.log" --pipeline "$dir/pipeline.toml" --cluster bench --batch-lines "$batch" 2> "$dir/tail.log" &
while [ "$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['offset'])" "$dir/audit.log.kaudit-checkpoint" 2>/dev/null || echo 0)" != "$len" ]; do
  sleep 0.05
done
end=$(date +%s.%N)
secs=$(echo "$end - $start" | bc)
echo "kaudit tail: $n events ($(du -h "$dir/audit.log" | cut -f1)), batches of $batch: ${secs}s, $(echo "$n / $secs" | bc) events/s published and checkpointed (process start included)"
