"""ClaudeWorker: one ``claude`` stream-json process serving the pool (see ``_worker.py``).

Theory of operation
-------------------
:meth:`ClaudeWorker.run` owns the process (via :func:`clibridge._process.open_child`) and
one reader task, the *pump*, which is the only reader of stdout. The pump feeds a
:class:`~clibridge._backends.claude.ClaudeParser` and routes each record:

* ``control_response`` -> the waiter of that request id (readiness ping, initialize,
  set_model, interrupt);
* ``control_request`` from the CLI -> refused at once (no SDK MCP server is hosted yet),
  so the CLI never waits on us;
* everything else -> the channel of the exchange in progress (a turn or a ``/clear``),
  or logged and dropped between exchanges (e.g. the ``set_model`` replay line).

bind() and turn() run in the pool's task and talk to the CLI only through stdin lines
and those channels, so a slow HTTP client never stalls the pump (the turn channel is
unbounded; one turn's output is bounded by the model's output).

Failure handling: the process exiting ends the pump, which wakes every waiter and closes
the turn channel -> :class:`~clibridge._errors.CliCrashed` (``detail``: stderr tail).
Timeouts raise :class:`~clibridge._errors.TurnTimeout`; those, protocol errors, crashes and
unacknowledged interrupts set ``healthy = False`` so the pool retires the worker. A turn
left early (cancel, client gone, a fail-fast upstream error) sends ``interrupt`` and
waits up to ``interrupt_grace`` for the CLI's ``result``, shielded.

Re-binding: the first ``initialize`` fixes the system prompt for the life of the process
(a second ``initialize`` is answered with success but does not change it), so a worker
bound to a different system prompt or tool set raises
:class:`~clibridge._worker.WorkerUnusable`. The same setup is reused after ``/clear``
(which the CLI answers like a turn: ``system/init`` ... ``result``); a different model only
needs ``set_model``.

``turn()`` is an async generator: consume it inside ``contextlib.aclosing`` so leaving
early runs the interrupt path at once.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
from collections.abc import AsyncIterator
from typing import Final

import trio

from .._config import ClaudeConfig, PoolConfig
from .._errors import (
    BootError,
    BridgeError,
    CliCrashed,
    ModelNotFound,
    ProtocolError,
    TurnTimeout,
    UnsupportedFeature,
)
from .._events import Event, Request
from .._janitor import Janitor
from .._process import ChildProcess, ChildSpec, LineTooLong, open_child
from .._spawn_home import SpawnHome
from .._worker import Binding, WorkerUnusable
from . import claude
from .claude import (
    ClaudeParser,
    ControlRequest,
    ControlResponse,
    GarbageLine,
    NeedData,
    Record,
    Result,
    RetryPolicy,
    TurnTranslator,
)

log = logging.getLogger(__name__)

#: an unfinished stdout line longer than this is a protocol error (runaway output)
MAX_LINE_BYTES: Final = 64 * 1024 * 1024
#: after the process exits, how long to wait for the rest of its stderr
_STDERR_SETTLE: Final = 0.5


class _Waiter:
    __slots__ = ("done", "response")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.response: ControlResponse | None = None


def _argv_model(argv: tuple[str, ...]) -> str | None:
    for flag, value in itertools.pairwise(argv):
        if flag == "--model":
            return value
    return None


class ClaudeWorker:
    """A claude stream-json worker implementing :class:`clibridge._worker.Worker`."""

    def __init__(
        self,
        id: int,
        config: ClaudeConfig,
        pool: PoolConfig,
        launch: ChildSpec | SpawnHome,
        janitor: Janitor | None = None,
        *,
        model: str | None = None,
    ) -> None:
        """``launch`` is a ready :class:`ChildSpec` (argv, env, cwd), or a
        :class:`SpawnHome` from which the argv is built with ``model`` (optional: without it
        the first bind sets the model)."""
        self.id = id
        self.binding: Binding | None = None
        self.turns = 0
        self.started_at = 0.0
        self.healthy = True
        self.pid: int | None = None
        self._config = config
        self._pool = pool
        self._janitor = janitor
        if isinstance(launch, SpawnHome):
            argv = claude.build_argv(
                config.command, model=model, enable_cli_tools=config.enable_cli_tools
            )
            launch = launch.child_spec(argv)
        self._spec = launch
        #: the model the CLI currently uses, when known
        self.model = _argv_model(launch.argv)
        self._policy = RetryPolicy.from_config(config)
        self._child: ChildProcess | None = None
        self._send_lock = trio.Lock()
        self._waiters: dict[str, _Waiter] = {}
        self._exchange: trio.MemorySendChannel[Record] | None = None
        self._exited = trio.Event()
        self._pump_error: BridgeError | None = None
        self._ids = itertools.count(1)
        self._busy = False
        self._dirty = False  # the conversation holds a turn: /clear before reuse

    def __repr__(self) -> str:
        return f"<ClaudeWorker {self.id} pid={self.pid} healthy={self.healthy}>"

    # ------------------------------------------------------------------ life

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Spawn, answer the readiness ping, serve until cancelled or the process exits."""
        self.started_at = trio.current_time()
        boot_error: BootError | None = None
        spawned = False
        try:
            async with trio.open_nursery() as nursery:
                try:
                    async with open_child(
                        self._spec,
                        nursery=nursery,
                        kill_grace=self._pool.kill_grace,
                        janitor=self._janitor,
                        max_line=MAX_LINE_BYTES,
                    ) as child:
                        spawned = True
                        self._child = child
                        self.pid = child.pid
                        nursery.start_soon(self._pump, child)
                        try:
                            await self._handshake()
                        except BootError as exc:
                            boot_error = exc
                        else:
                            task_status.started()
                            await self._exited.wait()
                            log.info(
                                "claude worker %d (pid %d) exited: %s",
                                self.id,
                                child.pid,
                                child.returncode,
                            )
                except OSError as exc:
                    if spawned:
                        raise
                    boot_error = BootError(
                        f"cannot start the claude CLI {self._spec.argv[0]!r}: {exc}"
                    )
                nursery.cancel_scope.cancel()
        finally:
            self.healthy = False
            self._wake_all()
        if boot_error is not None:
            raise boot_error

    async def _handshake(self) -> None:
        rid = self._next_id("ready")
        try:
            response = await self._control(rid, claude.mcp_status_line(rid), "readiness ping")
        except (CliCrashed, TurnTimeout) as exc:
            raise BootError(
                f"claude worker {self.id} did not get ready: {exc.message}",
                detail=await self._stderr_tail(),
            ) from exc
        if not response.ok:
            raise BootError(
                f"claude refused the readiness ping: {response.error}",
                detail=await self._stderr_tail(),
            )

    # ------------------------------------------------------------------ pump

    async def _pump(self, child: ChildProcess) -> None:
        parser = ClaudeParser()
        try:
            while True:
                data = await child.receive_some()
                if not data:
                    break
                parser.receive_data(data)
                while not isinstance(record := parser.next_event(), NeedData):
                    await self._route(record)
                if parser.buffered > MAX_LINE_BYTES:
                    raise LineTooLong(f"a stdout line over {MAX_LINE_BYTES} bytes")
        except LineTooLong as exc:
            self._pump_error = ProtocolError(f"the claude CLI misbehaved: {exc}")
            self.healthy = False
        finally:
            self._exited.set()
            self._wake_all()

    async def _route(self, record: Record) -> None:
        if isinstance(record, ControlResponse):
            waiter = self._waiters.pop(record.request_id, None)
            if waiter is None:
                log.debug("worker %d: unexpected control_response %s", self.id, record.request_id)
                return
            waiter.response = record
            waiter.done.set()
        elif isinstance(record, ControlRequest):
            log.warning("worker %d: refusing the CLI's %r control request", self.id, record.subtype)
            with contextlib.suppress(BridgeError):  # a dead CLI ends the pump by itself
                await self._send(
                    claude.control_error_line(
                        record.request_id, f"clibridge does not handle {record.subtype!r} yet"
                    )
                )
        elif self._exchange is not None:
            self._exchange.send_nowait(record)
        elif isinstance(record, GarbageLine):
            log.warning("worker %d: skipping a non-JSON line: %.200s", self.id, record.text)
        else:
            log.debug("worker %d: dropping %s between turns", self.id, type(record).__name__)

    def _wake_all(self) -> None:
        for waiter in self._waiters.values():
            waiter.done.set()
        self._waiters.clear()
        if self._exchange is not None:
            self._exchange.close()

    # ------------------------------------------------------------------ plumbing

    def _next_id(self, kind: str) -> str:
        return f"{kind}-{self.id}-{next(self._ids)}"

    async def _stderr_tail(self) -> str:
        child = self._child
        if child is None:
            return ""
        # the process just died: let its last words arrive
        with trio.move_on_after(_STDERR_SETTLE):
            await child.stderr_closed.wait()
        return child.stderr_tail()

    async def _crashed(self, what: str) -> BridgeError:
        self.healthy = False
        if self._pump_error is not None:
            return self._pump_error
        child = self._child
        code = None
        if child is not None:
            with trio.move_on_after(_STDERR_SETTLE):
                code = await child.wait()
        tail = await self._stderr_tail()
        last = tail.strip().splitlines()[-1][:300] if tail.strip() else ""
        return CliCrashed(
            f"the claude CLI exited (code {code}) during {what}" + (f": {last}" if last else ""),
            detail=tail,
        )

    async def _send(self, line: bytes) -> None:
        child = self._child
        if child is None or self._exited.is_set():
            raise await self._crashed("a write")
        async with self._send_lock:
            try:
                await child.send_line(line)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                raise await self._crashed("a write") from None

    async def _control(self, rid: str, line: bytes, what: str) -> ControlResponse:
        """Send a control request and wait (up to ready_timeout) for its response."""
        timeout = self._pool.ready_timeout
        waiter = self._waiters[rid] = _Waiter()
        await self._send(line)
        with trio.move_on_after(timeout):
            await waiter.done.wait()
        self._waiters.pop(rid, None)
        if waiter.response is not None:
            return waiter.response
        if self._exited.is_set():
            raise await self._crashed(what)
        self.healthy = False
        raise TurnTimeout(f"the claude CLI did not answer its {what} within {timeout:g} s")

    def _enter(self) -> None:
        if self._busy:
            raise RuntimeError(f"claude worker {self.id} is already serving a call")
        if not self.healthy or self._child is None or self._exited.is_set():
            raise WorkerUnusable(f"claude worker {self.id} is not usable")
        self._busy = True

    # ------------------------------------------------------------------ bind

    async def bind(self, binding: Binding) -> None:
        """Initialize (fresh) or /clear (same setup) and set the model; see module doc."""
        if self.binding is not None and not self.binding.same_conversation_setup(binding):
            raise WorkerUnusable(
                f"claude worker {self.id} is bound to another system prompt or tool set"
            )
        self._enter()
        try:
            try:
                if self.binding is None:
                    rid = self._next_id("init")
                    response = await self._control(
                        rid, claude.initialize_line(rid, binding.system), "initialize"
                    )
                    if not response.ok:
                        self.healthy = False
                        raise BootError(f"claude refused initialize: {response.error}")
                    self.binding = Binding(binding.system, binding.tools_key, self.model or "")
                elif self._dirty:
                    await self._clear()
                if binding.model != self.model:
                    rid = self._next_id("model")
                    response = await self._control(
                        rid, claude.set_model_line(rid, binding.model), "set_model"
                    )
                    if not response.ok:
                        raise ModelNotFound(
                            f"the claude CLI refused model {binding.model!r}: {response.error}"
                        )
                    self.model = binding.model
            except TurnTimeout as exc:
                raise BootError(
                    f"claude worker {self.id} could not be bound: {exc.message}"
                ) from exc
            self.binding = binding
        finally:
            self._busy = False

    async def _clear(self) -> None:
        timeout = self._pool.ready_timeout
        send, receive = trio.open_memory_channel[Record](math.inf)
        self._exchange = send
        try:
            await self._send(claude.clear_line())
            with trio.move_on_after(timeout):
                async for record in receive:
                    if isinstance(record, Result):
                        self._dirty = False
                        return
                raise await self._crashed("/clear")
            self.healthy = False
            raise TurnTimeout(f"the claude CLI did not finish /clear within {timeout:g} s")
        finally:
            self._exchange = None
            send.close()

    # ------------------------------------------------------------------ turn

    async def turn(self, request: Request) -> AsyncIterator[Event]:
        """One turn's neutral events; raises a BridgeError on failure (see module doc)."""
        if request.tools:
            raise UnsupportedFeature(
                "client tools are not supported by the claude backend yet", param="$.tools"
            )
        content = claude.render_user_content(request.messages)
        self._enter()
        translator = TurnTranslator(self._policy, self.model or request.model)
        send, receive = trio.open_memory_channel[Record](math.inf)
        self._exchange = send
        self._dirty = True
        self.turns += 1
        pool = self._pool
        deadline = trio.current_time() + pool.turn_timeout
        try:
            await self._send(claude.user_line(content))
            while not translator.done:
                idle_deadline = trio.current_time() + pool.stream_idle_timeout
                record: Record | None = None
                with trio.move_on_at(min(deadline, idle_deadline)):
                    try:
                        record = await receive.receive()
                    except trio.EndOfChannel:
                        raise await self._crashed("a turn") from None
                if record is None:
                    self.healthy = False
                    if trio.current_time() >= deadline:
                        raise TurnTimeout(
                            f"the turn took longer than turn_timeout ({pool.turn_timeout:g} s)"
                        )
                    raise TurnTimeout(
                        f"the claude CLI said nothing for {pool.stream_idle_timeout:g} s "
                        "(stream_idle_timeout)"
                    )
                try:
                    events = translator.feed(record)
                except ProtocolError:
                    self.healthy = False
                    raise
                for event in events:
                    yield event
        finally:
            try:
                if not translator.done and self.healthy and not self._exited.is_set():
                    await self._interrupt(receive)
            finally:
                self._exchange = None
                send.close()
                self._busy = False

    async def _interrupt(self, receive: trio.MemoryReceiveChannel[Record]) -> None:
        """Stop the running turn; unhealthy unless the CLI ends it within interrupt_grace."""
        with trio.CancelScope(shield=True):
            ended = False
            with trio.move_on_after(self._pool.interrupt_grace):
                rid = self._next_id("interrupt")
                try:
                    self._waiters[rid] = _Waiter()
                    await self._send(claude.interrupt_line(rid))
                    async for record in receive:
                        if isinstance(record, Result):
                            ended = True
                            break
                except BridgeError:
                    pass
                finally:
                    self._waiters.pop(rid, None)
            if not ended:
                log.warning(
                    "claude worker %d did not end its turn within interrupt_grace; retiring it",
                    self.id,
                )
                self.healthy = False
