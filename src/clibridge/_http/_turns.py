"""Running one turn for an HTTP request: the producer task and the SSE body.

Theory of operation
-------------------
A :class:`TurnRun` is the *producer*: a task in the request's
:class:`~._exchange.Exchange` nursery that enters ``service.turn(request)`` and forwards
the events through a small memory channel. The HTTP side (the handler, then the body
generator) is the *consumer*. Keeping the service context in its own task means no
cancel scope ever spans a ``yield`` of the body generator, and the turn ends on every
path:

- the client disconnects: the body generator is closed (Cancelled / GeneratorExit) and
  its ``finally`` calls :meth:`TurnRun.abandon`, which cancels the producer; the
  producer leaves the service context, which interrupts the turn and frees the slot;
- the client stops reading: the body generator blocks in Hypercorn's send, the channel
  fills, and the producer's send waits longer than ``send_timeout``; the producer then
  leaves the service context and cuts the connection;
- the server drains (:class:`DrainState`): each live turn gets a deadline; when it
  passes, the producer stops the turn and sends a final "shutting down" error so the
  stream ends with the dialect's error event instead of being cut;
- the turn fails after it started: the error travels down the channel and the
  consumer writes it (an error response before the first byte, the encoder's
  ``fail()`` frames after).

Admission errors (queue full, unknown model, not ready) are raised on entering the
service context, before :meth:`TurnRun.run` reports started, so ``nursery.start`` raises
them in the handler, which answers with a normal error response.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import TypeAlias

import attrs
import trio

from .._errors import BridgeError, InternalError, ProtocolError, UnavailableError
from .._events import Event, Finished, Request, ToolCallStart, TurnStarted
from .._service import TurnService
from ._codecs import StreamEncoder
from ._exchange import Exchange

log = logging.getLogger("clibridge.http")

#: what travels from producer to consumer; None marks the end of the channel
Item: TypeAlias = Event | BridgeError

#: events buffered between the turn and a slow client before the send deadline applies
_CHANNEL_SIZE = 32
#: at most this many ready items are coalesced into one write
_COALESCE_MAX = 64


def as_bridge_error(exc: BaseException, request_id: str) -> BridgeError | None:
    """``exc`` as the error a client sees, or None for cancellation and the like.

    A :class:`BridgeError` is itself; a group holding exactly one is that one (the
    service may raise from a nursery); any other exception becomes an
    :class:`InternalError` that names the request id to find it in the log.
    """
    if isinstance(exc, BridgeError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        bridge, rest = exc.split(BridgeError)
        if bridge is not None and rest is None:
            leaves = list(_leaves(bridge))
            if leaves:
                return leaves[0]
        if rest is not None and rest.split(Exception)[1] is not None:
            return None  # cancellation or KeyboardInterrupt inside: not ours to report
    if not isinstance(exc, Exception):
        return None
    return InternalError(
        f"internal error in clibridge (request {request_id}); the server log has the details"
    )


def _leaves(group: BaseExceptionGroup[BridgeError]) -> list[BridgeError]:
    out: list[BridgeError] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            out.extend(_leaves(exc))
        else:
            out.append(exc)
    return out


@attrs.define(eq=False)
class DrainState:
    """The live turns of an app, and the deadline they get once the server drains."""

    #: how long in-flight turns may still run after draining began
    grace: float
    draining: trio.Event = attrs.field(factory=trio.Event)
    live: set[TurnRun] = attrs.field(factory=set)
    deadline: float | None = None

    async def watch(self) -> None:
        """Wait for draining, then give every live (and later) turn its deadline."""
        await self.draining.wait()
        self.deadline = trio.current_time() + self.grace
        log.info("draining: %d open turn(s) have %.1f s to finish", len(self.live), self.grace)
        for run in list(self.live):
            run.drain_by(self.deadline)


class TurnState(enum.Enum):
    """Where a :class:`TurnRun` is; every state after RUNNING is final."""

    WAITING = "waiting for admission"
    RUNNING = "running"
    FINISHED = "finished"
    #: the events ended without a Finished (the consumer gets the end of the channel)
    ENDED = "events ended"
    FAILED = "failed"
    CLIENT_GONE = "client gone"
    CLIENT_STALLED = "client stopped reading"
    DRAINED = "stopped by the drain"
    CANCELLED = "cancelled"
    NOT_ADMITTED = "not admitted"


class TurnRun:
    """One turn as the HTTP layer runs it: a producer task plus a channel of its events."""

    def __init__(
        self,
        service: TurnService,
        request: Request,
        *,
        exchange: Exchange,
        drain: DrainState,
        send_timeout: float,
        request_id: str,
        keep_events: bool = False,
    ) -> None:
        self._service = service
        self._request = request
        self._exchange = exchange
        self._drain = drain
        self._send_timeout = send_timeout
        self.request_id = request_id
        self._send, self._receive = trio.open_memory_channel[Item](_CHANNEL_SIZE)
        self._scope = trio.CancelScope()
        self.state = TurnState.WAITING
        #: the drain gave this turn a deadline before it finished
        self._drain_deadline: float | None = None
        #: set once the producer has left the service context
        self.exited = trio.Event()
        # what the request ledger reads once the request is over (see _record.py)
        #: the turn's TurnStarted (its ``route`` says which worker served it)
        self.started: TurnStarted | None = None
        #: the turn's Finished (its usage)
        self.finished: Finished | None = None
        #: time.perf_counter() when the first content (text, thinking, a tool call) arrived
        self.first_content_at: float | None = None
        self.tool_calls = 0
        #: the error the turn ended with after it was admitted
        self.failure: BridgeError | None = None
        #: every event of the turn, when asked to keep them (exchange capture)
        self.events: list[Event] | None = [] if keep_events else None

    # -------------------------------------------------------------- producer side

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold the service context for the turn; report started once admitted."""
        self._exchange.producers.append(self)
        self._drain.live.add(self)
        if self._drain.deadline is not None:
            self.drain_by(self._drain.deadline)
        failure: BridgeError | None = None
        try:
            async with self._send:
                try:
                    with self._scope:
                        async with self._service.turn(self._request) as events:
                            task_status.started()
                            self.state = TurnState.RUNNING
                            await self._pump(events)
                except Exception as exc:
                    if self.state is TurnState.WAITING:
                        raise
                    failure = as_bridge_error(exc, self.request_id)
                    if failure is None:
                        raise
                    if isinstance(failure, InternalError):
                        log.error("turn failed (request %s)", self.request_id, exc_info=exc)
                    self._end(TurnState.FAILED)
                if (
                    failure is None
                    and self._scope.cancelled_caught
                    and self._drain_deadline is not None
                ):
                    failure = UnavailableError(
                        "clibridge is shutting down and stopped this turn; retry shortly",
                        retry_after=1,
                    )
                    self._end(TurnState.DRAINED)
                if failure is not None:
                    self.failure = failure
                    self._deliver_final(failure)
        finally:
            self._end(
                TurnState.CANCELLED if self.state is TurnState.RUNNING else TurnState.NOT_ADMITTED
            )
            self._drain.live.discard(self)
            log.debug("request %s: turn %s", self.request_id, self.state.value)
            self.exited.set()

    def _end(self, state: TurnState) -> None:
        """Enter the final ``state``, unless the turn already ended."""
        if self.state in (TurnState.WAITING, TurnState.RUNNING):
            self.state = state

    async def _pump(self, events: AsyncIterator[Event]) -> None:
        async for event in events:
            self._note(event)
            with trio.move_on_after(self._send_timeout) as waited:
                try:
                    await self._send.send(event)
                except trio.BrokenResourceError:
                    self._end(TurnState.CLIENT_GONE)
                    return
            if waited.cancelled_caught:
                self._end(TurnState.CLIENT_STALLED)
                log.warning(
                    "request %s: the client took nothing for %.1f s; stopping the turn and "
                    "closing the connection",
                    self.request_id,
                    self._send_timeout,
                )
                self._exchange.cut()
                return
            if isinstance(event, Finished):
                self._end(TurnState.FINISHED)
                return
        self._end(TurnState.ENDED)

    def _note(self, event: Event) -> None:
        """Keep what the request ledger wants to know of ``event``."""
        if self.events is not None:
            self.events.append(event)
        if isinstance(event, TurnStarted):
            if self.started is None:
                self.started = event
            return
        if isinstance(event, Finished):
            self.finished = event
            return
        if self.first_content_at is None:
            self.first_content_at = time.perf_counter()
        if isinstance(event, ToolCallStart):
            self.tool_calls += 1

    def _deliver_final(self, error: BridgeError) -> None:
        # never blocks: a consumer that is not reading gets the error when it comes back,
        # or never (it is gone); either way the producer must not wait for it
        with contextlib.suppress(
            trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError
        ):
            self._send.send_nowait(error)

    def drain_by(self, deadline: float) -> None:
        """Stop this turn at ``deadline`` (the server is draining) unless it ends first."""
        if self.state is not TurnState.FINISHED:
            self._drain_deadline = deadline
            self._scope.deadline = min(self._scope.deadline, deadline)

    def abandon(self) -> None:
        """The consumer is gone: stop the turn (no-op once it finished)."""
        self._receive.close()
        if self.state is not TurnState.FINISHED:
            self._end(TurnState.CLIENT_GONE)
            self._scope.cancel()

    # -------------------------------------------------------------- consumer side

    async def receive(self) -> Item | None:
        """The next item, or None when the producer is done."""
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            return None

    def receive_ready(self, limit: int = _COALESCE_MAX) -> list[Item | None]:
        """Items that are already waiting (None marks the end), without blocking."""
        out: list[Item | None] = []
        while len(out) < limit:
            try:
                out.append(self._receive.receive_nowait())
            except trio.WouldBlock:
                break
            except (trio.EndOfChannel, trio.ClosedResourceError):
                out.append(None)
                break
        return out

    async def first_items(self, wait: float) -> list[Item | None]:
        """Items up to the first that is not :class:`TurnStarted`, waiting up to ``wait``.

        The response status is chosen after this: an error that arrives before any
        content still gets its own HTTP status.
        """
        out: list[Item | None] = []
        with trio.move_on_after(wait):
            while True:
                item = await self.receive()
                out.append(item)
                if not isinstance(item, TurnStarted):
                    break
        if out and out[-1] is not None:
            out.extend(self.receive_ready())
        return out

    async def collect(self) -> list[Event]:
        """All events of the turn (non-streaming); raises the turn's error."""
        events: list[Event] = []
        while True:
            item = await self.receive()
            if item is None:
                break
            if isinstance(item, BridgeError):
                raise item
            events.append(item)
            if isinstance(item, Finished):
                break
        return events


def _encode(encoder: StreamEncoder, items: list[Item | None]) -> tuple[list[bytes], bool]:
    """Frames for ``items``; the flag says the stream is complete."""
    frames: list[bytes] = []
    for item in items:
        if item is None:
            frames += encoder.fail(
                ProtocolError("the turn ended without finishing; the CLI may have crashed")
            )
            return frames, True
        if isinstance(item, BridgeError):
            frames += encoder.fail(item)
            return frames, True
        frames += encoder.feed(item)
        if encoder.finished:
            return frames, True
    return frames, False


async def sse_body(
    run: TurnRun,
    encoder: StreamEncoder,
    first: list[Item | None],
    *,
    keepalive_interval: float,
    keepalive: bytes,
    on_close: Callable[[], None] | None = None,
) -> AsyncIterator[bytes]:
    """The body of a streaming response: frames of ``run``'s events, keepalives between.

    No cancel scope is open across a ``yield`` here; the turn itself lives in the
    producer task, which ``finally`` abandons whatever ended the stream.
    """
    try:
        head = encoder.start()  # before any feed(): encoders number their events
        frames, done = _encode(encoder, first)
        yield b"".join(head + frames)
        while not done:
            with trio.move_on_after(keepalive_interval) as idle:
                item = await run.receive()
            if idle.cancelled_caught:
                yield keepalive
                continue
            frames, done = _encode(encoder, [item, *([] if item is None else run.receive_ready())])
            if frames:
                yield b"".join(frames)
    finally:
        run.abandon()
        if on_close is not None:
            on_close()


def retry_after_header(error: BridgeError) -> str:
    """``Retry-After`` seconds for ``error``: its own hint rounded up, else 1."""
    if error.retry_after is not None and error.retry_after > 0:
        return str(max(1, math.ceil(error.retry_after)))
    return "1"
