"""Error mapping in each dialect's envelope, Retry-After, limits, bad JSON, the catch-all."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

from clibridge import _errors as E
from clibridge._events import Event, Request, TextDelta, TurnStarted
from clibridge._wire.errors import error_body, error_status

from .conftest import MODEL, RunningServer, Script, ScriptedService, open_server
from .helpers import DIALECTS, PATHS, assert_error_shape, body_for, parse_sse

ERRORS: list[E.BridgeError] = [
    E.RequestError("bad", param="$.messages"),
    E.UnsupportedFeature("n > 1 is not supported", param="$.n"),
    E.RequestTooLarge("too big"),
    E.ModelNotFound("no such model", param="model"),
    E.QueueFull("all 4 workers busy and 16 waiting", retry_after=2.5),
    E.CapacityError("busy"),
    E.UnavailableError("not ready: booting"),
    E.LoginExpired("the claude login has expired: run `claude setup-token`"),
    E.UpstreamRateLimited("upstream 429", retry_after=30),
    E.UpstreamOverloaded("upstream overloaded"),
    E.CliCrashed("the CLI exited with status 1"),
    E.ProtocolError("unparseable output"),
    E.BootError("worker failed to boot"),
    E.TurnTimeout("turn took longer than 600 s"),
    E.UpstreamError("upstream failed"),
]


async def test_admission_errors_in_each_dialect(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        for error in ERRORS:
            server.service.default = Script(enter_error=error)
            for dialect in DIALECTS:
                for stream in (False, True):
                    r = await client.post(PATHS[dialect], json=body_for(dialect, stream=stream))
                    label = f"{type(error).__name__} {dialect} stream={stream}"
                    assert r.status_code == error_status(dialect, error), label
                    assert r.json() == error_body(dialect, error), label
                    if r.status_code in (429, 503, 529):
                        expected = (
                            "3" if error.retry_after == 2.5 else "30" if error.retry_after else "1"
                        )
                        assert r.headers["Retry-After"] == expected, label
                    else:
                        assert "Retry-After" not in r.headers, label
                    assert r.headers["X-Request-Id"]
    assert all(not rec.entered for rec in server.service.records)


async def test_turn_error_before_content_keeps_its_status(server: RunningServer) -> None:
    """An error after TurnStarted but before any content still gets an HTTP status."""
    error = E.UpstreamRateLimited("upstream 429", retry_after=7)
    server.service.default = Script(steps=[TurnStarted(MODEL), error])
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        for dialect in DIALECTS:
            for stream in (False, True):
                r = await client.post(PATHS[dialect], json=body_for(dialect, stream=stream))
                assert r.status_code == 429
                assert r.headers["Retry-After"] == "7"
                assert r.json() == error_body(dialect, error)


async def test_error_after_stream_started_uses_the_encoders_fail(server: RunningServer) -> None:
    error = E.CliCrashed("the CLI exited with status 1")
    server.service.default = Script(steps=[TurnStarted(MODEL), TextDelta("partial"), error])
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        for dialect in DIALECTS:
            r = await client.post(PATHS[dialect], json=body_for(dialect, stream=True))
            assert r.status_code == 200
            frames = parse_sse(r.content)
            last_event, last_data = frames[-1]
            if dialect == "anthropic_messages":
                assert last_event == "error"
                assert json.loads(last_data) == error_body(dialect, error)
            elif dialect == "openai_chat":
                assert "the CLI exited" in r.text
            else:
                assert last_event == "response.failed"


async def test_turn_without_finish_is_an_error_not_a_hang(server: RunningServer) -> None:
    server.service.default = Script(steps=[TurnStarted(MODEL), TextDelta("partial")])
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        r = await client.post(PATHS["openai_chat"], json=body_for("openai_chat"))
        assert r.status_code == 502
        r = await client.post(
            PATHS["anthropic_messages"], json=body_for("anthropic_messages", stream=True)
        )
        assert parse_sse(r.content)[-1][0] == "error"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"   ",
        b"{",
        b"[]",
        b'"text"',
        b"null",
        b"\xff\xfe",
        b'{"model": 1e999999',
        b"[" * 100_000,
    ],
)
async def test_invalid_json_is_400_in_each_dialect(server: RunningServer, raw: bytes) -> None:
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        for path, dialect in [
            *((p, d) for d, p in PATHS.items()),
            ("/v1/messages/count_tokens", "anthropic_messages"),
        ]:
            r = await client.post(path, content=raw, headers={"Content-Type": "application/json"})
            assert r.status_code == 400, (path, raw[:20], r.text)
            assert_error_shape(dialect, r.json())


async def test_body_too_large_closes_the_connection_and_the_next_request_works() -> None:
    async with (
        open_server(max_body_bytes=2000) as server,
        httpx.AsyncClient(base_url=server.base_url, timeout=5) as client,
    ):
        for dialect in DIALECTS:
            body = body_for(dialect, text="x" * 5000)
            r = await client.post(PATHS[dialect], json=body)
            assert r.status_code == 413
            assert r.headers["Connection"] == "close"
            error = assert_error_shape(dialect, r.json())
            assert "max_body_bytes" in error["message"]
            # the next request on this client goes out on a new connection and works
            r = await client.post(PATHS[dialect], json=body_for(dialect))
            assert r.status_code == 200, r.text

        async def chunks() -> AsyncIterator[bytes]:
            yield b'{"model": "m", "messages": [{"role": "user", "content": "'
            for _ in range(10):
                yield b"x" * 500
            yield b'"}]}'

        r = await client.post(  # chunked: no length
            PATHS["openai_chat"], content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 413
        r = await client.get("/healthz")
        assert r.status_code == 200


async def test_prompt_and_message_limits() -> None:
    async with (
        open_server(max_messages=3, max_prompt_chars=1000) as server,
        httpx.AsyncClient(base_url=server.base_url) as client,
    ):
        many = [{"role": "user" if i % 2 == 0 else "assistant", "content": "hi"} for i in range(5)]
        r = await client.post(PATHS["openai_chat"], json={"model": MODEL, "messages": many})
        assert r.status_code == 413
        error = assert_error_shape("openai_chat", r.json())
        assert "5 messages" in error["message"] and error["param"] == "$.messages"
        r = await client.post(
            PATHS["anthropic_messages"], json=body_for("anthropic_messages", text="y" * 1001)
        )
        assert r.status_code == 413
        assert "max_prompt_chars" in r.json()["error"]["message"]
    assert server.service.records == []


class _BrokenService(ScriptedService):
    """A service whose turn() blows up with a bug (not a BridgeError)."""

    @asynccontextmanager
    async def turn(self, request: Request) -> AsyncIterator[AsyncIterator[Event]]:
        raise KeyError("a bug")
        yield  # pragma: no cover


async def test_unexpected_exception_is_a_logged_500_in_the_envelope(
    caplog: pytest.LogCaptureFixture,
) -> None:
    service = _BrokenService()
    async with (
        open_server(service) as broken,
        httpx.AsyncClient(base_url=broken.base_url) as client,
    ):
        with caplog.at_level(logging.ERROR, logger="clibridge.http"):
            r = await client.post(PATHS["anthropic_messages"], json=body_for("anthropic_messages"))
        assert r.status_code == 500
        error = assert_error_shape("anthropic_messages", r.json())
        rid = r.headers["X-Request-Id"]
        assert rid in error["message"]
        assert "a bug" not in r.text  # details go to the log, not the client
        assert any(rid in rec.getMessage() for rec in caplog.records)
