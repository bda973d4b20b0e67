"""End-to-end fixtures: the whole clibridge server, in-process, with real child processes,
on either backend.

:func:`open_e2e_server` runs :func:`clibridge._supervisor.serve` -- janitor, pools of real
CLI worker processes, Quart-Trio app on Hypercorn -- inside the test's trio loop on
127.0.0.1:0. ``backend`` ("claude" or "codex", see :data:`BACKENDS`) names the pool the
test is about: it gets ``pool`` and the server's :meth:`E2EServer.stats`,
:meth:`E2EServer.assert_clean` and :meth:`E2EServer.assert_serves` look at it. It runs on
the bundled fake CLI (scripted by a scenario file and ``@fake`` lines in the prompts) unless
``fake=False`` and a real command are given (the pinned real claude or codex pointed at the
loopback model stub); the other backend runs next to it when its command is given.

Every fake CLI records itself (``CLIBRIDGE_FAKE_RECORD``): its pid, any grandchild it
spawned, and every stdin line. :meth:`E2EServer.assert_clean` uses that to prove the
process table is clean: each worker the pools report is alive, every other CLI process
ever started is gone (a grandchild may live only inside a live worker's process group),
nothing but the live workers and the janitor is a child of the server (this test process),
and every pool has its full capacity back -- nothing in flight but *parked* conversations,
which hold a permit yet give way under pressure. Leaving the context drains the server and
then checks that *no* process survived, nor anything in their process groups, the janitor
included.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import attrs
import httpx
import pytest
import trio

from clibridge._config import ClaudeConfig, CodexConfig, Config, PoolConfig, ServerConfig
from clibridge._process import live_group_members
from clibridge._supervisor import FAKE_CLAUDE_COMMAND, FAKE_CODEX_COMMAND, BackendChoice, serve
from clibridge.testing.model_stub import STUB_API_KEY, ModelStub
from clibridge.testing.realcli import CODEX_KEY_ENV, CodexSetup
from tests._procs import alive, children_of, cmdline, pgid_of, read_record
from tests._raw_http import open_raw_stream

Backend = Literal["claude", "codex"]

MODEL = "claude-sonnet-4-5"
CODEX_MODEL = "gpt-5"
BOUND = 60  # seconds: a bound on any one real wait in these tests
#: small pool, short timeouts: failures show within seconds
FAST_POOL = PoolConfig(
    workers=2,
    spares=1,
    max_queue=4,
    queue_timeout=10.0,
    turn_timeout=30.0,
    stream_idle_timeout=30.0,
    ready_timeout=20.0,
    interrupt_grace=1.0,
    kill_grace=0.5,
    restart_backoff_initial=0.05,
    restart_backoff_max=0.5,
)
#: one codex process (it serves several threads at once), short timeouts
CODEX_POOL = attrs.evolve(FAST_POOL, workers=1, spares=0, max_queue=8, queue_timeout=20.0)
#: the claude pool next to a codex one
CLAUDE_SIDE_POOL = attrs.evolve(CODEX_POOL, workers=1, spares=0)


@attrs.frozen
class BackendSetup:
    """How the harness runs one backend when a test is about it."""

    name: Backend
    #: the model :meth:`E2EServer.assert_serves` asks for
    model: str
    fake_command: tuple[str, ...]
    pool: PoolConfig
    #: the pool when the test is about the other backend (``None``: the library default)
    side_pool: PoolConfig | None
    #: further ``ClaudeConfig`` / ``CodexConfig`` fields when the test is about it
    settings: Mapping[str, Any] = attrs.field(factory=dict)


BACKENDS: dict[Backend, BackendSetup] = {
    "claude": BackendSetup("claude", MODEL, FAKE_CLAUDE_COMMAND, FAST_POOL, CLAUDE_SIDE_POOL),
    "codex": BackendSetup(
        "codex",
        CODEX_MODEL,
        FAKE_CODEX_COMMAND,
        CODEX_POOL,
        None,
        # threads start with the turn: the record shows each thread/start next to its turn
        {"threads_per_worker": 4, "prestart_threads": False},
    ),
}


# --------------------------------------------------------------------------- the server


@attrs.define
class E2EServer:
    base_url: str
    shutdown: trio.Event
    record: Path
    #: on the fake CLIs (they record themselves)
    fake: bool = True
    #: which pool :meth:`stats` and :meth:`assert_clean` look at
    backend: str = "claude"
    #: the model :meth:`assert_serves` asks for
    model: str = MODEL
    #: every child of this test process seen while the server ran
    children: set[int] = attrs.field(factory=set)
    #: headers every :meth:`client` sends (an admin key when the server has named keys)
    headers: dict[str, str] = attrs.field(factory=dict)

    @property
    def v1(self) -> str:
        return self.base_url + "/v1"

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        kwargs.setdefault("timeout", 30.0)
        kwargs.setdefault("headers", self.headers)
        return httpx.AsyncClient(base_url=self.base_url, **kwargs)

    async def all_stats(self) -> dict[str, dict[str, Any]]:
        """``/v1/stats``: every pool's statistics by backend name."""
        async with self.client() as client:
            response = await client.get("/v1/stats")
        response.raise_for_status()
        pools: dict[str, dict[str, Any]] = response.json()["service"]
        return pools

    async def stats(self, backend: str | None = None) -> dict[str, Any]:
        """The statistics of ``backend``'s pool (:attr:`backend`'s by default)."""
        return (await self.all_stats())[backend or self.backend]

    def facts(self) -> list[dict[str, Any]]:
        """Everything the fake CLIs recorded."""
        return read_record(self.record)

    def cli_pids(self) -> set[int]:
        """Every fake CLI process (and grandchild) ever started by this server."""
        pids: set[int] = set()
        for fact in self.facts():
            if "pid" in fact and "argv" in fact:
                pids.add(int(fact["pid"]))
            if "grandchild_pid" in fact:
                pids.add(int(fact["grandchild_pid"]))
        return pids

    def grandchild_pids(self) -> set[int]:
        return {int(f["grandchild_pid"]) for f in self.facts() if "grandchild_pid" in f}

    def stdin_lines(self) -> list[Any]:
        return [f["stdin"] for f in self.facts() if "stdin" in f]

    def sent(self, method: str) -> list[dict[str, Any]]:
        """Every JSON-RPC request with ``method`` the server wrote to a fake codex."""
        return [
            line
            for line in self.stdin_lines()
            if isinstance(line, dict) and line.get("method") == method
        ]

    async def wait_stats(
        self, predicate: Callable[[dict[str, Any]], bool], within: float = 15.0
    ) -> dict[str, Any]:
        """Poll /v1/stats until ``predicate(stats)``; fail with the last stats."""
        stats: dict[str, Any] = {}
        with trio.move_on_after(within):
            while True:
                stats = await self.stats()
                if predicate(stats):
                    return stats
                await trio.sleep(0.05)
        raise AssertionError(f"stats never matched: {stats}")

    async def assert_clean(self, *, settle: float = 15.0) -> dict[str, Any]:
        """Full capacity back in every pool (nothing in flight but parked conversations)
        and no CLI process beyond the pools' live workers. Returns :attr:`backend`'s stats."""

        def pool_settled(s: dict[str, Any]) -> bool:
            # a parked worker holds a finished conversation the client may continue; it
            # holds a permit but gives it up under pressure, so it counts as capacity
            return (
                s["in_flight"] == s["parked"]
                and s["queued"] == 0
                and s["booting"] == 0
                and all(w["state"] in ("idle", "parked") for w in s["workers"])
                and len(s["workers"]) >= 1
            )

        def stray(workers: set[int]) -> dict[int, str]:
            # a grandchild may live as long as the worker whose group it is in
            return {
                p: cmdline(p)
                for p in self.cli_pids() - workers
                if alive(p) and pgid_of(p) not in workers
            }

        pools: dict[str, dict[str, Any]] = {}
        with trio.move_on_after(settle):
            while True:
                pools = await self.all_stats()
                workers = set().union(*(_worker_pids(s) for s in pools.values()))
                if all(pool_settled(s) for s in pools.values()) and not stray(workers):
                    break
                await trio.sleep(0.05)
        assert all(pool_settled(s) for s in pools.values()), f"pools never settled: {pools}"
        workers = set().union(*(_worker_pids(s) for s in pools.values()))
        for pid in workers:
            assert alive(pid), f"worker {pid} reported by statistics() is not alive"
        if self.fake:
            leaked = stray(workers)
            assert not leaked, f"CLI processes outside the pools: {leaked}"
        others = {p: cmdline(p) for p in children_of(os.getpid()) if p not in workers}
        others = {p: c for p, c in others.items() if "clibridge._janitor" not in c}
        assert not others, f"unexpected children of the server: {others}"
        return pools[self.backend]

    async def assert_full_capacity(self, *, workers: int = 1) -> dict[str, Any]:
        """:attr:`backend`'s pool: nothing in flight or queued, exactly ``workers`` idle
        workers, and (on the fakes) no process of its CLI outside the pool.

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
        pool = _worker_pids(stats)
        assert all(alive(p) for p in pool), stats
        if self.fake:
            await wait_gone({p for p in self.cli_pids() - pool if self._runs(p, self.backend)})
        return stats

    def _runs(self, pid: int, backend: str) -> bool:
        """The fake CLI ``pid`` is ``backend``'s."""
        for fact in self.facts():
            if fact.get("pid") == pid and "argv" in fact:
                return any(f"fake_{backend}" in a for a in fact["argv"])
        return False

    async def assert_serves(self, text: str = "follow-up") -> None:
        """A follow-up request succeeds (the pool is usable again)."""
        async with self.client() as client:
            response = await client.post(
                "/v1/chat/completions",
                json={"model": self.model, "messages": [{"role": "user", "content": text}]},
            )
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["finish_reason"] == "stop"


def _worker_pids(stats: Mapping[str, Any]) -> set[int]:
    return {int(w["pid"]) for w in stats["workers"] if w["pid"] is not None}


async def wait_gone(pids: set[int], within: float = 10.0) -> None:
    """Wait until none of ``pids`` (nor anything in their groups) is alive."""
    with trio.move_on_after(within):
        # Why polling: the exit of a process we are not the parent of signals nothing.
        while any(alive(p) or live_group_members(p) for p in pids):  # noqa: ASYNC110
            await trio.sleep(0.02)
    survivors = {p: live_group_members(p) for p in pids if alive(p) or live_group_members(p)}
    assert not survivors, f"processes survived: {survivors}"


def make_config(
    tmp: Path,
    *,
    pool: PoolConfig = FAST_POOL,
    claude: Mapping[str, Any] | None = None,
    codex: Mapping[str, Any] | None = None,
    server: Mapping[str, Any] | None = None,
    backend: Literal["claude", "codex", "fake", "both"] = "fake",
    about: Backend = "claude",
) -> Config:
    """The server's configuration; the test is ``about`` that backend: it gets ``pool`` and
    its :data:`BACKENDS` settings, the other one its side pool."""
    server_kwargs: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "drain_timeout": 5.0}
    server_kwargs.update(server or {})
    sections: dict[Backend, dict[str, Any]] = {}
    for name, setup in BACKENDS.items():
        fields: dict[str, Any] = {}
        if name == about:
            fields.update(setup.settings, pool=pool)
        elif setup.side_pool is not None:
            fields["pool"] = setup.side_pool
        fields.update((claude if name == "claude" else codex) or {})
        sections[name] = fields
    return Config(
        server=ServerConfig(**server_kwargs),
        claude=ClaudeConfig(**sections["claude"]),
        codex=CodexConfig(**sections["codex"]),
        backend=backend,
        state_dir=tmp / "state",
    )


@asynccontextmanager
async def open_e2e_server(
    tmp: Path,
    *,
    backend: Backend = "claude",
    scenario: Mapping[str, Any] | None = None,
    pool: PoolConfig | None = None,
    claude: Mapping[str, Any] | None = None,
    codex_settings: Mapping[str, Any] | None = None,
    server: Mapping[str, Any] | None = None,
    command: tuple[str, ...] | None = None,
    codex: tuple[str, ...] | None = None,
    environ: Mapping[str, str] | None = None,
    fake: bool = True,
) -> AsyncIterator[E2EServer]:
    """The real server in this trio loop; on exit: drain, then no process may survive.

    ``command`` is claude's, ``codex`` codex's; ``backend``'s defaults to its fake, the
    other backend runs only when its command is given. ``pool`` defaults to ``backend``'s
    in :data:`BACKENDS`; ``claude`` and ``codex_settings`` are further config fields.
    """
    setup = BACKENDS[backend]
    if backend == "claude":
        command = command or setup.fake_command
    else:
        codex = codex or setup.fake_command
    os.makedirs(tmp, exist_ok=True)
    record = tmp / "fake-record.jsonl"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "NO_PROXY": "127.0.0.1,localhost"}
    if fake:
        env["CLIBRIDGE_FAKE_RECORD"] = str(record)
        if scenario is not None:
            path = tmp / "scenario.json"
            path.write_text(json.dumps(scenario))
            env["CLIBRIDGE_FAKE_SCENARIO"] = str(path)
    env.update(environ or {})
    mode: Literal["claude", "codex", "fake", "both"] = "fake"
    if not fake:
        mode = "both" if command and codex else "claude" if command else "codex"
    config = make_config(
        tmp,
        pool=pool or setup.pool,
        claude=claude,
        codex=codex_settings,
        server=server,
        backend=mode,
        about=backend,
    )
    choice = BackendChoice(claude=command, codex=codex, fake=fake, notes=())
    shutdown = trio.Event()
    me = os.getpid()
    before = children_of(me)
    serve_done = trio.Event()

    async def run_server(*, task_status: trio.TaskStatus[tuple[str, int]]) -> None:
        try:
            await serve(config, choice, env, shutdown=shutdown, task_status=task_status)
        finally:
            serve_done.set()

    running: E2EServer | None = None

    async def watch_children() -> None:
        # a real CLI does not record itself: remember every child we ever saw
        while not serve_done.is_set():
            if running is not None:
                running.children |= children_of(me) - before
            with trio.move_on_after(0.05):
                await serve_done.wait()

    async with trio.open_nursery() as nursery:
        with trio.fail_after(BOUND):
            host, port = await nursery.start(run_server)
        running = E2EServer(
            f"http://{host}:{port}", shutdown, record, fake=fake, backend=backend, model=setup.model
        )
        nursery.start_soon(watch_children)
        try:
            yield running
        finally:
            shutdown.set()
            # a drain longer than this is a bug of its own
            nursery.cancel_scope.deadline = trio.current_time() + 30
    assert serve_done.is_set()
    running.children |= children_of(me) - before
    await wait_gone(running.cli_pids() | running.children)


async def open_raw(
    server: E2EServer, body: dict[str, Any], path: str = "/v1/chat/completions"
) -> trio.SocketStream:
    """POST a streaming chat request on a bare TCP stream (the test hangs up when it wants)."""
    stream, _ = await open_raw_stream(server.base_url, path, body, read_head=False)
    return stream


async def read_until(stream: trio.SocketStream, marker: bytes) -> bytes:
    got = b""
    while marker not in got:
        chunk = await stream.receive_some(65536)
        assert chunk, f"connection closed before {marker!r}: {got!r}"
        got += chunk
    return got


@pytest.fixture
async def fake_server(tmp_path: Path) -> AsyncIterator[E2EServer]:
    """The server on the fake claude with the default scenario and :data:`FAST_POOL`."""
    async with open_e2e_server(tmp_path) as running:
        yield running


def real_claude_env(stub: ModelStub) -> dict[str, str]:
    """What the real claude needs to reach the stub (passed on purpose via ``pass_env``)."""
    return {"ANTHROPIC_API_KEY": STUB_API_KEY, "ANTHROPIC_BASE_URL": stub.base_url}


REAL_PASS_ENV = ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL")


@asynccontextmanager
async def open_real_server(
    tmp: Path, claude_binary: Path, stub: ModelStub, *, pool: PoolConfig = FAST_POOL
) -> AsyncIterator[E2EServer]:
    """The server on the pinned real claude, pointed at ``stub``."""
    async with open_e2e_server(
        tmp,
        pool=pool,
        claude={"pass_env": REAL_PASS_ENV, "login_hint": "claude setup-token"},
        command=(str(claude_binary),),
        environ=real_claude_env(stub),
        fake=False,
    ) as running:
        yield running


def real_codex_settings(setup: CodexSetup) -> dict[str, Any]:
    """:func:`open_e2e_server` arguments that run the real codex of ``setup`` against its
    stub, the way :func:`clibridge.testing.realcli.codex_setup` sets it up: the ``-c``
    provider overrides go into ``codex.overrides``, the provider's key variable into
    ``codex.pass_env`` -- the server builds its children's environment from an allow-list,
    so that is the one way to hand the key over."""
    return {
        "codex": setup.argv_prefix,
        "codex_settings": {
            "overrides": tuple(setup.config_args[1::2]),  # the values of the "-c" pairs
            "pass_env": (CODEX_KEY_ENV,),
        },
        "environ": {CODEX_KEY_ENV: setup.env[CODEX_KEY_ENV]},
        "fake": False,
    }


# --------------------------------------------------------------------------- codex

#: the one server type; the name the codex tests outside tests/e2e import
CodexServer = E2EServer


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
) -> AsyncIterator[E2EServer]:
    """The server about the codex pool, in the shape the codex tests call it: ``real=`` a
    :class:`CodexSetup` instead of a command, ``with_claude`` for the fake claude next to it
    (see :func:`open_e2e_server`)."""
    kwargs: dict[str, Any] = {} if real is None else real_codex_settings(real)
    kwargs["codex_settings"] = {
        "threads_per_worker": threads_per_worker,
        **kwargs.get("codex_settings", {}),
    }
    async with open_e2e_server(
        tmp,
        backend="codex",
        scenario=scenario,
        pool=pool,
        server=server,
        command=FAKE_CLAUDE_COMMAND if with_claude else None,
        **kwargs,
    ) as running:
        yield running
