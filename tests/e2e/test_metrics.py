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

from .conftest import BOUND, CODEX_MODEL, MODEL, Backend, E2EServer, open_e2e_server

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


#: per backend: the model asked for, and the pool's capacity in the harness
CASES: dict[Backend, tuple[str, int]] = {"claude": (MODEL, 2), "codex": (CODEX_MODEL, 4)}


@pytest.mark.parametrize("backend", list(CASES))
async def test_metrics_follow_real_requests(tmp_path: Path, backend: Backend) -> None:
    model, capacity = CASES[backend]
    ask = "@fake " + json.dumps({"reply": "hi", "input_tokens": 11, "output_tokens": 4}) + "\nhi"
    async with open_e2e_server(tmp_path, backend=backend) as server:
        before = await scrape(server)
        # codex boots its first worker on demand (no spares in the harness)
        booted = total(before, "clibridge_pool_boots_total", backend=backend)
        idle = total(before, "clibridge_pool_workers", backend=backend, state="idle")
        assert booted >= idle
        assert total(before, "clibridge_pool_queue_depth", backend=backend) == 0
        assert total(before, "clibridge_pool_capacity", backend=backend) == capacity
        assert total(before, "clibridge_requests_total") == 0
        with trio.fail_after(BOUND):
            async with openai.AsyncOpenAI(api_key="x", base_url=server.v1, max_retries=0) as oai:
                for stream in (False, True):
                    chat = await oai.chat.completions.create(
                        model=model, messages=[{"role": "user", "content": ask}], stream=stream
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
                    model=model, max_tokens=20, messages=[{"role": "user", "content": ask}]
                )
        await server.assert_clean()
        after = await scrape(server)
    assert total(after, "clibridge_pool_boots_total", backend=backend) >= 1
    assert total(after, "clibridge_pool_workers", backend=backend, state="idle") >= 1
    assert total(after, "clibridge_pool_workers", backend=backend, state="busy") == 0
    assert total(after, "clibridge_requests_total", dialect="openai_chat", status="200") == 2
    assert total(after, "clibridge_requests_total", model=model, backend=backend) == 3
    assert total(after, "clibridge_requests_total", dialect="anthropic_messages", status="200") == 1
    missing = total(after, "clibridge_requests_total", status="404", model="other")
    assert missing == 1  # the client's made-up model is not a label
    assert total(after, "clibridge_tokens_total", backend=backend, kind="input") == 33
    assert total(after, "clibridge_tokens_total", backend=backend, kind="output") == 12
    assert total(after, "clibridge_queue_wait_seconds_count", backend=backend) == 3
    assert total(after, "clibridge_time_to_first_content_seconds_count", backend=backend) == 3
    assert total(after, "clibridge_request_duration_seconds_count", backend=backend) == 3
    assert total(after, "clibridge_pool_served_total", backend=backend) == 3
    assert not any("no-such-model" in str(labels) for _, labels in after)
