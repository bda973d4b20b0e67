"""CliSession: the transport both backends' workers share with their CLI process.

Theory of operation
-------------------
A worker (``claude/worker.py``, ``codex/worker.py``) talks to one CLI child that speaks
one JSON object per line on stdin/stdout. Everything that does not depend on *what* those
lines say lives here, once:

* **spawn** -- :meth:`CliSession.run` hosts the child through
  :func:`~clibridge._backends._host.host_child` (process group, readiness handshake,
  teardown, exit watch); the worker's ``on_spawned`` hook and ``handshake`` plug in.
* **pump** -- the only reader of stdout: bytes go into a
  :class:`~clibridge._backends._lines.LineBuffer`, each whole line through the worker's
  ``parse`` function (bytes -> record) and then to the worker's ``route`` coroutine. An
  unfinished line over ``max_line`` bytes (one limit for every CLI:
  :data:`clibridge._process.MAX_LINE_BYTES`, 64 MiB) is a protocol error (runaway output): the pump
  stops, the worker turns unhealthy and every later failure reports that
  :class:`~clibridge._errors.ProtocolError` instead of a crash.
* **correlation** -- :meth:`CliSession.call` registers a waiter under a request id, sends
  the line and waits up to a timeout; the worker's router hands responses back with
  :meth:`CliSession.resolve`. When the process exits (stdout EOF) every waiter is woken
  and the worker's ``on_exit`` hook closes its own channels; a woken call without a
  response raises :class:`~clibridge._errors.CliCrashed` with the CLI's exit code and
  stderr tail, an unanswered one :class:`~clibridge._errors.TurnTimeout`.
* **send** -- :meth:`CliSession.send` writes one line under a lock, counts the bytes, and
  maps a closed pipe (or a process already gone) to the crash error.

The worker keeps its protocol: what a record is, how it is routed, the handshake, and its
bind/turn logic. ``unhealthy`` is called whenever the session learns the worker must not be
reused (crash, protocol error, timeout).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

import trio

from .._errors import BridgeError, ProtocolError, TurnTimeout
from .._janitor import Janitor
from .._process import MAX_LINE_BYTES, ChildProcess, ChildSpec, LineTooLong
from ._host import crash_error, host_child, settled_stderr_tail
from ._lines import LineBuffer

log = logging.getLogger(__name__)

R = TypeVar("R")  # a parsed stdout record
K = TypeVar("K", bound=Hashable)  # a request id
P = TypeVar("P")  # a response record


class _Waiter(Generic[P]):
    __slots__ = ("done", "response")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.response: P | None = None


class CliSession(Generic[R, K, P]):
    """One CLI child's transport; see the module docstring."""

    def __init__(
        self,
        spec: ChildSpec,
        *,
        cli: str,
        worker_id: int,
        kill_grace: float,
        janitor: Janitor | None,
        parse: Callable[[bytes], R],
        route: Callable[[R], Awaitable[None]],
        unhealthy: Callable[[], None],
        on_exit: Callable[[], None] = lambda: None,
        max_line: int = MAX_LINE_BYTES,
    ) -> None:
        self.spec = spec
        self.cli = cli
        self._worker_id = worker_id
        self._kill_grace = kill_grace
        self._janitor = janitor
        self._max_line = max_line
        self._parse = parse
        self._route = route
        self._unhealthy = unhealthy
        self._on_exit = on_exit
        self.child: ChildProcess | None = None
        #: set at stdout EOF (or by a worker ending its own process)
        self.exited = trio.Event()
        self.pump_error: BridgeError | None = None
        self._send_lock = trio.Lock()
        self._waiters: dict[K, _Waiter[P]] = {}
        #: bytes written to the CLI's stdin (benchmarks read it)
        self.bytes_written = 0

    # ------------------------------------------------------------------ life

    async def run(
        self,
        *,
        on_spawned: Callable[[ChildProcess, trio.Nursery], None],
        handshake: Callable[[], Awaitable[None]],
        task_status: trio.TaskStatus[None],
    ) -> None:
        """Host the child until it exits or the scope is cancelled (``host_child``)."""

        def spawned(child: ChildProcess, nursery: trio.Nursery) -> None:
            self.child = child
            on_spawned(child, nursery)
            nursery.start_soon(self._pump, child)

        try:
            await host_child(
                self.spec,
                cli=self.cli,
                worker_id=self._worker_id,
                kill_grace=self._kill_grace,
                janitor=self._janitor,
                max_line=self._max_line,
                on_spawned=spawned,
                handshake=handshake,
                exited=self.exited,
                task_status=task_status,
            )
        finally:
            self._unhealthy()
            self._wake_all()

    async def _pump(self, child: ChildProcess) -> None:
        lines = LineBuffer()
        try:
            while True:
                data = await child.receive_some()
                if not data:
                    break
                lines.receive_data(data)
                while (raw := lines.next_line()) is not None:
                    await self._route(self._parse(raw))
                if lines.buffered > self._max_line:
                    raise LineTooLong(f"a stdout line over {self._max_line} bytes")
        except LineTooLong as exc:
            self.pump_error = ProtocolError(f"the {self.cli} CLI misbehaved: {exc}")
            self._unhealthy()
        finally:
            self.exited.set()
            self._wake_all()

    def _wake_all(self) -> None:
        for waiter in self._waiters.values():
            waiter.done.set()
        self._waiters.clear()
        self._on_exit()

    # ------------------------------------------------------------------ failures

    async def stderr_tail(self) -> str:
        return await settled_stderr_tail(self.child)

    async def crashed(self, what: str) -> BridgeError:
        """The error for a process found gone during ``what`` (the worker turns unhealthy)."""
        self._unhealthy()
        if self.pump_error is not None:
            return self.pump_error
        return await crash_error(self.child, cli=self.cli, what=what)

    # ------------------------------------------------------------------ stdin

    async def send(self, line: bytes) -> None:
        """Write one line; a process that is gone raises its crash error."""
        child = self.child
        if child is None or self.exited.is_set():
            raise await self.crashed("a write")
        async with self._send_lock:
            self.bytes_written += len(line) + 1
            try:
                await child.send_line(line)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                raise await self.crashed("a write") from None

    # ------------------------------------------------------------------ correlation

    def expect(self, key: K) -> None:
        """Register a waiter for ``key`` whose response nobody awaits (see :meth:`forget`)."""
        self._waiters[key] = _Waiter()

    def forget(self, key: K) -> None:
        self._waiters.pop(key, None)

    def resolve(self, key: K, response: P) -> bool:
        """Hand ``response`` to the waiter of ``key``; False when nobody waits for it."""
        waiter = self._waiters.pop(key, None)
        if waiter is None:
            return False
        waiter.response = response
        waiter.done.set()
        return True

    async def call(self, key: K, line: bytes, what: str, *, within: float, asked: str) -> P:
        """Send ``line`` and wait up to ``within`` seconds for the response to ``key``.

        A process that exits meanwhile raises its crash error (``during {what}``); no
        answer within that turns the worker unhealthy and raises TurnTimeout naming ``asked``.
        """
        waiter: _Waiter[P] = _Waiter()
        self._waiters[key] = waiter
        try:
            await self.send(line)
            with trio.move_on_after(within):
                await waiter.done.wait()
        finally:
            self._waiters.pop(key, None)
        if waiter.response is not None:
            return waiter.response
        if self.exited.is_set():
            raise await self.crashed(what)
        self._unhealthy()
        raise TurnTimeout(f"the {self.cli} CLI did not answer {asked} within {within:g} s")
