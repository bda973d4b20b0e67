"""Shared helpers for the benchmark scripts: statistics, tables, results files, the raw fake.

Nothing here measures by itself. Every script prints a table and writes
``bench/results/<name>.json`` (the latest run) plus a timestamped copy; ``bench/results/`` is
ignored by git.
"""

from __future__ import annotations

import contextlib
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

from clibridge._backends.claude import build_argv

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "bench" / "results"

#: the bundled fake claude, as the supervisor runs it with ``--backend fake``
FAKE_CLAUDE = (sys.executable, "-m", "clibridge.testing.fake_claude")
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


class RawClaude:
    """A claude CLI (the fake by default) driven directly: blocking pipes, no clibridge code
    in the path.

    This is the floor every bridged measurement is compared against: what it costs the CLI
    itself to answer, plus one pipe round trip. ``command``, ``env`` and ``cwd`` run another
    claude (the real one in a spawn home); ``env`` then replaces the environment.
    """

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        *,
        command: Sequence[str] = FAKE_CLAUDE,
        cwd: Path | None = None,
    ) -> None:
        argv = build_argv(command, model=MODEL)  # the worker flags clibridge uses
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            bufsize=0,
            env={**os.environ, **(env or {})} if command is FAKE_CLAUDE else dict(env or {}),
            cwd=cwd,
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
                raise EOFError("claude closed stdout")
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


# ---------------------------------------------------------------------- a minimal HTTP/1.1 client

#: one request body per dialect: a short streaming prompt (``{text}`` is replaced)
DIALECTS: dict[str, tuple[str, dict[str, Any]]] = {
    "chat": (
        "/v1/chat/completions",
        {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "{text}"}]},
    ),
    "responses": ("/v1/responses", {"model": MODEL, "stream": True, "input": "{text}"}),
    "messages": (
        "/v1/messages",
        {
            "model": MODEL,
            "stream": True,
            "max_tokens": 256,
            "messages": [{"role": "user", "content": "{text}"}],
        },
    ),
}


def request_bytes(port: int, dialect: str = "chat", text: str = "hi") -> bytes:
    """A keep-alive HTTP/1.1 POST of ``dialect``'s streaming request."""
    path, body = DIALECTS[dialect]
    payload = json.dumps(body).replace("{text}", json.dumps(text)[1:-1]).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Accept: text/event-stream\r\nContent-Length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


class ResponseParser:
    """Incremental parser for one HTTP/1.1 response (Content-Length or chunked body).

    Feed it what the socket gives; ``done`` turns True when the response is complete.
    Clients built on it add almost nothing to what they time (no httpx, no h11).
    """

    def __init__(self) -> None:
        self._buffer = b""
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.body = b""
        self.done = False
        self._chunked = False
        self._length: int | None = None

    def feed(self, data: bytes) -> None:
        self._buffer += data
        if self.status is None:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self._buffer[:end].decode("latin-1").split("\r\n")
            self._buffer = self._buffer[end + 4 :]
            self.status = int(head[0].split()[1])
            for line in head[1:]:
                name, _, value = line.partition(":")
                self.headers[name.strip().lower()] = value.strip()
            self._chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
            if not self._chunked:
                self._length = int(self.headers.get("content-length", "0"))
        if self._chunked:
            while True:
                end = self._buffer.find(b"\r\n")
                if end < 0:
                    return
                size = int(self._buffer[:end].split(b";")[0], 16)
                if len(self._buffer) < end + 2 + size + 2:
                    return
                self.body += self._buffer[end + 2 : end + 2 + size]
                self._buffer = self._buffer[end + 2 + size + 2 :]
                if size == 0:
                    self.done = True
                    return
        else:
            assert self._length is not None
            self.body += self._buffer
            self._buffer = b""
            self.done = len(self.body) >= self._length


class SyncClient:
    """One keep-alive connection with blocking IO: the lowest-overhead client for c=1."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connects = 0
        self._connect()

    def _connect(self) -> None:
        import socket

        self.sock = socket.create_connection(("127.0.0.1", self.port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connects += 1

    def stream(self, data: bytes) -> tuple[ResponseParser, dict[str, float]]:
        """Send one request; seconds to the first response byte, first body byte, end."""
        parser = ResponseParser()
        t0 = time.perf_counter()
        self.sock.sendall(data)
        first_byte = first_body = None
        while not parser.done:
            chunk = self.sock.recv(65536)
            now = time.perf_counter()
            if not chunk:
                raise EOFError("the server closed the connection")
            if first_byte is None:
                first_byte = now - t0
            parser.feed(chunk)
            if first_body is None and parser.body:
                first_body = now - t0
        end = time.perf_counter() - t0
        assert first_byte is not None
        if parser.headers.get("connection", "").lower() == "close":
            # Hypercorn closes a keep-alive connection after keep_alive_max_requests
            # (1000): reconnect outside the timed part, as a real client would
            self.sock.close()
            self._connect()
        return parser, {
            "first_byte": first_byte,
            "first_body": first_body if first_body is not None else end,
            "end": end,
        }

    def close(self) -> None:
        self.sock.close()


# ---------------------------------------------------------------------- the server, as a child


def rss_kb(pid: int) -> int | None:
    """Resident set size of one process, in KiB (Linux /proc), None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of one process so far (Linux /proc), None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    # after the command name: state is field 3, utime 14 and stime 15 (1-based, man proc)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux /proc)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


class ServerProcess:
    """``clibridge serve --backend fake`` as a child process, on an ephemeral port.

    The server runs in its own session (process group); ``stop()`` sends SIGTERM (graceful
    drain), waits, and kills the group as a last resort, so nothing outlives the benchmark.
    """

    def __init__(self, state_dir: Path, *args: str, env: Mapping[str, str] | None = None) -> None:
        self.log_path = state_dir / "server.log"
        state_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            sys.executable,
            "-m",
            "clibridge",
            "serve",
            "--backend",
            "fake",
            "--port",
            "0",
            "--state-dir",
            str(state_dir / "state"),
            "--log-level",
            "warning",
            *args,
        ]
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        self.pid = self.process.pid
        self.port = 0

    def wait_listening(self, timeout: float = 30.0) -> int:
        import re

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(
                rb"listening on http://127\.0\.0\.1:(\d+)", self.log_path.read_bytes()
            )
            if found:
                self.port = int(found.group(1))
                return self.port
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the server did not start; its log:\n{self.log_path.read_text()}")

    def wait_ready(self, workers: int, timeout: float = 30.0) -> None:
        """Wait until ``/readyz`` says ready and the pool has ``workers`` booted processes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            client = SyncClient(self.port)
            try:
                client.sock.sendall(
                    f"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n\r\n".encode()
                )
                parser = ResponseParser()
                while not parser.done:
                    parser.feed(client.sock.recv(65536))
            finally:
                client.close()
            if parser.status == 200 and len(self.worker_pids()) >= workers:
                return
            time.sleep(0.05)
        raise RuntimeError(f"the server's pool did not get ready in {timeout:g} s")

    def worker_pids(self) -> list[int]:
        """The fake CLI processes (children other than the janitor)."""
        pids = []
        for pid in children_of(self.pid):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"fake_claude" in cmdline:
                pids.append(pid)
        return pids

    def rss_kb(self) -> int | None:
        return rss_kb(self.pid)

    def workers_rss_kb(self) -> int:
        return sum(rss_kb(pid) or 0 for pid in self.worker_pids())

    def stop(self, timeout: float = 15.0) -> int | None:
        import signal

        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        code = self.process.wait()
        self._log.close()
        return code

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
