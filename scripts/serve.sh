#!/usr/bin/env bash
# The one command that sets up and starts the server:
#   ./scripts/serve.sh [clibridge serve flags...]
# With no logged-in claude / codex on this machine it runs on the bundled fake CLI and says so.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/bootstrap.sh" "" >&2
exec "$root/.venv/bin/clibridge" serve "$@"
