"""The hard-parent-death janitor: no CLI process outlives clibridge, even after SIGKILL.

Theory of operation
-------------------
Every worker runs in its own process group, and orderly teardown kills that group
(:mod:`clibridge._process`). What orderly teardown cannot cover is the server itself
dying hard (SIGKILL, the OOM killer): nothing runs in the server then. ``PR_SET_PDEATHSIG``
does not work with trio (it fires when the *thread* that spawned the child exits, and
trio spawns from worker threads), so instead:

* The supervisor starts one tiny separate process, ``python -m clibridge._janitor``, in
  its own session (a Ctrl-C to the server's terminal group must not take it down first)
  and keeps the write end of a pipe to the janitor's stdin.
* As workers start and stop, the server writes ``+<pgid>`` / ``-<pgid>`` lines.
* When the pipe closes -- the server exited or was killed, the kernel closes its fds --
  the janitor reads EOF and SIGKILLs every group still registered, then exits.

On a clean shutdown every group has already been unregistered, so the janitor just exits.
The write end is close-on-exec (Python's default), so no CLI child inherits it and keeps
the pipe open after the server is gone. The remaining gap (a group spawned but not yet
registered when the server dies) is closed only by cgroups (systemd ``KillMode``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading

import attrs

log = logging.getLogger(__name__)


@attrs.frozen
class JanitorStatistics:
    """A snapshot of the janitor's bookkeeping."""

    pid: int | None
    alive: bool
    registered: int


class Janitor:
    """The server's handle on the janitor process (one per server process).

    Writes are tiny and the janitor drains its pipe continuously, so they are done
    synchronously; a lock keeps lines whole when several trio threads or tasks write.
    """

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self._proc = proc
        self._lock = threading.Lock()
        self._registered: set[int] = set()
        self._closed = False

    @classmethod
    def start(cls, python: str = sys.executable) -> Janitor:
        """Spawn the janitor process (call once, from the supervisor, before any worker)."""
        proc = subprocess.Popen(
            [python, "-m", "clibridge._janitor"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )
        log.debug("janitor started, pid %d", proc.pid)
        return cls(proc)

    @property
    def pid(self) -> int:
        return self._proc.pid

    def register(self, pgid: int) -> None:
        """Ask the janitor to kill group ``pgid`` should the server die before :meth:`unregister`."""
        self._send(f"+{pgid}\n")
        self._registered.add(pgid)

    def unregister(self, pgid: int) -> None:
        """The group ``pgid`` has been torn down; the janitor forgets it."""
        self._registered.discard(pgid)
        self._send(f"-{pgid}\n")

    def _send(self, line: str) -> None:
        stdin = self._proc.stdin
        if self._closed or stdin is None:
            return
        with self._lock:
            try:
                stdin.write(line.encode())
                stdin.flush()
            except (BrokenPipeError, ValueError):
                # The janitor died (someone killed it): workers still get torn down by the
                # normal path, only hard-death protection is lost. Say so once.
                if not self._closed:
                    log.warning("the janitor process is gone; hard-death cleanup is off")
                self._closed = True

    def close(self, timeout: float = 5.0) -> None:
        """Close the pipe (the janitor kills what is still registered) and reap the janitor."""
        if not self._closed:
            self._closed = True
            if self._proc.stdin is not None:
                with contextlib.suppress(BrokenPipeError):
                    self._proc.stdin.close()
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    def __enter__(self) -> Janitor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def statistics(self) -> JanitorStatistics:
        return JanitorStatistics(
            pid=self._proc.pid,
            alive=self._proc.poll() is None,
            registered=len(self._registered),
        )


def _kill_groups(groups: set[int]) -> None:
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


def main() -> None:
    """The janitor process: track groups from stdin, kill them all at EOF."""
    # The server's terminal may deliver SIGINT / SIGHUP to everyone; the janitor must
    # outlive the server to do its job, and exits by itself at EOF.
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    groups: set[int] = set()
    stdin = sys.stdin.buffer
    for raw in iter(stdin.readline, b""):
        line = raw.strip()
        if len(line) < 2 or line[:1] not in (b"+", b"-") or not line[1:].isdigit():
            continue
        pgid = int(line[1:])
        if pgid <= 1:
            continue  # never killpg(0) / killpg(1)
        if line[:1] == b"+":
            groups.add(pgid)
        else:
            groups.discard(pgid)
    _kill_groups(groups)


if __name__ == "__main__":
    main()
