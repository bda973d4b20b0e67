"""One child process's IO: spawn in its own process group, lines in and out, teardown.

Theory of operation
-------------------
:func:`open_child` is an async context manager. Entering it spawns the child with
``start_new_session=True`` (its own session and process group, pgid == pid), registers
the group with the :class:`~clibridge._janitor.Janitor` when one is given, and starts a
task that keeps the last few KB of the child's stderr (for error messages). The body
talks to the child through :class:`ChildProcess`: :meth:`~ChildProcess.receive_some` /
:meth:`~ChildProcess.receive_line` on stdout and :meth:`~ChildProcess.send_line` on
stdin.

Leaving the context -- normally, by an exception or by cancellation -- tears the child
down, shielded from cancellation and bounded in time:

1. close stdin (a well-behaved CLI exits at EOF);
2. if the child still runs: SIGTERM to the whole group, wait ``kill_grace``;
   both steps are skipped while :attr:`ChildProcess.holds_work` says the child is in the
   middle of a turn: a CLI told to stop politely then ends its turn first -- a claude
   waiting for a client's tool result answers the model with the failed call, one more
   model request the user pays for and nobody reads;
3. SIGKILL to the whole group -- always, even after a normal exit, because
   grandchildren may still hold the group (and our pipes) open;
4. wait for the exit, unregister the group from the janitor.

Children run with umask 077 (:data:`CHILD_UMASK`): the transcripts and login files a CLI
writes under clibridge's state dir are the user's alone. How a group is signalled and
when it counts as empty is platform business, kept in :mod:`clibridge._process_groups`.

``PR_SET_PDEATHSIG`` is deliberately not used (see STACK_NOTES: with trio it fires when
the spawning *thread* exits); the janitor covers hard parent death instead.
"""

from __future__ import annotations

import logging
import signal
import subprocess
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import trio

from ._janitor import Janitor
from ._process_groups import group_alive, live_group_members, signal_group

__all__ = ["ChildProcess", "ChildSpec", "LineTooLong", "live_group_members", "open_child"]

log = logging.getLogger(__name__)

#: how much of the child's stderr is kept for error messages
STDERR_TAIL_BYTES = 8192
#: a stdout line longer than this is refused (a runaway child must not eat the memory)
MAX_LINE_BYTES = 64 * 1024 * 1024
_READ_SIZE = 65536
#: after SIGKILL a process is gone within milliseconds; this only bounds the unthinkable
_AFTER_KILL_WAIT = 5.0
#: the umask CLI children run with: what they create (the claude transcripts under the
#: spawn home, codex's sessions and refreshed login) is readable by this user only
CHILD_UMASK = 0o077


class LineTooLong(Exception):
    """The child wrote a stdout line longer than the configured maximum."""


@attrs.frozen
class ChildSpec:
    """Everything needed to start one child: argv, the complete environment, cwd, umask."""

    argv: tuple[str, ...]
    env: Mapping[str, str]
    cwd: Path | None = None
    umask: int = CHILD_UMASK


class ChildProcess:
    """A running child; created by :func:`open_child`, valid inside its context."""

    def __init__(self, process: trio.Process, max_line: int) -> None:
        self._process = process
        self._max_line = max_line
        self._buffer = bytearray()
        # how far the buffer is known to hold no newline: keeps long lines O(n)
        self._scanned = 0
        self._eof = False
        self._stderr_tail = bytearray()
        self.stderr_closed = trio.Event()
        #: set by the worker: True while the child is mid-turn (teardown kills it at once)
        self.holds_work: Callable[[], bool] = _never

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def pgid(self) -> int:
        # start_new_session makes the child a session and group leader
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.returncode

    async def wait(self) -> int:
        """Wait for the child to exit; its return code (negative: killed by that signal)."""
        return await self._process.wait()

    # ------------------------------------------------------------------ stdout

    async def receive_some(self) -> bytes:
        """Raw stdout bytes as they arrive; ``b""`` at EOF. Don't mix with receive_line."""
        assert self._process.stdout is not None
        if self._buffer:
            data = bytes(self._buffer)
            self._buffer.clear()
            self._scanned = 0
            return data
        try:
            return bytes(await self._process.stdout.receive_some(_READ_SIZE))
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            return b""

    async def receive_line(self) -> bytes | None:
        """The next stdout line without its newline; None at EOF.

        A last line without a newline is returned at EOF.
        """
        assert self._process.stdout is not None
        while True:
            idx = self._buffer.find(b"\n", self._scanned)
            if idx >= 0:
                line = bytes(self._buffer[:idx])
                del self._buffer[: idx + 1]
                self._scanned = 0
                return line
            self._scanned = len(self._buffer)
            if self._scanned > self._max_line:
                raise LineTooLong(f"child {self.pid} wrote a line over {self._max_line} bytes")
            if self._eof:
                if self._buffer:
                    line = bytes(self._buffer)
                    self._buffer.clear()
                    self._scanned = 0
                    return line
                return None
            try:
                data = await self._process.stdout.receive_some(_READ_SIZE)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                data = b""
            if not data:
                self._eof = True
            self._buffer += data

    # ------------------------------------------------------------------ stdin

    async def send_line(self, line: bytes) -> None:
        """Write one line (a newline is appended). Raises trio.BrokenResourceError if
        the child closed its stdin (it died)."""
        assert self._process.stdin is not None
        await self._process.stdin.send_all(line + b"\n")

    async def close_stdin(self) -> None:
        if self._process.stdin is not None:
            with trio.CancelScope(shield=True):
                await self._process.stdin.aclose()

    # ------------------------------------------------------------------ stderr

    def stderr_tail(self) -> str:
        """The last few KB the child wrote to stderr, decoded leniently."""
        return self._stderr_tail.decode("utf-8", "replace")

    async def _pump_stderr(self) -> None:
        stream = self._process.stderr
        assert stream is not None
        try:
            while True:
                try:
                    data = await stream.receive_some(_READ_SIZE)
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    break
                if not data:
                    break
                self._stderr_tail += data
                if len(self._stderr_tail) > STDERR_TAIL_BYTES:
                    del self._stderr_tail[: len(self._stderr_tail) - STDERR_TAIL_BYTES]
        finally:
            self.stderr_closed.set()

    # ------------------------------------------------------------------ teardown

    async def _teardown(self, kill_grace: float) -> None:
        """Shielded and bounded: stdin EOF, TERM the group, grace, KILL the group."""
        with trio.CancelScope(shield=True):
            if self.holds_work():
                log.debug("child %d is mid-turn: killed without grace", self.pid)
            else:
                await self._stop_politely(kill_grace)
            # even after a clean exit: grandchildren may remain in the group
            signal_group(self.pgid, signal.SIGKILL)
            with trio.move_on_after(_AFTER_KILL_WAIT):
                await self._process.wait()
                # killpg returns before the signalled processes are gone; wait until the
                # group is empty so that "torn down" means "no process left"
                while group_alive(self.pgid):  # noqa: ASYNC110 - no event for a non-child dying
                    await trio.sleep(0.005)
            if self._process.returncode is None or group_alive(self.pgid):
                log.error("group %d survived SIGKILL for %.0f s", self.pgid, _AFTER_KILL_WAIT)

    async def _stop_politely(self, kill_grace: float) -> None:
        if self._process.stdin is not None:
            await self._process.stdin.aclose()
        if self._process.returncode is None:
            signal_group(self.pgid, signal.SIGTERM)
            with trio.move_on_after(kill_grace):
                await self._process.wait()


def _never() -> bool:
    return False


@asynccontextmanager
async def open_child(
    spec: ChildSpec,
    *,
    nursery: trio.Nursery,
    kill_grace: float = 2.0,
    janitor: Janitor | None = None,
    max_line: int = MAX_LINE_BYTES,
) -> AsyncIterator[ChildProcess]:
    """Spawn ``spec`` in its own process group; tear the group down on exit (see module doc).

    ``nursery`` (the caller's) runs the stderr-tail task; it ends by itself at teardown.
    Raises OSError when the program cannot be started.
    """
    process = await trio.lowlevel.open_process(
        list(spec.argv),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(spec.env),
        cwd=spec.cwd,
        start_new_session=True,
        umask=spec.umask,
    )
    child = ChildProcess(process, max_line)
    if janitor is not None:
        janitor.register(child.pgid)
    log.debug("spawned %s as pid %d", spec.argv[0], child.pid)
    nursery.start_soon(child._pump_stderr)
    try:
        yield child
    finally:
        await child._teardown(kill_grace)
        with trio.CancelScope(shield=True):
            # the group is dead, so stderr is at EOF or about to be; a grandchild that
            # left the group could hold it open, so bound the wait and then close it
            with trio.move_on_after(1.0):
                await child.stderr_closed.wait()
            for stream in (process.stdin, process.stdout, process.stderr):
                if stream is not None:
                    await stream.aclose()
        if janitor is not None:
            janitor.unregister(child.pgid)
        log.debug("child %d gone, returncode %s", child.pid, process.returncode)
