#!/usr/bin/env bash
# The scan benchmark by counts that do not move with the machine's load: cachegrind's simulated
# instructions and L1 instruction and data misses per event for the decode floor, the default
# rules and the default + Falco's imported rules (`kaudit scan`, dedup on), the cost of loading
# the rules subtracted (each set also run on an empty file). A time ratio on a shared machine
# moves ±30% within minutes; these counts are the same run after run for one binary.
# Usage: ./integration/bench-count.sh [EVENTS]   (default 20000; cachegrind runs ~50× slower)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-20000}
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
cargo build --release --quiet --bin kaudit --example gen_events
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
./target/release/examples/gen_events "$n" > "$dir/events.jsonl"
: > "$dir/empty.jsonl"
printf -- "- rule: Never\n  desc: matches nothing\n  condition: verb == 'never'\n  output: never\n  priority: notice\n" > "$dir/floor.yaml"
./target/release/kaudit rules import-falco ../shared/falco/k8s_audit_rules.yaml > "$dir/falco.yaml" 2>/dev/null
# One count of a cachegrind summary ("I   refs", "I1  misses", "D1  misses").
count() { grep -E "$1:" "$2" | awk '{gsub(",", "", $4); print $4}'; }
printf '%-18s %12s %10s %10s %8s\n' "rules" instructions "I1 misses" "D1 misses" "×floor"
floor=
row() {
    local name=$1 file i1 d1 ins; shift
    for file in empty events; do
        valgrind --tool=cachegrind --cache-sim=yes --cachegrind-out-file=/dev/null \
            ./target/release/kaudit scan "$@" "$dir/$file.jsonl" > /dev/null 2> "$dir/$file.cg"
    done
    per() { echo "($(count "$1" "$dir/events.cg") - $(count "$1" "$dir/empty.cg")) / $n" | bc -l; }
    ins=$(per "I   refs") i1=$(per "I1  misses") d1=$(per "D1  misses")
    floor=${floor:-$ins}
    printf '%-18s %12.0f %10.0f %10.0f %8.3f\n' "$name" "$ins" "$i1" "$d1" "$(echo "$floor / $ins" | bc -l)"
}
row "floor" --rules "$dir/floor.yaml"
row "default (rules/)" --rules rules
row "default + Falco" --rules rules --rules "$dir/falco.yaml"
