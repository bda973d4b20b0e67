"""Serving the app on Hypercorn (trio worker), and the startup banner."""

from __future__ import annotations

import logging
import shlex
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from urllib.parse import urlsplit

import trio
from hypercorn.config import Config as HyperConfig
from quart_trio import QuartTrio

from .._config import Config, ServerConfig
from .._service import TurnService
from ._connections import ConnectionTable, fit_open_file_limit, serve_connections

log = logging.getLogger("clibridge.http")


def hypercorn_config(config: ServerConfig) -> HyperConfig:
    """Hypercorn settings for ``config``: one bind, quiet, graceful for ``drain_timeout``,
    idle connections closed after ``keep_alive_timeout``."""
    hyper = HyperConfig()
    host = config.host
    hyper.bind = [f"[{host}]:{config.port}" if ":" in host else f"{host}:{config.port}"]
    hyper.graceful_timeout = config.drain_timeout
    hyper.accesslog = None  # access logging costs per request; opt in with log_level=debug
    hyper.errorlog = logging.getLogger("hypercorn.error")
    # keep-alive connections idle longer than this are closed (clients reconnect); the
    # timer works because serve_connections keeps Quart-Trio from cancelling it
    hyper.keep_alive_timeout = config.keep_alive_timeout
    hyper.include_server_header = False
    return hyper


def _parse_bind(bind: str) -> tuple[str, int]:
    parts = urlsplit(bind)
    if parts.hostname is None or parts.port is None:  # pragma: no cover - hypercorn's format
        raise RuntimeError(f"unexpected bind from hypercorn: {bind!r}")
    return parts.hostname, parts.port


async def serve_http(
    app: QuartTrio,
    config: ServerConfig,
    *,
    shutdown_trigger: Callable[[], Awaitable[None]],
    connections: ConnectionTable | None = None,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` until ``shutdown_trigger`` returns, then drain gracefully.

    Reports the bound ``(host, port)`` through ``task_status`` once listening (port 0 in
    the config picks a free port). Open connections are kept in ``connections`` (a new
    table for ``max_connections`` by default; pass one to read its statistics): idle
    ones close after ``keep_alive_timeout``, and at the cap a new connection replaces
    the longest-idle one (idle for a second at least; else it gets 503; see
    :mod:`._connections`). When the trigger fires, the listener
    closes at once, idle connections are closed, the app's ``draining`` event is set so
    open streams end with a final event, and in-flight requests get ``drain_timeout``
    before they are cancelled.
    """
    if connections is None:
        connections = ConnectionTable(fit_open_file_limit(config.max_connections))
    hyper = hypercorn_config(config)
    if log.isEnabledFor(logging.DEBUG):
        hyper.accesslog = logging.getLogger("hypercorn.access")

    async def trigger() -> None:
        await shutdown_trigger()
        draining = getattr(app, "draining", None)
        if isinstance(draining, trio.Event):
            draining.set()

    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(
            partial(serve_connections, app, hyper, connections, shutdown_trigger=trigger)
        )
        host, port = _parse_bind(binds[0])
        log.info("listening on http://%s:%d", host, port)
        task_status.started((host, port))


def banner(
    config: Config,
    host: str,
    port: int,
    service: TurnService,
    why: Sequence[str] = (),
    *,
    named_keys: int = 0,
) -> str:
    """The startup banner: URL, dashboard, backends and why each was chosen (``why``: the
    backend choice's notes: chosen explicitly, login detected, or no login found), a loud
    fake-CLI notice, pool state, how clients authenticate (``named_keys``), a curl to try.

    The fake notice says why the fake serves: no login found (``backend = "auto"``), or
    chosen on purpose (``backend = "fake"``).
    """
    readiness = service.readiness()
    url_host = f"[{host}]" if ":" in host else host
    base = f"http://{url_host}:{port}"
    models = list(service.models())
    backends = sorted({m.backend for m in models}) or ["(none)"]
    model = next((m.id for m in models if not m.fake), None) or (
        models[0].id if models else "default"
    )
    on_purpose = config.backend == "fake"
    pool = readiness.reason
    lines = [
        "",
        f"clibridge is listening on {base}",
        f"  OpenAI base URL:     {base}/v1",
        f"  Anthropic base URL:  {base}",
        f"  dashboard:           {base}/dashboard",
        f"  backends:            {', '.join(backends)} ({config.backend})",
        *(f"    {note}" for note in why),
        f"  pool:                {pool}",
        f"  auth:                {_auth_line(config, named_keys)}",
    ]
    if config.claude.tui:
        lines.append(
            "  tui:                 claude workers are interactive sessions in tmux panes; "
            "watch: clibridge tui ls, clibridge tui attach N"
        )
    if readiness.fake:
        bar = "!" * 72
        if on_purpose:
            notice = [
                "!!  FAKE CLI: the fake backend was chosen on purpose (--backend fake, or",
                "!!  backend = fake in CLIBRIDGE_BACKEND / the config file), so clibridge",
                "!!  answers with the bundled FAKE CLIs. Replies are canned test data, not a",
                "!!  model. For real replies start with --backend auto|claude|codex|both.",
            ]
        else:
            notice = [
                "!!  FAKE CLI: no logged-in claude / codex was found, so clibridge answers",
                "!!  with the bundled FAKE CLI. Replies are canned test data, not a model.",
                "!!  Log in (`claude setup-token`, then set CLAUDE_CODE_OAUTH_TOKEN) and restart,",
                "!!  or choose explicitly with --backend claude|codex.",
            ]
        lines += ["", bar, *notice, bar]
    body = (
        '{"model": "' + model + '", "stream": true, '
        '"messages": [{"role": "user", "content": "Say hello"}]}'
    )
    curl = ["curl", "-N", f"{base}/v1/chat/completions", "-H", "Content-Type: application/json"]
    if config.server.auth_token or named_keys:
        curl += ["-H", "Authorization: Bearer $CLIBRIDGE_API_KEY"]
    curl += ["-d", body]
    command = " ".join(
        f'"{arg}"' if arg.startswith("Authorization") else shlex.quote(arg) for arg in curl
    )
    lines += ["", "Try it:", f"  {command}", ""]
    return "\n".join(lines)


def _auth_line(config: Config, named_keys: int) -> str:
    parts = ["token required"] if config.server.auth_token else []
    if named_keys:
        parts.append(
            f"{named_keys} named key{'s' if named_keys != 1 else ''} (clibridge keys list)"
        )
    return " + ".join(parts) if parts else "none (loopback only; clibridge keys add NAME)"
