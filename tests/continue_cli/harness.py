"""Run the pinned Continue CLI (``cn``) against a clibridge: find it, write its config, run it.

Used by the tests in this package and by :mod:`tests.continue_cli.record_samples`.

- :func:`find_continue` locates what ``scripts/install-continue.sh`` installs
  (``$CLIBRIDGE_CONTINUE_DIR``, else ``<repo>/.cache/continue``), checks the pinned version
  and that a ``node`` is on ``PATH``.
- :func:`make_home` builds an isolated ``HOME`` (``cn`` writes ``~/.continue/``), a
  ``config.yaml`` naming clibridge as the one model (the config docs/clients.md shows), and a
  project directory holding :data:`NOTE_FILE`.
- :func:`run_cn` runs ``cn -p --config <config.yaml> PROMPT`` (headless: print the answer and
  exit) in the project directory, in its own process group, with a deadline; whatever is
  left of the group afterwards is killed and reported (:attr:`CnRun.leftovers`).

``cn`` must talk to nothing but the loopback clibridge. It has no setting for that: at start
it always asks ``https://api.continue.dev/cn/info`` for the newest version (with a machine
id), and Node 20's ``fetch`` ignores proxy variables. So ``net_trap.cjs`` is preloaded
(``NODE_OPTIONS=--require``): any connection to a host other than loopback is refused at once
and recorded (:attr:`CnRun.network`); the version check then fails quietly, as it does
offline. Telemetry is off unless an OpenTelemetry endpoint is configured; none is.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import attrs

from clibridge.testing.realcli import package_version
from tests._real_clients import ClientRun, describe_output, next_run_logs, run_in_group

CONTINUE_VERSION = "1.5.47"
CONTINUE_DIR_ENV = "CLIBRIDGE_CONTINUE_DIR"
INSTALL_HINT = (
    f"run scripts/install-continue.sh (npm install of @continuedev/cli@{CONTINUE_VERSION} "
    "into .cache/continue, ~80 MB; needs node >= 20 on PATH)"
)
REPO_ROOT = Path(__file__).resolve().parents[2]
NET_TRAP = Path(__file__).with_name("net_trap.cjs")
#: the one host ``cn`` contacts on its own: its version check, refused by the trap
VERSION_CHECK = "api.continue.dev:443"

#: Continue's providers for clibridge's two dialects, and the model each asks for
PROVIDERS: Mapping[str, str] = {"openai": "sonnet", "anthropic": "claude-sonnet-4-5"}
PROVIDER_PATHS: Mapping[str, str] = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages"}
API_KEY = "clibridge-local"

#: a file in the project that ``cn``'s own ``Read`` tool reads for the model
NOTE_FILE = "note.txt"
NOTE_CONTENT = "The secret word is PAPAYA-42."


# --------------------------------------------------------------------------- install


@attrs.frozen
class ContinueInstall:
    """Where the pinned ``cn`` is; ``problem`` says why it cannot run."""

    cn: Path
    node_dir: Path
    problem: str | None = None


def find_continue(environ: Mapping[str, str] | None = None) -> ContinueInstall:
    """Locate the pinned install (file-system look-ups only; nothing is started)."""
    env = os.environ if environ is None else environ
    modules = Path(env.get(CONTINUE_DIR_ENV) or REPO_ROOT / ".cache" / "continue")
    modules = modules / "client" / "node_modules"
    exe = modules / ".bin" / "cn"
    node = shutil.which("node", path=env.get("PATH", "/usr/local/bin:/usr/bin:/bin"))
    version = package_version(modules / "@continuedev" / "cli")
    problem = None
    if not os.access(exe, os.X_OK):
        problem = f"no executable {exe}: {INSTALL_HINT}"
    elif version != CONTINUE_VERSION:
        problem = f"{exe} is version {version}, pinned {CONTINUE_VERSION}: {INSTALL_HINT}"
    elif node is None:
        problem = f"no node on PATH: {INSTALL_HINT}"
    node_dir = Path(node).parent if node else Path("/usr/bin")
    return ContinueInstall(cn=exe, node_dir=node_dir, problem=problem)


# --------------------------------------------------------------------------- home


def model_config(provider: str, base_url: str) -> str:
    """Continue's ``config.yaml`` naming clibridge at ``base_url`` (its root) as the model.

    ``apiBase`` ends in ``/v1`` for both providers: Continue's OpenAI and Anthropic clients
    both append ``chat/completions`` / ``messages`` to it (without ``/v1`` the Anthropic one
    would ask for ``/messages``). (Strings are written as JSON
    strings, which YAML reads as double-quoted scalars.)
    """
    if provider not in PROVIDERS:
        raise ValueError(f"unknown Continue provider {provider!r}")
    model = {
        "name": f"{PROVIDERS[provider]} (clibridge)",
        "provider": provider,
        "model": PROVIDERS[provider],
        "apiBase": f"{base_url}/v1",
        "apiKey": API_KEY,
    }
    lines = ["name: clibridge", "version: 0.0.1", "schema: v1", "models:"]
    for i, (key, value) in enumerate(model.items()):
        lines.append(f"{'  - ' if i == 0 else '    '}{key}: {json.dumps(value)}")
    lines.append("    roles: [chat, edit, apply]")
    return "\n".join(lines) + "\n"


@attrs.frozen
class ContinueHome:
    """One isolated ``cn`` user: ``HOME``, its config and a project directory."""

    root: Path
    provider: str

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def project(self) -> Path:
        return self.root / "project"


def make_home(root: Path, provider: str, base_url: str) -> ContinueHome:
    """Create ``root`` with a config pointing ``cn`` at ``base_url`` over ``provider``."""
    made = ContinueHome(root, provider)
    made.home.mkdir(parents=True, exist_ok=True)
    made.project.mkdir(parents=True, exist_ok=True)
    (made.project / NOTE_FILE).write_text(NOTE_CONTENT + "\n")
    made.config.write_text(model_config(provider, base_url))
    return made


def cn_env(install: ContinueInstall, home: ContinueHome, trap_log: Path) -> dict[str, str]:
    """The environment ``cn`` runs with: an allow-list, never the caller's whole env."""
    return {
        "PATH": f"{install.node_dir}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home.home),
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "NODE_OPTIONS": f"--require {NET_TRAP}",
        "CLIBRIDGE_NET_TRAP_LOG": str(trap_log),
        "CONTINUE_CLI_ENABLE_TELEMETRY": "0",
        "CONTINUE_METRICS_ENABLED": "0",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }


# --------------------------------------------------------------------------- runs


@attrs.frozen
class CnRun(ClientRun):
    """One finished ``cn -p`` invocation; its :attr:`network`: ``host:port`` of every
    connection to anything but loopback."""

    @property
    def unexpected_network(self) -> tuple[str, ...]:
        """What it tried to reach besides its version check."""
        return tuple(n for n in self.network if n != VERSION_CHECK)

    def describe(self) -> str:
        return describe_output(
            f"cn -p exited {self.returncode} after {self.seconds:.1f} s; network attempts "
            f"{list(self.network)}",
            self.stdout,
            self.stderr,
        )


async def run_cn(
    install: ContinueInstall, home: ContinueHome, prompt: str, *, deadline: float = 60.0
) -> CnRun:
    """``cn -p --config <config.yaml> PROMPT`` in ``home``'s project, bounded by ``deadline``."""
    argv = (str(install.cn), "-p", "--config", str(home.config), prompt)
    logs = next_run_logs(home.root / "logs")
    trap_log = logs.path("network")
    trap_log.touch()
    ran = await run_in_group(
        argv,
        env=cn_env(install, home, trap_log),
        cwd=home.project,
        logs=logs,
        deadline=deadline,
    )
    return CnRun.finished(argv, ran, trap_log.read_text().split())
