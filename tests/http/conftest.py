"""A scripted in-memory TurnService and real Hypercorn servers for the HTTP tests.

The service plays a :class:`Script` per model name: optional admission delay or error,
then steps (events, :class:`Sleep`, errors to raise). It records every turn: whether its
context was entered and exited, with which exception, and when.

``server`` runs the real app on Hypercorn on 127.0.0.1:0 inside the test's nursery (the
Quart test client deadlocks on streams). ``threaded_server`` runs one in a thread with its
own trio loop, for the synchronous SDK clients and Hypothesis.
"""

from __future__ import annotations

import threading
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import attrs
import pytest
import trio

from clibridge._config import ServerConfig
from clibridge._errors import BridgeError
from clibridge._events import Event, Finished, FinishReason, Request, TextDelta, TurnStarted, Usage
from clibridge._http import BridgeApp, create_app, serve_http
from clibridge._http._connections import ConnectionTable
from clibridge._service import ModelInfo, Readiness

MODEL = "claude-sonnet-4-5"
USAGE = Usage(input_tokens=11, output_tokens=7)


@attrs.frozen
class Sleep:
    seconds: float


Step = Event | Sleep | BridgeError


def hello(text: str = "Hello, world") -> list[Step]:
    half = len(text) // 2
    return [
        TurnStarted(MODEL),
        TextDelta(text[:half]),
        TextDelta(text[half:]),
        Finished(FinishReason.END_TURN, USAGE),
    ]


@attrs.define
class Script:
    steps: Iterable[Step] = attrs.field(factory=hello)
    enter_delay: float = 0.0
    enter_error: BridgeError | None = None


@attrs.define(eq=False)
class TurnRecord:
    request: Request
    entered: bool = False
    exit_exc: BaseException | None = None
    exited: bool = False
    exited_at: float | None = None
    sent: int = 0


class ScriptedService:
    """A TurnService that plays scripts; implements the seam the supervisor implements."""

    def __init__(self) -> None:
        self.scripts: dict[str, Script] = {}
        self.default = Script()
        self.records: list[TurnRecord] = []
        self._change = trio.Event()
        self.ready = Readiness(True, "scripted service: ready", fake=False)
        self.model_list: list[ModelInfo] = [
            ModelInfo(MODEL, "claude", MODEL, fake=True),
            ModelInfo("gpt-5", "codex", "gpt-5"),
        ]

    @asynccontextmanager
    async def turn(self, request: Request) -> AsyncIterator[AsyncIterator[Event]]:
        record = TurnRecord(request)
        self.records.append(record)
        self._changed()
        script = self.scripts.get(request.model, self.default)
        events = self._play(script.steps, record)
        try:
            if script.enter_delay:
                await trio.sleep(script.enter_delay)
            if script.enter_error is not None:
                raise script.enter_error
            record.entered = True
            self._changed()
            yield events
        except BaseException as exc:
            record.exit_exc = exc
            raise
        finally:
            with trio.CancelScope(shield=True):
                await events.aclose()
            record.exited = True
            record.exited_at = trio.current_time()
            self._changed()

    async def _play(
        self, steps: Iterable[Step], record: TurnRecord
    ) -> AsyncGenerator[Event, None]:
        for step in steps:
            if isinstance(step, Sleep):
                await trio.sleep(step.seconds)
            elif isinstance(step, BridgeError):
                raise step
            else:
                record.sent += 1
                self._changed()
                yield step
                await trio.lowlevel.checkpoint()

    def models(self) -> Sequence[ModelInfo]:
        return self.model_list

    def readiness(self) -> Readiness:
        return self.ready

    def statistics(self) -> Mapping[str, Any]:
        return {"turns": len(self.records)}

    def last(self) -> TurnRecord:
        return self.records[-1]

    def _changed(self) -> None:
        self._change.set()
        self._change = trio.Event()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Wait (bound it with trio.fail_after) until ``predicate()`` holds after a change."""
        while not predicate():
            await self._change.wait()


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
    **server: Any,
) -> AsyncIterator[RunningServer]:
    """The real app on Hypercorn on an ephemeral loopback port, for the test's duration
    (its open connections in ``connections`` when given)."""
    server.setdefault("drain_timeout", 2.0)
    config = ServerConfig(host="127.0.0.1", port=0, **server)
    service = service or ScriptedService()
    app = create_app(service, config)
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
