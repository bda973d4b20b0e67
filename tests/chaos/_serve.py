"""``clibridge serve --backend fake`` as a child process, watched from the outside.

The chaos and fuzz tests run the server in a process of its own, unlike ``tests/e2e``:
its RSS is its own (the clients' memory is not in it), it can be SIGKILLed and SIGTERMed
under load, and nothing it does can take the test process down. It serves the bundled
fake claude *and* fake codex (``--backend fake``), scripted per request by ``@fake``
lines and per process by an optional scenario file.

Every fake CLI records itself (``CLIBRIDGE_FAKE_RECORD``): its pid and argv when it
starts, and the pid of any grandchild it spawns. That record, ``/v1/stats`` and ``/proc``
together say whether a process outlived its purpose:

* *stray*: a recorded CLI process that is alive but neither a worker some pool reports
  nor in such a worker's process group;
* *survivor*: after the server exited, any recorded process, anything left in a recorded
  process's group, or the janitor.

The server's stderr is pumped for the whole run (a full pipe would block its logging),
its tail kept, and Python tracebacks counted: the server must never log one.

Linux only: processes are inspected through ``/proc``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

from tests._procs import alive, children_of, cmdline, in_groups, pgid_of, read_record, rss_mib

_LISTENING = re.compile(rb"clibridge is listening on http://([\d.]+):(\d+)")
_TRACEBACK = b"Traceback (most recent call last)"
#: how much of the server's stderr is kept for failure messages
_TAIL = 256 * 1024

# --------------------------------------------------------------------------- /proc


# --------------------------------------------------------------------------- the log


@attrs.define
class ServerLog:
    """The server's stderr: a bounded tail and counters."""

    tail: bytearray = attrs.field(factory=bytearray)
    size: int = 0
    tracebacks: int = 0
    _carry: bytes = b""

    def feed(self, chunk: bytes) -> None:
        self.size += len(chunk)
        scan = self._carry + chunk
        self.tracebacks += scan.count(_TRACEBACK)
        self._carry = scan[-(len(_TRACEBACK) - 1) :]
        self.tail += chunk
        if len(self.tail) > _TAIL:
            del self.tail[: len(self.tail) - _TAIL]

    def text(self, last: int = 4000) -> str:
        return self.tail[-last:].decode(errors="replace")


# --------------------------------------------------------------------------- the server


@attrs.define
class ServeProcess:
    process: trio.Process
    host: str
    port: int
    record: Path
    log: ServerLog
    #: every janitor seen as a child of the server
    janitors: set[int] = attrs.field(factory=set)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        kwargs.setdefault("timeout", 30.0)
        return httpx.AsyncClient(base_url=self.base_url, trust_env=False, **kwargs)

    def rss_mib(self) -> float:
        return rss_mib(self.pid)

    def find_janitors(self) -> set[int]:
        found = {p for p in children_of(self.pid) if "clibridge._janitor" in cmdline(p)}
        self.janitors |= found
        return found

    def cli_pids(self) -> set[int]:
        """Every fake CLI process, and grandchild, this server ever started."""
        pids: set[int] = set()
        for fact in read_record(self.record):
            if "pid" in fact and "argv" in fact:
                pids.add(int(fact["pid"]))
            if "grandchild_pid" in fact:
                pids.add(int(fact["grandchild_pid"]))
        return pids

    def spawned(self) -> int:
        """How many fake CLI processes were started (grandchildren not counted)."""
        return sum(self.spawned_by_backend().values())

    def spawned_by_backend(self) -> dict[str, int]:
        """Fake CLI processes started, by backend (``fake_claude`` / ``fake_codex``)."""
        out = {"claude": 0, "codex": 0}
        for fact in read_record(self.record):
            if "pid" in fact and "argv" in fact:
                out["codex" if any("fake_codex" in a for a in fact["argv"]) else "claude"] += 1
        return out

    async def all_stats(self) -> dict[str, dict[str, Any]]:
        async with self.client(timeout=10.0) as client:
            response = await client.get("/v1/stats")
        response.raise_for_status()
        pools: dict[str, dict[str, Any]] = response.json()["service"]
        return pools

    async def wait_stats(
        self,
        predicate: Callable[[dict[str, dict[str, Any]]], bool],
        *,
        within: float = 15.0,
        what: str = "stats",
    ) -> dict[str, dict[str, Any]]:
        pools: dict[str, dict[str, Any]] = {}
        with trio.move_on_after(within):
            while True:
                pools = await self.all_stats()
                if predicate(pools):
                    return pools
                await trio.sleep(0.05)
        raise AssertionError(f"{what} never held within {within} s: {_brief(pools)}")

    def strays(self, pools: Mapping[str, Mapping[str, Any]]) -> dict[int, str]:
        """Recorded CLI processes alive outside every pool's workers and their groups."""
        workers = worker_pids(pools)
        return {
            p: cmdline(p)
            for p in self.cli_pids() - workers
            if alive(p) and pgid_of(p) not in workers
        }

    async def settle(self, *, within: float = 20.0) -> dict[str, dict[str, Any]]:
        """Wait until every pool has its full capacity back (nothing in flight but
        parked conversations, nothing queued or booting) and no recorded CLI process is
        a stray; fail naming what is still wrong."""
        pools: dict[str, dict[str, Any]] = {}

        def clean() -> bool:
            return (
                all(settled(s) for s in pools.values())
                and not self.strays(pools)
                # a worker being retired is listed until the pool has reaped it
                and all(alive(pid) for pid in worker_pids(pools))
            )

        with trio.move_on_after(within):
            while True:
                pools = await self.all_stats()
                if clean():
                    break
                await trio.sleep(0.05)
        leaked = [
            name
            for name, s in pools.items()
            if s["in_flight"] > s["parked"] and not any(w["state"] == "busy" for w in s["workers"])
        ]
        hint = (
            f" -- {leaked}: a lease in flight with no worker busy, the permit leak of "
            "tests/chaos/test_queue_race.py?"
            if leaked
            else ""
        )
        assert all(settled(s) for s in pools.values()), (
            f"pools never settled: {_brief(pools)}{hint}"
        )
        strays = self.strays(pools)
        assert not strays, f"CLI processes outside the pools (orphans): {strays}"
        for pid in worker_pids(pools):
            assert alive(pid), f"worker {pid} reported by /v1/stats is not alive"
        return pools

    def describe(self, pids: Mapping[int, str]) -> list[str]:
        """Each process with its group, whose worker it was, and what the log says of it."""
        out = []
        for pid, command in pids.items():
            group = pgid_of(pid)
            lines = [
                line
                for line in self.log.text(_TAIL).splitlines()
                if group is not None and (f"pid {group}" in line or f"{group})" in line)
            ]
            worker = "a recorded CLI" if group in self.cli_pids() else "no recorded CLI"
            out.append(f"{pid} {command!r} in group {group} ({worker}); log: {lines[-3:]}")
        return out

    def survivors(self) -> dict[int, str]:
        """After the server exited: every process of it still alive."""
        pids = self.cli_pids() | self.janitors
        left = {p for p in pids if alive(p)} | in_groups(pids)
        return {p: cmdline(p) for p in left}


def settled(stats: Mapping[str, Any]) -> bool:
    # a parked worker holds a finished conversation the client may continue: it holds a
    # permit but gives it up under pressure, so it counts as free capacity
    return (
        stats["in_flight"] == stats["parked"]
        and stats["queued"] == 0
        and stats["booting"] == 0
        and all(w["state"] in ("idle", "parked") for w in stats["workers"])
    )


def worker_pids(pools: Mapping[str, Mapping[str, Any]]) -> set[int]:
    return {int(w["pid"]) for s in pools.values() for w in s["workers"] if w["pid"] is not None}


def _brief(pools: Mapping[str, Mapping[str, Any]]) -> str:
    keys = ("in_flight", "parked", "queued", "booting", "idle", "restarts", "ready", "reason")
    return json.dumps(
        {
            name: {k: s.get(k) for k in keys} | {"workers": [w["state"] for w in s["workers"]]}
            for name, s in pools.items()
        }
    )


async def wait_gone(server: ServeProcess, *, within: float = 10.0) -> None:
    """Wait until nothing of ``server`` (CLI processes, their groups, the janitor) is
    alive; fail naming the survivors."""
    with trio.move_on_after(within):
        # Why polling: the exit of a process we are not the parent of signals nothing.
        while server.survivors():  # noqa: ASYNC110
            await trio.sleep(0.02)
    survivors = server.survivors()
    assert not survivors, f"processes survived the server: {server.describe(survivors)}"


async def terminate(server: ServeProcess, *, within: float) -> tuple[int | None, float]:
    """SIGTERM; the exit code (None: still running after ``within`` seconds) and how
    long the exit took."""
    server.find_janitors()
    t0 = trio.current_time()
    server.process.send_signal(signal.SIGTERM)
    with trio.move_on_after(within):
        await server.process.wait()
    return server.process.poll(), trio.current_time() - t0


def _kill_leftovers(server: ServeProcess) -> None:
    """After a failed test: end what the server left behind (all of it ours, by pid)."""
    for pid in server.survivors():
        with suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


@asynccontextmanager
async def serve_process(
    tmp: Path,
    *args: str,
    scenario: Mapping[str, Any] | None = None,
    state_dir: Path | None = None,
    stop_within: float = 15.0,
) -> AsyncIterator[ServeProcess]:
    """``clibridge serve --backend fake --port 0`` with ``args``; yields once it listens.

    On exit a server still running gets SIGTERM (then SIGKILL after ``stop_within``
    seconds); whatever it left behind is killed, so a failing test leaves no process on
    the machine. Tests that promise a clean stop assert it with :func:`terminate`.
    """
    os.makedirs(tmp, exist_ok=True)
    record = tmp / "fake-record.jsonl"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp),
        "NO_PROXY": "127.0.0.1,localhost",
        "CLIBRIDGE_FAKE_RECORD": str(record),
    }
    if "PYTHONPATH" in os.environ:  # the suite run against another checkout's src/
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    if scenario is not None:
        path = tmp / "scenario.json"
        path.write_text(json.dumps(scenario))
        env["CLIBRIDGE_FAKE_SCENARIO"] = str(path)
    argv = [sys.executable, "-m", "clibridge", "serve", "--backend", "fake"]
    argv += ["--host", "127.0.0.1", "--port", "0", "--state-dir", str(state_dir or tmp / "state")]
    argv += list(args)
    process = await trio.lowlevel.open_process(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    log = ServerLog()
    server: ServeProcess | None = None
    try:
        async with trio.open_nursery() as nursery:
            listening = trio.Event()

            async def pump() -> None:
                assert process.stderr is not None
                async for chunk in process.stderr:
                    log.feed(bytes(chunk))
                    if not listening.is_set() and _LISTENING.search(log.tail):
                        listening.set()

            nursery.start_soon(pump)
            with trio.fail_after(30):
                while not listening.is_set():
                    if process.poll() is not None:
                        raise AssertionError(f"serve exited early: {log.text()}")
                    with trio.move_on_after(0.1):
                        await listening.wait()
            match = _LISTENING.search(log.tail)
            assert match is not None
            server = ServeProcess(
                process, match.group(1).decode(), int(match.group(2)), record, log
            )
            server.find_janitors()
            yield server
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            with trio.move_on_after(stop_within):
                await process.wait()
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            if process.poll() is None:
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
            if server is not None:
                with trio.move_on_after(5):
                    while server.survivors():  # noqa: ASYNC110 - nothing to wait on
                        await trio.sleep(0.05)
                _kill_leftovers(server)
