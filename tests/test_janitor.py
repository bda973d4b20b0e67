"""The hard-parent-death janitor: SIGKILL the server, and no CLI process survives."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable

from clibridge._janitor import Janitor
from clibridge._process import live_group_members

# A stand-in server: starts the janitor, then a worker group (child + grandchild) through
# the real process layer, prints the pids and waits to be killed.
PARENT = textwrap.dedent(
    """
    import os, sys, trio
    from clibridge._janitor import Janitor
    from clibridge._process import ChildSpec, open_child

    CHILD = (
        "import subprocess, sys, time\\n"
        "gc = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'])\\n"
        "print(gc.pid, flush=True)\\n"
        "time.sleep(300)\\n"
    )

    async def main():
        janitor = Janitor.start()
        async with trio.open_nursery() as nursery:
            spec = ChildSpec(argv=(sys.executable, "-c", CHILD), env=dict(os.environ))
            async with open_child(spec, nursery=nursery, janitor=janitor) as child:
                grandchild = int(await child.receive_line())
                print(janitor.pid, child.pgid, grandchild, flush=True)
                await trio.sleep_forever()

    trio.run(main)
    """
)


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    # no event announces the death of a process we are not the parent of: poll /proc
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return "gone"
    return stat[stat.rfind(b")") + 2 :].split()[0].decode()


def test_sigkilled_parent_leaves_no_process() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE)
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline()
        assert line, "parent died before reporting its children"
        janitor_pid, pgid, grandchild = map(int, line.split())
        assert grandchild in live_group_members(pgid)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
        wait_until(lambda: not live_group_members(pgid))
        # the janitor exits after its sweep
        wait_until(lambda: _state(janitor_pid) in ("gone", "Z"))
    finally:
        parent.kill()
        parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()


def test_clean_close_kills_registered_groups_only() -> None:
    """Unregistered groups are left alone; registered ones die when the pipe closes."""
    keep = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True
    )
    doomed = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True
    )
    try:
        with Janitor.start() as janitor:
            janitor.register(keep.pid)
            janitor.register(doomed.pid)
            janitor.unregister(keep.pid)
            assert janitor.statistics().registered == 1
        assert doomed.wait(timeout=30) == -signal.SIGKILL
        assert keep.poll() is None
    finally:
        for p in (keep, doomed):
            p.kill()
            p.wait()
