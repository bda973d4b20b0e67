"""The codex side of the one end-to-end harness (:mod:`tests.e2e.conftest`).

:func:`open_codex_server` is :func:`tests.e2e.conftest.open_e2e_server` with
``backend="codex"``, in the shape the codex tests outside ``tests/e2e`` (tools, openclaw)
still call it: ``real=`` a :class:`CodexSetup` instead of a command, ``with_claude`` for the
fake claude next to it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from clibridge._config import PoolConfig
from clibridge._supervisor import FAKE_CLAUDE_COMMAND
from clibridge.testing.realcli import CodexSetup
from tests.e2e.conftest import (
    BOUND,
    CODEX_POOL,
    E2EServer,
    open_e2e_server,
    real_codex_settings,
)

__all__ = ["BOUND", "CODEX_POOL", "CodexServer", "open_codex_server"]

#: the one server type; the name the codex tests outside tests/e2e import
CodexServer = E2EServer


@asynccontextmanager
async def open_codex_server(
    tmp: Path,
    *,
    scenario: Mapping[str, Any] | None = None,
    pool: PoolConfig = CODEX_POOL,
    threads_per_worker: int = 4,
    with_claude: bool = False,
    real: CodexSetup | None = None,
    server: Mapping[str, Any] | None = None,
) -> AsyncIterator[E2EServer]:
    """The server about the codex pool (see :func:`open_e2e_server`)."""
    kwargs: dict[str, Any] = {} if real is None else real_codex_settings(real)
    kwargs["codex_settings"] = {
        "threads_per_worker": threads_per_worker,
        **kwargs.get("codex_settings", {}),
    }
    async with open_e2e_server(
        tmp,
        backend="codex",
        scenario=scenario,
        pool=pool,
        server=server,
        command=FAKE_CLAUDE_COMMAND if with_claude else None,
        **kwargs,
    ) as running:
        yield running
