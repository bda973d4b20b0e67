"""What one HTTP request owns beyond Quart's handler task.

Quart runs a handler and then iterates a streaming body in the same task, and a client
disconnect cancels that task. A turn must outlive neither the request nor be cut in the
middle of its service context by a ``yield``: so the task that holds the service context
(the *producer*, :mod:`._turns`) runs in a nursery this ASGI middleware opens around each
HTTP request. The middleware waits for it, so when a request is over its turn is over.

A client that stops reading blocks Hypercorn's (shielded) socket send forever; only
closing the socket unblocks it. Hypercorn does not hand the socket to the app (neither the
ASGI scope nor its extensions carry it), but clibridge runs the accept loop itself
(:mod:`._connections`): the connection task sets :data:`CONNECTION_STREAM`, a context
variable every task Hypercorn starts for that connection inherits, the app's included.
Without it (an app driven in-process, without a socket) a stalled client still has its
turn cancelled and its slot freed; only the connection stays until the client goes away.

The middleware also ends each request's record (:mod:`._record`): it notes the status it
sent and whether the last byte went out, and once the request and its producers are over
it calls ``on_end`` exactly once, whatever ended it.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import trio

from ._guard import refuse_websocket

if TYPE_CHECKING:
    from ._record import RequestDraft

log = logging.getLogger("clibridge.http")

#: the scope key under which the middleware leaves the request's :class:`Exchange`
EXCHANGE_KEY = "clibridge.exchange"
#: the TCP stream of the connection the current task serves (set by the connection task)
CONNECTION_STREAM: contextvars.ContextVar[trio.SocketStream | None] = contextvars.ContextVar(
    "clibridge_connection_stream", default=None
)
#: the cancel scope around everything Hypercorn runs for that connection (same task)
CONNECTION_SCOPE: contextvars.ContextVar[trio.CancelScope | None] = contextvars.ContextVar(
    "clibridge_connection_scope", default=None
)
#: the longest the last send of an HTTP/1.x response is kept from cancellation (seconds)
END_SEND_BOUND = 5.0

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]


class ASGIApp(Protocol):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None: ...


class Abandonable(Protocol):
    def abandon(self) -> None: ...


@attrs.define(eq=False)
class Exchange:
    """The nursery of one HTTP request's producers, and the way to cut its connection."""

    nursery: trio.Nursery
    transport: trio.SocketStream | None = None
    producers: list[Abandonable] = attrs.field(factory=list)
    #: set when the connection was cut under a stalled client
    cut_done: bool = False
    #: the request's record, once it passed admission (:mod:`._record`)
    draft: RequestDraft | None = None
    #: called once when the request is over: as its last body chunk is sent, or when
    #: the client is gone (before the request observers, which run after the producers
    #: have exited)
    on_end: list[Callable[[], None]] = attrs.field(factory=list)

    def cut(self) -> None:
        """Close the connection under a client that stopped reading (idempotent)."""
        if self.cut_done:
            return
        self.cut_done = True
        if self.transport is None:
            log.debug("cannot close a stalled connection: transport not found")
            return
        # a plain socket close wakes the blocked send_all with ClosedResourceError, and
        # Hypercorn then tells the app the client is gone
        self.transport.socket.close()


async def _send_end_shielded(send: Send, message: Any) -> None:
    """Send ``message``; the last one of an HTTP/1.x response under a bounded shield.

    With ``Connection: close`` Hypercorn closes the socket inside the app's send of the
    last body chunk, after telling the app ``http.disconnect``, on which Quart-Trio
    cancels the app: the send in progress, so the close. When the request body was not
    read (a 401 / 403 / 413 / 415 answered before reading it) the socket then stayed open
    until the client gave up. Hypercorn's socket writes are shielded anyway; the shield
    is bounded by :data:`END_SEND_BOUND` all the same.

    HTTP/2 streams get no shield: their last send waits for the peer's flow-control
    window, which a client that left never opens -- shielded, that send held a graceful
    shutdown for ever (an ``Upgrade: h2c`` request whose client left at the 101).
    """
    if message.get("type") == "http.response.body" and not message.get("more_body", False):
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + END_SEND_BOUND
            await send(message)
        if scope.cancelled_caught:
            abort_connection()
    else:
        await send(message)


def abort_connection() -> None:
    """End the current task's connection now: close its socket and cancel every task
    Hypercorn runs for it (this one included, at its next checkpoint).

    Why: when the bound on the last send runs out, what Hypercorn does after the write
    -- close the stream, start the next keep-alive cycle, resume reading -- is cancelled
    with it. Its reader then stays paused for ever: a client that sent its next request on
    that connection got neither an answer nor a close (seen after the event loop stalled
    for 16 s; a client slow to take a response's last bytes does the same). Closing only
    the socket would not wake a reader that waits to be resumed, not on the socket.
    Without a socket (an app driven in-process) there is nothing to end.
    """
    stream, scope = CONNECTION_STREAM.get(), CONNECTION_SCOPE.get()
    log.warning("the last send of a response overran %g s: closing its connection", END_SEND_BOUND)
    if stream is not None:
        stream.socket.close()
    if scope is not None:
        scope.cancel()


def _end_sender(scope: Scope, send: Send) -> Send:
    return send if scope.get("http_version") == "2" else partial(_send_end_shielded, send)


def _noting_sender(exchange: Exchange, send: Send) -> Send:
    """``send``, noting on the exchange's draft the status and whether the body ended."""

    async def noting(message: Any) -> None:
        draft = exchange.draft
        if draft is None:
            await send(message)
            return
        kind = message.get("type")
        if kind == "http.response.start":
            draft.status = message.get("status")
        await send(message)
        if kind == "http.response.body" and not message.get("more_body", False):
            draft.complete = True

    return noting


class ExchangeMiddleware:
    """ASGI middleware that gives each HTTP request an :class:`Exchange` (and refuses
    WebSocket upgrades)."""

    def __init__(self, app: ASGIApp, on_end: Callable[[Exchange], None] | None = None) -> None:
        self._app = app
        #: called once per HTTP request, after it and its producers are over
        self._on_end = on_end

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            # Quart would route it, find no websocket route, and then fail in our
            # request-context error handlers with a 500 and a traceback
            await refuse_websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        on_end: list[Callable[[], None]] = []
        exchange: Exchange | None = None
        try:
            async with trio.open_nursery() as nursery:
                exchange = Exchange(nursery, CONNECTION_STREAM.get(), on_end=on_end)
                scope[EXCHANGE_KEY] = exchange
                sender = _noting_sender(exchange, _end_sender(scope, send))

                async def send_last_ends(message: Any) -> None:
                    # the client has everything once the last body chunk is out: a client
                    # that sends its next request right then must find this one over
                    if message.get("type") == "http.response.body" and not message.get("more_body"):
                        _end(on_end)
                    await sender(message)

                try:
                    await self._app(scope, receive, send_last_ends)
                finally:
                    # a body generator that never ran never abandoned its producer
                    for producer in exchange.producers:
                        producer.abandon()
        finally:
            _end(on_end)
            if exchange is not None and self._on_end is not None:
                self._on_end(exchange)


def _end(on_end: list[Callable[[], None]]) -> None:
    """Run the request's end callbacks (once: they are taken off the list)."""
    while on_end:
        on_end.pop(0)()
