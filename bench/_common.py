"""Shared helpers for the benchmark scripts: statistics, tables, results files, the raw fake.

Nothing here measures by itself. Every script prints a table and writes
``bench/results/<name>.json`` (the latest run) plus a timestamped copy; ``bench/results/`` is
ignored by git.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "bench" / "results"

#: the bundled fake claude, as the supervisor runs it with ``--backend fake``
FAKE_CLAUDE = (sys.executable, "-m", "clibridge.testing.fake_claude")
#: the stream-json worker flags (FINDINGS.md); the fake accepts exactly what the real CLI does
WORKER_FLAGS = (
    "-p",
    "--input-format",
    "stream-json",
    "--output-format",
    "stream-json",
    "--verbose",
    "--include-partial-messages",
    "--no-session-persistence",
    "--tools",
    "",
)
MODEL = "claude-sonnet-4-5"


# ---------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0..100) by linear interpolation between closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * p / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values: Sequence[float]) -> dict[str, float]:
    """n, min, p50, p95, p99, max, mean of ``values`` (same unit as given)."""
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "min": min(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": max(values),
        "mean": sum(values) / len(values),
    }


def ms(seconds: float) -> float:
    return seconds * 1000.0


# ---------------------------------------------------------------------- output


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain aligned text table; floats get 3 significant decimals."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            if math.isnan(value):
                return "-"
            return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
        return str(value)

    body = [[cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in body:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = [
        "  ".join(
            [headers[0].ljust(widths[0])]
            + [h.rjust(w) for h, w in zip(headers[1:], widths[1:], strict=True)]
        )
    ]
    lines.append("  ".join("-" * w for w in widths))
    for row in body:
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells))
    return "\n".join(lines)


def stat_rows(named: Mapping[str, Sequence[float]]) -> list[list[Any]]:
    """Rows of ``name, n, p50, p95, p99, max, mean`` for the table helper."""
    rows: list[list[Any]] = []
    for name, values in named.items():
        s = summary(values)
        rows.append([name, s.get("n", 0), *(s.get(k, math.nan) for k in STAT_KEYS)])
    return rows


STAT_KEYS = ("min", "p50", "p95", "p99", "max", "mean")
STAT_HEADERS = ("measure", "n", *STAT_KEYS)


def quiet_logs() -> None:
    """Only errors from clibridge's loggers (the benchmarks print their own tables)."""
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")


def machine() -> dict[str, Any]:
    """Where and when the numbers were taken (the machine is shared: load matters)."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        commit = ""
    return {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "commit": commit,
    }


def write_results(name: str, data: Mapping[str, Any]) -> Path:
    """Write ``bench/results/<name>.json`` (and a timestamped copy); return the path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "machine": machine(), **data}
    text = json.dumps(payload, indent=2, default=str) + "\n"
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(text)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    (RESULTS_DIR / f"{name}-{stamp}.json").write_text(text)
    return path


def verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


# ---------------------------------------------------------------------- the fake, raw


class RawFakeClaude:
    """The fake claude driven directly: blocking pipes, no clibridge code in the path.

    This is the floor every bridged measurement is compared against: what it costs the
    fake itself to answer, plus one pipe round trip.
    """

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        argv = [*FAKE_CLAUDE, *WORKER_FLAGS, "--model", MODEL]
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            bufsize=0,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        self._buffer = b""
        self._ids = 0

    def send(self, message: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message).encode() + b"\n")

    def receive(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        while b"\n" not in self._buffer:
            chunk = os.read(fd, 65536)
            if not chunk:
                raise EOFError("the fake claude closed stdout")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        message: dict[str, Any] = json.loads(line)
        return message

    def control(self, subtype: str, **fields: Any) -> dict[str, Any]:
        self._ids += 1
        rid = f"raw-{self._ids}"
        self.send(
            {
                "type": "control_request",
                "request_id": rid,
                "request": {"subtype": subtype, **fields},
            }
        )
        while True:
            message = self.receive()
            if (
                message.get("type") == "control_response"
                and message["response"].get("request_id") == rid
            ):
                return message

    def boot(self, system: str = "You are a benchmark.") -> None:
        self.control("mcp_status")
        self.control("initialize", systemPrompt=system)

    def turn(self, text: str) -> dict[str, float]:
        """One turn; seconds from writing the user line to the first line, the first
        text delta and the result line."""
        t0 = time.perf_counter()
        self.send(
            {
                "type": "user",
                "message": {"role": "user", "content": text},
                "parent_tool_use_id": None,
                "session_id": "",
            }
        )
        first_line = first_text = None
        while True:
            message = self.receive()
            now = time.perf_counter()
            if first_line is None:
                first_line = now - t0
            if (
                first_text is None
                and message.get("type") == "stream_event"
                and message["event"].get("type") == "content_block_delta"
            ):
                first_text = now - t0
            if message.get("type") == "result":
                return {
                    "first_line": first_line,
                    "first_text": first_text if first_text is not None else math.nan,
                    "result": now - t0,
                }

    def clear(self) -> float:
        """``/clear`` as the pool sends it between requests; seconds to its result."""
        return self.turn("/clear")["result"]

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, 9)
            self.process.wait()
