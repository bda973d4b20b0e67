"""The janitor process itself; the server's side, and why it exists, is :mod:`clibridge._janitor`.

It is started as ``python -S -m clibridge._janitor_proc`` with an environment of
its own (``PYTHONPATH`` naming clibridge's package directory, and nothing of the server's
secrets), so this module imports nothing but the standard library: ``-S`` leaves out
site-packages, and the process stays a few MB that start in milliseconds.

Protocol: stdin carries ``+<pgid>`` / ``-<pgid>`` lines from the server. The janitor writes
``ready`` to stdout once its signals are set, and keeps stdout open for as long as it
lives: the server watches it to learn that the janitor died (EOF). At EOF on stdin --
the server exited or was killed -- it SIGKILLs every group still registered and exits.
"""

import os
import signal
import sys


def _kill_groups(groups: set[int]) -> int:
    killed = 0
    for pgid in groups:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            continue
        killed += 1
    return killed


def main() -> None:
    """Track groups from stdin, kill them all at EOF."""
    # The server's terminal may deliver SIGINT / SIGHUP to everyone; the janitor must
    # outlive the server to do its job, and exits by itself at EOF.
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    try:  # noqa: SIM105 - contextlib is one more import for a process kept tiny
        os.write(1, b"ready\n")
    except OSError:
        pass  # the server is already gone: stdin is at EOF, clean up below
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
    killed = _kill_groups(groups)
    if killed:
        # to the server's stderr (the journal under systemd): worth a line after a hard death
        try:
            sys.stderr.write(
                f"clibridge janitor: the server is gone; killed {killed} CLI process "
                "group(s) it left behind\n"
            )
            sys.stderr.flush()
        except (OSError, ValueError):
            pass


if __name__ == "__main__":
    main()
