"""A scripted in-memory TurnService and real Hypercorn servers for the HTTP tests.

The service is :class:`clibridge.testing.scripted.ScriptedService` (re-exported here with
its script types for the tests of this folder).

``server`` runs the real app on Hypercorn on 127.0.0.1:0 inside the test's nursery (the
Quart test client deadlocks on streams). ``threaded_server`` runs one in a thread with its
own trio loop, for the synchronous SDK clients and Hypothesis.
"""

from __future__ import annotations

__all__ = [
    "MODEL",
    "USAGE",
    "RunningServer",
    "Script",
    "ScriptedService",
    "Sleep",
    "ThreadedServer",
    "TurnRecord",
    "hello",
    "open_server",
]

import threading
from collections.abc import (
    AsyncIterator,
    Iterator,
)
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import attrs
import pytest
import trio

from clibridge._config import ServerConfig
from clibridge._http import BridgeApp, create_app, serve_http
from clibridge._http._connections import ConnectionTable
from clibridge._http._keyring import KeyRing
from clibridge.testing.scripted import (
    MODEL,
    USAGE,
    Script,
    ScriptedService,
    Sleep,
    TurnRecord,
    hello,
)


@attrs.define
class RunningServer:
    base_url: str
    app: BridgeApp
    service: ScriptedService
    config: ServerConfig
    shutdown: trio.Event


@asynccontextmanager
async def open_server(
    service: ScriptedService | None = None,
    *,
    connections: ConnectionTable | None = None,
    keys: KeyRing | None = None,
    **server: Any,
) -> AsyncIterator[RunningServer]:
    """The real app on Hypercorn on an ephemeral loopback port, for the test's duration
    (its open connections in ``connections`` when given, its named keys in ``keys``)."""
    server.setdefault("drain_timeout", 2.0)
    config = ServerConfig(host="127.0.0.1", port=0, **server)
    service = service or ScriptedService()
    app = create_app(service, config, keys=keys)
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        host, port = await nursery.start(
            partial(
                serve_http, app, config, shutdown_trigger=shutdown.wait, connections=connections
            )
        )
        try:
            yield RunningServer(f"http://{host}:{port}", app, service, config, shutdown)
        finally:
            shutdown.set()


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    async with open_server() as running:
        yield running


class ThreadedServer:
    """A server on its own trio loop in a thread (for sync clients in the test thread)."""

    def __init__(self, **server: Any) -> None:
        self._server = server
        self.service = ScriptedService()
        self.base_url = ""
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with open_server(self.service, **self._server) as running:
            self.base_url = running.base_url
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> ThreadedServer:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("threaded server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._token is not None and self._stop is not None
        trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(10)


@pytest.fixture(scope="module")
def threaded_server() -> Iterator[ThreadedServer]:
    with ThreadedServer() as running:
        yield running
