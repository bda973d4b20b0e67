"""A worker's ``/clear`` runs when the pool releases it, not when the next request binds it.

The fake claude records every stdin line: the ``/clear`` must be there before the next
request is sent (issue 10: resets off the request path), and exactly once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

from clibridge._conversations import ONE_SHOT_STREAK
from tests.e2e.conftest import FAST_POOL, MODEL, E2EServer, open_e2e_server

#: a finished conversation is reclaimed (the worker released idle) 0.3 s after its turn
POOL = attrs.evolve(FAST_POOL, park_ttl=0.3)


def user_texts(server: E2EServer) -> list[str]:
    """The text of every ``user`` line the fake claude processes got, in order."""
    texts = []
    for line in server.stdin_lines():
        if isinstance(line, dict) and line.get("type") == "user":
            content: Any = line["message"]["content"]
            texts.append(
                content if isinstance(content, str) else "".join(b.get("text", "") for b in content)
            )
    return texts


async def ask(client: httpx.AsyncClient, text: str) -> None:
    reply = await client.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": text}]},
    )
    assert reply.status_code == 200, reply.text


async def test_a_released_worker_is_cleared_before_the_next_request(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with open_e2e_server(tmp_path, pool=POOL) as server:
            async with server.client() as client:
                await ask(client, "first conversation")
                await server.wait_stats(lambda s: s["reclaimed"] == 1 and s["parked"] == 0)
                with trio.move_on_after(5):
                    while "/clear" not in user_texts(server):  # noqa: ASYNC110 - a file, no event
                        await trio.sleep(0.02)
                before_second = user_texts(server)
                await ask(client, "second conversation")
            texts = user_texts(server)
            await server.assert_clean()
    assert before_second == ["first conversation", "/clear"], before_second
    # the second request reused the cleared worker and did not clear it again
    assert texts == ["first conversation", "/clear", "second conversation"], texts


async def test_a_one_shot_client_gets_cleared_workers_without_parking(tmp_path: Path) -> None:
    """New conversation after new conversation (park_ttl long): from the ONE_SHOT_STREAK-th
    on, a finished conversation is not parked but released, its worker cleared in the
    background (a parked one would keep its conversation until the next request)."""
    total = ONE_SHOT_STREAK + 2
    released = total - ONE_SHOT_STREAK + 1
    with trio.fail_after(60):
        async with open_e2e_server(tmp_path) as server:
            async with server.client() as client:
                for i in range(total):
                    await ask(client, f"conversation {i}")
                stats = await server.wait_stats(lambda s: s["one_shot_releases"] == released)
                with trio.move_on_after(5):
                    while user_texts(server)[-1] != "/clear":  # noqa: ASYNC110 - a file
                        await trio.sleep(0.02)
            texts = user_texts(server)
            await server.assert_clean()
    assert stats["parked"] == 0 and stats["resume_hits"] == 0, stats
    assert texts == [text for i in range(total) for text in (f"conversation {i}", "/clear")], texts
