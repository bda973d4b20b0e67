"""Real claude: a warm pool worker vs spawning ``claude -p`` per request.

Method
------
The pinned real ``claude`` (``.cache/realcli``, see ``scripts/install-real-clis.sh``) runs
offline against the loopback model stub (:class:`clibridge.testing.model_stub.ModelStub`,
in this process, default reply "Hello from the model stub." with no delay). Both paths use
the same clibridge spawn home (``prepare_claude_home``: HOME, allow-listed env with
``ANTHROPIC_BASE_URL`` / ``ANTHROPIC_API_KEY`` passed on purpose,
``CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1``, a neutral work dir), the same model, the same
system prompt and the same user text. Requests run one after the other.

* **warm**: a :class:`~clibridge._pool.WorkerPool` (``workers=1, spares=1``) of
  :class:`~clibridge._backends.claude.worker.ClaudeWorker`. One unmeasured warm-up request
  waits for the first boot. Each measured request is timed from entering ``pool.lease()``
  (checkout: ``/clear`` of the warm worker) to the ``Finished`` event of ``worker.turn()``.
* **spawn**: what most peers do, one process per request:
  ``claude -p <prompt> --output-format stream-json --verbose --include-partial-messages
  --no-session-persistence --model M --tools "" --system-prompt S``, timed from the spawn to
  the ``result`` line on stdout (the answer is complete; the process then still has to
  exit, reported separately as ``spawn: exit``).

Also reported: the warm checkout alone (permit + ``/clear`` of the warm worker, which
happens before the user line is written), time to the first text delta on both paths, and the stub's count of
upstream calls (exactly one per request is expected on both paths).

Target (issue 3): warm p50 at least 8x lower than spawn p50.

Run: ``.venv/bin/python bench/claude_warm_vs_spawn.py [--quick] [-n N]``; prints "skipped"
and exits 0 when the pinned claude is not installed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from contextlib import aclosing
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (
    MODEL,
    STAT_HEADERS,
    ms,
    quiet_logs,
    stat_rows,
    summary,
    table,
    verdict,
    write_results,
)
from clibridge._backends.claude.home import SpawnHome, prepare_claude_home
from clibridge._backends.claude.worker import ClaudeWorker
from clibridge._config import ClaudeConfig, PoolConfig
from clibridge._events import Finished, Message, Request, TextDelta, TextPart
from clibridge._pool import WorkerPool
from clibridge._worker import Binding
from clibridge.testing.model_stub import STUB_API_KEY, ModelStub
from clibridge.testing.realcli import find_real_clis

TARGET_RATIO = 8.0
SYSTEM = "You are a benchmark. Answer briefly."
PROMPT = "Say hello."
#: per request, generous for a loaded 2-core machine
REQUEST_TIMEOUT = 60.0


def spawn_home(claude: Path, state: Path, base_url: str) -> tuple[ClaudeConfig, SpawnHome]:
    config = ClaudeConfig(
        command=(str(claude),),
        pass_env=("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"),
    )
    environ = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "ANTHROPIC_API_KEY": STUB_API_KEY,
        "ANTHROPIC_BASE_URL": base_url,
        "NO_PROXY": "127.0.0.1,localhost",
    }
    return config, prepare_claude_home(config, state, environ=environ)


async def measure_warm(
    config: ClaudeConfig, home: SpawnHome, count: int, stop_at: float
) -> dict[str, list[float]]:
    pool_config = PoolConfig(
        workers=1, spares=1, ready_timeout=REQUEST_TIMEOUT, turn_timeout=REQUEST_TIMEOUT
    )

    def factory(worker_id: int) -> ClaudeWorker:
        return ClaudeWorker(worker_id, config, pool_config, home, model=MODEL)

    pool = WorkerPool("claude", pool_config, factory)
    binding = Binding(system=SYSTEM, tools_key=(), model=MODEL)
    request = Request(model=MODEL, system=SYSTEM, messages=(Message("user", (TextPart(PROMPT),)),))
    out: dict[str, list[float]] = {
        "warm: checkout (/clear)": [],
        "warm: first text": [],
        "warm: answer": [],
    }
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        for i in range(count + 1):  # the first one waits for the boot: not measured
            if i > 1 and time.perf_counter() > stop_at:
                print(f"time budget reached after {i - 1} warm requests", file=sys.stderr)
                break
            with trio.fail_after(REQUEST_TIMEOUT):
                t0 = time.perf_counter()
                first = end = None
                async with pool.lease(binding) as lease:
                    checked_out = time.perf_counter()
                    async with aclosing(lease.worker.turn(request)) as stream:
                        async for event in stream:
                            now = time.perf_counter()
                            if first is None and isinstance(event, TextDelta):
                                first = now
                            if isinstance(event, Finished):
                                end = now
            assert first is not None and end is not None
            if i > 0:
                out["warm: checkout (/clear)"].append(ms(checked_out - t0))
                out["warm: first text"].append(ms(first - t0))
                out["warm: answer"].append(ms(end - t0))
        nursery.cancel_scope.cancel()
    return out


async def one_shot(claude: Path, home: SpawnHome) -> dict[str, float]:
    argv = [
        str(claude),
        "-p",
        PROMPT,
        "--output-format",
        "stream-json",
        "--verbose",
        "--include-partial-messages",
        "--no-session-persistence",
        "--model",
        MODEL,
        "--tools",
        "",
        "--system-prompt",
        SYSTEM,
    ]
    t0 = time.perf_counter()
    process = await trio.lowlevel.open_process(
        argv,
        stdin=-3,  # DEVNULL
        stdout=-1,
        stderr=-3,
        env=dict(home.env),
        cwd=str(home.workdir),
        start_new_session=True,
    )
    assert process.stdout is not None
    first = answer = None
    buffer = b""
    try:
        with trio.fail_after(REQUEST_TIMEOUT):
            while answer is None:
                chunk = await process.stdout.receive_some(65536)
                if not chunk:
                    raise RuntimeError(f"claude -p exited without a result (code {process.poll()})")
                buffer += chunk
                while b"\n" in buffer:
                    line, _, buffer = buffer.partition(b"\n")
                    now = time.perf_counter()
                    message: dict[str, Any] = json.loads(line)
                    kind = message.get("type")
                    if (
                        first is None
                        and kind == "stream_event"
                        and message["event"].get("type") == "content_block_delta"
                    ):
                        first = now
                    if kind == "result":
                        if message.get("is_error"):
                            raise RuntimeError(f"claude -p failed: {message}")
                        answer = now
            async for _ in process.stdout:
                pass
            await process.wait()
            exited = time.perf_counter()
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
                await process.wait()
            await process.stdout.aclose()
    assert first is not None
    return {"first": first - t0, "answer": answer - t0, "exit": exited - t0}


async def measure_spawn(
    claude: Path, home: SpawnHome, count: int, stop_at: float
) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"spawn: first text": [], "spawn: answer": [], "spawn: exit": []}
    for i in range(count):
        if i > 1 and time.perf_counter() > stop_at:
            print(f"time budget reached after {i} spawned requests", file=sys.stderr)
            break
        times = await one_shot(claude, home)
        out["spawn: first text"].append(ms(times["first"]))
        out["spawn: answer"].append(ms(times["answer"]))
        out["spawn: exit"].append(ms(times["exit"]))
    return out


async def run(
    claude: Path, state: Path, warm_n: int, spawn_n: int, budget: float
) -> dict[str, Any]:
    async with trio.open_nursery() as nursery:
        stub = ModelStub()
        await nursery.start(stub.run)
        config, home = spawn_home(claude, state, stub.base_url)
        stop_at = time.perf_counter() + budget / 2
        warm = await measure_warm(config, home, warm_n, stop_at)
        warm_calls = len(stub.model_calls())
        stop_at = time.perf_counter() + budget / 2
        spawn = await measure_spawn(claude, home, spawn_n, stop_at)
        spawn_calls = len(stub.model_calls()) - warm_calls
        nursery.cancel_scope.cancel()
    return {
        "samples": {**warm, **spawn},
        # the warm path made one more (unmeasured warm-up) request
        "upstream_calls": {
            "warm": warm_calls,
            "warm_requests": len(warm["warm: answer"]) + 1,
            "spawn": spawn_calls,
            "spawn_requests": len(spawn["spawn: answer"]),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small run for CI (< 20 s)")
    parser.add_argument("-n", type=int, default=None, help="requests per path (default 30)")
    args = parser.parse_args(argv)
    quiet_logs()
    clis = find_real_clis()
    if clis.claude is None:
        print(f"skipped: {clis.missing('claude')}")
        write_results("claude_warm_vs_spawn", {"skipped": clis.missing("claude")})
        return 0
    warm_n = args.n or (8 if args.quick else 30)
    spawn_n = args.n or (4 if args.quick else 30)
    budget = 14.0 if args.quick else 600.0

    with tempfile.TemporaryDirectory(prefix="clibridge-bench-") as tmp:
        result = trio.run(run, clis.claude, Path(tmp) / "state", warm_n, spawn_n, budget)
    samples = result["samples"]
    print("real claude against the loopback stub, sequential requests (ms)")
    print(table(STAT_HEADERS, stat_rows(samples)))
    warm_p50 = summary(samples["warm: answer"])["p50"]
    spawn_p50 = summary(samples["spawn: answer"])["p50"]
    ratio = spawn_p50 / warm_p50
    ok = ratio >= TARGET_RATIO
    calls = result["upstream_calls"]
    print(
        f"\nupstream calls: warm {calls['warm']} for {calls['warm_requests']} requests, "
        f"spawn {calls['spawn']} for {calls['spawn_requests']}"
    )
    print(
        f"target: warm p50 at least {TARGET_RATIO:g}x lower than spawn p50: "
        f"{warm_p50:.1f} vs {spawn_p50:.1f} ms = {ratio:.1f}x  {verdict(ok)}"
    )
    path = write_results(
        "claude_warm_vs_spawn",
        {
            "quick": args.quick,
            "unit": "ms",
            "stats": {k: summary(v) for k, v in samples.items()},
            "upstream_calls": calls,
            "target": {"ratio": TARGET_RATIO, "value": ratio, "met": ok},
        },
    )
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
