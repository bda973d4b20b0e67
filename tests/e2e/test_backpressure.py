"""Backpressure through the whole server: ``workers`` turns run, ``max_queue`` wait, the rest
get an immediate 429 with Retry-After -- in each dialect's error shape."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import trio

from .conftest import FAST_POOL, MODEL, open_e2e_server

#: ~1 s of streaming: 10 deltas, 0.1 s apart
SLOW = '@fake {"reply": "' + "ab" * 10 + '", "chunk_chars": 2, "chunk_delay": 0.1}\nhi'


@attrs.define
class Outcome:
    status: int
    head_after: float
    retry_after: str | None
    body: str


async def test_burst_of_six_on_two_workers_and_a_queue_of_two(tmp_path: Path) -> None:
    pool = attrs.evolve(FAST_POOL, workers=2, spares=2, max_queue=2, queue_timeout=20.0)
    async with open_e2e_server(tmp_path, pool=pool) as server:
        # both workers booted: the burst measures admission, not boot time
        await server.wait_stats(lambda s: s["idle"] == 2)
        outcomes: list[Outcome] = []
        body: dict[str, Any] = {
            "model": MODEL,
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": SLOW}],
        }
        async with server.client() as client:

            async def one() -> None:
                t0 = trio.current_time()
                async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                    head_after = trio.current_time() - t0
                    text = (await response.aread()).decode()
                outcomes.append(
                    Outcome(
                        response.status_code, head_after, response.headers.get("retry-after"), text
                    )
                )

            with trio.fail_after(30):
                t0 = trio.current_time()
                async with trio.open_nursery() as nursery:
                    for _ in range(6):
                        nursery.start_soon(one)
                total = trio.current_time() - t0
        rejected = [o for o in outcomes if o.status == 429]
        served = [o for o in outcomes if o.status == 200]
        assert (len(rejected), len(served)) == (2, 4), [(o.status, o.body[:80]) for o in outcomes]
        for o in rejected:
            assert o.head_after < 0.5  # immediate, not after a wait
            assert o.retry_after is not None and float(o.retry_after) > 0
            assert json.loads(o.body)["error"]["type"] == "rate_limit_error"
        for o in served:
            assert o.body.rstrip().endswith("data: [DONE]")
            assert '"finish_reason":"stop"' in o.body
        # two rounds of ~1 s: the queued pair ran after the first pair
        assert 1.8 < total < 6
        stats = await server.assert_clean()
        assert stats["rejected"] == 2
        assert stats["served"] == 4
        await server.assert_serves()


async def test_parked_conversations_give_way_with_no_wait_queue(tmp_path: Path) -> None:
    """With ``max_queue=0`` a finished, parked conversation holds the only permit; a new
    request must reclaim it rather than get a 429."""
    pool = attrs.evolve(FAST_POOL, workers=1, spares=1, max_queue=0)
    async with open_e2e_server(tmp_path, pool=pool) as server:
        with trio.fail_after(30):
            await server.assert_serves("first conversation")
            stats = await server.stats()
            assert stats["parked"] == 1  # the finished turn stays parked for a follow-up
            await server.assert_serves("an unrelated second conversation")
            await server.assert_clean()
