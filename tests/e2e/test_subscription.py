"""The subscription window each CLI reports shows in ``/v1/stats`` and crosses a threshold
with one warning (clibridge._usage), on the fake CLIs scripted as the real ones behave:

* the fake claude sends a ``rate_limit_event`` (the shape recorded from the pinned claude:
  tests/testing/samples/claude_rate_limit_event.ndjson) before a turn's result;
* the fake codex answers ``account/rateLimits/read`` at boot and sends
  ``account/rateLimits/updated`` in a turn (both checked against the app-server schema).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from clibridge.testing.codex_schema import WireChecker, load_schema
from clibridge.testing.model_stub import ModelStub, directive
from tests.realcli.test_rate_limit_event import WINDOW_RESET_IN, ratelimit_headers

from .conftest import BOUND, CODEX_MODEL, CODEX_POOL, FAST_POOL, MODEL, E2EServer, open_e2e_server

SAMPLE = Path(__file__).parents[1] / "testing" / "samples" / "claude_rate_limit_event.ndjson"


async def ask(server: E2EServer, model: str, directive: dict[str, Any]) -> None:
    prompt = f"@fake {json.dumps(directive)}\nhi"
    async with server.client() as client:
        r = await client.post(
            "/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": prompt}]},
        )
    assert r.status_code == 200, r.text


async def windows(server: E2EServer, backend: str) -> dict[str, Any]:
    sub: dict[str, Any] = (await server.stats(backend))["subscription"]
    return sub


def recorded_infos() -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
    return [
        e["msg"]["rate_limit_info"] for e in lines if e["msg"].get("type") == "rate_limit_event"
    ]


async def test_claude_window_and_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="clibridge.usage")
    first, warning = recorded_infos()  # what the real claude sent: allowed, then 95 % used
    reset = warning["resetsAt"]
    pool = attrs.evolve(FAST_POOL, usage_warning=90.0)
    async with open_e2e_server(tmp_path, pool=pool) as server:
        with trio.fail_after(BOUND):
            await ask(server, MODEL, {"rate_limit_info": first})
            sub = await windows(server, "claude")
            assert sub["windows"]["five_hour"]["status"] == "allowed"
            assert sub["windows"]["five_hour"]["used_percent"] is None  # not said yet
            assert sub["windows"]["five_hour"]["resets_at"] == reset
            assert sub["warnings"] == 0

            await ask(server, MODEL, {"rate_limit_info": warning})
            sub = await windows(server, "claude")
            assert sub["windows"]["five_hour"]["used_percent"] == 95.0
            assert sub["warn_percent"] == 90.0
            assert sub["warnings"] == 1
            # above the threshold still: no second warning; used up: 100 %
            await ask(server, MODEL, {"rate_limit_info": {**warning, "utilization": 0.97}})
            await ask(server, MODEL, {"rate_limit_info": {**warning, "status": "rejected"}})
            sub = await windows(server, "claude")
            assert sub["windows"]["five_hour"]["used_percent"] == 100.0
            assert sub["warnings"] == 1
            await server.assert_clean()
    warnings = [r.getMessage() for r in caplog.records if r.name == "clibridge.usage"]
    assert len(warnings) == 1, warnings
    assert "claude subscription: five_hour window 95% used (warning at 90%)" in warnings[0]


def snapshot(primary: int, secondary: int) -> dict[str, Any]:
    now = int(time.time())
    return {
        "limitId": "codex",
        "limitName": None,
        "primary": {"usedPercent": primary, "windowDurationMins": 300, "resetsAt": now + 3600},
        "secondary": {
            "usedPercent": secondary,
            "windowDurationMins": 10080,
            "resetsAt": now + 86400,
        },
        "credits": None,
        "planType": "plus",
    }


def test_fake_codex_rate_limit_messages_fit_the_schema() -> None:
    """What the fake codex sends for the subscription window is what the real one may."""
    snap = snapshot(30, 10)
    checker = WireChecker()
    checker.client_sent({"id": 3, "method": "account/rateLimits/read", "params": {}})
    checker.server_sent(
        {"id": 3, "result": {"rateLimits": snap, "rateLimitsByLimitId": {"codex": snap}}}
    )
    notification = {"method": "account/rateLimits/updated", "params": {"rateLimits": snap}}
    assert load_schema().validate_message("server", notification) == "notification"


async def test_codex_window_read_at_boot_then_updated(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="clibridge.usage")
    async with open_e2e_server(
        tmp_path,
        backend="codex",
        pool=CODEX_POOL,
        scenario={"default": {"rate_limits": snapshot(30, 10)}},
    ) as server:
        with trio.fail_after(BOUND):
            await ask(server, CODEX_MODEL, {})
            await server.wait_stats(lambda s: "primary" in s["subscription"]["windows"])
            sub = await windows(server, "codex")
            assert sub["windows"]["primary"]["used_percent"] == 30.0
            assert sub["windows"]["primary"]["window_minutes"] == 300
            assert sub["windows"]["secondary"]["used_percent"] == 10.0
            assert sub["warnings"] == 0
            assert len(server.sent("account/rateLimits/read")) >= 1

            await ask(server, CODEX_MODEL, {"rate_limits": snapshot(85, 12)})
            sub = await windows(server, "codex")
            assert sub["windows"]["primary"]["used_percent"] == 85.0
            assert sub["warnings"] == 1  # default threshold: 80 %
            await server.assert_clean()
    warnings = [r.getMessage() for r in caplog.records if r.name == "clibridge.usage"]
    assert len(warnings) == 1 and "codex subscription: primary window 85% used" in warnings[0]


@pytest.mark.realcli
async def test_real_claude_window_through_clibridge(
    tmp_path: Path, claude_binary: Path, model_stub: ModelStub
) -> None:
    """The pinned claude, logged in with a (stub) subscription token, reads the stub's
    ``anthropic-ratelimit-unified-*`` headers; its rate_limit_event reaches /v1/stats."""
    reset = int(time.time()) + WINDOW_RESET_IN
    async with open_e2e_server(
        tmp_path,
        claude={"pass_env": ("ANTHROPIC_BASE_URL",), "login_hint": "claude setup-token"},
        command=(str(claude_binary),),
        environ={
            "ANTHROPIC_BASE_URL": model_stub.base_url,
            "CLAUDE_CODE_OAUTH_TOKEN": "sk-ant-oat01-stub-token",
        },
        fake=False,
    ) as server:
        with trio.fail_after(BOUND):
            for utilization in (0.35, 0.95):
                headers = ratelimit_headers(utilization, reset)
                prompt = f"hi\n{directive(text='ok', headers=headers)}"
                async with server.client() as client:
                    r = await client.post(
                        "/v1/chat/completions",
                        json={"model": MODEL, "messages": [{"role": "user", "content": prompt}]},
                    )
                assert r.status_code == 200, r.text
                assert r.json()["choices"][0]["message"]["content"] == "ok"
            sub = await windows(server, "claude")
    window = sub["windows"]["five_hour"]
    assert (window["status"], window["used_percent"], window["resets_at"]) == (
        "allowed_warning",
        95.0,
        reset,
    )
    assert sub["warnings"] == 1
