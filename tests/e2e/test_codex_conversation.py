"""A multi-turn conversation (system, user, assistant, user) reaches the model faithfully.

clibridge opens an ephemeral thread with the system prompt as ``baseInstructions``, appends
the earlier messages with ``thread/inject_items`` and starts a turn with the last user
message. On the real codex the model stub sees real developer / user / assistant / user
messages; on the fake, echo mode shows what the fake saw.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio

from clibridge.testing.model_stub import ModelStub
from clibridge.testing.realcli import CodexSetup

from .conftest import BOUND, open_e2e_server, real_codex_settings


def conversation(last: str) -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": last},
    ]


async def test_conversation_reaches_the_fake_codex(tmp_path: Path) -> None:
    async with open_e2e_server(tmp_path, backend="codex") as server, server.client() as client:
        with trio.fail_after(BOUND):
            body = {"model": "gpt-5.5", "messages": conversation('@fake {"echo": true}\nq2')}
            response = await client.post("/v1/chat/completions", json=body)
        assert response.status_code == 200, response.text
        text = response.json()["choices"][0]["message"]["content"]
        assert text == "echo: [user]\nq1\n\n[assistant]\na1\n\n[user]\nq2"
        (start,) = server.sent("thread/start")
        assert start["params"]["baseInstructions"] == "You are terse."
        (inject,) = server.sent("thread/inject_items")
        assert inject["params"]["items"] == [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "q1"}]},
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "a1"}],
            },
        ]


@pytest.mark.realcli
async def test_conversation_reaches_the_model_behind_the_real_codex(
    real_codex: CodexSetup, model_stub: ModelStub, tmp_path: Path
) -> None:
    last = "@stub " + json.dumps({"text": "a2"}) + "\nq2"
    async with open_e2e_server(
        tmp_path / "srv", backend="codex", **real_codex_settings(real_codex)
    ) as server:
        async with server.client() as client:
            with trio.fail_after(BOUND):
                body = {"model": "gpt-stub", "messages": conversation(last)}
                response = await client.post("/v1/chat/completions", json=body)
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"] == "a2"
    (call,) = model_stub.model_calls()
    seen = [
        (item.get("type"), item.get("role"), [c.get("text") for c in item.get("content", [])])
        for item in call.body["input"]
    ]
    assert seen == [
        ("message", "developer", ["You are terse."]),
        ("message", "user", ["q1"]),
        ("message", "assistant", ["a1"]),
        ("message", "user", [last]),
    ]
    assert not call.body.get("tools")
