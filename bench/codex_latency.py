"""Codex latency: a warm CodexWorker vs ``codex exec`` per request; multiplexing vs processes.

Runs the real pinned codex (``.cache/realcli``) against the loopback Responses stub::

    python bench/codex_latency.py [--n 30]

1. ``n`` sequential requests through one warm CodexWorker (one thread per request) vs a
   fresh ``codex exec`` process per request: p50 / p95 wall time per request.
2. 8 concurrent requests on ONE worker (8 threads) vs on 8 single-thread workers: wall time
   for the batch, per-request p50 and the RSS of the codex processes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from contextlib import aclosing
from pathlib import Path

import trio

from clibridge._backends import codex
from clibridge._backends.codex.worker import CodexWorker
from clibridge._config import CodexConfig, PoolConfig
from clibridge._events import Message, Request, TextPart, collect
from clibridge._process import ChildSpec, live_group_members
from clibridge.testing.model_stub import ModelStub, directive
from clibridge.testing.realcli import CodexSetup, codex_setup, find_real_clis

POOL = PoolConfig(workers=1, spares=0, ready_timeout=60, turn_timeout=60)
#: a short answer; ``--delay`` spaces its 9 deltas (upstream time, the same for both paths)
TEXT = directive(text="the quick brown fox jumps", chunk_chars=3, chunk_delay=0.0)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def rss_mb(pgid: int) -> float:
    total = 0
    for pid in live_group_members(pgid):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def make_worker(setup: CodexSetup, wid: int) -> CodexWorker:
    argv = codex.build_argv(setup.argv_prefix, overrides=setup.config_args[1::2])
    return CodexWorker(wid, CodexConfig(), POOL, ChildSpec(argv, setup.env, setup.cwd))


async def one_turn(worker: CodexWorker) -> float:
    req = Request(model="gpt-stub", messages=(Message("user", (TextPart(TEXT),)),))
    start = time.perf_counter()
    async with aclosing(worker.turn(req)) as events:  # type: ignore[type-var]
        done = collect("gpt-stub", [e async for e in events])
    assert done.text == "the quick brown fox jumps", done.text
    return time.perf_counter() - start


def exec_once(setup: CodexSetup) -> float:
    argv = [
        *setup.argv_prefix,
        "exec",
        *setup.config_args,
        *[a for o in codex.NO_CLI_TOOLS_OVERRIDES + codex.BASE_OVERRIDES for a in ("-c", o)],
        "--skip-git-repo-check",
        "--ephemeral",
        TEXT,
    ]
    start = time.perf_counter()
    out = subprocess.run(
        argv, env=dict(setup.env), cwd=setup.cwd, capture_output=True, text=True, timeout=60
    )
    elapsed = time.perf_counter() - start
    if "quick brown fox" not in out.stdout:
        raise RuntimeError(f"codex exec failed: {out.stdout[-500:]} {out.stderr[-1000:]}")
    return elapsed


async def main(n: int) -> None:
    clis = find_real_clis()
    stub = ModelStub()
    async with trio.open_nursery() as nursery:
        await nursery.start(stub.run)
        setup = codex_setup(clis, stub.base_url, Path(tempfile.mkdtemp(prefix="cxbench")))

        # 1. sequential: warm worker vs codex exec
        worker = make_worker(setup, 1)
        await nursery.start(worker.run)
        await one_turn(worker)  # warm-up
        warm = [await one_turn(worker) for _ in range(n)]
        cold = [await trio.to_thread.run_sync(exec_once, setup) for _ in range(n)]
        print(
            f"sequential x{n}: warm CodexWorker p50 {pct(warm, 50) * 1000:.0f} ms "
            f"p95 {pct(warm, 95) * 1000:.0f} ms | codex exec per request "
            f"p50 {pct(cold, 50) * 1000:.0f} ms p95 {pct(cold, 95) * 1000:.0f} ms | "
            f"p50 ratio {pct(cold, 50) / pct(warm, 50):.1f}x"
        )

        # 2. 8 concurrent: one worker with 8 threads vs 8 single-thread workers
        async def batch(workers: list[CodexWorker]) -> tuple[float, list[float]]:
            times: list[float] = []

            async def run(w: CodexWorker) -> None:
                times.append(await one_turn(w))

            start = time.perf_counter()
            async with trio.open_nursery() as turns:
                for i in range(8):
                    turns.start_soon(run, workers[i % len(workers)])
            return time.perf_counter() - start, times

        wall1, t1 = await batch([worker])
        rss1 = rss_mb(worker.pid or 0)
        many = [make_worker(setup, 10 + i) for i in range(8)]
        for w in many:
            await nursery.start(w.run)
        await batch(many)  # warm each
        wall8, t8 = await batch(many)
        rss8 = sum(rss_mb(w.pid or 0) for w in many)
        print(
            f"8 concurrent on 1 worker:  batch {wall1 * 1000:.0f} ms, per-request p50 "
            f"{statistics.median(t1) * 1000:.0f} ms, RSS {rss1:.0f} MB"
        )
        print(
            f"8 concurrent on 8 workers: batch {wall8 * 1000:.0f} ms, per-request p50 "
            f"{statistics.median(t8) * 1000:.0f} ms, RSS {rss8:.0f} MB"
        )
        print(
            f"stub max in flight: {stub.statistics().max_in_flight}; "
            f"codex {'native binary' if clis.codex_native else 'npm launcher'}; "
            f"cpus {os.cpu_count()}"
        )
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=30)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds between deltas")
    args = parser.parse_args()
    TEXT = directive(text="the quick brown fox jumps", chunk_chars=3, chunk_delay=args.delay)
    trio.run(main, args.n)
