"""The ``cn`` runs the fast tests make, and the sample recordings keep: one server on the fake
claude, a recording proxy per case between ``cn`` and the server.

A case is a Continue provider (``openai``: Chat Completions, ``anthropic``: Messages) and a
scenario:

- ``plain``: "say hi"; a ``@fake`` line scripts the answer, streamed in 4-character deltas;
- ``tool_loop``: a ``@fake`` line makes the model call ``cn``'s own ``Read`` tool on
  ``note.txt``; ``cn`` runs it and sends the content back; the fake (scenario
  :data:`FAKE_SCENARIO`) echoes what it got, tool results included, so the answer shows the
  file's content reached the model.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import trio

from clibridge.testing.recording_proxy import Exchange
from clibridge.testing.scenario import directive
from tests._real_clients import case_proxy, describe_case, exchanges_of, run_cases, settle
from tests.e2e.conftest import FAST_POOL, open_e2e_server

from .harness import (
    NOTE_FILE,
    CnRun,
    ContinueHome,
    ContinueInstall,
    make_home,
    run_cn,
)

PLAIN_REPLY = "Hi from clibridge, as Continue asked."
FAKE_SCENARIO = {"default": {"echo": True, "echo_tool_results": True}}


@attrs.frozen
class Case:
    provider: str
    scenario: str

    @property
    def name(self) -> str:
        return f"{self.provider}_{self.scenario}"

    @property
    def prompt(self) -> str:
        # a line of its own: the fake reads a directive only from a whole line
        if self.scenario == "plain":
            return f"say hi\n{directive(echo=False, reply=PLAIN_REPLY, chunk_chars=4)}"
        call = {"name": "Read", "arguments": {"filepath": NOTE_FILE}}
        return f"Read {NOTE_FILE} and tell me what it says.\n{directive(tool_calls=[call])}"


CASES = tuple(Case(p, s) for p in ("openai", "anthropic") for s in ("plain", "tool_loop"))
#: room for every conversation a case leaves parked, and a spare
POOL = attrs.evolve(
    FAST_POOL, workers=len(CASES) + 1, spares=1, max_queue=8, queue_timeout=60.0, turn_timeout=60.0
)
CONCURRENT_RUNS = 2
RUN_DEADLINE = 60.0
MATRIX_DEADLINE = 240.0


@attrs.frozen
class CaseResult:
    case: Case
    home: ContinueHome
    run: CnRun
    exchanges: tuple[Exchange, ...]

    def bodies(self) -> list[dict[str, Any]]:
        """The model requests' JSON bodies, in arrival order."""
        return [e.request for e in sorted(self.exchanges, key=lambda e: e.seq)]

    def describe(self) -> str:
        return describe_case(self.case.name, self.exchanges, self.run.describe())


@attrs.frozen
class Matrix:
    results: Mapping[str, CaseResult]
    #: the claude pool's /v1/stats once the pool settled after all runs
    stats: Mapping[str, Any]
    #: why the server was not clean (parked conversations aside), or None
    clean_error: str | None
    seconds: float


async def _run_case(
    install: ContinueInstall,
    base_url: str,
    root: Path,
    record_dir: Path | None,
    case: Case,
    limiter: trio.CapacityLimiter,
) -> CaseResult:
    async with case_proxy(base_url, case.name, record_dir) as proxy:
        home = make_home(root / case.name, case.provider, proxy.base_url)
        async with limiter:
            run = await run_cn(install, home, case.prompt, deadline=RUN_DEADLINE)
        return CaseResult(case, home, run, await exchanges_of(proxy))


async def run_matrix(
    install: ContinueInstall, root: Path, record_dir: Path | None = None
) -> Matrix:
    """Every case of :data:`CASES` on one server; with ``record_dir`` each case's exchanges
    are also written there as ``<case>.jsonl``."""
    started = time.monotonic()
    with trio.fail_after(MATRIX_DEADLINE):
        async with open_e2e_server(root / "server", scenario=FAKE_SCENARIO, pool=POOL) as server:
            run_case = partial(_run_case, install, server.base_url, root, record_dir)
            results = await run_cases(CASES, run_case, CONCURRENT_RUNS)
            stats, clean_error = await settle(server)
    return Matrix(
        results={case.name: result for case, result in results.items()},
        stats=stats,
        clean_error=clean_error,
        seconds=time.monotonic() - started,
    )


def summary(matrix: Matrix) -> dict[str, Any]:
    """What the recording's ``summary.json`` keeps: per case ``cn``'s exit status, run time,
    output and network attempts, the requests' paths and flags; the server's stats."""
    out: dict[str, Any] = {}
    for name, result in sorted(matrix.results.items()):
        requests = [
            {
                "path": e.path,
                "status": e.status,
                "model": (e.request or {}).get("model"),
                "flags": {
                    k: v
                    for k, v in (e.request or {}).items()
                    if k not in ("messages", "tools", "system", "model")
                },
                "roles": [m.get("role") for m in (e.request or {}).get("messages", [])],
                "tools": [
                    t.get("name") or t.get("function", {}).get("name")
                    for t in (e.request or {}).get("tools", [])
                ],
            }
            for e in sorted(result.exchanges, key=lambda e: e.seq)
        ]
        out[name] = {
            "returncode": result.run.returncode,
            "seconds": round(result.run.seconds, 1),
            "stdout": result.run.stdout,
            "network": list(result.run.network),
            "requests": requests,
        }
    stats = {k: v for k, v in matrix.stats.items() if k != "workers"}
    return {"cases": out, "stats": json.loads(json.dumps(stats, default=str))}
