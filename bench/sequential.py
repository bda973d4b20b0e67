"""One client, sequential requests, through the whole server: the tail a single user sees.

What it runs: ``clibridge serve`` as a child process with default pool settings, on the
pinned real claude pointed at the loopback model stub (``--backend claude``), or on the
bundled fake (``--fake``). One client sends ``--count`` sequential chat completions, each a
*new* conversation (``"say hi #i"``), then ``--count`` turns of *one* growing
conversation; then :data:`CLIENTS` clients at once, each growing a conversation of its own
for ``--count`` / :data:`CLIENTS` turns. It reports latency percentiles, the number of CLI
processes alive (the maximum over each phase) and their total RSS at the end.

The floor: the distinct requests alternate, in blocks of :data:`BLOCK`, with as many turns
of the same CLI driven directly (:class:`bench._common.RawClaude`: its own process, blocking
pipes, no clibridge code; ``/clear`` after each turn, not timed), so both see the same
machine. The floor is what the CLI itself costs; the bridge's share of each percentile is
the difference.

    .venv/bin/python bench/sequential.py             # real claude + stub (scripts/install-real-clis.sh)
    .venv/bin/python bench/sequential.py --fake      # the fake claude

Targets (docs/benchmarks.md): p95 <= 1.5 x p50, max <= 3 x p50, processes <= 1 + spares
for one client (<= clients + spares for the concurrent phase).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    RawClaude,
    children_of,
    ms,
    quiet_logs,
    rss_kb,
    summary,
    table,
    write_results,
)

from clibridge._backends.claude.home import prepare_claude_home
from clibridge._config import ClaudeConfig
from clibridge.testing.model_stub import STUB_API_KEY, ModelStub
from clibridge.testing.realcli import find_real_clis

SPARES = 1  # the default pool's spares
#: clients of the concurrent phase
CLIENTS = 4
#: distinct requests through the server, then as many on the raw CLI, and again
BLOCK = 10


class Stub:
    """The model stub on its own trio loop in a thread (the bench client is synchronous)."""

    def __init__(self) -> None:
        self.base_url = ""
        self._ready = threading.Event()
        self._stop: trio.Event | None = None
        self._token: Any = None
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)

    async def _main(self) -> None:
        stub = ModelStub()
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with trio.open_nursery() as nursery:
            await nursery.start(stub.run)
            self.base_url = stub.base_url
            self._ready.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    def __enter__(self) -> Stub:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(10)


def start_server(state: Path, fake: bool, stub_url: str) -> tuple[Any, int]:
    import re
    import subprocess

    argv = [sys.executable, "-m", "clibridge", "serve", "--port", "0", "--state-dir", str(state)]
    env = {**os.environ}
    if fake:
        argv += ["--backend", "fake"]
    else:
        clis = find_real_clis()
        if clis.claude is None:
            raise SystemExit(f"real claude missing: {clis.missing('claude')}")
        argv += ["--backend", "claude", "--claude-command", str(clis.claude)]
        argv += [
            "--claude-pass-env",
            "ANTHROPIC_API_KEY",
            "--claude-pass-env",
            "ANTHROPIC_BASE_URL",
        ]
        env.update({"ANTHROPIC_API_KEY": STUB_API_KEY, "ANTHROPIC_BASE_URL": stub_url})
    log = (state.parent / "server.log").open("wb")
    process = subprocess.Popen(
        argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = re.search(rb"listening on http://127\.0\.0\.1:(\d+)", Path(log.name).read_bytes())
        if found:
            return process, int(found.group(1))
        time.sleep(0.05)
    process.kill()
    raise SystemExit(Path(log.name).read_text())


def cli_pids(server_pid: int) -> list[int]:
    """The server's claude processes (not its janitor, nor the fake codex that
    ``--backend fake`` runs next to the fake claude)."""
    out = []
    for pid in children_of(server_pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"claude" in cmdline and b"janitor" not in cmdline:
            out.append(pid)
    return out


def raw_cli(state: Path, fake: bool, stub_url: str) -> RawClaude:
    """The floor's CLI: the same binary in a spawn home of its own, driven directly."""
    if fake:
        cli = RawClaude()
    else:
        claude = find_real_clis().claude
        assert claude is not None
        config = ClaudeConfig(
            command=(str(claude),), pass_env=("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL")
        )
        environ = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "ANTHROPIC_API_KEY": STUB_API_KEY,
            "ANTHROPIC_BASE_URL": stub_url,
            "NO_PROXY": "127.0.0.1,localhost",
        }
        home = prepare_claude_home(config, state, environ=environ)
        cli = RawClaude(home.env, command=config.command, cwd=home.workdir)
    cli.boot()
    cli.turn("warm up")
    cli.clear()
    return cli


def run(count: int, fake: bool) -> dict[str, Any]:
    import signal

    with tempfile.TemporaryDirectory() as tmp, Stub() as stub:
        process, port = start_server(Path(tmp) / "state", fake, stub.base_url)
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120)
        try:
            # warm up: the pool is ready once /readyz says so
            while client.get("/readyz").status_code != 200:
                time.sleep(0.1)
            time.sleep(2.0)  # the spares' boot
            most = len(cli_pids(process.pid))

            def ask(
                messages: list[dict[str, str]], via: httpx.Client = client
            ) -> tuple[float, str]:
                nonlocal most
                t0 = time.perf_counter()
                reply = via.post(
                    "/v1/chat/completions", json={"model": "sonnet", "messages": messages}
                )
                elapsed = time.perf_counter() - t0
                if reply.status_code != 200:
                    raise SystemExit(f"{reply.status_code}: {reply.text}")
                most = max(most, len(cli_pids(process.pid)))
                return elapsed, reply.json()["choices"][0]["message"]["content"]

            def grow(turns: int, via: httpx.Client, name: str) -> list[float]:
                convo: list[dict[str, str]] = []
                out = []
                for i in range(turns):
                    convo.append({"role": "user", "content": f"{name} turn {i}: say hi"})
                    elapsed, text = ask(convo, via)
                    convo.append({"role": "assistant", "content": text})
                    out.append(elapsed)
                return out

            floor_cli = raw_cli(Path(tmp) / "floor", fake, stub.base_url)
            distinct: list[float] = []
            floor: list[float] = []
            try:
                for start in range(0, count, BLOCK):
                    block = range(start, min(count, start + BLOCK))
                    for i in block:
                        distinct.append(ask([{"role": "user", "content": f"say hi #{i}"}])[0])
                    for i in block:
                        floor.append(floor_cli.turn(f"say hi #{i}")["result"])
                        floor_cli.clear()
            finally:
                floor_cli.close()
            one_client_most = most

            def waits() -> int:
                stats = client.get("/v1/stats").json()["service"]["claude"]
                return int(stats["worker_waits"])

            waits_distinct = waits()
            growing = grow(count, client, "solo")
            waits_one_client = waits()
            one_client_most = max(one_client_most, most)
            concurrent: list[float] = []
            clients = [
                httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120)
                for _ in range(CLIENTS)
            ]
            threads = [
                threading.Thread(
                    target=lambda c=c, i=i: concurrent.extend(grow(count // CLIENTS, c, f"c{i}"))
                )
                for i, c in enumerate(clients)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            for c in clients:
                c.close()
            stats = client.get("/v1/stats").json()["service"]["claude"]
            pids = cli_pids(process.pid)
            rss = sum(rss_kb(p) or 0 for p in pids)
        finally:
            # Why close first: an idle keep-alive connection holds the drain (issue 15)
            client.close()
            process.send_signal(signal.SIGTERM)
            process.wait(60)
    return {
        "backend": "fake" if fake else "real claude + stub",
        "distinct": summary([ms(x) for x in distinct]),
        "distinct_ms": [round(ms(x), 1) for x in distinct],
        "floor": summary([ms(x) for x in floor]),
        "floor_ms": [round(ms(x), 1) for x in floor],
        f"concurrent_{CLIENTS}": summary([ms(x) for x in concurrent]),
        "processes_max_one_client": one_client_most,
        # checkouts that found no worker to take (a boot or a release) and waited
        "worker_waits_distinct": waits_distinct,
        "worker_waits_one_client": waits_one_client,
        "worker_waits_end": stats["worker_waits"],
        "growing_ms": [round(ms(x), 1) for x in growing],
        "growing": summary([ms(x) for x in growing]),
        "processes_max": most,
        "processes_end": len(pids),
        "cli_rss_mb_end": round(rss / 1024, 1),
        "resume_hits": stats["resume_hits"],
        "resume_misses": stats["resume_misses"],
        "resume_miss_reasons": stats["resume_miss_reasons"],
        "one_shot_releases": stats["one_shot_releases"],
        "reclaimed": stats["reclaimed"],
        "served": stats["served"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--fake", action="store_true")
    args = parser.parse_args(argv)
    quiet_logs()
    result = run(args.count, args.fake)
    print(
        table(
            ["requests", "n", "p50", "p95", "p99", "max"],
            [
                [name, s["n"], *(round(s[k], 1) for k in ("p50", "p95", "p99", "max"))]
                for name, s in (
                    ("distinct", result["distinct"]),
                    ("  its floor: the CLI alone", result["floor"]),
                    ("growing", result["growing"]),
                    (f"{CLIENTS} clients", result[f"concurrent_{CLIENTS}"]),
                )
            ],
        )
    )
    d, f = result["distinct"], result["floor"]
    print(
        "the bridge's share of the distinct requests: "
        + ", ".join(f"{k} {d[k] - f[k]:+.1f} ms" for k in ("p50", "p95", "max"))
        + f"; p95 / p50: bridged {d['p95'] / d['p50']:.2f}, CLI alone {f['p95'] / f['p50']:.2f}"
        + f"; max / p50: bridged {d['max'] / d['p50']:.2f}, CLI alone {f['max'] / f['p50']:.2f}"
    )
    print(
        f"processes: one client max {result['processes_max_one_client']} "
        f"(target <= {1 + SPARES}), {CLIENTS} clients max {result['processes_max']} "
        f"(target <= {CLIENTS + SPARES}), end {result['processes_end']}; CLI RSS at the end {result['cli_rss_mb_end']} MB; "
        f"resume hits {result['resume_hits']}, misses {result['resume_misses']} "
        f"{result['resume_miss_reasons']}, one-shot releases {result['one_shot_releases']}, "
        f"reclaimed {result['reclaimed']}"
    )
    print(
        "checkouts that waited for a worker: "
        f"distinct {result['worker_waits_distinct']}, "
        f"one client in all {result['worker_waits_one_client']}, "
        f"after the {CLIENTS}-client phase {result['worker_waits_end']}"
    )
    write_results("sequential" + ("_fake" if args.fake else ""), result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
