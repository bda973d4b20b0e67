"""HTTP on a bare TCP stream, for the tests that must hang up or stop reading at an exact
point (the HTTP and end-to-end suites)."""

from __future__ import annotations

import json
from typing import Any

import trio


async def open_raw_stream(
    base_url: str, path: str, body: dict[str, Any], *, read_head: bool = True
) -> tuple[trio.SocketStream, bytes]:
    """POST ``body`` on a bare TCP stream; returns the stream and the bytes read so far
    (at least the status line). Lets a test stop reading or hang up exactly when it wants,
    which httpx's nested async generators do not allow cleanly."""
    host, port = base_url.removeprefix("http://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    raw = json.dumps(body).encode()
    await stream.send_all(
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(raw)}\r\n\r\n".encode()
        + raw
    )
    head = await stream.receive_some(65536) if read_head else b""
    return stream, head
