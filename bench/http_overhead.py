"""HTTP bridge overhead: time to first byte through clibridge minus the fake's own latency.

Method
------
1. The fake claude driven directly (:class:`bench._common.RawClaude`: blocking pipes, no
   clibridge code): booted and initialized, then N turns (each after a ``/clear``, as the
   pool does it), timing from writing the user line to the first ``text_delta`` line on
   its stdout. Run before and after the HTTP phase; both runs are pooled.
2. ``clibridge serve --backend fake`` as a child process (its own CPU accounting, as in
   production; pool defaults), on an ephemeral 127.0.0.1 port. One keep-alive connection
   with blocking sockets and a hand-rolled HTTP/1.1 reader (no httpx: the client should add
   as little as possible), concurrency 1: N streaming ``POST /v1/chat/completions``, timing
   from ``sendall`` to the first response byte (TTFB), the first body byte and the end of the
   chunked body. The other two dialects (``/v1/responses``, ``/v1/messages``) get N/2 each.

Hypercorn sends the response head only once the handler has the first content event (the
status must reflect an error that comes before any content), so the first byte implies the
fake's first text delta went through pool, worker, HTTP layer and encoder.

Overhead = TTFB - raw first text delta, computed per percentile (p50 - p50, p99 - p99).
Also reported: the server process's CPU time (user + system, from ``/proc``) per chat
request, a number that depends much less on the neighbours' load than the latencies do.
That still includes the client's own socket calls and the ``/clear`` the pool sends
before reusing the worker.

Targets (issue 4): overhead p50 <= 3 ms, p99 <= 15 ms.

The request ledger and the metrics (issue 12) are measured in the same run: four servers
side by side -- both off (``--no-ledger --no-metrics``), metrics only (``--no-ledger``),
both on (the default), both on with ``--capture full`` -- get chat requests in interleaved
blocks (so the neighbours' load hits all alike), and what each adds is the difference of
its p50 TTFB and end-of-stream times, and of its server CPU per request, from the first.
Target: the ledger and the metrics together add at most 0.3 ms p50.

Run: ``.venv/bin/python bench/http_overhead.py [--quick] [-n N] [--ledger-only]``
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (
    STAT_HEADERS,
    RawClaude,
    ServerProcess,
    SyncClient,
    cpu_seconds,
    ms,
    request_bytes,
    stat_rows,
    summary,
    table,
    verdict,
    write_results,
)

TARGET_P50_MS = 3.0
TARGET_P99_MS = 15.0
TARGET_LEDGER_P50_MS = 0.3
#: the ledger variants: name -> extra ``serve`` arguments
LEDGER_VARIANTS: dict[str, tuple[str, ...]] = {
    "ledger, metrics off": ("--no-ledger", "--no-metrics"),
    "metrics only": ("--no-ledger",),
    "ledger + metrics": (),
    "+ capture full": ("--capture", "full"),
}
#: the variant the others are compared with, and the one the target is about
BASELINE = "ledger, metrics off"
TARGET_VARIANT = "ledger + metrics"
#: requests each variant gets before the next one's turn
LEDGER_BLOCK = 50


def measure_raw(count: int, warmup: int) -> list[float]:
    fake = RawClaude()
    out: list[float] = []
    try:
        fake.boot()
        for i in range(warmup + count):
            fake.clear()
            first_text = fake.turn("hi")["first_text"]
            if i >= warmup:
                out.append(ms(first_text))
    finally:
        fake.close()
    return out


def measure_http(
    port: int, dialect: str, count: int, warmup: int, stop_at: float
) -> dict[str, list[float]]:
    client = SyncClient(port)
    data = request_bytes(port, dialect)
    out: dict[str, list[float]] = {"ttfb": [], "first body": [], "end": []}
    try:
        for i in range(warmup + count):
            if time.perf_counter() > stop_at:
                print(f"time budget reached after {i} {dialect} requests", file=sys.stderr)
                break
            parser, times = client.stream(data)
            if parser.status != 200 or not parser.body.rstrip().endswith(
                b"[DONE]" if dialect == "chat" else b"}"
            ):
                raise RuntimeError(f"bad response {parser.status}: {parser.body[-300:]!r}")
            if i >= warmup:
                out["ttfb"].append(ms(times["first_byte"]))
                out["first body"].append(ms(times["first_body"]))
                out["end"].append(ms(times["end"]))
    finally:
        client.close()
    return out


def measure_ledger(count: int, warmup: int, budget: float, serve_args: list[str]) -> dict[str, Any]:
    """The ledger variants side by side (module doc); prints a table, returns the results."""
    samples: dict[str, dict[str, list[float]]] = {
        name: {"ttfb": [], "end": []} for name in LEDGER_VARIANTS
    }
    cpu_ms: dict[str, float] = {}
    #: per block: the variant's p50 end minus that of the baseline in the same block
    paired: dict[str, list[float]] = {name: [] for name in list(LEDGER_VARIANTS)[1:]}
    with contextlib.ExitStack() as stack:
        servers: dict[str, ServerProcess] = {}
        for name, extra in LEDGER_VARIANTS.items():
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="clibridge-bench-"))
            servers[name] = stack.enter_context(ServerProcess(Path(tmp), *serve_args, *extra))
        clients: dict[str, SyncClient] = {}
        data: dict[str, bytes] = {}
        for name, server in servers.items():
            port = server.wait_listening()
            server.wait_ready(workers=1)
            clients[name] = stack.enter_context(contextlib.closing(SyncClient(port)))
            data[name] = request_bytes(port, "chat")
            for _ in range(warmup):
                clients[name].stream(data[name])
        cpu0 = {name: cpu_seconds(server.pid) for name, server in servers.items()}
        stop_at = time.perf_counter() + budget
        done = 0
        while done < count and time.perf_counter() < stop_at:
            block = min(LEDGER_BLOCK, count - done)
            medians: dict[str, float] = {}
            for name in LEDGER_VARIANTS:
                ends: list[float] = []
                for _ in range(block):
                    parser, times = clients[name].stream(data[name])
                    if parser.status != 200:
                        raise RuntimeError(f"{name}: bad response {parser.status}")
                    samples[name]["ttfb"].append(ms(times["first_byte"]))
                    ends.append(ms(times["end"]))
                samples[name]["end"] += ends
                medians[name] = statistics.median(ends)
            for name in list(LEDGER_VARIANTS)[1:]:
                paired[name].append(medians[name] - medians[BASELINE])
            done += block
        if done < count:
            print(f"time budget reached after {done} requests per variant", file=sys.stderr)
        for name, server in servers.items():
            after = cpu_seconds(server.pid)
            before = cpu0[name]
            cpu_ms[name] = (
                ms((after - before) / max(1, done))
                if before is not None and after is not None
                else float("nan")
            )
    print(
        f"\nrequest ledger and metrics: chat requests, {LEDGER_BLOCK}-request blocks interleaved (ms)"
    )
    rows = {
        f"{name}: {key}": values for name, vals in samples.items() for key, values in vals.items()
    }
    print(table(STAT_HEADERS, stat_rows(rows)))
    base = samples[BASELINE]
    added: dict[str, dict[str, float]] = {}
    for name in list(LEDGER_VARIANTS)[1:]:
        added[name] = {
            "ttfb_p50": summary(samples[name]["ttfb"])["p50"] - summary(base["ttfb"])["p50"],
            "end_p50": summary(samples[name]["end"])["p50"] - summary(base["end"])["p50"],
            "paired_end_p50": statistics.median(paired[name]) if paired[name] else float("nan"),
            "cpu_per_request": cpu_ms[name] - cpu_ms[BASELINE],
        }
        a = added[name]
        print(
            f"{name:22} adds  p50 TTFB {a['ttfb_p50']:+.3f} ms   p50 end {a['end_p50']:+.3f} ms"
            f"   block-paired p50 end {a['paired_end_p50']:+.3f} ms"
            f"   server CPU {a['cpu_per_request']:+.3f} ms per request"
        )
    print("server CPU per request: " + ", ".join(f"{n} {v:.3f} ms" for n, v in cpu_ms.items()))
    head = added[TARGET_VARIANT]
    # the paired estimate: the neighbours' load drifts less within a block than across a run
    worst = head["paired_end_p50"]
    ok = worst <= TARGET_LEDGER_P50_MS
    print(
        f"\ntarget ({TARGET_VARIANT}): adds <= {TARGET_LEDGER_P50_MS:g} ms p50 (block-paired, end of "
        f"stream): {worst:.3f} ms  {verdict(ok)}"
    )
    return {
        "http": {name: {k: summary(v) for k, v in vals.items()} for name, vals in samples.items()},
        "server_cpu_ms_per_request": cpu_ms,
        "added": added,
        "target": {"p50_ms": TARGET_LEDGER_P50_MS, "met": ok, "value": worst},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small run for CI (< 20 s)")
    parser.add_argument(
        "-n", type=int, default=None, help="chat requests (default 2000, quick 200)"
    )
    parser.add_argument(
        "--serve-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for clibridge serve (repeat), e.g. --serve-arg=--max-turns=100000",
    )
    parser.add_argument(
        "--ledger-only",
        action="store_true",
        help="only the ledger / metrics on / off comparison",
    )
    args = parser.parse_args(argv)
    count = args.n or (200 if args.quick else 2000)
    warmup = 20 if args.quick else 50
    budget = 8.0 if args.quick else 180.0

    if args.ledger_only:
        ledger = measure_ledger(count, warmup, budget, args.serve_arg)
        path = write_results(
            "http_overhead_ledger", {"quick": args.quick, "serve_args": args.serve_arg, **ledger}
        )
        print(f"results: {path}")
        return 0

    raw = measure_raw(count // 2, warmup)
    http: dict[str, dict[str, list[float]]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="clibridge-bench-") as tmp,
        ServerProcess(Path(tmp), *args.serve_arg) as server,
    ):
        port = server.wait_listening()
        server.wait_ready(workers=1)
        stop_at = time.perf_counter() + budget
        cpu0 = cpu_seconds(server.pid)
        http["chat"] = measure_http(port, "chat", count, warmup, stop_at)
        cpu1 = cpu_seconds(server.pid)
        server_cpu_ms = (
            ms((cpu1 - cpu0) / (warmup + len(http["chat"]["ttfb"])))
            if cpu0 is not None and cpu1 is not None
            else float("nan")
        )
        for dialect in ("responses", "messages"):
            http[dialect] = measure_http(port, dialect, count // 2, warmup, stop_at)
    raw += measure_raw(count // 2, warmup)

    rows = {"raw fake: first text delta": raw}
    for dialect, values in http.items():
        for key, samples in values.items():
            rows[f"{dialect}: {key}"] = samples
    print("HTTP bridge overhead, fake claude with zero delay, concurrency 1 (ms)")
    print(table(STAT_HEADERS, stat_rows(rows)))

    raw_s = summary(raw)
    results: dict[str, dict[str, float]] = {}
    print()
    for dialect, values in http.items():
        s = summary(values["ttfb"])
        over = {"p50": s["p50"] - raw_s["p50"], "p99": s["p99"] - raw_s["p99"]}
        results[dialect] = over
        print(f"overhead {dialect:9}  p50 {over['p50']:.3f} ms   p99 {over['p99']:.3f} ms")
    print(f"server process CPU per chat request: {server_cpu_ms:.3f} ms (user + system)")
    ledger = measure_ledger(count, warmup, budget, args.serve_arg)
    head = results["chat"]
    ok = head["p50"] <= TARGET_P50_MS and head["p99"] <= TARGET_P99_MS
    print(
        f"\ntarget (chat): overhead p50 <= {TARGET_P50_MS:g} ms and p99 <= {TARGET_P99_MS:g} ms: "
        f"{head['p50']:.3f} / {head['p99']:.3f} ms  {verdict(ok)}"
    )
    path = write_results(
        "http_overhead",
        {
            "quick": args.quick,
            "serve_args": args.serve_arg,
            "unit": "ms",
            "raw_fake_first_text": raw_s,
            "http": {d: {k: summary(v) for k, v in vals.items()} for d, vals in http.items()},
            "overhead": results,
            "server_cpu_ms_per_chat_request": server_cpu_ms,
            "ledger": ledger,
            "target": {
                "p50_ms": TARGET_P50_MS,
                "p99_ms": TARGET_P99_MS,
                "met": ok,
                "value": head,
            },
        },
    )
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
