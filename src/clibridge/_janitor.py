"""The hard-parent-death janitor: no CLI process outlives clibridge, even after SIGKILL.

Theory of operation
-------------------
Every worker runs in its own process group, and orderly teardown kills that group
(:mod:`clibridge._process`). What orderly teardown cannot cover is the server itself
dying hard (SIGKILL, the OOM killer): nothing runs in the server then. ``PR_SET_PDEATHSIG``
does not work with trio (it fires when the *thread* that spawned the child exits, and
trio spawns from worker threads), so instead:

* The supervisor starts one tiny separate process (:mod:`clibridge._janitor_proc`) in its
  own session (a Ctrl-C to the server's terminal group must not take it down first) and
  keeps the write end of a pipe to the janitor's stdin.
* As workers start and stop, the server writes ``+<pgid>`` / ``-<pgid>`` lines.
* When the pipe closes -- the server exited or was killed, the kernel closes its fds --
  the janitor reads EOF and SIGKILLs every group still registered, then exits.

On a clean shutdown every group has already been unregistered, so the janitor just exits.
The write end is close-on-exec (Python's default), so no CLI child inherits it and keeps
the pipe open after the server is gone. The remaining gap (a group spawned but not yet
registered when the server dies) is closed only by cgroups (systemd ``KillMode``).

**What the janitor gets.** It is ``python -S -P -c 'from clibridge._janitor_proc import
main; ...'``: no site-packages, no current directory on ``sys.path``, only the standard
library and clibridge's package directory (appended, so it shadows nothing). Its
environment is not the server's -- which holds API keys, ``DATABASE_URL`` and whatever
else the operator exported -- but only what an interpreter may need to start at all
(:data:`JANITOR_ENV`, when set); it runs no program, reads no locale (bytes in, signals
out), so not even ``PATH`` or ``LANG``. Its working directory is ``/``.

**When the janitor dies** (someone killed it), :meth:`Janitor.run`, a task in the
supervisor's root nursery, notices at once: the janitor holds its stdout open for life
and says ``ready`` on it, so EOF on that pipe is its death. The task reaps it, starts a
new one and re-sends every live group, immediately after a janitor that had run and with
backoff (:data:`RESTART_BACKOFF_INITIAL` .. :data:`RESTART_BACKOFF_MAX`) while new ones
fail to come up. Until the new one says ``ready``, :meth:`Janitor.readiness_note` is
shown in ``/readyz`` (the server keeps serving: only the hard-kill safety net is gone).

States (:class:`JanitorState`)::

    STARTING --ready--> UP --EOF--> DOWN --respawn--> STARTING
    STARTING --EOF (died before ready)--> DOWN           any --close()--> CLOSED
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import attrs
import trio

log = logging.getLogger(__name__)

#: the module the janitor process runs (its ``main()``); stdlib-only
JANITOR_MODULE = "clibridge._janitor_proc"
#: server variables the janitor's interpreter may need to start, passed only when set:
#: a relocated Python's home, a shared libpython outside the loader's default paths
JANITOR_ENV: Final = ("PYTHONHOME", "LD_LIBRARY_PATH", "DYLD_LIBRARY_PATH")
#: restart delays while new janitors die before they are ready (one that ran restarts at once)
RESTART_BACKOFF_INITIAL = 0.1
RESTART_BACKOFF_MAX = 5.0
#: a janitor that closed its stdout exits at once; this only bounds the unthinkable
_REAP_TIMEOUT = 5.0
#: the directory on sys.path that holds the ``clibridge`` package
_PACKAGE_PARENT = Path(__file__).absolute().parent.parent


class JanitorState(enum.Enum):
    STARTING = "starting"  # spawned, has not said ready yet
    UP = "up"
    DOWN = "down"  # died, or could not be started: a restart is due
    CLOSED = "closed"  # close() was called: the server is shutting down


_TRANSITIONS: Final[Mapping[JanitorState, frozenset[JanitorState]]] = {
    JanitorState.STARTING: frozenset({JanitorState.UP, JanitorState.DOWN, JanitorState.CLOSED}),
    JanitorState.UP: frozenset({JanitorState.DOWN, JanitorState.CLOSED}),
    JanitorState.DOWN: frozenset({JanitorState.STARTING, JanitorState.CLOSED}),
    JanitorState.CLOSED: frozenset(),
}


@attrs.frozen
class JanitorStatistics:
    """A snapshot of the janitor's bookkeeping."""

    pid: int | None
    alive: bool
    #: live process groups it knows (re-sent to every new janitor)
    registered: int
    #: a :class:`JanitorState` value
    state: str
    #: janitors started after the first (after a death, or a failed start)
    restarts: int


def janitor_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The janitor's whole environment: :data:`JANITOR_ENV` from ``environ``, when set."""
    return {name: environ[name] for name in JANITOR_ENV if environ.get(name)}


def janitor_argv(python: str = sys.executable) -> list[str]:
    code = (
        f"import sys; sys.path.append({str(_PACKAGE_PARENT)!r}); "
        f"from {JANITOR_MODULE} import main; main()"
    )
    return [python, "-S", "-P", "-c", code]


def _spawn(argv: list[str], env: Mapping[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    """Start a janitor; its process and the read end of its stdout (non-blocking)."""
    read_fd, write_fd = os.pipe()
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=write_fd,
            env=dict(env),
            cwd="/",
            start_new_session=True,
            close_fds=True,
        )
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    os.set_blocking(read_fd, False)
    return proc, read_fd


def _close_fd(fd: int) -> None:
    with contextlib.suppress(RuntimeError):  # outside trio nothing can be waiting on it
        trio.lowlevel.notify_closing(fd)
    os.close(fd)


def _reap(proc: subprocess.Popen[bytes]) -> int:
    try:
        return proc.wait(_REAP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def _how_it_ended(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


class Janitor:
    """The server's handle on the janitor process (one per server process).

    Writes are tiny and the janitor drains its pipe continuously, so they are done
    synchronously; a lock keeps lines whole when several trio threads or tasks write, and
    makes "add to the registry, write the line" one step with respect to a restart (which
    re-sends the registry).
    """

    def __init__(self, python: str, env: Mapping[str, str]) -> None:
        self._python = python
        self._env = dict(env)
        self._lock = threading.Lock()
        self._registered: set[int] = set()
        self._state = JanitorState.DOWN
        self._proc: subprocess.Popen[bytes] | None = None
        #: the read end of the current janitor's stdout: EOF there is its death
        self._out_fd: int | None = None
        self._restarts = 0
        self._watched = False
        self._warned = False

    @classmethod
    def start(
        cls, python: str = sys.executable, environ: Mapping[str, str] | None = None
    ) -> Janitor:
        """Spawn the janitor process (call once, from the supervisor, before any worker).

        ``environ`` is the server's environment, of which the janitor gets only
        :data:`JANITOR_ENV`. A janitor that cannot be started is logged; :meth:`run`
        keeps trying.
        """
        janitor = cls(python, janitor_env(os.environ if environ is None else environ))
        with janitor._lock:
            janitor._spawn_locked()
        return janitor

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def state(self) -> JanitorState:
        return self._state

    def _set_state(self, new: JanitorState) -> None:
        assert new in _TRANSITIONS[self._state], f"janitor: {self._state} -> {new}"
        self._state = new

    def _spawn_locked(self) -> None:
        """DOWN -> STARTING with a fresh janitor that knows every registered group."""
        try:
            proc, fd = _spawn(janitor_argv(self._python), self._env)
        except OSError as exc:
            log.error("cannot start the janitor (%s): %s", self._python, exc)
            return
        self._proc, self._out_fd = proc, fd
        self._warned = False
        self._set_state(JanitorState.STARTING)
        if self._registered:
            self._write_locked("".join(f"+{pgid}\n" for pgid in sorted(self._registered)))
        log.debug("janitor started, pid %d", proc.pid)

    # ------------------------------------------------------------------ registry

    def register(self, pgid: int) -> None:
        """Ask the janitor to kill group ``pgid`` should the server die before :meth:`unregister`."""
        with self._lock:
            self._registered.add(pgid)
            self._write_locked(f"+{pgid}\n")

    def unregister(self, pgid: int) -> None:
        """The group ``pgid`` has been torn down; the janitor forgets it."""
        with self._lock:
            self._registered.discard(pgid)
            self._write_locked(f"-{pgid}\n")

    def _write_locked(self, text: str) -> None:
        proc = self._proc
        if self._state not in (JanitorState.STARTING, JanitorState.UP) or proc is None:
            return  # a restart re-sends the whole registry
        assert proc.stdin is not None
        try:
            proc.stdin.write(text.encode())
            proc.stdin.flush()
        except (OSError, ValueError):
            # The janitor died. With run() watching, it is restarted and gets every
            # group again; without, only the hard-death protection is lost: say so once.
            if not self._watched and not self._warned:
                log.warning("the janitor process is gone; hard-death cleanup is off")
            self._warned = True

    # ------------------------------------------------------------------ watchdog

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep a janitor alive until :meth:`close` (see the module doc).

        Reports started once the first janitor said ``ready``, or failed to (the server
        serves anyway; :meth:`readiness_note` says why not).
        """
        self._watched = True
        reported = False
        delay = RESTART_BACKOFF_INITIAL
        try:
            while self._state is not JanitorState.CLOSED:
                proc, fd = self._proc, self._out_fd
                was_up = False
                if self._state is JanitorState.STARTING and proc is not None and fd is not None:
                    if await _read_some(fd):
                        was_up = self._became_ready(proc)
                        if not reported:
                            task_status.started()
                            reported = True
                        while await _read_some(fd):
                            pass
                    code = await trio.to_thread.run_sync(_reap, proc, abandon_on_cancel=True)
                    if not self._died(proc, code, was_up):
                        return  # closed meanwhile
                if not reported:
                    task_status.started()
                    reported = True
                if was_up:
                    delay = RESTART_BACKOFF_INITIAL
                else:
                    await trio.sleep(delay)
                    delay = min(delay * 2, RESTART_BACKOFF_MAX)
                with self._lock:
                    if self._state is JanitorState.DOWN:
                        self._restarts += 1
                        self._spawn_locked()
        finally:
            self._watched = False

    def _became_ready(self, proc: subprocess.Popen[bytes]) -> bool:
        with self._lock:
            if self._state is not JanitorState.STARTING or proc is not self._proc:
                return False
            self._set_state(JanitorState.UP)
            registered = len(self._registered)
        if self._restarts:
            log.warning(
                "janitor restarted (pid %d), %d live process group(s) registered again: "
                "hard-death cleanup is back",
                proc.pid,
                registered,
            )
        return True

    def _died(self, proc: subprocess.Popen[bytes], code: int, was_up: bool) -> bool:
        """The janitor ``proc`` is gone: DOWN. False when the handle was closed meanwhile."""
        with self._lock:
            if self._state is JanitorState.CLOSED or proc is not self._proc:
                return False
            if proc.stdin is not None:
                with contextlib.suppress(OSError, ValueError):
                    proc.stdin.close()
            if self._out_fd is not None:
                _close_fd(self._out_fd)
                self._out_fd = None
            self._set_state(JanitorState.DOWN)
        log.warning(
            "the janitor (pid %d) %s (%s); restarting it. Until it is back, a hard kill of "
            "the server would leave its CLI processes running",
            proc.pid,
            "died" if was_up else "failed to start",
            _how_it_ended(code),
        )
        return True

    def readiness_note(self) -> str | None:
        """What ``/readyz`` adds to its reason while the janitor is not up; None when it is."""
        if self._state in (JanitorState.UP, JanitorState.CLOSED):
            return None
        if self._state is JanitorState.STARTING and not self._restarts:
            return "janitor starting"
        return (
            "janitor down, restarting: a hard kill of the server now would leave CLI "
            "processes behind"
        )

    # ------------------------------------------------------------------ shutdown

    def close(self, timeout: float = 5.0) -> None:
        """Close the pipe (the janitor kills what is still registered) and reap the janitor."""
        with self._lock:
            if self._state is JanitorState.CLOSED:
                return
            self._set_state(JanitorState.CLOSED)
            proc, fd = self._proc, self._out_fd
            self._out_fd = None
            if proc is not None and proc.stdin is not None:
                with contextlib.suppress(OSError, ValueError):
                    proc.stdin.close()
        if fd is not None:
            _close_fd(fd)
        if proc is not None:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> Janitor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def statistics(self) -> JanitorStatistics:
        proc = self._proc
        return JanitorStatistics(
            pid=None if proc is None else proc.pid,
            alive=proc is not None and proc.poll() is None,
            registered=len(self._registered),
            state=self._state.value,
            restarts=self._restarts,
        )


async def _read_some(fd: int) -> bytes:
    """Bytes from the janitor's stdout; ``b""`` at EOF (its death) or when closed here."""
    while True:
        try:
            await trio.lowlevel.wait_readable(fd)
        except trio.ClosedResourceError:
            return b""
        try:
            return os.read(fd, 256)
        except BlockingIOError:
            continue
        except OSError:
            return b""
