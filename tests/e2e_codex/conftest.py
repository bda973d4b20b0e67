"""End-to-end fixtures for the codex backend: the whole server in-process, real children.

:func:`open_codex_server` runs :func:`clibridge._supervisor.serve` inside the test's trio
loop on 127.0.0.1:0 with a codex pool, either on the bundled fake codex (scripted by a
scenario file and ``@fake`` lines; every fake records its pid and stdin through
``CLIBRIDGE_FAKE_RECORD``) or on the pinned real codex pointed at the loopback Responses
stub. Optionally the fake claude runs next to it (both backends at once).

The real codex reaches the stub the way :func:`clibridge.testing.realcli.codex_setup` sets
it up: the ``-c`` provider overrides go into ``codex.overrides``, and the provider's key
variable (``STUB_KEY``) into ``codex.pass_env`` -- the server builds its children's
environment from an allow-list, so that is the one way to hand the key over.

Leaving the context drains the server; then every process the server ever started (the
recorded fake pids, and every child of this test process seen meanwhile) must be gone,
with its whole process group.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

from clibridge._config import ClaudeConfig, CodexConfig, Config, PoolConfig, ServerConfig
from clibridge._process import live_group_members
from clibridge._supervisor import FAKE_CLAUDE_COMMAND, FAKE_CODEX_COMMAND, BackendChoice, serve
from clibridge.testing.realcli import CODEX_KEY_ENV, CodexSetup
from tests._procs import alive, children_of, read_record

CODEX_POOL = PoolConfig(
    workers=1,
    spares=0,
    max_queue=8,
    queue_timeout=20.0,
    turn_timeout=30.0,
    stream_idle_timeout=30.0,
    ready_timeout=20.0,
    interrupt_grace=1.0,
    kill_grace=0.5,
    restart_backoff_initial=0.05,
    restart_backoff_max=0.5,
)
CLAUDE_POOL = attrs.evolve(CODEX_POOL, workers=1, spares=0)
BOUND = 60  # seconds: a bound on any one real wait in these tests


@attrs.define
class CodexServer:
    base_url: str
    record: Path
    fake: bool
    #: every child of this test process seen while the server ran
    children: set[int] = attrs.field(factory=set)

    @property
    def v1(self) -> str:
        return self.base_url + "/v1"

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        kwargs.setdefault("timeout", 30.0)
        return httpx.AsyncClient(base_url=self.base_url, **kwargs)

    async def stats(self, backend: str = "codex") -> dict[str, Any]:
        async with self.client() as client:
            response = await client.get("/v1/stats")
        response.raise_for_status()
        stats: dict[str, Any] = response.json()["service"][backend]
        return stats

    async def wait_stats(
        self, predicate: Callable[[dict[str, Any]], bool], within: float = 15.0
    ) -> dict[str, Any]:
        stats: dict[str, Any] = {}
        with trio.move_on_after(within):
            while True:
                stats = await self.stats()
                if predicate(stats):
                    return stats
                await trio.sleep(0.05)
        raise AssertionError(f"stats never matched: {stats}")

    def facts(self) -> list[dict[str, Any]]:
        return read_record(self.record)

    def cli_pids(self) -> set[int]:
        """Every fake CLI process (claude or codex) this server started."""
        return {int(f["pid"]) for f in self.facts() if "pid" in f and "argv" in f}

    def sent(self, method: str) -> list[dict[str, Any]]:
        """Every JSON-RPC request with ``method`` the server wrote to a fake codex."""
        return [
            f["stdin"]
            for f in self.facts()
            if isinstance(f.get("stdin"), dict) and f["stdin"].get("method") == method
        ]

    async def assert_full_capacity(self, *, workers: int = 1) -> dict[str, Any]:
        """Nothing in flight or queued, ``workers`` idle workers, no CLI outside the pool.

        ``workers=0`` after a crash with no spares: the replacement boots on demand.
        """

        def settled(s: dict[str, Any]) -> bool:
            return (
                s["in_flight"] == 0
                and s["queued"] == 0
                and s["booting"] == 0
                and len(s["workers"]) == workers
                and all(w["state"] == "idle" for w in s["workers"])
            )

        stats = await self.wait_stats(settled)
        pool = {int(w["pid"]) for w in stats["workers"]}
        assert all(alive(p) for p in pool), stats
        if self.fake:
            await wait_gone({p for p in self.cli_pids() - pool if _is_codex(self, p)})
        return stats


def _is_codex(server: CodexServer, pid: int) -> bool:
    for fact in server.facts():
        if fact.get("pid") == pid and "argv" in fact:
            return any("fake_codex" in a for a in fact["argv"])
    return False


async def wait_gone(pids: set[int], within: float = 10.0) -> None:
    """Wait until none of ``pids`` (nor anything in their groups) is alive."""
    with trio.move_on_after(within):
        # Why polling: the exit of a process we are not the parent of signals nothing.
        while any(alive(p) or live_group_members(p) for p in pids):  # noqa: ASYNC110
            await trio.sleep(0.02)
    survivors = {p: live_group_members(p) for p in pids if alive(p) or live_group_members(p)}
    assert not survivors, f"processes survived: {survivors}"


def real_codex_config(setup: CodexSetup) -> tuple[tuple[str, ...], dict[str, Any], dict[str, str]]:
    """``(command, CodexConfig kwargs, environ)`` that point the server's codex at the stub."""
    overrides = tuple(setup.config_args[1::2])  # the values of the "-c" pairs
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "NO_PROXY": "127.0.0.1,localhost",
        CODEX_KEY_ENV: setup.env[CODEX_KEY_ENV],
    }
    return setup.argv_prefix, {"overrides": overrides, "pass_env": (CODEX_KEY_ENV,)}, env


@asynccontextmanager
async def open_codex_server(
    tmp: Path,
    *,
    scenario: Mapping[str, Any] | None = None,
    pool: PoolConfig = CODEX_POOL,
    threads_per_worker: int = 4,
    with_claude: bool = False,
    real: CodexSetup | None = None,
    server: Mapping[str, Any] | None = None,
) -> AsyncIterator[CodexServer]:
    """The real server in this trio loop; on exit: drain, then no process may survive."""
    os.makedirs(tmp, exist_ok=True)
    record = tmp / "fake-record.jsonl"
    command: tuple[str, ...]
    codex_kwargs: dict[str, Any] = {}
    if real is None:
        command = FAKE_CODEX_COMMAND
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "CLIBRIDGE_FAKE_RECORD": str(record),
        }
        if scenario is not None:
            path = tmp / "scenario.json"
            path.write_text(json.dumps(scenario))
            env["CLIBRIDGE_FAKE_SCENARIO"] = str(path)
    else:
        command, codex_kwargs, env = real_codex_config(real)
    config = Config(
        server=ServerConfig(
            **{"host": "127.0.0.1", "port": 0, "drain_timeout": 5.0, **(server or {})}
        ),
        claude=ClaudeConfig(pool=CLAUDE_POOL),
        codex=CodexConfig(
            pool=pool,
            threads_per_worker=threads_per_worker,
            **{"prestart_threads": False, **codex_kwargs},
        ),
        backend="fake" if real is None else "codex",
        state_dir=tmp / "state",
    )
    choice = BackendChoice(
        claude=FAKE_CLAUDE_COMMAND if with_claude else None,
        codex=command,
        fake=real is None,
        notes=(),
    )
    shutdown = trio.Event()
    me = os.getpid()
    before = children_of(me)
    serve_done = trio.Event()

    async def run_server(*, task_status: trio.TaskStatus[tuple[str, int]]) -> None:
        try:
            await serve(config, choice, env, shutdown=shutdown, task_status=task_status)
        finally:
            serve_done.set()

    running: CodexServer | None = None

    async def watch_children() -> None:
        # the real codex does not record itself: remember every child we ever saw
        while not serve_done.is_set():
            if running is not None:
                running.children |= children_of(me) - before
            with trio.move_on_after(0.05):
                await serve_done.wait()

    async with trio.open_nursery() as nursery:
        with trio.fail_after(BOUND):
            host, port = await nursery.start(run_server)
        running = CodexServer(f"http://{host}:{port}", record, fake=real is None)
        nursery.start_soon(watch_children)
        try:
            yield running
        finally:
            shutdown.set()
            nursery.cancel_scope.deadline = trio.current_time() + 30
    assert serve_done.is_set()
    running.children |= children_of(me) - before
    await wait_gone(running.cli_pids() | running.children)
