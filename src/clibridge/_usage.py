"""How much of the subscription window is used, per backend, as the CLIs report it.

Theory of operation
-------------------
Both CLIs learn their subscription's rate-limit windows from their upstream and tell their
host:

* **codex** (app-server): the ``account/rateLimits/read`` request answers a snapshot, and an
  ``account/rateLimits/updated`` notification follows every change: a *primary* and a
  *secondary* window (the 5-hour and the weekly one), each with ``usedPercent``,
  ``resetsAt`` (unix seconds) and ``windowDurationMins``.
* **claude** (stream-json): a ``rate_limit_event`` line, sent inside a turn (before its
  ``result``) whenever the rate-limit information it read from the response headers
  (``anthropic-ratelimit-unified-*``) changed: ``status`` (``allowed``,
  ``allowed_warning``, ``rejected``), ``resetsAt``, ``rateLimitType`` (``five_hour``,
  ``seven_day``, ...) and ``utilization`` (a fraction; present only with
  ``allowed_warning``). Only a subscription login (an OAuth token) gets these; with an API
  key the CLI sends none (recorded with the pinned claude against the model stub:
  ``tests/testing/samples/claude_rate_limit_event.ndjson``).

The workers parse those into :class:`UsageWindow` records and hand them to their pool's
:class:`UsageMeter` (one per backend; the pool gives it to every worker that
:class:`ReportsUsage`). The meter keeps the latest record per window, shows them in
``/v1/stats`` (``subscription``), and logs a warning when a window's used share crosses
the pool's ``usage_warning`` percent (once per crossing: again only after it went below,
or the window reset). Pure: no IO but logging; the clock is passed in.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import attrs

log = logging.getLogger("clibridge.usage")


@attrs.frozen
class UsageWindow:
    """One rate-limit window of a subscription, as last reported."""

    #: the CLI's name for it: codex ``primary`` / ``secondary`` (or its ``limitId``),
    #: claude's ``rateLimitType`` (``five_hour``, ``seven_day``, ...)
    name: str
    #: percent of the window used (0-100); None when the CLI did not say
    used_percent: float | None = None
    #: when the window resets (unix seconds)
    resets_at: float | None = None
    #: the window's length in minutes, when known
    window_minutes: int | None = None
    #: claude's ``status`` (``allowed``, ``allowed_warning``, ``rejected``); codex: None
    status: str | None = None


@runtime_checkable
class ReportsUsage(Protocol):
    """A worker that reports its CLI's subscription windows (the pool sets ``usage``)."""

    usage: UsageMeter | None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def codex_windows(snapshot: Any) -> list[UsageWindow]:
    """The windows of a codex ``RateLimitSnapshot`` (``account/rateLimits/read`` result's
    ``rateLimits``, or the ``account/rateLimits/updated`` notification's)."""
    if not isinstance(snapshot, Mapping):
        return []
    out = []
    prefix = snapshot.get("limitId")
    for key in ("primary", "secondary"):
        window = snapshot.get(key)
        if not isinstance(window, Mapping) or _number(window.get("usedPercent")) is None:
            continue
        minutes = window.get("windowDurationMins")
        out.append(
            UsageWindow(
                name=f"{prefix}.{key}" if isinstance(prefix, str) and prefix != "codex" else key,
                used_percent=_number(window.get("usedPercent")),
                resets_at=_number(window.get("resetsAt")),
                window_minutes=minutes if isinstance(minutes, int) else None,
            )
        )
    return out


def claude_window(info: Any) -> UsageWindow | None:
    """The window of a claude ``rate_limit_event``'s ``rate_limit_info``."""
    if not isinstance(info, Mapping):
        return None
    kind = info.get("rateLimitType")
    status = info.get("status")
    utilization = _number(info.get("utilization"))
    return UsageWindow(
        name=kind if isinstance(kind, str) else "unified",
        # a rejected window is used up, whatever the CLI left out
        used_percent=100.0
        if status == "rejected"
        else (None if utilization is None else round(utilization * 100, 2)),
        resets_at=_number(info.get("resetsAt")),
        status=status if isinstance(status, str) else None,
    )


class UsageMeter:
    """The latest subscription windows of one backend, with a threshold warning."""

    def __init__(
        self, backend: str, warn_percent: float, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.backend = backend
        self.warn_percent = warn_percent
        self._clock = clock
        self._windows: dict[str, UsageWindow] = {}
        self._updated: dict[str, float] = {}
        #: windows above the threshold since the last warning (re-armed below it or at reset)
        self._warned: set[str] = set()
        self.warnings = 0

    def update(self, window: UsageWindow) -> None:
        previous = self._windows.get(window.name)
        if (
            previous is not None
            and window.used_percent is None
            and window.status in (None, previous.status)
        ):
            # a sparse update (codex) or an event without a share (claude "allowed")
            # keeps what is known of the share
            window = attrs.evolve(window, used_percent=previous.used_percent)
        if previous is not None and previous.resets_at != window.resets_at:
            self._warned.discard(window.name)  # a new window
        self._windows[window.name] = window
        self._updated[window.name] = self._clock()
        over = window.used_percent is not None and window.used_percent >= self.warn_percent
        if not over:
            self._warned.discard(window.name)
        elif window.name not in self._warned:
            self._warned.add(window.name)
            self.warnings += 1
            log.warning(
                "%s subscription: %s window %.0f%% used (warning at %.0f%%)%s",
                self.backend,
                window.name,
                window.used_percent,
                self.warn_percent,
                _resets(window.resets_at, self._clock()),
            )

    def near_limit(self) -> bool:
        """A window not reset yet is used at least ``usage_warning`` percent (or used up):
        new conversations had better go to another account (:mod:`clibridge._accounts`)."""
        now = self._clock()
        return any(
            w.used_percent is not None
            and w.used_percent >= self.warn_percent
            and (w.resets_at is None or w.resets_at > now)
            for w in self._windows.values()
        )

    def statistics(self) -> dict[str, Any]:
        """For ``/v1/stats``: every window as last reported, and when."""
        return {
            "warn_percent": self.warn_percent,
            "warnings": self.warnings,
            "windows": {
                name: {**attrs.asdict(w), "reported_at": self._updated[name]}
                for name, w in sorted(self._windows.items())
            },
        }


def _resets(resets_at: float | None, now: float) -> str:
    if resets_at is None:
        return ""
    minutes = max(0, round((resets_at - now) / 60))
    return f", resets in {minutes // 60} h {minutes % 60} min"
