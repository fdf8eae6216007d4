#!/usr/bin/env bash
# The floor under the NATS pipeline on this machine: what nats-server and NATS's own Go
# benchmark clients (`nats bench`, natscli) spend per message when they do nothing else — a
# JetStream publisher waiting for every ack (as the shim does) and a durable consumer acking
# each message (as a detector does), messages the size of an audit event. The CPU seconds of
# each process over the run, per message, say how much of the machine 40k events/s take before
# any HTTP, decoding or rule runs.
# Usage: ./integration/bench-nats-floor.sh [MESSAGES] [BYTES]   (default 400000, 830)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-400000}; size=${2:-830}
command -v nats-server >/dev/null || { apt-get update -qq && apt-get install -y -qq nats-server >/dev/null; }
export PATH="$PATH:/usr/local/go/bin:$HOME/go/bin"
command -v nats >/dev/null || GOFLAGS=-mod=mod go install github.com/nats-io/natscli/nats@v0.5.0
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
nats-server -a 127.0.0.1 -p "$port" -js -sd "$work/js" > "$work/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
export NATS_URL="nats://127.0.0.1:$port"
for _ in $(seq 100); do (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
nats bench js pub async --msgs 10000 --size "${size}B" --stream floor --create --no-progress floor.events > /dev/null
nats stream purge floor -f > /dev/null
ticks() { awk '{print $14 + $15}' "/proc/$server/stat"; }
t0=$(ticks); s0=$(date +%s.%N)
/usr/bin/time -f "%U %S" -o "$work/pub.cpu" nats bench js pub async --msgs "$n" --size "${size}B" --stream floor --no-progress floor.events > "$work/pub.out" 2>&1 &
publisher=$!
/usr/bin/time -f "%U %S" -o "$work/sub.cpu" nats bench js fetch --msgs "$n" --stream floor --batch 500 --acks explicit --no-progress > "$work/sub.out" 2>&1
wait "$publisher"
t1=$(ticks); s1=$(date +%s.%N)
hz=$(getconf CLK_TCK)
cpu() { awk '{print $1 + $2}' "$1"; }
server_s=$(echo "($t1 - $t0) / $hz" | bc -l)
pub_s=$(cpu "$work/pub.cpu"); sub_s=$(cpu "$work/sub.cpu")
per() { echo "$1 * 1000000 / $n" | bc -l; }
echo "$n messages of $size bytes in $(printf %.2f "$(echo "$s1 - $s0" | bc -l)") s"
grep -hoE '[0-9,]+ msgs/sec' "$work/pub.out" "$work/sub.out" | head -2 | paste -sd' ' | sed 's/^/publisher, consumer: /'
printf '%-34s %10s %14s\n' process cpu-s "µs/message"
printf '%-34s %10.2f %14.1f\n' "nats-server (JetStream, file)" "$server_s" "$(per "$server_s")"
printf '%-34s %10.2f %14.1f\n' "publisher (async, every ack)" "$pub_s" "$(per "$pub_s")"
printf '%-34s %10.2f %14.1f\n' "consumer (fetch 500, ack each)" "$sub_s" "$(per "$sub_s")"
total=$(echo "$server_s + $pub_s + $sub_s" | bc -l)
echo "at 40k messages/s these three take $(printf %.2f "$(echo "$total * 40000 / $n" | bc -l)") of the machine's $(nproc) cores"
