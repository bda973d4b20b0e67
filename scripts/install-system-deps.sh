#!/usr/bin/env bash
# Install the Debian packages the test suite drives for real:
#   tmux      -- `serve --tui` runs the interactive claude in tmux panes (tests/tui)
#   chromium  -- the dashboard's browser test (tests/dashboard): Playwright for Python drives
#                this system browser; `playwright install` (its own builds) is never run
# Idempotent: returns at once when every command is on PATH. Needs root (CI runs as root)
# or sudo; without either it says what to run and fails.
set -euo pipefail
missing=()
command -v tmux >/dev/null 2>&1 || missing+=(tmux)
command -v chromium >/dev/null 2>&1 || missing+=(chromium fonts-dejavu-core)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1; then
  sudo=(sudo)
else
  echo "install-system-deps.sh: need root to run: apt-get install -y ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -q
"${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
tmux -V
chromium --version
