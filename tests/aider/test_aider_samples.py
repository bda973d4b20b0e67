"""Aider's recorded requests replayed against the server (fast; Aider need not be installed).

The samples (``tests/testing/samples/aider``, see its README) are real ``aider-chat 0.86.2``
traffic: Chat Completions from ``openai/sonnet`` (the OpenAI SDK inside LiteLLM) and Messages
from ``anthropic/claude-sonnet-4-5`` (LiteLLM's own Anthropic client), streamed and not. Each
request body is sent as recorded to a server on the fake claude; the ``@fake`` line Aider
carried in its user message scripts the same answer as in the recording, so the replayed
answer's text must equal the recorded one, SEARCH/REPLACE block and all, in the shape the
request asked for (SSE deltas or one JSON body).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from clibridge._wire import anthropic_messages, openai_chat
from tests.e2e.conftest import open_e2e_server

from .harness import EDIT_FILE, edit_reply

SAMPLES = Path(__file__).parents[1] / "testing" / "samples" / "aider"
NAMES = sorted(p.stem for p in SAMPLES.glob("*.jsonl"))


def exchange(name: str) -> dict[str, Any]:
    """The one exchange of a sample: every Aider turn made exactly one request."""
    lines = [line for line in (SAMPLES / f"{name}.jsonl").read_text().splitlines() if line]
    (only,) = lines
    data: dict[str, Any] = json.loads(only)
    return data


def sse_data(text: str) -> list[Any]:
    """The JSON ``data:`` payloads of an SSE body (``[DONE]`` as the string)."""
    out: list[Any] = []
    for line in text.splitlines():
        if line.startswith("data: "):
            payload = line.removeprefix("data: ")
            out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


def answer_text(path: str, streamed: bool, body: str) -> str:
    """The assistant's text of a Chat Completions or Messages answer, streamed or not."""
    if not streamed:
        data = json.loads(body)
        if path == "/v1/chat/completions":
            return str(data["choices"][0]["message"]["content"])
        return "".join(b["text"] for b in data["content"] if b["type"] == "text")
    events = sse_data(body)
    if path == "/v1/chat/completions":
        assert events[-1] == "[DONE]", events[-3:]
        deltas = [e["choices"][0]["delta"] for e in events[:-1] if e["choices"]]
        return "".join(d.get("content") or "" for d in deltas)
    assert events[-1]["type"] == "message_stop", events[-3:]
    return "".join(
        e["delta"]["text"]
        for e in events
        if e["type"] == "content_block_delta" and e["delta"]["type"] == "text_delta"
    )


def recorded_answer(recorded: dict[str, Any]) -> str:
    streamed = bool(recorded["request"].get("stream"))
    body = recorded["response_text"] if streamed else json.dumps(recorded["response"])
    return answer_text(recorded["path"], streamed, body)


def test_samples_present() -> None:
    """Both routes, streamed and not, are recorded (a lost file must not pass unnoticed)."""
    assert set(NAMES) >= {
        "openai_stream_edit",
        "openai_nostream_edit",
        "anthropic_stream_edit",
        "anthropic_nostream_edit",
        "openai_stream_plain",
    }


@pytest.mark.parametrize("name", NAMES)
def test_recorded_request_decodes(name: str) -> None:
    """The pure decoders take Aider's bodies: its system prompt, its few-shot example turns,
    the file, then the user's message (with the directive) last."""
    recorded = exchange(name)
    body = recorded["request"]
    decode = (
        openai_chat.decode_request
        if recorded["path"] == "/v1/chat/completions"
        else anthropic_messages.decode_request
    )
    request = decode(body)
    assert "SEARCH/REPLACE" in request.system
    roles = [m.role for m in request.messages]
    assert roles[-1] == "user" and roles.count("assistant") >= 2, roles
    assert "@fake" in request.messages[-1].text()
    assert any(EDIT_FILE in m.text() for m in request.messages[:-1])


@pytest.mark.parametrize("name", NAMES)
async def test_replayed_request_answers_as_recorded(tmp_path: Path, name: str) -> None:
    recorded = exchange(name)
    streamed = bool(recorded["request"].get("stream"))
    headers = {"content-type": "application/json"}
    if "anthropic-version" in recorded["headers"]:
        headers["anthropic-version"] = recorded["headers"]["anthropic-version"]
    with trio.fail_after(60):
        async with (
            open_e2e_server(tmp_path) as server,
            httpx.AsyncClient(base_url=server.base_url, timeout=30) as client,
        ):
            response = await client.post(
                recorded["path"], content=json.dumps(recorded["request"]), headers=headers
            )
            await server.assert_clean()
    assert response.status_code == 200, response.text
    kind = response.headers["content-type"]
    assert kind.startswith("text/event-stream" if streamed else "application/json"), kind
    text = answer_text(recorded["path"], streamed, response.text)
    assert text and text == recorded_answer(recorded)
    if name.endswith("_edit"):
        assert text == edit_reply()
