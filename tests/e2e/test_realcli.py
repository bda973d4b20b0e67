"""The whole server on the pinned real claude, pointed at the loopback model stub.

What the stub records is what the model saw: warm reuse across system prompts, ``/clear``
isolation, one upstream call per request, 401 / 429 fail-fast, and the upstream connection
closing when the HTTP client hangs up mid-stream.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from clibridge.testing.model_stub import ModelStub

from .conftest import FAST_POOL, MODEL, E2EServer, open_raw, open_real_server, read_until

pytestmark = pytest.mark.realcli

CHAT = "/v1/chat/completions"


def chat(text: str, system: str | None = None, *, stream: bool = False) -> dict[str, Any]:
    messages = [{"role": "user", "content": text}]
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    return {"model": MODEL, "stream": stream, "messages": messages}


async def post(server: E2EServer, body: dict[str, Any], path: str = CHAT) -> Any:
    async with server.client() as client:
        return await client.post(path, json=body)


def spawns(stats: dict[str, Any]) -> int:
    """Worker ids are handed out in order: the highest one seen is the number of spawns."""
    ids: list[int] = [w["id"] for w in stats["workers"]]
    return max(ids)


async def test_warm_reuse_clear_isolation_one_call_each(
    claude_binary: Path, model_stub: ModelStub, tmp_path: Path
) -> None:
    async with open_real_server(tmp_path, claude_binary, model_stub) as server:
        with trio.fail_after(90):
            systems = ["You are Alpha.", "You are Beta."] * 3
            for i, system in enumerate(systems):
                response = await post(server, chat(f"secret-{i} question", system))
                assert response.status_code == 200, response.text
                assert response.json()["choices"][0]["message"]["content"] == (
                    "Hello from the model stub."
                )
            stats = await server.assert_clean()
            calls = model_stub.model_calls()
            # exactly one upstream call per request (no title call, none for /clear)
            assert len(calls) == len(systems)
            assert spawns(stats) < len(systems)
            assert stats["served"] == len(systems)
            for i, (system, call) in enumerate(zip(systems, calls, strict=True)):
                assert call.system_text.endswith(system)
                raw = call.raw_body.decode()
                assert f"secret-{i} question" in raw
                # /clear isolation: nothing of any earlier request reached the model
                for earlier in range(i):
                    assert f"secret-{earlier} " not in raw, (i, earlier)
                assert len(call.body["messages"]) == 1


async def test_401_fails_fast_with_the_fix(
    claude_binary: Path, model_stub: ModelStub, tmp_path: Path
) -> None:
    async with open_real_server(tmp_path, claude_binary, model_stub) as server:
        with trio.fail_after(60):
            await server.wait_stats(lambda s: s["idle"] >= 1, within=30)
            t0 = trio.current_time()
            response = await post(server, chat("@stub:401\nhi"))
            elapsed = trio.current_time() - t0
            assert response.status_code == 503, response.text
            assert "claude setup-token" in response.json()["error"]["message"]
            assert "retry-after" in response.headers
            # the CLI alone would retry a 401 for minutes
            assert elapsed < 10
            await server.assert_clean()
            await server.assert_serves()


async def test_429_fails_fast_with_retry_after(
    claude_binary: Path, model_stub: ModelStub, tmp_path: Path
) -> None:
    async with open_real_server(tmp_path, claude_binary, model_stub) as server:
        with trio.fail_after(60):
            await server.wait_stats(lambda s: s["idle"] >= 1, within=30)
            t0 = trio.current_time()
            body = chat('@stub {"error": 429, "retry_after": 1}\nhi')
            response = await post(server, body)
            elapsed = trio.current_time() - t0
            assert response.status_code == 429, response.text
            assert float(response.headers["retry-after"]) > 0
            assert elapsed < 20
            # the CLI retried at most retry_attempts (2) times before clibridge gave up
            assert 1 <= len(model_stub.model_calls()) <= 3
            await server.assert_clean()
            await server.assert_serves()


async def test_client_disconnect_interrupts_the_upstream_call(
    claude_binary: Path, model_stub: ModelStub, tmp_path: Path
) -> None:
    pool = attrs.evolve(FAST_POOL, interrupt_grace=3.0)
    async with open_real_server(tmp_path, claude_binary, model_stub, pool=pool) as server:
        with trio.fail_after(60):
            await server.wait_stats(lambda s: s["idle"] >= 1, within=30)
            # ~20 s of upstream streaming if nobody interrupts it
            slow = json.dumps({"text": "y" * 400, "chunk_chars": 1, "chunk_delay": 0.05})
            stream = await open_raw(server, chat(f"@stub {slow}\nhi", stream=True))
            await read_until(stream, b'"content":"y')
            assert model_stub.statistics().in_flight == 1
            await stream.aclose()
            t0 = trio.current_time()
            # the client is gone: claude gets `interrupt` and drops its upstream request
            with trio.fail_after(5):
                await model_stub.wait_for_idle()
            assert trio.current_time() - t0 < 5
            stats = await server.assert_clean()
            assert stats["in_flight"] == stats["parked"]
            await server.assert_serves()
            assert len(model_stub.model_calls()) == 2
