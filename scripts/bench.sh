#!/usr/bin/env bash
# The relay benchmark, one command: builds the release binary and the load generator, then
# measures the mock upstream directly and through crs (see examples/bench.rs).
#   scripts/bench.sh [--quick] [--json target/bench.json]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin crs --example bench
exec target/release/examples/bench "$@"
