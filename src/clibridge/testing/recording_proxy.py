"""A loopback HTTP proxy that records what a real client sends to clibridge.

Put it between a client (OpenClaw, an SDK) and clibridge to keep the client's real traffic
as samples (``tests/testing/samples/openclaw/``)::

    python -m clibridge.testing.recording_proxy --listen-port 7600 \\
        --upstream http://127.0.0.1:7483 --record traffic.jsonl

or in-process, in a trio test::

    async with open_recording_proxy("http://127.0.0.1:7483", record=path) as proxy:
        ...  # point the client at proxy.base_url; read proxy.exchanges (wait_for_exchanges)

Theory of operation
-------------------
Hypercorn serves a bare ASGI app on 127.0.0.1. For every request the app reads the whole
request body, then opens the same request upstream with httpx (same method, path, query,
body and headers, minus the hop-by-hop ones) and copies the upstream status, headers and
body bytes back as they arrive (``aiter_raw``: nothing is decoded or re-chunked, so SSE
streams reach the client event by event). While the body is being copied a sibling task
watches for the client hanging up, and cancels the upstream stream when it does, so clibridge
sees the disconnect too.

When the exchange ends (complete, failed upstream, or cut by the client) one
:class:`Exchange` is appended to :attr:`RecordingProxy.exchanges` and, as one JSON line, to
the record file. Bodies that parse as JSON are stored parsed (``request`` / ``response``),
anything else -- SSE included -- as text (``request_text`` / ``response_text``). Request
headers are kept except secrets (``authorization``, ``x-api-key``, cookies: see
:data:`SECRET_HEADERS`); headers are forwarded upstream untouched, secrets included. Lines
are written in completion order; ``seq`` is the arrival order. A response body longer than
``max_response_bytes`` is replaced by a placeholder naming its size (request bodies are
never trimmed).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

from ._asgi import Receive, Scope, Send, read_request, serve_loopback

__all__ = ["SECRET_HEADERS", "Exchange", "RecordingProxy", "open_recording_proxy"]

#: request headers never written to a record (they are still forwarded upstream)
SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "x-api-key", "api-key", "cookie", "set-cookie"}
)
#: hop-by-hop headers, plus those httpx / hypercorn compute themselves
_NOT_FORWARDED = frozenset(
    {
        "host",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)


@attrs.frozen
class Exchange:
    """One request and its response, as recorded."""

    seq: int
    method: str
    #: path plus ``?query`` when there is one
    path: str
    headers: Mapping[str, str]
    #: the request body: parsed JSON, else None (then see ``request_text``)
    request: Any
    request_text: str | None
    status: int
    response_headers: Mapping[str, str]
    #: the response body: parsed JSON, else None (then see ``response_text``; SSE is text)
    response: Any
    response_text: str | None
    #: seconds from the request's arrival to the end of its response
    duration: float
    #: why the exchange did not complete normally ("client disconnected", an upstream error)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


def _body_fields(raw: bytes, limit: int | None) -> tuple[Any, str | None]:
    """(parsed JSON or None, text or None) for a body; over ``limit`` bytes: a placeholder."""
    if limit is not None and len(raw) > limit:
        return None, f"<{len(raw)} bytes, dropped (limit {limit})>"
    if not raw:
        return None, None
    try:
        return json.loads(raw), None
    except ValueError:
        return None, raw.decode("utf-8", errors="replace")


def _append_line(path: Path, data: Mapping[str, Any]) -> None:
    # Why sync: one short append per exchange; a line must never interleave with another.
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(data, ensure_ascii=False) + "\n")


class RecordingProxy:
    """The recording proxy server. See the module docstring."""

    def __init__(
        self,
        upstream: str,
        *,
        record: Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        max_response_bytes: int | None = None,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.record = record
        self.host = host
        self.requested_port = port
        self.max_response_bytes = max_response_bytes
        #: the bound port, set once :meth:`run` reported started
        self.port: int | None = None
        #: every finished exchange, in completion order
        self.exchanges: list[Exchange] = []
        self._seq = 0
        self._changed = trio.Event()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (add ``/v1`` for OpenAI clients)."""
        if self.port is None:
            raise RuntimeError("the recording proxy is not running yet")
        return f"http://{self.host}:{self.port}"

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; reports the bound port once it accepts connections."""
        # Why no read timeout: an SSE stream may stay silent for as long as clibridge allows.
        timeout = httpx.Timeout(10.0, read=None)
        async with (
            httpx.AsyncClient(timeout=timeout, trust_env=False) as client,
            trio.open_nursery() as nursery,
        ):
            self.port = await nursery.start(
                serve_loopback, partial(self._app, client), self.host, self.requested_port
            )
            task_status.started(self.port)

    async def _app(
        self, client: httpx.AsyncClient, scope: Scope, receive: Receive, send: Send
    ) -> None:
        raw = await read_request(scope, receive, send)
        if raw is None:
            return
        self._seq += 1
        await self._forward(client, self._seq, scope, raw, receive, send)

    async def wait_for_exchanges(self, count: int) -> list[Exchange]:
        """Wait until ``count`` exchanges were recorded; returns them."""
        while len(self.exchanges) < count:
            await self._changed.wait()
        return list(self.exchanges)

    async def settled(self) -> list[Exchange]:
        """Wait until every request the proxy has read is recorded; returns the exchanges.

        Why: an exchange is recorded once its relay ends, a moment after the client got its
        last byte. A client that exits at that byte (``cn -p``, ``aider --message``) leaves
        its last exchange unrecorded for that moment: read :attr:`exchanges` after this.
        """
        return await self.wait_for_exchanges(self._seq)

    async def _forward(
        self,
        client: httpx.AsyncClient,
        seq: int,
        scope: Scope,
        raw: bytes,
        receive: Receive,
        send: Send,
    ) -> None:
        started = time.monotonic()
        path: str = scope.get("raw_path", scope["path"].encode()).decode("latin-1")
        if scope.get("query_string"):
            path += "?" + scope["query_string"].decode("latin-1")
        headers = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in scope["headers"]
            if k.decode("latin-1").lower() not in _NOT_FORWARDED
        ]
        got = _Relayed()
        try:
            request = client.build_request(
                scope["method"], self.upstream + path, headers=headers, content=raw
            )
            await _relay(client, request, receive, send, got)
        finally:
            # Why in ``finally`` (and no await): the exchange is kept even when the proxy is
            # cancelled right after the client got its last byte (a test ending)
            request_json, request_text = _body_fields(raw, None)
            response_json, response_text = _body_fields(bytes(got.body), self.max_response_bytes)
            exchange = Exchange(
                seq=seq,
                method=scope["method"],
                path=path,
                headers={k: v for k, v in headers if k.lower() not in SECRET_HEADERS},
                request=request_json,
                request_text=request_text,
                status=got.status,
                response_headers={
                    k: v for k, v in got.headers.items() if k.lower() not in SECRET_HEADERS
                },
                response=response_json,
                response_text=response_text,
                duration=round(time.monotonic() - started, 3),
                error=got.error,
            )
            self.exchanges.append(exchange)
            if self.record is not None:
                _append_line(self.record, exchange.to_json())
            self._changed.set()
            self._changed = trio.Event()


@attrs.define
class _Relayed:
    """What came back so far (filled in by :func:`_relay` as it goes)."""

    status: int = 502
    headers: dict[str, str] = attrs.field(factory=dict)
    body: bytearray = attrs.field(factory=bytearray)
    error: str | None = "the proxy stopped mid-exchange"


async def _relay(
    client: httpx.AsyncClient,
    request: httpx.Request,
    receive: Receive,
    send: Send,
    got: _Relayed,
) -> None:
    """Send ``request`` upstream and copy the response to the client as it arrives."""
    try:
        response = await client.send(request, stream=True)
    except httpx.HTTPError as exc:
        got.error = f"upstream unreachable: {exc!r}"
        got.body += json.dumps({"error": {"message": f"recording proxy: {got.error}"}}).encode()
        await _send_all(send, 502, [(b"content-type", b"application/json")], bytes(got.body))
        return
    got.status = response.status_code
    got.headers = dict(response.headers)
    out = [(k, v) for k, v in response.headers.raw if k.lower().decode() not in _NOT_FORWARDED]
    try:
        await send({"type": "http.response.start", "status": got.status, "headers": out})
        got.error = "client disconnected"
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_on_disconnect, receive, nursery.cancel_scope)
            async for chunk in response.aiter_raw():
                got.body += chunk
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            # Why before the last send: the client may hang up as soon as it has the last byte
            got.error = None
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            nursery.cancel_scope.cancel()
    except httpx.HTTPError as exc:
        got.error = f"upstream failed mid-response: {exc!r}"
    finally:
        with trio.CancelScope(shield=True):
            await response.aclose()


async def _send_all(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _cancel_on_disconnect(receive: Receive, scope: trio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


@asynccontextmanager
async def open_recording_proxy(
    upstream: str,
    *,
    record: Path | None = None,
    port: int = 0,
    max_response_bytes: int | None = None,
) -> AsyncIterator[RecordingProxy]:
    """A running :class:`RecordingProxy` in front of ``upstream`` for the ``async with`` body."""
    proxy = RecordingProxy(
        upstream, record=record, port=port, max_response_bytes=max_response_bytes
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.run)
        try:
            yield proxy
        finally:
            nursery.cancel_scope.cancel()


# --------------------------------------------------------------------- standalone


async def _main(proxy: RecordingProxy) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(proxy.run)
            print(
                f"recording proxy listening on http://{proxy.host}:{bound} -> {proxy.upstream}",
                flush=True,
            )
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


def main(argv: list[str] | None = None) -> None:
    """``python -m clibridge.testing.recording_proxy``: proxy and record until SIGTERM / SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--listen-port", type=int, default=0, help="port to bind (0: ephemeral)")
    parser.add_argument("--listen-host", default="127.0.0.1")
    parser.add_argument("--upstream", required=True, help="e.g. http://127.0.0.1:7483")
    parser.add_argument("--record", type=Path, required=True, help="JSON lines file to append to")
    parser.add_argument(
        "--max-response-bytes",
        type=int,
        default=None,
        help="replace larger response bodies by a placeholder (default: keep all)",
    )
    args = parser.parse_args(argv)
    proxy = RecordingProxy(
        args.upstream,
        record=args.record,
        host=args.listen_host,
        port=args.listen_port,
        max_response_bytes=args.max_response_bytes,
    )
    started = time.monotonic()
    trio.run(_main, proxy)
    print(
        f"recording proxy stopped after {time.monotonic() - started:.1f} s, "
        f"{len(proxy.exchanges)} exchanges recorded",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
