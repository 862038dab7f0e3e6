#!/usr/bin/env bash
# A fully static crs binary (glibc crt-static, rustls, no OpenSSL), checked:
#   - `ldd` reports it statically linked,
#   - it starts and answers /health inside an empty chroot (no libraries, no /etc).
# Output: target/x86_64-unknown-linux-gnu/dist/crs (under $CARGO_TARGET_DIR when set)
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-gnu
# getrandom must use the syscall: dlsym is unavailable in a static-pie binary.
RUSTFLAGS='-C target-feature=+crt-static --cfg getrandom_backend="linux_getrandom"' \
  cargo build --locked --profile dist --target "$target" --bin crs
bin="${CARGO_TARGET_DIR:-target}/$target/dist/crs"
ls -l "$bin"
ldd "$bin" 2>&1 | tee /dev/stderr | grep -q "statically linked" || { echo "not static" >&2; exit 1; }
if [ "$(id -u)" = 0 ]; then
  root=$(mktemp -d)
  trap 'kill $pid 2>/dev/null || true; rm -rf "$root"' EXIT
  cp "$bin" "$root/crs"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  ADMIN_PASSWORD=chroot-check chroot "$root" /crs serve --data-dir /data --port "$port" >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do
    if curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1; then
      echo "runs in an empty chroot: /health answered"
      exit 0
    fi
    sleep 0.1
  done
  echo "the static binary did not answer in the chroot" >&2
  exit 1
else
  echo "not root: skipped the chroot check"
fi
