"""Client tools through the pinned real claude, with the model stub as its upstream.

The stub model calls ``mcp__client__get_weather`` (queued replies, so a replayed history
cannot re-trigger a call); the tests check what reached the client and what the model
received upstream: the result as a native ``tool_result`` block on the parked path, the
whole history rendered faithfully on the fallback path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import openai
import pytest
import trio

from clibridge.testing.model_stub import ModelStub, Reply, StubToolCall
from tests.e2e.conftest import FAST_POOL, MODEL, open_real_server
from tests.tools import _loops

pytestmark = [
    pytest.mark.realcli,
    pytest.mark.filterwarnings("ignore:Async generator:ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

CALL = StubToolCall("mcp__client__get_weather", {"city": "Tokyo"})
PARIS = StubToolCall("mcp__client__get_weather", {"city": "Paris"})


def content_blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message["content"]
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_real_claude_tool_loop_on_the_parked_worker(
    tmp_path: Path, claude_binary: Path, model_stub: ModelStub, stream: bool
) -> None:
    model_stub.push(Reply(tool_calls=(CALL, PARIS)), Reply(text="Tokyo and Paris are sunny."))
    with trio.fail_after(90):
        async with (
            open_real_server(tmp_path, claude_binary, model_stub) as server,
            openai.AsyncOpenAI(
                base_url=server.base_url + "/v1", api_key="x", max_retries=0
            ) as client,
        ):
            convo: list[Any] = [{"role": "user", "content": "weather in Tokyo and Paris?"}]
            calls, _, finish = await _loops.chat_round(client, convo, stream=stream, model=MODEL)
            assert finish == "tool_calls"
            assert [(n, a) for _, n, a in calls] == [
                ("get_weather", {"city": "Tokyo"}),
                ("get_weather", {"city": "Paris"}),
            ]
            _loops.chat_results(convo, calls)
            calls2, text, finish = await _loops.chat_round(
                client, convo, stream=stream, model=MODEL
            )
            assert (calls2, text, finish) == ([], "Tokyo and Paris are sunny.", "stop")
            stats = await server.stats()
            assert stats["resume_hits"] == 1
    upstream = model_stub.model_calls()
    assert len(upstream) == 2
    body = upstream[-1].body
    assert body["tools"][0]["name"] == "mcp__client__get_weather"
    # the model sees its own tool_use turn and the results as native blocks
    assistant, results = body["messages"][-2], body["messages"][-1]
    assert [b["type"] for b in content_blocks(assistant)] == ["tool_use", "tool_use"]
    got = [b for b in content_blocks(results) if b["type"] == "tool_result"]
    assert [json.dumps(b["content"]) for b in got] == [
        json.dumps([{"type": "text", "text": "sunny in Tokyo"}]),
        json.dumps([{"type": "text", "text": "sunny in Paris"}]),
    ]
    assert [b["tool_use_id"] for b in got] == [b["id"] for b in content_blocks(assistant)]
    # the first request was not resent: exactly one user text prompt went upstream
    assert body["messages"][0]["content"][-1]["text"] == "weather in Tokyo and Paris?"


async def test_real_claude_park_timeout_then_result_uses_the_fallback(
    tmp_path: Path, claude_binary: Path, model_stub: ModelStub
) -> None:
    pool = attrs.evolve(FAST_POOL, park_ttl=1.0)
    model_stub.push(Reply(tool_calls=(CALL,)), Reply(text="It is sunny in Tokyo."))
    with trio.fail_after(90):
        async with (
            open_real_server(tmp_path, claude_binary, model_stub, pool=pool) as server,
            openai.AsyncOpenAI(
                base_url=server.base_url + "/v1", api_key="x", max_retries=0
            ) as client,
        ):
            convo: list[Any] = [{"role": "user", "content": "weather in Tokyo?"}]
            calls, _, _ = await _loops.chat_round(client, convo, stream=True, model=MODEL)
            await server.wait_stats(lambda s: s["reclaimed"] == 1, within=15)
            _loops.chat_results(convo, calls)
            _, text, finish = await _loops.chat_round(client, convo, stream=True, model=MODEL)
            assert (text, finish) == ("It is sunny in Tokyo.", "stop")
            stats = await server.stats()
            assert stats["resume_hits"] == 0  # the entry expired with park_ttl: no lookup
    last = model_stub.model_calls()[-1].body
    # a fresh worker: one user message carrying the whole history, call and result included
    assert [m["role"] for m in last["messages"]] == ["user"]
    text = "".join(b.get("text", "") for b in content_blocks(last["messages"][0]))
    cid = calls[0][0]
    assert "weather in Tokyo?" in text
    assert f'<tool_call id="{cid}" name="get_weather">{{"city": "Tokyo"}}</tool_call>' in text
    assert f'<tool_result id="{cid}" name="get_weather">sunny in Tokyo</tool_result>' in text


async def test_real_claude_spare_idle_past_the_mcp_timeout_keeps_the_tools(
    tmp_path: Path, claude_binary: Path, model_stub: ModelStub
) -> None:
    """Regression: a spare that idled past the CLI's own 30 s MCP request timeout before
    its first request went upstream with no tools for its whole life (the worker held
    the CLI's tools/list back until bind), and a call of the lost tool was still reported
    to the client as a tool call."""
    model_stub.push(Reply(tool_calls=(CALL,)), Reply(text="It is sunny in Tokyo."))
    pool = attrs.evolve(FAST_POOL, workers=1, spares=1)
    with trio.fail_after(110):
        async with (
            open_real_server(tmp_path, claude_binary, model_stub, pool=pool) as server,
            openai.AsyncOpenAI(
                base_url=server.base_url + "/v1", api_key="x", max_retries=0
            ) as client,
        ):
            await server.wait_stats(lambda s: s["idle"] >= 1, within=20)
            await trio.sleep(33)  # past the CLI's MCP request timeout (30 s)
            convo: list[Any] = [{"role": "user", "content": "weather in Tokyo?"}]
            calls, _, finish = await _loops.chat_round(client, convo, stream=True, model=MODEL)
            assert finish == "tool_calls"
            assert [(n, a) for _, n, a in calls] == [("get_weather", {"city": "Tokyo"})]
            _loops.chat_results(convo, calls)
            _, text, finish = await _loops.chat_round(client, convo, stream=True, model=MODEL)
            assert (text, finish) == ("It is sunny in Tokyo.", "stop")
            stats = await server.stats()
            assert stats["resume_hits"] == 1 and stats["crashes"] == 0
    upstream = model_stub.model_calls()
    assert [[t["name"] for t in c.body["tools"]] for c in upstream] == [
        ["mcp__client__get_weather"]
    ] * 2
    results = [b for b in content_blocks(upstream[-1].body["messages"][-1])]
    assert [b.get("is_error", False) for b in results if b["type"] == "tool_result"] == [False]


async def test_real_claude_first_request_carries_no_cli_command_noise(
    tmp_path: Path, claude_binary: Path, model_stub: ModelStub
) -> None:
    """Regression: every fresh worker's first upstream message carried a /model command
    echo behind a <local-command-caveat> (the model was set with set_model at bind)."""
    model_stub.push(Reply(text="hi"))
    with trio.fail_after(60):
        async with (
            open_real_server(tmp_path, claude_binary, model_stub) as server,
            openai.AsyncOpenAI(
                base_url=server.base_url + "/v1", api_key="x", max_retries=0
            ) as client,
        ):
            done = await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "say hi"}]
            )
            assert done.choices[0].message.content == "hi"
    (call,) = model_stub.model_calls()
    sent = json.dumps(call.body["messages"])
    assert "say hi" in sent
    assert "<command-name>/model" not in sent and "local-command-caveat" not in sent
