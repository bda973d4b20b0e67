"""Client tools and continuation on the claude backend's own machinery: official SDKs ->
server -> fake claude (the tool loop both backends share is in ``test_tool_loops.py``).

The whole server runs in-process (``serve``) on the fake claude with real worker
processes; ``@fake`` lines make the fake model call ``get_weather`` and echo the tool
results it got. Every test ends by draining the server and proving no process is left
(``open_e2e_server``).
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import openai
import pytest
import trio

from clibridge.testing.scenario import directive
from tests.e2e.conftest import FAST_POOL, MODEL, E2EServer, open_e2e_server
from tests.tools import _loops

pytestmark = [
    pytest.mark.filterwarnings("ignore:The model.*is deprecated:DeprecationWarning"),
    # Why: openai's AsyncStream leaves its own SSE generators unclosed at ``[DONE]``
    # (openai._streaming, httpx2, httpcore2); trio reports that at GC time.
    pytest.mark.filterwarnings("ignore:Async generator:ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

ONE = [{"name": "get_weather", "arguments": {"city": "Tokyo"}}]


def openai_client(server: E2EServer) -> openai.AsyncOpenAI:
    return _loops.openai_client(server.base_url)


async def tool_loop(
    server: E2EServer, dialect: str, *, stream: bool, calls: list[Any]
) -> tuple[list[_loops.Call], str, list[Any]]:
    prompt = directive(tool_calls=calls, echo_tool_results=True, reply="Done.") + "\nweather?"
    return await _loops.tool_loop(
        server.base_url, dialect, stream=stream, prompt=prompt, model=MODEL
    )


async def test_continuation_writes_only_the_new_message(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with open_e2e_server(tmp_path) as server, AsyncExitStack() as stack:
            _, _, convo = await tool_loop(server, "chat", stream=True, calls=ONE)
            client = await stack.enter_async_context(openai_client(server))
            convo.append({"role": "user", "content": "and tomorrow?"})
            done = await client.chat.completions.create(
                model=MODEL, messages=convo, tools=_loops.CHAT_TOOLS
            )
            assert done.choices[0].message.content
            stats = await server.stats()
            assert stats["resume_hits"] == 2
            users = [
                m for m in server.stdin_lines() if isinstance(m, dict) and m.get("type") == "user"
            ]
            # turn 1 (with the directive), then exactly the new message: no /clear, no history
            assert [u["message"]["content"] for u in users][1:] == ["and tomorrow?"]

            # a conversation that does not extend what a worker holds: fresh worker, history
            other = [*convo[:-1], {"role": "user", "content": "something else"}]
            other[0] = {"role": "user", "content": "a different start"}
            done = await client.chat.completions.create(
                model=MODEL, messages=other, tools=_loops.CHAT_TOOLS
            )
            assert done.choices[0].message.content
            users = [
                m for m in server.stdin_lines() if isinstance(m, dict) and m.get("type") == "user"
            ]
            contents = [u["message"]["content"] for u in users]
            assert contents[-2] == "/clear" or "/clear" not in contents[2:]
            last = contents[-1]
            assert isinstance(last, list)
            rendered = "".join(b.get("text", "") for b in last)
            assert "<conversation_history>" in rendered and "<tool_call" in rendered
            assert "<tool_result" in rendered and "sunny in Tokyo" in rendered
            assert rendered.rstrip().endswith("something else")


async def test_client_that_never_comes_back_frees_the_slot(tmp_path: Path) -> None:
    pool = attrs.evolve(FAST_POOL, park_ttl=1.0)
    with trio.fail_after(60):
        async with open_e2e_server(tmp_path, pool=pool) as server, AsyncExitStack() as stack:
            client = await stack.enter_async_context(openai_client(server))
            prompt = directive(tool_calls=ONE) + "\nweather?"
            convo: list[Any] = [{"role": "user", "content": prompt}]
            calls, _, finish = await _loops.chat_round(client, convo, stream=False, model=MODEL)
            assert finish == "tool_calls" and calls
            stats = await server.stats()
            assert stats["parked"] == 1 and stats["in_flight"] == 1
            stats = await server.wait_stats(lambda s: s["reclaimed"] == 1, within=10)
            assert stats["parked"] == 0 and stats["in_flight"] == 0
            # the mid-turn worker was retired, not reused
            assert all(w["state"] != "parked" for w in stats["workers"])


async def test_parked_workers_give_way_under_pressure(tmp_path: Path) -> None:
    """Two slots, both parked mid-turn; two new requests take them (oldest first)."""
    with trio.fail_after(90):
        async with open_e2e_server(tmp_path) as server, AsyncExitStack() as stack:
            client = await stack.enter_async_context(openai_client(server))
            for i in range(2):
                convo: list[Any] = [
                    {"role": "user", "content": directive(tool_calls=ONE) + f"\nweather {i}"}
                ]
                await _loops.chat_round(client, convo, stream=False, model=MODEL)
            stats = await server.stats()
            assert stats["parked"] == 2 and stats["in_flight"] == 2
            async with trio.open_nursery() as nursery:
                for i in range(2):
                    msgs = [{"role": "user", "content": f"hi {i}"}]
                    nursery.start_soon(
                        partial(client.chat.completions.create, model=MODEL, messages=msgs)
                    )
            stats = await server.stats()
            assert stats["reclaimed"] == 2 and stats["parked"] == 2  # the two new turns parked


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_a_worker_whose_cli_lost_the_tools_is_retired_and_the_turn_retried(
    tmp_path: Path, stream: bool
) -> None:
    """Regression: a CLI whose system/init listed none of the request's tools still served
    the turn, silently tool-less (the model's calls were rejected by the CLI). Now the
    mismatch retires the worker and the turn runs again on another one."""
    marker = tmp_path / "lose-tools"
    marker.write_text("")
    scenario = {"default": {"lose_tools_once": str(marker)}}
    with trio.fail_after(90):
        async with open_e2e_server(tmp_path, scenario=scenario) as server:
            first, text, _ = await tool_loop(server, "chat", stream=stream, calls=ONE)
            assert [(n, a) for _, n, a in first] == [("get_weather", ONE[0]["arguments"])]
            assert "] sunny in Tokyo" in text
            assert not marker.exists()  # one worker did lose its tools
            stats = await server.stats()
            assert stats["resume_hits"] == 1 and stats["crashes"] == 0, stats
            # the prompt went to two workers: the one that lost its tools, then another
            users = [
                m for m in server.stdin_lines() if isinstance(m, dict) and m.get("type") == "user"
            ]
            assert len(users) == 2, users
