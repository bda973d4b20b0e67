"""Two claude accounts on the pinned real claude, pointed at the loopback model stub, which
rate-limits one account's login.

Each account's workers get their own ``CLAUDE_CODE_OAUTH_TOKEN``; the real CLI sends it as
a bearer token, and the stub answers 429 to one of them (:attr:`ModelStub.by_key`). The
request that meets the limited account runs again on the other one; the limited account
cools down; the stub saw each token only from its own account.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import attrs
import pytest
import trio

from clibridge._config import AccountConfig
from clibridge.testing.model_stub import ModelStub, Reply

from .conftest import FAST_POOL, MODEL, open_e2e_server

pytestmark = pytest.mark.realcli

LIMITED, OK = "tok-limited-SECRET", "tok-ok-SECRET"


async def test_the_real_claude_moves_from_a_rate_limited_account_to_the_other(
    claude_binary: Path, model_stub: ModelStub, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    model_stub.by_key[LIMITED] = Reply(error=429, retry_after=1)
    pool = attrs.evolve(FAST_POOL, workers=1, spares=1, rate_limit_cooldown=120.0)
    async with open_e2e_server(
        tmp_path,
        pool=pool,
        claude={
            # the base URL only: no ANTHROPIC_API_KEY, so each worker logs in with its token
            "pass_env": ("ANTHROPIC_BASE_URL",),
            "accounts": (
                AccountConfig("limited", token_env="LIMITED_TOKEN"),
                AccountConfig("ok", token_env="OK_TOKEN"),
            ),
        },
        command=(str(claude_binary),),
        environ={
            "ANTHROPIC_BASE_URL": model_stub.base_url,
            "LIMITED_TOKEN": LIMITED,
            "OK_TOKEN": OK,
        },
        fake=False,
    ) as server:
        with trio.fail_after(90):
            async with server.client() as client:
                for text in ("first question", "second question"):
                    response = await client.post(
                        "/v1/chat/completions",
                        json={"model": MODEL, "messages": [{"role": "user", "content": text}]},
                    )
                    assert response.status_code == 200, response.text
                    assert response.json()["choices"][0]["message"]["content"] == (
                        "Hello from the model stub."
                    )
                stats = await server.stats()
                ready = await client.get("/readyz")
            states = {a["name"]: a for a in stats["accounts"]}
            assert states["limited"]["state"] == "rate_limited"
            assert states["limited"]["cooling_down_for"] > 100
            assert states["ok"]["state"] == "healthy"
            assert ready.status_code == 200
            await server.assert_clean()
    calls = model_stub.model_calls()
    tokens = [c.headers.get("authorization", "").removeprefix("Bearer ") for c in calls]
    # the limited login was asked once (the CLI's own retries aside), then only ok's
    first_ok = tokens.index(OK)
    assert set(tokens[:first_ok]) == {LIMITED} and set(tokens[first_ok:]) == {OK}
    assert sum(1 for c in calls if c.last_user_text.endswith("second question")) == 1
    shown = json.dumps(stats) + ready.text + "\n".join(r.getMessage() for r in caplog.records)
    assert LIMITED not in shown and OK not in shown
