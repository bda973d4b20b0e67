"""Processes as the tests see them (psutil): who is alive, whose child, in which group,
and the fake CLIs' record files. Shared by the e2e and chaos suites."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import psutil
import trio

_DEAD = (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)


def _living(process: psutil.Process) -> bool:
    try:
        return process.status() not in _DEAD
    except psutil.Error:
        return False


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        return _living(psutil.Process(pid))
    except psutil.Error:
        return False


def children_of(ppid: int) -> set[int]:
    """Living direct children of ``ppid``."""
    try:
        children = psutil.Process(ppid).children()
    except psutil.Error:
        return set()
    return {c.pid for c in children if _living(c)}


def pgid_of(pid: int) -> int | None:
    """The process group of ``pid``, None when it is gone."""
    try:
        return os.getpgid(pid) if alive(pid) else None
    except OSError:
        return None


def in_groups(pgids: set[int]) -> set[int]:
    """Living processes whose process group is one of ``pgids``."""
    return {p.pid for p in psutil.process_iter() if _living(p) and pgid_of(p.pid) in pgids}


def cmdline(pid: int) -> str:
    """The command line of ``pid``, "" when it is gone."""
    try:
        return " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return ""


def rss_mib(pid: int) -> float:
    """Resident set size of ``pid`` in MiB."""
    return float(psutil.Process(pid).memory_info().rss) / (1024 * 1024)


async def wait_gone(pids: set[int], within: float = 10.0) -> None:
    """Wait until none of ``pids`` is alive; fail naming the survivors."""
    with trio.move_on_after(within):
        # Why polling: the exit of a process we are not the parent of signals nothing.
        while any(alive(p) for p in pids):  # noqa: ASYNC110
            await trio.sleep(0.02)
    survivors = {p: cmdline(p) for p in pids if alive(p)}
    assert not survivors, f"processes survived: {survivors}"


def read_record(path: Path) -> list[dict[str, Any]]:
    """The JSON lines a fake CLI recorded (``CLIBRIDGE_FAKE_RECORD``); a line being
    written right now is skipped."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out
