"""Where TUI workers live: the claude spawn home plus a private directory for tmux.

Theory of operation
-------------------
A pane runs the interactive claude in the claude backend's spawn home and neutral work
dir (:func:`clibridge._backends.claude.home.prepare_claude_home`: onboarding done, the work
dir trusted, hooks and memory off). On top, the TUI needs its own 0700 directory
``<state>/tui/``::

    <state>/tui/w<N>.sock            worker N's tmux server socket (a state dir whose path
                                     is too long for a Unix socket: a 0700 directory
                                     under the temp dir named by its hash, :func:`socket_dir`)
    <state>/tui/w<N>/system.txt      the system prompt its pane was started with (0600)
    <state>/tui/w<N>/debug.log       the pane's --debug-file (upstream error attempts)
    <state>/tui/w<N>/status.json     what `clibridge tui ls` shows

The CLI writes its own records under the spawn home: ``.claude/sessions/<pid>.json``
(the session id in force; it changes at every ``/clear``) and the transcripts under
``.claude/projects/``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from ..._state_dir import PRIVATE_FILE_MODE, private_dir

__all__ = ["TuiLaunch", "approve_api_key", "read_status", "socket_dir", "tui_dir", "write_private"]


@attrs.frozen
class TuiLaunch:
    """Everything a TUI worker needs to start its tmux server and pane."""

    #: argv prefix of the interactive claude (or the fake)
    command: tuple[str, ...]
    #: the complete environment of the tmux server (and so of its panes)
    env: Mapping[str, str]
    #: the HOME the CLI runs with (its sessions and transcripts are under it)
    home: Path
    #: the neutral work dir
    workdir: Path
    #: ``<state>/tui``: sockets and per-worker files
    directory: Path
    tmux: str = "tmux"
    enable_cli_tools: bool = False
    #: put before the pane's argv: ``setpriv --pdeathsig KILL`` where available, so the
    #: pane's CLI dies with its tmux server (claude outlives a SIGHUP; observed)
    pane_prefix: tuple[str, ...] = ()

    def socket(self, worker_id: int) -> Path:
        return socket_dir(self.directory) / f"w{worker_id}.sock"

    def worker_dir(self, worker_id: int) -> Path:
        return private_dir(self.directory / f"w{worker_id}", under=self.directory)


def tui_dir(state_dir: Path) -> Path:
    return private_dir(state_dir / "tui", under=state_dir)


#: a Unix socket path longer than this cannot be bound (108 bytes with the NUL on Linux)
_MAX_SOCKET_PATH = 100


def socket_dir(directory: Path) -> Path:
    """Where the sockets of ``<state>/tui`` live: there, unless the path would be too long
    for a Unix socket; then a 0700 directory under the temp dir named by its hash."""
    if len(os.fsencode(directory / "w000.sock")) <= _MAX_SOCKET_PATH:
        return directory
    digest = hashlib.sha256(os.fsencode(directory.resolve())).hexdigest()[:16]
    short = Path(tempfile.gettempdir()) / f"clibridge-tui-{os.getuid()}-{digest}"
    short.mkdir(mode=0o700, exist_ok=True)
    if short.stat().st_uid != os.getuid():
        raise PermissionError(f"{short} belongs to another user")
    os.chmod(short, 0o700)
    return short


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` (0600), replacing it atomically."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
    with open(fd, "w", encoding="utf-8") as f:
        os.fchmod(fd, PRIVATE_FILE_MODE)
        f.write(text)
    tmp.replace(path)


def approve_api_key(home: Path, key: str) -> None:
    """Seed ``.claude.json`` so the interactive CLI does not ask whether to use ``key``.

    Only when the operator passed ``ANTHROPIC_API_KEY`` on purpose (``pass_env``): ``claude
    -p`` uses it without asking, the interactive CLI shows a dialog once and remembers the
    answer by the key's last 20 characters.
    """
    state_file = home / ".claude.json"
    try:
        state = json.loads(state_file.read_text())
        if not isinstance(state, dict):
            state = {}
    except (OSError, ValueError):
        state = {}
    responses = state.setdefault("customApiKeyResponses", {"approved": [], "rejected": []})
    approved = responses.setdefault("approved", [])
    if key[-20:] not in approved:
        approved.append(key[-20:])
    write_private(state_file, json.dumps(state, indent=2) + "\n")


def read_status(directory: Path) -> list[Mapping[str, Any]]:
    """The ``status.json`` of every worker under ``<state>/tui`` (for ``clibridge tui ls``)."""
    out: list[Mapping[str, Any]] = []
    for path in sorted(directory.glob("w*/status.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            out.append(data)
    return out
