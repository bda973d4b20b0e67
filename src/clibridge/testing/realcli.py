"""Run the pinned *real* ``claude`` and ``codex`` binaries offline, against a model stub.

Three pieces, each usable alone:

- :func:`find_real_clis` locates the binaries that ``scripts/install-real-clis.sh`` installs
  (``$CLIBRIDGE_REALCLI_DIR``, else ``<repo>/.cache/realcli``), including the native codex
  binary inside ``@openai/codex-linux-*`` (running it directly saves a ~43 MB node process),
  and checks their versions against the pins.
- :func:`claude_setup` / :func:`codex_setup` build everything it takes to run a CLI against a
  loopback model API: an isolated home (claude: ``$HOME/.claude.json`` seeded so no onboarding,
  trust dialog or API-key prompt appears; codex: ``CODEX_HOME``), an environment built from
  scratch (nothing of the caller's ``ANTHROPIC_*`` / ``OPENAI_*`` / ``CLAUDECODE`` leaks in),
  a neutral working directory outside any git repo (no ``CLAUDE.md`` / ``AGENTS.md`` pickup),
  and for codex the ``-c`` overrides naming the stub as model provider. They return small
  frozen records that drivers' tests hand to their workers.
- :func:`open_json_lines_process` spawns a CLI in its own process group and talks
  newline-delimited JSON with it; teardown kills the whole group, shielded and bounded.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import attrs
import trio

from .._backends.claude import build_argv
from .model_stub import STUB_API_KEY

__all__ = [
    "CLAUDE_VERSION",
    "CODEX_VERSION",
    "INSTALL_HINT",
    "REALCLI_DIR_ENV",
    "ClaudeSetup",
    "CodexSetup",
    "JsonLinesProcess",
    "RealClis",
    "claude_setup",
    "codex_setup",
    "find_real_clis",
    "open_json_lines_process",
]

CLAUDE_VERSION = "2.1.197"
CODEX_VERSION = "0.169.0"
REALCLI_DIR_ENV = "CLIBRIDGE_REALCLI_DIR"
INSTALL_HINT = "run scripts/install-real-clis.sh (npm install of the pinned CLIs, ~640 MB)"
#: the model names the setups pass; the stub echoes whatever it is asked for
CLAUDE_STUB_MODEL = "claude-sonnet-4-5"
CODEX_STUB_MODEL = "gpt-stub"
#: the env var codex reads the stub provider's key from
CODEX_KEY_ENV = "STUB_KEY"

_REPO_ROOT = Path(__file__).resolve().parents[3]


@attrs.frozen
class RealClis:
    """Where the real CLIs are; a None path comes with a reason in ``problems``."""

    claude: Path | None
    codex: Path | None
    #: the platform binary the npm ``codex`` launcher would run
    codex_native: Path | None
    #: the ``@openai/codex`` package root (the launcher passes it to the native binary)
    codex_package_root: Path | None
    problems: Mapping[str, str] = attrs.field(factory=dict)

    def missing(self, name: str) -> str | None:
        """Why ``name`` ("claude" or "codex") cannot run, or None when it can."""
        return self.problems.get(name)


def package_version(package_dir: Path) -> str | None:
    """The ``version`` of the npm package installed in ``package_dir``, None when unreadable."""
    try:
        version = json.loads((package_dir / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None
    return str(version)


def find_real_clis(environ: Mapping[str, str] | None = None) -> RealClis:
    """Locate the pinned CLIs. Pure file-system look-ups: no process is started.

    ``$CLIBRIDGE_REALCLI_DIR`` names the install directory (the one holding
    ``node_modules``, as for the install script) or directly a ``.bin`` directory.
    """
    env = os.environ if environ is None else environ
    root = Path(env.get(REALCLI_DIR_ENV) or _REPO_ROOT / ".cache" / "realcli")
    bin_dir = root / "node_modules" / ".bin"
    if not bin_dir.is_dir() and (root / "claude").exists():
        bin_dir = root
    modules = bin_dir.parent
    problems: dict[str, str] = {}

    def check(name: str, package: Path, pinned: str) -> Path | None:
        exe = bin_dir / name
        if not os.access(exe, os.X_OK):
            problems[name] = f"no executable {exe}: {INSTALL_HINT}"
            return None
        version = package_version(package)
        if version != pinned:
            problems[name] = f"{exe} is version {version}, pinned {pinned}: {INSTALL_HINT}"
            return None
        return exe

    claude = check("claude", modules / "@anthropic-ai" / "claude-code", CLAUDE_VERSION)
    codex_root = modules / "@openai" / "codex"
    codex = check("codex", codex_root, CODEX_VERSION)
    native = None
    for candidate in sorted(modules.glob("@openai/codex-linux-*/vendor/*/bin/codex")):
        if os.access(candidate, os.X_OK):
            native = candidate
            break
    return RealClis(
        claude=claude,
        codex=codex,
        codex_native=native if codex else None,
        codex_package_root=codex_root.resolve() if codex else None,
        problems=problems,
    )


def _base_env(home: Path) -> dict[str, str]:
    """The environment every real CLI gets: an allow-list, never the caller's whole env."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "TMPDIR": str(home / "tmp"),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        # Why: a proxy from the caller's env must never see loopback stub traffic.
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    return env


@attrs.frozen
class ClaudeSetup:
    """How to run the real claude against a stub: ``argv_prefix + args`` with ``env`` in ``cwd``."""

    argv_prefix: tuple[str, ...]
    env: Mapping[str, str]
    home: Path
    cwd: Path
    base_url: str
    api_key: str
    model: str = CLAUDE_STUB_MODEL

    def stream_json_argv(self, *extra: str, tools: str | None = "") -> list[str]:
        """The stream-json worker command line of FINDINGS.md (``tools=None``: default tools)."""
        argv = build_argv(self.argv_prefix, model=self.model, enable_cli_tools=tools != "")
        if tools:
            argv += ["--tools", tools]
        return [*argv, *extra]


def claude_setup(
    claude: Path,
    base_url: str,
    home: Path,
    *,
    cwd: Path | None = None,
    api_key: str = STUB_API_KEY,
    extra_env: Mapping[str, str] | None = None,
) -> ClaudeSetup:
    """Prepare ``home`` (created if needed) for claude talking to ``base_url``.

    ``cwd`` defaults to ``home/work``; it is marked trusted in ``.claude.json``.
    """
    home = home.resolve()
    cwd = (cwd or home / "work").resolve()
    cwd.mkdir(parents=True, exist_ok=True)
    (home / ".claude").mkdir(parents=True, exist_ok=True)
    seeds = {
        "hasCompletedOnboarding": True,
        "lastOnboardingVersion": CLAUDE_VERSION,
        "numStartups": 1,
        "autoUpdates": False,
        # Why: claude asks once whether to use an ANTHROPIC_API_KEY; it remembers the answer
        # by the key's last 20 characters.
        "customApiKeyResponses": {"approved": [api_key[-20:]], "rejected": []},
        "projects": {
            str(cwd): {
                "hasTrustDialogAccepted": True,
                "hasCompletedProjectOnboarding": True,
                "allowedTools": [],
            }
        },
    }
    (home / ".claude.json").write_text(json.dumps(seeds, indent=2))
    env = _base_env(home)
    env.update(
        {
            "ANTHROPIC_BASE_URL": base_url,
            "ANTHROPIC_API_KEY": api_key,
            # Why: without it stream-json mode makes a hidden title-generation upstream call.
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_AUTOUPDATER": "1",
            "DISABLE_TELEMETRY": "1",
            "DISABLE_ERROR_REPORTING": "1",
        }
    )
    env.update(extra_env or {})
    return ClaudeSetup(
        argv_prefix=(str(claude),),
        env=env,
        home=home,
        cwd=cwd,
        base_url=base_url,
        api_key=api_key,
    )


@attrs.frozen
class CodexSetup:
    """How to run the real codex against a stub: ``app_server_argv()`` with ``env`` in ``cwd``."""

    argv_prefix: tuple[str, ...]
    #: ``-c key=value`` pairs, flattened, naming the stub as the model provider
    config_args: tuple[str, ...]
    env: Mapping[str, str]
    #: CODEX_HOME
    home: Path
    cwd: Path
    base_url: str
    model: str = CODEX_STUB_MODEL

    def app_server_argv(self, *extra: str) -> list[str]:
        """``codex app-server -c ...``."""
        return [*self.argv_prefix, "app-server", *self.config_args, *extra]


def _toml_value(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def codex_setup(
    clis: RealClis,
    base_url: str,
    home: Path,
    *,
    cwd: Path | None = None,
    native: bool = True,
    provider_options: Mapping[str, str | int | bool] | None = None,
    extra_config: Mapping[str, str | int | bool] | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> CodexSetup:
    """Prepare ``home`` (the CODEX_HOME; HOME is ``home/user``) for codex talking to ``base_url``.

    ``base_url`` is the stub's root (``/v1`` is appended). ``native`` runs the platform binary
    directly when there is one. ``provider_options`` go into the stub provider's table (e.g.
    ``{"request_max_retries": 0, "stream_max_retries": 0}`` for fast error tests);
    ``extra_config`` become more ``-c key=value`` overrides.
    """
    if clis.codex is None:
        raise FileNotFoundError(clis.missing("codex") or "codex not found")
    home = home.resolve()
    cwd = (cwd or home / "work").resolve()
    cwd.mkdir(parents=True, exist_ok=True)
    user_home = home / "user"
    user_home.mkdir(parents=True, exist_ok=True)
    provider: dict[str, str | int | bool] = {
        "name": "stub",
        "base_url": base_url.rstrip("/") + "/v1",
        "wire_api": "responses",
        "env_key": CODEX_KEY_ENV,
    }
    provider.update(provider_options or {})
    table = ",".join(f"{k}={_toml_value(v)}" for k, v in provider.items())
    config = [
        "-c",
        "model_provider=stub",
        "-c",
        f"model_providers.stub={{{table}}}",
        "-c",
        f"model={CODEX_STUB_MODEL}",
    ]
    for key, value in (extra_config or {}).items():
        config += ["-c", f"{key}={_toml_value(value)}"]
    env = _base_env(user_home)
    env.update({"CODEX_HOME": str(home), CODEX_KEY_ENV: "sk-stub"})
    if native and clis.codex_native is not None:
        prefix: tuple[str, ...] = (str(clis.codex_native),)
        # What the npm launcher sets before it runs the native binary (update hints only).
        env["CODEX_MANAGED_BY_NPM"] = "1"
        env["CODEX_MANAGED_PACKAGE_ROOT"] = str(clis.codex_package_root)
    else:
        prefix = (str(clis.codex),)
    env.update(extra_env or {})
    return CodexSetup(
        argv_prefix=prefix,
        config_args=tuple(config),
        env=env,
        home=home,
        cwd=cwd,
        base_url=base_url,
    )


# --------------------------------------------------------------------- driving a child


class JsonLinesProcess:
    """A child speaking newline-delimited JSON on stdio (see :func:`open_json_lines_process`)."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        #: every message read from stdout, in order (non-JSON lines kept as ``{"_raw": line}``)
        self.received: list[Any] = []
        #: the last few KB of stderr, for failure messages
        self.stderr_tail = b""
        self._buffer = bytearray()
        self._eof = False

    @property
    def pid(self) -> int:
        """The child's pid, which is also its process group id."""
        return self.process.pid

    async def send(self, message: Any) -> None:
        """Write one JSON line to the child's stdin."""
        assert self.process.stdin is not None
        await self.process.stdin.send_all(json.dumps(message).encode() + b"\n")

    async def receive(self) -> Any:
        """The next stdout line, parsed. Raises EOFError when stdout closed."""
        assert self.process.stdout is not None
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                if not line.strip():
                    continue
                try:
                    message = json.loads(line)
                except ValueError:
                    message = {"_raw": line.decode("utf-8", "replace")}
                self.received.append(message)
                return message
            if self._eof:
                raise EOFError(
                    f"the child closed stdout; stderr tail: {self.stderr_tail.decode('utf-8', 'replace')}"
                )
            chunk = await self.process.stdout.receive_some(65536)
            if not chunk:
                self._eof = True
            self._buffer += chunk

    async def receive_until(self, predicate: Callable[[Any], bool]) -> list[Any]:
        """Read messages until one satisfies ``predicate``; returns all read, that one last."""
        got = []
        while True:
            message = await self.receive()
            got.append(message)
            if predicate(message):
                return got

    async def _drain_stderr(self) -> None:
        assert self.process.stderr is not None
        # Why: an unread stderr pipe fills at 64 KB and then blocks the child.
        async for chunk in self.process.stderr:
            self.stderr_tail = (self.stderr_tail + chunk)[-8192:]


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError):
        os.killpg(pgid, sig)


async def _kill_group(process: trio.Process, grace: float) -> None:
    """TERM the child's group, wait up to ``grace`` s, then KILL it; shielded."""
    with trio.CancelScope(shield=True):
        _signal_group(process.pid, signal.SIGTERM)
        with trio.move_on_after(grace):
            await process.wait()
        # Why: also after a clean exit -- grandchildren may outlive their parent.
        _signal_group(process.pid, signal.SIGKILL)
        await process.wait()


@asynccontextmanager
async def open_json_lines_process(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    grace: float = 2.0,
) -> AsyncIterator[JsonLinesProcess]:
    """Spawn ``argv`` in a new process group; on exit kill the group (TERM, ``grace``, KILL)."""
    process = await trio.lowlevel.open_process(
        list(argv),
        stdin=-1,  # subprocess.PIPE
        stdout=-1,
        stderr=-1,
        env=dict(env),
        cwd=str(cwd),
        start_new_session=True,
    )
    child = JsonLinesProcess(process)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(child._drain_stderr)
            try:
                yield child
            finally:
                nursery.cancel_scope.cancel()
    finally:
        await _kill_group(process, grace)
        with trio.CancelScope(shield=True):
            for stream in (process.stdin, process.stdout, process.stderr):
                if stream is not None:
                    await stream.aclose()
