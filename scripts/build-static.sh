#!/usr/bin/env bash
# A fully static crs binary (glibc crt-static, rustls, no OpenSSL), checked.
#   scripts/build-static.sh            # x86_64 (this machine)
#   scripts/build-static.sh aarch64    # cross-compiled: needs the Rust target
#                                      # (rustup target add aarch64-unknown-linux-gnu),
#                                      # gcc-aarch64-linux-gnu and qemu-user (Debian packages)
# Checks:
#   - it is statically linked,
#   - x86_64: it starts and answers /health inside an empty chroot (no libraries, no /etc),
#     when run as root;
#   - aarch64: under qemu-aarch64 it answers --version and /health.
# Output: target/<target>/dist/crs (under $CARGO_TARGET_DIR when set), copied to
# dist/crs-linux-<arch>.
set -euo pipefail
cd "$(dirname "$0")/.."
arch="${1:-x86_64}"
run=()
case "$arch" in
  x86_64) target=x86_64-unknown-linux-gnu ;;
  aarch64)
    target=aarch64-unknown-linux-gnu
    export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
    export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
    export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
    run=(qemu-aarch64)
    ;;
  *) echo "unknown architecture $arch (x86_64 or aarch64)" >&2; exit 2 ;;
esac
# getrandom must use the syscall: dlsym is unavailable in a static-pie binary.
RUSTFLAGS='-C target-feature=+crt-static --cfg getrandom_backend="linux_getrandom"' \
  cargo build --locked --profile dist --target "$target" --bin crs
bin="${CARGO_TARGET_DIR:-target}/$target/dist/crs"
ls -l "$bin"
file "$bin" | tee /dev/stderr | grep -Eq "statically linked|static-pie linked" \
  || { echo "not static" >&2; exit 1; }
mkdir -p dist
cp "$bin" "dist/crs-linux-$arch"

"${run[@]}" "$bin" --version

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_health() {
  for _ in $(seq 1 300); do
    if curl -fsS "http://127.0.0.1:$1/health" >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.1
  done
  return 1
}

if [ "$arch" = aarch64 ]; then
  data=$(mktemp -d)
  port=$(free_port)
  ADMIN_PASSWORD=qemu-check qemu-aarch64 "$bin" serve --data-dir "$data/d" --port "$port" >/dev/null 2>&1 &
  pid=$!
  trap 'kill $pid 2>/dev/null || true; rm -rf "$data"' EXIT
  wait_health "$port" || { echo "the aarch64 binary did not answer under qemu" >&2; exit 1; }
  echo "runs under qemu-aarch64: /health answered"
  exit 0
fi

if [ "$(id -u)" = 0 ]; then
  root=$(mktemp -d)
  trap 'kill $pid 2>/dev/null || true; rm -rf "$root"' EXIT
  cp "$bin" "$root/crs"
  port=$(free_port)
  ADMIN_PASSWORD=chroot-check chroot "$root" /crs serve --data-dir /data --port "$port" >/dev/null 2>&1 &
  pid=$!
  wait_health "$port" || { echo "the static binary did not answer in the chroot" >&2; exit 1; }
  echo "runs in an empty chroot: /health answered"
else
  echo "not root: skipped the chroot check"
fi
