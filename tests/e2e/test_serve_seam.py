"""The in-process entry point tests and embedders use: ``serve(..., shutdown=trio.Event())``."""

from __future__ import annotations

import gc
from functools import partial
from pathlib import Path

import trio

from clibridge._supervisor import FAKE_CLAUDE_COMMAND, BackendChoice, serve

from .conftest import make_config


async def test_serve_accepts_a_trio_event(tmp_path: Path) -> None:
    """Regression: serve() evaluated ``shutdown or trio.Event()``, and a trio.Event has no
    truth value (NotImplementedError), so a caller's event crashed it at once."""
    config = make_config(tmp_path)
    choice = BackendChoice(claude=FAKE_CLAUDE_COMMAND, codex=None, fake=True, notes=())
    shutdown = trio.Event()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            host, port = await nursery.start(
                partial(serve, config, choice, {"PATH": "/usr/bin:/bin"}, shutdown=shutdown)
            )
            assert host == "127.0.0.1" and port > 0
            shutdown.set()


async def test_the_server_process_freezes_its_start_up_heap(tmp_path: Path) -> None:
    """``clibridge serve`` (``run`` passes ``settle_heap``) moves what start-up allocated
    out of the collector's reach once listening; an embedder's ``serve`` leaves its heap
    alone (it may serve many times in one process, as this suite does)."""
    config = make_config(tmp_path)
    choice = BackendChoice(claude=FAKE_CLAUDE_COMMAND, codex=None, fake=True, notes=())
    env = {"PATH": "/usr/bin:/bin"}
    gc.unfreeze()
    try:
        for settle, frozen in ((False, False), (True, True)):
            shutdown = trio.Event()
            with trio.fail_after(30):
                async with trio.open_nursery() as nursery:
                    await nursery.start(
                        partial(serve, config, choice, env, shutdown=shutdown, settle_heap=settle)
                    )
                    assert (gc.get_freeze_count() > 0) is frozen
                    shutdown.set()
    finally:
        gc.unfreeze()
