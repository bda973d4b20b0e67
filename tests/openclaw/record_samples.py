"""Record OpenClaw's real traffic to clibridge: the samples in tests/testing/samples/openclaw/.

For every API type OpenClaw speaks (``openai-completions``, ``openai-responses``,
``anthropic-messages``) and every scenario:

- ``plain``: ``openclaw agent exec --json "say hi"``;
- ``tool_loop``: ``agent exec`` with a ``@fake`` line that makes the fake claude call
  OpenClaw's own ``read`` tool on a file in the workspace (the fake then echoes what it got);
- ``session``: two turns of ``openclaw agent --local --session-id ID``,

a fresh ``clibridge serve --backend fake`` runs on a free loopback port, the recording proxy
(:mod:`clibridge.testing.recording_proxy`) in front of it, OpenClaw in a fresh ``HOME`` pointed
at the proxy. Each cell writes ``<api>_<scenario>.jsonl`` (one line per HTTP exchange; response
bodies over 20 KB replaced by a placeholder) and the script writes ``summary.json``: OpenClaw's
run times, each model request's role sequence and flags, and clibridge's ``/v1/stats`` after
the cell.

OpenClaw's system prompt names its install directory and its workspace, so record with both
outside the repository (the script refuses to write samples that name the repo's path)::

    export CLIBRIDGE_OPENCLAW_DIR=/tmp/clibridge-openclaw/install
    ./scripts/install-openclaw.sh
    .venv/bin/python -m tests.openclaw.record_samples \\
        --work-dir /tmp/clibridge-openclaw/work --out tests/testing/samples/openclaw
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import trio

from clibridge.testing.recording_proxy import Exchange, open_recording_proxy

from .harness import (
    API_TYPES,
    NODE_VERSION,
    OPENCLAW_VERSION,
    PLAIN_MESSAGE,
    REPO_ROOT,
    SESSION_ID,
    SESSION_MESSAGES,
    TOOL_FILE,
    TOOL_FILE_CONTENT,
    TOOL_LOOP_MESSAGE,
    TOOL_LOOP_SCENARIO,
    OpenClawInstall,
    OpenClawRun,
    find_openclaw,
    make_home,
    model_requests,
    role_sequence,
    run_exec,
    run_session_turn,
)

SCENARIOS = ("plain", "tool_loop", "session")
MAX_RESPONSE_BYTES = 20_000
RUN_DEADLINE = 180.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@asynccontextmanager
async def serve_clibridge(work: Path, scenario: Mapping[str, Any] | None) -> AsyncIterator[str]:
    """``clibridge serve --backend fake`` on a free port until the block ends; yields its URL."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLIBRIDGE_")}
    env["NO_PROXY"] = "127.0.0.1,localhost"
    if scenario is not None:
        path = work / "fake-scenario.json"
        path.write_text(json.dumps(scenario))
        env["CLIBRIDGE_FAKE_SCENARIO"] = str(path)
    argv = [
        str(Path(sys.executable).parent / "clibridge"),
        "serve",
        "--backend",
        "fake",
        "--port",
        str(port),
        "--state-dir",
        str(work / "state"),
        "--log-level",
        "warning",
    ]
    base_url = f"http://127.0.0.1:{port}"
    with (work / "clibridge.log").open("wb") as log:
        process = await trio.lowlevel.open_process(
            argv, env=env, stdout=log, stderr=log, start_new_session=True
        )
        try:
            async with httpx.AsyncClient(base_url=base_url, trust_env=False) as client:
                with trio.fail_after(30):
                    while True:
                        with suppress(httpx.HTTPError):
                            if (await client.get("/readyz")).status_code == 200:
                                break
                        await trio.sleep(0.1)
            yield base_url
        finally:
            with trio.CancelScope(shield=True):
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
                with trio.move_on_after(15):
                    await process.wait()
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()


def _fresh_cell(record: Path, work: Path) -> Path:
    record.unlink(missing_ok=True)
    work.mkdir(parents=True)
    return record


def _naming_repo(out: Path) -> list[str]:
    """The sample files that contain this checkout's absolute path."""
    repo = str(REPO_ROOT)
    return [p.name for p in out.glob("*.json*") if repo in p.read_text(errors="replace")]


async def pool_stats(base_url: str) -> dict[str, Any]:
    """The claude pool's ``/v1/stats`` without the per-worker list (plus its length)."""
    async with httpx.AsyncClient(base_url=base_url, trust_env=False) as client:
        stats: dict[str, Any] = (await client.get("/v1/stats")).json()["service"]["claude"]
    workers = stats.pop("workers", [])
    stats["workers"] = len(workers)
    return stats


async def record_cell(
    install: OpenClawInstall, api: str, scenario: str, work: Path, out: Path
) -> dict[str, Any]:
    """One API type x scenario: returns its summary entry, writes its ``.jsonl``."""
    record = _fresh_cell(out / f"{api}_{scenario}.jsonl", work)
    fake = TOOL_LOOP_SCENARIO if scenario == "tool_loop" else None
    runs: list[OpenClawRun] = []
    async with (
        serve_clibridge(work, fake) as upstream,
        open_recording_proxy(
            upstream, record=record, max_response_bytes=MAX_RESPONSE_BYTES
        ) as proxy,
    ):
        home = make_home(work / "home", api, proxy.base_url)
        with trio.fail_after(2 * RUN_DEADLINE):
            if scenario == "plain":
                runs.append(await run_exec(install, home, PLAIN_MESSAGE))
            elif scenario == "tool_loop":
                (home.workspace / TOOL_FILE).write_text(TOOL_FILE_CONTENT + "\n")
                runs.append(await run_exec(install, home, TOOL_LOOP_MESSAGE))
            else:
                for message in SESSION_MESSAGES:
                    runs.append(await run_session_turn(install, home, SESSION_ID, message))
        # Why a pause: the last stream's worker goes back to the pool just after the response
        await trio.sleep(0.5)
        stats = await pool_stats(upstream)
        exchanges: list[Exchange] = list(await proxy.settled())
    for run in runs:
        if not run.ok:
            print(run.describe(), file=sys.stderr)
    requests = []
    for exchange in model_requests(exchanges):
        body = exchange.request or {}
        requests.append(
            {
                "path": exchange.path,
                "status": exchange.status,
                "roles": role_sequence(body),
                "stream": body.get("stream"),
                "stream_options": body.get("stream_options"),
                "tools": len(body.get("tools") or []),
                "request_bytes": len(json.dumps(body)),
            }
        )
    return {
        "openclaw": [
            {
                "command": " ".join(run.argv[1:3]),
                "seconds": round(run.seconds, 1),
                "exit": run.returncode,
                "reply": run.text,
                "tool_summary": run.result.get("toolSummary"),
            }
            for run in runs
        ],
        "requests": requests,
        "stats": stats,
    }


async def record_all(
    install: OpenClawInstall, work: Path, out: Path, cells: list[tuple[str, str]]
) -> None:
    summary: dict[str, Any] = {
        "openclaw": OPENCLAW_VERSION,
        "node": NODE_VERSION,
        "backend": "fake (clibridge serve --backend fake)",
        "date": datetime.date.today().isoformat(),
        "cells": {},
    }
    summary_path = out / "summary.json"
    if summary_path.exists():
        summary["cells"] = json.loads(summary_path.read_text()).get("cells", {})
    for api, scenario in cells:
        cell = f"{api}_{scenario}"
        started = time.monotonic()
        entry = await record_cell(install, api, scenario, work / cell, out)
        summary["cells"][cell] = entry
        print(
            f"{cell}: {time.monotonic() - started:.1f} s, openclaw "
            f"{[r['seconds'] for r in entry['openclaw']]} s, requests "
            f"{[r['roles'] for r in entry['requests']]}, resume_hits "
            f"{entry['stats'].get('resume_hits')} misses {entry['stats'].get('resume_misses')}",
            flush=True,
        )
    summary["cells"] = dict(sorted(summary["cells"].items()))
    summary_path.write_text(json.dumps(summary, indent=1) + "\n")
    tainted = _naming_repo(out)
    if tainted:
        raise SystemExit(
            f"{tainted} name the repository's path {REPO_ROOT}: install OpenClaw outside the repo "
            "(CLIBRIDGE_OPENCLAW_DIR) and pass a --work-dir outside it, then record again"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--work-dir", type=Path, required=True, help="HOMEs, clibridge state")
    parser.add_argument(
        "--out", type=Path, default=REPO_ROOT / "tests" / "testing" / "samples" / "openclaw"
    )
    parser.add_argument(
        "--only", nargs="*", default=None, help="cells to record, e.g. openai-responses_session"
    )
    args = parser.parse_args(argv)
    install = find_openclaw()
    if install.problem:
        raise SystemExit(install.problem)
    cells = [(api, scenario) for api in API_TYPES for scenario in SCENARIOS]
    if args.only:
        cells = [(a, s) for a, s in cells if f"{a}_{s}" in args.only]
    if args.work_dir.exists():
        shutil.rmtree(args.work_dir)
    args.out.mkdir(parents=True, exist_ok=True)
    trio.run(record_all, install, args.work_dir, args.out, cells)


if __name__ == "__main__":
    main()
