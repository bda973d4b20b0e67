"""Admission under a burst, then sustained load: ``clibridge serve --backend fake`` as a child.

Method
------
The server runs as a child process (``python -m clibridge serve --backend fake --port 0``)
so its RSS can be read from ``/proc``; the client is this process (trio, raw HTTP/1.1 on
keep-alive connections, :class:`bench._common.ResponseParser`), all on 127.0.0.1.

**Phase 1, burst** (``--workers 8 --max-queue 16 --queue-timeout 8``, quick 4: the last
queued request should wait about 2 s; the timeout only bounds a run where slots never
free). 32 distinct conversations, each carrying the fake's directive
``@fake {"first_delay": 1.0}``: the fake waits 1 s before its reply. A warm-up of 8
concurrent requests leaves 8 booted workers. Then 32 connections are opened first and all
32 streaming ``POST /v1/chat/completions`` requests are written at once (one trio event
releases them). Expected: 8 admitted at once, 16 queued (served when a slot frees, about
1 s and 2 s later), 8 answered 429 at once with ``Retry-After``. Checked: exactly 8 x 429
within 500 ms and 24 x 200 with a complete stream (``data: [DONE]``).

**Phase 2, sustained load** (a fresh server, ``--workers 8 --max-queue 32 --queue-timeout
8``, quick 4, so that all 32 clients are admitted and wait in the queue rather than spin on
429s). Zero-delay fake. 32 concurrent clients, each on its own keep-alive connection with a
prompt of its own (``client N: hi``), loop streaming chat requests for 30 s (``--quick``:
4 s) after an unrecorded warm-up of 3 s (``--quick``: 1 s) in which the pool boots its
workers. Reported: streams/s (complete 200 streams that ended inside the window, per
second of window), latency per stream (send to end of body) and time to first byte,
p50/p99, non-200 answers, how long the last request ran past the window, and the server's
RSS (the Python process alone, and the fake workers summed) idle before the load, sampled
every 0.25 s during it, and after it.

Run: ``.venv/bin/python bench/burst.py [--quick] [--duration S] [--clients N]``
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (
    STAT_HEADERS,
    ResponseParser,
    ServerProcess,
    ms,
    quiet_logs,
    request_bytes,
    stat_rows,
    summary,
    table,
    verdict,
    write_results,
)

BURST = 32
WORKERS = 8
MAX_QUEUE = 16
SLOW = '@fake {"first_delay": 1.0}'
#: the last queued request should wait about 2 s; this bounds the run when a slot never frees
QUEUE_TIMEOUT = 8.0
QUEUE_TIMEOUT_QUICK = 4.0
#: a 429 answered faster than this is "immediate" (a turn takes 1000 ms)
IMMEDIATE_MS = 500.0


class Connection:
    """One keep-alive HTTP/1.1 connection (trio)."""

    def __init__(self, port: int, stream: trio.SocketStream) -> None:
        self.port = port
        self.stream = stream

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(port, await trio.open_tcp_stream("127.0.0.1", port))

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def read_response(self, t0: float) -> tuple[ResponseParser, float]:
        """Read one response; returns it and the seconds from ``t0`` to its first byte.

        Reconnects (untimed, after the response) when the server closes the connection."""
        parser = ResponseParser()
        first: float | None = None
        while not parser.done:
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                raise EOFError("the server closed the connection")
            if first is None:
                first = time.perf_counter() - t0
            parser.feed(chunk)
        assert first is not None
        if parser.headers.get("connection", "").lower() == "close":
            # Hypercorn ends a keep-alive connection after keep_alive_max_requests (1000)
            await self.stream.aclose()
            self.stream = await trio.open_tcp_stream("127.0.0.1", self.port)
        return parser, first

    async def aclose(self) -> None:
        await self.stream.aclose()


def stream_complete(parser: ResponseParser) -> bool:
    return parser.status == 200 and parser.body.rstrip().endswith(b"data: [DONE]")


# ---------------------------------------------------------------------- phase 1


async def burst(port: int) -> dict[str, Any]:
    def slow(i: int) -> bytes:
        # a different conversation per client, as 32 users would send
        return request_bytes(port, "chat", f"burst request {i}\n{SLOW}")

    # bounded: 1 s turns in three waves, or QUEUE_TIMEOUT if a slot never frees
    with trio.fail_after(60):
        # warm-up: 8 workers booted and bound to this setup
        async def one(data: bytes) -> None:
            conn = await Connection.open(port)
            try:
                await conn.send(data)
                parser, _ = await conn.read_response(time.perf_counter())
                assert stream_complete(parser), parser.body[-200:]
            finally:
                await conn.aclose()

        async with trio.open_nursery() as nursery:
            for i in range(WORKERS):
                nursery.start_soon(one, slow(-1 - i))

        conns = [await Connection.open(port) for _ in range(BURST)]
        go = trio.Event()
        results: list[dict[str, Any]] = []

        async def fire(i: int, conn: Connection) -> None:
            data = slow(i)
            await go.wait()
            t0 = time.perf_counter()
            await conn.send(data)
            parser, first = await conn.read_response(t0)
            results.append(
                {
                    "status": parser.status,
                    "complete": stream_complete(parser),
                    "retry_after": parser.headers.get("retry-after"),
                    "first_byte_ms": ms(first),
                    "end_ms": ms(time.perf_counter() - t0),
                    "error_type": _error_type(parser),
                }
            )

        async with trio.open_nursery() as nursery:
            for i, conn in enumerate(conns):
                nursery.start_soon(fire, i, conn)
            await trio.sleep(0.05)  # every task is parked on go
            go.set()
        for conn in conns:
            await conn.aclose()
    rejected = [r for r in results if r["status"] == 429]
    immediate = [r for r in rejected if r["end_ms"] < IMMEDIATE_MS]
    served = [r for r in results if r["status"] == 200 and r["complete"]]
    return {
        "requests": len(results),
        "rejected_429": len(rejected),
        "rejected_429_immediate": len(immediate),
        "served_complete": len(served),
        "other": [
            r
            for r in results
            if r["status"] not in (200, 429) or (r["status"] == 200 and not r["complete"])
        ],
        "rejected_ms": summary([r["end_ms"] for r in rejected]),
        "retry_after": sorted({r["retry_after"] for r in rejected if r["retry_after"]}),
        "rejected_error_types": sorted({r["error_type"] for r in rejected}),
        "served_end_ms": sorted(round(r["end_ms"]) for r in served),
        "ok": len(immediate) == len(rejected) == 8 and len(served) == 24,
    }


def _error_type(parser: ResponseParser) -> str | None:
    if parser.status == 200:
        return None
    try:
        body = json.loads(parser.body)
    except ValueError:
        return "?"
    error = body.get("error", {})
    return str(error.get("type") or error.get("code"))


# ---------------------------------------------------------------------- phase 2


async def load(
    server: ServerProcess, clients: int, duration: float, warmup: float
) -> dict[str, Any]:
    port = server.port
    latencies: list[float] = []
    ttfbs: list[float] = []
    statuses: dict[str, int] = {}
    rss: list[int] = []
    workers_rss: list[int] = []
    #: a bound on the count, besides the bound in time
    max_per_client = 1_000_000
    measure_from = time.perf_counter() + warmup
    end_at = measure_from + duration
    in_window = [0]  # complete streams that ended before end_at

    async def client(i: int) -> None:
        # each client is its own user: a one-message conversation of its own, repeated
        data = request_bytes(port, "chat", f"client {i}: hi")
        conn = await Connection.open(port)
        try:
            for _ in range(max_per_client):
                if time.perf_counter() >= end_at:
                    return
                t0 = time.perf_counter()
                await conn.send(data)
                parser, first = await conn.read_response(t0)
                elapsed = time.perf_counter() - t0
                if t0 < measure_from:
                    continue  # warm-up: the pool boots its workers
                key = (
                    str(parser.status)
                    if parser.status != 200 or stream_complete(parser)
                    else "200-incomplete"
                )
                statuses[key] = statuses.get(key, 0) + 1
                if key == "200":
                    latencies.append(ms(elapsed))
                    ttfbs.append(ms(first))
                    if t0 + elapsed <= end_at:
                        in_window[0] += 1
        finally:
            await conn.aclose()

    async def sample() -> None:
        await trio.sleep(warmup)
        while time.perf_counter() < end_at:
            value = server.rss_kb()
            if value is not None:
                rss.append(value)
            workers_rss.append(server.workers_rss_kb())
            await trio.sleep(0.25)

    with trio.fail_after(warmup + duration + 60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sample)
            for i in range(clients):
                nursery.start_soon(client, i)
        # streams still running at end_at are waited for (their latency counts) but
        # only the streams that ended inside the window count for the rate
        tail = time.perf_counter() - end_at
    served = statuses.get("200", 0)
    return {
        "clients": clients,
        "warmup_s": warmup,
        "duration_s": duration,
        "tail_after_window_s": tail,
        "streams": served,
        "streams_in_window": in_window[0],
        "streams_per_s": in_window[0] / duration,
        "statuses": statuses,
        "latency_ms": summary(latencies),
        "ttfb_ms": summary(ttfbs),
        "rss_kb_under_load": summary(rss),
        "workers_rss_kb_under_load": summary(workers_rss),
        "_latencies": latencies,
        "_ttfbs": ttfbs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small run for CI (< 20 s)")
    parser.add_argument("--duration", type=float, default=None, help="load seconds (30, quick 5)")
    parser.add_argument("--clients", type=int, default=32)
    args = parser.parse_args(argv)
    quiet_logs()
    duration = args.duration or (4.0 if args.quick else 30.0)
    # a healthy server queues the burst's last wave ~2 s and a load request ~0.1 s
    queue_timeout = str(QUEUE_TIMEOUT_QUICK if args.quick else QUEUE_TIMEOUT)

    with tempfile.TemporaryDirectory(prefix="clibridge-bench-") as tmp:
        with ServerProcess(
            Path(tmp) / "burst",
            "--workers",
            str(WORKERS),
            "--max-queue",
            str(MAX_QUEUE),
            "--queue-timeout",
            queue_timeout,
        ) as server:
            port = server.wait_listening()
            server.wait_ready(workers=1)
            phase1 = trio.run(burst, port)
        with ServerProcess(
            Path(tmp) / "load",
            "--workers",
            str(WORKERS),
            "--max-queue",
            str(max(32, args.clients)),
            "--queue-timeout",
            queue_timeout,
        ) as server:
            server.wait_listening()
            server.wait_ready(workers=1)
            time.sleep(0.5)
            idle = {
                "server_kb": server.rss_kb(),
                "workers_kb": server.workers_rss_kb(),
                "workers": len(server.worker_pids()),
            }
            phase2 = trio.run(load, server, args.clients, duration, 1.0 if args.quick else 3.0)
            after = {
                "server_kb": server.rss_kb(),
                "workers_kb": server.workers_rss_kb(),
                "workers": len(server.worker_pids()),
            }

    print(
        f"burst: {BURST} simultaneous streams, 1 s replies, workers={WORKERS}, max_queue={MAX_QUEUE}"
    )
    print(
        table(
            ("outcome", "count", "expected"),
            [
                [f"429 within {IMMEDIATE_MS:g} ms", phase1["rejected_429_immediate"], 8],
                [
                    "429 after waiting",
                    phase1["rejected_429"] - phase1["rejected_429_immediate"],
                    0,
                ],
                ["200, complete stream", phase1["served_complete"], 24],
                ["anything else", len(phase1["other"]), 0],
            ],
        )
    )
    rej = phase1["rejected_ms"]
    print(
        f"429 latency ms: p50 {rej.get('p50', float('nan')):.1f}, max {rej.get('max', float('nan')):.1f};"
        f" Retry-After {phase1['retry_after']}; error type {phase1['rejected_error_types']}"
    )
    print(f"200 stream ends (ms): {phase1['served_end_ms']}")
    print(f"burst target (exactly 8 immediate 429s and 24 x 200): {verdict(phase1['ok'])}\n")

    print(
        f"load: {phase2['clients']} clients for {phase2['duration_s']:.1f} s, zero-delay fake, "
        f"workers={WORKERS}, max_queue={max(32, args.clients)}"
    )
    print(
        f"streams/s: {phase2['streams_per_s']:.1f}   ({phase2['streams_in_window']} complete streams "
        f"in the window; all answers {phase2['statuses']}; the last ended "
        f"{phase2['tail_after_window_s']:.1f} s after the window)"
    )
    print(
        table(
            STAT_HEADERS,
            stat_rows(
                {"stream latency (ms)": phase2.pop("_latencies"), "ttfb (ms)": phase2.pop("_ttfbs")}
            ),
        )
    )
    load_rss = phase2["rss_kb_under_load"]
    wrss = phase2["workers_rss_kb_under_load"]
    print(
        table(
            ("RSS (MiB)", "server", "fake workers (sum)", "workers"),
            [
                ["idle", _mib(idle["server_kb"]), _mib(idle["workers_kb"]), idle["workers"]],
                ["under load, mean", _mib(load_rss.get("mean")), _mib(wrss.get("mean")), "-"],
                ["under load, max", _mib(load_rss.get("max")), _mib(wrss.get("max")), "-"],
                [
                    "after load",
                    _mib(after["server_kb"]),
                    _mib(after["workers_kb"]),
                    after["workers"],
                ],
            ],
        )
    )
    path = write_results(
        "burst",
        {
            "quick": args.quick,
            "burst": {
                **phase1,
                "workers": WORKERS,
                "max_queue": MAX_QUEUE,
                "queue_timeout": float(queue_timeout),
                "reply_delay_s": 1.0,
            },
            "load": {**phase2, "workers": WORKERS, "max_queue": max(32, args.clients)},
            "rss_kb": {"idle": idle, "after": after},
            "target": {"burst_8_429_24_ok": phase1["ok"]},
        },
    )
    print(f"results: {path}")
    return 0 if phase1["ok"] else 1


def _mib(kb: float | None) -> float:
    return float("nan") if kb is None else kb / 1024.0


if __name__ == "__main__":
    sys.exit(main())
