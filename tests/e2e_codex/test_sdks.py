"""The official async OpenAI and Anthropic SDKs against the whole server on the codex backend:
once on the fake codex, once on the real codex 0.169.0 behind the Responses stub.

Every dialect (Chat Completions, Responses, Anthropic Messages), streaming and not; the
usage each shows is exactly what the CLI reported (fixed by a directive in the prompt), and
finish reasons are present. Reasoning effort -- ``reasoning_effort`` (chat),
``reasoning.effort`` (Responses) and a model suffix (``gpt-5.5-high``) -- reaches the
``turn/start`` the fake records, and the upstream request the real codex makes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
import trio

from clibridge.testing.model_stub import ModelStub
from clibridge.testing.realcli import CodexSetup

from .conftest import BOUND, CodexServer, open_codex_server

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    # Why: openai's AsyncStream leaves its SSE generators unclosed at ``[DONE]``.
    pytest.mark.filterwarnings("ignore:Async generator:ResourceWarning"),
]

TEXT = "Hi there, codex SDK user!"
INPUT_TOKENS = 17
OUTPUT_TOKENS = 9


def prompt(kind: str, **extra: Any) -> str:
    """``kind`` "fake" scripts the fake codex, "stub" the model stub behind the real one."""
    if kind == "fake":
        fields = {"reply": TEXT, "chunk_chars": 4, "input_tokens": INPUT_TOKENS}
        fields["output_tokens"] = OUTPUT_TOKENS
    else:
        fields = {"text": TEXT, "chunk_chars": 4, "input_tokens": INPUT_TOKENS}
        fields["output_tokens"] = OUTPUT_TOKENS
    fields.update(extra)
    return f"@{kind} {json.dumps(fields)}\nsay hi"


def check_usage(usage: Any, chat: bool = False) -> None:
    assert usage is not None
    if chat:
        assert (usage.prompt_tokens, usage.completion_tokens) == (INPUT_TOKENS, OUTPUT_TOKENS)
        assert usage.total_tokens == INPUT_TOKENS + OUTPUT_TOKENS
    else:
        assert (usage.input_tokens, usage.output_tokens) == (INPUT_TOKENS, OUTPUT_TOKENS)


async def run_dialects(server: CodexServer, model: str, text: str) -> int:
    """Each dialect streaming and not; returns how many requests it made."""
    messages: Any = [{"role": "user", "content": text}]
    async with openai.AsyncOpenAI(
        api_key="unused", base_url=server.v1, max_retries=0, timeout=30
    ) as oai:
        completion = await oai.chat.completions.create(model=model, messages=messages)
        assert completion.choices[0].message.content == TEXT
        assert completion.choices[0].finish_reason == "stop"
        check_usage(completion.usage, chat=True)

        stream = await oai.chat.completions.create(
            model=model, messages=messages, stream=True, stream_options={"include_usage": True}
        )
        chunks = [c async for c in stream]
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == TEXT
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
        check_usage(chunks[-1].usage, chat=True)

        response = await oai.responses.create(model=model, input=text)
        assert response.output_text == TEXT and response.status == "completed"
        check_usage(response.usage)

        events = [e async for e in await oai.responses.create(model=model, input=text, stream=True)]
        assert events[0].type == "response.created" and events[-1].type == "response.completed"
        assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == TEXT
        final = events[-1].response
        assert final.status == "completed"
        check_usage(final.usage)

    async with anthropic.AsyncAnthropic(
        api_key="unused", base_url=server.base_url, max_retries=0, timeout=30
    ) as ant:
        message = await ant.messages.create(model=model, max_tokens=100, messages=messages)
        assert [b.text for b in message.content if b.type == "text"] == [TEXT]
        assert message.stop_reason == "end_turn"
        check_usage(message.usage)

        async with ant.messages.stream(model=model, max_tokens=100, messages=messages) as s:
            streamed = "".join([t async for t in s.text_stream])
            final_message = await s.get_final_message()
        assert streamed == TEXT and final_message.stop_reason == "end_turn"
        check_usage(final_message.usage)
    return 6


async def run_efforts(server: CodexServer, model: str, text: str) -> None:
    """Three requests that each ask for a reasoning effort a different way."""
    messages: Any = [{"role": "user", "content": text}]
    async with openai.AsyncOpenAI(
        api_key="unused", base_url=server.v1, max_retries=0, timeout=30
    ) as oai:
        chat = await oai.chat.completions.create(
            model=model, messages=messages, reasoning_effort="low"
        )
        assert chat.choices[0].finish_reason == "stop"
        response = await oai.responses.create(
            model=model, input=text, reasoning={"effort": "medium"}
        )
        assert response.status == "completed"
        suffixed = await oai.chat.completions.create(model="gpt-5.5-high", messages=messages)
        assert suffixed.choices[0].finish_reason == "stop"


async def test_sdks_on_fake_codex(tmp_path: Path) -> None:
    async with open_codex_server(tmp_path) as server:
        with trio.fail_after(BOUND):
            count = await run_dialects(server, "gpt-5.5", prompt("fake"))
            await run_efforts(server, "gpt-5.5", prompt("fake"))
        stats = await server.assert_full_capacity()
        assert stats["served"] == count + 3
        starts = server.sent("thread/start")
        turns = server.sent("turn/start")
        assert len(starts) == len(turns) == count + 3
        assert {s["params"]["model"] for s in starts[:count]} == {"gpt-5.5"}
        assert all("effort" not in t["params"] for t in turns[:count])
        efforts = [
            (s["params"]["model"], t["params"].get("effort"))
            for s, t in zip(starts[count:], turns[count:], strict=True)
        ]
        assert efforts == [("gpt-5.5", "low"), ("gpt-5.5", "medium"), ("gpt-5.5", "high")]


@pytest.mark.realcli
async def test_sdks_on_real_codex(
    real_codex: CodexSetup, model_stub: ModelStub, tmp_path: Path
) -> None:
    async with open_codex_server(tmp_path / "srv", real=real_codex) as server:
        with trio.fail_after(BOUND):
            count = await run_dialects(server, "gpt-stub", prompt("stub"))
            await run_efforts(server, "gpt-stub", prompt("stub"))
        await server.assert_full_capacity()
    calls = model_stub.model_calls()
    assert len(calls) == count + 3  # exactly one upstream call per request
    assert {c.body["model"] for c in calls[:count]} == {"gpt-stub"}
    efforts = [
        (c.body["model"], (c.body.get("reasoning") or {}).get("effort")) for c in calls[count:]
    ]
    assert efforts == [("gpt-stub", "low"), ("gpt-stub", "medium"), ("gpt-5.5", "high")]
