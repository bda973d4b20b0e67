"""The pinned real CLIs complete a turn offline against the loopback model stub.

These prove the harness (homes, env, provider overrides, stub wire format) and pin down what
the CLIs send upstream, which the claude / codex drivers rely on.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio

from clibridge.testing.model_stub import STUB_API_KEY, ModelStub, Reply, directive
from clibridge.testing.realcli import ClaudeSetup, CodexSetup, open_json_lines_process

pytestmark = pytest.mark.realcli

#: boot (~1-1.5 s here) plus one turn, with room for a loaded 2-core machine
BOOT_AND_TURN = 30


def user_line(text: str) -> dict[str, Any]:
    return {
        "type": "user",
        "message": {"role": "user", "content": text},
        "parent_tool_use_id": None,
        "session_id": "",
    }


def control(request_id: str, subtype: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": "control_request",
        "request_id": request_id,
        "request": {"subtype": subtype, **fields},
    }


def is_result(message: Any) -> bool:
    return isinstance(message, dict) and message.get("type") == "result"


def answers(request_id: str) -> Any:
    def check(message: Any) -> bool:
        return (
            isinstance(message, dict)
            and message.get("type") == "control_response"
            and message["response"].get("request_id") == request_id
        )

    return check


async def test_real_claude_stream_json_turn(
    real_claude: ClaudeSetup, model_stub: ModelStub
) -> None:
    argv = real_claude.stream_json_argv()
    async with open_json_lines_process(argv, env=real_claude.env, cwd=real_claude.cwd) as claude:
        with trio.fail_after(BOOT_AND_TURN):
            await claude.send(control("ready", "mcp_status"))
            await claude.receive_until(answers("ready"))
            await claude.send(control("init", "initialize", systemPrompt="You are STUB-SYSTEM."))
            await claude.receive_until(answers("init"))
            await claude.send(user_line("say hi\n" + directive(text="Hi there!", chunk_chars=3)))
            turn = await claude.receive_until(is_result)

    result = turn[-1]
    assert (result["subtype"], result["is_error"], result["result"]) == (
        "success",
        False,
        "Hi there!",
    )
    deltas = [
        m["event"]["delta"]["text"]
        for m in turn
        if m.get("type") == "stream_event" and m["event"]["type"] == "content_block_delta"
    ]
    assert deltas == ["Hi ", "the", "re!"]

    (call,) = model_stub.model_calls()  # no hidden title-generation call
    assert (call.path, call.query) == ("/v1/messages", {"beta": "true"})
    assert call.headers["x-api-key"] == STUB_API_KEY
    assert call.headers["user-agent"].startswith("claude-cli/2.1.197 ")
    assert "claude-code-20250219" in call.headers["anthropic-beta"]
    body = call.body
    assert body["stream"] is True
    assert body["model"] == real_claude.model
    assert body["tools"] == []
    system = [block["text"] for block in body["system"]]
    assert system[0].startswith("x-anthropic-billing-header: ")
    assert "cc_entrypoint=sdk-cli;" in system[0]
    assert system[-1] == "You are STUB-SYSTEM."
    (message,) = body["messages"]
    assert message["role"] == "user"
    assert message["content"][-1]["text"].startswith("say hi\n@stub ")
    assert "user_id" in body["metadata"]


async def test_real_claude_gives_up_at_once_when_upstream_says_do_not_retry(
    real_claude: ClaudeSetup, model_stub: ModelStub
) -> None:
    """Without ``x-should-retry: false`` claude retries a 429 for minutes (FINDINGS.md);
    with it, the turn ends with an error result after one upstream call."""
    model_stub.push(Reply(error=429, retry_after=30, should_retry=False))
    argv = real_claude.stream_json_argv()
    async with open_json_lines_process(argv, env=real_claude.env, cwd=real_claude.cwd) as claude:
        with trio.fail_after(BOOT_AND_TURN):
            await claude.send(user_line("hi"))
            turn = await claude.receive_until(is_result)
    result = turn[-1]
    assert result["is_error"] is True
    assert result["api_error_status"] == 429
    assert "model stub: scripted HTTP 429" in result["result"]
    assert not [m for m in turn if m.get("subtype") == "api_retry"]
    assert len(model_stub.model_calls()) == 1


async def test_real_codex_app_server_turn(real_codex: CodexSetup, model_stub: ModelStub) -> None:
    argv = real_codex.app_server_argv()
    async with open_json_lines_process(argv, env=real_codex.env, cwd=real_codex.cwd) as codex:
        with trio.fail_after(BOOT_AND_TURN):
            await codex.send(
                {
                    "id": 1,
                    "method": "initialize",
                    "params": {"clientInfo": {"name": "t", "version": "0"}},
                }
            )
            await codex.receive_until(lambda m: m.get("id") == 1)
            await codex.send({"method": "initialized"})
            await codex.send({"id": 2, "method": "thread/start", "params": {"ephemeral": True}})
            started = await codex.receive_until(lambda m: m.get("id") == 2)
            thread_id = started[-1]["result"]["thread"]["id"]
            prompt = "say hi\n" + directive(text="Hello codex.", chunk_chars=4, thinking="hm")
            await codex.send(
                {
                    "id": 3,
                    "method": "turn/start",
                    "params": {"threadId": thread_id, "input": [{"type": "text", "text": prompt}]},
                }
            )
            turn = await codex.receive_until(lambda m: m.get("method") == "turn/completed")

    assert turn[-1]["params"]["turn"]["status"] == "completed"
    deltas = [m["params"]["delta"] for m in turn if m.get("method") == "item/agentMessage/delta"]
    assert "".join(deltas) == "Hello codex."
    assert len(deltas) == 3
    assert any(m.get("method") == "item/reasoning/summaryTextDelta" for m in turn)

    (call,) = model_stub.model_calls()
    assert call.path == "/v1/responses"
    assert call.headers["authorization"] == "Bearer sk-stub"
    body = call.body
    assert (body["model"], body["stream"], body["store"]) == ("gpt-stub", True, False)
    assert call.last_user_text == prompt
    roles = [item.get("role") for item in body["input"]]
    assert roles[0] == "developer"  # codex's own system prompt; ``instructions`` is empty
    assert "You are a coding agent running in the Codex CLI" in call.system_text
    assert json.loads(call.headers["x-codex-turn-metadata"])["model"] == "gpt-stub"
