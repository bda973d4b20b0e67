"""Continuation on parked workers vs a fresh worker per request, through the real claude.

A 10-turn conversation with 3 tool round trips (13 requests) goes through the
:class:`~clibridge._supervisor.Supervisor` (no HTTP: the HTTP layer is the same either
way) onto the pinned real claude, whose upstream is the loopback model stub. Once with
continuation on (finished turns and tool calls park their worker), once off (every
request gets a fresh worker and the whole history, as peers do).

Measured per mode: wall time of the conversation, bytes clibridge wrote to the CLIs'
stdin, upstream requests, and how much of each upstream request body repeats the previous
one's byte for byte from the start (what upstream prompt caching can reuse).

    .venv/bin/python bench/claude_continuation.py
"""

from __future__ import annotations

import itertools
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import quiet_logs, table, write_results
from clibridge._backends import claude
from clibridge._backends.claude.worker import ClaudeWorker
from clibridge._config import ClaudeConfig, PoolConfig
from clibridge._events import (
    Finished,
    Message,
    Request,
    TextPart,
    ToolCallPart,
    ToolResultPart,
    ToolSpec,
    collect,
)
from clibridge._models import ModelTable
from clibridge._pool import WorkerPool
from clibridge._process import ChildSpec
from clibridge._supervisor import Supervisor
from clibridge.testing.model_stub import ModelStub, Reply, StubToolCall
from clibridge.testing.realcli import claude_setup, find_real_clis

MODEL = "claude-sonnet-4-5"
TURNS = 10
TOOL_TURNS = frozenset({2, 5, 8})
TOOL = ToolSpec(
    "get_weather",
    "Get the weather for a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
SYSTEM = "You are a helpful assistant. " * 40


def common_prefix(a: bytes, b: bytes) -> int:
    n = min(len(a), len(b))
    lo = 0
    while lo < n and a[lo] == b[lo]:
        lo += 1
    return lo


async def conversation(continuation: bool, clis: Any, tmp: Path) -> dict[str, Any]:
    stub = ModelStub()
    workers: list[ClaudeWorker] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(stub.run)
        setup = claude_setup(clis.claude, stub.base_url, tmp / f"home-{continuation}")
        config = ClaudeConfig(command=setup.argv_prefix)
        pool_config = PoolConfig(workers=2, spares=1, ready_timeout=30, park_ttl=60)
        argv = claude.build_argv(setup.argv_prefix, model=MODEL, host_client_tools=True)
        spec = ChildSpec(tuple(argv), dict(setup.env), setup.cwd)

        def factory(worker_id: int) -> ClaudeWorker:
            worker = ClaudeWorker(worker_id, config, pool_config, spec)
            workers.append(worker)
            return worker

        pool = WorkerPool("claude", pool_config, factory)
        await nursery.start(pool.run)
        supervisor = Supervisor({"claude": pool}, ModelTable(["claude"]), continuation=continuation)
        with trio.fail_after(60):
            # Why polling: the pool has no "a spare booted" event to wait on
            while not pool.statistics().idle:  # noqa: ASYNC110
                await trio.sleep(0.05)
        messages: list[Message] = []
        requests = 0
        started = time.perf_counter()
        for turn in range(1, TURNS + 1):
            messages.append(Message("user", (TextPart(f"Turn {turn}: tell me something."),)))
            if turn in TOOL_TURNS:
                stub.push(
                    Reply(
                        tool_calls=(StubToolCall("mcp__client__get_weather", {"city": f"C{turn}"}),)
                    )
                )
            stub.push(Reply(text=f"Answer number {turn}. " * 20))
            while True:
                request = Request(MODEL, tuple(messages), system=SYSTEM, tools=(TOOL,))
                requests += 1
                async with supervisor.turn(request) as events:
                    seen = [e async for e in events]
                assert isinstance(seen[-1], Finished)
                done = collect(MODEL, seen)
                parts: list[Any] = [TextPart(done.text)] if done.text else []
                parts += [ToolCallPart(c.id, c.name, c.arguments) for c in done.tool_calls]
                messages.append(Message("assistant", tuple(parts)))
                if not done.tool_calls:
                    break
                messages.append(
                    Message(
                        "user",
                        tuple(ToolResultPart(c.id, f"sunny in C{turn}") for c in done.tool_calls),
                    )
                )
        wall = time.perf_counter() - started
        stats = supervisor.statistics()["claude"]
        bodies = [r.raw_body for r in stub.model_calls()]
        shares = [common_prefix(a, b) / len(b) for a, b in itertools.pairwise(bodies)]
        breaks = [
            a[common_prefix(a, b) - 40 : common_prefix(a, b) + 40].decode(errors="replace")
            for a, b in itertools.pairwise(bodies)
        ]
        written = sum(w.bytes_written for w in workers)
        nursery.cancel_scope.cancel()
    return {
        "continuation": continuation,
        "requests": requests,
        "wall_s": round(wall, 3),
        "bytes_written": written,
        "upstream_requests": len(bodies),
        "upstream_bytes": sum(len(b) for b in bodies),
        "prefix_reuse_mean": round(sum(shares) / len(shares), 3) if shares else 0.0,
        "prefix_reuse_min": round(min(shares), 3) if shares else 0.0,
        "resume_hits": stats["resume_hits"],
        "workers_spawned": len(workers),
        "first_difference": breaks[:3],
    }


async def main() -> None:
    quiet_logs()
    clis = find_real_clis()
    if clis.claude is None:
        raise SystemExit(f"real claude missing: {clis.missing('claude')}")
    with tempfile.TemporaryDirectory() as tmp:
        results = [await conversation(flag, clis, Path(tmp)) for flag in (True, False)]
    headers = [h for h in results[0] if h != "first_difference"]
    print(table(headers, [[r[h] for h in headers] for r in results]))
    write_results("claude_continuation", {"runs": results})


if __name__ == "__main__":
    trio.run(main)
