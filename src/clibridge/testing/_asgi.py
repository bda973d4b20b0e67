"""The ASGI plumbing the loopback test servers share (model stub, recording proxy).

Each is a bare ASGI app on Hypercorn: :func:`serve_loopback` binds it and reports the port,
:func:`read_request` answers the lifespan protocol and reads one HTTP request's body.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from functools import partial
from typing import TYPE_CHECKING, Any, TypeAlias, cast

import hypercorn.config
import hypercorn.trio
import trio

if TYPE_CHECKING:
    from hypercorn.typing import ASGIFramework

Scope: TypeAlias = Mapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send: TypeAlias = Callable[[Mapping[str, Any]], Awaitable[None]]
App: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]


async def serve_loopback(
    app: App,
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``host:port`` (0: any free port) until cancelled; reports the port."""
    config = hypercorn.config.Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = None
    # Why: a test server must stop at once when its test ends; streams in flight are debris.
    config.graceful_timeout = 0.1
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(
            partial(
                hypercorn.trio.serve,
                cast("ASGIFramework", app),
                config,
                shutdown_trigger=trio.sleep_forever,
            )
        )
        task_status.started(int(binds[0].rsplit(":", 1)[1]))


async def read_request(scope: Scope, receive: Receive, send: Send) -> bytes | None:
    """The body of an HTTP request; None when there is nothing to answer.

    None for the lifespan protocol (answered here until shutdown), for other scope types,
    and when the client disconnected before the body was complete.
    """
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return None
    if scope["type"] != "http":
        return None
    raw = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        raw += message.get("body", b"")
        if not message.get("more_body", False):
            return bytes(raw)
