"""The claude spawn home: the HOME, working directory and environment a claude worker runs with.

Theory of operation
-------------------
A worker must behave like a plain model, the same on every machine: no onboarding
screens, no hooks or plugins from the operator's ``~/.claude``, no CLAUDE.md or
auto-memory leaking into the prompt, no auto-updater, no telemetry. So claude runs with
``HOME`` set to a directory clibridge owns (under its state dir, default
``platformdirs.user_state_dir("clibridge")``)::

    <state>/claude/home/.claude.json            onboarding done, the work dir trusted
    <state>/claude/home/.claude/settings.json   hooks, auto-memory, auto-updates off
    <state>/claude/work/                        the neutral, empty working directory

The settings file is rewritten on every start (an operator edit there is not honoured:
the settings are part of what clibridge guarantees). ``.claude.json`` is merged, because
the CLI itself writes into it (caches, counters).

The child environment is built from the shared allow-list (:mod:`clibridge._backends._env`:
:data:`~clibridge._backends._env.ALLOWED_ENV` and the configured ``pass_env``), never from the
inbound environment wholesale; on top of it claude never gets ``ANTHROPIC_API_KEY`` (it would
switch the login to API billing), ``ANTHROPIC_BASE_URL`` or ``CLAUDECODE`` (:data:`DENIED_ENV`)
unless the operator lists them in ``pass_env`` on purpose. ``CLAUDE_CODE_OAUTH_TOKEN`` (from
``claude setup-token``) is passed when set: it is how a subscription login reaches a spawn home
without copying a refreshable credentials file (which this module never does).

Everything this module creates under the state dir is the user's alone: directories 0700
and the files it writes 0600 (see :mod:`clibridge._state_dir`); the CLI runs with umask
077, so its transcripts under ``home/.claude/projects`` are 0600 too.

``use_real_home`` runs the CLI with the operator's real HOME (and its login, settings and
CLAUDE.md files); it is explicit in the config and logged as a warning. The neutral work
dir is used either way.

What the switches do was checked against claude 2.1.197: ``CLAUDE_CODE_DISABLE_CLAUDE_MDS``
stops CLAUDE.md discovery (the work dir's parents include the operator's home),
``CLAUDE_CODE_DISABLE_AUTO_MEMORY`` and ``autoMemoryEnabled: false`` the memory files,
``disableAllHooks`` every hook, ``DISABLE_AUTOUPDATER`` / ``autoUpdates: false`` the
updater, ``CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC`` telemetry and the hidden
title-generation request.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import attrs

from ..._config import AccountConfig, ClaudeConfig, Config
from ..._process import ChildSpec
from ..._state_dir import PRIVATE_FILE_MODE, default_state_dir, private_dir
from .. import StatusCommand
from .._env import ALLOWED_ENV, allow_listed_env

__all__ = [
    "ALLOWED_ENV",
    "DENIED_ENV",
    "FORCED_ENV",
    "SETTINGS",
    "SpawnHome",
    "account_environ",
    "allow_listed_env",
    "child_env",
    "default_state_dir",
    "logged_in",
    "login_status",
    "prepare_claude_home",
]

log = logging.getLogger(__name__)

#: never passed unless named in ``pass_env`` (and CLIBRIDGE_* never at all)
DENIED_ENV: Final = (
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_AUTH_TOKEN",
    "CLAUDECODE",
)
#: set for every claude child
FORCED_ENV: Final = {
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "CLAUDE_CODE_DISABLE_CLAUDE_MDS": "1",
    "CLAUDE_CODE_DISABLE_AUTO_MEMORY": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_TELEMETRY": "1",
}

SETTINGS: Final[Mapping[str, Any]] = {
    "disableAllHooks": True,
    "autoMemoryEnabled": False,
    "autoUpdates": False,
    "enableAllProjectMcpServers": False,
    "enabledPlugins": {},
    "includeCoAuthoredBy": False,
    "spinnerTipsEnabled": False,
    "cleanupPeriodDays": 1,
}


@attrs.frozen
class SpawnHome:
    """Where and with what environment claude workers run."""

    #: the HOME given to the CLI (the real one when ``use_real_home``)
    home: Path
    #: the neutral working directory
    workdir: Path
    #: the complete child environment
    env: Mapping[str, str]

    def child_spec(self, argv: list[str] | tuple[str, ...]) -> ChildSpec:
        return ChildSpec(argv=tuple(argv), env=dict(self.env), cwd=self.workdir)


def child_env(
    config: ClaudeConfig, home: Path, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The allow-listed environment of a claude child (see module doc)."""
    source = os.environ if environ is None else environ
    env = allow_listed_env(source, ALLOWED_ENV, config.pass_env)
    env["HOME"] = str(home)
    env.setdefault("PATH", os.defpath)
    env.update(FORCED_ENV)
    return env


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
    with open(fd, "w") as f:
        os.fchmod(fd, PRIVATE_FILE_MODE)  # a leftover .tmp may have had another mode
        f.write(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def prepare_claude_home(
    config: ClaudeConfig,
    state_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> SpawnHome:
    """Create (or refresh) the claude spawn home and return it. Blocking file IO: call it
    once at startup, or through ``trio.to_thread.run_sync``."""
    root = state_dir or default_state_dir()
    base = root / "claude"
    workdir = private_dir(base / "work", under=root)
    if config.use_real_home:
        home = Path(os.path.expanduser("~"))
        log.warning(
            "claude runs with the real HOME %s (use_real_home): its settings, hooks, "
            "plugins and login apply to every request",
            home,
        )
        return SpawnHome(home, workdir, child_env(config, home, environ))
    home = base / "home"
    private_dir(home / ".claude", under=root)
    state_file = home / ".claude.json"
    try:
        state: dict[str, Any] = json.loads(state_file.read_text())
        if not isinstance(state, dict):
            state = {}
    except (OSError, ValueError):
        state = {}
    state["hasCompletedOnboarding"] = True
    state["autoUpdates"] = False
    projects = state.setdefault("projects", {})
    project = projects.setdefault(str(workdir), {})
    project.update(hasTrustDialogAccepted=True, hasCompletedProjectOnboarding=True, allowedTools=[])
    _write_json(state_file, state)
    _write_json(home / ".claude" / "settings.json", SETTINGS)
    env = child_env(config, home, environ)
    if "CLAUDE_CODE_OAUTH_TOKEN" not in env and "ANTHROPIC_API_KEY" not in env:
        log.warning(
            "no CLAUDE_CODE_OAUTH_TOKEN in the environment: claude in the spawn home %s "
            "has no login (run `claude setup-token` and set it, or use use_real_home)",
            home,
        )
    return SpawnHome(home, workdir, env)


def account_environ(account: AccountConfig, environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` with ``account``'s token as its ``CLAUDE_CODE_OAUTH_TOKEN`` (read now:
    from the config, the named variable, or the first line of the token file). Raises
    ValueError saying what is missing; never quotes the token."""
    where = f"claude account {account.name!r}"
    token: str | None
    if account.token is not None:
        token = account.token
    elif account.token_env is not None:
        token = environ.get(account.token_env)
        if not token or not token.strip():
            raise ValueError(f"{where}: the environment variable {account.token_env} is not set")
    elif account.token_file is not None:
        try:
            text = account.token_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(
                f"{where}: cannot read its token file {account.token_file}: {exc}"
            ) from None
        token = text.strip().splitlines()[0].strip() if text.strip() else None
        if not token:
            raise ValueError(f"{where}: its token file {account.token_file} is empty")
    else:
        raise ValueError(f"{where} has no token (give token, token_env or token_file)")
    return {**environ, "CLAUDE_CODE_OAUTH_TOKEN": token.strip()}


def logged_in(config: Config, environ: Mapping[str, str], state_dir: Path) -> str | None:
    """Why we believe the claude CLI can reach its upstream, or None."""
    if environ.get("CLAUDE_CODE_OAUTH_TOKEN"):
        return "CLAUDE_CODE_OAUTH_TOKEN is set"
    if "ANTHROPIC_API_KEY" in config.claude.pass_env and environ.get("ANTHROPIC_API_KEY"):
        return "ANTHROPIC_API_KEY is passed through on purpose"
    if config.claude.use_real_home:
        creds = Path(environ.get("HOME", "~")).expanduser() / ".claude" / ".credentials.json"
        if creds.is_file():
            return f"use_real_home and {creds} exists"
    return None


def login_status(
    config: Config, command: tuple[str, ...], state_dir: Path, environ: Mapping[str, str]
) -> StatusCommand:
    """``claude auth status`` in the spawn home (no model call): it prints JSON with
    ``loggedIn`` and exits 1 when logged out (claude 2.1.197)."""
    home = (
        Path(environ.get("HOME") or os.path.expanduser("~"))
        if config.claude.use_real_home
        else state_dir / "claude" / "home"
    )
    return StatusCommand(
        (*command, "auth", "status"),
        child_env(config.claude, home, environ),
        _auth_status_ok,
        home,
    )


def _auth_status_ok(code: int, output: str) -> bool:
    start = output.find("{")
    try:
        status = json.loads(output[start:]) if start >= 0 else {}
    except ValueError:
        return False
    return code == 0 and isinstance(status, dict) and status.get("loggedIn") is True
