#!/bin/sh
# Install crs from a release: picks the asset for this machine's architecture, checks its
# sha256 against the release's SHA256SUMS, installs the binary and the systemd unit, creates
# the `crs` user and starts the service.
#
#   curl -fsSL <release-url>/install.sh | sudo sh -s -- --base-url <release-url>
#
# <release-url> is where the release's assets are, e.g.
# https://github.com/<owner>/<repo>/releases/download/v0.1.0 (or a file:// directory).
#
# Options:
#   --base-url URL   where crs-linux-<arch>, SHA256SUMS and crs.service are (or CRS_RELEASE_URL)
#   --root DIR       install under DIR instead of / (no user, no systemctl; for packaging, tests)
#   --prefix DIR     binary in DIR/bin (default /usr/local)
#   --no-start       install, but do not enable or start the service
set -eu

base_url="${CRS_RELEASE_URL:-}"
root=""
prefix="/usr/local"
start=1

die() { echo "install.sh: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --base-url) base_url="${2:?}"; shift 2 ;;
    --root) root="${2:?}"; shift 2 ;;
    --prefix) prefix="${2:?}"; shift 2 ;;
    --no-start) start=0; shift ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
[ -n "$base_url" ] || die "--base-url (or CRS_RELEASE_URL) is required: the release's download URL"
base_url="${base_url%/}"

case "$(uname -m)" in
  x86_64|amd64) arch=x86_64 ;;
  aarch64|arm64) arch=aarch64 ;;
  *) die "no crs release for this architecture ($(uname -m)); build from source" ;;
esac
asset="crs-linux-$arch"

command -v curl >/dev/null || die "curl is required"
command -v sha256sum >/dev/null || die "sha256sum is required"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetching $asset from $base_url"
curl -fsSL -o "$tmp/$asset" "$base_url/$asset" || die "could not fetch $base_url/$asset"
curl -fsSL -o "$tmp/SHA256SUMS" "$base_url/SHA256SUMS" || die "could not fetch $base_url/SHA256SUMS"
curl -fsSL -o "$tmp/crs.service" "$base_url/crs.service" || die "could not fetch $base_url/crs.service"

expected=$(awk -v f="$asset" '$2 == f || $2 == "*" f { print $1 }' "$tmp/SHA256SUMS")
[ -n "$expected" ] || die "SHA256SUMS has no entry for $asset"
actual=$(sha256sum "$tmp/$asset" | awk '{ print $1 }')
[ "$expected" = "$actual" ] || die "checksum mismatch for $asset: expected $expected, got $actual"
echo "sha256 ok: $actual"

chmod 0755 "$tmp/$asset"
"$tmp/$asset" --version >/dev/null 2>&1 || die "$asset does not run on this machine"

bin="$root$prefix/bin/crs"
mkdir -p "$root$prefix/bin" "$root/etc/systemd/system" "$root/etc/crs"
# Replace the binary by rename, so a running server keeps its file (and a later
# `systemctl restart` or upgrade starts the new one).
cp "$tmp/$asset" "$bin.new"
mv -f "$bin.new" "$bin"
sed "s#/usr/local/bin/crs#$prefix/bin/crs#g" "$tmp/crs.service" >"$root/etc/systemd/system/crs.service"
chmod 0644 "$root/etc/systemd/system/crs.service"
[ -e "$root/etc/crs/crs.env" ] || printf '# Settings for crs (see the README), e.g.\n# HOST=0.0.0.0\n# PORT=3000\n' >"$root/etc/crs/crs.env"
echo "installed $bin ($("$bin" --version))"

if [ -n "$root" ]; then
  echo "installed under $root: no user created, service not started"
  exit 0
fi
if ! id crs >/dev/null 2>&1; then
  useradd --system --home-dir /var/lib/crs --no-create-home --shell /usr/sbin/nologin crs
  echo "created user crs"
fi
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  if [ "$start" = 1 ]; then
    systemctl enable --now crs
    echo "crs is running; the first start's admin password is in: journalctl -u crs"
  fi
else
  echo "systemd is not running here: start crs yourself (crs serve --data-dir /var/lib/crs)"
fi
