"""The hard-parent-death janitor: SIGKILL the server, and no CLI process survives."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator

import psutil
import pytest
import trio

from clibridge import _janitor
from clibridge._janitor import Janitor, JanitorState
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


async def until(predicate: Callable[[], bool]) -> None:
    # the janitor's state follows the deaths of processes; no event announces those here
    while not predicate():  # noqa: ASYNC110
        await trio.sleep(0.005)


@pytest.fixture
def sleepers() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Three processes, each the leader of its own group (stand-ins for workers)."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True
        )
        for _ in range(3)
    ]
    try:
        yield procs
    finally:
        for p in procs:
            p.kill()
            p.wait()


async def test_janitor_gets_none_of_the_server_environment() -> None:
    """Regression (issue 15, item 9): the janitor inherited the server's whole environment
    (API keys, DATABASE_URL, ...). It gets only what its interpreter may need to start, runs
    without site-packages or the current directory on sys.path, in ``/``."""
    server_env = {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": "/home/someone",
        "ANTHROPIC_API_KEY": "sk-ant-secret",
        "CLAUDE_CODE_OAUTH_TOKEN": "oauth-secret",
        "CLIBRIDGE_API_KEY": "clibridge-secret",
        "DATABASE_URL": "postgres://user:pw@db/x",
        "PYTHONPATH": "/somewhere/else",
        "LD_LIBRARY_PATH": "/opt/python/lib",
    }
    with Janitor.start(environ=server_env) as janitor:
        async with trio.open_nursery() as nursery:
            # ready: its exec is complete (just after exec, /proc may show no environment)
            await nursery.start(janitor.run)
            assert janitor.pid is not None
            process = psutil.Process(janitor.pid)
            assert process.environ() == {"LD_LIBRARY_PATH": "/opt/python/lib"}
            assert process.cwd() == "/"
            argv = process.cmdline()
            assert argv[:4] == [sys.executable, "-S", "-P", "-c"]
            assert "clibridge._janitor_proc" in argv[4]
            nursery.cancel_scope.cancel()


async def test_killed_janitor_is_restarted_and_knows_every_group(
    sleepers: list[subprocess.Popen[bytes]],
) -> None:
    """Regression (issue 15, item 9): a janitor that died stayed dead, and hard-death
    cleanup was off for the rest of the server's life. Now a new one starts at once and
    is told every live group -- also one registered while the old one was dying."""
    before, during, gone = sleepers
    janitor = Janitor.start(environ={})
    try:
        async with trio.open_nursery() as nursery:
            with trio.fail_after(30):
                await nursery.start(janitor.run)
                assert janitor.state is JanitorState.UP
                assert janitor.readiness_note() is None
                janitor.register(before.pid)
                janitor.register(gone.pid)
                old = janitor.pid
                assert old is not None
                os.kill(old, signal.SIGKILL)
                janitor.register(during.pid)  # written to a dying janitor, or to none
                janitor.unregister(gone.pid)
                await until(lambda: janitor.state is JanitorState.UP and janitor.pid != old)
            stats = janitor.statistics()
            assert (stats.state, stats.restarts, stats.alive) == ("up", 1, True)
            assert stats.registered == 2
            assert not psutil.pid_exists(old)  # reaped, not left a zombie
            nursery.cancel_scope.cancel()
    finally:
        janitor.close()  # the pipe closes: what the janitor does when the server dies
    assert before.wait(timeout=30) == -signal.SIGKILL
    assert during.wait(timeout=30) == -signal.SIGKILL
    assert gone.poll() is None


async def test_janitor_that_cannot_start_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    """A janitor that dies before it is ready (here: its module cannot be imported) is
    retried with backoff; meanwhile readiness_note() says hard-death cleanup is off, and
    the watchdog reports started anyway (the server serves without it)."""
    monkeypatch.setattr(_janitor, "JANITOR_MODULE", "clibridge._no_such_janitor")
    janitor = Janitor.start(environ={})
    try:
        async with trio.open_nursery() as nursery:
            with trio.fail_after(30):
                await nursery.start(janitor.run)
                await until(lambda: janitor.statistics().restarts >= 2)
                assert janitor.state is not JanitorState.UP
                note = janitor.readiness_note()
                assert note is not None and note.startswith("janitor down, restarting")
                monkeypatch.undo()
                await until(lambda: janitor.state is JanitorState.UP)
                assert janitor.readiness_note() is None
            nursery.cancel_scope.cancel()
    finally:
        janitor.close()
