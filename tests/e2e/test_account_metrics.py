"""Each account's state and subscription windows in ``GET /metrics`` (and the
dashboard's accounts), on the fake claude
with two accounts: ``limited`` answers 429 (cooled down), ``ok`` serves and reports a
window (the ``rate_limit_event`` recorded from the pinned claude)."""

from __future__ import annotations

import json
from pathlib import Path

import trio
from prometheus_client.parser import text_string_to_metric_families

from clibridge._http._metrics import _window_kinds

from .conftest import BOUND, MODEL, open_e2e_server
from .test_accounts import POOL, SCENARIO, accounts
from .test_subscription import recorded_infos


def gauges(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape by name and labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(
    scraped: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float | None:
    return scraped.get((name, tuple(sorted(labels.items()))))


async def test_two_accounts_state_and_window_in_metrics(tmp_path: Path) -> None:
    _, warning = recorded_infos()  # five_hour, 95 % used
    async with open_e2e_server(
        tmp_path, scenario=SCENARIO, pool=POOL, claude={"accounts": accounts("limited", "ok")}
    ) as server:
        with trio.fail_after(BOUND):
            async with server.client() as client:
                before = await client.get("/metrics")
                assert before.status_code == 200, before.text
                scraped = gauges(before.text)
                for name in ("limited", "ok"):
                    labels = {"backend": "claude", "account": name}
                    assert sample(scraped, "clibridge_account_available", **labels) == 1
                    assert sample(scraped, "clibridge_account_cooldown_seconds", **labels) == 0
                    assert sample(scraped, "clibridge_account_cooldowns_total", **labels) == 0
                # no window reported yet: no window samples
                assert not any(k[0].startswith("clibridge_subscription_") for k in scraped)

                # the first account in order refuses (429); the request runs on "ok",
                # whose fake claude reports the window
                prompt = f"@fake {json.dumps({'rate_limit_info': warning})}\nhi"
                r = await client.post(
                    "/v1/chat/completions",
                    json={"model": MODEL, "messages": [{"role": "user", "content": prompt}]},
                )
                assert r.status_code == 200, r.text
                after = await client.get("/metrics")
                dashboard = (await client.get("/dashboard/state")).json()
            scraped = gauges(after.text)
            limited = {"backend": "claude", "account": "limited"}
            ok = {"backend": "claude", "account": "ok"}
            assert sample(scraped, "clibridge_account_available", **limited) == 0
            left = sample(scraped, "clibridge_account_cooldown_seconds", **limited)
            assert left is not None and 20 < left <= 40  # rate_limit_cooldown: 40 s
            assert sample(scraped, "clibridge_account_cooldowns_total", **limited) == 1
            assert sample(scraped, "clibridge_account_available", **ok) == 1
            assert sample(scraped, "clibridge_account_cooldowns_total", **ok) == 0
            window = {**ok, "window": "five_hour"}
            assert sample(scraped, "clibridge_subscription_used_percent", **window) == 95.0
            assert (
                sample(scraped, "clibridge_subscription_reset_timestamp_seconds", **window)
                == warning["resetsAt"]
            )
            # the window is the account's, not the other's
            assert (
                sample(
                    scraped, "clibridge_subscription_used_percent", **limited, window="five_hour"
                )
                is None
            )
            # the dashboard's accounts section: the same states and windows
            (pool,) = dashboard["pools"]
            shown = {a["name"]: a for a in pool["accounts"]}
            assert shown["limited"]["state"] == "rate_limited"
            assert shown["limited"]["available"] is False and shown["limited"]["why"]
            assert shown["limited"]["until"] and shown["limited"]["windows"] == []
            assert shown["ok"]["available"] is True
            assert shown["ok"]["windows"] == [
                {
                    "name": "five_hour",
                    "used_percent": 95.0,
                    "resets_at": warning["resetsAt"],
                    "status": "allowed_warning",
                }
            ]
            # the backend-wide pool metrics keep their names and labels
            assert sample(scraped, "clibridge_pool_ready", backend="claude") == 1
            await server.assert_clean()


async def test_implicit_account_is_default(tmp_path: Path) -> None:
    async with open_e2e_server(tmp_path) as server:
        with trio.fail_after(BOUND):
            async with server.client() as client:
                r = await client.get("/metrics")
            scraped = gauges(r.text)
            labels = {"backend": "claude", "account": "default"}
            assert sample(scraped, "clibridge_account_available", **labels) == 1
            assert sample(scraped, "clibridge_account_cooldowns_total", **labels) == 0
            await server.assert_clean()


def test_window_label_is_bounded() -> None:
    """Unknown window names become ``other`` (the most used of them): one sample, never
    a label value a CLI made up."""
    kinds = _window_kinds(
        {
            "windows": {
                "five_hour": {"used_percent": 10.0},
                "x.primary": {"used_percent": 20.0, "resets_at": 1.0},
                "y.primary": {"used_percent": 70.0, "resets_at": 2.0},
                "z.secondary": {"used_percent": None},
            }
        }
    )
    assert set(kinds) == {"five_hour", "other"}
    assert kinds["other"]["resets_at"] == 2.0
