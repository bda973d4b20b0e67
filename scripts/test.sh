#!/usr/bin/env bash
# The one command that sets up and runs the whole test suite, real-CLI tests included:
#   ./scripts/test.sh            (extra arguments go to pytest, e.g. -k pool or -m "not realcli")
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/bootstrap.sh" dev
"$root/scripts/install-real-clis.sh"
"$root/scripts/install-openclaw.sh"
"$root/scripts/install-system-deps.sh"
"$root/scripts/install-litellm.sh"
"$root/scripts/install-aider.sh"
"$root/scripts/install-continue.sh"
cd "$root"
exec "$root/.venv/bin/python" -m pytest "$@"
