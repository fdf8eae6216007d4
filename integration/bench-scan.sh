#!/usr/bin/env bash
# The scan benchmark: kaudit scan against jq (the same starter detections, integration/starter.jq)
# and against a bare serde_json::Value parse, all on one generated file in one run.
# (kaudit scan twice: every match, as jq; and with dedup on, the default.)
# Usage: ./integration/bench-scan.sh [EVENTS]   (default 200000)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-200000}
command -v jq >/dev/null || { apt-get update -qq && apt-get install -y -qq jq >/dev/null; }
cargo build --release --quiet --bin kaudit --example gen_events --example bare_parse
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
./target/release/examples/gen_events "$n" > "$dir/events.jsonl"
echo "file: $n events, $(du -h "$dir/events.jsonl" | cut -f1), $(grep -cE '"stage":"ResponseComplete".*"verb":"(get|list|watch)"}$' "$dir/events.jsonl" || true) of them reads"

t() { local s e; s=$(date +%s.%N); "$@"; e=$(date +%s.%N); echo "$e - $s" | bc; }

# Every match (--no-dedup) to compare with jq; then the default: rate limits and summaries on.
ks=$(t sh -c "./target/release/kaudit scan --no-dedup '$dir/events.jsonl' > '$dir/kaudit.out' 2> '$dir/kaudit.err'")
kd=$(t sh -c "./target/release/kaudit scan '$dir/events.jsonl' > '$dir/dedup.out' 2> '$dir/dedup.err'")
bs=$(t sh -c "./target/release/examples/bare_parse '$dir/events.jsonl' 2> '$dir/bare.err'")
js=$(t sh -c "jq -r -f integration/starter.jq '$dir/events.jsonl' > '$dir/jq.out'")

printf '%-12s %8s %12s %8s\n' tool seconds events/s matches
printf '%-12s %8.2f %12.0f %8d\n' "kaudit scan" "$ks" "$(echo "$n / $ks" | bc -l)" "$(wc -l < "$dir/kaudit.out")"
printf '%-12s %8.2f %12.0f %8d\n' "kaudit dedup" "$kd" "$(echo "$n / $kd" | bc -l)" "$(wc -l < "$dir/dedup.out")"
printf '%-12s %8.2f %12.0f %8s\n' "bare parse" "$bs" "$(echo "$n / $bs" | bc -l)" "-"
printf '%-12s %8.2f %12.0f %8d\n' "jq" "$js" "$(echo "$n / $js" | bc -l)" "$(wc -l < "$dir/jq.out")"
echo "kaudit vs jq: $(echo "$js / $ks" | bc -l | cut -c1-5)x   kaudit vs bare parse: $(echo "$bs / $ks" | bc -l | cut -c1-5)x   dedup on vs off: $(echo "($kd / $ks - 1) * 100" | bc -l | cut -c1-5)% time"
cat "$dir/kaudit.err"
