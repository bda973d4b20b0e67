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

from clibridge._supervisor import FAKE_CODEX_COMMAND
from clibridge._wire import anthropic_messages, openai_chat
from tests.e2e.conftest import open_e2e_server

from .harness import EDIT_FILE, edit_reply

SAMPLES = Path(__file__).parents[1] / "testing" / "samples" / "aider"
NAMES = sorted(p.stem for p in SAMPLES.glob("*.jsonl"))


def exchanges(name: str) -> list[dict[str, Any]]:
    """A sample's exchanges in arrival order: one per Aider turn."""
    lines = [line for line in (SAMPLES / f"{name}.jsonl").read_text().splitlines() if line]
    return sorted((json.loads(line) for line in lines), key=lambda e: int(e["seq"]))


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
        "codex_stream_edit",
        "openai_stream_git_edit",
        "openai_stream_session",
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
    for recorded in exchanges(name):
        decode = (
            openai_chat.decode_request
            if recorded["path"] == "/v1/chat/completions"
            else anthropic_messages.decode_request
        )
        request = decode(recorded["request"])
        if "commit message" in request.system:  # git: one user message, the chat and diff
            assert [m.role for m in request.messages] == ["user"]
            assert "# Diffs:" in request.messages[0].text()
            continue
        assert "SEARCH/REPLACE" in request.system
        roles = [m.role for m in request.messages]
        assert roles[-1] == "user" and roles.count("assistant") >= 2, roles
        assert "@fake" in request.messages[-1].text()
        assert any(EDIT_FILE in m.text() for m in request.messages[:-1])


async def replay(client: httpx.AsyncClient, recorded: dict[str, Any]) -> httpx.Response:
    headers = {"content-type": "application/json"}
    if "anthropic-version" in recorded["headers"]:
        headers["anthropic-version"] = recorded["headers"]["anthropic-version"]
    return await client.post(
        recorded["path"], content=json.dumps(recorded["request"]), headers=headers
    )


@pytest.mark.parametrize("name", NAMES)
async def test_replayed_requests_answer_as_recorded(tmp_path: Path, name: str) -> None:
    """Each request of the sample, in order, on one server: the answer's text is the
    recorded one, in the shape the request asked for."""
    recorded = exchanges(name)
    # the codex route's model is served by the fake codex
    codex = FAKE_CODEX_COMMAND if name.startswith("codex") else None
    with trio.fail_after(60):
        async with (
            open_e2e_server(tmp_path, codex=codex) as server,
            httpx.AsyncClient(base_url=server.base_url, timeout=30) as client,
        ):
            responses = [await replay(client, r) for r in recorded]
            await server.assert_clean()
    for sent, response in zip(recorded, responses, strict=True):
        streamed = bool(sent["request"].get("stream"))
        assert response.status_code == 200, response.text
        kind = response.headers["content-type"]
        assert kind.startswith("text/event-stream" if streamed else "application/json"), kind
        text = answer_text(sent["path"], streamed, response.text)
        assert text and text == recorded_answer(sent)
        if name.endswith("_edit"):  # the git case's commit message request too
            assert text == edit_reply()


def test_session_reminder_moves() -> None:
    """What kept Aider's second turn from continuing the parked worker: Aider appends its
    edit-format rules to the newest user message and replays that message without them."""
    first, second = (e["request"]["messages"] for e in exchanges("openai_stream_session"))
    held, replayed = first[-1]["content"], second[len(first) - 1]["content"]
    assert held != replayed and held.startswith(replayed)
    assert "SEARCH/REPLACE block* Rules" in held[len(replayed) :]
    assert "SEARCH/REPLACE block* Rules" in second[-1]["content"]


async def test_session_second_turn_continues_the_parked_worker(tmp_path: Path) -> None:
    """Regression: every Aider turn after the first missed the parked worker (``not_parked``)
    and replayed the whole chat on a fresh one, because Aider trims the reminder it appended
    to the previous user message (:func:`test_session_reminder_moves`)."""
    first, second = exchanges("openai_stream_session")
    with trio.fail_after(60):
        async with (
            open_e2e_server(tmp_path) as server,
            httpx.AsyncClient(base_url=server.base_url, timeout=30) as client,
        ):
            for recorded in (first, second):
                assert (await replay(client, recorded)).status_code == 200
            stats = await server.stats()
            stdin = server.stdin_lines()
    # the first request's miss: Aider's few-shot example turns look like history
    assert (stats["resume_hits"], stats["resume_misses"]) == (1, 1), stats
    users = [
        json.dumps(m["message"]) for m in stdin if isinstance(m, dict) and m.get("type") == "user"
    ]
    # the second turn wrote only what was new: the question (with Aider's reminder)
    assert len(users) == 2, users
    assert "What is my name?" in users[1] and "SEARCH/REPLACE block* Rules" in users[1]
    assert "Please remember" not in users[1]
