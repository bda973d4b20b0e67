"""The claude backend's TUI driver: the interactive ``claude`` in tmux panes (``serve --tui``).

Theory of operation
-------------------
Same models, same login, same spawn home as the stream-json claude backend; only the
workers differ. With ``claude.tui`` on (``serve --tui``) the claude backend's pool factory
builds :class:`~.worker.TuiWorker` panes instead of stream-json processes (see
:data:`BACKEND`, which the claude package's factory defers to). The modules:

* :mod:`.argv` -- the pane's command line (:func:`build_pane_argv`);
* :mod:`.parser` -- the transcript lines, the debug log's retry lines and the screen;
* :mod:`.translator` -- one turn's transcript in, neutral events out (fail fast on
  upstream errors as the stream-json driver);
* :mod:`.tmux` -- the tmux commands, stale servers reaped at start;
* :mod:`.mcp` -- the loopback MCP server that hands a request's client tools to a pane;
* :mod:`.home` -- ``<state>/tui``: sockets, per-worker files, ``clibridge tui ls`` status;
* :mod:`.worker` -- :class:`~.worker.TuiWorker`, the pool's worker, and its pool factory;
* :mod:`.cli` -- ``clibridge tui ls`` / ``clibridge tui attach N``.

User-facing description, findings and limits: ``docs/tui.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Final

import attrs

from .. import Backend
from ..claude import BACKEND as CLAUDE
from .argv import build_pane_argv
from .parser import parse_debug_line, parse_transcript_line, screen_state
from .translator import TranscriptTranslator

if TYPE_CHECKING:
    from ..._config import Config
    from ..._janitor import Janitor
    from ..._pool import WorkerFactory

__all__ = [
    "BACKEND",
    "TranscriptTranslator",
    "build_pane_argv",
    "parse_debug_line",
    "parse_transcript_line",
    "screen_state",
]


def _pool_factory(
    config: Config,
    command: tuple[str, ...],
    state_dir: Path,
    janitor: Janitor | None,
    environ: Mapping[str, str],
    *,
    fake: bool,
) -> WorkerFactory:
    from .worker import make_tui_factory

    return make_tui_factory(config, command, state_dir, janitor, environ, fake=fake)


#: the claude backend with TUI workers: what ``claude`` serves when ``claude.tui`` is on
BACKEND: Final[Backend] = attrs.evolve(CLAUDE, pool_factory=_pool_factory)
