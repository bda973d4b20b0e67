"""``clibridge doctor``: check the machine a server would run on, and say what to fix.

Theory of operation
-------------------
Each check looks at one thing ``clibridge serve`` depends on and gives one
:class:`Finding`: ``ok``, ``warn`` (serving works, but probably not as the operator wants)
or ``fail`` (serve would refuse to start or could not serve), with a one-line fix. The
checks only read: nothing is created or chmod-ed, no model call is spent (the login is
asked of the CLI's own status command, :attr:`Backend.login_status
<clibridge._backends.Backend.login_status>`, run with the spawn home's environment), and
the port is probed by binding and closing a socket.

What is checked, in the order printed:

* the configuration as loaded (``clibridge config`` shows it whole) and the settings that
  look wrong: the workers' memory above the machine's, ``use_real_home``, CLI tools on;
* the bind: loopback, or an auth token (``load_config`` refuses the rest: a ``fail``);
* per backend that ``backend`` would serve: the binary on PATH, its version against the
  tested (pinned) one, the login;
* the state dir: owner, modes (0700 / 0600; ``serve`` tightens them at start, so loose
  modes are a ``warn`` unless another user owns the tree), free disk;
* the port: free, or taken by whom;
* ``tmux`` present and new enough when ``--tui`` is asked for (or ``claude.tui`` is set).

``doctor`` exits 1 when any finding is ``fail``, 0 otherwise.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import socket
import stat
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Literal

import attrs

from ._backends import BACKENDS, Backend
from ._backends._env import with_fake_knobs
from ._config import Config
from ._config_load import ConfigError, is_loopback
from ._process import CHILD_UMASK

Status = Literal["ok", "warn", "fail"]

#: rough resident memory of one worker process, for the "workers x memory" check (claude is
#: a Node process of ~200 MB; the codex app-server is a Rust binary serving many threads)
WORKER_MEMORY = {"claude": 200 * 2**20, "codex": 120 * 2**20}
_DEFAULT_WORKER_MEMORY = 200 * 2**20
#: free disk below this under the state dir: transcripts and session files stop being written
MIN_FREE_DISK = 200 * 2**20
LOW_FREE_DISK = 2 * 2**30
#: the oldest tmux the TUI driver is meant for (``new-session -e`` came with 3.0)
MIN_TMUX = (3, 0)
#: how long a CLI's ``--version`` / status command may take
COMMAND_TIMEOUT = 20.0

_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?([a-z]?)")


@attrs.frozen
class Finding:
    """One check's verdict: what was found, and the one-line fix when it is not ``ok``."""

    check: str
    status: Status
    detail: str
    fix: str = ""


def run_doctor(
    config: Config | ConfigError,
    environ: Mapping[str, str],
    *,
    tui: bool = False,
    state_dir: Path | None = None,
) -> list[Finding]:
    """Every check's finding for ``config`` (or the error that stopped it loading)."""
    if isinstance(config, ConfigError):
        return [
            Finding(
                "configuration",
                "fail",
                str(config),
                "correct the flag, CLIBRIDGE_* variable or config file it names "
                "(`clibridge config --help` lists them)",
            )
        ]
    from ._supervisor import state_dir as default_state_dir

    home = state_dir or default_state_dir(config)
    findings = [*check_config(config), check_bind(config)]
    for b, command in served_backends(config):
        findings += check_backend(b, command, config, home, environ, fake=config.backend == "fake")
    if config.backend == "auto" and not any(
        shutil.which(command[0], path=environ.get("PATH")) and b.logged_in(config, environ, home)
        for b, command in served_backends(config)
    ):
        fixes = "; ".join(f"`{b.login_fix}`" for b, _ in served_backends(config))
        findings.append(
            Finding(
                "backend",
                "warn",
                "backend = auto finds no installed, logged-in CLI: serve would answer with "
                "the bundled FAKE CLI (canned replies, not a model)",
                f"log in ({fixes}) and run doctor again",
            )
        )
    findings += check_state_dir(home)
    findings.append(check_port(config.server.host, config.server.port))
    # the TUI driver's setting (claude.tui, set by serve --tui) where this build has it
    if tui or config.claude.tui is True:
        findings.append(check_tmux(environ))
    return findings


def served_backends(config: Config) -> list[tuple[Backend, tuple[str, ...]]]:
    """The backends ``backend`` would serve, each with the command it would run."""
    mode = config.backend
    out = []
    for name, b in BACKENDS.items():
        if mode == "fake":
            if b.default:
                out.append((b, b.fake_command))
        elif mode == name or (mode in ("auto", "both") and b.default):
            out.append((b, b.settings(config).command))
    return out


# ---------------------------------------------------------------------- configuration


def check_config(config: Config, *, memory: int | None = None) -> list[Finding]:
    """Settings that load but look wrong. ``memory``: the machine's (psutil's by default)."""
    if memory is None:
        import psutil

        memory = psutil.virtual_memory().total
    out: list[Finding] = []
    pools = {b.name: b.settings(config).pool for b, _ in served_backends(config)}
    processes = {name: pool.workers + pool.spares for name, pool in pools.items()}
    need = sum(n * WORKER_MEMORY.get(name, _DEFAULT_WORKER_MEMORY) for name, n in processes.items())
    sizes = ", ".join(f"{n} {name}" for name, n in processes.items())
    if need > memory:
        out.append(
            Finding(
                "configuration",
                "warn",
                f"up to {sizes} worker processes (workers + spares) need about "
                f"{_size(need)}, more than this machine's {_size(memory)}",
                "lower --claude-workers / --codex-workers (or spares) so they fit in memory",
            )
        )
    else:
        out.append(
            Finding(
                "configuration",
                "ok",
                f"loaded (`clibridge config` prints it); backend = {config.backend}, "
                f"up to {sizes or 'no'} worker processes (~{_size(need)} of {_size(memory)})",
            )
        )
    for b, _ in served_backends(config):
        settings = b.settings(config)
        if getattr(settings, "use_real_home", False):
            out.append(
                Finding(
                    f"{b.name} home",
                    "warn",
                    f"{b.name}.use_real_home: the CLI runs with your own home, its settings, "
                    "hooks and instruction files apply to every request",
                    f"unset {b.name}.use_real_home and log in for clibridge ({b.login_fix})",
                )
            )
        if getattr(settings, "enable_cli_tools", False):
            out.append(
                Finding(
                    f"{b.name} tools",
                    "warn",
                    f"{b.name}.enable_cli_tools: every client may run shell commands and edit "
                    "files on this machine through the CLI",
                    f"unset {b.name}.enable_cli_tools unless every client is trusted",
                )
            )
    return out


def check_bind(config: Config) -> Finding:
    host = config.server.host
    if is_loopback(host):
        auth = "an auth token" if config.server.auth_token else "no auth"
        return Finding("bind", "ok", f"{host} is loopback ({auth})")
    if config.server.auth_token:
        return Finding("bind", "ok", f"{host} is reachable from the network, with an auth token")
    # load_config refuses this already; kept for a Config built in code
    return Finding(
        "bind",
        "fail",
        f"{host} is reachable from the network and no auth token is set",
        "set an auth token (--auth-token-file FILE or CLIBRIDGE_API_KEY) or bind 127.0.0.1",
    )


# ---------------------------------------------------------------------- the CLIs


def check_backend(
    b: Backend,
    command: tuple[str, ...],
    config: Config,
    state_dir: Path,
    environ: Mapping[str, str],
    *,
    fake: bool = False,
) -> list[Finding]:
    """The CLI of ``b``: found, its version, logged in (without a model call)."""
    chosen = config.backend in (b.name, "both")
    # in auto a missing CLI only means it is not served (the fake serves when none is)
    missing: Status = "fail" if chosen or fake else "warn"
    binary = shutil.which(command[0], path=environ.get("PATH"))
    if binary is None:
        return [
            Finding(
                f"{b.name} CLI",
                missing,
                f"{command[0]!r} not found on PATH",
                f"install it, or point {b.name}.command at it (--{b.name}-command)"
                + ("" if chosen else "; auto serves only the CLIs it finds"),
            )
        ]
    argv = (binary, *command[1:])
    if fake:
        return [Finding(f"{b.name} CLI", "ok", f"the bundled FAKE {b.name} ({' '.join(argv)})")]
    out = [_version_finding(b, argv, environ)]
    out.append(_login_finding(b, argv, config, state_dir, environ, chosen=chosen))
    return out


def _version_finding(b: Backend, argv: tuple[str, ...], environ: Mapping[str, str]) -> Finding:
    code, output = _run((*argv, "--version"), environ)
    match = _VERSION.search(output) if code == 0 else None
    if match is None:
        return Finding(
            f"{b.name} CLI",
            "fail",
            f"{argv[0]} --version failed (exit {code}): {_tail(output)}",
            f"reinstall {b.name}, or point {b.name}.command at a working one",
        )
    version = match.group(0)
    if not b.tested_version or version == b.tested_version:
        return Finding(f"{b.name} CLI", "ok", f"{argv[0]} {version} (the tested version)")
    return Finding(
        f"{b.name} CLI",
        "warn",
        f"{argv[0]} is {version}; clibridge was tested with {b.tested_version}",
        f"install {b.name} {b.tested_version} (scripts/install-real-clis.sh pins it) "
        "if requests fail in ways the docs do not describe",
    )


def _login_finding(
    b: Backend,
    argv: tuple[str, ...],
    config: Config,
    state_dir: Path,
    environ: Mapping[str, str],
    *,
    chosen: bool,
) -> Finding:
    detected = b.logged_in(config, environ, state_dir)
    # auto serves a CLI only when its login is detected; a chosen one serves regardless
    missing: Status = "warn"
    if b.login_status is None:
        if detected:
            return Finding(f"{b.name} login", "ok", detected)
        return Finding(f"{b.name} login", missing, "no login detected", f"run `{b.login_fix}`")
    status = b.login_status(config, argv, state_dir, environ)
    if not status.home.is_dir():
        if detected:
            return Finding(
                f"{b.name} login", "ok", f"{detected} (its home {status.home} is made by serve)"
            )
        return Finding(
            f"{b.name} login",
            missing,
            f"no login detected, and no home {status.home} to ask the CLI in yet",
            f"run `{b.login_fix}`",
        )
    env = status.env
    if argv[1:] == b.fake_command[1:]:
        # the bundled fake as the command: scripted by CLIBRIDGE_FAKE_* as under serve
        env = with_fake_knobs(env, environ)
    code, output = _run(status.argv, env)
    asked = " ".join([Path(status.argv[0]).name, *status.argv[len(argv) :]])
    if status.logged_in(code, output):
        why = f" ({detected})" if detected else ""
        if detected is None and not chosen:
            return Finding(
                f"{b.name} login",
                "warn",
                f"`{asked}` says logged in, but auto does not detect it, so auto will not serve it",
                f"choose it with --backend {b.name}, or log in with `{b.login_fix}`",
            )
        return Finding(f"{b.name} login", "ok", f"`{asked}`: logged in{why}")
    return Finding(
        f"{b.name} login",
        missing,
        f"`{asked}` in clibridge's spawn home: not logged in, or the login expired "
        f"({_tail(output)})",
        f"run `{b.login_fix}`",
    )


def _run(argv: Sequence[str], environ: Mapping[str, str]) -> tuple[int, str]:
    try:
        proc = subprocess.run(
            list(argv),
            env=dict(environ),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=COMMAND_TIMEOUT,
            # what a CLI writes in its home stays the user's alone, as under serve
            umask=CHILD_UMASK,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return -1, f"no answer within {COMMAND_TIMEOUT:g} s"
    except OSError as exc:
        return -1, str(exc)
    return proc.returncode, proc.stdout + proc.stderr


def _tail(output: str) -> str:
    """The end of a command's output, on one line (the verdict comes last; warnings the
    CLI prints first are dropped when something else is there)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    said = [line for line in lines if not line.upper().startswith("WARNING")] or lines
    text = " ".join(said)
    return ("..." + text[-157:]) if len(text) > 160 else (text or "no output")


# ---------------------------------------------------------------------- the state dir


def check_state_dir(root: Path) -> list[Finding]:
    """Owner and modes of everything under ``root``, and the free disk there."""
    out: list[Finding] = []
    if not root.exists():
        out.append(Finding("state dir", "ok", f"{root} does not exist yet; serve creates it 0700"))
    else:
        out.append(_modes_finding(root))
    existing = next(p for p in (root, *root.parents) if p.exists())
    free = shutil.disk_usage(existing).free
    if free < MIN_FREE_DISK:
        out.append(
            Finding(
                "disk",
                "fail",
                f"{_size(free)} free under {existing}",
                "free disk space there, or move the state dir (--state-dir)",
            )
        )
    elif free < LOW_FREE_DISK:
        out.append(
            Finding(
                "disk",
                "warn",
                f"only {_size(free)} free under {existing}",
                "free disk space there, or move the state dir (--state-dir)",
            )
        )
    else:
        out.append(Finding("disk", "ok", f"{_size(free)} free under {existing}"))
    return out


def _modes_finding(root: Path) -> Finding:
    uid = os.geteuid()
    loose: list[str] = []
    foreign: list[str] = []
    for path, st in _walk(root):
        if st.st_uid != uid:
            foreign.append(str(path))
        elif stat.S_IMODE(st.st_mode) & 0o077:
            loose.append(f"{path} {stat.S_IMODE(st.st_mode):04o}")
    if foreign:
        return Finding(
            "state dir",
            "fail",
            f"{len(foreign)} path(s) under {root} belong to another user (e.g. {foreign[0]})",
            f"run clibridge as their owner, or `chown -R {os.getuid()} {root}` as root",
        )
    if loose:
        return Finding(
            "state dir",
            "warn",
            f"{len(loose)} path(s) under {root} are open to group/other (e.g. {loose[0]})",
            f"`clibridge serve` tightens them at start; or now: chmod -R go-rwx {root}",
        )
    return Finding("state dir", "ok", f"{root}: yours, 0700 directories, 0600 files")


def _walk(root: Path) -> Iterator[tuple[Path, os.stat_result]]:
    pending = [root]
    yield root, root.lstat()
    while pending:
        directory = pending.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISLNK(st.st_mode):
                continue
            yield Path(entry.path), st
            if stat.S_ISDIR(st.st_mode):
                pending.append(Path(entry.path))


# ---------------------------------------------------------------------- the port, tmux


def check_port(host: str, port: int) -> Finding:
    """Bind ``host:port`` and close it again; when taken, say by which process."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            # as Hypercorn binds: a port in TIME_WAIT is free for it too
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host.strip("[]"), port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return Finding(
                "port",
                "fail",
                f"{where} is taken by {_listener(port)}",
                "stop that process, or serve on another port (--port N)",
            )
        return Finding(
            "port",
            "fail",
            f"cannot bind {where}: {exc.strerror or exc}",
            "bind an address of this machine (--host), or a port above 1023 (--port)",
        )
    return Finding("port", "ok", f"{where} is free")


def _listener(port: int) -> str:
    import psutil

    try:
        connections = psutil.net_connections(kind="inet")
    except (psutil.AccessDenied, OSError):
        return "another process (run as root to see which)"
    for conn in connections:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            if conn.pid is None:
                return "a process of another user"
            try:
                proc = psutil.Process(conn.pid)
                cmdline = " ".join(proc.cmdline()) or proc.name()
            except psutil.Error:
                return f"pid {conn.pid}"
            if len(cmdline) > 100:
                cmdline = cmdline[:97] + "..."
            return f"pid {conn.pid} ({cmdline})"
    return "another process"


def check_tmux(environ: Mapping[str, str]) -> Finding:
    binary = shutil.which("tmux", path=environ.get("PATH"))
    want = ".".join(map(str, MIN_TMUX))
    fix = f"install tmux {want} or newer (apt-get install tmux), or serve without --tui"
    if binary is None:
        return Finding("tmux", "fail", "--tui needs tmux; it is not on PATH", fix)
    code, output = _run((binary, "-V"), environ)
    match = _VERSION.search(output) if code == 0 else None
    if match is None:
        return Finding("tmux", "fail", f"{binary} -V failed: {_tail(output)}", fix)
    version = (int(match.group(1)), int(match.group(2)))
    if version < MIN_TMUX:
        return Finding("tmux", "fail", f"{binary} is {match.group(0)}; --tui needs {want}+", fix)
    return Finding("tmux", "ok", f"{binary} {match.group(0)}")


# ---------------------------------------------------------------------- printing


_LABEL = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}


def render(findings: Sequence[Finding]) -> str:
    """The report: one line per finding, its fix under it, and a summary line."""
    width = max((len(f.check) for f in findings), default=0)
    lines = []
    for f in findings:
        lines.append(f"{_LABEL[f.status]}  {f.check:<{width}}  {f.detail}")
        if f.fix:
            lines.append(f"      {'':<{width}}  fix: {f.fix}")
    fails = sum(f.status == "fail" for f in findings)
    warns = sum(f.status == "warn" for f in findings)
    if fails:
        lines.append(f"\n{fails} problem(s) stop clibridge from serving; {warns} warning(s).")
    elif warns:
        lines.append(f"\nclibridge can serve; {warns} warning(s) above.")
    else:
        lines.append("\nall good: `clibridge serve` should start.")
    return "\n".join(lines) + "\n"


def exit_code(findings: Sequence[Finding]) -> int:
    return 1 if any(f.status == "fail" for f in findings) else 0


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit in ("B", "KiB") else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover - the loop returns


__all__ = [
    "Finding",
    "check_backend",
    "check_bind",
    "check_config",
    "check_port",
    "check_state_dir",
    "check_tmux",
    "exit_code",
    "render",
    "run_doctor",
]
