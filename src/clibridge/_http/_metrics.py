"""``GET /metrics``: Prometheus text exposition through ``prometheus-client``.

Theory of operation
-------------------
Two sources, one registry per app (never the client library's global one, so two apps
in one process -- tests -- do not share counters):

- request metrics move in :meth:`Metrics.observe`, a request observer (see
  :mod:`._record`) called once per request as it ends: counts by dialect, model, backend
  and status; histograms of queue wait, time to first content and duration; tokens by
  kind; 429s by cause. It does a few dict lookups and increments, never IO.
- pool metrics are read at scrape time by :class:`PoolCollector` from the service's
  ``statistics()`` (the same numbers as ``/v1/stats``): workers by state, queue depth,
  leases, boots, crashes, timeouts; per account (label ``account``: the configured names,
  ``default`` for the implicit one) whether it takes requests, how long it still cools
  down, how often it was cooled down, and its subscription windows (used percent, reset
  time) by window kind.

Every label has a bounded set of values: the model label is a model id the server lists
(its model table: a CLI model or an alias), ``other`` for anything else a client sent;
statuses are HTTP status codes, error causes the names of clibridge's own error classes;
accounts are configured names; windows are the kinds the CLIs report (:data:`WINDOW_KINDS`),
``other`` for any further one (the most used of them).
No request ids, key secrets or raw client strings become labels.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .. import _errors
from .._service import TurnService
from ._record import RequestRecord

#: the content type of the text exposition format
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: the requests that run turns (the only ones counted: model calls)
TURN_PATHS = frozenset({"/v1/chat/completions", "/v1/responses", "/v1/messages"})
_DIALECTS = frozenset({"openai_chat", "openai_responses", "anthropic_messages"})
#: the error types a 429 may carry, by cause
_429_CAUSES = {
    "quota_exceeded": "key_quota",
    "queue_full": "queue",
    "capacity_error": "queue",
    "upstream_rate_limited": "upstream",
}
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
#: every error type a record may carry (the values the error_type label may take):
#: clibridge's error classes as :func:`._record.error_type_of` names them, and how a
#: request can end without one
_ERROR_TYPES = frozenset(
    _CAMEL.sub("_", name).lower()
    for name, value in vars(_errors).items()
    if isinstance(value, type) and issubclass(value, _errors.BridgeError)
) | {"client_gone", "client_stalled", "http_error"}
_WORKER_STATES = ("booting", "idle", "busy", "parked", "retiring")
#: the subscription windows the CLIs name (see :mod:`clibridge._usage`): codex's primary
#: and secondary, claude's ``rateLimitType`` values, ``unified`` when claude names none
WINDOW_KINDS = frozenset(
    {
        "primary",
        "secondary",
        "five_hour",
        "seven_day",
        "seven_day_opus",
        "seven_day_sonnet",
        "overage",
        "unified",
    }
)

_QUEUE_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_FIRST_CONTENT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0)
_DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class PoolCollector(Collector):
    """Pool gauges and counters, read from ``service.statistics()`` at each scrape."""

    def __init__(self, service: TurnService) -> None:
        self._service = service

    def collect(self) -> Iterable[Metric]:
        stats: dict[str, Any] = dict(self._service.statistics())
        workers = GaugeMetricFamily(
            "clibridge_pool_workers", "Worker processes by state", labels=["backend", "state"]
        )
        gauges = {
            key: GaugeMetricFamily(f"clibridge_pool_{name}", text, labels=["backend"])
            for key, name, text in (
                ("queued", "queue_depth", "Requests waiting for a worker"),
                ("in_flight", "leases", "Leases held: turns running plus parked conversations"),
                ("permits_total", "capacity", "Concurrent turns the pool allows"),
                ("ready", "ready", "1 when the pool can serve"),
            )
        }
        counters = {
            key: CounterMetricFamily(f"clibridge_pool_{key}", text, labels=["backend"])
            for key, text in (
                ("boots", "Workers that booted"),
                (
                    "worker_waits",
                    "Checkouts that found no worker to take and waited for a boot or a release",
                ),
                ("crashes", "Workers that died while serving or idle"),
                ("boot_failures", "Workers that failed to boot"),
                ("timeouts", "Turns stopped by turn_timeout / stream_idle_timeout"),
                ("rejected", "Requests refused by the pool (queue full or queue timeout)"),
                ("served", "Turns served"),
            )
        }
        for backend, pool in sorted(stats.items()):
            if not isinstance(pool, dict):
                continue
            states = dict.fromkeys(_WORKER_STATES, 0)
            for worker in pool.get("workers", ()):
                state = worker.get("state")
                if state in states:
                    states[state] += 1
            for state, count in states.items():
                workers.add_metric([backend, state], count)
            for key, family in gauges.items():
                family.add_metric([backend], float(pool.get(key, 0)))
            for key, counter in counters.items():
                counter.add_metric([backend], float(pool.get(key, 0)))
        yield workers
        yield from gauges.values()
        yield from counters.values()
        yield from _account_metrics(stats)


def _accounts_of(pool: dict[str, Any]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """``(name, state, pool statistics)`` of each account of one backend's statistics: the
    configured accounts, or the implicit ``default`` one (its pool is the backend's)."""
    accounts = pool.get("accounts")
    if not accounts:
        return [("default", {"available": True, "cooldowns": 0}, pool)]
    return [(str(a["name"]), a, a.get("stats") or {}) for a in accounts]


def _window_kinds(subscription: Any) -> dict[str, dict[str, Any]]:
    """The windows of one ``subscription`` statistic by bounded kind; of several ``other``
    windows the most used one."""
    out: dict[str, dict[str, Any]] = {}
    windows = subscription.get("windows", {}) if isinstance(subscription, dict) else {}
    for name, window in sorted(windows.items()):
        kind = name if name in WINDOW_KINDS else "other"
        held = out.get(kind)
        if held is None or (window.get("used_percent") or 0) > (held.get("used_percent") or 0):
            out[kind] = window
    return out


def _account_metrics(stats: dict[str, Any]) -> Iterator[Metric]:
    labels = ["backend", "account"]
    available = GaugeMetricFamily(
        "clibridge_account_available",
        "1 when the account takes new requests (not cooling down)",
        labels=labels,
    )
    cooling = GaugeMetricFamily(
        "clibridge_account_cooldown_seconds",
        "Seconds the account still cools down (0 when available)",
        labels=labels,
    )
    cooldowns = CounterMetricFamily(
        "clibridge_account_cooldowns",
        "Times the account was cooled down (rate-limited or login expired)",
        labels=labels,
    )
    used = GaugeMetricFamily(
        "clibridge_subscription_used_percent",
        "Percent of the subscription window used, as the CLI last reported it",
        labels=[*labels, "window"],
    )
    resets = GaugeMetricFamily(
        "clibridge_subscription_reset_timestamp_seconds",
        "When the subscription window resets (unix seconds)",
        labels=[*labels, "window"],
    )
    for backend, pool in sorted(stats.items()):
        if not isinstance(pool, dict):
            continue
        for account, state, account_pool in _accounts_of(pool):
            is_available = bool(state.get("available", True))
            available.add_metric([backend, account], 1.0 if is_available else 0.0)
            left = 0.0 if is_available else float(state.get("cooling_down_for") or 0.0)
            cooling.add_metric([backend, account], left)
            cooldowns.add_metric([backend, account], float(state.get("cooldowns") or 0))
            for kind, window in _window_kinds(account_pool.get("subscription")).items():
                if window.get("used_percent") is not None:
                    used.add_metric([backend, account, kind], float(window["used_percent"]))
                if window.get("resets_at") is not None:
                    resets.add_metric([backend, account, kind], float(window["resets_at"]))
    yield from (available, cooling, cooldowns, used, resets)


class Metrics:
    """One app's metrics: :meth:`observe` each request, :meth:`render` for a scrape."""

    def __init__(self, service: TurnService) -> None:
        self._service = service
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.requests = Counter(
            "clibridge_requests",
            "Turn requests by dialect, model, backend and HTTP status",
            ["dialect", "model", "backend", "status"],
            registry=r,
        )
        self.queue_wait = Histogram(
            "clibridge_queue_wait_seconds",
            "Time from admission to a worker taking the turn",
            ["backend"],
            buckets=_QUEUE_BUCKETS,
            registry=r,
        )
        self.first_content = Histogram(
            "clibridge_time_to_first_content_seconds",
            "Time from the request to its first content (text, thinking or tool call)",
            ["dialect", "backend"],
            buckets=_FIRST_CONTENT_BUCKETS,
            registry=r,
        )
        self.duration = Histogram(
            "clibridge_request_duration_seconds",
            "Time from the request to its end (the last byte of a stream)",
            ["dialect", "backend", "stream"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "clibridge_tokens",
            "Tokens the CLIs reported, by kind (input, output, cache_read, cache_write)",
            ["backend", "model", "kind"],
            registry=r,
        )
        self.rate_limited = Counter(
            "clibridge_rate_limited",
            "429 answers by cause (key_quota, queue, upstream, other)",
            ["dialect", "cause"],
            registry=r,
        )
        self.errors = Counter(
            "clibridge_errors",
            "Error answers by clibridge error type",
            ["dialect", "error_type"],
            registry=r,
        )
        r.register(PoolCollector(service))
        self._models: frozenset[str] = frozenset()
        self.refresh_models()

    def refresh_models(self) -> None:
        """Take the model table anew: the ids the server lists and the CLI models they
        resolve to are the model label's values."""
        listed = self._service.models()
        self._models = frozenset(m.id for m in listed) | frozenset(m.cli_model for m in listed)

    def _model(self, record: RequestRecord) -> str:
        if record.model_asked in self._models:
            return record.model_asked
        if record.cli_model in self._models:
            return record.cli_model  # an accepted spelling the table resolved
        return "other" if record.model_asked else "none"

    def observe(self, record: RequestRecord) -> None:
        """Count one finished request (a request observer: synchronous, no IO)."""
        if record.endpoint not in TURN_PATHS:
            return  # not a model call: /v1/models, count_tokens, stats
        dialect = record.dialect if record.dialect in _DIALECTS else "none"
        backend = record.backend or "none"
        model = self._model(record)
        self.requests.labels(dialect, model, backend, str(record.status)).inc()
        if record.queue_wait_s is not None:
            self.queue_wait.labels(backend).observe(record.queue_wait_s)
        if record.ttfc_s is not None:
            self.first_content.labels(dialect, backend).observe(record.ttfc_s)
        if record.duration_s is not None:
            stream = "true" if record.stream else "false"
            self.duration.labels(dialect, backend, stream).observe(record.duration_s)
        for kind, count in _token_kinds(record):
            if count:
                self.tokens.labels(backend, model, kind).inc(count)
        error_type = record.error_type
        if error_type:
            bounded = error_type if error_type in _ERROR_TYPES else "other"
            self.errors.labels(dialect, bounded).inc()
        if record.status == 429:
            cause = _429_CAUSES.get(error_type or "", "other")
            self.rate_limited.labels(dialect, cause).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _token_kinds(record: RequestRecord) -> Iterator[tuple[str, int]]:
    yield "input", record.input_tokens or 0
    yield "output", record.output_tokens or 0
    yield "cache_read", record.cache_read_tokens or 0
    yield "cache_write", record.cache_write_tokens or 0
