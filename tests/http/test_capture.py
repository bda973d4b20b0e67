"""Exchange capture through the real app: a client that replays its history maps onto one
conversation, in every dialect, streaming or not, tool calls and results included; no
secret reaches the database; ``GET /v1/usage`` scoping."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from quart import g, request

from clibridge._capture import CaptureMode
from clibridge._events import Finished, FinishReason, ToolCallEnd, ToolCallStart, TurnStarted
from clibridge._http.app import attach_ledger
from clibridge._ledger import Ledger
from clibridge._wire.errors import Dialect

from .conftest import MODEL, USAGE, RunningServer, Script, hello, open_server
from .helpers import DIALECTS, PATHS, parse_sse, streamed_text

SYSTEM = "You are terse."


@asynccontextmanager
async def ledger_server(
    tmp_path: Path, capture: CaptureMode = "full", **server: Any
) -> AsyncIterator[tuple[RunningServer, Ledger]]:
    ledger = Ledger(tmp_path / "ledger.sqlite3", capture_mode=capture)
    await trio.to_thread.run_sync(ledger.start)
    try:
        async with open_server(**server) as running:
            attach_ledger(running.app, ledger)
            yield running, ledger
    finally:
        await trio.to_thread.run_sync(ledger.close)


async def settle(ledger: Ledger, requests: int) -> None:
    """Wait until ``requests`` rows (and what was queued with them) are committed: a record
    is handed over just after its response went out, so it may trail the client a little."""
    with trio.fail_after(10):
        while True:
            assert await trio.to_thread.run_sync(ledger.flush)
            if len(ledger.recent(requests)) >= requests:
                break
            await trio.sleep(0.01)
    # what was queued together with the last record is behind this barrier
    assert await trio.to_thread.run_sync(ledger.flush)


def _database_bytes(directory: Path) -> bytes:
    """The ledger's files (database, WAL) as they are on disk."""
    return b"".join(p.read_bytes() for p in directory.glob("ledger.sqlite3*"))


def _body(dialect: Dialect, history: list[tuple[str, str]], stream: bool) -> dict[str, Any]:
    """A request carrying the whole conversation so far, as each SDK would send it."""
    if dialect == "openai_chat":
        messages = [{"role": "system", "content": SYSTEM}]
        messages += [{"role": role, "content": text} for role, text in history]
        return {"model": MODEL, "messages": messages, "stream": stream}
    if dialect == "openai_responses":
        items: list[dict[str, Any]] = []
        for role, text in history:
            if role == "assistant":
                items.append(
                    {
                        "type": "message",
                        "role": "assistant",
                        "content": [{"type": "output_text", "text": text}],
                    }
                )
            else:
                items.append({"role": "user", "content": text})
        return {"model": MODEL, "instructions": SYSTEM, "input": items, "stream": stream}
    return {
        "model": MODEL,
        "max_tokens": 100,
        "system": SYSTEM,
        "messages": [{"role": role, "content": text} for role, text in history],
        "stream": stream,
    }


def _answer(dialect: Dialect, response: httpx.Response, stream: bool) -> str:
    if stream:
        return streamed_text(dialect, parse_sse(response.content))
    data = response.json()
    if dialect == "openai_chat":
        return str(data["choices"][0]["message"]["content"])
    if dialect == "openai_responses":
        return "".join(
            c["text"] for item in data["output"] for c in item.get("content", []) if "text" in c
        )
    return "".join(b["text"] for b in data["content"] if b["type"] == "text")


async def _converse(
    server: RunningServer, dialect: Dialect, stream: bool, opening: str, turns: int = 3
) -> list[str]:
    """``turns`` turns of one conversation, each replaying the whole history; request ids."""
    history: list[tuple[str, str]] = []
    ids: list[str] = []
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        for turn in range(turns):
            server.service.default = Script(steps=hello(f"answer {turn} to {opening}"))
            history.append(("user", f"{opening}, question {turn}"))
            r = await client.post(PATHS[dialect], json=_body(dialect, history, stream))
            assert r.status_code == 200, r.text
            ids.append(r.headers["X-Request-Id"])
            answer = _answer(dialect, r, stream)
            assert answer == f"answer {turn} to {opening}"
            # a client re-serialises what it replays: spacing changes nothing
            history.append(("assistant", f"  {answer}\n"))
    return ids


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("dialect", DIALECTS)
async def test_a_replayed_conversation_maps_to_one_conversation(
    tmp_path: Path, dialect: Dialect, stream: bool
) -> None:
    async with ledger_server(tmp_path) as (server, ledger):
        first = await _converse(server, dialect, stream, "hello")
        second = await _converse(server, dialect, stream, "other", turns=2)
        await settle(ledger, 5)
    captures = [ledger.get(rid)["capture"] for rid in first + second]  # type: ignore[index]
    conversations = [c["conversation_id"] for c in captures]  # type: ignore[index]
    assert len(set(conversations[:3])) == 1
    assert len(set(conversations[3:])) == 1
    assert conversations[0] != conversations[3]
    # one row per message: the system prompt, three questions, three answers
    messages = ledger.conversation(str(conversations[0]))
    assert [m["role"] for m in messages] == ["system"] + ["user", "assistant"] * 3
    assert [m["request_id"] for m in messages] == [first[0]] * 3 + [first[1]] * 2 + [first[2]] * 2
    # each row links to the one before
    assert [m["prev_id"] for m in messages[1:]] == [m["id"] for m in messages[:-1]]
    last = captures[2]
    assert isinstance(last, dict)
    chain = last["messages"]
    assert [m["id"] for m in chain] == [m["id"] for m in messages]
    assert last["answer_id"] == messages[-1]["id"]
    assert json.loads(str(messages[-1]["content"])) == [
        {"type": "text", "text": "answer 2 to hello"}
    ]


async def test_tool_calls_and_results_continue_the_conversation(tmp_path: Path) -> None:
    async with ledger_server(tmp_path) as (server, ledger):
        server.service.default = Script(
            steps=[
                TurnStarted(MODEL),
                ToolCallStart(0, "call_x", "lookup"),
                ToolCallEnd(0, '{"q": "weather"}'),
                Finished(FinishReason.TOOL_USE, USAGE),
            ]
        )
        question = {"role": "user", "content": "what is the weather?"}
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            r = await client.post(
                PATHS["anthropic_messages"],
                json={"model": MODEL, "max_tokens": 50, "messages": [question]},
            )
            (call,) = [b for b in r.json()["content"] if b["type"] == "tool_use"]
            first = r.headers["X-Request-Id"]
            server.service.default = Script(steps=hello("sunny"))
            replay = [
                question,
                # the client re-encodes the arguments: same JSON, other spacing
                {
                    "role": "assistant",
                    "content": [
                        {
                            "type": "tool_use",
                            "id": call["id"],
                            "name": "lookup",
                            "input": call["input"],
                        }
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": call["id"], "content": "sun"}
                    ],
                },
            ]
            r = await client.post(
                PATHS["anthropic_messages"],
                json={"model": MODEL, "max_tokens": 50, "messages": replay},
            )
            assert r.status_code == 200
            second = r.headers["X-Request-Id"]
        await settle(ledger, 2)
    one, two = ledger.get(first), ledger.get(second)
    assert one is not None and two is not None
    assert one["tool_calls"] == 1
    c1, c2 = one["capture"], two["capture"]
    assert isinstance(c1, dict) and isinstance(c2, dict)
    assert c1["conversation_id"] == c2["conversation_id"]
    contents = [json.loads(str(m["content"])) for m in c2["messages"]]
    assert contents[1][0]["type"] == "tool_call" and contents[1][0]["name"] == "lookup"
    assert contents[2][0] == {
        "type": "tool_result",
        "tool_call_id": call["id"],
        "content": "sun",
        "is_error": False,
    }


async def test_metadata_capture_keeps_identities_not_text(tmp_path: Path) -> None:
    async with ledger_server(tmp_path, capture="metadata") as (server, ledger):
        ids = await _converse(server, "openai_chat", False, "secret plans")
        await settle(ledger, 3)
    captures = [ledger.get(rid)["capture"] for rid in ids]  # type: ignore[index]
    assert len({c["conversation_id"] for c in captures}) == 1  # type: ignore[index]
    messages = ledger.conversation(str(captures[0]["conversation_id"]))  # type: ignore[index]
    assert len(messages) == 7 and all(m["content"] is None for m in messages)
    raw = _database_bytes(tmp_path)
    assert b"secret plans" not in raw


async def test_capture_off_stores_no_exchange(tmp_path: Path) -> None:
    async with ledger_server(tmp_path, capture="off") as (server, ledger):
        (rid,) = await _converse(server, "anthropic_messages", True, "hi", turns=1)
        await settle(ledger, 1)
    row = ledger.get(rid)
    assert row is not None and row["capture"] is None and row["status"] == 200


async def test_secrets_never_reach_the_database(tmp_path: Path) -> None:
    token = "sk-very-secret-token-4711"
    async with ledger_server(tmp_path, auth_token=token) as (server, ledger):
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            for dialect in DIALECTS:
                r = await client.post(
                    PATHS[dialect],
                    json=_body(dialect, [("user", "hi")], False),
                    headers={"Authorization": f"Bearer {token}", "x-api-key": token},
                )
                assert r.status_code == 200
            r = await client.post(
                PATHS["openai_chat"],
                json=_body("openai_chat", [("user", "hi")], False),
                headers={"Authorization": "Bearer wrong-secret-0815"},
            )
            assert r.status_code == 401
        await settle(ledger, 3)
    assert len(ledger.recent(10)) == 3
    raw = _database_bytes(tmp_path)
    assert b"hi" in raw  # the capture is there ...
    assert token.encode() not in raw and b"wrong-secret" not in raw  # ... the secrets are not


async def test_usage_endpoint_scopes_by_key(tmp_path: Path) -> None:
    async with ledger_server(tmp_path, capture="off") as (server, ledger):

        @server.app.before_request
        async def _as_named_key() -> None:
            # stands in for named-key admission: X-Test-Key names the key, no admin
            name = request.headers.get("X-Test-Key")
            if name is not None:
                g.clibridge_key = name
                g.clibridge_admin = False

        async with httpx.AsyncClient(base_url=server.base_url) as client:
            for name in ("alice", "alice", "bob"):
                r = await client.post(
                    PATHS["openai_chat"],
                    json=_body("openai_chat", [("user", "hi")], False),
                    headers={"X-Test-Key": name},
                )
                assert r.status_code == 200
            await settle(ledger, 3)
            everyone = (await client.get("/v1/usage", params={"by": "key"})).json()
            alice = (
                await client.get("/v1/usage", params={"by": "key"}, headers={"X-Test-Key": "alice"})
            ).json()
            snooping = await client.get(
                "/v1/usage", params={"key": "bob"}, headers={"X-Test-Key": "alice"}
            )
            by_day = (await client.get("/v1/usage", params={"by": "day", "since": "1d"})).json()
            bad_by = await client.get("/v1/usage", params={"by": "color"})
            bad_since = await client.get("/v1/usage", params={"since": "soon"})
    assert {row["key"]: row["requests"] for row in everyone["data"]} == {"alice": 2, "bob": 1}
    assert alice["key"] == "alice"
    assert [(row["key"], row["requests"]) for row in alice["data"]] == [("alice", 2)]
    assert alice["data"][0]["input_tokens"] == 2 * USAGE.input_tokens
    # a key sees its own usage whatever it asks for
    assert snooping.json()["key"] == "alice"
    assert sum(row["requests"] for row in snooping.json()["data"]) == 2
    assert sum(row["requests"] for row in by_day["data"]) == 3
    assert bad_by.status_code == 400 and bad_by.json()["error"]["param"] == "by"
    assert bad_since.status_code == 400 and bad_since.json()["error"]["param"] == "since"


async def test_usage_without_a_ledger_is_503(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        r = await client.get("/v1/usage")
    assert r.status_code == 503
