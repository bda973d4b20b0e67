"""The child-process layer: process groups, teardown, long lines, stderr tail."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
import trio

import clibridge
from clibridge._process import ChildSpec, live_group_members, open_child
from clibridge._process_groups import group_alive, signal_group


def py(code: str) -> ChildSpec:
    return ChildSpec(argv=(sys.executable, "-c", textwrap.dedent(code)), env=dict(os.environ))


GRANDCHILD = """
    import subprocess, sys, time
    gc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    print(gc.pid, flush=True)
    {tail}
"""


async def test_teardown_kills_group_including_grandchild() -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            async with open_child(
                py(GRANDCHILD.format(tail="time.sleep(300)")), nursery=nursery, kill_grace=5
            ) as child:
                line = await child.receive_line()
                assert line is not None
                grandchild = int(line)
                pgid = child.pgid
                assert set(live_group_members(pgid)) == {child.pid, grandchild}
            # stdin EOF does not stop `sleep`, so TERM ended it (not KILL)
            assert child.returncode == -signal.SIGTERM
    assert live_group_members(pgid) == []


async def test_grandchild_killed_after_normal_exit() -> None:
    """The leader exits by itself; its grandchild must not outlive the context."""
    with trio.fail_after(30):
        async with (
            trio.open_nursery() as nursery,
            open_child(py(GRANDCHILD.format(tail="sys.exit(0)")), nursery=nursery) as child,
        ):
            line = await child.receive_line()
            assert line is not None
            grandchild = int(line)
            assert await child.wait() == 0
            assert grandchild in live_group_members(child.pgid)
    assert live_group_members(child.pgid) == []


async def test_sigterm_ignoring_child_killed_after_grace() -> None:
    code = """
        import signal, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ready", flush=True)
        time.sleep(300)
    """
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            async with open_child(py(code), nursery=nursery, kill_grace=0.3) as child:
                assert await child.receive_line() == b"ready"
                t0 = trio.current_time()
            elapsed = trio.current_time() - t0
    assert child.returncode == -signal.SIGKILL
    assert elapsed >= 0.3
    assert live_group_members(child.pgid) == []


@pytest.mark.parametrize("mid_turn", [False, True])
async def test_a_child_mid_turn_gets_no_polite_stop(tmp_path: Path, mid_turn: bool) -> None:
    """A CLI stopped politely (stdin EOF, SIGTERM) finishes its turn first: a claude waiting
    for a tool result then sends the model one more request. Mid-turn it is killed outright,
    so whatever it does on EOF or SIGTERM never happens."""
    marker = tmp_path / "finished-the-turn"
    code = f"""
        import signal, sys, time
        def finish(*_):
            open({str(marker)!r}, "w").write("spent")
            sys.exit(0)
        signal.signal(signal.SIGTERM, finish)
        print("ready", flush=True)
        sys.stdin.read()
        finish()
    """
    with trio.fail_after(30):
        async with (
            trio.open_nursery() as nursery,
            open_child(py(code), nursery=nursery, kill_grace=5) as child,
        ):
            assert await child.receive_line() == b"ready"
            child.holds_work = lambda: mid_turn
    assert marker.exists() is not mid_turn
    if mid_turn:
        assert child.returncode == -signal.SIGKILL
    else:
        # the SIGTERM that follows the EOF may land while Python is exiting, after it has
        # restored the default handler: -15 then, but only after the polite stop worked
        assert child.returncode in (0, -signal.SIGTERM)


async def test_cancelled_body_still_tears_down() -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            with trio.CancelScope() as scope:
                async with open_child(py("import time; time.sleep(300)"), nursery=nursery) as child:
                    scope.cancel()
                    await trio.sleep_forever()
    assert child.returncode is not None
    assert live_group_members(child.pgid) == []


async def test_long_lines_and_last_line_without_newline() -> None:
    code = """
        import sys
        sys.stdout.write("x" * 300_000 + "\\n" + "short\\n" + "y" * 250_000)
    """
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, open_child(py(code), nursery=nursery) as child:
            assert await child.receive_line() == b"x" * 300_000
            assert await child.receive_line() == b"short"
            assert await child.receive_line() == b"y" * 250_000
            assert await child.receive_line() is None


async def test_send_line_and_echo() -> None:
    code = """
        import sys
        for line in sys.stdin:
            sys.stdout.write(line.upper()); sys.stdout.flush()
    """
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, open_child(py(code), nursery=nursery) as child:
            await child.send_line(b"a" * 210_000)
            assert await child.receive_line() == b"A" * 210_000
            await child.close_stdin()
            assert await child.receive_line() is None
            assert await child.wait() == 0


async def test_stderr_tail_is_bounded() -> None:
    code = """
        import sys
        sys.stderr.write("z" * 100_000 + "THE END")
        sys.stderr.flush()
    """
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, open_child(py(code), nursery=nursery) as child:
            await child.wait()
            await child.stderr_closed.wait()
            tail = child.stderr_tail()
    assert tail.endswith("THE END")
    assert len(tail) == 8192


async def test_missing_program_raises_oserror() -> None:
    async with trio.open_nursery() as nursery:
        with pytest.raises(FileNotFoundError):
            async with open_child(
                ChildSpec(argv=("/nonexistent/clibridge-no-such-cli",), env={}), nursery=nursery
            ):
                pass


async def test_children_create_private_files(tmp_path: Path) -> None:
    """Regression (issue 15, item 7): a CLI wrote its transcripts with the server's umask
    (0644 under the usual 022). Children run with umask 077 now."""
    target = tmp_path / "transcript.jsonl"
    old = os.umask(0o022)
    try:
        with trio.fail_after(30):
            async with (
                trio.open_nursery() as nursery,
                open_child(py(f"open({str(target)!r}, 'w').write('x')"), nursery=nursery) as child,
            ):
                assert await child.wait() == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_no_proc_filesystem_in_the_source() -> None:
    """Regression (issue 15, item 11): teardown read /proc, which only Linux has. Process
    groups are asked through clibridge._process_groups (killpg + psutil) only."""
    src = Path(clibridge.__file__).parent
    literal = re.compile(r"""f?["']/proc\b""")
    users = [p for p in src.rglob("*.py") if literal.search(p.read_text())]
    assert users == []


def test_zombies_are_not_living_members() -> None:
    """Regression guard for issue 15, item 11: the /proc reader that teardown used skipped
    zombies, and the portable seam that replaced it must too. A group whose only process is
    a zombie (dead, not reaped: where nothing reaps, as with clibridge as PID 1 of a
    container) counts as empty, although ``killpg(pgid, 0)`` still succeeds for it on
    Linux."""
    leader = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True
    )
    try:
        assert group_alive(leader.pid)
        assert live_group_members(leader.pid) == [leader.pid]
        os.kill(leader.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while psutil.Process(leader.pid).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        os.killpg(leader.pid, 0)  # the zombie still "exists" for killpg
        assert live_group_members(leader.pid) == []
        assert not group_alive(leader.pid)
    finally:
        leader.kill()
        leader.wait()
    assert not group_alive(leader.pid)  # reaped: ESRCH


def test_signal_group_refuses_the_special_groups() -> None:
    for pgid in (0, 1, -5):
        with pytest.raises(ValueError, match="refusing"):
            signal_group(pgid, signal.SIGKILL)
    signal_group(2**22 + 12345, signal.SIGKILL)  # no such group: not an error
