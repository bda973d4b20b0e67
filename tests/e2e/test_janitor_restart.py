"""The janitor dies while the server runs: it is restarted, ``/readyz`` says so until it is
back, and a SIGKILL of the server afterwards still leaves no CLI process behind."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from clibridge import _janitor
from tests._procs import alive, children_of, cmdline, read_record, wait_gone

from .conftest import E2EServer
from .test_shutdown import serve_process


def janitors(parent: int) -> list[int]:
    return [p for p in children_of(parent) if "clibridge._janitor" in cmdline(p)]


async def readyz(base_url: str) -> tuple[int, dict[str, Any]]:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        response = await client.get("/readyz")
    body: dict[str, Any] = response.json()
    return response.status_code, body


async def test_killed_janitor_is_restarted_and_still_cleans_up_after_sigkill(
    tmp_path: Path,
) -> None:
    """Regression (issue 15, item 9): a killed janitor was never replaced, so a later
    SIGKILL of the server left every CLI process running. Now a new janitor is started at
    once, told every live worker group, and kills them all when the server dies."""
    scenario = {"default": {"spawn_grandchild": True}}
    async with serve_process(tmp_path, scenario=scenario) as server:
        with trio.fail_after(60):
            old = server.janitor()
            # every worker booted, recorded itself and its grandchild
            while True:
                stats = await server.stats()
                facts = read_record(server.record)
                spawned = {int(f["pid"]) for f in facts if "argv" in f}
                grandchildren = {int(f["grandchild_pid"]) for f in facts if "grandchild_pid" in f}
                workers = {w["pid"] for w in stats["workers"]}
                if (
                    len(workers) >= 1
                    and stats["booting"] == 0
                    and workers <= spawned
                    and len(grandchildren) == len(spawned)
                ):
                    break
                await trio.sleep(0.05)
            os.kill(old, signal.SIGKILL)
            while True:
                found = [p for p in janitors(server.process.pid) if p != old]
                status, body = await readyz(server.base_url)
                if found and "janitor" not in body["reason"]:
                    break
                await trio.sleep(0.02)
            (new,) = found
            assert status == 200 and body["ready"] is True
            assert not alive(old)  # reaped by the server, not left a zombie
            assert b"janitor restarted" in server.stderr
            assert all(alive(p) for p in workers | grandchildren)
            os.kill(server.process.pid, signal.SIGKILL)
            await server.process.wait()
            await wait_gone(server.cli_pids() | {new}, within=5)


async def test_readyz_names_the_janitor_until_it_is_back(
    fake_server: E2EServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (issue 15, item 9): while the janitor is down (here: killed, and its
    restarts fail until the test lets them succeed) ``/readyz`` says so in its reason. The
    server keeps serving -- ready stays true: only the hard-kill safety net is gone."""
    with trio.fail_after(60):
        status, body = await readyz(fake_server.base_url)
        while status != 200:  # the first worker is still booting
            await trio.sleep(0.02)
            status, body = await readyz(fake_server.base_url)
        assert "janitor" not in body["reason"]
        (old,) = janitors(os.getpid())
        monkeypatch.setattr(_janitor, "JANITOR_MODULE", "clibridge._no_such_janitor")
        os.kill(old, signal.SIGKILL)
        while "janitor" not in body["reason"]:
            await trio.sleep(0.01)
            status, body = await readyz(fake_server.base_url)
        assert status == 200 and body["ready"] is True
        assert body["reason"].endswith(
            "; janitor down, restarting: a hard kill of the server now would leave CLI "
            "processes behind"
        )
        await fake_server.assert_serves()
        status, body = await readyz(fake_server.base_url)
        assert "janitor down" in body["reason"]
        monkeypatch.undo()
        while "janitor" in body["reason"]:
            await trio.sleep(0.02)
            status, body = await readyz(fake_server.base_url)
        assert status == 200 and body["ready"] is True
        (new,) = janitors(os.getpid())
        assert new != old
        await fake_server.assert_clean()
