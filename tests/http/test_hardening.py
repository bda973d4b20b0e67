"""Issue 15 hardening at the HTTP layer: surrogates, WebSocket upgrades, log forging,
conflicting framing, and connections of refused requests.

Each test names the bug it guards. The browser-facing checks (content types, Host,
Origin, CORS) are in ``test_browser_guard.py``.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import httpx
import pytest
import trio

from clibridge._http._logsafe import EscapeControls, escape_controls
from clibridge._supervisor import FAKE_CODEX_COMMAND

from ..e2e.conftest import open_e2e_server
from .conftest import MODEL, RunningServer, open_server
from .helpers import DIALECTS, PATHS, assert_error_shape, body_for


async def exchange_raw(base_url: str, data: bytes, *, within: float = 5.0) -> tuple[bytes, bool]:
    """Send ``data`` on a new connection and read until the server closes it.

    Returns what was read and whether the server closed the connection within ``within``
    seconds (False: it was still open, which for a refused request is the bug).
    """
    host, port = base_url.removeprefix("http://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    got = b""
    closed = False
    async with stream:
        await stream.send_all(data)
        with trio.move_on_after(within):
            while True:
                try:
                    chunk = await stream.receive_some(65536)
                except trio.BrokenResourceError:  # reset after close: closed too
                    chunk = b""
                if not chunk:
                    closed = True
                    break
                got += chunk
    return got, closed


def _request(path: str, headers: dict[str, str], body: bytes = b"", method: str = "POST") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode() + b"\r\n" + body


def _statuses(raw: bytes) -> list[int]:
    """The status of every response in ``raw`` (a body may run into the next status line)."""
    return [int(m) for m in re.findall(rb"HTTP/1\.1 (\d{3}) ", raw)]


# --------------------------------------------------------------------------- surrogates


async def test_a_lone_surrogate_is_a_400_over_http(server: RunningServer) -> None:
    """Regression (issue 15): ``\\ud800`` in a body became a 500 ``upstream_error`` with a
    traceback (``UnicodeEncodeError`` at the worker's stdin)."""
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        for dialect in DIALECTS:
            for stream in (False, True):
                raw = json.dumps(body_for(dialect, stream=stream, text="hi")).replace(
                    '"hi"', '"h\\ud800i"'
                )
                r = await client.post(
                    PATHS[dialect], content=raw, headers={"Content-Type": "application/json"}
                )
                assert r.status_code == 400, r.text
                error = assert_error_shape(dialect, r.json())
                assert "lone UTF-16 surrogate" in error["message"]
                assert error["message"].startswith(
                    "$.messages[0].content" if dialect != "openai_responses" else "$.input"
                )
        raw = json.dumps(body_for("anthropic_messages")).replace('"hi"', '"\\udfff"')
        r = await client.post(
            "/v1/messages/count_tokens", content=raw, headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 400
    assert server.service.records == []  # nothing reached a worker


@pytest.mark.slow
async def test_a_lone_surrogate_in_a_tool_schema_does_not_end_a_worker(tmp_path: Path) -> None:
    """Regression (issue 15): a lone surrogate in a tool schema killed the worker's reader
    and the worker was replaced (68 such requests: 41 restarts, /readyz 503)."""
    schema = {"type": "object", "properties": {"a": {"type": "string", "description": "x\ud800"}}}
    chat_tools = [{"type": "function", "function": {"name": "f", "parameters": schema}}]
    async with (
        open_e2e_server(tmp_path, codex=FAKE_CODEX_COMMAND) as server,
        server.client(headers={"Content-Type": "application/json"}) as client,
    ):
        for model in (MODEL, "gpt-5"):
            for _ in range(3):
                # json.dumps writes the surrogate as the escape "\ud800", as clients do
                messages_body = {
                    "model": model,
                    "max_tokens": 50,
                    "messages": [{"role": "user", "content": "hi"}],
                    "tools": [{"name": "f", "description": "d", "input_schema": schema}],
                }
                r = await client.post("/v1/messages", content=json.dumps(messages_body))
                assert r.status_code == 400, r.text
                assert r.json()["error"]["message"].startswith(
                    "$.tools[0].input_schema.properties.a.description: contains a lone"
                )
                chat_body = {
                    "model": model,
                    "messages": [{"role": "user", "content": "hi"}],
                    "tools": chat_tools,
                }
                r = await client.post("/v1/chat/completions", content=json.dumps(chat_body))
                assert r.status_code == 400, r.text
        pools = await server.all_stats()
        for name, stats in pools.items():
            assert stats["restarts"] == 0 and stats["crashes"] == 0, (name, stats)
        assert (await client.get("/readyz")).status_code == 200
        await server.assert_serves()


# --------------------------------------------------------------------------- WebSocket


async def test_a_websocket_upgrade_gets_a_clean_400(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression (issue 15): a WebSocket upgrade was answered 500 with a traceback
    ("Not within a request context")."""
    upgrade = {
        "Host": "127.0.0.1",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
    }
    with caplog.at_level(logging.WARNING):
        for path, dialect in (
            ("/v1/responses", "openai_responses"),
            ("/v1/messages", "anthropic_messages"),
            ("/nowhere", "openai_chat"),
        ):
            raw, closed = await exchange_raw(server.base_url, _request(path, upgrade, method="GET"))
            head, _, body = raw.partition(b"\r\n\r\n")
            assert _statuses(head) == [400], raw
            assert closed
            error = assert_error_shape(dialect, json.loads(body))  # type: ignore[arg-type]
            assert "WebSocket" in error["message"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    # the server is fine afterwards
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        assert (await client.get("/healthz")).status_code == 200


# --------------------------------------------------------------------------- log forging


async def test_control_characters_in_a_path_do_not_forge_log_lines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Regression (issue 15): a path with ``%0A`` wrote a forged log line at debug level,
    ``%00`` a NUL byte."""
    with caplog.at_level(logging.DEBUG):
        async with open_server() as server:  # debug before start: the access log is on
            raw, _ = await exchange_raw(
                server.base_url,
                _request(
                    "/v1/x%0A12:00:00%20INFO%20clibridge.http:%20forged%00%0D%C2%85%ED%A0%80",
                    {"Host": "127.0.0.1", "Connection": "close"},
                    method="GET",
                ),
            )
            assert _statuses(raw) == [404]
    access = [r.getMessage() for r in caplog.records if r.name == "hypercorn.access"]
    assert any(
        "/v1/x\\x0a12:00:00 INFO clibridge.http: forged\\x00\\x0d\\x85" in m for m in access
    ), access
    for record in caplog.records:
        message = record.getMessage()
        assert "\n" not in message and "\x00" not in message and "\r" not in message, message
        message.encode("utf-8")  # no lone surrogate either


def test_the_log_filter_escapes_controls_and_surrogates() -> None:
    assert escape_controls("a\nb\x00c\x1b[31m\x7f\x9f\ud800 é ✓") == (
        "a\\x0ab\\x00c\\x1b[31m\\x7f\\x9f\\ud800 é ✓"
    )
    record = logging.LogRecord(
        "clibridge.http", logging.WARNING, __file__, 1, "request %s %s", ("id", "/a\nb"), None
    )
    assert EscapeControls().filter(record)
    assert record.getMessage() == "request id /a\\x0ab"
    plain = logging.LogRecord("x", logging.INFO, __file__, 1, "ok %d", (1,), None)
    EscapeControls().filter(plain)
    assert plain.args == (1,)  # untouched when there is nothing to escape


# --------------------------------------------------------------------------- framing


async def test_content_length_with_transfer_encoding_is_refused_and_closes(
    server: RunningServer,
) -> None:
    """Regression (issue 15): a request with both Content-Length and Transfer-Encoding
    kept the connection and served what followed as a new request (RFC 9112 §6.1)."""
    body = json.dumps(body_for("openai_chat")).encode()
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    smuggled = _request("/v1/models", {"Host": "127.0.0.1"}, method="GET")
    raw, closed = await exchange_raw(
        server.base_url,
        _request(
            PATHS["openai_chat"],
            {
                "Host": "127.0.0.1",
                "Content-Type": "application/json",
                "Content-Length": "5",
                "Transfer-Encoding": "chunked",
            },
            chunked,
        )
        + smuggled,
    )
    assert _statuses(raw) == [400], raw  # the pipelined request was not served
    assert closed
    assert b"Content-Length and Transfer-Encoding" in raw
    assert b"connection: close" in raw.lower()
    assert server.service.records == []


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Host": "evil.example", "Content-Type": "application/json"}, 421),
        ({"Origin": "http://evil.example", "Content-Type": "application/json"}, 403),
        ({"Content-Type": "text/plain"}, 415),
        ({"Content-Type": "application/json", "X-Api-Key": "wrong"}, 401),
        ({"Content-Type": "application/json", "Content-Length": "999999999"}, 413),
    ],
)
async def test_a_refused_request_with_an_unsent_body_closes_its_connection(
    headers: dict[str, str], status: int
) -> None:
    """Regression (issue 15): after a refusal with the body not (yet) sent -- 413, 401,
    and now 403 / 415 / 421 -- the socket stayed open although the answer said
    ``connection: close``: Quart cancelled Hypercorn's close."""
    async with open_server(auth_token="s3cret", max_body_bytes=1000) as server:
        sent = {"Host": "127.0.0.1", "Authorization": "Bearer s3cret", "Content-Length": "500"}
        if "X-Api-Key" in headers:
            del sent["Authorization"]
        raw, closed = await exchange_raw(
            server.base_url, _request(PATHS["anthropic_messages"], {**sent, **headers}, b"{")
        )
        assert _statuses(raw) == [status], raw
        assert b"connection: close" in raw.lower()
        assert closed, "the connection of a refused request stayed open"


async def test_keep_alive_still_works_after_a_read_body(server: RunningServer) -> None:
    """A 400 after the body was read keeps the connection (no needless reconnects)."""
    good = json.dumps(body_for("openai_chat")).encode()
    bad = b'{"model": 1}'
    headers = {"Host": "127.0.0.1", "Content-Type": "application/json"}
    raw, closed = await exchange_raw(
        server.base_url,
        _request(PATHS["openai_chat"], {**headers, "Content-Length": str(len(bad))}, bad)
        + _request(PATHS["openai_chat"], {**headers, "Content-Length": str(len(good))}, good)
        + _request("/healthz", {"Host": "127.0.0.1", "Connection": "close"}, method="GET"),
    )
    assert _statuses(raw) == [400, 200, 200]
    assert closed
