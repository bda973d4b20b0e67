"""Serving the app on Hypercorn with the open connections under control.

Theory of operation
-------------------
``hypercorn.trio.serve`` accepts every connection and hands it to Hypercorn's
per-connection ``TCPServer`` (HTTP/1.1 and h2 parsing, ASGI, keep-alive). Three things
were missing for a server that any local process can reach (issue 15):

1. **The keep-alive timer died after the first request** (Hypercorn 0.18, trio worker).
   ``TCPServer`` restarts a connection's idle timer when Hypercorn's H11 protocol reports
   ``Updated(idle=True)``. That report is made inside the app's own last ``send``: the
   send ends the stream, Hypercorn delivers ``http.disconnect`` to the app on the way,
   and Quart-Trio answers ``http.disconnect`` by cancelling the app -- the send in
   progress included. The timer restart's first checkpoint (a lock) raises ``Cancelled``
   and the connection is left without a timer: it stayed open until the client went
   away, and a graceful shutdown waited for it (the timer is also what closes idle
   connections when the server stops). See ``docs/upstream/hypercorn-keep-alive.md``.
   :class:`_Connection` handles ``Updated`` and ``Closed`` under a shield: bookkeeping
   that must not be lost to the app's cancellation. Hypercorn's timer stays the one
   clock of keep-alive expiry (``server.keep_alive_timeout``).
   The same timer was never started for an **h2c connection with prior knowledge**
   that opened no stream: its preface is parsed as an HTTP/1.1 request (busy), and
   HTTP/2 reports idle only when a stream closes; :class:`_Connection` reports such a
   connection idle itself.
2. **A closed connection lingered** until that timer fired: ``TCPServer.run`` waits for
   its task group, and the idle timer is in it, so a socket the client had closed stayed
   in CLOSE-WAIT for up to the keep-alive timeout. :class:`_Connection` stops the timer
   when reading ends.
3. **No cap.** :func:`serve_connections` runs its own accept loop (the one Hypercorn
   runs, via ``trio.serve_listeners``, plus a :class:`ConnectionTable`). At
   ``server.max_connections`` open connections a new one takes the place of the
   connection that has been idle longest (closing an idle keep-alive connection is
   always allowed; pooling clients such as the SDKs reconnect), so a client is never
   turned away because other clients keep idle pools. Closing races with the client
   sending its next request on that connection, which then fails: under churn (more
   busy clients than the cap) that hit most evictions when any idle connection could
   go, so only one idle for :data:`EVICT_AFTER` (1 s) and with nothing unread in its
   socket goes. Otherwise the new connection is refused: a 503 in the API's error
   shape with ``Retry-After`` and ``Connection: close`` (at most :data:`MAX_REFUSING`
   at a time, each bounded in time; beyond that it is closed at once). Nothing queues.

Shutdown: when the trigger fires the listeners close (new connections are refused by the
kernel), every idle connection is closed at once, a connection finishing its request is
closed after its response (Hypercorn's ``terminated`` flag), and requests still running
get ``graceful_timeout`` before they are cancelled -- as with ``hypercorn.trio.serve``.

The connection task sets :data:`._exchange.CONNECTION_STREAM` to the accepted stream; the
tasks Hypercorn starts for the connection inherit it, so the stalled-client cut of
:mod:`._exchange` finds the socket without looking into task frames.
"""

from __future__ import annotations

import errno
import itertools
import json
import logging
import math
import os
import uuid
from collections.abc import Awaitable, Callable

import attrs
import trio
from hypercorn.config import Config as HyperConfig
from hypercorn.events import Closed, Event, RawData, Updated
from hypercorn.protocol.h2 import H2Protocol
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.statsd import StatsdLogger
from hypercorn.trio.tcp_server import MAX_RECV, TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import AppWrapper, ConnectionState, Framework, LifespanState
from hypercorn.utils import repr_socket_addr, wrap_app

from .._errors import UnavailableError
from .._wire.errors import error_body, error_status
from ._exchange import CONNECTION_SCOPE, CONNECTION_STREAM
from ._guard import dialect_of

log = logging.getLogger("clibridge.http")

#: refusals (503 at the cap) in progress at once; beyond, a new connection is closed at once
MAX_REFUSING = 16
#: how long a refused connection may take to send its request head, and to take the 503
REFUSE_TIMEOUT = 1.0
#: open files kept for everything but client connections (workers' pipes, the janitor,
#: listeners, refusals, logs)
FD_RESERVE = 128
#: idle connections looked at for one eviction (longest-idle first)
EVICT_SCAN = 8
#: a connection idle for less than this (seconds) is not closed to make room
EVICT_AFTER = 1.0
#: the "connection limit reached" warning at most this often (seconds)
WARN_INTERVAL = 10.0

_HEAD_LIMIT = 16 * 1024
#: accept errors that mean "out of resources for now": wait and retry (as trio does)
_ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
_ACCEPT_RETRY = 0.1


@attrs.frozen
class ConnectionStatistics:
    """A snapshot of :class:`ConnectionTable`."""

    #: open client connections
    open: int
    #: of which idle: between requests, or not yet sent a whole request
    idle: int
    #: the cap in force (``server.max_connections``, lowered to fit the open-file limit)
    limit: int
    #: connections accepted since start (refused ones not counted)
    accepted: int
    #: idle connections closed to make room for a new one at the cap
    evicted: int
    #: new connections turned away at the cap (503 or closed)
    refused: int
    #: idle connections closed at shutdown
    closed_at_shutdown: int


class ConnectionTable:
    """The server's open connections: how many, which are idle, least recently idle first.

    The one owner of that state. Hypercorn's per-connection timer expires idle
    connections; the table picks the one to close when a new connection needs room and
    closes the idle ones at shutdown.
    """

    def __init__(self, limit: int, *, evict_after: float = EVICT_AFTER) -> None:
        if limit < 1:
            raise ValueError("the connection limit must be at least 1")
        self.limit = limit
        #: a connection idle for less than this is not closed to make room
        self.evict_after = evict_after
        self._open: set[_Connection] = set()
        #: idle connections and when they became idle, longest-idle first (dicts keep
        #: insertion order)
        self._idle: dict[_Connection, float] = {}
        self._accepted = 0
        self._evicted = 0
        self._refused = 0
        self._closed_at_shutdown = 0

    def __len__(self) -> int:
        return len(self._open)

    @property
    def full(self) -> bool:
        return len(self._open) >= self.limit

    def add(self, connection: _Connection) -> None:
        self._open.add(connection)
        self._idle[connection] = trio.current_time()  # Hypercorn's timer runs from the start
        self._accepted += 1

    def discard(self, connection: _Connection) -> None:
        self._open.discard(connection)
        self._idle.pop(connection, None)

    def idle(self, connection: _Connection) -> bool:
        return connection in self._idle

    def set_idle(self, connection: _Connection, idle: bool) -> None:
        if connection not in self._open:
            return
        self._idle.pop(connection, None)
        if idle:
            self._idle[connection] = trio.current_time()

    def evict_one(self) -> bool:
        """Close the connection idle longest to make room; False when none may go.

        Closing an idle keep-alive connection races with its client sending the next
        request on it (that request then fails): so only a connection idle for
        ``evict_after`` goes (a client that is busy reuses its connection sooner), and
        not one whose client has already sent more that the server has not read yet.
        Only the :data:`EVICT_SCAN` longest-idle connections are looked at.
        """
        old_enough = trio.current_time() - self.evict_after
        for victim, since in itertools.islice(self._idle.items(), EVICT_SCAN):
            if since > old_enough:
                break  # the rest became idle later still
            if not victim.has_pending_input():
                self._evicted += 1
                self.discard(victim)
                victim.close()
                return True
        return False

    def count_refused(self) -> None:
        self._refused += 1

    def close_idle(self) -> int:
        """Close every idle connection (shutdown); returns how many."""
        idle = list(self._idle)
        for connection in idle:
            self.discard(connection)
            connection.close()
        self._closed_at_shutdown += len(idle)
        return len(idle)

    def statistics(self) -> ConnectionStatistics:
        return ConnectionStatistics(
            open=len(self._open),
            idle=len(self._idle),
            limit=self.limit,
            accepted=self._accepted,
            evicted=self._evicted,
            refused=self._refused,
            closed_at_shutdown=self._closed_at_shutdown,
        )


class _Connection(TCPServer):
    """Hypercorn's connection handler, with its bookkeeping made uncancellable."""

    def __init__(
        self,
        table: ConnectionTable,
        app: AppWrapper,
        config: HyperConfig,
        context: WorkerContext,
        state: ConnectionState,
        stream: trio.SocketStream,
    ) -> None:
        super().__init__(app, config, context, state, stream)  # type: ignore[arg-type]
        self._table = table
        self._socket = stream.socket

    async def protocol_send(self, event: Event) -> None:
        if isinstance(event, Updated):
            # before any checkpoint: a request that has just been read must not find its
            # connection still counted idle (and closed to make room)
            self._table.set_idle(self, event.idle)
        if isinstance(event, Updated | Closed):
            # Hypercorn calls this from inside the app's send, which Quart-Trio may have
            # just cancelled (module docstring, 1.): the idle timer's restart and the
            # close must happen all the same
            with trio.CancelScope(shield=True):
                await super().protocol_send(event)
        else:
            await super().protocol_send(event)

    async def _read_data(self) -> None:
        """Hypercorn 0.18's reading loop, plus: an HTTP/2 connection without streams is
        idle, and reading's end stops the idle timer."""
        try:
            while True:
                try:
                    with trio.fail_after(self.config.read_timeout or math.inf):
                        data = await self.stream.receive_some(MAX_RECV)
                except (trio.ClosedResourceError, trio.BrokenResourceError, trio.TooSlowError):
                    break
                await self.protocol.handle(RawData(bytes(data)))
                if data == b"":
                    break
                await self._idle_if_h2_without_streams()
            await self.protocol.handle(Closed())
        finally:
            # nothing more will be read: without this the idle timer, a task in the
            # connection's task group, would hold the closed connection until it fires
            with trio.CancelScope(shield=True):
                await self.idle_task.stop()

    async def _idle_if_h2_without_streams(self) -> None:
        # h2c with prior knowledge: the preface reaches Hypercorn's HTTP/1.1 parser as a
        # request ("PRI * HTTP/2.0"), which reports the connection busy, and then it is
        # handed to HTTP/2, which reports idle only when a stream closes: a connection
        # that never opens one had no idle timer and held the shutdown
        protocol = self.protocol.protocol
        if isinstance(protocol, H2Protocol) and protocol.idle and not self._table.idle(self):
            await self.protocol_send(Updated(idle=True))

    def has_pending_input(self) -> bool:
        """Whether the client has sent bytes the server has not read yet (or closed)."""
        try:
            return self._socket.is_readable()
        except (OSError, ValueError):  # already closed
            return True

    def close(self) -> None:
        """Close the connection now (it is idle). The reader wakes up with
        ``ClosedResourceError`` and Hypercorn winds the connection down."""
        self._socket.close()


# --------------------------------------------------------------------------- refusals


def _read_head_target(head: bytes) -> tuple[str, dict[str, str]]:
    """The path and the (lower-cased) headers of a raw request head, best effort."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    target = parts[1].decode("latin-1") if len(parts) >= 2 else "/"
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            headers[name.strip().decode("latin-1").lower()] = value.strip().decode("latin-1")
    return target.split("?", 1)[0] or "/", headers


def refusal_response(head: bytes, open_connections: int) -> bytes:
    """The 503 a connection gets at the cap, in the error shape of its request's API."""
    path, headers = _read_head_target(head)
    dialect = dialect_of(path, headers)
    error = UnavailableError(
        f"clibridge has {open_connections} open connections, its limit "
        "(server.max_connections), and each is in the middle of a request or was used "
        "within the last second; retry shortly, or raise server.max_connections",
        retry_after=1,
    )
    body = json.dumps(error_body(dialect, error), separators=(",", ":")).encode()
    status = error_status(dialect, error)
    head_lines = [
        f"HTTP/1.1 {status} Service Unavailable",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "retry-after: 1",
        "connection: close",
        f"x-request-id: req_{uuid.uuid4().hex}",
    ]
    return ("\r\n".join(head_lines) + "\r\n\r\n").encode() + body


async def _refuse(stream: trio.SocketStream, open_connections: int) -> None:
    """Read the request head (bounded), answer 503, let the client read it, close."""
    try:
        head = b""
        with trio.move_on_after(REFUSE_TIMEOUT):
            while b"\r\n\r\n" not in head and len(head) < _HEAD_LIMIT:
                chunk = await stream.receive_some(_HEAD_LIMIT)
                if not chunk:
                    return
                head += chunk
        if b"\r\n\r\n" not in head:
            return  # no whole request in time: just close
        with trio.move_on_after(REFUSE_TIMEOUT):
            await stream.send_all(refusal_response(head, open_connections))
            await stream.send_eof()
            # a close with unread data (the body) would reset the connection and could
            # destroy the answer before the client reads it: read until the client closes
            while await stream.receive_some(65536):
                pass
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass
    finally:
        await trio.aclose_forcefully(stream)


# --------------------------------------------------------------------------- open files


def fit_open_file_limit(max_connections: int) -> int:
    """The connection cap the open-file limit allows (``RLIMIT_NOFILE``).

    A cap above it is no cap: ``accept`` fails with EMFILE and new connections wait in
    the kernel's backlog. The soft limit is raised (up to the hard limit) when that is
    enough -- macOS starts processes with 256 -- else the cap is lowered, with a warning.
    """
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return max_connections
    need = max_connections + FD_RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return max_connections
    target = need if hard == resource.RLIM_INFINITY else min(need, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    except (ValueError, OSError):
        pass
    fit = max(1, soft - FD_RESERVE)
    if fit < max_connections:
        log.warning(
            "server.max_connections = %d does not fit the open-file limit (%d): serving at "
            "most %d connections; raise the limit (ulimit -n, LimitNOFILE=) to allow more",
            max_connections,
            soft,
            fit,
        )
        return fit
    return max_connections


# --------------------------------------------------------------------------- serving


@attrs.define(eq=False)
class _Acceptor:
    """Admits accepted connections: a :class:`_Connection` each, evicting or refusing at
    the cap."""

    app: AppWrapper
    config: HyperConfig
    context: WorkerContext
    lifespan_state: LifespanState
    table: ConnectionTable
    connections: trio.Nursery
    refusing: int = 0
    warned_at: float = -WARN_INTERVAL

    async def accept_loop(self, listener: trio.SocketListener) -> None:
        async with listener:
            while True:
                try:
                    stream = await listener.accept()
                except OSError as exc:
                    if exc.errno not in _ACCEPT_CAPACITY_ERRNOS:
                        raise
                    log.error(
                        "accept failed: %s (%s); retrying in %g s",
                        errno.errorcode[exc.errno],
                        os.strerror(exc.errno),
                        _ACCEPT_RETRY,
                    )
                    await trio.sleep(_ACCEPT_RETRY)
                    continue
                self.admit(stream)

    def admit(self, stream: trio.SocketStream) -> None:
        table = self.table
        if table.full:
            self._warn_full()
            if not table.evict_one():
                table.count_refused()
                if self.refusing < MAX_REFUSING:
                    self.refusing += 1
                    self.connections.start_soon(self._refuse, stream, len(table))
                else:
                    stream.socket.close()
                return
        state = ConnectionState(self.lifespan_state.copy())
        connection = _Connection(table, self.app, self.config, self.context, state, stream)
        table.add(connection)
        self.connections.start_soon(self._serve_connection, connection, stream)

    async def _serve_connection(self, connection: _Connection, stream: trio.SocketStream) -> None:
        CONNECTION_STREAM.set(stream)  # inherited by the app's tasks (the stalled-client cut)
        try:
            with trio.CancelScope() as scope:
                CONNECTION_SCOPE.set(scope)  # and the way to end it all (abort_connection)
                await connection.run()
        finally:
            self.table.discard(connection)
            await trio.aclose_forcefully(stream)

    async def _refuse(self, stream: trio.SocketStream, open_connections: int) -> None:
        try:
            await _refuse(stream, open_connections)
        finally:
            self.refusing -= 1

    def _warn_full(self) -> None:
        now = trio.current_time()
        if now - self.warned_at >= WARN_INTERVAL:
            self.warned_at = now
            stats = self.table.statistics()
            log.warning(
                "connection limit reached: %d open (server.max_connections); a new connection "
                "replaces the longest-idle one, or gets 503 when none has been idle for %g s "
                "(%d evicted, %d refused so far)",
                stats.open,
                self.table.evict_after,
                stats.evicted,
                stats.refused,
            )


async def serve_connections(
    app: Framework,
    config: HyperConfig,
    table: ConnectionTable,
    *,
    shutdown_trigger: Callable[[], Awaitable[None]],
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """``hypercorn.trio.serve`` for plain HTTP, with the connections in ``table`` (module
    docstring). Reports the bound addresses (``http://host:port``) once listening."""
    if config.ssl_enabled or config.quic_bind:
        raise ValueError("serve_connections serves plain HTTP only (no TLS, no QUIC)")
    config.set_statsd_logger_class(StatsdLogger)
    wrapped = wrap_app(app, config.wsgi_max_body_size, "asgi")
    lifespan_state: LifespanState = {}
    lifespan = Lifespan(wrapped, config, lifespan_state)
    context = WorkerContext(None)

    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()

        async with trio.open_nursery() as connections:
            sockets = config.create_sockets()
            listeners: list[trio.SocketListener] = []
            binds: list[str] = []
            for sock in sockets.insecure_sockets:
                sock.listen(config.backlog)
                listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
                binds.append(f"http://{repr_socket_addr(sock.family, sock.getsockname())}")
            acceptor = _Acceptor(wrapped, config, context, lifespan_state, table, connections)
            try:
                async with trio.open_nursery() as accepting:
                    for listener in listeners:
                        accepting.start_soon(acceptor.accept_loop, listener)
                    task_status.started(binds)
                    await shutdown_trigger()
                    accepting.cancel_scope.cancel()  # closes the listeners
            finally:
                # a connection that finishes its request now closes after the response
                await context.terminated.set()
                closed = table.close_idle()
                if closed:
                    log.info("shutdown: closed %d idle connection(s)", closed)
                connections.cancel_scope.deadline = trio.current_time() + config.graceful_timeout

        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()
