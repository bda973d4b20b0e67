"""Run the pinned Aider client against a clibridge: find it, give it a project, run one message.

Used by the tests in this package and by :mod:`tests.aider.record_samples`.

- :func:`find_aider` locates what ``scripts/install-aider.sh`` installs
  (``$CLIBRIDGE_AIDER_DIR``, else ``<repo>/.cache/aider``) and checks the pinned version.
- :func:`make_project` builds an isolated ``HOME`` (Aider writes ``~/.aider/``) and a project
  directory holding :data:`EDIT_FILE` and the model metadata file.
- :func:`aider_argv` is the command line a user runs (docs/clients.md, "Aider"): one
  ``--message``, non-interactive, no git, over either of the two routes Aider's LiteLLM offers
  for a custom server (:data:`ROUTES`): ``openai/<model>`` with ``--openai-api-base <url>/v1``
  (Chat Completions) or ``anthropic/<model>`` with ``ANTHROPIC_API_BASE=<url>`` (Messages).
- :func:`run_aider` runs it in its own process group with a deadline; whatever is left of the
  group afterwards is killed and reported (:attr:`AiderRun.leftovers`).

Aider must talk to nothing but the loopback clibridge. Left alone it fetches LiteLLM's model
price list from raw.githubusercontent.com twice at start: Aider's own model-info cache (stopped
by describing the model in a ``--model-metadata-file``) and LiteLLM's cost map (stopped by
``LITELLM_LOCAL_MODEL_COST_MAP=True``); update checks, release notes and analytics are off by
flags. Every proxied request goes to a :class:`NetworkTrap` on loopback, which records what was
asked for (``CONNECT raw.githubusercontent.com:443 ...``) and hangs up, and a
``sitecustomize`` (``sitetrap/``, on ``PYTHONPATH``) refuses and records any other socket
connection to anything but loopback, so a test sees any attempt to reach the internet instead
of waiting for it to time out.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import trio

from tests._real_clients import ClientRun, describe_output, next_run_logs, run_in_group

AIDER_VERSION = "0.86.2"
AIDER_DIR_ENV = "CLIBRIDGE_AIDER_DIR"
INSTALL_HINT = (
    f"run scripts/install-aider.sh (pip install of aider-chat=={AIDER_VERSION} into its own "
    "venv in .cache/aider, ~690 MB)"
)
REPO_ROOT = Path(__file__).resolve().parents[2]

#: the two ways Aider (through LiteLLM) reaches a custom server, and the model name each uses;
#: ``codex`` is the ``openai`` way to a model clibridge serves with codex
ROUTES: Mapping[str, str] = {
    "openai": "openai/sonnet",
    "anthropic": "anthropic/claude-sonnet-4-5",
    "codex": "openai/gpt-5",
}
#: LiteLLM's provider of each route: the prefix of its model name
PROVIDERS: Mapping[str, str] = {route: model.split("/")[0] for route, model in ROUTES.items()}
#: the API path each route calls
ROUTE_PATHS: Mapping[str, str] = {
    route: "/v1/messages" if provider == "anthropic" else "/v1/chat/completions"
    for route, provider in PROVIDERS.items()
}
API_KEY = "clibridge-local"

#: the file the project holds and the edit requests change
EDIT_FILE = "hello.py"
EDIT_BEFORE = 'def greet():\n    return "hello"\n'
EDIT_AFTER = 'def greet():\n    return "hello, world"\n'
#: the model's explanation, in front of its edit block: it must show in Aider's output
EDIT_PROSE = "I will change the greeting in hello.py."


def edit_reply(prose: str = EDIT_PROSE) -> str:
    """A model answer in Aider's ``diff`` edit format: one SEARCH/REPLACE block on
    :data:`EDIT_FILE` turning :data:`EDIT_BEFORE` into :data:`EDIT_AFTER`."""
    return (
        f"{prose}\n\n{EDIT_FILE}\n```python\n<<<<<<< SEARCH\n"
        '    return "hello"\n=======\n    return "hello, world"\n>>>>>>> REPLACE\n```\n'
    )


def model_metadata(routes: Sequence[str] = tuple(ROUTES)) -> dict[str, Any]:
    """Aider's ``--model-metadata-file`` content (LiteLLM's format) for the route models:
    with it Aider neither warns about an unknown model nor fetches LiteLLM's price list."""
    out: dict[str, Any] = {}
    for route in routes:
        out[ROUTES[route]] = {
            "max_input_tokens": 200000,
            "max_output_tokens": 64000,
            "input_cost_per_token": 0,
            "output_cost_per_token": 0,
            "litellm_provider": PROVIDERS[route],
            "mode": "chat",
        }
    return out


# --------------------------------------------------------------------------- install


@attrs.frozen
class AiderInstall:
    """Where the pinned Aider is; ``problem`` says why it cannot run."""

    aider: Path
    problem: str | None = None


def installed_version(venv: Path) -> str | None:
    """The version of ``aider-chat`` in ``venv`` (from its dist-info), None when absent."""
    for info in venv.glob("lib/python*/site-packages/aider_chat-*.dist-info"):
        return info.name.removeprefix("aider_chat-").removesuffix(".dist-info")
    return None


def find_aider(environ: Mapping[str, str] | None = None) -> AiderInstall:
    """Locate the pinned install (file-system look-ups only; nothing is started)."""
    env = os.environ if environ is None else environ
    venv = Path(env.get(AIDER_DIR_ENV) or REPO_ROOT / ".cache" / "aider") / "venv"
    exe = venv / "bin" / "aider"
    version = installed_version(venv)
    problem = None
    if not os.access(exe, os.X_OK):
        problem = f"no executable {exe}: {INSTALL_HINT}"
    elif version != AIDER_VERSION:
        problem = f"{exe} is version {version}, pinned {AIDER_VERSION}: {INSTALL_HINT}"
    return AiderInstall(aider=exe, problem=problem)


# --------------------------------------------------------------------------- network trap


@attrs.define
class NetworkTrap:
    """A loopback "proxy" that refuses everything: it records each request's first line."""

    port: int = 0
    attempts: list[str] = attrs.field(factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            data = b""
            with trio.move_on_after(2):
                while b"\n" not in data and len(data) < 4096:
                    chunk = await stream.receive_some(4096)
                    if not chunk:
                        break
                    data += chunk
            self.attempts.append(data.split(b"\r\n")[0].decode(errors="replace"))


@asynccontextmanager
async def open_network_trap() -> AsyncIterator[NetworkTrap]:
    """A :class:`NetworkTrap` serving on a free loopback port for the duration."""
    trap = NetworkTrap()
    async with trio.open_nursery() as nursery:
        listeners: list[trio.SocketListener] = await nursery.start(
            partial(trio.serve_tcp, trap._handle, 0, host="127.0.0.1")
        )
        listener = listeners[0]
        trap.port = listener.socket.getsockname()[1]
        try:
            yield trap
        finally:
            nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------- project


@attrs.frozen
class AiderProject:
    """One isolated Aider user: ``HOME`` and a project directory with :data:`EDIT_FILE`."""

    root: Path
    #: a git repository (Aider commits its edits, asking the model for the message)
    git: bool = False

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def project(self) -> Path:
        return self.root / "project"

    @property
    def metadata(self) -> Path:
        return self.project / ".aider.model.metadata.json"

    @property
    def edit_file(self) -> Path:
        return self.project / EDIT_FILE


def git(project: AiderProject, *args: str) -> str:
    """``git ARGS`` in the project (``HOME`` the project's, no system config); its stdout."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(project.home), "GIT_CONFIG_NOSYSTEM": "1"}
    done = subprocess.run(
        ["git", *args], cwd=project.project, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout


def make_project(root: Path, *, with_git: bool = False) -> AiderProject:
    """Create ``root/home`` and ``root/project`` (with :data:`EDIT_FILE` and the metadata);
    ``with_git``: the project is a repository with one commit holding :data:`EDIT_FILE`."""
    made = AiderProject(root, git=with_git)
    made.home.mkdir(parents=True, exist_ok=True)
    made.project.mkdir(parents=True, exist_ok=True)
    made.edit_file.write_text(EDIT_BEFORE)
    made.metadata.write_text(json.dumps(model_metadata(), indent=2) + "\n")
    if with_git:
        git(made, "init", "--quiet")
        git(made, "config", "user.name", "clibridge tests")
        git(made, "config", "user.email", "tests@clibridge.invalid")
        git(made, "add", EDIT_FILE)
        git(made, "commit", "--quiet", "-m", "the greeting")
    return made


def aider_argv(
    install: AiderInstall,
    project: AiderProject,
    route: str,
    base_url: str,
    message: str | None,
    *,
    stream: bool = True,
) -> list[str]:
    """The command line of one non-interactive Aider turn (``--message``; None: a chat read
    from stdin) on ``route`` against ``base_url`` (clibridge's root, no ``/v1``), with
    :data:`EDIT_FILE` in the chat and the ``diff`` (SEARCH/REPLACE) edit format; without git
    unless the project has it (then Aider commits each edit)."""
    argv = [str(install.aider)]
    if message is not None:
        argv += ["--message", message]
    argv.append("--yes-always")
    if not project.git:
        argv += ["--no-git", "--no-auto-commits"]
    argv += ["--no-check-update", "--no-show-release-notes"]
    argv += ["--no-show-model-warnings", "--analytics-disable", "--no-pretty"]
    argv += ["--model-metadata-file", str(project.metadata), "--model", ROUTES[route]]
    # Why: Aider knows gpt-5 and would pick openai/gpt-5-nano (a model clibridge does not
    # serve, and one more metadata fetch) for commit messages and summaries
    argv += ["--weak-model", ROUTES[route]]
    argv += ["--edit-format", "diff"]
    if PROVIDERS[route] == "openai":
        argv += ["--openai-api-base", f"{base_url}/v1", "--openai-api-key", API_KEY]
    else:
        # Why no /v1: LiteLLM appends /v1/messages to ANTHROPIC_API_BASE itself
        argv += ["--set-env", f"ANTHROPIC_API_BASE={base_url}", "--api-key", f"anthropic={API_KEY}"]
    if not stream:
        argv.append("--no-stream")
    argv.append(EDIT_FILE)
    return argv


def chat_input(messages: Sequence[str]) -> bytes:
    """Aider's stdin for a chat of ``messages``: each in ``{`` ... ``}``, Aider's multi-line
    input, so a directive can be a line of its own; Aider exits at the end of the input."""
    return "".join(f"{{\n{m}\n}}\n" for m in messages).encode()


#: holds the ``sitecustomize`` that refuses non-loopback sockets inside Aider's Python
SITE_TRAP = Path(__file__).with_name("sitetrap")


def aider_env(project: AiderProject, trap: NetworkTrap, trap_log: Path) -> dict[str, str]:
    """The environment Aider runs with: an allow-list, never the caller's whole env."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "PYTHONPATH": str(SITE_TRAP),
        "CLIBRIDGE_NET_TRAP_LOG": str(trap_log),
        "HOME": str(project.home),
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "HTTP_PROXY": trap.url,
        "HTTPS_PROXY": trap.url,
        "http_proxy": trap.url,
        "https_proxy": trap.url,
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }


# --------------------------------------------------------------------------- runs


@attrs.frozen
class AiderRun(ClientRun):
    """One finished Aider invocation; its :attr:`network`: requests Aider sent through the
    proxy variables (their first line), then connections it opened to anything but loopback
    (``host:port``)."""

    def describe(self) -> str:
        return describe_output(
            f"aider {' '.join(self.argv[1:3])!r}... exited {self.returncode} after "
            f"{self.seconds:.1f} s; network attempts {list(self.network)}",
            self.stdout,
            self.stderr,
            stdout_tail=4000,
        )


async def run_aider(
    install: AiderInstall,
    project: AiderProject,
    route: str,
    base_url: str,
    message: str | Sequence[str],
    *,
    stream: bool = True,
    deadline: float = 60.0,
) -> AiderRun:
    """Run Aider in ``project`` (see :func:`aider_argv`), bounded by ``deadline``: one turn
    with ``--message`` for a string, a chat typed on stdin (:func:`chat_input`) for a
    sequence of messages."""
    single = message if isinstance(message, str) else None
    argv = aider_argv(install, project, route, base_url, single, stream=stream)
    logs = next_run_logs(project.root / "logs")
    stdin = logs.path("stdin")
    stdin.write_bytes(b"" if isinstance(message, str) else chat_input(message))
    trap_log = logs.path("network")
    trap_log.touch()
    async with open_network_trap() as trap:
        ran = await run_in_group(
            argv,
            env=aider_env(project, trap, trap_log),
            cwd=project.project,
            logs=logs,
            stdin=stdin,
            deadline=deadline,
        )
    return AiderRun.finished(argv, ran, (*trap.attempts, *trap_log.read_text().split()))
