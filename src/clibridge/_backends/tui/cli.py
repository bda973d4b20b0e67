"""``clibridge tui ls`` / ``clibridge tui attach N``: watch the panes of a running ``serve --tui``.

Each worker writes ``<state>/tui/w<N>/status.json`` at every change of state (see
:mod:`.home`); ``ls`` prints them, ``attach`` runs ``tmux attach -r`` on worker N's socket:
read-only, so keys typed there never reach the CLI (detach with ``C-b d``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from .home import read_status, socket_dir
from .tmux import find_tmux

__all__ = ["attach_argv", "format_rows", "tui_command"]


def _age(since: Any, now: float) -> str:
    if not isinstance(since, (int, float)):
        return "-"
    seconds = max(0, int(now - since))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def format_rows(rows: Sequence[Mapping[str, Any]], now: float | None = None) -> list[str]:
    """The ``ls`` table: worker, state, conversation age, turns, model, pane pid."""
    now = time.time() if now is None else now
    out = [f"{'WORKER':>6}  {'STATE':<10}  {'CONVERSATION':>12}  {'TURNS':>5}  {'MODEL':<20}  PANE"]
    for row in sorted(rows, key=lambda r: int(r.get("worker", 0))):
        out.append(
            f"{row.get('worker', '?'):>6}  {row.get('state', '?')!s:<10}  "
            f"{_age(row.get('conversation_started'), now):>12}  {row.get('turns', 0):>5}  "
            f"{row.get('model', '')!s:<20}  {row.get('pane_pid') or '-'}"
        )
    return out


def attach_argv(tmux_bin: str, directory: Path, worker: int) -> list[str]:
    socket = socket_dir(directory) / f"w{worker}.sock"
    return [tmux_bin, "-u", "-S", str(socket), "attach-session", "-r", "-t", "w"]


def tui_command(
    action: str,
    worker: int | None,
    state_dir: Path,
    environ: Mapping[str, str],
    out: TextIO,
    err: TextIO,
) -> int:
    """Run ``clibridge tui ls`` or ``clibridge tui attach N``; the exit code."""
    directory = state_dir / "tui"
    rows = read_status(directory) if directory.is_dir() else []
    if action == "ls":
        if not rows:
            print(
                f"clibridge: no TUI workers under {directory} (is `serve --tui` running?)", file=err
            )
            return 1
        print("\n".join(format_rows(rows)), file=out)
        print("watch one read-only: clibridge tui attach N  (detach: C-b d)", file=out)
        return 0
    tmux_bin = find_tmux(environ)
    if tmux_bin is None:
        print("clibridge: error: tmux is not on PATH", file=err)
        return 2
    known = {int(r["worker"]) for r in rows if isinstance(r.get("worker"), int)}
    if worker not in known:
        listed = ", ".join(map(str, sorted(known))) or "none"
        print(f"clibridge: error: no TUI worker {worker} (running: {listed})", file=err)
        return 2
    argv = attach_argv(tmux_bin, directory, worker)
    os.execvpe(argv[0], argv, dict(environ))
    return 0  # pragma: no cover - exec does not return
