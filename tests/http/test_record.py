"""The request record: every admitted request reaches each observer exactly once, at its end."""

from __future__ import annotations

import itertools
import logging

import httpx
import pytest
import trio

from clibridge import _errors as E
from clibridge._events import (
    Finished,
    FinishReason,
    TextDelta,
    ToolCallEnd,
    ToolCallStart,
    TurnStarted,
    Usage,
)
from clibridge._http._record import RequestRecord, error_type_of
from tests._raw_http import open_raw_stream

from .conftest import MODEL, USAGE, RunningServer, Script, Sleep, open_server
from .helpers import DIALECTS, PATHS, body_for

#: how long a test waits for a record that must come
_WAIT = 5.0


class Records:
    """An observer that keeps what it is given and wakes waiters."""

    def __init__(self) -> None:
        self.seen: list[RequestRecord] = []
        self._change = trio.Event()

    def __call__(self, record: RequestRecord) -> None:
        self.seen.append(record)
        self._change.set()
        self._change = trio.Event()

    async def wait_for(self, count: int) -> list[RequestRecord]:
        with trio.fail_after(_WAIT):
            while len(self.seen) < count:
                await self._change.wait()
        return self.seen

    async def exactly(self, count: int) -> list[RequestRecord]:
        """Wait for ``count`` records, then make sure no more come for a moment."""
        await self.wait_for(count)
        await trio.sleep(0.2)
        assert len(self.seen) == count, self.seen
        return self.seen


def observe(server: RunningServer) -> tuple[Records, Records]:
    """Two observers on ``server`` (each must be called once per request)."""
    first, second = Records(), Records()
    server.app.request_observers.extend([first, second])
    return first, second


@pytest.mark.parametrize("stream", [False, True])
async def test_one_record_per_successful_request(server: RunningServer, stream: bool) -> None:
    first, second = observe(server)
    ids: list[str] = []
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        for dialect in DIALECTS:
            r = await client.post(PATHS[dialect], json=body_for(dialect, stream=stream))
            assert r.status_code == 200
            ids.append(r.headers["X-Request-Id"])
    records = await first.exactly(3)
    assert await second.exactly(3) == records
    assert [r.request_id for r in records] == ids
    for record, dialect in zip(records, DIALECTS, strict=True):
        assert record.dialect == dialect
        assert record.endpoint == PATHS[dialect]
        assert record.status == 200
        assert record.error_type is None
        assert record.stream is stream
        assert record.model_asked == MODEL
        assert record.cli_model == MODEL
        assert (record.input_tokens, record.output_tokens) == (
            USAGE.input_tokens,
            USAGE.output_tokens,
        )
        assert (record.cache_read_tokens, record.cache_write_tokens) == (0, 0)
        assert record.key is None
        assert record.ttfc_s is not None and 0 <= record.ttfc_s <= record.duration_s
        # the scripted service is no supervisor: no worker facts
        assert record.backend is None and record.worker_id is None


async def test_the_clients_request_id_and_tool_calls(server: RunningServer) -> None:
    (records, _) = observe(server)
    server.service.default = Script(
        steps=[
            TurnStarted(MODEL),
            ToolCallStart(0, "call_1", "lookup"),
            ToolCallEnd(0, "{}"),
            ToolCallStart(1, "call_2", "lookup"),
            ToolCallEnd(1, "{}"),
            Finished(FinishReason.TOOL_USE, Usage(3, 4, 5, 6)),
        ]
    )
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        r = await client.post(
            PATHS["anthropic_messages"],
            json=body_for("anthropic_messages"),
            headers={"X-Request-Id": "my-own-id.1"},
        )
    assert r.status_code == 200
    (record,) = await records.exactly(1)
    assert record.request_id == "my-own-id.1"
    assert record.tool_calls == 2
    assert (
        record.input_tokens,
        record.output_tokens,
        record.cache_read_tokens,
        record.cache_write_tokens,
    ) == (3, 4, 5, 6)


@pytest.mark.parametrize("stream", [False, True])
async def test_errors_are_recorded_once_with_their_status(
    server: RunningServer, stream: bool
) -> None:
    first, second = observe(server)
    errors: list[E.BridgeError] = [
        E.QueueFull("all busy", retry_after=1),
        E.TurnTimeout("turn took longer than 600 s"),
        E.CliCrashed("the CLI exited with status 1"),
    ]
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        for error in errors:
            server.service.default = Script(enter_error=error)
            r = await client.post(PATHS["openai_chat"], json=body_for("openai_chat", stream=stream))
            assert r.status_code == error.status
        # invalid: a 400 recorded with what the body said
        r = await client.post(PATHS["openai_chat"], json={"model": MODEL, "stream": stream})
        assert r.status_code == 400
    records = await first.exactly(4)
    assert await second.exactly(4) == records
    assert [(r.status, r.error_type) for r in records] == [
        (429, "queue_full"),
        (504, "turn_timeout"),
        (502, "cli_crashed"),
        (400, "request_error"),
    ]
    assert all(r.stream is stream and r.model_asked == MODEL for r in records)
    assert all(r.input_tokens is None for r in records)


async def test_an_error_after_the_stream_started(server: RunningServer) -> None:
    (records, _) = observe(server)
    error = E.CliCrashed("the CLI exited with status 1")
    server.service.default = Script(steps=[TurnStarted(MODEL), TextDelta("partial"), error])
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        r = await client.post(
            PATHS["openai_responses"], json=body_for("openai_responses", stream=True)
        )
    assert r.status_code == 200
    (record,) = await records.exactly(1)
    assert (record.status, record.error_type, record.stream) == (200, "cli_crashed", True)
    assert record.ttfc_s is not None


@pytest.mark.parametrize("stream", [False, True])
async def test_client_disconnect_is_recorded_once(server: RunningServer, stream: bool) -> None:
    first, second = observe(server)
    server.service.default = Script(steps=[TurnStarted(MODEL), TextDelta("first"), Sleep(60)])
    tcp, _ = await open_raw_stream(
        server.base_url,
        PATHS["anthropic_messages"],
        body_for("anthropic_messages", stream=stream),
        read_head=stream,
    )
    with trio.fail_after(_WAIT):
        await server.service.wait_until(
            lambda: bool(server.service.records[-1:]) and server.service.last().sent == 2
        )
    await tcp.aclose()
    (record,) = await first.exactly(1)
    assert await second.exactly(1) == [record]
    assert record.error_type == "client_gone"
    # a stream had its 200 sent; a plain request left before any status
    assert record.status == (200 if stream else 499)
    assert server.service.last().exited


async def test_a_stalled_client_is_recorded_once() -> None:
    async with open_server(send_timeout=0.5) as server:
        (records, _) = observe(server)
        big = TextDelta("x" * 16384)
        server.service.default = Script(
            steps=itertools.chain([TurnStarted(MODEL)], itertools.repeat(big))
        )
        tcp, head = await open_raw_stream(
            server.base_url, PATHS["openai_chat"], body_for("openai_chat", stream=True)
        )
        assert head.startswith(b"HTTP/1.1 200")
        # read nothing: the turn is stopped after send_timeout and the connection cut
        (record,) = await records.exactly(1)
        await tcp.aclose()
    assert (record.status, record.error_type) == (200, "client_stalled")


async def test_unadmitted_and_probe_requests_are_not_recorded() -> None:
    async with open_server(auth_token="sekrit") as server:
        (records, _) = observe(server)
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            r = await client.post(PATHS["openai_chat"], json=body_for("openai_chat"))
            assert r.status_code == 401
            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/readyz")).status_code == 200
            r = await client.get("/v1/models", headers={"Authorization": "Bearer sekrit"})
            assert r.status_code == 200
        (record,) = await records.exactly(1)
    assert (record.endpoint, record.status, record.model_asked) == ("/v1/models", 200, None)


async def test_an_observer_that_raises_does_not_stop_the_others(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(record: RequestRecord) -> None:
        raise RuntimeError("observer bug")

    records = Records()
    server.app.request_observers.extend([broken, records])
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        assert (
            await client.post(PATHS["openai_chat"], json=body_for("openai_chat"))
        ).status_code == 200
    await records.exactly(1)
    assert "observer" in caplog.text and "failed" in caplog.text


def test_error_type_names() -> None:
    assert error_type_of(E.QueueFull("x")) == "queue_full"
    assert error_type_of(E.UpstreamRateLimited("x")) == "upstream_rate_limited"
    assert error_type_of(E.BridgeError("x")) == "bridge_error"


async def test_every_log_line_of_a_request_names_it(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Lines logged by the turn's producer task (not the handler) carry the request id too."""
    caplog.set_level(logging.INFO)
    (records, _) = observe(server)
    server.service.default = Script(steps=[TurnStarted(MODEL), E.InternalError("boom")])
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        r = await client.post(
            PATHS["openai_chat"],
            json=body_for("openai_chat", stream=True),
            headers={"X-Request-Id": "trace-me"},
        )
        assert r.status_code == 500
        assert (await client.get("/v1/models")).status_code == 200
    await records.exactly(2)
    failed = [rec for rec in caplog.records if rec.getMessage().startswith("turn failed")]
    assert failed and all(vars(rec)["request_id"] == "trace-me" for rec in failed)
    lines = [rec for rec in caplog.records if rec.name == "clibridge.requests"]
    assert vars(lines[0])["request_id"] == "trace-me"
    assert lines[0].getMessage().startswith("/v1/chat/completions 500 internal_error")
    # the next request's line names its own
    assert vars(lines[1])["request_id"] != "trace-me"
