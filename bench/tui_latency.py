"""Real claude: ``serve --tui`` (interactive panes in tmux) vs the stream-json workers.

Method
------
The pinned real ``claude`` (``.cache/realcli``) runs offline against the loopback model stub
(in this process; default reply "Hello from the model stub.", no delay). The whole server
(:func:`clibridge._supervisor.serve`: janitor, pool, HTTP on 127.0.0.1:0) runs in this
process twice in the same run: once with ``claude.tui`` on (``serve --tui``), once without
(stream-json). Both: ``workers=1, spares=1``, the same system prompt, ``ANTHROPIC_API_KEY`` /
``ANTHROPIC_BASE_URL`` passed on purpose (``pass_env``).

Each mode gets one unmeasured warm-up request (waits for the first boot), then ``-n``
(default 30) sequential streaming Chat Completions requests, each an unrelated one-message
conversation (so the pane / worker is cleared between them, in the background). Timed per
request with httpx from sending the request to:

* **total**: the end of the SSE body (``[DONE]``);
* **ttfb**: the first SSE chunk carrying content text (time to the first content byte).

Target (issue 11): TUI p50 <= 0.25 s.

Run: ``.venv/bin/python bench/tui_latency.py [-n N]``; prints "skipped" and exits 0 when
the pinned claude or tmux is missing.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
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
from clibridge._config import ClaudeConfig, Config, PoolConfig, ServerConfig
from clibridge._supervisor import BackendChoice, serve
from clibridge.testing.model_stub import STUB_API_KEY, ModelStub
from clibridge.testing.realcli import find_real_clis

SYSTEM = "You are a terse assistant used in a latency benchmark."
TARGET_P50 = 0.25


async def one_request(client: httpx.AsyncClient, i: int) -> tuple[float, float]:
    body = {
        "model": MODEL,
        "stream": True,
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"request {i}: say hello"},
        ],
    }
    started = time.perf_counter()
    first: float | None = None
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {(await response.aread())[:300]!r}")
        async for line in response.aiter_lines():
            if first is None and line.startswith("data: {"):
                delta = json.loads(line[6:])["choices"]
                if delta and delta[0]["delta"].get("content"):
                    first = time.perf_counter()
    total = time.perf_counter() - started
    return total, (first or time.perf_counter()) - started


async def run_mode(claude: Path, stub: ModelStub, tui: bool, n: int) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory(prefix="clibridge-tui-bench-") as tmp:
        config = Config(
            server=ServerConfig(host="127.0.0.1", port=0, drain_timeout=5.0),
            claude=ClaudeConfig(
                command=(str(claude),),
                pass_env=("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"),
                tui=tui,
                pool=PoolConfig(workers=1, spares=1, ready_timeout=60.0),
            ),
            backend="claude",
            state_dir=Path(tmp) / "state",
        )
        environ = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "ANTHROPIC_API_KEY": STUB_API_KEY,
            "ANTHROPIC_BASE_URL": stub.base_url,
            "NO_PROXY": "127.0.0.1,localhost",
        }
        choice = BackendChoice(claude=(str(claude),), codex=None, fake=False, notes=())
        shutdown = trio.Event()
        totals: list[float] = []
        ttfbs: list[float] = []
        async with trio.open_nursery() as nursery:
            host, port = await nursery.start(
                functools.partial(serve, config, choice, environ, shutdown=shutdown)
            )
            async with httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=120) as client:
                await one_request(client, -1)  # warm-up: the first boot
                for i in range(n):
                    await trio.sleep(0.3)  # the background /clear of the last request
                    total, ttfb = await one_request(client, i)
                    totals.append(total)
                    ttfbs.append(ttfb)
            shutdown.set()
    return {"total": totals, "ttfb": ttfbs}


async def main(n: int) -> int:
    quiet_logs()
    clis = find_real_clis()
    if clis.claude is None or shutil.which("tmux") is None:
        print(f"skipped: {clis.missing('claude') or 'tmux is not installed'}")
        return 0
    stub = ModelStub()
    async with trio.open_nursery() as nursery:
        await nursery.start(stub.run)
        results: dict[str, Any] = {}
        for name, tui in (("tui", True), ("stream-json", False)):
            results[name] = await run_mode(clis.claude, stub, tui, n)
        nursery.cancel_scope.cancel()
    named = {
        f"{mode} {what}": [ms(v) for v in values[what]]
        for mode, values in results.items()
        for what in ("total", "ttfb")
    }
    print(f"{n} sequential streaming requests each, real claude + loopback stub (ms)")
    print(table(STAT_HEADERS, stat_rows(named)))
    p50 = summary(results["tui"]["total"])["p50"]
    print(f"target: TUI p50 <= {TARGET_P50:g} s: {p50:.3f} s -> {verdict(p50 <= TARGET_P50)}")
    path = write_results(
        "tui_latency",
        {
            "n": n,
            "ms": {k: summary(v) for k, v in named.items()},
            "target_p50_s": TARGET_P50,
            "met": p50 <= TARGET_P50,
        },
    )
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("-n", type=int, default=30, help="measured requests per mode")
    args = parser.parse_args()
    sys.exit(trio.run(main, args.n))
