#!/usr/bin/env bash
# The differential check at scale: N mutated events (default a million), every default rule and
# every imported Falco rule, compiled path against the interpreter. Usage: differential.sh [N] [SEED]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --release --quiet --example differential -- "${1:-1000000}" "${2:-1}"
