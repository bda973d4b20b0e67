"""Process groups: signal one, ask whether it still has a living member, list its members.

Theory of operation
-------------------
This module is the one place that knows how the operating system answers those questions;
:mod:`clibridge._process` (worker teardown), :mod:`clibridge._janitor_proc` and the tests
ask it and nothing else.

* **Signalling** a group is POSIX (``killpg``), the same on Linux, macOS and the BSDs.
* **Is the group empty?** ``killpg(pgid, 0)`` answers "no such process" (ESRCH) once the
  last member has been reaped. That is the common case and costs one system call. But a
  zombie -- dead, not yet reaped by its parent -- still counts for ``killpg`` (Linux
  answers 0, macOS may answer EPERM), and a zombie runs no code and holds no pipe. An
  orphaned grandchild is reaped by init or the nearest subreaper within a moment; where
  nothing reaps it (clibridge as PID 1 of a container without an init) it stays a zombie
  for good. So when ``killpg`` does not say ESRCH, the members are listed and zombies are
  left out.
* **Listing the members** of a group is not POSIX: Linux has ``/proc``, macOS and the BSDs
  have ``sysctl(KERN_PROC)``. psutil wraps both (:func:`psutil.pids`, the status of a
  process); the group of each pid comes from ``getpgid``, which is POSIX.

Platforms: run on Linux (every test); expected to work on macOS and FreeBSD (psutil and
the POSIX calls above, nothing else); not on Windows, which has no process groups in this
sense (use WSL2 there).
"""

from __future__ import annotations

import contextlib
import os
import signal

import psutil


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to every process of group ``pgid``; an empty group is not an error."""
    if pgid <= 1:
        raise ValueError(f"refusing to signal process group {pgid}")
    # ESRCH: the group is empty; EPERM: what Linux may answer when only zombies remain
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def group_alive(pgid: int) -> bool:
    """True while group ``pgid`` has a living (non-zombie) member."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # zombies only (macOS), or a member we may not signal: look closer
    return bool(live_group_members(pgid))


def live_group_members(pgid: int) -> list[int]:
    """Pids of the living (non-zombie) processes in group ``pgid``, in ascending order."""
    members: list[int] = []
    for pid in psutil.pids():
        try:
            if os.getpgid(pid) != pgid:
                continue
            if psutil.Process(pid).status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
                continue
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue  # gone meanwhile, or not ours to look at
        members.append(pid)
    return members
