"""Per-dialect SSE conformance against the whole server on the fake claude and on the fake
codex: the exact event order and the fields each event must carry, for a turn with thinking
and chunked text, and for a turn whose CLI dies after the stream started."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from clibridge._supervisor import FAKE_CODEX_COMMAND

from .conftest import CODEX_MODEL, MODEL, E2EServer, open_e2e_server

THINKING_TURN = (
    '@fake {"reply": "abcdefgh", "chunk_chars": 3, "thinking": "mull it over",'
    ' "input_tokens": 12, "output_tokens": 5}\nhello'
)
CRASH_TURN = '@fake {"reply": "abcdefgh", "chunk_chars": 3, "crash_mid_turn": true}\nhello'


def parse_sse(raw: str) -> list[tuple[str | None, str]]:
    """(event name, data) per frame; keepalive comments dropped."""
    frames = []
    for block in raw.split("\n\n"):
        event, data = None, []
        for line in block.splitlines():
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: "):
                data.append(line[len("data: ") :])
        if event is not None or data:
            frames.append((event, "\n".join(data)))
    return frames


def body(dialect: str, text: str, model: str = MODEL) -> tuple[str, dict[str, Any]]:
    messages = [{"role": "user", "content": text}]
    if dialect == "chat":
        return "/v1/chat/completions", {
            "model": model,
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": messages,
        }
    if dialect == "responses":
        return "/v1/responses", {"model": model, "stream": True, "input": text}
    return "/v1/messages", {"model": model, "stream": True, "max_tokens": 50, "messages": messages}


async def stream(server: E2EServer, dialect: str, text: str) -> list[tuple[str | None, str]]:
    path, payload = body(dialect, text, server.model)
    async with server.client() as client:
        response = await client.post(path, json=payload)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-accel-buffering"] == "no"
    assert response.headers["x-request-id"]
    return parse_sse(response.text)


@pytest.fixture(params=["claude", "codex"])
async def server(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[E2EServer]:
    """The server on the fake claude, or with the fake codex next to it (then the requests
    name a codex model and the checks look at the codex pool)."""
    if request.param == "claude":
        async with open_e2e_server(tmp_path) as running:
            yield running
    else:
        async with open_e2e_server(tmp_path, codex=FAKE_CODEX_COMMAND) as running:
            running.backend, running.model = "codex", CODEX_MODEL
            yield running


async def test_chat_completions_sequence(server: E2EServer) -> None:
    frames = await stream(server, "chat", THINKING_TURN)
    assert all(event is None for event, _ in frames)
    assert frames[-1][1] == "[DONE]"
    chunks = [json.loads(data) for _, data in frames[:-1]]
    ids = {c["id"] for c in chunks}
    assert len(ids) == 1 and ids.pop().startswith("chatcmpl-")
    for c in chunks:
        assert c["object"] == "chat.completion.chunk"
        assert c["model"] == server.model
        assert isinstance(c["created"], int)
    *choice_chunks, usage_chunk = chunks
    deltas = [c["choices"][0]["delta"] for c in choice_chunks]
    finishes = [c["choices"][0]["finish_reason"] for c in choice_chunks]
    assert deltas[0]["role"] == "assistant"  # role first
    assert finishes == [None] * (len(choice_chunks) - 1) + ["stop"]
    assert deltas[-1] == {}
    reasoning = "".join(d.get("reasoning_content") or "" for d in deltas)
    content = "".join(d.get("content") or "" for d in deltas)
    assert (reasoning, content) == ("mull it over", "abcdefgh")
    # the reasoning comes before the content
    first_content = next(i for i, d in enumerate(deltas) if d.get("content"))
    assert all(not d.get("reasoning_content") for d in deltas[first_content:])
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["prompt_tokens"] == 12
    assert usage_chunk["usage"]["completion_tokens"] == 5
    assert usage_chunk["usage"]["total_tokens"] == 17
    await server.assert_clean()


async def test_chat_completions_without_include_usage(server: E2EServer) -> None:
    path, payload = body("chat", "hi", server.model)
    del payload["stream_options"]
    async with server.client() as client:
        response = await client.post(path, json=payload)
    frames = parse_sse(response.text)
    assert frames[-1][1] == "[DONE]"
    chunks = [json.loads(data) for _, data in frames[:-1]]
    assert all(c["choices"] for c in chunks)  # no usage-only chunk
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_responses_sequence(server: E2EServer) -> None:
    frames = await stream(server, "responses", THINKING_TURN)
    events = [json.loads(data) for _, data in frames]
    assert [name for name, _ in frames] == [e["type"] for e in events]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    types = [e["type"] for e in events]
    text_deltas = types.count("response.output_text.delta")
    thinking_deltas = types.count("response.reasoning_summary_text.delta")
    assert text_deltas == 3 and thinking_deltas >= 1
    assert types == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",  # reasoning
        "response.reasoning_summary_part.added",
        *["response.reasoning_summary_text.delta"] * thinking_deltas,
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
        "response.output_item.done",
        "response.output_item.added",  # message
        "response.content_part.added",
        *["response.output_text.delta"] * text_deltas,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    created, completed = events[0]["response"], events[-1]["response"]
    assert created["status"] == "in_progress" and created["id"] == completed["id"]
    assert completed["status"] == "completed"
    assert completed["usage"]["input_tokens"] == 12
    assert completed["usage"]["output_tokens"] == 5
    assert completed["usage"]["total_tokens"] == 17
    message = completed["output"][1]
    assert message["type"] == "message" and message["role"] == "assistant"
    assert message["content"][0]["text"] == "abcdefgh"
    assert completed["output"][0]["type"] == "reasoning"
    assert completed["output"][0]["summary"][0]["text"] == "mull it over"
    deltas = [e for e in events if e["type"] == "response.output_text.delta"]
    assert "".join(d["delta"] for d in deltas) == "abcdefgh"
    assert {d["item_id"] for d in deltas} == {message["id"]}
    assert {(d["output_index"], d["content_index"]) for d in deltas} == {(1, 0)}
    await server.assert_clean()


async def test_anthropic_messages_sequence(server: E2EServer) -> None:
    frames = await stream(server, "anthropic", THINKING_TURN)
    events = [json.loads(data) for _, data in frames]
    assert [name for name, _ in frames] == [e["type"] for e in events]
    types = [e["type"] for e in events]
    assert types[0] == "message_start"
    assert types[-2:] == ["message_delta", "message_stop"]
    blocks = [e for e in events if e["type"].startswith("content_block")]
    # thinking block 0, then text block 1, each start - deltas - stop
    indices = [e["index"] for e in blocks]
    assert indices == sorted(indices) and set(indices) == {0, 1}
    for index, kind in ((0, "thinking"), (1, "text")):
        mine = [e for e in blocks if e["index"] == index]
        assert mine[0]["type"] == "content_block_start"
        assert mine[0]["content_block"]["type"] == kind
        assert mine[-1]["type"] == "content_block_stop"
        assert all(e["type"] == "content_block_delta" for e in mine[1:-1])
    thinking = "".join(
        e["delta"].get("thinking", "") for e in blocks if e["type"] == "content_block_delta"
    )
    text = "".join(e["delta"].get("text", "") for e in blocks if e["type"] == "content_block_delta")
    assert (thinking, text) == ("mull it over", "abcdefgh")
    start = events[0]["message"]
    assert start["role"] == "assistant" and start["model"] == server.model
    assert start["id"].startswith("msg_") and start["content"] == []
    delta = events[-2]
    assert delta["delta"]["stop_reason"] == "end_turn"
    assert delta["usage"]["output_tokens"] == 5
    assert delta["usage"]["input_tokens"] == 12
    await server.assert_clean()


@pytest.mark.parametrize("dialect", ["chat", "responses", "anthropic"])
async def test_failure_after_stream_started(server: E2EServer, dialect: str) -> None:
    """The CLI dies after the first delta: the stream carries the dialect's error ending."""
    frames = await stream(server, dialect, CRASH_TURN)
    if dialect == "anthropic":
        name, data = frames[-1]
        assert name == "error"
        error = json.loads(data)
        assert error["type"] == "error" and error["error"]["type"] == "api_error"
        assert "exited" in error["error"]["message"]
        assert "message_stop" not in [n for n, _ in frames]
    elif dialect == "responses":
        last = json.loads(frames[-1][1])
        assert last["type"] in ("response.failed", "error")
        if last["type"] == "response.failed":
            assert last["response"]["status"] == "failed"
            assert last["response"]["error"]["message"]
    else:
        payloads = [data for _, data in frames]
        errors = [json.loads(d) for d in payloads if d != "[DONE]" and "error" in json.loads(d)]
        assert errors, payloads
        assert errors[-1]["error"]["message"]
    await server.assert_clean()
    await server.assert_serves()


async def test_keepalive_comments_while_the_cli_is_silent(tmp_path: Path) -> None:
    server_config = {"keepalive_interval": 0.2}
    async with open_e2e_server(tmp_path, server=server_config) as server:
        path, payload = body("anthropic", '@fake {"first_delay": 1.0}\nhi')
        async with server.client() as client:
            response = await client.post(path, json=payload)
        raw = response.text
        assert raw.count(": keepalive") >= 2
        # the keepalives come before the first content and the stream still ends properly
        assert raw.index(": keepalive") < raw.index("content_block_delta")
        assert parse_sse(raw)[-1][0] == "message_stop"
        await server.assert_clean()


FINISH = {
    # CLI stop_reason: (chat finish_reason, responses status, anthropic stop_reason)
    "end_turn": ("stop", "completed", "end_turn"),
    "max_tokens": ("length", "incomplete", "max_tokens"),
    "stop_sequence": ("stop", "completed", "stop_sequence"),
}


async def test_finish_reasons_in_every_dialect(server: E2EServer) -> None:
    """Streaming and not, each dialect names the CLI's stop reason its own way."""
    # the codex app-server reports no stop reason but completion: only end_turn applies
    reasons = FINISH if server.backend == "claude" else {"end_turn": FINISH["end_turn"]}
    async with server.client() as client:
        for stop, (chat_reason, status, anthropic_reason) in reasons.items():
            text = "@fake " + json.dumps({"stop_reason": stop, "reply": "done"}) + "\nhi"
            for dialect in ("chat", "responses", "anthropic"):
                path, payload = body(dialect, text, server.model)
                payload["stream"] = False
                got = (await client.post(path, json=payload)).json()
                frames = await stream(server, dialect, text)
                events = [json.loads(d) for _, d in frames if d != "[DONE]"]
                if dialect == "chat":
                    assert got["choices"][0]["finish_reason"] == chat_reason
                    finishes = [
                        c["choices"][0]["finish_reason"] for c in events if c.get("choices")
                    ]
                    assert finishes[-1] == chat_reason
                elif dialect == "responses":
                    assert got["status"] == status
                    assert events[-1]["response"]["status"] == status
                    assert events[-1]["type"] == f"response.{status}"
                else:
                    assert got["stop_reason"] == anthropic_reason
                    (delta,) = [e for e in events if e["type"] == "message_delta"]
                    assert delta["delta"]["stop_reason"] == anthropic_reason
    await server.assert_clean()
