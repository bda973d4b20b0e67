"""ClaudeWorker: one ``claude`` stream-json process serving the pool (see ``_worker.py``).

Theory of operation
-------------------
:meth:`ClaudeWorker.run` owns the process through a
:class:`~clibridge._backends._session.CliSession` (spawn via
:func:`clibridge._process.open_child`, the *pump* -- the only reader of stdout --,
control request/response correlation, writes, crash mapping, stderr tail). The pump
parses each line into a record (:func:`~clibridge._backends.claude.parser.parse_line`)
and this worker routes it:

* ``control_response`` -> the waiter of that request id (readiness ping, initialize,
  set_model, interrupt);
* ``control_request`` ``mcp_message`` from the CLI -> the SDK MCP server ``client`` that
  hosts the request's tools (below); any other control request is refused at once, so
  the CLI never waits on us;
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
needs ``set_model``. The ``/clear`` runs when the pool releases the worker
(:meth:`ClaudeWorker.reset_soon`, in the worker's own task), so the next ``bind`` finds
it done or waits only for the rest of it; ``bind`` clears itself only when that did not
happen.

``turn()`` is an async generator: consume it inside ``contextlib.aclosing`` so leaving
early runs the interrupt path at once.

Client tools
------------
Every worker is spawned with the SDK MCP server ``client`` on its stdio and
``--allowedTools mcp__client`` (all of that server's tools), before any request is known.
The CLI connects to that server while it boots and asks ``tools/list`` once; it times out
its own MCP requests after 30 s and then runs tool-less for good (observed, FINDINGS.md),
so every ``mcp_message`` is answered at once -- ``tools/list`` with the tools the worker
has now, none before its first bind. A binding whose tool set differs from what the CLI
last listed *publishes* it: ``mcp_set_servers`` without, then with ``client`` makes the CLI
connect anew and list again, and ``mcp_status`` must then show exactly the binding's
tools, else the worker is unusable and the pool takes another. Each turn's ``system/init``
is checked once more against the tool set (:class:`~clibridge._errors.ToolsUnavailable`
on a mismatch: the worker is retired and the supervisor retries once on another). The
translator never reports a call of a tool the CLI does not list (the CLI rejects it
itself and goes on with the turn).

When a model message ends with ``stop_reason: tool_use`` the turn's event stream ends
with the calls and ``Finished(TOOL_USE)`` while the CLI waits on its ``tools/call``: the
worker is :attr:`paused` (mid-turn, its stdout still routed to the paused turn). The next
``turn(request, tool_results=...)`` answers the pending calls in the order the model
made them -- the CLI sends the next ``tools/call`` only after the previous one was
answered -- and streams the continuation. A paused worker refuses ``bind`` (the pool then
retires it) and plain turns.

Continuation: ``turn(request, messages=...)`` writes only ``messages`` into the
conversation the worker already holds (no ``/clear``); the supervisor decides when that is
faithful (:mod:`clibridge._conversations`).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

from ..._config import ClaudeConfig, Config, PoolConfig
from ..._errors import (
    BootError,
    BridgeError,
    CliCrashed,
    ModelNotFound,
    ProtocolError,
    ToolsUnavailable,
    TurnTimeout,
)
from ..._events import Event, Message, Request, ToolCallStart, ToolResultPart, ToolSpec
from ..._janitor import Janitor
from ..._process import ChildProcess, ChildSpec
from ..._usage import UsageMeter, claude_window
from ..._worker import Binding, WorkerUnusable
from .. import claude
from .._env import with_fake_knobs
from .._session import CliSession
from .._worker_base import OneConversationWorker
from . import (
    ALIASES,
    ControlRequest,
    ControlResponse,
    GarbageLine,
    Record,
    Result,
    RetryPolicy,
    SystemInit,
    TurnTranslator,
)
from .home import SpawnHome, prepare_claude_home
from .parser import OtherMessage, parse_line
from .tools import CLIENT_MCP_SERVER, CLIENT_TOOL_PREFIX

log = logging.getLogger(__name__)


@attrs.define
class SpawnModel:
    """The ``--model`` new workers of a pool are spawned with: the last one bound.

    Why: a worker whose first bind needs ``set_model`` makes the CLI put a ``/model``
    command echo behind a ``<local-command-caveat>`` in front of the first upstream message
    (observed with 2.1.197); spawned with the model the requests ask for, it needs none.
    """

    model: str


@attrs.define(eq=False)
class _Paused:
    """A turn waiting for the client's tool results: what its continuation needs."""

    translator: TurnTranslator
    send: trio.MemorySendChannel[Record]
    receive: trio.MemoryReceiveChannel[Record]
    #: the CLI's tool_use ids of the calls the client got, in order
    calls: tuple[str, ...]


def _argv_model(argv: tuple[str, ...]) -> str | None:
    for flag, value in itertools.pairwise(argv):
        if flag == "--model":
            return value
    return None


def _listed_tools(status: Mapping[str, Any] | None) -> list[str] | None:
    """The tool names ``mcp_status`` reports for our SDK server, None while not connected."""
    servers = (status or {}).get("mcpServers")
    for server in servers if isinstance(servers, list) else []:
        if isinstance(server, Mapping) and server.get("name") == CLIENT_MCP_SERVER:
            if server.get("status") != "connected":
                return None
            tools = server.get("tools")
            return sorted(
                str(t.get("name"))
                for t in (tools if isinstance(tools, list) else [])
                if isinstance(t, Mapping)
            )
    return None


class ClaudeWorker(OneConversationWorker):
    """A claude stream-json worker implementing :class:`clibridge._worker.Worker`."""

    label = "claude worker"

    def __init__(
        self,
        id: int,
        config: ClaudeConfig,
        pool: PoolConfig,
        launch: ChildSpec | SpawnHome,
        janitor: Janitor | None = None,
        *,
        model: str | None = None,
        spawn_model: SpawnModel | None = None,
    ) -> None:
        """``launch`` is a ready :class:`ChildSpec` (argv, env, cwd), or a
        :class:`SpawnHome` from which the argv is built with ``model`` (optional: without it
        the first bind sets the model)."""
        super().__init__(id, pool)
        #: the pool's meter of the subscription windows (rate_limit_event lines)
        self.usage: UsageMeter | None = None
        self._config = config
        self._spawn_model = spawn_model
        if isinstance(launch, SpawnHome):
            argv = claude.build_argv(
                config.command,
                model=model or (spawn_model.model if spawn_model else None),
                enable_cli_tools=config.enable_cli_tools,
                host_client_tools=True,
            )
            launch = launch.child_spec(argv)
        #: the model the CLI currently uses, when known
        self.model = _argv_model(launch.argv)
        self._policy = RetryPolicy.from_config(config)
        self._session: CliSession[Record, str, ControlResponse] = CliSession(
            launch,
            cli="claude",
            worker_id=id,
            kill_grace=pool.kill_grace,
            janitor=janitor,
            parse=parse_line,
            route=self._route,
            unhealthy=self._unhealthy,
            on_exit=self._wake_exchange,
        )
        self._exited = self._session.exited
        self._exchange: trio.MemorySendChannel[Record] | None = None
        self._ids = itertools.count(1)
        #: the argv hosts the SDK MCP server: initialize must name it
        self._sdk_mcp = "--mcp-config" in launch.argv
        #: the tools the SDK MCP server lists (the binding's, once published)
        self._tools: tuple[ToolSpec, ...] = ()
        #: the tools_key whose tools the CLI has taken (checked through mcp_status)
        self._published: object = ()
        #: the CLI's tools/call requests not answered yet, by tool_use id
        self._tool_calls: dict[str, ControlRequest] = {}
        self._tool_call_arrived = trio.Event()
        self._paused: _Paused | None = None

    @property
    def bytes_written(self) -> int:
        """Bytes written to the CLI's stdin (benchmarks read it)."""
        return self._session.bytes_written

    @property
    def paused(self) -> bool:
        """Mid-turn, waiting for the client's tool results."""
        return self._paused is not None

    def holds_paused_calls(self, call_ids: Iterable[str]) -> bool:
        """True when the turn waits for exactly these tool calls (the CLI's ids)."""
        wanted = set(call_ids)
        return self._paused is not None and bool(wanted) and set(self._paused.calls) == wanted

    def __repr__(self) -> str:
        return f"<ClaudeWorker {self.id} pid={self.pid} healthy={self.healthy}>"

    # ------------------------------------------------------------------ life

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Spawn, answer the readiness ping, serve until cancelled or the process exits."""
        self.started_at = trio.current_time()
        await self._session.run(
            on_spawned=self._on_spawned, handshake=self._handshake, task_status=task_status
        )

    def _on_spawned(self, child: ChildProcess, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        # a turn that runs or waits for tool results: stopping politely would let the CLI
        # finish it with one more (paid, unread) model request
        child.holds_work = lambda: self._exchange is not None or self._paused is not None
        self.pid = child.pid

    async def _handshake(self) -> None:
        rid = self._next_id("ready")
        try:
            response = await self._control(rid, claude.mcp_status_line(rid), "readiness ping")
        except (CliCrashed, TurnTimeout) as exc:
            raise BootError(
                f"claude worker {self.id} did not get ready: {exc.message}",
                detail=await self._session.stderr_tail(),
            ) from exc
        if not response.ok:
            raise BootError(
                f"claude refused the readiness ping: {response.error}",
                detail=await self._session.stderr_tail(),
            )

    # ------------------------------------------------------------------ routing

    async def _route(self, record: Record) -> None:
        if isinstance(record, OtherMessage) and record.type == "rate_limit_event":
            # the subscription window the CLI read from the response headers (_usage.py)
            window = claude_window(record.raw.get("rate_limit_info"))
            if window is not None and self.usage is not None:
                self.usage.update(window)
        elif isinstance(record, ControlResponse):
            if not self._session.resolve(record.request_id, record):
                log.debug("worker %d: unexpected control_response %s", self.id, record.request_id)
        elif isinstance(record, ControlRequest) and record.subtype == "mcp_message":
            with contextlib.suppress(BridgeError):  # a dead CLI ends the pump by itself
                await self._on_mcp(record)
        elif isinstance(record, ControlRequest):
            log.warning("worker %d: refusing the CLI's %r control request", self.id, record.subtype)
            with contextlib.suppress(BridgeError):  # a dead CLI ends the pump by itself
                await self._session.send(
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

    async def _on_mcp(self, record: ControlRequest) -> None:
        message = record.request.get("message")
        if not isinstance(message, Mapping):
            message = {}
        method = message.get("method")
        if method == "tools/call":
            if self._exchange is None:
                refusal = claude.mcp_tool_result(
                    message, "no turn is waiting for this call", is_error=True
                )
                await self._session.send(claude.mcp_response_line(record.request_id, refusal))
                return
            self._tool_calls[claude.tool_use_id(message)] = record
            self._tool_call_arrived.set()
            self._tool_call_arrived = trio.Event()
            return
        reply = claude.mcp_reply(message, self._tools)
        if reply is not None:
            await self._session.send(claude.mcp_response_line(record.request_id, reply))

    def _wake_exchange(self) -> None:
        """The process is gone: a waiting tool call and the exchange see it (a crash)."""
        self._tool_call_arrived.set()
        if self._exchange is not None:
            self._exchange.close()

    # ------------------------------------------------------------------ plumbing

    def _next_id(self, kind: str) -> str:
        return f"{kind}-{self.id}-{next(self._ids)}"

    async def _control(self, rid: str, line: bytes, what: str) -> ControlResponse:
        """Send a control request and wait (up to ready_timeout) for its response."""
        return await self._session.call(
            rid, line, what, within=self._pool.ready_timeout, asked=f"its {what}"
        )

    def _alive(self) -> bool:
        return self._session.child is not None and not self._exited.is_set()

    # ------------------------------------------------------------------ bind

    async def bind(self, binding: Binding) -> None:
        """Initialize (fresh) or /clear (same setup) and set the model; see module doc."""
        await self._reset_done()
        if self.binding is not None and not self.binding.same_conversation_setup(binding):
            raise WorkerUnusable(
                f"claude worker {self.id} is bound to another system prompt or tool set"
            )
        if self._paused is not None:
            raise WorkerUnusable(f"claude worker {self.id} is mid-turn, waiting for tool results")
        if binding.tools_key and not self._sdk_mcp:
            raise WorkerUnusable(f"claude worker {self.id} was spawned without client tools")
        self._enter()
        try:
            try:
                if self.binding is None:
                    rid = self._next_id("init")
                    response = await self._control(
                        rid,
                        claude.initialize_line(rid, binding.system, sdk_mcp=self._sdk_mcp),
                        "initialize",
                    )
                    if not response.ok:
                        self.healthy = False
                        raise BootError(f"claude refused initialize: {response.error}")
                    if binding.tools_key != self._published:
                        await self._publish_tools(binding.tools_key)
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
                if self._spawn_model is not None:
                    self._spawn_model.model = binding.model
            except TurnTimeout as exc:
                raise BootError(
                    f"claude worker {self.id} could not be bound: {exc.message}"
                ) from exc
            self.binding = binding
        finally:
            self._busy = False

    async def _publish_tools(self, tools_key: object) -> None:
        """Make the CLI list ``tools_key``'s tools (module doc); WorkerUnusable if it won't."""
        self._tools = claude.tools_from_key(tools_key)
        for with_client in (False, True):
            rid = self._next_id("servers")
            response = await self._control(
                rid, claude.mcp_set_servers_line(rid, with_client=with_client), "mcp_set_servers"
            )
            if not response.ok:
                raise WorkerUnusable(
                    f"claude worker {self.id}: mcp_set_servers refused: {response.error}"
                )
        want = sorted(t.name for t in self._tools)
        listed: list[str] | None = None
        with trio.move_on_after(self._pool.ready_timeout):
            while True:
                rid = self._next_id("tools")
                status = await self._control(rid, claude.mcp_status_line(rid), "mcp_status")
                listed = _listed_tools(status.response)
                if listed == want:
                    self._published = tools_key
                    return
                await trio.sleep(0.01)
        self.healthy = False
        raise WorkerUnusable(
            f"claude worker {self.id} did not take the request's tools "
            f"(wanted {want}, the CLI lists {listed})"
        )

    def _check_tools(self, init: SystemInit) -> None:
        """The turn's ``system/init`` must list exactly the published client tools."""
        names = init.raw.get("tools")
        got = sorted(
            str(n).removeprefix(CLIENT_TOOL_PREFIX)
            for n in (names if isinstance(names, list) else [])
            if str(n).startswith(CLIENT_TOOL_PREFIX)
        )
        want = sorted(t.name for t in self._tools)
        if self._sdk_mcp and got != want:
            self.healthy = False
            log.warning(
                "claude worker %d: the CLI's tools %s are not the request's %s; retiring it",
                self.id,
                got,
                want,
            )
            raise ToolsUnavailable(
                f"the claude CLI did not take the request's tools (it lists {got}, "
                f"the request has {want})"
            )

    async def _clear(self) -> None:
        timeout = self._pool.ready_timeout
        send, receive = trio.open_memory_channel[Record](math.inf)
        self._exchange = send
        try:
            await self._session.send(claude.clear_line())
            with trio.move_on_after(timeout):
                async for record in receive:
                    if isinstance(record, Result):
                        self._dirty = False
                        return
                raise await self._session.crashed("/clear")
            self.healthy = False
            raise TurnTimeout(f"the claude CLI did not finish /clear within {timeout:g} s")
        finally:
            self._exchange = None
            send.close()

    # ------------------------------------------------------------------ turn

    async def turn(
        self,
        request: Request,
        *,
        messages: Sequence[Message] | None = None,
        tool_results: Mapping[str, ToolResultPart] | None = None,
    ) -> AsyncIterator[Event]:
        """One turn's neutral events; raises a BridgeError on failure (see module doc).

        Plain: a fresh conversation carrying all of ``request.messages``. ``messages``:
        only these are written, continuing the conversation the worker holds.
        ``tool_results`` (by the CLI's tool_use id): answer the paused turn's calls.
        """
        paused = self._paused
        if (tool_results is None) != (paused is None):
            raise WorkerUnusable(
                f"claude worker {self.id} is "
                + (
                    "waiting for tool results"
                    if paused is not None
                    else "not waiting for tool results"
                )
            )
        content: str | list[claude.Block] = ""
        if paused is None:
            content = claude.render_user_content(request.messages if messages is None else messages)
        self._enter()
        if paused is not None:
            translator, send, receive = paused.translator, paused.send, paused.receive
            self._paused = None
        else:
            translator = TurnTranslator(
                self._policy, self.model or request.model, pause_on_tool_use=True
            )
            send, receive = trio.open_memory_channel[Record](math.inf)
            self._exchange = send
        self._dirty = True
        self.turns += 1
        pool = self._pool
        deadline = trio.current_time() + pool.turn_timeout
        calls: list[str] = []
        try:
            if paused is not None:
                assert tool_results is not None
                for event in translator.resume():
                    yield event
                await self._answer_tool_calls(paused.calls, tool_results, deadline)
            else:
                await self._session.send(claude.user_line(content))
            while not translator.done:
                idle_deadline = trio.current_time() + pool.stream_idle_timeout
                record: Record | None = None
                with trio.move_on_at(min(deadline, idle_deadline)):
                    try:
                        record = await receive.receive()
                    except trio.EndOfChannel:
                        raise await self._session.crashed("a turn") from None
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
                if isinstance(record, SystemInit) and not translator.started:
                    self._check_tools(record)
                try:
                    events = translator.feed(record)
                except ProtocolError:
                    self.healthy = False
                    raise
                calls += [e.id for e in events if isinstance(e, ToolCallStart)]
                if translator.paused:
                    # set before yielding Finished: a consumer that stops there must not
                    # interrupt the turn the CLI keeps waiting in
                    self._paused = _Paused(translator, send, receive, tuple(calls))
                for event in events:
                    yield event
                if translator.paused:
                    return
        finally:
            try:
                if (
                    self._paused is None
                    and not translator.done
                    and self.healthy
                    and not self._exited.is_set()
                ):
                    await self._interrupt(receive)
            finally:
                if self._paused is None:
                    self._exchange = None
                    send.close()
                    self._tool_calls.clear()
                self._busy = False

    async def _answer_tool_calls(
        self, calls: Sequence[str], results: Mapping[str, ToolResultPart], deadline: float
    ) -> None:
        """Answer the CLI's pending ``tools/call`` in order; each next one comes only after."""
        for call_id in calls:
            result = results.get(call_id)
            if result is None:
                raise WorkerUnusable(f"no result for tool call {call_id}")  # the caller checks
            limit = min(deadline, trio.current_time() + self._pool.stream_idle_timeout)
            with trio.move_on_at(limit):
                while call_id not in self._tool_calls:
                    if self._exited.is_set():
                        raise await self._session.crashed("a tool call")
                    await self._tool_call_arrived.wait()
            request = self._tool_calls.pop(call_id, None)
            if request is None:
                self.healthy = False
                raise TurnTimeout(
                    f"the claude CLI did not ask for the result of tool call {call_id}"
                )
            message: Mapping[str, Any] = request.request.get("message") or {}
            reply = claude.mcp_tool_result(message, result.content, is_error=result.is_error)
            await self._session.send(claude.mcp_response_line(request.request_id, reply))

    async def _interrupt(self, receive: trio.MemoryReceiveChannel[Record]) -> None:
        """Stop the running turn; unhealthy unless the CLI ends it within interrupt_grace."""
        with trio.CancelScope(shield=True):
            ended = False
            with trio.move_on_after(self._pool.interrupt_grace):
                rid = self._next_id("interrupt")
                try:
                    self._session.expect(rid)
                    await self._session.send(claude.interrupt_line(rid))
                    async for record in receive:
                        if isinstance(record, Result):
                            ended = True
                            break
                except BridgeError:
                    pass
                finally:
                    self._session.forget(rid)
            if not ended:
                log.warning(
                    "claude worker %d did not end its turn within interrupt_grace; retiring it",
                    self.id,
                )
                self.healthy = False


def make_claude_factory(
    config: Config,
    command: tuple[str, ...],
    state_dir: Path,
    janitor: Janitor | None,
    environ: Mapping[str, str],
    *,
    fake: bool,
) -> Callable[[int], ClaudeWorker]:
    """A pool factory for claude workers in clibridge's claude spawn home (blocking setup)."""
    settings = attrs.evolve(config.claude, command=command)
    spawn_home = prepare_claude_home(settings, state_dir, environ)
    if fake:
        spawn_home = attrs.evolve(spawn_home, env=with_fake_knobs(spawn_home.env, environ))
    log.info("claude spawn home: %s (work dir %s)", spawn_home.home, spawn_home.workdir)

    spawn_model = SpawnModel(ALIASES["sonnet"])

    def factory(worker_id: int) -> ClaudeWorker:
        return ClaudeWorker(
            worker_id, settings, settings.pool, spawn_home, janitor, spawn_model=spawn_model
        )

    return factory
