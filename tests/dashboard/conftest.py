"""Fixtures for the dashboard's browser test: Debian's chromium driven by Playwright, and a
``clibridge serve`` process on the fake CLIs.

``chromium`` is the system browser (``scripts/install-system-deps.sh``; Playwright's own
downloaded builds are never used). When it is missing the tests skip with a reason naming
the script, except when the ``CI`` environment variable is set: then they fail, so CI can
never pass by skipping them (the policy of the ``realcli`` and OpenClaw fixtures).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import attrs
import psutil
import pytest

#: where Debian's chromium package puts the browser
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
_LISTENING = re.compile(r"clibridge is listening on (http://\S+)")


@pytest.fixture(scope="session")
def chromium() -> str:
    """The system chromium; skips (fails under ``CI``) when it is missing."""
    path = CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")
    if path is None:
        problem = f"no chromium at {CHROMIUM}: run scripts/install-system-deps.sh"
        if os.environ.get("CI"):
            pytest.fail(f"chromium missing in CI: {problem}", pytrace=False)
        pytest.skip(problem)
    return path


@attrs.frozen
class ServeProcess:
    base_url: str
    process: subprocess.Popen[bytes]
    log: Path


@pytest.fixture
def fake_server(tmp_path: Path) -> Iterator[ServeProcess]:
    """``clibridge serve --backend fake`` (:func:`serve_process`)."""
    with serve_process(tmp_path) as server:
        yield server


@contextmanager
def serve_process(
    tmp_path: Path, env_extra: Mapping[str, str] | None = None
) -> Iterator[ServeProcess]:
    """``clibridge serve --backend fake`` on a free loopback port, in a session of its own;
    on exit SIGTERM, and the server must drain, exit 0 and leave no process of its session
    behind."""
    log = tmp_path / "serve.log"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path / "home"),
        "NO_PROXY": "127.0.0.1,localhost",
        **(env_extra or {}),
    }
    argv = [
        sys.executable,
        "-m",
        "clibridge",
        "serve",
        "--backend",
        "fake",
        "--port",
        "0",
        "--state-dir",
        str(tmp_path / "state"),
        "--claude-workers",
        "2",
        "--codex-workers",
        "1",
        "--drain-timeout",
        "5",
    ]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 60
        while (match := _LISTENING.search(log.read_text(errors="replace"))) is None:
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"clibridge serve did not start:\n{log.read_text()}")
            time.sleep(0.1)
        yield ServeProcess(match.group(1), process, log)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise AssertionError("clibridge serve did not stop on SIGTERM") from None
    assert code == 0, log.read_text()
    # no orphans: nothing of the server's session (its CLI workers) outlives it
    left = [p.pid for p in psutil.process_iter() if _session_of(p.pid) == process.pid]
    assert left == [], f"processes left behind by clibridge serve: {left}"


def _session_of(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None
