"""What clients send is honoured, through the official SDKs, on both backends' fakes:
stop strings, output-token limits and JSON response formats, streaming and not.

Regression (issue 14): ``stop`` / ``stop_sequences`` and ``max_tokens`` were parsed and
ignored (the whole reply came back), ``response_format`` ``json_object`` was ignored and
``json_schema`` refused.

The fake replies in chunks of 3 characters with a delay between them, so a stop string
straddles chunks and the turn is still running when the bridge cuts it: the CLI must then
be told to stop (claude ``interrupt``, codex ``turn/interrupt``) and the pool must get its
capacity back.
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
    # closing them (see test_sdks.py); trio reports that at GC time.
    pytest.mark.filterwarnings("ignore:Async generator:ResourceWarning"),
]

MODELS: dict[Backend, str] = {"claude": MODEL, "codex": "gpt-5.5"}
REPLY = "The answer is 42. STOP Then the model went on and on about other things."
CUT = "The answer is 42. "


def prompt(reply: str, **more: Any) -> str:
    fields = {"reply": reply, "chunk_chars": 3, "chunk_delay": 0.02, **more}
    return f"@fake {json.dumps(fields)}\nanswer me"


def interrupts(server: E2EServer) -> int:
    """How many times the server told a fake CLI to stop a turn."""
    count = 0
    for line in server.stdin_lines():
        if not isinstance(line, dict):
            continue
        request = line.get("request")
        if line.get("method") == "turn/interrupt" or (
            isinstance(request, dict) and request.get("subtype") == "interrupt"
        ):
            count += 1
    return count


def clients(server: E2EServer) -> tuple[openai.AsyncOpenAI, anthropic.AsyncAnthropic]:
    oai = openai.AsyncOpenAI(api_key="unused", base_url=server.v1, max_retries=0, timeout=30)
    ant = anthropic.AsyncAnthropic(
        api_key="unused", base_url=server.base_url, max_retries=0, timeout=30
    )
    return oai, ant


@pytest.mark.parametrize("backend", list(MODELS))
async def test_stop_cuts_and_interrupts(tmp_path: Path, backend: Backend) -> None:
    model = MODELS[backend]
    messages: Any = [{"role": "user", "content": prompt(REPLY)}]
    async with open_e2e_server(tmp_path, backend=backend) as server:
        oai, ant = clients(server)
        with trio.fail_after(BOUND):
            async with oai, ant:
                chat = await oai.chat.completions.create(
                    model=model, messages=messages, stop=["nothing", "STOP"]
                )
                assert chat.choices[0].message.content == CUT
                assert chat.choices[0].finish_reason == "stop"

                stream = await oai.chat.completions.create(
                    model=model, messages=messages, stop="STOP", stream=True
                )
                chunks = [c async for c in stream]
                assert "".join(c.choices[0].delta.content or "" for c in chunks) == CUT
                assert [c.choices[0].finish_reason for c in chunks][-1] == "stop"

                message = await ant.messages.create(
                    model=model, max_tokens=1000, messages=messages, stop_sequences=["STOP"]
                )
                assert [b.text for b in message.content if b.type == "text"] == [CUT]
                assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "STOP")

                async with ant.messages.stream(
                    model=model, max_tokens=1000, messages=messages, stop_sequences=["42. S"]
                ) as msg_stream:
                    text = "".join([t async for t in msg_stream.text_stream])
                    final = await msg_stream.get_final_message()
                assert text == "The answer is "
                assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", "42. S")
        await server.assert_clean()  # the turns have ended (the interrupts race the replies)
        # each turn was still streaming when it was cut: the CLI was told to stop
        assert interrupts(server) == 4
        await server.assert_serves()


@pytest.mark.parametrize("backend", list(MODELS))
async def test_max_tokens_cuts_and_reports_the_limit(tmp_path: Path, backend: Backend) -> None:
    model = MODELS[backend]
    content = prompt(REPLY)
    messages: Any = [{"role": "user", "content": content}]
    async with open_e2e_server(tmp_path, backend=backend) as server:
        oai, ant = clients(server)
        with trio.fail_after(BOUND):
            async with oai, ant:
                chat = await oai.chat.completions.create(
                    model=model, messages=messages, max_completion_tokens=3
                )
                assert chat.choices[0].message.content == REPLY[:12]
                assert chat.choices[0].finish_reason == "length"
                assert chat.usage is not None and chat.usage.completion_tokens == 3

                stream = await oai.chat.completions.create(
                    model=model, messages=messages, max_tokens=2, stream=True
                )
                chunks = [c async for c in stream]
                assert "".join(c.choices[0].delta.content or "" for c in chunks) == REPLY[:8]
                assert [c.choices[0].finish_reason for c in chunks][-1] == "length"

                response = await oai.responses.create(
                    model=model, input=content, max_output_tokens=4
                )
                assert response.output_text == REPLY[:16]
                assert response.status == "incomplete"
                assert response.incomplete_details is not None
                assert response.incomplete_details.reason == "max_output_tokens"

                events = await oai.responses.create(
                    model=model, input=content, max_output_tokens=4, stream=True
                )
                seen = [event async for event in events]
                assert seen[-1].type == "response.incomplete"
                deltas = [e.delta for e in seen if e.type == "response.output_text.delta"]
                assert "".join(deltas) == REPLY[:16]

                message = await ant.messages.create(model=model, max_tokens=5, messages=messages)
                assert [b.text for b in message.content if b.type == "text"] == [REPLY[:20]]
                assert message.stop_reason == "max_tokens"

                async with ant.messages.stream(
                    model=model, max_tokens=5, messages=messages
                ) as msg_stream:
                    text = "".join([t async for t in msg_stream.text_stream])
                    final = await msg_stream.get_final_message()
                assert text == REPLY[:20]
                assert final.stop_reason == "max_tokens"
                assert final.usage.output_tokens == 5
        await server.assert_clean()
        assert interrupts(server) == 6
        await server.assert_serves()


SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
    "required": ["city", "population"],
    "additionalProperties": False,
}
VALID = '{"city": "Lyon", "population": 522000}'


@pytest.mark.parametrize("backend", list(MODELS))
async def test_json_formats(tmp_path: Path, backend: Backend) -> None:
    """Valid replies pass (a fenced one unwrapped); an invalid one is asked for once more
    on the same conversation: the second answer (the scenario file's default reply) wins."""
    model = MODELS[backend]
    schema_format: Any = {
        "type": "json_schema",
        "json_schema": {"name": "city", "schema": SCHEMA, "strict": True},
    }
    scenario = {"default": {"reply": VALID}}
    async with open_e2e_server(tmp_path, backend=backend, scenario=scenario) as server:
        oai, ant = clients(server)
        with trio.fail_after(BOUND):
            async with oai, ant:
                fenced = prompt(f"```json\n{VALID}\n```")
                chat = await oai.chat.completions.create(
                    model=model,
                    messages=[{"role": "user", "content": fenced}],
                    response_format={"type": "json_object"},
                )
                assert chat.choices[0].message.content == VALID

                stream = await oai.chat.completions.create(
                    model=model,
                    messages=[{"role": "user", "content": prompt(VALID)}],
                    response_format=schema_format,
                    stream=True,
                )
                chunks = [c async for c in stream]
                streamed = "".join(c.choices[0].delta.content or "" for c in chunks)
                assert json.loads(streamed) == {"city": "Lyon", "population": 522000}

                # wrong shape first: the retry (no directive: the default reply) is valid
                wrong = prompt('{"city": "Lyon"}')
                retried = await oai.chat.completions.create(
                    model=model,
                    messages=[{"role": "user", "content": wrong}],
                    response_format=schema_format,
                )
                assert retried.choices[0].message.content == VALID

                response = await oai.responses.create(
                    model=model,
                    input=prompt("Sure! Here it is."),
                    text={"format": {"type": "json_schema", "name": "city", "schema": SCHEMA}},
                )
                assert response.output_text == VALID
                assert response.text is not None and response.text.format is not None
                assert response.text.format.type == "json_schema"

                # streaming, with the retry: the client sees only the valid reply
                events = await oai.responses.create(
                    model=model,
                    input=prompt("no JSON"),
                    text={"format": {"type": "json_object"}},
                    stream=True,
                )
                seen = [event async for event in events]
                assert seen[-1].type == "response.completed"
                deltas = [e.delta for e in seen if e.type == "response.output_text.delta"]
                assert deltas == [VALID]

                async with ant.messages.stream(
                    model=model,
                    max_tokens=1000,
                    messages=[{"role": "user", "content": prompt("[1]")}],
                    extra_body={
                        "output_config": {"format": {"type": "json_schema", "schema": SCHEMA}}
                    },
                ) as msg_stream:
                    text = "".join([t async for t in msg_stream.text_stream])
                assert text == VALID

                message = await ant.messages.create(
                    model=model,
                    max_tokens=1000,
                    messages=[{"role": "user", "content": prompt(VALID)}],
                    extra_body={
                        "output_config": {"format": {"type": "json_schema", "schema": SCHEMA}}
                    },
                )
                assert [b.text for b in message.content if b.type == "text"] == [VALID]
        await server.assert_clean()
    # the retry told the model what was wrong
    user_lines = json.dumps(server.stdin_lines())
    assert "does not match the JSON Schema" in user_lines
    assert "not valid JSON" in user_lines


@pytest.mark.parametrize("backend", list(MODELS))
async def test_json_format_invalid_twice_is_an_error(tmp_path: Path, backend: Backend) -> None:
    model = MODELS[backend]
    messages: Any = [{"role": "user", "content": prompt("no JSON here")}]
    async with open_e2e_server(tmp_path, backend=backend) as server:
        oai, ant = clients(server)
        with trio.fail_after(BOUND):
            async with oai, ant:
                with pytest.raises(openai.APIStatusError) as caught:
                    await oai.chat.completions.create(
                        model=model, messages=messages, response_format={"type": "json_object"}
                    )
                assert caught.value.status_code == 502
                assert "did not match the requested response format" in str(caught.value)
                assert caught.value.code == "invalid_output"

                # streaming: the error status when it comes before the first byte (here),
                # the dialect's error event when it comes later
                with pytest.raises(openai.APIError, match="response format"):
                    await stream_all(oai, model, messages, {"type": "json_object"})
        await server.assert_clean()
        await server.assert_serves()


async def stream_all(oai: openai.AsyncOpenAI, model: str, messages: Any, fmt: Any) -> None:
    stream = await oai.chat.completions.create(
        model=model, messages=messages, response_format=fmt, stream=True
    )
    async for _chunk in stream:
        pass


BAD_REQUESTS: list[tuple[str, dict[str, Any], str]] = [
    ("/v1/chat/completions", {"response_format": {"type": "xml"}}, "$.response_format.type"),
    (
        "/v1/chat/completions",
        {"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": 5}}}},
        "$.response_format.json_schema.schema",
    ),
    ("/v1/chat/completions", {"response_format": {"type": "json_schema"}}, "json_schema"),
    ("/v1/chat/completions", {"stop": ["ok", ""]}, "$.stop[1]"),
    ("/v1/chat/completions", {"max_completion_tokens": 0}, "$.max_completion_tokens"),
    ("/v1/responses", {"text": {"format": {"type": "yaml"}}}, "$.text.format.type"),
    (
        "/v1/responses",
        {"text": {"format": {"type": "json_schema", "schema": {"required": "x"}}}},
        "$.text.format.schema",
    ),
    ("/v1/responses", {"max_output_tokens": -1}, "$.max_output_tokens"),
    ("/v1/messages", {"stop_sequences": [""]}, "$.stop_sequences[0]"),
    ("/v1/messages", {"stop_sequences": "STOP"}, "$.stop_sequences"),
    ("/v1/messages", {"output_config": {"format": {"type": "json_schema"}}}, "schema"),
]


async def test_bad_values_are_refused_naming_the_field(tmp_path: Path) -> None:
    async with open_e2e_server(tmp_path) as server, server.client() as client:
        for path, extra, field in BAD_REQUESTS:
            body: dict[str, Any] = {"model": MODEL, **extra}
            if path == "/v1/responses":
                body["input"] = "hi"
            else:
                body["messages"] = [{"role": "user", "content": "hi"}]
            response = await client.post(path, json=body)
            assert response.status_code == 400, (path, extra, response.text)
            assert field in response.json()["error"]["message"], (path, extra, response.text)


#: a reply the stub streams for ~30 s: only an interrupt ends its upstream stream sooner
LONG = "The answer is 42. STOP " + "and more words " * 200


@pytest.mark.realcli
async def test_stop_and_max_tokens_on_real_claude(
    claude_binary: Path, model_stub: ModelStub, tmp_path: Path
) -> None:
    """The real claude CLI behind the model stub: the bridge cuts the reply, interrupts the
    turn, and the CLI hangs up its upstream stream long before the stub would end it."""
    stub_prompt = (
        f"@stub {json.dumps({'text': LONG, 'chunk_chars': 5, 'chunk_delay': 0.05})}\nanswer me"
    )
    messages: Any = [{"role": "user", "content": stub_prompt}]
    async with open_real_server(tmp_path, claude_binary, model_stub) as server:
        oai, ant = clients(server)
        async with oai, ant:
            with trio.fail_after(BOUND):
                stream = await oai.chat.completions.create(
                    model=MODEL, messages=messages, stop=["STOP"], stream=True
                )
                chunks = [c async for c in stream]
                assert "".join(c.choices[0].delta.content or "" for c in chunks) == CUT
                assert [c.choices[0].finish_reason for c in chunks][-1] == "stop"
            # the upstream stream would run ~30 s more; the interrupt ended it
            with trio.fail_after(15):
                await model_stub.wait_for_idle()

            with trio.fail_after(BOUND):
                message = await ant.messages.create(model=MODEL, max_tokens=6, messages=messages)
                assert [b.text for b in message.content if b.type == "text"] == [LONG[:24]]
                assert message.stop_reason == "max_tokens"
            with trio.fail_after(15):
                await model_stub.wait_for_idle()
        await server.assert_serves()
        await server.assert_clean()


@pytest.mark.realcli
async def test_stop_and_max_tokens_on_real_codex(
    real_codex: CodexSetup, model_stub: ModelStub, tmp_path: Path
) -> None:
    """The same on the real codex app-server: ``turn/interrupt`` ends its upstream stream."""
    stub_prompt = (
        f"@stub {json.dumps({'text': LONG, 'chunk_chars': 5, 'chunk_delay': 0.05})}\nanswer me"
    )
    async with open_e2e_server(
        tmp_path / "srv", backend="codex", **real_codex_settings(real_codex)
    ) as server:
        oai, _ = clients(server)
        async with oai:
            with trio.fail_after(BOUND):
                events = await oai.responses.create(
                    model="gpt-stub", input=stub_prompt, max_output_tokens=6, stream=True
                )
                seen = [event async for event in events]
                assert seen[-1].type == "response.incomplete"
                deltas = [e.delta for e in seen if e.type == "response.output_text.delta"]
                assert "".join(deltas) == LONG[:24]
            with trio.fail_after(15):
                await model_stub.wait_for_idle()

            with trio.fail_after(BOUND):
                chat = await oai.chat.completions.create(
                    model="gpt-stub",
                    messages=[{"role": "user", "content": stub_prompt}],
                    stop=["STOP"],
                )
                assert chat.choices[0].message.content == CUT
                assert chat.choices[0].finish_reason == "stop"
            with trio.fail_after(15):
                await model_stub.wait_for_idle()
        await server.assert_full_capacity()
