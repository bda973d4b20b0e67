"""The official OpenAI and Anthropic SDKs -- sync, async, streaming helpers -- against the
whole server: on each fake CLI (claude, codex), and on each real CLI behind the model stub.

Each request carries a directive (``@fake`` for the fake CLI, ``@stub`` for the stub the real
CLI talks to) fixing the reply text and the token counts the CLI reports, so the test can
assert that the usage every dialect shows is exactly what the CLI reported.

Codex only: reasoning effort -- ``reasoning_effort`` (chat), ``reasoning.effort``
(Responses) and a model suffix (``gpt-5.5-high``) -- reaches the ``turn/start`` the fake
records, and the upstream request the real codex makes (the claude backend takes no effort).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anthropic
import attrs
import openai
import pytest
import trio

from clibridge.testing.model_stub import ModelStub
from clibridge.testing.realcli import CodexSetup

from .conftest import (
    BOUND,
    MODEL,
    Backend,
    E2EServer,
    open_e2e_server,
    open_real_server,
    real_codex_settings,
)

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    # Why: openai's AsyncStream breaks out of its own SSE generators at ``[DONE]`` without
    # closing them (openai._streaming, httpx2, httpcore2); trio reports that at GC time.
    pytest.mark.filterwarnings("ignore:Async generator:ResourceWarning"),
]

TEXT = "Hi there, SDK user!"
INPUT_TOKENS = 17
OUTPUT_TOKENS = 9


@attrs.frozen
class Flavor:
    """The prompt that makes the CLI answer :data:`TEXT` with known usage."""

    prompt: str
    model: str = MODEL

    @classmethod
    def fake(cls, model: str = MODEL) -> Flavor:
        """For the fake CLI: ``@fake`` names the reply ``reply``."""
        return cls._directive("@fake", "reply", model)

    @classmethod
    def stub(cls, model: str = MODEL) -> Flavor:
        """For the model stub behind a real CLI: ``@stub`` names the reply ``text``."""
        return cls._directive("@stub", "text", model)

    @classmethod
    def _directive(cls, directive: str, reply: str, model: str) -> Flavor:
        fields = {reply: TEXT, "chunk_chars": 3}
        fields.update(input_tokens=INPUT_TOKENS, output_tokens=OUTPUT_TOKENS)
        return cls(f"{directive} {json.dumps(fields)}\nsay hi", model)

    @property
    def messages(self) -> list[Any]:
        return [{"role": "user", "content": self.prompt}]


def check_chat_usage(usage: Any) -> None:
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (INPUT_TOKENS, OUTPUT_TOKENS)
    assert usage.total_tokens == INPUT_TOKENS + OUTPUT_TOKENS


def check_io_usage(usage: Any) -> None:
    """Responses and Anthropic Messages both say input_tokens / output_tokens."""
    assert usage is not None
    assert (usage.input_tokens, usage.output_tokens) == (INPUT_TOKENS, OUTPUT_TOKENS)


def run_sync_clients(base_url: str, flavor: Flavor) -> int:
    """Every sync SDK path once; returns how many requests it made."""
    with openai.OpenAI(
        api_key="unused", base_url=f"{base_url}/v1", max_retries=0, timeout=30
    ) as oai:
        completion = oai.chat.completions.create(model=flavor.model, messages=flavor.messages)
        assert completion.choices[0].message.content == TEXT
        assert completion.choices[0].finish_reason == "stop"
        check_chat_usage(completion.usage)

        chunks = list(
            oai.chat.completions.create(
                model=flavor.model,
                messages=flavor.messages,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == TEXT
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
        check_chat_usage(chunks[-1].usage)

        with oai.chat.completions.stream(
            model=flavor.model, messages=flavor.messages, stream_options={"include_usage": True}
        ) as chat_stream:
            deltas = [e.delta for e in chat_stream if e.type == "content.delta"]
            final = chat_stream.get_final_completion()
        assert "".join(deltas) == TEXT
        assert final.choices[0].message.content == TEXT
        assert final.choices[0].finish_reason == "stop"
        check_chat_usage(final.usage)

        response = oai.responses.create(model=flavor.model, input=flavor.prompt)
        assert response.output_text == TEXT
        assert response.status == "completed"
        check_io_usage(response.usage)

        events = list(oai.responses.create(model=flavor.model, input=flavor.prompt, stream=True))
        assert events[0].type == "response.created"
        assert events[-1].type == "response.completed"
        streamed = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        assert streamed == TEXT
        check_io_usage(events[-1].response.usage)

        with oai.responses.stream(model=flavor.model, input=flavor.prompt) as resp_stream:
            for _event in resp_stream:
                pass
            final_response = resp_stream.get_final_response()
        assert final_response.output_text == TEXT
        check_io_usage(final_response.usage)

    with anthropic.Anthropic(api_key="unused", base_url=base_url, max_retries=0, timeout=30) as ant:
        message = ant.messages.create(model=flavor.model, max_tokens=100, messages=flavor.messages)
        assert [b.text for b in message.content if b.type == "text"] == [TEXT]
        assert message.stop_reason == "end_turn"
        check_io_usage(message.usage)

        raw_events = list(
            ant.messages.create(
                model=flavor.model, max_tokens=100, messages=flavor.messages, stream=True
            )
        )
        assert raw_events[0].type == "message_start"
        assert raw_events[-1].type == "message_stop"
        (delta,) = [e for e in raw_events if e.type == "message_delta"]
        assert delta.delta.stop_reason == "end_turn"
        assert delta.usage.output_tokens == OUTPUT_TOKENS

        with ant.messages.stream(
            model=flavor.model, max_tokens=100, messages=flavor.messages
        ) as msg_stream:
            text = "".join(msg_stream.text_stream)
            final_message = msg_stream.get_final_message()
        assert text == TEXT
        assert final_message.stop_reason == "end_turn"
        check_io_usage(final_message.usage)
    return 9


async def run_async_clients(base_url: str, flavor: Flavor) -> int:
    """Every async SDK path once; returns how many requests it made."""
    async with openai.AsyncOpenAI(
        api_key="unused", base_url=f"{base_url}/v1", max_retries=0, timeout=30
    ) as oai:
        completion = await oai.chat.completions.create(model=flavor.model, messages=flavor.messages)
        assert completion.choices[0].message.content == TEXT
        assert completion.choices[0].finish_reason == "stop"
        check_chat_usage(completion.usage)

        stream = await oai.chat.completions.create(
            model=flavor.model,
            messages=flavor.messages,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [c async for c in stream]
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == TEXT
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
        check_chat_usage(chunks[-1].usage)

        async with oai.chat.completions.stream(
            model=flavor.model, messages=flavor.messages, stream_options={"include_usage": True}
        ) as chat_stream:
            async for _event in chat_stream:
                pass
            final = await chat_stream.get_final_completion()
        assert final.choices[0].message.content == TEXT
        check_chat_usage(final.usage)

        response = await oai.responses.create(model=flavor.model, input=flavor.prompt)
        assert response.output_text == TEXT
        check_io_usage(response.usage)

        async with oai.responses.stream(model=flavor.model, input=flavor.prompt) as resp_stream:
            async for _resp_event in resp_stream:
                pass
            final_response = await resp_stream.get_final_response()
        assert final_response.output_text == TEXT
        assert final_response.status == "completed"
        check_io_usage(final_response.usage)

    async with anthropic.AsyncAnthropic(
        api_key="unused", base_url=base_url, max_retries=0, timeout=30
    ) as ant:
        message = await ant.messages.create(
            model=flavor.model, max_tokens=100, messages=flavor.messages
        )
        assert [b.text for b in message.content if b.type == "text"] == [TEXT]
        assert message.stop_reason == "end_turn"
        check_io_usage(message.usage)

        async with ant.messages.stream(
            model=flavor.model, max_tokens=100, messages=flavor.messages
        ) as msg_stream:
            text = "".join([t async for t in msg_stream.text_stream])
            final_message = await msg_stream.get_final_message()
        assert text == TEXT
        assert final_message.stop_reason == "end_turn"
        check_io_usage(final_message.usage)
    return 7


async def run_all(server: E2EServer, flavor: Flavor) -> int:
    with trio.fail_after(90):
        count = await trio.to_thread.run_sync(run_sync_clients, server.base_url, flavor)
        count += await run_async_clients(server.base_url, flavor)
    stats = await server.assert_clean()
    assert stats["served"] == count
    return count


async def run_efforts(server: E2EServer, flavor: Flavor) -> int:
    """Three requests that each ask for a reasoning effort a different way (low, medium,
    high by the model suffix); returns how many requests it made."""
    async with openai.AsyncOpenAI(
        api_key="unused", base_url=server.v1, max_retries=0, timeout=30
    ) as oai:
        chat = await oai.chat.completions.create(
            model=flavor.model, messages=flavor.messages, reasoning_effort="low"
        )
        assert chat.choices[0].finish_reason == "stop"
        response = await oai.responses.create(
            model=flavor.model, input=flavor.prompt, reasoning={"effort": "medium"}
        )
        assert response.status == "completed"
        suffixed = await oai.chat.completions.create(model="gpt-5.5-high", messages=flavor.messages)
        assert suffixed.choices[0].finish_reason == "stop"
    return 3


#: the model each backend's fake is asked for
FAKE_MODELS: dict[Backend, str] = {"claude": MODEL, "codex": "gpt-5.5"}


@pytest.mark.parametrize("backend", list(FAKE_MODELS))
async def test_sdks_on_fake(tmp_path: Path, backend: Backend) -> None:
    async with open_e2e_server(tmp_path, backend=backend) as server:
        await run_all(server, Flavor.fake(FAKE_MODELS[backend]))


async def test_codex_reasoning_effort_reaches_turn_start(tmp_path: Path) -> None:
    flavor = Flavor.fake("gpt-5.5")
    async with open_e2e_server(tmp_path, backend="codex") as server:
        with trio.fail_after(BOUND):
            count = await run_async_clients(server.base_url, flavor)
            count += await run_efforts(server, flavor)
        stats = await server.assert_full_capacity()
        assert stats["served"] == count
        starts = server.sent("thread/start")
        turns = server.sent("turn/start")
        assert len(starts) == len(turns) == count
        plain = count - 3
        assert {s["params"]["model"] for s in starts[:plain]} == {"gpt-5.5"}
        assert all("effort" not in t["params"] for t in turns[:plain])
        efforts = [
            (s["params"]["model"], t["params"].get("effort"))
            for s, t in zip(starts[plain:], turns[plain:], strict=True)
        ]
        assert efforts == [("gpt-5.5", "low"), ("gpt-5.5", "medium"), ("gpt-5.5", "high")]


@pytest.mark.realcli
async def test_sdks_on_real_claude(
    claude_binary: Path, model_stub: ModelStub, tmp_path: Path
) -> None:
    async with open_real_server(tmp_path, claude_binary, model_stub) as server:
        count = await run_all(server, Flavor.stub())
        # exactly one upstream call per request
        assert len(model_stub.model_calls()) == count


@pytest.mark.realcli
async def test_sdks_on_real_codex(
    real_codex: CodexSetup, model_stub: ModelStub, tmp_path: Path
) -> None:
    flavor = Flavor.stub("gpt-stub")
    async with open_e2e_server(
        tmp_path / "srv", backend="codex", **real_codex_settings(real_codex)
    ) as server:
        with trio.fail_after(BOUND):
            count = await run_async_clients(server.base_url, flavor)
            count += await run_efforts(server, flavor)
        await server.assert_full_capacity()
    calls = model_stub.model_calls()
    assert len(calls) == count  # exactly one upstream call per request
    plain = count - 3
    assert {c.body["model"] for c in calls[:plain]} == {"gpt-stub"}
    efforts = [
        (c.body["model"], (c.body.get("reasoning") or {}).get("effort")) for c in calls[plain:]
    ]
    assert efforts == [("gpt-stub", "low"), ("gpt-stub", "medium"), ("gpt-5.5", "high")]
