"""CodexWorker: one ``codex app-server`` process serving several requests at once.

Theory of operation
-------------------
A *multiplexed* worker (see ``_worker.py``): the pool gives it up to ``threads_per_worker``
leases at a time, so ``binding`` stays None and :meth:`CodexWorker.bind` only checks that the
process is alive. Each :meth:`~CodexWorker.turn` opens an ephemeral thread (``thread/start``
with the system prompt as ``baseInstructions`` and the model), appends the earlier
conversation (``thread/inject_items``; an app-server that refuses it gets a quoted
transcript instead), then ``turn/start`` with the reasoning effort.

:meth:`run` owns the process through a :class:`~clibridge._backends._session.CliSession`
(spawn, the *pump* -- the only reader of stdout --, request/response correlation by
JSON-RPC id, writes, crash mapping, stderr tail). The pump parses each line into a
JSON-RPC message (:func:`~clibridge._backends.codex.parser.parse_message`) and this
worker routes it:

* a response -> the waiter of its id;
* a server request -> answered at once: approvals are declined, anything else gets a
  JSON-RPC error (a turn must never stall waiting for us);
* a notification -> the channel of its thread (unbounded: a slow HTTP client never stalls
  the pump), dropped for threads nobody waits for (abandoned or unknown).

Client tools: the request's tools go to ``thread/start`` as ``dynamicTools`` (the client's
own names). A model call arrives as the server request ``item/tool/call``; the pump hands it
to the thread's channel and the turn yields it as a whole tool call. Codex sends parallel
calls one after the other before waiting for any reply, so the response ends
(``Finished(TOOL_USE)``) only when no more calls come for ``tool_settle`` seconds; the
thread then stays *paused*: its channel keeps collecting, the ``item/tool/call`` requests
stay unanswered. ``turn(request, tool_results=...)`` (by codex's ``callId``) answers them
(``DynamicToolCallResponse``) and streams the continuation; a call that came after the
pause is simply the first thing the continuation reports. A paused thread nobody resumes
gets error replies and ``turn/interrupt`` when the supervisor drops it
(:meth:`CodexWorker.drop_paused_calls`: the pool reclaimed its parked lease at ``park_ttl``,
under pressure or at drain, or the response ended where nobody can resume it); ``turn(tool_results=...)`` for a thread that is gone runs the full
history on a fresh thread instead. The pool parks such a lease as *reusable*: on a
multiplexed worker a reclaim must not end the process and its other threads.

Failures: the process exiting ends the pump, which closes every channel and wakes every
waiter -> all in-flight turns raise :class:`~clibridge._errors.CliCrashed` with the stderr
tail, ``healthy`` turns False and the pool replaces the worker. One crash thus fails every
thread on the process, not only the one that caused it: the supervisor runs each turn that
had produced no output yet once more on another worker, and only the others reach their
clients as errors (:meth:`clibridge._supervisor.Supervisor._retrying`). A turn left early (client
gone, timeout, fail-fast upstream error) sends ``turn/interrupt`` and waits up to
``interrupt_grace`` (shielded) for ``turn/completed``. A thread that does not end in that
time is abandoned; if it still runs one more ``interrupt_grace`` later it keeps the worker
busy for nothing: ``healthy`` turns False (no new leases; the pool retires the worker when a
lease ends), and an idle worker ends its own process so the pool replaces it.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import os
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import attrs
import trio

from ... import __version__
from ..._config import CodexConfig, Config, PoolConfig
from ..._errors import (
    BootError,
    BridgeError,
    CliCrashed,
    ModelNotFound,
    RequestError,
    TurnTimeout,
)
from ..._events import Event, Message, Request, ToolResultPart
from ..._janitor import Janitor
from ..._process import ChildProcess, ChildSpec
from ..._usage import UsageMeter, codex_windows
from ..._worker import Binding, WorkerRetired, WorkerUnusable
from .. import codex
from .._env import with_fake_knobs
from .._session import CliSession
from .._worker_base import WorkerBase
from . import (
    GarbageLine,
    Notification,
    Response,
    ServerRequest,
    TurnTranslator,
)
from .home import prepare_codex_home
from .parser import parse_message

log = logging.getLogger(__name__)

#: distinct system prompt / tool sets a worker keeps one pre-started thread for
_MAX_SPARE_THREADS: Final = 2
#: the subscription windows: read once at boot, then notified on every change
RATE_LIMITS_READ: Final = "account/rateLimits/read"
RATE_LIMITS_UPDATED: Final = "account/rateLimits/updated"


#: one parsed stdout line
_Line = Response | ServerRequest | Notification | GarbageLine
#: what the pump hands a thread: its notifications and its ``item/tool/call`` requests
Incoming = Notification | ServerRequest


@attrs.define(eq=False)
class _Paused:
    """A thread whose turn waits for the client's tool results."""

    thread_id: str
    receive: trio.MemoryReceiveChannel[Incoming]
    translator: TurnTranslator
    #: the pending ``item/tool/call`` requests by codex's callId
    calls: dict[str, ServerRequest]


class CodexWorker(WorkerBase):
    """A ``codex app-server`` worker implementing :class:`clibridge._worker.Worker`."""

    #: every finished turn ends its (ephemeral) thread; threads are per request
    continues_finished_turns = False

    def __init__(
        self,
        id: int,
        config: CodexConfig,
        pool: PoolConfig,
        spec: ChildSpec,
        janitor: Janitor | None = None,
    ) -> None:
        super().__init__(id, pool)  # multiplexed: never bound
        self._config = config
        self._spec = spec
        self._session: CliSession[_Line, int, Response] = CliSession(
            spec,
            cli="codex",
            worker_id=id,
            kill_grace=pool.kill_grace,
            janitor=janitor,
            parse=parse_message,
            route=self._route,
            unhealthy=self._unhealthy,
            on_exit=self._close_threads,
        )
        self._exited = self._session.exited
        self._ids = itertools.count(1)
        self._threads: dict[str, trio.MemorySendChannel[Incoming]] = {}
        #: threads started ahead of demand, by their thread/start params (see _prestart_soon)
        self._spare_threads: dict[str, tuple[str, trio.MemoryReceiveChannel[Incoming]]] = {}
        self._prestarting: set[str] = set()
        #: threads started with dynamic tools (their item/tool/call requests are routed)
        self._tool_threads: set[str] = set()
        #: thread id -> a turn waiting for tool results
        self._paused: dict[str, _Paused] = {}
        #: seconds without a further call before a response ends at its tool calls
        self.tool_settle = 0.2
        #: thread id -> when it was abandoned
        self._abandoned: dict[str, float] = {}
        self._inject_supported = True
        self.active = 0
        #: the pool's meter of the subscription windows (account/rateLimits/*)
        self.usage: UsageMeter | None = None
        #: counters for tests and statistics
        self.declined_approvals = 0
        self.refused_requests = 0
        self._retired_itself = False

    def __repr__(self) -> str:
        return f"<CodexWorker {self.id} pid={self.pid} active={self.active} healthy={self.healthy}>"

    # ------------------------------------------------------------------ life

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Spawn, ``initialize`` + ``initialized``, serve until cancelled or the process exits."""
        self.started_at = trio.current_time()
        await self._session.run(
            on_spawned=self._on_spawned, handshake=self._handshake, task_status=task_status
        )
        if self._retired_itself:
            raise WorkerRetired(f"codex worker {self.id} retired itself")

    def _on_spawned(self, child: ChildProcess, nursery: trio.Nursery) -> None:
        self.pid = child.pid
        self._nursery = nursery
        # running or paused turns: a polite stop could let codex finish them upstream
        child.holds_work = lambda: self.active > 0 or bool(self._paused)

    async def _handshake(self) -> None:
        try:
            response = await self._call(
                "initialize", codex.initialize_params(__version__), "initialize"
            )
            if response.error is not None:
                raise BootError(f"codex refused initialize: {response.error_message}")
            await self._session.send(codex.notification_line("initialized"))
            if self._nursery is not None:
                self._nursery.start_soon(self._read_rate_limits)
        except (CliCrashed, TurnTimeout) as exc:
            raise BootError(
                f"codex worker {self.id} did not get ready: {exc.message}",
                detail=await self._session.stderr_tail(),
            ) from exc

    async def _read_rate_limits(self) -> None:
        """The subscription windows once at boot (later changes come as notifications);
        an app-server without a ChatGPT login answers an error, which is not a fault."""
        try:
            response = await self._call(RATE_LIMITS_READ, {}, RATE_LIMITS_READ)
        except BridgeError as exc:
            log.debug("codex worker %d: %s failed: %s", self.id, RATE_LIMITS_READ, exc)
            return
        if response.error is not None:
            log.debug("codex worker %d: no rate limits: %s", self.id, response.error_message)
            return
        result = response.result if isinstance(response.result, Mapping) else {}
        self._on_rate_limits(result.get("rateLimits"))

    def _on_rate_limits(self, snapshot: Any) -> None:
        if self.usage is not None:
            for window in codex_windows(snapshot):
                self.usage.update(window)

    # ------------------------------------------------------------------ routing

    async def _route(self, msg: _Line) -> None:
        if isinstance(msg, Response):
            if not (isinstance(msg.id, int) and self._session.resolve(msg.id, msg)):
                log.debug("codex worker %d: unexpected response %r", self.id, msg.id)
        elif isinstance(msg, ServerRequest):
            await self._answer(msg)
        elif isinstance(msg, Notification) and msg.method == RATE_LIMITS_UPDATED:
            self._on_rate_limits(msg.params.get("rateLimits"))
        elif isinstance(msg, Notification):
            thread_id = msg.thread_id
            channel = self._threads.get(thread_id) if thread_id else None
            if channel is not None:
                channel.send_nowait(msg)
            elif thread_id in self._abandoned and msg.method == "turn/completed":
                del self._abandoned[thread_id]
                log.info("codex worker %d: abandoned thread %s ended", self.id, thread_id)
        else:
            log.warning("codex worker %d: skipping a non-JSON line: %.200s", self.id, msg.text)

    async def _answer(self, request: ServerRequest) -> None:
        if request.method == codex.TOOL_CALL_METHOD:
            thread_id = request.thread_id or ""
            channel = self._threads.get(thread_id)
            if channel is not None and thread_id in self._tool_threads:
                channel.send_nowait(request)  # the thread's turn answers it
                return
        decline = codex.APPROVAL_DECLINES.get(request.method)
        if decline is not None:
            self.declined_approvals += 1
            log.info("codex worker %d: declining %s", self.id, request.method)
            line = codex.result_line(request.id, decline)
        else:
            self.refused_requests += 1
            log.warning("codex worker %d: refusing server request %r", self.id, request.method)
            line = codex.error_line(
                request.id, f"clibridge does not handle {request.method!r}", codex.METHOD_NOT_FOUND
            )
        with contextlib.suppress(BridgeError):  # a dead CLI ends the pump by itself
            await self._session.send(line)

    def _close_threads(self) -> None:
        """The process is gone: every thread's turn sees its channel end (a crash)."""
        for channel in self._threads.values():
            channel.close()

    # ------------------------------------------------------------------ plumbing

    async def _call(self, method: str, params: Mapping[str, Any], what: str) -> Response:
        """Send a request and wait (up to ready_timeout) for its response."""
        req_id = next(self._ids)
        return await self._session.call(
            req_id,
            codex.request_line(req_id, method, params),
            what,
            within=self._pool.ready_timeout,
            asked=what,
        )

    # ------------------------------------------------------------------ bind

    async def bind(self, binding: Binding) -> None:
        """Multiplexed: nothing to set up per binding; only check the process is usable."""
        if not self.healthy or self._session.child is None or self._exited.is_set():
            raise WorkerUnusable(f"codex worker {self.id} is not usable")

    # ------------------------------------------------------------------ turn

    async def _open_thread(
        self, request: Request
    ) -> tuple[str, trio.MemoryReceiveChannel[Incoming]]:
        params = codex.thread_start_params(
            system=request.system,
            model=request.model or None,
            cwd=str(self._spec.cwd or os.getcwd()),
            enable_cli_tools=self._config.enable_cli_tools,
            tools=request.tools,
        )
        key = json.dumps(params, sort_keys=True)
        spare = self._spare_threads.pop(key, None)
        self._prestart_soon(key, params)
        if spare is not None:
            # thread/start is most of a warm turn's own latency: take one started ahead
            thread_id, receive = spare
            if request.tools:
                self._tool_threads.add(thread_id)
            return thread_id, receive
        return await self._start_thread(params, request)

    def _prestart_soon(self, key: str, params: Mapping[str, Any]) -> None:
        """Start a thread with these params in the background for the next request like this.

        Most clients send the same system prompt and tools every time, so the next request
        finds its thread ready. At most ``_MAX_SPARE_THREADS`` keys are kept (the oldest
        spare is ended when a new key comes).
        """
        if (
            not self._config.prestart_threads
            or self._nursery is None
            or key in self._spare_threads
            or key in self._prestarting
        ):
            return
        self._prestarting.add(key)
        self._nursery.start_soon(self._prestart, key, params)

    async def _prestart(self, key: str, params: Mapping[str, Any]) -> None:
        try:
            thread_id, receive = await self._start_thread(params, None)
        except BridgeError as exc:
            log.debug("codex worker %d: no spare thread: %s", self.id, exc)
            return
        finally:
            self._prestarting.discard(key)
        if not self.healthy or self._exited.is_set():
            return
        self._spare_threads[key] = (thread_id, receive)
        while len(self._spare_threads) > _MAX_SPARE_THREADS:
            old_key = next(iter(self._spare_threads))
            old_id, _ = self._spare_threads.pop(old_key)
            self._threads.pop(old_id, None)

    async def _start_thread(
        self, params: Mapping[str, Any], request: Request | None
    ) -> tuple[str, trio.MemoryReceiveChannel[Incoming]]:
        response = await self._call("thread/start", params, "thread/start")
        result = response.result if isinstance(response.result, Mapping) else {}
        thread = result.get("thread") if isinstance(result, Mapping) else None
        if response.error is not None or not isinstance(thread, Mapping):
            message = response.error_message or f"no thread in {response.result!r}"[:300]
            if "model" in message.lower():
                model = request.model if request is not None else params.get("model")
                raise ModelNotFound(f"codex refused model {model!r}: {message}")
            raise RequestError(f"codex refused thread/start: {message}")
        thread_id = str(thread["id"])
        send, receive = trio.open_memory_channel[Incoming](math.inf)
        self._threads[thread_id] = send
        if request is not None and request.tools:
            self._tool_threads.add(thread_id)
        return thread_id, receive

    async def _input_for(self, thread_id: str, request: Request) -> tuple[dict[str, Any], ...]:
        rendered = codex.render_input(request)
        if not rendered.history:
            return rendered.input
        if self._inject_supported:
            response = await self._call(
                "thread/inject_items",
                {"threadId": thread_id, "items": list(rendered.history)},
                "thread/inject_items",
            )
            if response.error is None:
                return rendered.input
            log.warning(
                "codex worker %d: thread/inject_items refused (%s); sending the history as a "
                "quoted transcript",
                self.id,
                response.error_message,
            )
            self._inject_supported = False
        return codex.render_transcript(request)

    async def turn(
        self,
        request: Request,
        *,
        messages: Sequence[Message] | None = None,
        tool_results: Mapping[str, ToolResultPart] | None = None,
    ) -> AsyncIterator[Event]:
        """One request's events; see the module doc.

        Plain: a fresh ephemeral thread with all of ``request.messages``. ``tool_results``
        (by codex's callId): answer the paused thread's calls and stream the continuation,
        or, when that thread is gone, the plain path. ``messages`` (continuing a finished
        turn) is not supported: every finished codex turn ends its thread.
        """
        if messages is not None:
            raise WorkerUnusable("codex workers do not continue finished turns")
        paused = self._take_paused(tool_results) if tool_results is not None else None
        if paused is None:
            if tool_results is not None:
                log.info("codex worker %d: the paused thread is gone; full history", self.id)
            codex.render_input(request)  # refuse a bad conversation before touching the CLI
        if self._exited.is_set():
            # the process died since the lease was given: a crash like any other (retried)
            raise await self._session.crashed("the start of a turn")
        if not self.healthy:
            raise WorkerUnusable(f"codex worker {self.id} is not usable")
        self.active += 1
        self.turns += 1
        pool = self._pool
        deadline = trio.current_time() + pool.turn_timeout
        thread_id: str | None = None
        receive: trio.MemoryReceiveChannel[Incoming] | None = None
        translator = TurnTranslator(request.model, self._config.login_hint)
        now_paused = False
        try:
            if paused is not None:
                assert tool_results is not None
                thread_id, receive, translator = paused.thread_id, paused.receive, paused.translator
                for event in translator.resume():
                    yield event
                await self._answer_tool_calls(paused.calls, tool_results)
            else:
                thread_id, receive = await self._open_thread(request)
                await self._start_turn(thread_id, request, translator)
            calls: dict[str, ServerRequest] = {}
            starting: set[str] = set()  # dynamicToolCall items whose request has not come
            settle_at = math.inf
            while not translator.done:
                idle_deadline = trio.current_time() + pool.stream_idle_timeout
                msg: Incoming | None = None
                with trio.move_on_at(min(deadline, idle_deadline, settle_at)):
                    try:
                        msg = await receive.receive()
                    except trio.EndOfChannel:
                        raise await self._session.crashed("a turn") from None
                now = trio.current_time()
                if msg is None:
                    if calls and now >= settle_at and not starting:
                        # set before yielding Finished: a consumer that stops there must
                        # not interrupt the turn codex keeps waiting in
                        self._pause(_Paused(thread_id, receive, translator, calls))
                        now_paused = True
                        for event in translator.pause():
                            yield event
                        return
                    if now < min(deadline, idle_deadline):
                        settle_at = math.inf  # a started call is still coming: wait for it
                        continue
                    if now >= deadline:
                        raise TurnTimeout(
                            f"the turn took longer than turn_timeout ({pool.turn_timeout:g} s)"
                        )
                    raise TurnTimeout(
                        f"the codex CLI said nothing for {pool.stream_idle_timeout:g} s "
                        "(stream_idle_timeout)"
                    )
                if isinstance(msg, ServerRequest):
                    call_id = str(msg.params.get("callId", ""))
                    calls[call_id] = msg
                    starting.discard(call_id)
                    events = translator.tool_call(msg)
                else:
                    item = msg.params.get("item")
                    if (
                        msg.method == "item/started"
                        and isinstance(item, Mapping)
                        and item.get("type") == "dynamicToolCall"
                        and str(item.get("id")) not in calls
                    ):
                        starting.add(str(item.get("id")))
                    events = translator.feed(msg)
                if calls:
                    settle_at = now + self.tool_settle  # more calls may follow
                for event in events:
                    yield event
        finally:
            try:
                if (
                    thread_id is not None
                    and receive is not None
                    and not now_paused
                    and not translator.done
                    and not self._exited.is_set()
                ):
                    await self._interrupt(thread_id, translator, receive)
            finally:
                if thread_id is not None and not now_paused:
                    self._end_thread(thread_id)
                self.active -= 1
                self._maybe_retire_self()

    async def _start_turn(
        self, thread_id: str, request: Request, translator: TurnTranslator
    ) -> None:
        items = await self._input_for(thread_id, request)
        response = await self._call(
            "turn/start",
            codex.turn_start_params(thread_id, items, request.reasoning_effort),
            "turn/start",
        )
        if response.error is not None:
            raise RequestError(f"codex refused turn/start: {response.error_message}")
        turn = response.result.get("turn") if isinstance(response.result, Mapping) else None
        if isinstance(turn, Mapping) and isinstance(turn.get("id"), str):
            translator.set_turn_id(str(turn["id"]))

    def _end_thread(self, thread_id: str) -> None:
        self._tool_threads.discard(thread_id)
        channel = self._threads.pop(thread_id, None)
        if channel is not None:
            channel.close()

    # ------------------------------------------------------------------ paused threads

    @property
    def paused_threads(self) -> int:
        return len(self._paused)

    @property
    def paused(self) -> bool:
        return bool(self._paused)

    def reset_soon(self) -> None:
        """Nothing to reset: every request has a thread of its own."""

    def holds_paused_calls(self, call_ids: Iterable[str]) -> bool:
        """True when ``call_ids`` are exactly the pending calls of one paused thread."""
        wanted = set(call_ids)
        return any(set(p.calls) == wanted for p in self._paused.values()) if wanted else False

    def drop_paused_calls(self, call_ids: Iterable[str]) -> bool:
        """The client went another way: end the paused thread holding these calls (the
        process serves other threads and stays)."""
        wanted = set(call_ids)
        for thread_id, paused in list(self._paused.items()):
            if wanted & set(paused.calls):
                del self._paused[thread_id]
                if self._nursery is not None:
                    self._nursery.start_soon(self._abandon_paused, paused)
        return True

    def _pause(self, paused: _Paused) -> None:
        self._paused[paused.thread_id] = paused

    def _take_paused(self, results: Mapping[str, ToolResultPart]) -> _Paused | None:
        for thread_id, paused in self._paused.items():
            if set(paused.calls) <= set(results) and paused.calls:
                del self._paused[thread_id]
                return paused
        return None

    async def _abandon_paused(self, paused: _Paused) -> None:
        """Interrupt the turn, then answer the pending calls with errors (bounded, shielded).

        Why in this order: answered first, the calls' failed results go on to the model
        before the interrupt lands -- one more paid model request nobody reads (seen: the
        real codex 0.169.0 made it in a loaded CI run).
        """
        with trio.CancelScope(shield=True):
            try:
                if self._exited.is_set():
                    return
                if paused.translator.done:
                    await self._answer_abandoned(paused.calls.values())
                else:
                    await self._interrupt(
                        paused.thread_id,
                        paused.translator,
                        paused.receive,
                        pending=tuple(paused.calls.values()),
                    )
            finally:
                self._end_thread(paused.thread_id)
                self._maybe_retire_self()

    async def _answer_abandoned(self, calls: Iterable[ServerRequest]) -> None:
        for request in calls:
            if self._exited.is_set():
                return
            with contextlib.suppress(BridgeError):
                await self._session.send(
                    codex.result_line(
                        request.id,
                        {
                            "contentItems": [
                                {"type": "inputText", "text": "no result: call abandoned"}
                            ],
                            "success": False,
                        },
                    )
                )

    async def _answer_tool_calls(
        self, calls: Mapping[str, ServerRequest], results: Mapping[str, ToolResultPart]
    ) -> None:
        for call_id, request in calls.items():
            result = results.get(call_id)
            if result is None:  # the supervisor matched every call; defensive
                result = ToolResultPart(call_id, "no result was sent for this call", True)
            await self._session.send(
                codex.result_line(request.id, codex.tool_call_response(result))
            )

    async def _interrupt(
        self,
        thread_id: str,
        translator: TurnTranslator,
        receive: trio.MemoryReceiveChannel[Incoming],
        *,
        pending: Sequence[ServerRequest] = (),
    ) -> None:
        """Stop the thread's turn; abandon the thread if it does not end in interrupt_grace.

        ``pending``: tool calls the turn waits for, answered (as abandoned) once the
        interrupt is sent, so that the turn can end without going on to the model."""
        with trio.CancelScope(shield=True):
            ended = False
            with trio.move_on_after(self._pool.interrupt_grace):
                try:
                    while translator.turn_id is None:
                        # the turn/start reply or turn/started has not come yet
                        note = await receive.receive()
                        if isinstance(note, ServerRequest):
                            await self._refuse_tool_call(note)
                        elif note.method == "turn/completed":
                            ended = True
                            break
                        if note.method == "turn/started":
                            turn = note.params.get("turn") or {}
                            if isinstance(turn, Mapping) and isinstance(turn.get("id"), str):
                                translator.set_turn_id(str(turn["id"]))
                    if not ended and translator.turn_id is not None:
                        await self._session.send(
                            codex.request_line(
                                next(self._ids),
                                "turn/interrupt",
                                codex.interrupt_params(thread_id, translator.turn_id),
                            )
                        )
                        await self._answer_abandoned(pending)
                        async for note in receive:
                            if isinstance(note, ServerRequest):
                                await self._refuse_tool_call(note)
                            elif note.method == "turn/completed":
                                ended = True
                                break
                except (BridgeError, trio.EndOfChannel):
                    pass
            if not ended and not self._exited.is_set():
                log.warning(
                    "codex worker %d: thread %s did not end within interrupt_grace; abandoned",
                    self.id,
                    thread_id,
                )
                self._abandoned[thread_id] = trio.current_time()
                if self._nursery is not None:
                    self._nursery.start_soon(self._watch_abandoned, thread_id)

    async def _refuse_tool_call(self, request: ServerRequest) -> None:
        """A call that comes while the turn is being stopped: answer it so the turn can end."""
        reply = {
            "contentItems": [{"type": "inputText", "text": "the turn was interrupted"}],
            "success": False,
        }
        await self._session.send(codex.result_line(request.id, reply))

    async def _watch_abandoned(self, thread_id: str) -> None:
        await trio.sleep(self._pool.interrupt_grace)
        if thread_id in self._abandoned and not self._exited.is_set():
            log.warning(
                "codex worker %d: abandoned thread %s still runs; retiring the worker",
                self.id,
                thread_id,
            )
            self.healthy = False
            self._maybe_retire_self()

    def _maybe_retire_self(self) -> None:
        """An unhealthy worker with no lease left ends its process (the pool replaces it)."""
        if not self.healthy and self.active == 0 and not self._exited.is_set():
            self._retired_itself = True
            self._exited.set()  # run() leaves its wait; teardown kills the group


def make_codex_factory(
    config: Config,
    command: tuple[str, ...],
    state_dir: Path,
    janitor: Janitor | None,
    environ: Mapping[str, str],
    *,
    fake: bool,
) -> Callable[[int], CodexWorker]:
    """A pool factory for codex workers in clibridge's codex spawn home (blocking setup)."""
    home = prepare_codex_home(config.codex, state_dir, environ)
    if not fake and not home.real and not home.logged_in():
        log.warning(
            "no codex login in %s: run `clibridge login codex` (or use_real_home)",
            home.codex_home,
        )
    argv = codex.build_argv(
        command, enable_cli_tools=config.codex.enable_cli_tools, overrides=config.codex.overrides
    )
    spec = home.child_spec(argv)
    if fake:
        spec = attrs.evolve(spec, env=with_fake_knobs(spec.env, environ))

    def factory(worker_id: int) -> CodexWorker:
        return CodexWorker(worker_id, config.codex, config.codex.pool, spec, janitor)

    return factory
