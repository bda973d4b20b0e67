"""OpenClaw's recorded requests replayed against the server: every tool round and every
second session turn must continue the parked worker.

The samples (``tests/testing/samples/openclaw``, see its README) are real
``openclaw@2026.9.6`` traffic: OpenClaw appends a ``<<<BEGIN_OPENCLAW_INTERNAL_CONTEXT>>>``
user message to each request and drops it from the next, rewrites our call ids in the
Responses API (``call_<ours>_fc_<hex>_<hex>``), and re-serialises earlier messages. The
request bodies are sent as recorded; only the call ids of the recorded run are mapped to the
ones this run issued. The fake claude plays the model exactly as in the recording.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio

from clibridge._conversations import (
    Continue,
    Conversation,
    ToolResume,
    best_match,
    conversation_key,
    items,
    setup_digest,
)
from clibridge._events import Message, ToolCallPart
from clibridge._wire import anthropic_messages, openai_chat, openai_responses
from tests.e2e.conftest import open_e2e_server

SAMPLES = Path(__file__).parents[1] / "testing" / "samples" / "openclaw"
APIS = ["openai-completions", "openai-responses", "anthropic-messages"]
OUR_ID = re.compile(r"call[0-9a-f]{24}")
CONTEXT = "<<<BEGIN_OPENCLAW_INTERNAL_CONTEXT>>>"


def exchanges(name: str) -> list[dict[str, Any]]:
    path = SAMPLES / f"{name}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def first_seen(text: str) -> list[str]:
    return list(dict.fromkeys(OUR_ID.findall(text)))


async def replay(client: httpx.AsyncClient, recorded: dict[str, Any], ids: dict[str, str]) -> str:
    body = json.dumps(recorded["request"])
    for old, new in ids.items():
        body = body.replace(old, new)
    headers = {"content-type": "application/json"}
    if "anthropic-version" in recorded["headers"]:
        headers["anthropic-version"] = recorded["headers"]["anthropic-version"]
    response = await client.post(recorded["path"], content=body, headers=headers)
    assert response.status_code == 200, response.text
    return response.text


def user_lines(stdin: list[Any]) -> list[str]:
    return [
        json.dumps(m["message"]) for m in stdin if isinstance(m, dict) and m.get("type") == "user"
    ]


def tool_answers(stdin: list[Any]) -> list[str]:
    """The MCP tools/call results the server sent the fake claude."""
    out = []
    for m in stdin:
        if isinstance(m, dict) and m.get("type") == "control_response":
            reply = m["response"].get("response", {}).get("mcp_response", {})
            content = (reply.get("result") or {}).get("content")
            if reply.get("id", 0) >= 2 and content:  # ids 0, 1: the MCP handshake
                out.append("".join(c.get("text", "") for c in content))
    return out


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("cell", ["tool_loop", "session"])
async def test_openclaw_requests_continue_the_parked_worker(
    tmp_path: Path, api: str, cell: str
) -> None:
    """Regression: with OpenClaw no request ever resumed a parked worker (resume_hits 0):
    its trailing context message, and in the Responses API its rewritten call ids, made
    request 2 differ from what the worker held."""
    first, second = exchanges(f"{api}_{cell}")
    with trio.fail_after(60):
        async with (
            open_e2e_server(tmp_path) as server,
            httpx.AsyncClient(base_url=server.base_url, timeout=30) as client,
        ):
            answer = await replay(client, first, {})
            ids = dict(
                zip(first_seen(json.dumps(second["request"])), first_seen(answer), strict=True)
            )
            assert len(ids) == (1 if cell == "tool_loop" else 0)
            await replay(client, second, ids)
            stats = await server.stats()
            assert (stats["resume_hits"], stats["resume_misses"]) == (1, 0), stats
            stdin = server.stdin_lines()
    users = user_lines(stdin)
    # one user line per user turn: request 2 wrote only what was new, never the history
    assert len(users) == (1 if cell == "tool_loop" else 2), users
    if cell == "session":
        assert "What is my name?" in users[1] and CONTEXT in users[1]
        assert "Please remember" not in users[1]
        return
    (result,) = tool_answers(stdin)
    assert "PAPAYA-42" in result
    # the context OpenClaw sent after the result reached the model with it (in the
    # Responses API OpenClaw keeps request 1's context in place and sends none after)
    assert (CONTEXT in result) == (api != "openai-responses")


# ------------------------------------------------------------- the matcher alone (pure)

DECODERS = {
    "openai-completions": openai_chat.decode_request,
    "openai-responses": openai_responses.decode_request,
    "anthropic-messages": anthropic_messages.decode_request,
}


def as_sent(message: Message) -> Message:
    """The assistant message the bridge sent: our ids, not the client's rewriting of them."""
    parts = tuple(
        attrs.evolve(p, id=found.group())
        if isinstance(p, ToolCallPart) and (found := OUR_ID.search(p.id))
        else p
        for p in message.parts
    )
    return Message(message.role, parts)


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("cell", ["tool_loop", "session"])
def test_matcher_on_openclaw_requests(api: str, cell: str) -> None:
    """The pure matcher on the recorded bodies: request 2 aligns with what the worker
    holds after request 1 and its reply, dropping only OpenClaw's context message."""
    first, second = (DECODERS[api](x["request"]) for x in exchanges(f"{api}_{cell}"))
    assert first.system == second.system  # one session: the same system prompt
    reply_at = max(i for i, m in enumerate(second.messages) if m.role == "assistant")
    reply = as_sent(second.messages[reply_at])
    held = (*items(first.messages), *items([reply], len(first.messages)))
    setup = setup_digest("setup")
    pending = tuple((p.id, "toolu_1") for p in reply.parts if isinstance(p, ToolCallPart))
    parked = [Conversation(conversation_key(setup, held), setup, held, pending)]
    match = best_match(parked, setup, second.messages, items(second.messages))
    assert match is not None
    # OpenClaw's context of request 1 is dropped, except where the Responses API keeps it
    assert match.dropped == (0 if (api, cell) == ("openai-responses", "tool_loop") else 1)
    new_text = "".join(m.text() for m in match.new)
    if cell == "session":
        assert isinstance(match.plan, Continue)
        assert "What is my name?" in new_text and CONTEXT in new_text
    else:
        assert isinstance(match.plan, ToolResume)
        (result,) = match.plan.results.values()
        assert "PAPAYA-42" in result.content
