#!/usr/bin/env bash
# The relay benchmark, one command: builds the release binary and the load generator, then
# measures the mock upstream directly and through crs (see examples/bench.rs).
#   scripts/bench.sh [--quick] [--json target/bench.json]
#   scripts/bench.sh --dist [...]   # measures the binary users download instead
#                                   # (scripts/build-static.sh: fat LTO, static, stripped)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = --dist ]; then
  shift
  scripts/build-static.sh >&2
  export CRS_BIN="${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/dist/crs"
  cargo build --release --locked --example bench
else
  cargo build --release --locked --bin crs --example bench
fi
exec "${CARGO_TARGET_DIR:-target}/release/examples/bench" "$@"
