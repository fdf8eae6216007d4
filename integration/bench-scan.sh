#!/usr/bin/env bash
# The scan benchmark: `kaudit scan` (dedup on, its default) on one generated file with rule sets
# of growing size, each against the decode floor (one rule that never matches: decode, route
# keys, no evaluation), and jq running the starter detections (integration/starter.jq).
# Rows: floor; rules/kaudit_rules.yaml; rules/ (the default rules); Falco's rules imported;
# rules/ + Falco; rules/ + 439 per-namespace variants; then the recorded control-plane corpus,
# repeated to as many events, with the floor, the default rules and the default + Falco.
# Each row counts its rules.
# Usage: ./integration/bench-scan.sh [EVENTS]   (default 200000)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-200000}
command -v jq >/dev/null || { apt-get update -qq && apt-get install -y -qq jq >/dev/null; }
cargo build --release --quiet --bin kaudit --example gen_events --example gen_rules
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
./target/release/examples/gen_events "$n" > "$dir/events.jsonl"
echo "file: $n events, $(du -h "$dir/events.jsonl" | cut -f1), $(grep -cE '"stage":"ResponseComplete".*"verb":"(get|list|watch)"}$' "$dir/events.jsonl" || true) of them reads"
printf -- "- rule: Never\n  desc: matches nothing\n  condition: verb == 'never'\n  output: never\n  priority: notice\n" > "$dir/floor.yaml"
./target/release/kaudit rules import-falco ../shared/falco/k8s_audit_rules.yaml > "$dir/falco.yaml" 2>/dev/null
./target/release/examples/gen_rules 439 > "$dir/many.yaml"
rules() { ./target/release/kaudit rules lint "$@" | sed -n 's/^ok: \([0-9]*\) rules.*/\1/p'; }
own=$(rules rules/kaudit_rules.yaml) default=$(rules rules) falco=$(rules "$dir/falco.yaml")
many=$(( $(rules rules "$dir/many.yaml") - default ))

t() { local s e; s=$(date +%s.%N); "$@"; e=$(date +%s.%N); echo "$e - $s" | bc; }
scan() { t sh -c "./target/release/kaudit scan $* '$dir/events.jsonl' > '$dir/out' 2> '$dir/err'"; }

floor=$(scan --rules "$dir/floor.yaml")
printf '%-28s %6s %8s %10s %8s %8s\n' "rules" count seconds events/s "×floor" alerts
row() {
    local name=$1 count=$2 s; shift 2
    s=$(scan "$@")
    printf '%-28s %6s %8.2f %10.0f %8.3f %8d\n' "$name" "$count" "$s" "$(echo "$n / $s" | bc -l)" \
        "$(echo "$floor / $s" | bc -l)" "$(wc -l < "$dir/out")"
    if grep -q "left to the interpreter" "$dir/err"; then grep "left to the interpreter" "$dir/err" | head -5; fi
}
printf '%-28s %6s %8.2f %10.0f %8.3f %8s\n' "floor (never matches)" 1 "$floor" "$(echo "$n / $floor" | bc -l)" 1 -
row "kaudit_rules.yaml" "$own" --rules rules/kaudit_rules.yaml
row "default (rules/)" "$default" --rules rules
row "Falco imported" "$falco" --rules "$dir/falco.yaml"
row "default + Falco" $((default + falco)) --rules rules --rules "$dir/falco.yaml"
row "default + $many variants" $((default + many)) --rules rules --rules "$dir/many.yaml"
row "default, --no-dedup" "$default" --rules rules --no-dedup
js=$(t sh -c "jq -r -f integration/starter.jq '$dir/events.jsonl' > '$dir/jq.out'")
printf '%-28s %6s %8.2f %10.0f %8.3f %8d\n' "jq (starter.jq)" 12 "$js" "$(echo "$n / $js" | bc -l)" "$(echo "$floor / $js" | bc -l)" "$(wc -l < "$dir/jq.out")"

# A real stream: the control-plane corpus (integration/control-plane-corpus.sh: a real apiserver,
# controller-manager, scheduler and a deploy pipeline), repeated to about as many events.
corpus=integration/fixtures/control-plane.jsonl.gz
if [ -f "$corpus" ]; then
    zcat "$corpus" > "$dir/one.jsonl"
    per=$(wc -l < "$dir/one.jsonl")
    : > "$dir/events.jsonl"
    m=0
    while [ "$m" -lt "$n" ]; do cat "$dir/one.jsonl" >> "$dir/events.jsonl"; m=$((m + per)); done
    n=$m
    echo "control-plane corpus: $per events, repeated to $n ($(du -h "$dir/events.jsonl" | cut -f1))"
    floor=$(scan --rules "$dir/floor.yaml")
    printf '%-28s %6s %8.2f %10.0f %8.3f %8s\n' "floor (never matches)" 1 "$floor" "$(echo "$n / $floor" | bc -l)" 1 -
    row "default (rules/)" "$default" --rules rules
    row "default + Falco" $((default + falco)) --rules rules --rules "$dir/falco.yaml"
fi
