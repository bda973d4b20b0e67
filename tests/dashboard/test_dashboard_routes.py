"""The dashboard's routes on the real app (scripted service): the page, its JSON, the key."""

from __future__ import annotations

import re

import httpx
import pytest

from clibridge._errors import QueueFull
from clibridge._http.dashboard import RecentStatuses, pools_json, worker_phase
from clibridge.testing.scripted import MODEL, Script

from ..http.conftest import open_server
from ..http.helpers import PATHS, body_for


@pytest.mark.parametrize(
    ("state", "paused", "shown"),
    [
        ("booting", False, "booting"),
        ("idle", False, "idle"),
        ("busy", False, "busy"),
        ("parked", True, "parked on tool call"),
        ("parked", False, "parked finished"),
        ("retiring", False, "recycling"),
    ],
)
def test_worker_phase(state: str, paused: bool, shown: str) -> None:
    assert worker_phase({"state": state, "paused": paused}) == shown


def test_pools_json_reads_the_supervisors_statistics() -> None:
    stats = {
        "claude": {
            "workers": [{"id": 3, "pid": None, "state": "busy", "age": 1.5, "turns": 2}],
            "queued": 4,
            "in_flight": 1,
            "permits_total": 2,
            "served": 9,
            "rejected": 1,
        },
        "turns": 0,  # not a pool (a scripted service's statistics)
    }
    (pool,) = pools_json(stats)
    assert pool["queued"] == 4 and pool["served"] == 9
    assert pool["workers"] == [
        {
            "backend": "claude",
            "id": 3,
            "pid": None,
            "state": "busy",
            "age": 1.5,
            "turns": 2,
            "rss": None,
        }
    ]


def test_recent_statuses_forget_after_a_minute() -> None:
    counter = RecentStatuses()
    counter.add(now=100.0)
    counter.add(now=130.0)
    assert counter.count(now=150.0) == 2
    assert counter.count(now=160.5) == 1
    assert counter.count(now=190.0) == 0


async def test_page_is_self_contained_and_state_counts_429s() -> None:
    async with open_server() as server, httpx.AsyncClient(base_url=server.base_url) as client:
        page = await client.get("/dashboard")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "default-src 'none'" in page.headers["content-security-policy"]
        # no asset from anywhere else: works offline
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page.text)
        server.service.scripts[MODEL] = Script(enter_error=QueueFull("busy", retry_after=1))
        refused = await client.post(PATHS["openai_chat"], json=body_for("openai_chat"))
        assert refused.status_code == 429
        state = (await client.get("/dashboard/state")).json()
        assert state["rejected_last_minute"] == 1
        assert state["pools"] == [] and state["ready"] is True
        assert (await client.get("/dashboard/requests/nope")).status_code == 404


async def test_with_auth_the_page_is_open_and_its_data_needs_the_key() -> None:
    async with (
        open_server(auth_token="s3cret") as server,
        httpx.AsyncClient(base_url=server.base_url) as client,
    ):
        page = await client.get("/dashboard")
        assert page.status_code == 200 and "s3cret" not in page.text
        assert (await client.get("/dashboard/state")).status_code == 401
        wrong = await client.get("/dashboard/state", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        ok = await client.get("/dashboard/state", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and "pools" in ok.json()
