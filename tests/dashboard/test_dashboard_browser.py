"""The dashboard in a real headless chromium (Debian's, driven by Playwright for Python),
against ``clibridge serve`` on the fake CLIs.

Refreshes the screenshot ``docs/dashboard.png``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import ConsoleMessage, Page, sync_playwright

from clibridge._http._dashboard_page import PAGE
from clibridge.testing.scenario import directive

from .conftest import CHROMIUM_ARGS, ServeProcess, serve_process

SCREENSHOT = Path(__file__).parents[2] / "docs" / "dashboard.png"
#: long enough that the page (polling every second) sees the worker busy
SLOW_SECONDS = 4.0
#: the subscription window the slow request's turn reports: 42 % of five hours used
WINDOW = {
    "status": "allowed_warning",
    "resetsAt": int(time.time()) + 3 * 3600,
    "rateLimitType": "five_hour",
    "utilization": 0.42,
}

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.fixture
def page(chromium: str) -> Iterator[Page]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=list(CHROMIUM_ARGS))
        try:
            yield browser.new_page(viewport={"width": 1100, "height": 900})
        finally:
            browser.close()


def _slow_request(base_url: str, result: list[httpx.Response]) -> None:
    body = {
        "model": "sonnet",
        "messages": [
            {
                "role": "user",
                # the turn also reports a subscription window (claude's rate_limit_event)
                "content": directive(
                    first_delay=SLOW_SECONDS,
                    reply="slow and steady",
                    rate_limit_info=WINDOW,
                )
                + "\nTake your time.",
            }
        ],
    }
    with httpx.Client(base_url=base_url, timeout=60, trust_env=False) as client:
        result.append(client.post("/v1/chat/completions", json=body))


def test_dashboard_live_in_chromium(fake_server: ServeProcess, page: Page) -> None:
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            errors.append(f"console {message.type}: {message.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    page.goto(fake_server.base_url + "/dashboard")
    # both fake pools booted their workers, all idle
    # (locator waits: the page's CSP forbids the eval a string predicate would need)
    page.locator("#workers tr[data-worker] .s-idle").nth(1).wait_for(timeout=30_000)
    assert page.locator("#fake").inner_text() == "FAKE CLI (canned replies)"
    # no accounts configured and no window reported yet: no accounts section
    assert page.locator("#accounts-section").is_hidden()
    pids = page.locator("#workers tr[data-worker] td:nth-child(3)").all_inner_texts()
    assert all(pid.isdigit() for pid in pids), pids
    assert all(
        rss.endswith("MiB") for rss in page.locator("#workers td:nth-child(7)").all_inner_texts()
    )

    # a scripted slow request: the worker table shows a busy worker, then none
    result: list[httpx.Response] = []
    thread = threading.Thread(target=_slow_request, args=(fake_server.base_url, result))
    thread.start()
    try:
        # visible for SLOW_SECONDS once the turn runs; the bound is for a loaded machine
        page.wait_for_selector("#workers .s-busy", timeout=15_000)
        assert page.locator("#summary [data-pool=claude]").inner_text().startswith("claude: 1/2")
        page.locator("#workers .s-busy").wait_for(state="detached", timeout=SLOW_SECONDS * 3000)
    finally:
        thread.join(timeout=60)
    assert result and result[0].status_code == 200, result
    assert result[0].json()["choices"][0]["message"]["content"] == "slow and steady"
    turns = page.locator("#workers tr[data-worker^=claude] td:nth-child(6)").all_inner_texts()
    assert "1" in turns
    # the window the turn reported: the implicit account's row in the accounts section
    account = page.locator("#accounts tr[data-account=claude-default]")
    account.wait_for(timeout=10_000)
    cells = account.locator("td").all_inner_texts()
    assert cells[:3] == ["claude", "default", "healthy"] and cells[5:7] == ["five_hour", "42 %"]

    # the finished request appears in the last requests (from the ledger); a click opens it
    request_id = result[0].headers["x-request-id"]
    row = page.locator(f"#requests tr[data-id='{request_id}']")
    row.wait_for(timeout=10_000)
    cells = row.locator("td").all_inner_texts()
    assert cells[2:5] == ["sonnet", "openai_chat", "200"], cells
    assert cells[5].endswith(" s") and float(cells[5].removesuffix(" s")) >= SLOW_SECONDS
    assert " in / " in cells[7] and cells[8] == "no"
    row.click()
    page.locator("#detail").wait_for(state="visible")
    detail = json.loads(page.locator("#detail").inner_text())
    assert detail["request_id"] == request_id and detail["status"] == 200

    # the usage chart has points, and this hour's one counts the request
    page.locator("#usage-chart circle.point").first.wait_for(state="attached", timeout=10_000)
    assert page.locator("#usage-chart circle.point").count() >= 24
    page.locator("#usage-metric").select_option("requests")
    page.locator("#legend span").first.wait_for()
    assert detail["cli_model"] in page.locator("#legend").inner_text()
    tips = page.locator("#usage-chart circle.point title").all_text_contents()
    assert any(
        tip.startswith(detail["cli_model"]) and tip.endswith(": 1 requests") for tip in tips
    ), tips
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    # a phone: nothing wider than the screen (the tables scroll in their own box)
    page.set_viewport_size({"width": 375, "height": 800})
    page.wait_for_timeout(1500)  # a poll redraws the chart at the new width
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    assert page.locator("#usage-chart").bounding_box()["width"] <= 375  # type: ignore[index]
    assert page.locator("#workers tr[data-worker]").first.is_visible()
    assert errors == []


def test_with_an_auth_token_the_page_asks_for_the_key(chromium: str, tmp_path: Path) -> None:
    with (
        serve_process(tmp_path, {"CLIBRIDGE_API_KEY": "s3cret-admin"}) as server,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=chromium, args=list(CHROMIUM_ARGS))
        try:
            page = browser.new_page(viewport={"width": 375, "height": 800})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(server.base_url + "/dashboard")
            page.locator("#keyform").wait_for(state="visible", timeout=10_000)
            assert page.locator("#status").inner_text() == "needs the admin key"
            assert page.locator("#workers tr[data-worker]").count() == 0
            page.locator("#key").fill("s3cret-admin")
            page.locator("#keyform button").click()
            page.locator("#workers tr[data-worker] .s-idle").nth(1).wait_for(timeout=30_000)
            assert not page.locator("#keyform").is_visible()
            assert page.evaluate("document.documentElement.scrollWidth") <= 375
            assert errors == []
        finally:
            browser.close()


def test_accounts_section_draws_a_cooling_account(page: Page) -> None:
    """Two accounts, one cooling down with two windows: the page (served by a route of
    the browser, with canned state) draws one row per window, the cool-down and why."""
    now = time.time()
    account = {
        "state": "healthy",
        "available": True,
        "cooldowns": 0,
        "cooling_down_for": None,
        "until": None,
        "why": None,
        "windows": [],
        "warn_percent": 80.0,
    }
    work = {
        **account,
        "name": "work",
        "state": "rate_limited",
        "available": False,
        "cooldowns": 2,
        "cooling_down_for": 125.0,
        "until": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 125)),
        "why": "usage limit reached",
        "windows": [
            {"name": "primary", "used_percent": 100.0, "resets_at": now + 3600, "status": None},
            {"name": "secondary", "used_percent": 30.0, "resets_at": now + 86400, "status": None},
        ],
    }
    state = {
        "now": now,
        "ready": True,
        "reason": "codex accounts: ...",
        "fake": False,
        "open_turns": 0,
        "rejected_last_minute": 0,
        "pools": [
            {
                "name": "codex",
                "workers": [],
                "queued": 0,
                "in_flight": 0,
                "permits_total": 2,
                "served": 0,
                "rejected": 0,
                "accounts": [work, {**account, "name": "home"}],
            }
        ],
        "ledger": False,
        "requests": [],
        "usage": {"by_model": [], "by_key": []},
    }
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.route(
        "http://clibridge.test/dashboard",
        lambda route: route.fulfill(body=PAGE, content_type="text/html"),
    )
    page.route(
        "http://clibridge.test/dashboard/state",
        lambda route: route.fulfill(json=state),
    )
    page.goto("http://clibridge.test/dashboard")
    rows = page.locator("#accounts tr[data-account]")
    rows.nth(2).wait_for(timeout=10_000)
    assert page.locator("#accounts-section").is_visible()
    assert rows.count() == 3  # work: one row per window; home: one
    first = rows.nth(0).locator("td").all_inner_texts()
    assert first[:3] == ["codex", "work", "rate limited (cooling down)"]
    assert first[3].endswith("(2 min 5 s)") and first[4] == "usage limit reached"
    assert first[5:7] == ["primary", "100 %"]
    assert rows.nth(0).locator("td.warn").count() == 1  # over the usage_warning
    second = rows.nth(1).locator("td").all_inner_texts()
    assert second[:5] == ["", "", "", "", ""] and second[5:7] == ["secondary", "30 %"]
    third = rows.nth(2).locator("td").all_inner_texts()
    assert third[:3] == ["codex", "home", "healthy"] and third[5:] == ["", "", ""]
    assert errors == []
