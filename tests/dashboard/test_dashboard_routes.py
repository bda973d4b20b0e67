"""The dashboard's routes on the real app (scripted service): the page, its JSON, the key."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import httpx
import psutil
import pytest
from quart import g, request

from clibridge._errors import QueueFull
from clibridge._http.dashboard import (
    RecentStatuses,
    accounts_json,
    pools_json,
    rss_by_pid,
    usage_series,
    worker_phase,
    worker_pids,
)
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
            "account": "default",
        }
    ]


def _subscription(**windows: dict[str, object]) -> dict[str, object]:
    return {
        "warn_percent": 80.0,
        "warnings": 0,
        "windows": {
            name: {
                "name": name,
                "used_percent": None,
                "resets_at": None,
                "window_minutes": None,
                "status": None,
                "reported_at": 1.0,
                **w,
            }
            for name, w in windows.items()
        },
    }


def _pool(subscription: dict[str, object]) -> dict[str, object]:
    return {"workers": [], "queued": 0, "subscription": subscription}


def test_accounts_of_a_backend_with_accounts() -> None:
    """Each configured account: its state, its cool-down and why, its own windows."""
    stats = {
        **_pool(_subscription()),
        "accounts": [
            {
                "name": "work",
                "state": "rate_limited",
                "available": False,
                "ready": False,
                "pool": "2 idle",
                "cooldowns": 3,
                "cooling_down_for": 41.5,
                "until": "2026-11-30T22:00:00Z",
                "why": "rate-limited upstream (429)",
                "stats": _pool(
                    _subscription(
                        five_hour={"used_percent": 100.0, "resets_at": 1.8e9, "status": "rejected"}
                    )
                ),
            },
            {
                "name": "home",
                "state": "healthy",
                "available": True,
                "ready": True,
                "pool": "2 idle",
                "cooldowns": 0,
                "stats": _pool(_subscription()),
            },
        ],
    }
    work, home = accounts_json(stats)
    assert work == {
        "name": "work",
        "state": "rate_limited",
        "available": False,
        "cooldowns": 3,
        "cooling_down_for": 41.5,
        "until": "2026-11-30T22:00:00Z",
        "why": "rate-limited upstream (429)",
        "windows": [
            {"name": "five_hour", "used_percent": 100.0, "resets_at": 1.8e9, "status": "rejected"}
        ],
        "warn_percent": 80.0,
    }
    assert home["name"] == "home" and home["available"] is True and home["windows"] == []
    assert home["cooling_down_for"] is None and home["why"] is None
    # and pools_json carries them
    (pool,) = pools_json({"claude": stats})
    assert [a["name"] for a in pool["accounts"]] == ["work", "home"]


def test_implicit_account_shows_only_with_windows() -> None:
    """No accounts configured: nothing to show until the CLI reports a window; then the
    implicit ``default`` account with the backend's windows."""
    assert accounts_json(_pool(_subscription())) == []
    assert accounts_json({"workers": []}) == []  # a pool without a meter (older stats)
    windows = _subscription(
        secondary={"used_percent": 12.0, "resets_at": 2e9, "window_minutes": 10080},
        primary={"used_percent": 85.0, "resets_at": 1.9e9, "window_minutes": 300},
    )
    (default,) = accounts_json(_pool(windows))
    assert default["name"] == "default" and default["state"] == "healthy"
    assert default["available"] is True and default["cooldowns"] == 0
    assert default["windows"] == [
        {"name": "primary", "used_percent": 85.0, "resets_at": 1.9e9, "status": None},
        {"name": "secondary", "used_percent": 12.0, "resets_at": 2e9, "status": None},
    ]


def test_rss_counts_the_process_and_its_descendants() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import subprocess; subprocess.run(['sleep', '30'])"]
    )
    try:
        deadline = time.monotonic() + 10
        while not psutil.Process(child.pid).children() and time.monotonic() < deadline:
            time.sleep(0.05)
        (grandchild,) = psutil.Process(child.pid).children()
        own = psutil.Process(child.pid).memory_info().rss
        rss = rss_by_pid([child.pid, 2**22 + 7])  # the second is no process
        assert list(rss) == [child.pid]
        assert rss[child.pid] > own  # the sleep's memory is counted too
        assert worker_pids({"claude": {"workers": [{"pid": 5}, {"pid": None}]}, "x": 1}) == [5]
        grandchild.kill()
    finally:
        child.kill()
        child.wait()


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


class CannedLedger:
    """A ledger with two models and two keys (one of them no key) in the last day."""

    HOUR = 1_796_000_400  # a whole hour (unix time)

    def __init__(self) -> None:
        self.row = {"request_id": "req_1", "started": self.HOUR + 10.0, "status": 200}

    def recent(self, limit: int, errors_only: bool = False) -> list[dict[str, object]]:
        return [self.row][:limit]

    def get(self, request_id: str) -> dict[str, object] | None:
        return {**self.row, "capture": None} if request_id == "req_1" else None

    def usage(
        self, since_s: float, by: str, key: str | None = None, model: str | None = None
    ) -> list[dict[str, object]]:
        assert since_s == 24 * 3600
        if by == "model":
            return [{"model": "sonnet"}, {"model": "gpt-5.5"}]
        if by == "key":
            return [{"key": "alice"}, {"key": None}]
        this, previous = "2026-11-30T01:00Z", "2026-11-30T00:00Z"
        assert by == "hour"
        if model == "sonnet" or key == "alice":
            return [{"hour": this, "total_tokens": 100.0, "requests": 2}]
        if model == "gpt-5.5":
            return [{"hour": previous, "total_tokens": 30.0, "requests": 1}]
        return [
            {"hour": previous, "total_tokens": 30.0, "requests": 1},
            {"hour": this, "total_tokens": 100.0, "requests": 2},
        ]


def test_usage_series_one_line_per_model_and_key_with_every_hour() -> None:
    ledger = CannedLedger()
    now = CannedLedger.HOUR + 1800
    series = usage_series(ledger, now)
    assert [s["name"] for s in series["by_model"]] == ["sonnet", "gpt-5.5"]
    assert [s["name"] for s in series["by_key"]] == ["alice", "(no key)"]
    for lines in series.values():
        for line in lines:
            assert len(line["points"]) == 24
            assert line["points"][-1]["t"] == CannedLedger.HOUR
    sonnet = series["by_model"][0]["points"]
    assert sonnet[-1] == {"t": CannedLedger.HOUR, "tokens": 100, "requests": 2}
    assert sum(p["requests"] for p in sonnet) == 2
    # the requests without a key: all requests minus alice's
    no_key = series["by_key"][1]["points"]
    assert no_key[-2] == {"t": CannedLedger.HOUR - 3600, "tokens": 30, "requests": 1}
    assert no_key[-1]["requests"] == 0


async def test_state_and_request_from_the_ledger() -> None:
    async with open_server() as server, httpx.AsyncClient(base_url=server.base_url) as client:
        server.app.ledger = CannedLedger()  # type: ignore[assignment,attr-defined,unused-ignore]
        state = (await client.get("/dashboard/state")).json()
        assert state["ledger"] is True
        assert state["requests"] == [CannedLedger().row]
        assert [s["name"] for s in state["usage"]["by_model"]] == ["sonnet", "gpt-5.5"]
        entry = await client.get("/dashboard/requests/req_1")
        assert entry.status_code == 200 and entry.json()["capture"] is None
        assert (await client.get("/dashboard/requests/req_2")).status_code == 404


async def test_a_key_that_is_not_the_admin_key_gets_403() -> None:
    """Admission marks the request's key (``g.clibridge_admin``, named keys): only an
    admin key reads the dashboard's data."""
    async with open_server() as server, httpx.AsyncClient(base_url=server.base_url) as client:

        @server.app.before_request
        async def _not_admin() -> None:
            if request.headers.get("X-Test-Key") == "user":
                g.clibridge_admin = False

        refused = await client.get("/dashboard/state", headers={"X-Test-Key": "user"})
        assert refused.status_code == 403
        assert "admin key" in refused.json()["error"]["message"]
        assert (
            await client.get("/dashboard/requests/x", headers={"X-Test-Key": "user"})
        ).status_code == 403
        assert (await client.get("/dashboard", headers={"X-Test-Key": "user"})).status_code == 200
        assert (await client.get("/dashboard/state")).status_code == 200
