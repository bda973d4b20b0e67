"""Talking to one private tmux server: ``tmux -S <socket>`` commands, and reaping old ones.

Theory of operation
-------------------
Each TUI worker owns one tmux server, run in the foreground (``tmux -D``) as an ordinary
child of clibridge (:func:`clibridge._process.open_child`: own process group, registered
with the janitor, torn down on every path). Its socket lives under the state dir
(``<state>/tui/w<N>.sock``, in a 0700 directory) and it reads no config file (``-f
/dev/null``). Commands go through short-lived tmux clients (:func:`tmux`), ``-u`` so the
screen captures are UTF-8 whatever the locale.

One server per worker (not one for all): a server's life is then the worker's task, a
crashed or killed server takes one pane with it, and ``clibridge tui attach N`` is just
that socket.

:func:`reap_stale` runs at start: a socket left by an earlier run (its clibridge was
SIGKILLed; its janitor has killed the server already, or should have) is told
``kill-server`` and removed.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

import trio

from ..._errors import UpstreamError

__all__ = ["TmuxError", "find_tmux", "reap_stale", "server_argv", "tmux"]

log = logging.getLogger(__name__)

#: a tmux client command never takes this long; bounded so a wedged server cannot hang us
COMMAND_TIMEOUT = 10.0


class TmuxError(UpstreamError):
    """A tmux command failed."""


def find_tmux(environ: Mapping[str, str] | None = None) -> str | None:
    path = (environ or os.environ).get("PATH")
    return shutil.which("tmux", path=path)


def server_argv(tmux_bin: str, socket: Path) -> tuple[str, ...]:
    """The tmux server in the foreground (the worker's child)."""
    return (tmux_bin, "-u", "-S", str(socket), "-f", os.devnull, "-D")


async def tmux(
    tmux_bin: str,
    socket: Path,
    *args: str,
    stdin: bytes | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> str:
    """Run one tmux client command against ``socket``; its stdout (TmuxError on failure)."""
    argv = [tmux_bin, "-u", "-S", str(socket), *args]
    with trio.move_on_after(COMMAND_TIMEOUT) as scope:
        done = await trio.run_process(
            argv,
            stdin=stdin if stdin is not None else b"",
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=dict(env) if env is not None else None,
        )
    if scope.cancelled_caught:
        raise TmuxError(f"tmux {args[0]} did not answer within {COMMAND_TIMEOUT:g} s")
    if check and done.returncode != 0:
        raise TmuxError(
            f"tmux {args[0]} failed ({done.returncode}): "
            + done.stderr.decode("utf-8", "replace").strip()[:500]
        )
    return str(done.stdout.decode("utf-8", "replace"))


def reap_stale(tmux_bin: str | None, directory: Path, pattern: str = "w*.sock") -> list[Path]:
    """Kill and remove the tmux servers of an earlier run (blocking; call at start)."""
    reaped = []
    for socket in sorted(directory.glob(pattern)):
        if tmux_bin is not None:
            try:
                subprocess.run(
                    [tmux_bin, "-S", str(socket), "kill-server"],
                    capture_output=True,
                    timeout=COMMAND_TIMEOUT,
                    check=False,
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                log.warning("could not kill the stale tmux server at %s: %s", socket, exc)
        socket.unlink(missing_ok=True)
        reaped.append(socket)
    if reaped:
        log.info("reaped %d stale tmux socket(s) from an earlier run in %s", len(reaped), directory)
    return reaped
