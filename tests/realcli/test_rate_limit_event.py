"""What the pinned real claude reports about its subscription window.

claude reads Anthropic's ``anthropic-ratelimit-unified-*`` response headers and, logged in
with a subscription (an OAuth token; with an API key it sends nothing), writes a
``rate_limit_event`` line in stream-json whenever that information changes: inside the
turn, after the message and before the ``result``. Its ``rate_limit_info`` has ``status``,
``resetsAt``, ``rateLimitType`` -- and ``utilization`` (a fraction) only once the CLI
judges the share worth a warning (``allowed_warning``: much used early in the window).

The model stub sends the headers (``Reply.headers``). With ``CLIBRIDGE_RECORD_SAMPLES=1``
the test rewrites ``tests/testing/samples/claude_rate_limit_event.ndjson`` (the fake
claude's ``rate_limit_event`` is checked against it in tests/backends).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from clibridge.testing.model_stub import ModelStub, directive
from clibridge.testing.realcli import ClaudeSetup, CodexSetup, open_json_lines_process

from .test_real_cli_smoke import BOOT_AND_TURN, answers, control, is_result, user_line

pytestmark = pytest.mark.realcli

SAMPLE = Path(__file__).parents[1] / "testing" / "samples" / "claude_rate_limit_event.ndjson"
#: the headers of a subscription at 35 % (first turn), then 95 % (second turn) of its
#: five-hour window, half an hour into it; the weekly window at 42 %
WINDOW_RESET_IN = 4 * 3600 + 1800


def ratelimit_headers(utilization: float, reset: int) -> dict[str, str]:
    return {
        "anthropic-ratelimit-unified-status": "allowed",
        "anthropic-ratelimit-unified-reset": str(reset),
        "anthropic-ratelimit-unified-representative-claim": "five_hour",
        "anthropic-ratelimit-unified-5h-utilization": str(utilization),
        "anthropic-ratelimit-unified-5h-reset": str(reset),
        "anthropic-ratelimit-unified-7d-utilization": "0.42",
        "anthropic-ratelimit-unified-7d-reset": str(reset + 3 * 86400),
        "anthropic-ratelimit-unified-fallback": "available",
        "anthropic-ratelimit-unified-overage-status": "rejected",
        "anthropic-ratelimit-unified-overage-disabled-reason": "org_level_disabled",
    }


def subscription_env(setup: ClaudeSetup) -> ClaudeSetup:
    """``setup`` logged in with a (stub) OAuth token instead of an API key."""
    env = {k: v for k, v in setup.env.items() if k != "ANTHROPIC_API_KEY"}
    env["CLAUDE_CODE_OAUTH_TOKEN"] = "sk-ant-oat01-stub-token"
    return attrs.evolve(setup, env=env)


async def two_turns(setup: ClaudeSetup, reset: int) -> list[tuple[str, Any]]:
    """(direction, message) of a boot and two turns."""
    lines: list[tuple[str, Any]] = []
    argv = setup.stream_json_argv()
    async with open_json_lines_process(argv, env=setup.env, cwd=setup.cwd) as claude:

        async def send(msg: Any) -> None:
            lines.append(("in", msg))
            await claude.send(msg)

        with trio.fail_after(BOOT_AND_TURN * 2):
            await send(control("ready", "mcp_status"))
            lines += [("out", m) for m in await claude.receive_until(answers("ready"))]
            await send(control("init", "initialize", systemPrompt="You are STUB-SYSTEM."))
            lines += [("out", m) for m in await claude.receive_until(answers("init"))]
            for n, utilization in enumerate((0.35, 0.95)):
                headers = ratelimit_headers(utilization, reset)
                await send(user_line(f"turn {n}\n" + directive(text="ok", headers=headers)))
                lines += [("out", m) for m in await claude.receive_until(is_result)]
    return lines


def events(lines: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    return [m for d, m in lines if d == "out" and m.get("type") == "rate_limit_event"]


async def test_real_claude_reports_its_subscription_window(
    real_claude: ClaudeSetup, model_stub: ModelStub
) -> None:
    reset = int(time.time()) + WINDOW_RESET_IN
    lines = await two_turns(subscription_env(real_claude), reset)
    infos = [e["rate_limit_info"] for e in events(lines)]
    assert [(i["status"], i["rateLimitType"], i["resetsAt"]) for i in infos] == [
        ("allowed", "five_hour", reset),
        ("allowed_warning", "five_hour", reset),
    ]
    assert "utilization" not in infos[0]
    assert infos[1]["utilization"] == 0.95
    # each inside its turn: right before the result
    outs = [m for d, m in lines if d == "out"]
    for event in events(lines):
        assert outs[outs.index(event) + 1]["type"] == "result"
    if os.environ.get("CLIBRIDGE_RECORD_SAMPLES"):
        home = str(real_claude.home)
        text = "".join(
            json.dumps({"dir": d, "msg": m}).replace(home, "$HOME") + "\n" for d, m in lines
        )
        SAMPLE.write_text(text)


async def test_real_claude_with_an_api_key_reports_no_window(
    real_claude: ClaudeSetup, model_stub: ModelStub
) -> None:
    """The same headers, an API-key login: no rate_limit_event (nothing to show)."""
    lines = await two_turns(real_claude, int(time.time()) + WINDOW_RESET_IN)
    assert events(lines) == []
    assert sum(1 for d, m in lines if d == "out" and is_result(m)) == 2


async def test_real_codex_with_an_api_key_has_no_window(
    real_codex: CodexSetup, model_stub: ModelStub
) -> None:
    """``account/rateLimits/read`` needs a ChatGPT login: with the stub's API key the pinned
    codex answers an error (the fake codex answers the same without ``rate_limits``)."""
    argv = real_codex.app_server_argv()
    async with open_json_lines_process(argv, env=real_codex.env, cwd=real_codex.cwd) as codex:
        with trio.fail_after(BOOT_AND_TURN):
            hello = {"clientInfo": {"name": "clibridge-test", "version": "0"}}
            await codex.send({"id": 1, "method": "initialize", "params": hello})
            await codex.receive_until(lambda m: m.get("id") == 1)
            await codex.send({"method": "initialized"})
            await codex.send({"id": 2, "method": "account/rateLimits/read", "params": {}})
            answer = (await codex.receive_until(lambda m: m.get("id") == 2))[-1]
    assert answer["error"] == {
        "code": -32600,
        "message": "codex account authentication required to read rate limits",
    }
