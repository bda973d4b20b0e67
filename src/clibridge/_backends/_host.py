"""The life of one CLI worker process, shared by every backend's worker.

Spawn the child in its own process group, let the backend start its stdout pump and
answer its readiness handshake, report ``started`` only then, and live until the process
exits by itself (return) or the caller's scope is cancelled (teardown in ``open_child``:
group TERM, grace, KILL, shielded and bounded). Failures before readiness become a
:class:`~clibridge._errors.BootError` (the handshake's own, or "cannot start").

A worker learns of its CLI's death from EOF on stdout. A child of the CLI that inherited
the pipe (a shell tool, an MCP server) keeps it open after the CLI died, so the host also
watches the exit itself: once the CLI is gone and stdout has not ended within
:data:`STDOUT_SETTLE`, the rest of its process group is killed, which closes the pipe and
lets the crash be noticed (and the turn retried) at once instead of at a timeout.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Awaitable, Callable

import trio

from .._errors import BootError, CliCrashed
from .._janitor import Janitor
from .._process import ChildProcess, ChildSpec, open_child
from .._process_groups import signal_group

log = logging.getLogger(__name__)


async def host_child(
    spec: ChildSpec,
    *,
    cli: str,
    worker_id: int,
    kill_grace: float,
    janitor: Janitor | None,
    max_line: int,
    on_spawned: Callable[[ChildProcess, trio.Nursery], None],
    handshake: Callable[[], Awaitable[None]],
    exited: trio.Event,
    task_status: trio.TaskStatus[None],
) -> None:
    """See the module docstring. ``exited`` is set by the backend's pump at stdout EOF."""
    boot_error: BootError | None = None
    spawned = False
    async with trio.open_nursery() as nursery:
        try:
            async with open_child(
                spec, nursery=nursery, kill_grace=kill_grace, janitor=janitor, max_line=max_line
            ) as child:
                spawned = True
                on_spawned(child, nursery)
                nursery.start_soon(_end_orphaned_stdout, child, exited, cli)
                try:
                    await handshake()
                except BootError as exc:
                    boot_error = exc
                else:
                    task_status.started()
                    await exited.wait()
                    log.info(
                        "%s worker %d (pid %d) exited: %s",
                        cli,
                        worker_id,
                        child.pid,
                        child.returncode,
                    )
        except OSError as exc:
            if spawned:
                raise
            boot_error = BootError(f"cannot start the {cli} CLI {spec.argv[0]!r}: {exc}")
        nursery.cancel_scope.cancel()
    if boot_error is not None:
        raise boot_error


#: how long a dying CLI gets for its last words on stderr / its exit code
STDERR_SETTLE = 0.5
#: how long stdout may stay open after the CLI exited before its group is killed
STDOUT_SETTLE = 0.5


async def _end_orphaned_stdout(child: ChildProcess, exited: trio.Event, cli: str) -> None:
    """Kill what is left of the group of a CLI that exited while its stdout stays open."""
    await child.wait()
    with trio.move_on_after(STDOUT_SETTLE):
        await exited.wait()
        return
    log.warning(
        "the %s CLI (pid %d) exited but its stdout stays open (a child of it holds it); "
        "killing its process group",
        cli,
        child.pid,
    )
    signal_group(child.pgid, signal.SIGKILL)


async def settled_stderr_tail(child: ChildProcess | None) -> str:
    """The child's stderr tail, after giving a process that just died time to finish it."""
    if child is None:
        return ""
    with trio.move_on_after(STDERR_SETTLE):
        await child.stderr_closed.wait()
    return child.stderr_tail()


async def crash_error(child: ChildProcess | None, *, cli: str, what: str) -> CliCrashed:
    """A :class:`CliCrashed` naming the exit code and the CLI's last stderr line."""
    code = None
    if child is not None:
        with trio.move_on_after(STDERR_SETTLE):
            code = await child.wait()
    tail = await settled_stderr_tail(child)
    last = tail.strip().splitlines()[-1][:300] if tail.strip() else ""
    return CliCrashed(
        f"the {cli} CLI exited (code {code}) during {what}" + (f": {last}" if last else ""),
        detail=tail,
    )
