"""Several requests on one codex worker at once; both backends side by side.

N concurrent HTTP requests on ONE app-server (``workers=1, threads_per_worker=4``) each get
their own answer, and -- on the real codex -- overlap at the model stub. With the fake
claude and the fake codex served together, the model name routes each request,
``/v1/models`` lists both backends and an unknown model gets a 404 that lists what exists.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from clibridge._supervisor import FAKE_CLAUDE_COMMAND
from clibridge.testing.model_stub import ModelStub
from clibridge.testing.realcli import CodexSetup

from .conftest import BOUND, E2EServer, open_e2e_server, real_codex_settings

N = 4


async def concurrent_chats(server: E2EServer, model: str, prompt_for: Any) -> dict[int, str]:
    results: dict[int, str] = {}

    async def one(client: httpx.AsyncClient, i: int) -> None:
        body = {"model": model, "messages": [{"role": "user", "content": prompt_for(i)}]}
        response = await client.post("/v1/chat/completions", json=body)
        assert response.status_code == 200, response.text
        choice = response.json()["choices"][0]
        assert choice["finish_reason"] == "stop"
        results[i] = choice["message"]["content"]

    with trio.fail_after(BOUND):
        async with server.client() as client, trio.open_nursery() as nursery:
            for i in range(N):
                nursery.start_soon(one, client, i)
    return results


async def test_concurrent_requests_share_one_fake_codex_worker(tmp_path: Path) -> None:
    def slow(i: int) -> str:
        fields = {"reply": f"answer {i}", "chunk_chars": 2, "chunk_delay": 0.05}
        return f"@fake {json.dumps(fields)}\nq{i}"

    async with open_e2e_server(tmp_path, backend="codex") as server:
        results = await concurrent_chats(server, "gpt-5.5", slow)
        assert results == {i: f"answer {i}" for i in range(N)}
        stats = await server.assert_full_capacity(workers=1)
        assert stats["served"] == N and stats["permits_total"] == N
        # one app-server process served all of them
        codex_pids = {f["pid"] for f in server.facts() if "argv" in f}
        assert len(codex_pids) == 1
        assert len(server.sent("thread/start")) == N


@pytest.mark.realcli
async def test_concurrent_requests_overlap_on_one_real_codex_worker(
    real_codex: CodexSetup, model_stub: ModelStub, tmp_path: Path
) -> None:
    def slow(i: int) -> str:
        fields = {"text": f"answer {i}", "chunk_chars": 2, "chunk_delay": 0.05}
        return f"@stub {json.dumps(fields)}\nq{i}"

    async with open_e2e_server(
        tmp_path / "srv", backend="codex", **real_codex_settings(real_codex)
    ) as server:
        results = await concurrent_chats(server, "gpt-stub", slow)
        assert results == {i: f"answer {i}" for i in range(N)}
        stats = await server.assert_full_capacity(workers=1)
        assert stats["served"] == N and stats["restarts"] == 0
    assert model_stub.statistics().max_in_flight >= 2
    assert len(model_stub.model_calls()) == N


async def test_both_backends_route_by_model_and_unknown_models_get_404(tmp_path: Path) -> None:
    async with (
        open_e2e_server(tmp_path, backend="codex", command=FAKE_CLAUDE_COMMAND) as server,
        server.client() as client,
    ):
        with trio.fail_after(BOUND):
            listed = (await client.get("/v1/models")).json()["data"]
            ids = {entry["id"] for entry in listed}
            assert {"gpt-5.5", "claude-sonnet-4-5"} <= ids, listed
            for model, reply in (("claude-sonnet-4-5", "from claude"), ("gpt-5.5", "from codex")):
                body = {
                    "model": model,
                    "messages": [{"role": "user", "content": f'@fake {{"reply": "{reply}"}}\nhi'}],
                }
                response = await client.post("/v1/chat/completions", json=body)
                assert response.status_code == 200, response.text
                assert response.json()["choices"][0]["message"]["content"] == reply
            claude, codex = await server.stats("claude"), await server.stats("codex")
            # claude parks a finished conversation: its lease counts as served when released
            assert (claude["served"], codex["served"]) == (1, 1)
            # the codex fake got exactly the codex request
            assert [t["params"]["model"] for t in server.sent("thread/start")] == ["gpt-5.5"]

            bad = {"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]}
            response = await client.post("/v1/chat/completions", json=bad)
            assert response.status_code == 404
            message = response.json()["error"]["message"]
            assert "no-such-model" in message and "gpt-5.5" in message
            assert "claude-sonnet-4-5" in message
            anth = await client.post(
                "/v1/messages",
                json={**bad, "max_tokens": 10},
                headers={"anthropic-version": "2023-06-01"},
            )
            assert anth.status_code == 404
            assert anth.json()["type"] == "error" and "gpt-5.5" in anth.json()["error"]["message"]
