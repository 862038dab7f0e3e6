#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need, then runs them.
#   scripts/test.sh            # everything
#   scripts/test.sh relay      # extra args go to cargo test (e.g. a test-name filter)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*" >&2; }

# Real client CLIs for end-to-end tests (pinned in e2e/package-lock.json).
if [ ! -x e2e/node_modules/.bin/claude ] || [ ! -x e2e/node_modules/.bin/codex ] \
   || [ ! -x e2e/node_modules/.bin/gemini ] || [ e2e/package-lock.json -nt e2e/node_modules/.package-lock.json ]; then
  command -v npm >/dev/null || { echo "npm is required for the end-to-end tests" >&2; exit 1; }
  log "installing client CLIs into e2e/node_modules"
  (cd e2e && npm ci --no-audit --no-fund --loglevel=error)
fi

# Python clients (the OpenAI SDK), pinned in e2e/requirements.txt, in a virtualenv.
if [ ! -x e2e/.venv/bin/python ] || [ e2e/requirements.txt -nt e2e/.venv/installed ]; then
  command -v python3 >/dev/null || { echo "python3 is required for the end-to-end tests" >&2; exit 1; }
  log "installing Python clients into e2e/.venv"
  python3 -m venv e2e/.venv
  e2e/.venv/bin/pip install -q --disable-pip-version-check -r e2e/requirements.txt
  touch e2e/.venv/installed
fi

# Headless Chromium for the web UI tests (tests/suite/browser.rs), from Debian's packages.
if ! command -v chromium >/dev/null && [ ! -x /usr/bin/chromium ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  log "installing Chromium for the browser tests"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    chromium chromium-driver fonts-liberation >/dev/null
fi

# redis-server for the v1 import/export tests (tests/suite/import.rs), from Debian's packages.
if ! command -v redis-server >/dev/null; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  log "installing redis-server for the import tests"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi

# promtool (Debian's prometheus) checks the /metrics output (tests/suite/metrics.rs).
if ! command -v promtool >/dev/null; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  log "installing promtool for the metrics tests"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

# systemd-analyze checks the systemd unit, curl runs the install script (tests/suite/packaging.rs).
if ! command -v systemd-analyze >/dev/null || ! command -v curl >/dev/null; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  log "installing systemd and curl for the packaging tests"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd curl >/dev/null
fi

export CRS_E2E_REQUIRED=1
log "cargo test"
cargo test --all-targets --locked "$@"
