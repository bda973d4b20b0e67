"""Streaming: event order per dialect, keepalives, disconnects, stalled clients, timeouts, drain."""

from __future__ import annotations

import itertools
import json
from contextlib import aclosing

import httpx
import pytest
import trio

from clibridge._events import (
    Finished,
    FinishReason,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    TurnStarted,
)
from clibridge._http._turns import Item, sse_body
from clibridge._wire import openai_chat
from tests._aio import agen
from tests._raw_http import open_raw_stream

from .conftest import MODEL, USAGE, RunningServer, Script, Sleep, open_server
from .helpers import DIALECTS, PATHS, body_for, parse_sse, streamed_text


async def test_each_dialect_streams_and_not(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        for dialect in DIALECTS:
            r = await client.post(PATHS[dialect], json=body_for(dialect, stream=True))
            assert r.status_code == 200
            assert r.headers["Content-Type"].startswith("text/event-stream")
            assert r.headers["Cache-Control"] == "no-cache"
            assert r.headers["X-Accel-Buffering"] == "no"
            frames = parse_sse(r.content)
            assert streamed_text(dialect, frames) == "Hello, world"
            if dialect == "openai_chat":
                assert frames[-1] == (None, "[DONE]")
                usage = json.loads(frames[-2][1])["usage"]
                assert usage["prompt_tokens"] == USAGE.input_tokens
            elif dialect == "openai_responses":
                assert frames[0][0] == "response.created"
                assert frames[-1][0] == "response.completed"
                seq = [json.loads(d)["sequence_number"] for _e, d in frames]
                assert seq == sorted(seq)
            else:
                assert frames[0][0] == "message_start"
                assert [e for e, _ in frames][-2:] == ["message_delta", "message_stop"]
            r = await client.post(PATHS[dialect], json=body_for(dialect))
            assert r.status_code == 200
            assert r.headers["Content-Type"] == "application/json"
            assert "Hello, world" in r.text
    assert all(rec.exited and rec.exit_exc is None for rec in server.service.records)


async def test_tool_calls_and_thinking_pass_through(server: RunningServer) -> None:
    server.service.default = Script(
        steps=[
            TurnStarted(MODEL),
            ThinkingDelta("hmm"),
            ToolCallStart(0, "call_1", "get_weather"),
            ToolCallDelta(0, '{"city": "Pa'),
            ToolCallDelta(0, 'ris"}'),
            ToolCallEnd(0, '{"city": "Paris"}'),
            Finished(FinishReason.TOOL_USE, USAGE),
        ]
    )
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        r = await client.post(PATHS["openai_chat"], json=body_for("openai_chat"))
        call = r.json()["choices"][0]["message"]["tool_calls"][0]
        assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
        assert r.json()["choices"][0]["finish_reason"] == "tool_calls"
        r = await client.post(
            PATHS["anthropic_messages"], json=body_for("anthropic_messages", stream=True)
        )
        assert '"stop_reason":"tool_use"' in r.text and "thinking_delta" in r.text


async def test_keepalive_comments_while_the_service_is_silent() -> None:
    async with (
        open_server(keepalive_interval=0.1) as server,
        httpx.AsyncClient(base_url=server.base_url) as client,
    ):
        server.service.default = Script(
            steps=[
                TurnStarted(MODEL),
                TextDelta("a"),
                Sleep(0.55),
                TextDelta("b"),
                Finished(FinishReason.END_TURN, USAGE),
            ]
        )
        with trio.fail_after(10):
            r = await client.post(
                PATHS["anthropic_messages"], json=body_for("anthropic_messages", stream=True)
            )
        frames = parse_sse(r.content)
        kinds = [e for e, _ in frames]
        first_delta = kinds.index("content_block_delta")
        keepalives = [i for i, k in enumerate(kinds) if k == "comment"]
        assert len(keepalives) >= 3
        assert all(first_delta < i < len(kinds) - 3 for i in keepalives)
        assert streamed_text("anthropic_messages", frames) == "ab"


async def test_headers_wait_for_content_only_up_to_the_keepalive_interval() -> None:
    async with (
        open_server(keepalive_interval=0.1) as server,
        httpx.AsyncClient(base_url=server.base_url) as client,
    ):
        server.service.default = Script(
            steps=[
                TurnStarted(MODEL),
                Sleep(0.5),
                TextDelta("x"),
                Finished(FinishReason.END_TURN, USAGE),
            ]
        )
        with trio.fail_after(10):
            async with client.stream(
                "POST", PATHS["openai_chat"], json=body_for("openai_chat", stream=True)
            ) as r:
                start = trio.current_time()
                assert r.status_code == 200
                raw = b"".join([c async for c in r.aiter_raw()])
                # headers came before the 0.5 s of silence was over
                assert trio.current_time() - start > 0.3
        assert b": keepalive" in raw and raw.endswith(b"data: [DONE]\n\n")


async def test_client_disconnect_mid_stream_exits_the_service_context(
    server: RunningServer,
) -> None:
    server.service.default = Script(
        steps=[TurnStarted(MODEL), TextDelta("first"), Sleep(60), TextDelta("never")]
    )
    for dialect in DIALECTS:
        stream, seen = await open_raw_stream(
            server.base_url, PATHS[dialect], body_for(dialect, stream=True)
        )
        with trio.fail_after(5):
            while b"first" not in seen:
                seen += await stream.receive_some(65536)
        await stream.aclose()
        closed_at = trio.current_time()
        record = server.service.last()
        with trio.fail_after(5):
            await server.service.wait_until(lambda r=record: r.exited)  # type: ignore[misc]
        assert record.exited_at is not None and record.exited_at - closed_at < 1.0
        assert isinstance(record.exit_exc, trio.Cancelled)
        assert record.sent == 2


async def test_client_disconnect_while_queued_exits_too(server: RunningServer) -> None:
    server.service.default = Script(enter_delay=60)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=0.3) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post(PATHS["openai_chat"], json=body_for("openai_chat", stream=True))
    record = server.service.last()
    with trio.fail_after(5):
        await server.service.wait_until(lambda: record.exited)
    assert not record.entered and isinstance(record.exit_exc, trio.Cancelled)


async def test_a_client_that_stops_reading_is_cut_after_send_timeout() -> None:
    async with open_server(send_timeout=0.5) as server:
        big = TextDelta("x" * 16384)
        server.service.default = Script(
            steps=itertools.chain([TurnStarted(MODEL)], itertools.repeat(big))
        )
        stream, head = await open_raw_stream(
            server.base_url, PATHS["openai_chat"], body_for("openai_chat", stream=True)
        )
        assert head.startswith(b"HTTP/1.1 200")
        # ... and now read nothing: the server's buffers fill and its send blocks
        with trio.fail_after(20):
            await server.service.wait_until(
                lambda: bool(server.service.records) and server.service.last().exited
            )
        record = server.service.last()
        assert record.exit_exc is None  # left the context because the client stalled
        assert record.sent > 10
        # the connection was closed under the stalled client: reading drains it to the end
        with trio.fail_after(20):
            try:
                while await stream.receive_some(1 << 20):
                    pass
            except trio.BrokenResourceError:
                pass  # a reset is fine too
        await stream.aclose()


async def test_no_response_timeout_cuts_a_long_stream() -> None:
    """Quart's RESPONSE_TIMEOUT (60 s by default) must not end a stream: response.timeout=None."""
    async with open_server() as server, httpx.AsyncClient(base_url=server.base_url) as client:
        server.app.config["RESPONSE_TIMEOUT"] = 0.3
        server.service.default = Script(
            steps=[
                TurnStarted(MODEL),
                TextDelta("a"),
                Sleep(0.8),
                TextDelta("b"),
                Finished(FinishReason.END_TURN, USAGE),
            ]
        )
        with trio.fail_after(10):
            r = await client.post(PATHS["openai_chat"], json=body_for("openai_chat", stream=True))
        assert streamed_text("openai_chat", parse_sse(r.content)) == "ab"
        assert r.content.endswith(b"data: [DONE]\n\n")


class _ReadyRun:
    """Stands in for a TurnRun whose events are all already waiting in the channel."""

    def __init__(self, items: list[Item | None]) -> None:
        self.items = items
        self.abandoned = False

    async def receive(self) -> Item | None:
        await trio.lowlevel.checkpoint()
        return self.items.pop(0) if self.items else None

    def receive_ready(self) -> list[Item | None]:
        ready, self.items = self.items, []
        return ready

    def abandon(self) -> None:
        self.abandoned = True


async def test_events_that_are_ready_go_out_in_one_write() -> None:
    deltas: list[Item | None] = [TextDelta(str(i)) for i in range(50)]
    run = _ReadyRun([*deltas, Finished(FinishReason.END_TURN, USAGE)])
    request = openai_chat.decode_request(body_for("openai_chat", stream=True))
    encoder = openai_chat.StreamEncoder(request, response_id="chatcmpl-1", created=0)
    body = sse_body(run, encoder, [TurnStarted(MODEL)], keepalive_interval=10, keepalive=b": k\n\n")  # type: ignore[arg-type]
    async with aclosing(agen(body)) as writes:
        chunks = [c async for c in writes]
    assert len(chunks) == 2  # the role chunk, then all 50 deltas and the end at once
    assert streamed_text("openai_chat", parse_sse(b"".join(chunks))) == "".join(
        str(i) for i in range(50)
    )
    assert run.abandoned


async def test_many_deltas_arrive_in_order(server: RunningServer) -> None:
    server.service.default = Script(
        steps=[
            TurnStarted(MODEL),
            *[TextDelta(str(i)) for i in range(200)],
            Finished(FinishReason.END_TURN, USAGE),
        ]
    )
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        r = await client.post(PATHS["openai_chat"], json=body_for("openai_chat", stream=True))
    assert streamed_text("openai_chat", parse_sse(r.content)) == "".join(str(i) for i in range(200))


async def test_drain_ends_open_streams_with_a_final_event() -> None:
    async with (
        open_server(drain_timeout=1.0) as server,
        httpx.AsyncClient(base_url=server.base_url) as client,
    ):
        server.service.default = Script(steps=[TurnStarted(MODEL), TextDelta("first"), Sleep(60)])
        async with trio.open_nursery() as nursery:
            results: dict[str, bytes] = {}

            async def stream(dialect: str) -> None:
                r = await client.post(PATHS[dialect], json=body_for(dialect, stream=True))  # type: ignore[index,arg-type]
                results[dialect] = r.content

            for dialect in DIALECTS:
                nursery.start_soon(stream, dialect)
            with trio.fail_after(5):
                await server.service.wait_until(
                    lambda: len([r for r in server.service.records if r.sent]) == 3
                )
            started = trio.current_time()
            server.app.draining.set()
            r = await client.post(PATHS["openai_chat"], json=body_for("openai_chat"))
            assert r.status_code == 503 and r.headers["Retry-After"] == "1"
            assert (await client.get("/readyz")).status_code == 503
        assert trio.current_time() - started < 1.5
    assert parse_sse(results["anthropic_messages"])[-1][0] == "error"
    assert parse_sse(results["openai_responses"])[-1][0] == "response.failed"
    assert b"shutting down" in results["openai_chat"]
    assert all(rec.exited for rec in server.service.records)


async def test_client_disconnect_during_a_non_streaming_turn(server: RunningServer) -> None:
    server.service.default = Script(steps=[TurnStarted(MODEL), TextDelta("first"), Sleep(60)])
    stream, _ = await open_raw_stream(
        server.base_url, PATHS["openai_chat"], body_for("openai_chat"), read_head=False
    )
    with trio.fail_after(5):
        await server.service.wait_until(
            lambda: bool(server.service.records) and server.service.last().sent == 2
        )
    record = server.service.last()
    await stream.aclose()
    with trio.fail_after(2):
        await server.service.wait_until(lambda: record.exited)
    assert isinstance(record.exit_exc, trio.Cancelled)


async def test_many_concurrent_streams(server: RunningServer) -> None:
    server.service.default = Script(
        steps=[
            TurnStarted(MODEL),
            TextDelta("a"),
            Sleep(0.05),
            TextDelta("b"),
            Finished(FinishReason.END_TURN, USAGE),
        ]
    )
    texts: list[str] = []
    limits = httpx.Limits(max_connections=40)
    async with httpx.AsyncClient(base_url=server.base_url, limits=limits, timeout=20) as client:

        async def one(i: int) -> None:
            dialect = DIALECTS[i % 3]
            r = await client.post(PATHS[dialect], json=body_for(dialect, stream=True))
            texts.append(streamed_text(dialect, parse_sse(r.content)))

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for i in range(30):
                    nursery.start_soon(one, i)
    assert texts == ["ab"] * 30
    assert all(rec.exited for rec in server.service.records)
