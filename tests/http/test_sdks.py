"""The official OpenAI and Anthropic SDKs, sync and async, against the real server."""

from __future__ import annotations

import gc

import anthropic
import openai
import pytest

from clibridge._errors import QueueFull

from .conftest import MODEL, RunningServer, Script, ThreadedServer

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _openai(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(api_key="unused", base_url=f"{base_url}/v1", max_retries=0, timeout=10)


def _anthropic(base_url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key="unused", base_url=base_url, max_retries=0, timeout=10)


def test_openai_sync_chat(threaded_server: ThreadedServer) -> None:
    with _openai(threaded_server.base_url) as client:
        completion = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}]
        )
        assert completion.choices[0].message.content == "Hello, world"
        assert completion.choices[0].finish_reason == "stop"
        assert completion.usage is not None and completion.usage.completion_tokens == 7
        chunks = list(
            client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "hi"}],
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "Hello, world"
        assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 11
        with client.chat.completions.stream(
            model=MODEL, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            for _event in stream:
                pass
            final = stream.get_final_completion()
        assert final.choices[0].message.content == "Hello, world"


def test_openai_sync_responses(threaded_server: ThreadedServer) -> None:
    with _openai(threaded_server.base_url) as client:
        response = client.responses.create(model=MODEL, input="hi")
        assert response.output_text == "Hello, world"
        assert response.status == "completed"
        events = list(client.responses.create(model=MODEL, input="hi", stream=True))
        assert events[0].type == "response.created"
        assert events[-1].type == "response.completed"
        with client.responses.stream(model=MODEL, input="hi") as stream:
            for _event in stream:
                pass
            final = stream.get_final_response()
        assert final.output_text == "Hello, world"
        assert final.usage is not None and final.usage.output_tokens == 7


def test_openai_models_and_errors(threaded_server: ThreadedServer) -> None:
    with _openai(threaded_server.base_url) as client:
        models = client.models.list()
        assert [m.id for m in models] == [MODEL, "gpt-5"]
        assert client.models.retrieve("gpt-5").owned_by == "clibridge-codex"
        with pytest.raises(openai.NotFoundError):
            client.models.retrieve("nope")
        threaded_server.service.scripts["busy"] = Script(
            enter_error=QueueFull("busy", retry_after=3)
        )
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(
                model="busy", messages=[{"role": "user", "content": "x"}]
            )
        assert caught.value.response.headers["retry-after"] == "3"
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model=MODEL, messages=[])


def test_anthropic_sync_messages(threaded_server: ThreadedServer) -> None:
    with _anthropic(threaded_server.base_url) as client:
        message = client.messages.create(
            model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "hi"}]
        )
        assert message.content[0].type == "text" and message.content[0].text == "Hello, world"
        assert message.stop_reason == "end_turn"
        assert message.usage.output_tokens == 7
        with client.messages.stream(
            model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
        assert text == "Hello, world"
        assert final.stop_reason == "end_turn" and final.usage.input_tokens == 11
        count = client.messages.count_tokens(
            model=MODEL, messages=[{"role": "user", "content": "x" * 400}]
        )
        assert count.input_tokens == 100
        models = client.models.list()
        assert [m.id for m in models] == [MODEL, "gpt-5"]
        assert client.models.retrieve(MODEL).display_name.endswith("FAKE)")
        threaded_server.service.scripts["busy"] = Script(enter_error=QueueFull("busy"))
        with pytest.raises(anthropic.RateLimitError):
            client.messages.create(
                model="busy", max_tokens=10, messages=[{"role": "user", "content": "x"}]
            )


# The async SDKs stop iterating their SSE decoders' async generators at the end of a stream
# without closing them; under trio that is a ResourceWarning when they are collected. That
# is the SDKs' business, not a defect of the server: collect them here, warnings ignored.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_async_clients(server: RunningServer) -> None:
    async with openai.AsyncOpenAI(
        api_key="unused", base_url=f"{server.base_url}/v1", max_retries=0, timeout=10
    ) as oai:
        completion = await oai.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}]
        )
        assert completion.choices[0].message.content == "Hello, world"
        stream = await oai.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text == "Hello, world"
        async with oai.responses.stream(model=MODEL, input="hi") as rstream:
            async for _event in rstream:
                pass
            response = await rstream.get_final_response()
        assert response.output_text == "Hello, world"
    async with anthropic.AsyncAnthropic(
        api_key="unused", base_url=server.base_url, max_retries=0, timeout=10
    ) as ant:
        async with ant.messages.stream(
            model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "hi"}]
        ) as mstream:
            text = "".join([t async for t in mstream.text_stream])
            message = await mstream.get_final_message()
        assert text == "Hello, world" and message.stop_reason == "end_turn"
    gc.collect()
