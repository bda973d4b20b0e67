"""GET /metrics on the whole server: pool gauges from real worker processes, counters that
move with real SDK requests, tokens equal to what the fake CLI reported."""

from __future__ import annotations

import json
from pathlib import Path

import anthropic
import openai
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from .conftest import BOUND, MODEL, E2EServer, open_e2e_server

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:Async generator:ResourceWarning"),
]


async def scrape(server: E2EServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with server.client() as client:
        r = await client.get("/metrics")
    assert r.status_code == 200, r.text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def total(
    metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return sum(
        v
        for (n, lbls), v in metrics.items()
        if n == name and all(dict(lbls).get(k) == want for k, want in labels.items())
    )


async def test_metrics_follow_real_requests(tmp_path: Path) -> None:
    ask = "@fake " + json.dumps({"reply": "hi", "input_tokens": 11, "output_tokens": 4}) + "\nhi"
    async with open_e2e_server(tmp_path) as server:
        await server.wait_stats(lambda s: s["idle"] >= 1)
        before = await scrape(server)
        assert total(before, "clibridge_pool_workers", backend="claude", state="idle") >= 1
        assert total(before, "clibridge_pool_boots_total", backend="claude") >= 1
        assert total(before, "clibridge_pool_queue_depth", backend="claude") == 0
        assert total(before, "clibridge_pool_capacity", backend="claude") == 2
        assert total(before, "clibridge_requests_total") == 0
        with trio.fail_after(BOUND):
            async with openai.AsyncOpenAI(api_key="x", base_url=server.v1, max_retries=0) as oai:
                for stream in (False, True):
                    chat = await oai.chat.completions.create(
                        model=MODEL, messages=[{"role": "user", "content": ask}], stream=stream
                    )
                    if stream:
                        async for _chunk in chat:  # type: ignore[union-attr]
                            pass
                with pytest.raises(openai.NotFoundError):
                    await oai.chat.completions.create(
                        model="no-such-model-4711", messages=[{"role": "user", "content": "x"}]
                    )
            async with anthropic.AsyncAnthropic(
                api_key="x", base_url=server.base_url, max_retries=0
            ) as ant:
                await ant.messages.create(
                    model=MODEL, max_tokens=20, messages=[{"role": "user", "content": ask}]
                )
        await server.assert_clean()
        after = await scrape(server)
    assert total(after, "clibridge_requests_total", dialect="openai_chat", status="200") == 2
    assert total(after, "clibridge_requests_total", dialect="anthropic_messages", status="200") == 1
    missing = total(after, "clibridge_requests_total", status="404", model="other")
    assert missing == 1  # the client's made-up model is not a label
    assert total(after, "clibridge_tokens_total", backend="claude", kind="input") == 33
    assert total(after, "clibridge_tokens_total", backend="claude", kind="output") == 12
    assert total(after, "clibridge_queue_wait_seconds_count", backend="claude") == 3
    assert total(after, "clibridge_time_to_first_content_seconds_count", backend="claude") == 3
    assert total(after, "clibridge_request_duration_seconds_count", backend="claude") == 3
    assert total(after, "clibridge_pool_served_total", backend="claude") == 3
    assert not any("no-such-model" in str(labels) for _, labels in after)
