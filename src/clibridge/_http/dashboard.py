"""``GET /dashboard``: one self-contained page that shows the pools and the requests, live.

Theory of operation
-------------------
Three routes::

    GET /dashboard                  the page (HTML, CSS and JS inline: works offline)
    GET /dashboard/state            what the page shows, as JSON (polled every second)
    GET /dashboard/requests/<id>    one request of the ledger (the page opens it on click)

The page itself holds no data, so it is served without the API key (it is one of the
``OPEN_PATHS`` of :mod:`._guard`): a browser cannot put a key on a navigation. Its script then asks ``/dashboard/state`` with the key it
keeps in ``sessionStorage`` (a form asks for it on a 401 / 403). The JSON routes are
open on a server without auth (allowed on loopback only) and need the admin key
otherwise: ``quart.g.clibridge_admin`` when admission sets it, else the one
``auth_token`` (which admission already checked) is the admin key.

Live without reloading by short polling, not server-sent events: a poll is one
ordinary request that ends, so the dashboard holds no connection open against
``max_connections``, does not keep a drain waiting, and passes any proxy.

Worker states as the page names them (from the pool's slot state, and the worker's
``paused``): booting, idle, busy, parked on tool call, parked finished, recycling.
The accounts of a backend (``/v1/stats`` ``accounts``: each login's state, its cool-down
and why, its pool's ``subscription`` windows) show in their own section, only where there
is something to show: configured accounts, or subscription windows the implicit one's CLI
reported.

RSS is read here with psutil (the process and its descendants, in a thread); the pool
does no IO.
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import psutil
import trio
from quart import Response, g

from .._errors import Forbidden, NotFound
from ._dashboard_page import PAGE

if TYPE_CHECKING:
    from .app import BridgeApp

#: the page's path: served without the API key (it holds no data; in ``OPEN_PATHS``)
PAGE_PATH = "/dashboard"
#: how many ledger requests the page lists
RECENT_REQUESTS = 50
#: the usage chart's span (seconds)
USAGE_SPAN = 24 * 3600
#: series per chart at most (the biggest; the rest are summed as "other")
MAX_SERIES = 8
#: how often the usage series are recomputed (seconds)
USAGE_REFRESH = 5.0
_PHASES = {
    "booting": "booting",
    "idle": "idle",
    "busy": "busy",
    "retiring": "recycling",
}


def worker_phase(worker: Mapping[str, Any]) -> str:
    """The state the dashboard shows for one worker of ``/v1/stats``."""
    state = str(worker.get("state", ""))
    if state == "parked":
        return "parked on tool call" if worker.get("paused") else "parked finished"
    return _PHASES.get(state, state)


def rss_by_pid(pids: Iterable[int]) -> dict[int, int]:
    """Resident memory of each of ``pids`` with its descendants (a CLI may run helpers); a
    pid that is gone is left out. Blocking (one pass over the process table): call it in a
    thread.

    Regression: asking psutil for each process's children scanned the whole process table
    every time (60 ms with 150 processes, per worker, per poll); one pass builds the
    parent -> children map for every tree.
    """
    children: dict[int, list[int]] = {}
    for proc in psutil.process_iter(["ppid"]):
        children.setdefault(proc.info["ppid"], []).append(proc.pid)
    out = {}
    for pid in pids:
        total, pending, seen = 0, [pid], set()
        while pending:
            current = pending.pop()
            if current in seen:
                continue
            seen.add(current)
            try:
                total += psutil.Process(current).memory_info().rss
            except psutil.Error:
                if current == pid:
                    break  # the worker itself is gone
                continue
            pending.extend(children.get(current, ()))
        else:
            out[pid] = int(total)
    return out


def worker_pids(statistics: Mapping[str, Any]) -> list[int]:
    return [
        w["pid"]
        for stats in statistics.values()
        if isinstance(stats, Mapping)
        for w in stats.get("workers", ())
        if isinstance(w.get("pid"), int)
    ]


class RecentStatuses:
    """Counts responses of one status over the last minute (the page's "429s")."""

    def __init__(self, window: float = 60.0) -> None:
        self.window = window
        self._times: collections.deque[float] = collections.deque()

    def add(self, now: float | None = None) -> None:
        self._times.append(time.monotonic() if now is None else now)

    def count(self, now: float | None = None) -> int:
        now = time.monotonic() if now is None else now
        while self._times and self._times[0] <= now - self.window:
            self._times.popleft()
        return len(self._times)


def pools_json(
    statistics: Mapping[str, Any], rss: Mapping[int, int] | None = None
) -> list[dict[str, Any]]:
    """The pools of the service's statistics, as the page draws them (``rss``: bytes by
    pid, :func:`rss_by_pid`)."""
    rss = rss or {}
    out = []
    for name, stats in statistics.items():
        if not isinstance(stats, Mapping) or "workers" not in stats:
            continue
        workers = [
            {
                "backend": name,
                "id": w.get("id"),
                "pid": w.get("pid"),
                "state": worker_phase(w),
                "age": w.get("age"),
                "turns": w.get("turns"),
                "rss": rss.get(w.get("pid")),
                # the login it serves with, when the backend has several (else "default")
                "account": w.get("account") or stats.get("account") or "default",
            }
            for w in stats["workers"]
        ]
        out.append(
            {
                "name": name,
                "ready": stats.get("ready"),
                "reason": stats.get("reason"),
                "workers": workers,
                "queued": stats.get("queued", 0),
                "in_flight": stats.get("in_flight", 0),
                "permits_total": stats.get("permits_total", 0),
                "served": stats.get("served", 0),
                "rejected": stats.get("rejected", 0),
                "accounts": accounts_json(stats),
            }
        )
    return out


def accounts_json(stats: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The accounts of one backend's statistics as the page's accounts section shows them:
    the configured ones, or the implicit ``default`` one when its CLI reported subscription
    windows (empty otherwise: nothing to show)."""
    configured = stats.get("accounts")
    if configured:
        accounts = [(a, a.get("stats") or {}) for a in configured]
    else:
        implicit = {"name": "default", "state": "healthy", "available": True, "cooldowns": 0}
        accounts = [(implicit, stats)]
    out = []
    for account, pool in accounts:
        subscription = pool.get("subscription")
        windows = _windows(subscription)
        if not configured and not windows:
            continue
        out.append(
            {
                "name": account.get("name"),
                "state": account.get("state"),
                "available": account.get("available"),
                "cooldowns": account.get("cooldowns", 0),
                # set while the account is not healthy (cooling down, or its time is up
                # and no good turn made it healthy yet)
                "cooling_down_for": account.get("cooling_down_for"),
                "until": account.get("until"),
                "why": account.get("why"),
                "windows": windows,
                # the pool's usage_warning: the page marks a window used this much
                "warn_percent": subscription.get("warn_percent")
                if isinstance(subscription, Mapping)
                else None,
            }
        )
    return out


def _windows(subscription: Any) -> list[dict[str, Any]]:
    if not isinstance(subscription, Mapping):
        return []
    return [
        {
            "name": name,
            "used_percent": w.get("used_percent"),
            "resets_at": w.get("resets_at"),
            "status": w.get("status"),
        }
        for name, w in sorted((subscription.get("windows") or {}).items())
    ]


def _require_admin() -> None:
    # admission sets clibridge_admin (True without auth, which is loopback only); where it
    # does not, admission has checked the one auth token, which is the admin key
    if g.get("clibridge_admin", True) is False:
        raise Forbidden("the dashboard needs the admin key; this key is not one")


def install(app: BridgeApp) -> None:
    """Add the dashboard's routes and its 429 counter to ``app``."""
    too_many = RecentStatuses()
    usage = _UsageCache()

    @app.after_request
    async def _count_429(response: Response) -> Response:
        if response.status_code == 429:
            too_many.add()
        return response

    @app.get(PAGE_PATH)
    async def dashboard_page() -> Response:
        return Response(
            PAGE,
            content_type="text/html; charset=utf-8",
            headers={
                # everything is inline; nothing may load from elsewhere
                "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; "
                "style-src 'unsafe-inline'; connect-src 'self'; img-src data:",
                "Cache-Control": "no-store",
                "X-Frame-Options": "DENY",
            },
        )

    @app.get(PAGE_PATH + "/state")
    async def dashboard_state() -> Response:
        from .app import json_response

        _require_admin()
        readiness = app.service.readiness()
        statistics = app.service.statistics()
        # reading /proc for every process: off the event loop
        rss = await trio.to_thread.run_sync(rss_by_pid, worker_pids(statistics))
        ledger = app.ledger
        body: dict[str, Any] = {
            "now": time.time(),
            "ready": readiness.ready,
            "reason": readiness.reason,
            "fake": readiness.fake,
            "draining": app.draining.is_set(),
            "open_turns": len(app.drain.live),
            "rejected_last_minute": too_many.count(),
            "pools": pools_json(statistics, rss),
            "ledger": ledger is not None,
            "requests": [],
            "usage": {"by_model": [], "by_key": []},
        }
        if ledger is not None:
            # SQLite reads: off the event loop
            body["requests"] = await trio.to_thread.run_sync(ledger.recent, RECENT_REQUESTS)
            body["usage"] = await usage.get(ledger)
        return json_response(body, headers={"Cache-Control": "no-store"})

    @app.get(PAGE_PATH + "/requests/<request_id>")
    async def dashboard_request(request_id: str) -> Response:
        from .app import json_response

        _require_admin()
        ledger = app.ledger
        entry = None
        if ledger is not None:
            entry = await trio.to_thread.run_sync(ledger.get, request_id)
        if entry is None:
            raise NotFound(f"no request {request_id!r} in the ledger")
        return json_response(entry, headers={"Cache-Control": "no-store"})


class LedgerReader(Protocol):
    """What the dashboard reads of the request ledger (:class:`clibridge._ledger.Ledger`)."""

    def recent(self, limit: int, errors_only: bool = False) -> list[dict[str, object]]: ...

    def get(self, request_id: str) -> dict[str, object] | None: ...

    def usage(
        self, since_s: float, by: str, key: str | None = None, model: str | None = None
    ) -> list[dict[str, object]]: ...


def _hourly(rows: list[dict[str, object]]) -> dict[int, tuple[int, int]]:
    """``usage(by="hour")`` rows as {unix hour: (total tokens, requests)}."""
    out = {}
    for row in rows:
        hour = datetime.strptime(str(row["hour"]), "%Y-%m-%dT%H:00Z").replace(tzinfo=UTC)
        out[int(hour.timestamp())] = (_int(row.get("total_tokens")), _int(row.get("requests")))
    return out


def _int(value: object) -> int:
    return int(value) if isinstance(value, int | float) else 0


def _points(hours: range, counts: Mapping[int, tuple[int, int]]) -> list[dict[str, int]]:
    return [
        {"t": t, "tokens": counts.get(t, (0, 0))[0], "requests": counts.get(t, (0, 0))[1]}
        for t in hours
    ]


def usage_series(ledger: LedgerReader, now: float) -> dict[str, list[dict[str, Any]]]:
    """Tokens and requests per hour over the last day, one series per model and per key
    (the biggest :data:`MAX_SERIES` of each; the rest, and requests without a key, as one
    more series). Every hour of the day has a point (zero when idle). Blocking: SQLite."""
    end = int(now // 3600 * 3600)
    hours = range(end - 23 * 3600, end + 1, 3600)
    total = _hourly(ledger.usage(USAGE_SPAN, "hour"))
    out: dict[str, list[dict[str, Any]]] = {}
    for series, by in (("by_model", "model"), ("by_key", "key")):
        lines = []
        rest = dict(total)
        groups = ledger.usage(USAGE_SPAN, by)
        named = [g[by] for g in groups if g[by] is not None][:MAX_SERIES]
        for name in named:
            counts = _hourly(ledger.usage(USAGE_SPAN, "hour", **{by: str(name)}))
            for t, (tokens, requests) in counts.items():
                left = rest.get(t, (0, 0))
                rest[t] = (left[0] - tokens, left[1] - requests)
            lines.append({"name": str(name), "points": _points(hours, counts)})
        if any(requests > 0 for _, requests in rest.values()):
            others = len(named) < len([g for g in groups if g[by] is not None])
            label = "other" if others else ("(no key)" if by == "key" else "(unknown)")
            lines.append({"name": label, "points": _points(hours, rest)})
        out[series] = lines
    return out


class _UsageCache:
    """The usage series, recomputed at most every :data:`USAGE_REFRESH` seconds (an hourly
    chart needs no per-second update, and each refresh is a few SQLite queries)."""

    def __init__(self) -> None:
        self._at = -math.inf
        self._value: dict[str, list[dict[str, Any]]] = {"by_model": [], "by_key": []}

    async def get(self, ledger: LedgerReader) -> dict[str, list[dict[str, Any]]]:
        now = time.monotonic()
        if now - self._at >= USAGE_REFRESH:
            self._at = now
            self._value = await trio.to_thread.run_sync(usage_series, ledger, time.time())
        return self._value
