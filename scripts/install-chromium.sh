#!/usr/bin/env bash
# Install Debian's chromium for the dashboard's browser test (tests/dashboard): Playwright
# for Python drives this system browser; `playwright install` (its own downloaded builds)
# is never run. Idempotent: returns at once when `chromium` is on PATH.
# Needs root (CI runs as root) or sudo; without either it says what to run and fails.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  echo "chromium already installed: $(command -v chromium)"
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1; then
  sudo=(sudo)
else
  echo "install-chromium.sh: need root to run: apt-get install -y chromium" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -q
"${sudo[@]}" apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core
chromium --version
