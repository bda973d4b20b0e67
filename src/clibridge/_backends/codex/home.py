"""The codex spawn home: the CODEX_HOME, working directory and environment of codex workers.

Theory of operation
-------------------
codex keeps its login (``auth.json``, which it refreshes itself), config and session files in
``CODEX_HOME``. clibridge gives its workers a CODEX_HOME of its own under the state dir::

    <state>/codex/home/     CODEX_HOME: the login made by ``clibridge login codex``
    <state>/codex/user/     HOME of the child (no dotfiles of the operator leak in)
    <state>/codex/work/     the neutral, empty working directory

The login lives there because ``clibridge login codex`` runs the CLI's own ``codex login``
with that CODEX_HOME: the CLI writes and refreshes its token file in place, and clibridge
never copies one (a copied refresh token goes stale the moment either copy refreshes).

``use_real_home`` uses the operator's own CODEX_HOME (``$CODEX_HOME`` or ``~/.codex``) with
its login, config and AGENTS.md; explicit in the config and logged as a warning.

The environment is an allow-list like the claude one (:data:`clibridge._backends._env.ALLOWED_ENV`
minus the claude token): ``OPENAI_API_KEY`` / ``CODEX_API_KEY`` / ``OPENAI_BASE_URL`` (they
would switch billing or the upstream) and ``CLIBRIDGE_*`` never pass unless named in
``pass_env``.

Its directories are 0700 (:mod:`clibridge._state_dir`) and codex runs with umask 077, so its
login and session transcripts are the user's alone.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

import attrs

from ..._config import CodexConfig, Config
from ..._process import ChildSpec
from ..._state_dir import default_state_dir, private_dir
from .. import LoginCommand, StatusCommand
from .._env import ALLOWED_ENV, allow_listed_env

log = logging.getLogger(__name__)

#: never passed unless named in ``pass_env`` (CODEX_HOME is always clibridge's own)
DENIED_ENV: Final = ("OPENAI_API_KEY", "CODEX_API_KEY", "OPENAI_BASE_URL", "CODEX_HOME")
_ALLOWED: Final = tuple(n for n in ALLOWED_ENV if n != "CLAUDE_CODE_OAUTH_TOKEN")


@attrs.frozen
class CodexHome:
    """Where and with what environment codex workers run."""

    #: the CODEX_HOME given to the CLI
    codex_home: Path
    workdir: Path
    env: Mapping[str, str]
    real: bool = False

    def child_spec(self, argv: Sequence[str]) -> ChildSpec:
        return ChildSpec(argv=tuple(argv), env=dict(self.env), cwd=self.workdir)

    def logged_in(self) -> bool:
        """True when the CLI has a login file here (never read, never copied)."""
        return (self.codex_home / "auth.json").is_file()


def child_env(
    config: CodexConfig, codex_home: Path, user_home: Path, environ: Mapping[str, str]
) -> dict[str, str]:
    env = allow_listed_env(environ, _ALLOWED, config.pass_env)
    env["HOME"] = str(user_home)
    env["CODEX_HOME"] = str(codex_home)
    env.setdefault("PATH", os.defpath)
    return env


def real_codex_home(environ: Mapping[str, str]) -> Path:
    if environ.get("CODEX_HOME"):
        return Path(environ["CODEX_HOME"]).expanduser()
    return Path(environ.get("HOME") or os.path.expanduser("~")) / ".codex"


def prepare_codex_home(
    config: CodexConfig,
    state_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> CodexHome:
    """Create the codex spawn home and return it (blocking file IO: call once at startup)."""
    source = os.environ if environ is None else environ
    root = state_dir or default_state_dir()
    base = root / "codex"
    workdir = private_dir(base / "work", under=root)
    user_home = private_dir(base / "user", under=root)
    if config.use_real_home:
        codex_home = real_codex_home(source)
        log.warning(
            "codex runs with the operator's CODEX_HOME %s (use_real_home): its login, "
            "config and AGENTS.md apply to every request",
            codex_home,
        )
        return CodexHome(
            codex_home, workdir, child_env(config, codex_home, user_home, source), True
        )
    codex_home = private_dir(base / "home", under=root)
    home = CodexHome(codex_home, workdir, child_env(config, codex_home, user_home, source))
    return home


def login_argv(config: CodexConfig, *extra: str) -> tuple[str, ...]:
    """The CLI's own login command (``codex login``), to run with the spawn home's env."""
    return (*config.command, "login", *extra)


def login_command(
    config: Config, state_dir: Path, environ: Mapping[str, str], cli_args: Sequence[str]
) -> LoginCommand:
    """``clibridge login codex``: ``codex login`` with the spawn home's CODEX_HOME and env."""
    home = prepare_codex_home(config.codex, state_dir, environ)
    argv = login_argv(config.codex, *cli_args)
    note = f"running {' '.join(argv)} with CODEX_HOME={home.codex_home}"
    return LoginCommand(argv, home.env, home.workdir, note)


def logged_in(config: Config, environ: Mapping[str, str], state_dir: Path) -> str | None:
    """Why we believe the codex CLI has a login clibridge may use, or None."""
    if config.codex.use_real_home:
        auth = real_codex_home(environ) / "auth.json"
        return f"use_real_home and {auth} exists" if auth.is_file() else None
    auth = state_dir / "codex" / "home" / "auth.json"
    return f"{auth} exists (clibridge login codex)" if auth.is_file() else None


def login_status(
    config: Config, command: tuple[str, ...], state_dir: Path, environ: Mapping[str, str]
) -> StatusCommand:
    """``codex login status`` with the spawn home's CODEX_HOME (no model call): exit 0 with
    "Logged in using ChatGPT" or "API key configured" when it has a login, exit 1 with "Not
    logged in" (or an error about the login file) otherwise (codex 0.169.0)."""
    codex_home = (
        real_codex_home(environ) if config.codex.use_real_home else state_dir / "codex" / "home"
    )
    env = child_env(config.codex, codex_home, state_dir / "codex" / "user", environ)
    return StatusCommand((*command, "login", "status"), env, _login_status_ok, codex_home)


def _login_status_ok(code: int, output: str) -> bool:
    return code == 0 and "not logged in" not in output.lower()
