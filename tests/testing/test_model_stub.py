"""The loopback model stub: each reply kind on both APIs, errors, recording, concurrency,
and the official SDKs against it (proof that the wire shapes are right)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
import trio

from clibridge.testing.model_stub import (
    DEFAULT_TEXT,
    ModelStub,
    Reply,
    StubToolCall,
    choose_reply,
    directive,
    serve_model_stub,
)
from tests._aio import agen

MESSAGES = "/v1/messages"
RESPONSES = "/v1/responses"


def anthropic_body(text: str, *, stream: bool = True, **extra: Any) -> dict[str, Any]:
    return {
        "model": "claude-test",
        "max_tokens": 100,
        "stream": stream,
        "system": [{"type": "text", "text": "be brief"}],
        "messages": [{"role": "user", "content": text}],
        **extra,
    }


def responses_body(text: str, *, stream: bool = True, **extra: Any) -> dict[str, Any]:
    return {
        "model": "gpt-test",
        "stream": stream,
        "instructions": "be brief",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": text}]}],
        **extra,
    }


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """(event name, data) pairs of an SSE response."""
    name = ""
    async with aclosing(agen(response.aiter_lines())) as lines:
        async for line in lines:
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                yield name, json.loads(line[len("data: ") :])


async def post_sse(
    client: httpx.AsyncClient, path: str, body: dict[str, Any]
) -> list[tuple[str, dict[str, Any]]]:
    async with client.stream("POST", path, json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        return [event async for event in sse_events(response)]


@pytest.fixture
async def client(model_stub: ModelStub) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=model_stub.base_url, timeout=10) as http:
        yield http


# --------------------------------------------------------------------- reply selection (pure)


def test_choose_reply_order_queue_then_directive_then_default() -> None:
    queued = deque([Reply(text="queued")])
    body = anthropic_body("hi\n" + directive(text="directed"))
    assert choose_reply(body, queued, Reply())[1] == "queued"
    assert not queued
    assert choose_reply(body, queued, Reply())[1] == "directed"
    assert choose_reply(anthropic_body("hi"), queued, Reply())[1] == DEFAULT_TEXT
    assert choose_reply(anthropic_body("hi"), queued, Reply(text="dflt"))[1] == "dflt"


def test_directives_merge_in_order_and_presets_apply() -> None:
    text = "\n".join(["q", directive(text="a", chunk_chars=2), "@stub:slow", directive(text="b")])
    reply, resolved = choose_reply(anthropic_body(text), deque(), Reply())
    assert resolved == "b"
    assert (reply.chunk_chars, reply.chunk_delay) == (4, 0.05)


def test_directive_is_read_from_the_last_user_message_only() -> None:
    """After a tool call the last user message is the tool result: a tool-calling directive
    in the first prompt must not fire again (it would loop forever)."""
    body = anthropic_body(directive(tool_calls=[{"name": "f"}]))
    body["messages"] += [
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}],
        },
    ]
    reply, text = choose_reply(body, deque(), Reply())
    assert reply.tool_calls == ()
    assert text == DEFAULT_TEXT


def test_tool_calls_only_means_no_text() -> None:
    reply, text = choose_reply(
        anthropic_body(directive(tool_calls=[{"name": "f", "input": {"a": 1}}])), deque(), Reply()
    )
    assert reply.tool_calls == (StubToolCall("f", {"a": 1}),)
    assert text is None


# --------------------------------------------------------------------- Anthropic Messages


async def test_anthropic_stream_text_in_chunks_and_recorded(
    model_stub: ModelStub, client: httpx.AsyncClient
) -> None:
    body = anthropic_body("hello\n" + directive(text="abcdefg", chunk_chars=3))
    events = await post_sse(client, MESSAGES + "?beta=true", body)
    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(data["type"] == name for name, data in events)
    deltas = [d["delta"]["text"] for n, d in events if n == "content_block_delta"]
    assert deltas == ["abc", "def", "g"]
    assert events[0][1]["message"]["model"] == "claude-test"
    assert events[-2][1]["delta"]["stop_reason"] == "end_turn"
    assert events[-2][1]["usage"]["output_tokens"] >= 1

    (record,) = model_stub.calls_to(MESSAGES)
    assert record.query == {"beta": "true"}
    assert record.body == body
    assert record.headers["content-type"] == "application/json"
    assert record.last_user_text.startswith("hello\n@stub")
    assert record.system_text == "be brief"
    assert record.reply is not None
    assert record.reply.text == "abcdefg"


async def test_anthropic_thinking_and_tool_use_stream(client: httpx.AsyncClient) -> None:
    script = directive(
        thinking="hmm",
        tool_calls=[{"name": "get_weather", "input": {"city": "Oslo"}, "id": "toolu_x"}],
        chunk_chars=5,
    )
    events = await post_sse(client, MESSAGES, anthropic_body(script))
    starts = [d["content_block"] for n, d in events if n == "content_block_start"]
    assert [b["type"] for b in starts] == ["thinking", "tool_use"]
    assert starts[1] == {"type": "tool_use", "id": "toolu_x", "name": "get_weather", "input": {}}
    deltas = [d["delta"] for n, d in events if n == "content_block_delta"]
    assert deltas[0] == {"type": "thinking_delta", "thinking": "hmm"}
    assert deltas[1]["type"] == "signature_delta"
    partial = "".join(d["partial_json"] for d in deltas if d["type"] == "input_json_delta")
    assert json.loads(partial) == {"city": "Oslo"}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


async def test_anthropic_non_stream_message(client: httpx.AsyncClient) -> None:
    script = directive(text="hi", tool_calls=[{"name": "f", "input": {"x": [1]}}], input_tokens=7)
    response = await client.post(MESSAGES, json=anthropic_body(script, stream=False))
    assert response.status_code == 200
    message = response.json()
    assert [b["type"] for b in message["content"]] == ["text", "tool_use"]
    assert message["content"][0]["text"] == "hi"
    assert message["content"][1]["input"] == {"x": [1]}
    assert message["stop_reason"] == "tool_use"
    assert message["usage"]["input_tokens"] == 7


async def test_count_tokens(model_stub: ModelStub, client: httpx.AsyncClient) -> None:
    response = await client.post(MESSAGES + "/count_tokens", json=anthropic_body("x" * 400))
    assert response.status_code == 200
    assert response.json()["input_tokens"] >= 100
    assert model_stub.model_calls() == []


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (401, "authentication_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (529, "overloaded_error"),
    ],
)
async def test_anthropic_error_replies(
    model_stub: ModelStub, client: httpx.AsyncClient, status: int, kind: str
) -> None:
    model_stub.push(Reply(error=status, retry_after=2.5, should_retry=False))
    response = await client.post(MESSAGES, json=anthropic_body("hi"))
    assert response.status_code == status
    assert response.json() == {
        "type": "error",
        "error": {"type": kind, "message": f"model stub: scripted HTTP {status}"},
    }
    assert response.headers["retry-after"] == "2.5"
    assert response.headers["x-should-retry"] == "false"


async def test_anthropic_error_in_stream(client: httpx.AsyncClient) -> None:
    script = directive(text="abcdef", chunk_chars=2, stream_error_after=1)
    events = await post_sse(client, MESSAGES, anthropic_body(script))
    names = [n for n, _ in events]
    assert names[-1] == "error"
    assert names.count("content_block_delta") == 1
    assert events[-1][1]["error"]["type"] == "overloaded_error"


async def test_echo_digest(client: httpx.AsyncClient) -> None:
    body = anthropic_body("what did you see?\n@stub:echo", stream=False)
    body["tools"] = [{"name": "f", "input_schema": {"type": "object"}}]
    message = (await client.post(MESSAGES, json=body)).json()
    seen = json.loads(message["content"][0]["text"])
    assert seen == {
        "model": "claude-test",
        "system_chars": len("be brief"),
        "system_tail": "be brief",
        "messages": 1,
        "last_user": "what did you see?",
        "tools": ["f"],
    }


async def test_bad_directive_and_unknown_path_are_client_errors(
    model_stub: ModelStub, client: httpx.AsyncClient
) -> None:
    response = await client.post(MESSAGES, json=anthropic_body('@stub {"txet": "typo"}'))
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    response = await client.get("/v1/models")
    assert response.status_code == 404
    assert [r.path for r in model_stub.requests] == [MESSAGES, "/v1/models"]


# --------------------------------------------------------------------- OpenAI Responses


async def test_responses_stream_text(model_stub: ModelStub, client: httpx.AsyncClient) -> None:
    events = await post_sse(
        client, RESPONSES, responses_body(directive(text="hello", chunk_chars=2))
    )
    names = [n for n, _ in events]
    assert names == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [d["sequence_number"] for _, d in events] == list(range(len(events)))
    done = events[-1][1]["response"]
    assert done["status"] == "completed"
    assert done["output"][0]["content"][0]["text"] == "hello"
    assert (
        done["usage"]["total_tokens"]
        == done["usage"]["input_tokens"] + done["usage"]["output_tokens"]
    )
    (record,) = model_stub.calls_to(RESPONSES)
    assert record.system_text == "be brief"


async def test_responses_reasoning_and_function_call_stream(client: httpx.AsyncClient) -> None:
    script = directive(
        text="", thinking="think", tool_calls=[{"name": "f", "input": {"a": "b"}, "id": "call_1"}]
    )
    events = await post_sse(client, RESPONSES, responses_body(script))
    added = [d["item"]["type"] for n, d in events if n == "response.output_item.added"]
    assert added == ["reasoning", "function_call"]
    assert "response.reasoning_summary_text.delta" in [n for n, _ in events]
    args = "".join(d["delta"] for n, d in events if n == "response.function_call_arguments.delta")
    assert json.loads(args) == {"a": "b"}
    call = events[-1][1]["response"]["output"][1]
    assert (call["type"], call["call_id"], call["name"]) == ("function_call", "call_1", "f")


async def test_responses_error_reply_and_failed_stream(
    model_stub: ModelStub, client: httpx.AsyncClient
) -> None:
    model_stub.push(Reply(error=429, retry_after=1))
    response = await client.post(RESPONSES, json=responses_body("hi"))
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"]["type"] == "rate_limit_exceeded"
    events = await post_sse(client, RESPONSES, responses_body(directive(stream_error_after=0)))
    assert events[-1][0] == "response.failed"


# --------------------------------------------------------------------- timing and concurrency


async def test_concurrency_is_counted(model_stub: ModelStub, client: httpx.AsyncClient) -> None:
    model_stub.default = Reply(hang_after=0)
    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(post_sse, client, MESSAGES, anthropic_body("hi"))
        with trio.fail_after(5):
            await model_stub.wait_for_in_flight(3)
        nursery.cancel_scope.cancel()
    with trio.fail_after(5):
        await model_stub.wait_for_idle()
    stats = model_stub.statistics()
    assert (stats.requests, stats.in_flight, stats.max_in_flight) == (3, 0, 3)


async def test_slow_stream_paces_chunks(client: httpx.AsyncClient) -> None:
    script = directive(text="abcd", chunk_chars=1, first_delay=0.05, chunk_delay=0.05)
    started = trio.current_time()
    events = await post_sse(client, MESSAGES, anthropic_body(script))
    assert trio.current_time() - started >= 0.2  # 0.05 + 3 x 0.05
    assert len([n for n, _ in events if n == "content_block_delta"]) == 4


async def test_hanging_stream_ends_when_the_client_leaves(model_stub: ModelStub) -> None:
    # A raw socket, not httpx: leaving an httpx stream early leaks its inner async generators.
    payload = json.dumps(anthropic_body(directive(text="abcdef", chunk_chars=2, hang_after=1)))
    request = (
        f"POST {MESSAGES} HTTP/1.1\r\nhost: stub\r\ncontent-type: application/json\r\n"
        f"content-length: {len(payload)}\r\n\r\n{payload}"
    ).encode()
    assert model_stub.port is not None
    received = b""
    with trio.fail_after(5):
        async with await trio.open_tcp_stream("127.0.0.1", model_stub.port) as stream:
            await stream.send_all(request)
            while b'"text": "ab"' not in received:
                received += await stream.receive_some(65536)
            assert model_stub.statistics().in_flight == 1
        await model_stub.wait_for_idle()
    assert b'"text": "cd"' not in received


async def test_wait_for_requests(model_stub: ModelStub, client: httpx.AsyncClient) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(client.post, RESPONSES, json=responses_body("a", stream=False)))
        with trio.fail_after(5):
            (record,) = await model_stub.wait_for_requests(1, path=RESPONSES)
    assert record.last_user_text == "a"


# --------------------------------------------------------------------- official SDKs


async def test_anthropic_sdk_stream_and_create(model_stub: ModelStub) -> None:
    sdk = anthropic.AsyncAnthropic(base_url=model_stub.base_url, api_key="k", max_retries=0)
    async with sdk:
        model_stub.push(Reply(text="one two three", chunk_chars=4, thinking="mull"))
        async with sdk.messages.stream(
            model="claude-test", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            texts = [t async for t in stream.text_stream]
            final = await stream.get_final_message()
        assert "".join(texts) == "one two three"
        assert [b.type for b in final.content] == ["thinking", "text"]
        assert final.stop_reason == "end_turn"

        model_stub.push(Reply(tool_calls=(StubToolCall("lookup", {"q": "x"}),)))
        message = await sdk.messages.create(
            model="claude-test",
            max_tokens=50,
            messages=[{"role": "user", "content": "hi"}],
            tools=[{"name": "lookup", "input_schema": {"type": "object"}}],
        )
        assert message.content[0].type == "tool_use"
        assert message.content[0].input == {"q": "x"}

        count = await sdk.messages.count_tokens(
            model="claude-test", messages=[{"role": "user", "content": "hi"}]
        )
        assert count.input_tokens >= 1

        model_stub.push(Reply(error=529))
        with pytest.raises(anthropic.APIStatusError) as caught:
            await sdk.messages.create(
                model="claude-test", max_tokens=5, messages=[{"role": "user", "content": "x"}]
            )
        assert caught.value.status_code == 529
        assert caught.value.body == {
            "type": "error",
            "error": {"type": "overloaded_error", "message": "model stub: scripted HTTP 529"},
        }
    assert len(model_stub.model_calls()) == 3


async def test_openai_sdk_responses_stream_and_create(model_stub: ModelStub) -> None:
    sdk = openai.AsyncOpenAI(base_url=model_stub.base_url + "/v1", api_key="k", max_retries=0)
    async with sdk:
        model_stub.push(Reply(text="streamed text", chunk_chars=3, thinking="why"))
        stream = await sdk.responses.create(model="gpt-test", input="hi", stream=True)
        deltas = []
        final = None
        async for event in stream:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
            elif event.type == "response.completed":
                final = event.response
        assert "".join(deltas) == "streamed text"
        assert final is not None
        assert final.output_text == "streamed text"
        assert final.usage is not None
        assert final.usage.output_tokens >= 1

        model_stub.push(Reply(tool_calls=(StubToolCall("f", {"n": 1}, id="call_9"),)))
        response = await sdk.responses.create(model="gpt-test", input="hi")
        (call,) = response.output
        assert call.type == "function_call"
        assert (call.call_id, call.name, json.loads(call.arguments)) == ("call_9", "f", {"n": 1})

        model_stub.push(Reply(error=429, retry_after=3))
        with pytest.raises(openai.RateLimitError) as caught:
            await sdk.responses.create(model="gpt-test", input="hi")
        assert caught.value.response.headers["retry-after"] == "3"


# --------------------------------------------------------------------- standalone


@asynccontextmanager
async def standalone_stub(*args: str) -> AsyncIterator[str]:
    """``python -m clibridge.testing.model_stub ARGS``: its base URL (the line it prints);
    on the way out it must stop on SIGTERM with exit code 0."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "clibridge.testing.model_stub", *args],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )
    try:
        assert process.stdout is not None
        with trio.fail_after(20):
            line = b""
            while not line.endswith(b"\n"):
                line += await process.stdout.receive_some(1)
        yield line.decode().split()[-1]
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(10):
            assert await process.wait() == 0
    finally:
        process.kill()
        await process.wait()
        await process.stdout.aclose()  # type: ignore[union-attr]


async def test_standalone_module_serves_and_stops_on_sigterm() -> None:
    async with (
        standalone_stub("--default", '{"text": "bench"}') as base_url,
        httpx.AsyncClient(base_url=base_url) as http,
    ):
        response = await http.post(RESPONSES, json=responses_body("x", stream=False))
        assert response.json()["output"][0]["content"][0]["text"] == "bench"


async def test_record_file_gets_every_request_without_headers(tmp_path: Path) -> None:
    record = tmp_path / "requests.jsonl"
    async with (
        serve_model_stub(record=record) as stub,
        httpx.AsyncClient(base_url=stub.base_url, headers={"x-api-key": "sk-secret"}) as http,
    ):
        body = anthropic_body("hi", stream=False)
        await http.post(MESSAGES + "?beta=true", json=body)
        await http.post(RESPONSES, content=b"not json", headers={"authorization": "Bearer sk-x"})
        assert len(stub.requests) == 2
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    assert [(e["method"], e["path"], e["query"]) for e in lines] == [
        ("POST", MESSAGES, {"beta": "true"}),
        ("POST", RESPONSES, {}),
    ]
    assert lines[0]["body"] == body and "raw_body" not in lines[0]
    assert lines[1]["body"] is None and lines[1]["raw_body"] == "not json"
    assert all(abs(e["time"] - time.time()) < 60 for e in lines)
    assert "sk-secret" not in record.read_text() and "sk-x" not in record.read_text()
    assert all("headers" not in e for e in lines)


async def test_standalone_module_records_with_record_flag(tmp_path: Path) -> None:
    record = tmp_path / "rec" / "requests.jsonl"
    record.parent.mkdir()
    async with (
        standalone_stub("--record", str(record)) as base_url,
        httpx.AsyncClient(base_url=base_url) as http,
    ):
        for text in ("one", "two"):
            response = await http.post(
                RESPONSES,
                json=responses_body(text, stream=False),
                headers={"authorization": "Bearer sk-stub-secret"},
            )
            assert response.status_code == 200
    entries = [json.loads(line) for line in record.read_text().splitlines()]
    assert [e["path"] for e in entries] == [RESPONSES, RESPONSES]
    assert [e["body"]["input"][0]["content"][0]["text"] for e in entries] == ["one", "two"]
    assert entries[0]["time"] <= entries[1]["time"]
    assert "sk-stub-secret" not in record.read_text()
