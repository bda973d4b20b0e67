"""Named-key quotas are exact under concurrency: the official SDKs, many requests at once,
against the whole server on the fake CLI; exactly the quota is admitted, the rest get the
SDK's RateLimitError (429) naming the limit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anthropic
import attrs
import openai
import pytest
import trio

from clibridge._cli import main
from clibridge._keys import KeyStore, Quotas, today

from .conftest import BOUND, FAST_POOL, MODEL, open_e2e_server

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    # Why: openai's AsyncStream breaks out of its own SSE generators at ``[DONE]`` without
    # closing them; trio reports that at GC time (see test_sdks.py).
    pytest.mark.filterwarnings("ignore:Async generator:ResourceWarning"),
]

#: enough workers that an admitted request never waits for the pool
POOL = attrs.evolve(FAST_POOL, workers=3, spares=3, max_queue=16)


def add_key(tmp: Path, name: str, quotas: Quotas, *, admin: bool = False) -> str:
    store = KeyStore.open(tmp / "state")
    try:
        return store.add(name, quotas, admin=admin)
    finally:
        store.close()


def admin_headers(tmp: Path) -> dict[str, str]:
    """An admin key for the harness's own calls (/v1/stats)."""
    return {"Authorization": f"Bearer {add_key(tmp, 'ops', Quotas(), admin=True)}"}


def prompt(**fake: Any) -> str:
    return f"@fake {json.dumps({'reply': 'ok', **fake})}\nsay ok"


async def test_concurrency_quota_admits_exactly_n(tmp_path: Path) -> None:
    key = add_key(tmp_path, "three", Quotas(concurrency=3))
    headers = admin_headers(tmp_path)
    outcomes: list[str] = []
    refusals: list[tuple[str, str]] = []
    async with open_e2e_server(tmp_path, pool=POOL) as server:
        server.headers = headers
        await server.wait_stats(lambda s: s["idle"] == 3)
        async with (
            openai.AsyncOpenAI(api_key=key, base_url=server.v1, max_retries=0) as oai,
            anthropic.AsyncAnthropic(api_key=key, base_url=server.base_url, max_retries=0) as ant,
        ):
            slow = prompt(first_delay=2.0)

            async def one(i: int) -> None:
                try:
                    if i % 3 == 0:
                        msg = await ant.messages.create(
                            model=MODEL, max_tokens=50, messages=[{"role": "user", "content": slow}]
                        )
                        assert msg.stop_reason == "end_turn"
                    elif i % 3 == 1:
                        stream = await oai.chat.completions.create(
                            model=MODEL, messages=[{"role": "user", "content": slow}], stream=True
                        )
                        assert (
                            "".join(
                                [
                                    c.choices[0].delta.content or ""
                                    async for c in stream
                                    if c.choices
                                ]
                            )
                            == "ok"
                        )
                    else:
                        response = await oai.responses.create(model=MODEL, input=slow)
                        assert response.output_text == "ok"
                    outcomes.append("ok")
                except (openai.RateLimitError, anthropic.RateLimitError) as exc:
                    refusals.append((str(exc), exc.response.headers["Retry-After"]))
                    outcomes.append("429")

            with trio.fail_after(BOUND):
                async with trio.open_nursery() as nursery:
                    for i in range(12):
                        nursery.start_soon(one, i)
            assert sorted(outcomes) == ["429"] * 9 + ["ok"] * 3
            for message, retry_after in refusals:
                assert "concurrency quota is 3" in message and retry_after == "1"
            # all three units are back: three more at once are admitted
            outcomes.clear()
            with trio.fail_after(BOUND):
                async with trio.open_nursery() as nursery:
                    for i in range(3):
                        nursery.start_soon(one, i)
            assert outcomes == ["ok"] * 3
        await server.assert_clean()


async def test_rpm_quota_admits_exactly_n(tmp_path: Path) -> None:
    key = add_key(tmp_path, "five-a-minute", Quotas(rpm=5))
    other = add_key(tmp_path, "unlimited", Quotas())
    headers = admin_headers(tmp_path)
    results: dict[str, list[int]] = {"ok": [], "429": []}
    refusals: list[anthropic.RateLimitError] = []
    async with open_e2e_server(tmp_path, pool=POOL) as server:
        server.headers = headers
        async with anthropic.AsyncAnthropic(
            api_key=key, base_url=server.base_url, max_retries=0
        ) as ant:

            async def one(i: int) -> None:
                try:
                    await ant.messages.create(
                        model=MODEL, max_tokens=50, messages=[{"role": "user", "content": prompt()}]
                    )
                    results["ok"].append(i)
                except anthropic.RateLimitError as exc:
                    refusals.append(exc)
                    results["429"].append(i)

            with trio.fail_after(BOUND):
                async with trio.open_nursery() as nursery:
                    for i in range(15):
                        nursery.start_soon(one, i)
        assert (len(results["ok"]), len(results["429"])) == (5, 10)
        for refusal in refusals:
            assert "rpm quota is 5" in str(refusal)
            assert 1 <= int(refusal.response.headers["Retry-After"]) <= 60
            assert refusal.body is not None
        # the quota is the key's: another key is not limited by it
        async with openai.AsyncOpenAI(api_key=other, base_url=server.v1, max_retries=0) as oai:
            for _ in range(6):
                chat = await oai.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": prompt()}]
                )
                assert chat.choices[0].message.content == "ok"
        await server.assert_clean()


async def test_daily_tokens_count_and_survive_a_restart(tmp_path: Path) -> None:
    key = add_key(tmp_path, "budget", Quotas(daily_tokens=30))
    headers = admin_headers(tmp_path)
    ask = prompt(input_tokens=17, output_tokens=9)
    async with open_e2e_server(tmp_path) as server:
        server.headers = headers
        async with openai.AsyncOpenAI(api_key=key, base_url=server.v1, max_retries=0) as oai:
            for _ in range(2):  # 26 tokens, then 52: the second still starts under 30
                chat = await oai.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": ask}]
                )
                assert chat.usage is not None and chat.usage.total_tokens == 26
            with pytest.raises(openai.RateLimitError) as refused:
                await oai.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": ask}]
                )
        assert "used 52 of its 30 tokens" in str(refused.value)
        retry_after = int(refused.value.response.headers["Retry-After"])
        assert 1 <= retry_after <= 86400
        await server.assert_clean()
    # a new server on the same state dir knows today's count
    async with open_e2e_server(tmp_path) as server:
        server.headers = headers
        async with anthropic.AsyncAnthropic(
            api_key=key, base_url=server.base_url, max_retries=0
        ) as ant:
            with pytest.raises(anthropic.RateLimitError, match="used 52 of its 30 tokens"):
                await ant.messages.create(
                    model=MODEL, max_tokens=50, messages=[{"role": "user", "content": ask}]
                )
    store = KeyStore.open(tmp_path / "state")
    try:
        assert store.tokens_on(today()) == {"budget": 52}
    finally:
        store.close()


async def test_keys_command_against_a_running_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``clibridge keys add`` / ``set`` / ``revoke`` take effect on a running server (no
    restart)."""
    env = {"CLIBRIDGE_STATE_DIR": str(tmp_path / "state")}
    headers = admin_headers(tmp_path)
    async with open_e2e_server(tmp_path) as server:
        server.headers = headers
        assert main(["keys", "add", "late"], environ=env) == 0
        key = capsys.readouterr().out.strip()
        messages: Any = [{"role": "user", "content": prompt()}]
        async with openai.AsyncOpenAI(api_key=key, base_url=server.v1, max_retries=0) as oai:
            with trio.fail_after(10):
                while True:  # the server follows the file within poll_interval (0.5 s)
                    try:
                        await oai.chat.completions.create(model=MODEL, messages=messages)
                        break
                    except openai.AuthenticationError:
                        await trio.sleep(0.05)
            assert main(["keys", "set", "late", "--rpm", "1"], environ=env) == 0
            with trio.fail_after(10):
                while True:  # the same key, now held to one request a minute
                    try:
                        await oai.chat.completions.create(model=MODEL, messages=messages)
                    except openai.RateLimitError as exc:
                        limited = exc
                        break
                    await trio.sleep(0.05)
            assert "rpm quota is 1" in str(limited)
            assert main(["keys", "revoke", "late"], environ=env) == 0
            with trio.fail_after(10):
                while True:
                    try:
                        await oai.chat.completions.create(model=MODEL, messages=messages)
                    except openai.AuthenticationError as exc:
                        refused = exc
                        break
                    except openai.RateLimitError:
                        pass  # still the key's rpm quota, until the revoke is seen
                    await trio.sleep(0.05)
        assert "wrong API key" in str(refused)
        await server.assert_clean()
