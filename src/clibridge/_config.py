"""One validated, frozen configuration for the whole process.

Sources, later ones winning: defaults here < TOML file (``--config`` / ``CLIBRIDGE_CONFIG``)
< ``CLIBRIDGE_*`` environment variables < command-line flags. Loading lives in
:mod:`clibridge._config_load`; this module only declares the shape and the defaults.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import attrs

DEFAULT_HOST = "127.0.0.1"
#: Chosen to stay clear of the ports local model tools use (Ollama 11434, LM Studio 1234,
#: LiteLLM 4000, vLLM 8000, llama.cpp 8080, claude-code-router 3456, text-generation-webui 5000).
DEFAULT_PORT = 7483

BackendName = Literal["claude", "codex"]

_ORIGIN = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s?#@]*/?", re.IGNORECASE)
_HOST_NAME = re.compile(r"[^/\s?#@]+")


def _origins(_instance: Any, _attribute: Any, value: tuple[str, ...]) -> None:
    for origin in value:
        if origin != "null" and not _ORIGIN.fullmatch(origin):
            raise ValueError(
                f"{origin!r} is not an origin: expected scheme://host[:port] as a browser sends "
                "it (http://localhost:5173, app://my-app), or null"
            )


def _host_names(_instance: Any, _attribute: Any, value: tuple[str, ...]) -> None:
    for host in value:
        if "://" in host or not _HOST_NAME.fullmatch(host):
            raise ValueError(
                f"{host!r} is not a host name: expected a name as the Host header carries it "
                "(myhost.lan, clibridge.example.com; a :port is ignored), or * for any"
            )


@attrs.frozen
class PoolConfig:
    """Per-backend pool limits and timeouts (seconds)."""

    #: max concurrent turns
    workers: int = attrs.field(default=4, validator=attrs.validators.gt(0))
    #: booted workers kept ahead of demand
    spares: int = attrs.field(default=1, validator=attrs.validators.ge(0))
    max_queue: int = attrs.field(default=16, validator=attrs.validators.ge(0))
    queue_timeout: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))
    turn_timeout: float = attrs.field(default=600.0, validator=attrs.validators.gt(0))
    stream_idle_timeout: float = attrs.field(default=300.0, validator=attrs.validators.gt(0))
    ready_timeout: float = attrs.field(default=60.0, validator=attrs.validators.gt(0))
    #: retire a worker after this many turns
    max_turns: int = attrs.field(default=200, validator=attrs.validators.gt(0))
    #: retire a worker after this many seconds of life
    max_age: float = attrs.field(default=3600.0, validator=attrs.validators.gt(0))
    #: after an interrupt, how long the CLI has to end the turn before it is killed
    interrupt_grace: float = attrs.field(default=5.0, validator=attrs.validators.gt(0))
    #: after SIGTERM to the process group, how long before SIGKILL
    kill_grace: float = attrs.field(default=2.0, validator=attrs.validators.gt(0))
    restart_backoff_initial: float = attrs.field(default=0.5, validator=attrs.validators.gt(0))
    restart_backoff_max: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))
    #: this many consecutive boot failures mark the backend not ready
    crash_loop_threshold: int = attrs.field(default=5, validator=attrs.validators.gt(0))
    #: a parked conversation is reclaimed after this many seconds
    park_ttl: float = attrs.field(default=300.0, validator=attrs.validators.gt(0))
    #: under pressure, a turn parked on a client's tool call keeps its worker this long
    #: before a waiting request may take it (finished conversations give way at once)
    park_grace: float = attrs.field(default=2.0, validator=attrs.validators.ge(0))
    #: log a warning when a subscription window (as the CLI reports it) is this many
    #: percent used (shown in /v1/stats under "subscription")
    usage_warning: float = attrs.field(
        default=80.0, validator=[attrs.validators.gt(0), attrs.validators.le(100)]
    )
    #: a rate-limited account rests the delay the CLI announced, at least this many seconds
    #: (with several accounts; see ``accounts``)
    rate_limit_cooldown: float = attrs.field(default=60.0, validator=attrs.validators.gt(0))
    #: an account whose login expired is tried again after this many seconds, doubling on
    #: each further failure up to 16 times as long (with several accounts)
    login_recheck: float = attrs.field(default=60.0, validator=attrs.validators.gt(0))


_ACCOUNT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}")


def _account_name(_instance: Any, _attribute: Any, value: str) -> None:
    if not _ACCOUNT_NAME.fullmatch(value):
        raise ValueError(
            f"{value!r} is not an account name: 1 to 40 letters, digits, - or _ "
            "(it names a directory of the state dir)"
        )


@attrs.frozen
class AccountConfig:
    """One login of a backend (``[[claude.accounts]]``, ``[[codex.accounts]]``).

    claude: the account's ``CLAUDE_CODE_OAUTH_TOKEN`` (from ``claude setup-token``), given
    as ``token``, or better by reference: ``token_env`` names an environment variable of the
    server, ``token_file`` a file whose first line is the token. codex: the account's own
    login, made with ``clibridge login codex --account NAME`` (no token here).
    """

    name: str = attrs.field(validator=_account_name)
    token: str | None = attrs.field(default=None, repr=False)
    token_env: str | None = None
    token_file: Path | None = None


def _unique_accounts(_instance: Any, _attribute: Any, value: tuple[AccountConfig, ...]) -> None:
    names = [a.name for a in value]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"the account name {name!r} is used twice")


@attrs.frozen
class ClaudeConfig:
    #: argv prefix that runs the CLI (``claude``, or the fake: ``clibridge-fake-claude``)
    command: tuple[str, ...] = ("claude",)
    #: let the model use the CLI's own tools (shell, file edits, web). Off: a model, not a shell.
    enable_cli_tools: bool = False
    #: run in the operator's real HOME instead of clibridge's spawn home (explicit, logged)
    use_real_home: bool = False
    #: upstream 429: give up after this many ``api_retry`` events
    retry_attempts: int = attrs.field(default=2, validator=attrs.validators.ge(0))
    #: upstream 401: fail at once (True) or let the CLI retry
    fail_fast_on_401: bool = True
    #: extra environment variable names passed through to the CLI (beyond the allow-list)
    pass_env: tuple[str, ...] = ()
    #: the command an operator runs to log in again (shown in LoginExpired errors)
    login_hint: str = "claude setup-token  (then set CLAUDE_CODE_OAUTH_TOKEN)"
    #: several logins, each with its own spawn home and pool (none: the one login of the
    #: environment); flag form NAME=TOKEN_ENV
    accounts: tuple[AccountConfig, ...] = attrs.field(default=(), validator=_unique_accounts)
    #: run the workers as interactive claude sessions in tmux panes (serve --tui, docs/tui.md)
    tui: bool = False
    #: allow tui on a non-loopback bind (whoever reaches the port drives your interactive CLI)
    tui_trusted_network: bool = False
    pool: PoolConfig = PoolConfig()


@attrs.frozen
class CodexConfig:
    command: tuple[str, ...] = ("codex",)
    enable_cli_tools: bool = False
    use_real_home: bool = False
    #: concurrent threads (requests) one app-server process serves
    threads_per_worker: int = attrs.field(default=4, validator=attrs.validators.gt(0))
    #: start a thread ahead for the next request with the same system prompt and tools
    #: (thread/start is most of a warm request's own latency)
    prestart_threads: bool = True
    pass_env: tuple[str, ...] = ()
    #: extra ``-c key=value`` overrides for ``codex app-server``
    overrides: tuple[str, ...] = ()
    login_hint: str = "clibridge login codex"
    #: several logins, each with its own CODEX_HOME (``clibridge login codex --account NAME``)
    #: and pool (none: the one login of ``clibridge login codex``)
    accounts: tuple[AccountConfig, ...] = attrs.field(default=(), validator=_unique_accounts)
    pool: PoolConfig = PoolConfig(workers=2, spares=1)


@attrs.frozen
class ServerConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    #: API key clients must send (``Authorization: Bearer`` or ``x-api-key``); None = no auth,
    #: which is allowed on a loopback bind only
    auth_token: str | None = None
    max_body_bytes: int = attrs.field(default=16 * 1024 * 1024, validator=attrs.validators.gt(0))
    max_messages: int = attrs.field(default=2000, validator=attrs.validators.gt(0))
    max_prompt_chars: int = attrs.field(default=2_000_000, validator=attrs.validators.gt(0))
    #: a client that has not taken a chunk for this long is cut and its slot freed
    send_timeout: float = attrs.field(default=60.0, validator=attrs.validators.gt(0))
    #: SSE ``: keepalive`` comment after this much silence
    keepalive_interval: float = attrs.field(default=15.0, validator=attrs.validators.gt(0))
    #: on SIGTERM, how long in-flight turns may run before they are cancelled
    drain_timeout: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))
    #: an idle connection (between requests, or before its first) is closed after this many
    #: seconds; longer than the SDKs' own idle expiry (5 s), so they never reuse a closing one
    keep_alive_timeout: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))
    #: open client connections at most: beyond, a new connection replaces the one idle
    #: longest, or gets 503 when every one is busy (lowered to fit the open-file limit)
    max_connections: int = attrs.field(default=512, validator=attrs.validators.gt(0))
    #: browser origins (scheme://host[:port]) allowed to call the API with CORS; a request
    #: with any other Origin header gets 403
    cors_origins: tuple[str, ...] = attrs.field(default=(), validator=_origins)
    #: host names the Host header may carry besides the bind address and localhost /
    #: loopback addresses (a reverse proxy's public name); * accepts any
    allowed_hosts: tuple[str, ...] = attrs.field(default=(), validator=_host_names)
    #: serve Prometheus metrics on GET /metrics (admin key when auth is on)
    metrics: bool = True
    #: keep the request ledger (a SQLite row per request under the state dir); off only
    #: for comparisons (benchmarks) or a read-only state dir
    ledger: bool = True
    #: what the request ledger keeps of each exchange besides its row: off, metadata (the
    #: conversation and message identities, no text), full (the messages and the answer)
    capture: Literal["off", "metadata", "full"] = "off"
    #: days the request ledger keeps its rows (and captured exchanges); 0 keeps them forever
    ledger_retention_days: float = attrs.field(default=30.0, validator=attrs.validators.ge(0))


@attrs.frozen
class Config:
    server: ServerConfig = ServerConfig()
    claude: ClaudeConfig = ClaudeConfig()
    codex: CodexConfig = CodexConfig()
    #: which backends to run: "auto" detects logged-in CLIs and falls back to the bundled fake
    backend: Literal["auto", "claude", "codex", "fake", "both"] = "auto"
    #: where the CLIs' spawn homes live (platformdirs' user state dir if None)
    state_dir: Path | None = None
    #: model alias -> "backend:cli-model-id" overrides on top of the built-in table
    models: dict[str, str] = attrs.field(factory=dict)
    log_level: str = "info"
    #: log lines as text, or one JSON object per line (for log shippers)
    log_format: Literal["text", "json"] = "text"
