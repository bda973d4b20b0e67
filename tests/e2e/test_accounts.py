"""Several claude accounts in one server, on the fake CLI, through the official SDKs.

Three accounts, each with its own token: the fake claude answers each login as the
scenario's ``"logins"`` says -- ``limited`` gets 429s, ``expired`` 401s, ``ok`` answers. A
request that meets a refusing account runs again on the next one; the client sees one
answer; /readyz and /v1/stats show who is cooling down and why; tokens appear nowhere.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import anthropic
import attrs
import httpx
import openai
import pytest

from clibridge._config import AccountConfig

from .conftest import FAST_POOL, MODEL, open_e2e_server

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:Async generator:ResourceWarning"),
]

TOKENS = {"limited": "tok-limited-SECRET", "expired": "tok-expired-SECRET", "ok": "tok-ok-SECRET"}
SCENARIO = {
    "default": {"reply": "served"},
    "logins": {
        TOKENS["limited"]: {"api_error": 429, "api_retries": 2, "retry_delay_ms": 50},
        TOKENS["expired"]: {
            "api_error": 401,
            "api_retries": 1000000,
            "retry_delay_ms": 200,
            "api_error_then": "hang",
        },
    },
}
POOL = attrs.evolve(FAST_POOL, workers=1, spares=1, rate_limit_cooldown=40.0, login_recheck=25.0)


def accounts(*names: str) -> tuple[AccountConfig, ...]:
    return tuple(AccountConfig(name, token=TOKENS[name]) for name in names)


def by_name(states: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in states}


async def test_refusing_accounts_cool_down_and_the_request_runs_on_the_healthy_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with (
        open_e2e_server(
            tmp_path,
            scenario=SCENARIO,
            pool=POOL,
            claude={"accounts": accounts("limited", "expired", "ok")},
        ) as server,
        openai.AsyncOpenAI(base_url=server.v1, api_key="x", max_retries=0) as oai,
        anthropic.AsyncAnthropic(base_url=server.base_url, api_key="x", max_retries=0) as ant,
    ):
        # all idle: the first account in order takes it, refuses, and so does the second
        first = await oai.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hello"}]
        )
        assert first.choices[0].message.content == "served"
        stats = await server.stats()
        states = by_name(stats["accounts"])
        assert states["limited"]["state"] == "rate_limited"
        assert states["limited"]["cooling_down_for"] > 35  # rate_limit_cooldown, at least
        assert "429" in states["limited"]["why"] or "rate" in states["limited"]["why"]
        assert states["expired"]["state"] == "login_expired"
        assert 20 < states["expired"]["cooling_down_for"] <= 25  # login_recheck
        assert states["ok"]["state"] == "healthy" and states["ok"]["stats"]["served"] == 1
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert [a["state"] for a in ready.json()["accounts"]["claude"]] == [
            "rate_limited",
            "login_expired",
            "healthy",
        ]
        # a follow-up continues the conversation parked on its account
        follow = await oai.chat.completions.create(
            model=MODEL,
            messages=[
                {"role": "user", "content": "hello"},
                {"role": "assistant", "content": "served"},
                {"role": "user", "content": "and then?"},
            ],
        )
        assert follow.choices[0].message.content == "served"
        assert (await server.stats())["resume_hits"] == 1
        # the next requests go straight to ok: no account is asked again while it cools
        second = await ant.messages.create(
            model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "again"}]
        )
        assert second.content[0].text == "served"  # type: ignore[union-attr]
        stats = await server.stats()
        states = by_name(stats["accounts"])
        assert states["ok"]["stats"]["served"] == 3
        # the refusing accounts had the first request only (a refused turn counts as served)
        assert states["limited"]["stats"]["served"] == states["expired"]["stats"]["served"] == 1
        assert states["limited"]["cooldowns"] == states["expired"]["cooldowns"] == 1
        await server.assert_clean()
        bodies = json.dumps(stats) + ready.text
    # every account ran in its own spawn home
    homes = {
        fact["env"]["HOME"]
        for fact in server.facts()
        if "env" in fact and "fake_claude" in " ".join(fact["argv"])
    }
    assert {Path(h).parent.parent.name for h in homes} == {"limited", "expired", "ok"}
    # tokens: never in the statistics, readiness or logs
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for token in TOKENS.values():
        assert token not in bodies and token not in logged
    assert "cooling down" in logged


async def test_when_every_account_refuses_the_client_gets_429_with_the_soonest_retry_after(
    tmp_path: Path,
) -> None:
    async with (
        open_e2e_server(
            tmp_path,
            scenario=SCENARIO,
            pool=POOL,
            claude={"accounts": accounts("limited", "expired")},
        ) as server,
        openai.AsyncOpenAI(base_url=server.v1, api_key="x", max_retries=0) as oai,
        anthropic.AsyncAnthropic(base_url=server.base_url, api_key="x", max_retries=0) as ant,
    ):
        with pytest.raises(openai.RateLimitError) as caught:
            await oai.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hello"}]
            )
        # expired's login is checked again first (25 s): the soonest any account serves
        assert caught.value.response.headers["retry-after"] == "25"
        assert "every claude account" in caught.value.message
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert "rate limited" in ready.json()["reason"]
        # the Anthropic dialect: the same 429, at once
        with pytest.raises(anthropic.RateLimitError):
            await ant.messages.create(
                model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "hi"}]
            )
        await server.assert_clean()


CODEX_SCENARIO = {
    "default": {"reply": "served"},
    "logins": {
        "acct-limited": {
            "error_notification": "usageLimitExceeded: You've hit your usage limit. "
            "Try again in 90 minutes."
        },
        "acct-expired": {"api_error": 401},
    },
}


async def test_codex_accounts_each_with_its_own_login(tmp_path: Path) -> None:
    """Each codex account's app-server runs with the CODEX_HOME its `clibridge login codex
    --account NAME` wrote; the one whose usage limit is hit rests for the 90 minutes codex
    named, the logged-out one for login_recheck, and the third serves."""
    for name in ("limited", "expired", "ok"):
        home = tmp_path / "state" / "accounts" / name / "codex" / "home"
        home.mkdir(parents=True, mode=0o700)
        (home / "auth.json").write_text(json.dumps({"tokens": {"account_id": f"acct-{name}"}}))
    async with (
        open_e2e_server(
            tmp_path,
            backend="codex",
            scenario=CODEX_SCENARIO,
            pool=attrs.evolve(POOL, spares=0),
            codex_settings={
                "accounts": tuple(AccountConfig(n) for n in ("limited", "expired", "ok"))
            },
        ) as server,
        openai.AsyncOpenAI(base_url=server.v1, api_key="x", max_retries=0) as oai,
    ):
        first = await oai.responses.create(model="gpt-5", input="hello")
        assert first.output_text == "served"
        states = by_name((await server.stats())["accounts"])
        assert states["limited"]["state"] == "rate_limited"
        assert states["limited"]["cooling_down_for"] > 89 * 60  # what codex announced
        assert states["expired"]["state"] == "login_expired"
        assert states["ok"]["state"] == "healthy"
        await server.assert_clean()
