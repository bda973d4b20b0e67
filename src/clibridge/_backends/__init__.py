"""Backend drivers, one package per CLI, behind a registry.

Theory of operation
-------------------
Each backend is a package with the same module names where the concept exists::

    claude/ codex/
        __init__.py    BACKEND (its registry entry) and the package's public names
        argv.py        the command line of one worker process
        protocol.py    the stdin / stdout message encoders and request params
        parser.py      stdout bytes in, typed messages out (h11 shape)
        translator.py  one turn's messages in, neutral events out (and error mapping)
        render.py      a conversation as the CLI takes it
        tools.py       client tools: what the CLI can honour, how they reach it
        home.py        the spawn home: HOME, work dir, child environment, login detection
        worker.py      the pool's worker (IO: spawn, handshake, pumping, teardown) and
                       its pool factory

Shared by the packages: :mod:`._host` (hosting a child process), :mod:`._session` (the
line transport to a CLI), :mod:`._worker_base` (the worker fields, and the background reset
of a one-conversation worker), :mod:`._lines` (the line buffer under the parsers),
:mod:`._tools` (client tool checks) and :mod:`._env` (the child environment's allow-list).

The rest of clibridge knows a backend only through its :class:`Backend` in
:data:`BACKENDS` (looked up with :func:`backend`): the supervisor picks, starts and routes
to backends, the models table reads their model names, the CLI offers their logins --
none of them names a backend. A new backend is one more package plus one entry here.
Each package's ``__init__`` stays light (its protocol modules only); the worker and the
spawn home are imported when a pool is built.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import attrs

if TYPE_CHECKING:
    from .._config import AccountConfig, Config, PoolConfig
    from .._events import Request
    from .._janitor import Janitor
    from .._pool import WorkerFactory

__all__ = [
    "BACKENDS",
    "FAKE_FALLBACK",
    "Backend",
    "BackendSettings",
    "LoginCommand",
    "StatusCommand",
    "account_state_dir",
    "backend",
]


class BackendSettings(Protocol):
    """What every backend's config section has (``config.claude``, ``config.codex``)."""

    @property
    def command(self) -> tuple[str, ...]: ...

    @property
    def pool(self) -> PoolConfig: ...


class PoolFactory(Protocol):
    """Builds the pool's worker factory; blocking setup (the spawn home), call once."""

    def __call__(
        self,
        config: Config,
        command: tuple[str, ...],
        state_dir: Path,
        janitor: Janitor | None,
        environ: Mapping[str, str],
        *,
        fake: bool,
    ) -> WorkerFactory: ...


@attrs.frozen
class LoginCommand:
    """``clibridge login <backend>``: the CLI's own login, run in the spawn home."""

    argv: tuple[str, ...]
    env: Mapping[str, str]
    cwd: Path
    #: printed before it runs (after ``clibridge: ``)
    note: str


@attrs.frozen
class StatusCommand:
    """The CLI's own login status command (``clibridge doctor``): no model call is spent."""

    argv: tuple[str, ...]
    env: Mapping[str, str]
    #: (exit code, stdout + stderr) -> logged in
    logged_in: Callable[[int, str], bool]
    #: the home the CLI reads its login from: a CLI asked in a missing one creates it, so
    #: the command is not run until ``serve`` made it (0700)
    home: Path


class StatusFactory(Protocol):
    def __call__(
        self, config: Config, command: tuple[str, ...], state_dir: Path, environ: Mapping[str, str]
    ) -> StatusCommand: ...


class LoginFactory(Protocol):
    def __call__(
        self,
        config: Config,
        state_dir: Path,
        environ: Mapping[str, str],
        cli_args: Sequence[str],
    ) -> LoginCommand: ...


def _one_thread(_config: Config) -> int:
    return 1


def _no_accounts(_config: Config) -> tuple[AccountConfig, ...]:
    return ()


def _same_environ(_account: AccountConfig, environ: Mapping[str, str]) -> Mapping[str, str]:
    return environ


@attrs.frozen
class Backend:
    """One backend: everything the supervisor, the models table and the CLI need of it."""

    #: its pool's name, its config section, the ``backend:`` of a model target
    name: str
    #: its config section (``config.claude``)
    settings: Callable[[Config], BackendSettings]
    #: built-in client model names -> the CLI's model id, in ``/v1/models`` order
    aliases: Mapping[str, str]
    #: model names not in the table that pass through to this backend unchanged
    model_pattern: re.Pattern[str]
    #: the request's tools checked for this CLI (raises UnsupportedFeature); may hide them
    check_tools: Callable[[Request], Request]
    #: the worker factory of its pool (see :class:`PoolFactory`)
    pool_factory: PoolFactory
    #: why we believe the CLI can reach its upstream, or None:
    #: ``logged_in(config, environ, state_dir)``
    logged_in: Callable[[Config, Mapping[str, str], Path], str | None]
    #: what the operator runs when no login is detected (in the startup notes)
    login_fix: str
    #: the bundled fake CLI (``backend = "fake"``, and the ``auto`` fallback)
    fake_command: tuple[str, ...]
    #: a ``-<effort>`` suffix on one of its model names sets the reasoning effort
    effort_suffix: bool = False
    #: its workers keep a conversation between requests (parked, resumed; see the supervisor)
    continuation: bool = True
    #: requests one worker process serves at once (the pool's leases per worker)
    threads_per_worker: Callable[[Config], int] = _one_thread
    #: ``clibridge login <name>`` (None: the CLI has no login clibridge runs for it)
    login: LoginFactory | None = None
    #: served by ``backend = "auto"``, ``"both"`` and ``"fake"`` (else only when named)
    default: bool = True
    #: the CLI version clibridge was tested with (the pinned one; ``clibridge doctor``)
    tested_version: str = ""
    #: the CLI's login status command, run with the spawn home's environment (no file
    #: IO, no model call; ``clibridge doctor``); None: the CLI has none
    login_status: StatusFactory | None = None
    #: its configured accounts (``[[claude.accounts]]``); none: the one login of the
    #: environment. Each account's pool gets the state dir ``account_state_dir(...)``
    accounts: Callable[[Config], tuple[AccountConfig, ...]] = _no_accounts
    #: the environment an account's pool factory gets: ``environ`` with the account's login
    #: in it (claude: its CLAUDE_CODE_OAUTH_TOKEN); ValueError saying what is missing
    account_environ: Callable[[AccountConfig, Mapping[str, str]], Mapping[str, str]] = _same_environ


# imported after Backend: the packages build their BACKEND with it
from . import claude, codex  # noqa: E402

#: every backend by name, in the order they are started and listed
BACKENDS: Mapping[str, Backend] = {b.name: b for b in (claude.BACKEND, codex.BACKEND)}

#: the backend whose fake CLI serves when ``auto`` finds no logged-in CLI
FAKE_FALLBACK = claude.BACKEND.name


def account_state_dir(state_dir: Path, account: str) -> Path:
    """The state dir an account's pool factory and login get: its spawn homes live under
    it as the implicit account's live under ``state_dir`` (``<state>/accounts/<name>/claude``)."""
    return state_dir / "accounts" / account


def backend(name: str) -> Backend:
    """The backend called ``name`` (KeyError naming the known ones)."""
    try:
        return BACKENDS[name]
    except KeyError:
        raise KeyError(f"no backend {name!r} (known: {', '.join(BACKENDS)})") from None
