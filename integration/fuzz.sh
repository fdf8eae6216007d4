#!/usr/bin/env bash
# A million (or N) mutated records through decode → engine → every encoding, panic-free:
#   ./integration/fuzz.sh [N] [SEED]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --release --locked --example fuzz -- "${1:-1000000}" "${2:-1}"
