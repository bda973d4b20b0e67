"""``/readyz`` per backend, and model names as the upstream APIs take them.

Regression (issue 14): ``/readyz`` said ``ready: true`` while claude was crash-looping and
codex was up; ``Sonnet`` and ``GPT-5.5-HIGH`` were 404; ``/v1/models`` carried no context
window or output limit.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anthropic
import attrs
import openai
import pytest
import trio

from clibridge._supervisor import FAKE_CLAUDE_COMMAND

from .conftest import BOUND, FAST_POOL, open_e2e_server

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:Async generator:ResourceWarning"),
]

#: a "claude" that dies at once, every time
BROKEN_CLAUDE = (sys.executable, "-c", "import sys; sys.stderr.write('no login\\n'); sys.exit(3)")


async def test_readyz_is_503_while_one_backend_is_down(tmp_path: Path) -> None:
    claude_pool = attrs.evolve(FAST_POOL, workers=1, spares=1, crash_loop_threshold=2)
    async with (
        open_e2e_server(
            tmp_path, backend="codex", command=BROKEN_CLAUDE, claude={"pool": claude_pool}
        ) as server,
        server.client() as client,
    ):
        with trio.fail_after(BOUND):
            while True:
                both = await client.get("/readyz")
                states = both.json()["backends"]
                if states["codex"]["ready"] and "crash-looping" in states["claude"]["reason"]:
                    break
                await trio.sleep(0.05)
            assert both.status_code == 503
            body = both.json()
            assert body["ready"] is False
            assert body["backends"]["codex"]["ready"] is True
            assert body["backends"]["claude"]["ready"] is False
            assert "crash-looping" in body["backends"]["claude"]["reason"]

            codex = await client.get("/readyz", params={"backend": "codex"})
            assert codex.status_code == 200
            assert codex.json()["backends"].keys() == {"codex"}
            claude = await client.get("/readyz", params={"backend": "claude"})
            assert claude.status_code == 503
            assert "retry-after" in claude.headers

            unknown = await client.get("/readyz", params={"backend": "tui"})
            assert unknown.status_code == 400
            assert "'tui' is not served here" in unknown.json()["error"]["message"]


async def test_readyz_is_200_when_every_backend_is_ready(tmp_path: Path) -> None:
    async with open_e2e_server(tmp_path, backend="codex", command=FAKE_CLAUDE_COMMAND) as server:
        async with server.client() as client:
            with trio.fail_after(BOUND):
                while True:
                    ready = await client.get("/readyz")
                    if ready.status_code == 200:
                        break
                    await trio.sleep(0.05)
        assert set(ready.json()["backends"]) == {"claude", "codex"}
        assert all(b["ready"] for b in ready.json()["backends"].values())


async def test_model_names_are_case_insensitive_and_listed_with_limits(tmp_path: Path) -> None:
    async with open_e2e_server(tmp_path, backend="codex", command=FAKE_CLAUDE_COMMAND) as server:
        with trio.fail_after(BOUND):
            async with (
                openai.AsyncOpenAI(api_key="unused", base_url=server.v1, max_retries=0) as oai,
                anthropic.AsyncAnthropic(
                    api_key="unused", base_url=server.base_url, max_retries=0
                ) as ant,
            ):
                chat = await oai.chat.completions.create(
                    model="Sonnet", messages=[{"role": "user", "content": "hi"}]
                )
                assert chat.choices[0].finish_reason == "stop"
                chat = await oai.chat.completions.create(
                    model="GPT-5.5-HIGH", messages=[{"role": "user", "content": "hi"}]
                )
                assert chat.choices[0].finish_reason == "stop"
                message = await ant.messages.create(
                    model="Claude-Sonnet-4-5",
                    max_tokens=50,
                    messages=[{"role": "user", "content": "hi"}],
                )
                assert message.stop_reason == "end_turn"

                listed = {m.id: m for m in (await oai.models.list()).data}
                sonnet = listed["claude-sonnet-4-5"].model_dump()
                assert (sonnet["context_window"], sonnet["max_output_tokens"]) == (200_000, 64_000)
                gpt = listed["gpt-5.5"].model_dump()
                assert (gpt["context_window"], gpt["max_output_tokens"]) == (1_050_000, 128_000)
                one = await oai.models.retrieve("SONNET")
                assert one.id == "sonnet"
                info = await ant.models.retrieve("Haiku")
                assert info.model_dump()["max_tokens"] == 64_000
        # the codex fake got the effort the suffix asked for
        turns = server.sent("turn/start")
        assert [t["params"].get("effort") for t in turns] == ["high"]
