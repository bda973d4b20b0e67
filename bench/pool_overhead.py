"""Pool overhead: from ``WorkerPool.lease()`` to the first neutral event, on a zero-delay fake.

Method
------
One process, one trio loop. A :class:`~clibridge._pool.WorkerPool` (``workers=1``,
``spares=1``) of :class:`~clibridge._backends.claude.worker.ClaudeWorker` runs the bundled
fake claude (real subprocesses, pipes, the same spawn home and argv as ``clibridge serve
--backend fake``). The fake replies at once ("Hello from the fake CLI.", one text delta).

After a warm-up, N sequential requests with the same system prompt (the steady state of
one client): each one is timed with ``time.perf_counter`` from just before ``pool.lease()``
is entered to

* ``checkout``      the lease is held: permit, pick the warm worker, ``bind`` (which sends
                    ``/clear`` and waits for its result, because the worker served a turn);
* ``first event``   the first neutral event of ``worker.turn()`` (``TurnStarted``, made from
                    the CLI's ``system/init`` line) -- **the measure of the target**;
* ``first text``    the first ``TextDelta``;
* ``turn end``      ``Finished``.

``supervisor: first event`` is the same, entered through ``Supervisor.turn`` (what the
HTTP layer calls: model table, conversation fingerprints, parking of the finished turn's
worker) instead of ``pool.lease``. Nothing is subtracted. For reference the same fake is then driven directly (blocking pipes,
no clibridge code, :class:`bench._common.RawClaude`): write the user line, time its first
stdout line / first text delta / ``result``, and a ``/clear`` round trip. The difference
between the two is what the pool, the worker's pump and trio add.

Target (issue 3): ``first event`` p50 <= 2 ms.

Run: ``.venv/bin/python bench/pool_overhead.py [--quick] [-n N]``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from contextlib import aclosing
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (
    FAKE_CLAUDE,
    MODEL,
    STAT_HEADERS,
    RawClaude,
    ms,
    quiet_logs,
    stat_rows,
    summary,
    table,
    verdict,
    write_results,
)
from clibridge._backends.claude.home import prepare_claude_home
from clibridge._backends.claude.worker import ClaudeWorker
from clibridge._config import ClaudeConfig, PoolConfig
from clibridge._events import Finished, Message, Request, TextDelta, TextPart
from clibridge._models import ModelTable
from clibridge._pool import WorkerPool
from clibridge._supervisor import Supervisor
from clibridge._worker import Binding

TARGET_P50_MS = 2.0
SYSTEM = "You are a benchmark."


async def measure_pool(
    state: Path, count: int, warmup: int, budget: float
) -> dict[str, list[float]]:
    config = ClaudeConfig(command=FAKE_CLAUDE)
    pool_config = PoolConfig(workers=1, spares=1, ready_timeout=20.0, kill_grace=1.0)
    home = prepare_claude_home(config, state, environ={"PATH": "/usr/bin:/bin"})

    def factory(worker_id: int) -> ClaudeWorker:
        return ClaudeWorker(worker_id, config, pool_config, home, model=MODEL)

    pool = WorkerPool("claude", pool_config, factory)
    binding = Binding(system=SYSTEM, tools_key=(), model=MODEL)
    request = Request(model=MODEL, system=SYSTEM, messages=(Message("user", (TextPart("hi"),)),))
    out: dict[str, list[float]] = {
        "checkout": [],
        "first event": [],
        "first text": [],
        "turn end": [],
        "supervisor: first event": [],
    }
    with trio.fail_after(budget + 30):
        async with trio.open_nursery() as nursery:
            await nursery.start(pool.run)
            # the first (warm-up) lease waits for the first worker to boot
            stop_at = time.perf_counter() + budget
            for i in range(warmup + count):
                if time.perf_counter() > stop_at:
                    print(
                        f"time budget of {budget:g} s reached after {i} requests", file=sys.stderr
                    )
                    break
                t0 = time.perf_counter()
                first = first_text = None
                async with pool.lease(binding) as lease:
                    t_checkout = time.perf_counter()
                    async with aclosing(lease.worker.turn(request)) as stream:
                        async for event in stream:
                            now = time.perf_counter()
                            if first is None:
                                first = now
                            if first_text is None and isinstance(event, TextDelta):
                                first_text = now
                            if isinstance(event, Finished):
                                t_end = now
                assert first is not None and first_text is not None
                if i >= warmup:
                    out["checkout"].append(ms(t_checkout - t0))
                    out["first event"].append(ms(first - t0))
                    out["first text"].append(ms(first_text - t0))
                    out["turn end"].append(ms(t_end - t0))
            # the same through Supervisor.turn, the HTTP layer's entry (model table,
            # conversation fingerprints, parking of the finished turn's worker)
            service = Supervisor({"claude": pool}, ModelTable(["claude"]))
            for i in range(warmup + count):
                if time.perf_counter() > stop_at:
                    break
                t0 = time.perf_counter()
                first = None
                async with service.turn(request) as events:
                    async for event in events:
                        if first is None:
                            first = time.perf_counter()
                        if isinstance(event, Finished):
                            break
                assert first is not None
                if i >= warmup:
                    out["supervisor: first event"].append(ms(first - t0))
            stats = pool.statistics()
            assert stats.restarts == 0, stats
            nursery.cancel_scope.cancel()
    return out


def measure_raw(count: int, warmup: int) -> dict[str, list[float]]:
    fake = RawClaude()
    out: dict[str, list[float]] = {
        "raw first line": [],
        "raw first text": [],
        "raw turn end": [],
        "raw /clear": [],
    }
    try:
        fake.boot(SYSTEM)
        for i in range(warmup + count):
            clear = fake.clear()
            times = fake.turn("hi")
            if i >= warmup:
                out["raw /clear"].append(ms(clear))
                out["raw first line"].append(ms(times["first_line"]))
                out["raw first text"].append(ms(times["first_text"]))
                out["raw turn end"].append(ms(times["result"]))
    finally:
        fake.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small run for CI (< 20 s)")
    parser.add_argument(
        "-n", type=int, default=None, help="measured requests (default 1000, quick 100)"
    )
    args = parser.parse_args(argv)
    quiet_logs()
    count = args.n or (100 if args.quick else 1000)
    warmup = 10 if args.quick else 30
    budget = 10.0 if args.quick else 120.0

    with tempfile.TemporaryDirectory(prefix="clibridge-bench-") as tmp:
        pool = trio.run(measure_pool, Path(tmp) / "state", count, warmup, budget)
    raw = measure_raw(count, warmup)

    print(
        f"pool overhead, fake claude with zero delay, {len(pool['first event'])} sequential requests (ms)"
    )
    print(table(STAT_HEADERS, stat_rows({**pool, **raw})))
    p50 = summary(pool["first event"])["p50"]
    ok = p50 <= TARGET_P50_MS
    print(
        f"\ntarget: lease() -> first event p50 <= {TARGET_P50_MS:g} ms: {p50:.3f} ms  {verdict(ok)}"
    )
    path = write_results(
        "pool_overhead",
        {
            "quick": args.quick,
            "requests": len(pool["first event"]),
            "unit": "ms",
            "pool": {k: summary(v) for k, v in pool.items()},
            "raw_fake": {k: summary(v) for k, v in raw.items()},
            "target": {"first_event_p50_ms": TARGET_P50_MS, "met": ok, "value": p50},
        },
    )
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
