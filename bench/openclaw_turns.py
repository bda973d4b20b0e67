"""A 10-turn OpenClaw session with one ``read`` tool round trip per turn, on the real claude.

The pinned OpenClaw (``scripts/install-openclaw.sh``) runs ``openclaw agent --local
--session-id`` ten times (one session); ``clibridge serve --backend claude`` runs as its own
process on the pinned real claude (``scripts/install-real-clis.sh``) with the default pool;
the claude CLI's upstream is the loopback model stub. Every turn's message carries an
``@stub`` line that makes the model call OpenClaw's ``read`` (``mcp__client__read``
upstream) on a workspace file; OpenClaw reads it and sends the content back; the stub then
answers with its default text. So each turn is two model rounds: the turn's start and the
tool round (the request carrying the tool result).

Two recording proxies (:mod:`clibridge.testing.recording_proxy`) time the exchanges::

    OpenClaw -> front proxy -> clibridge -> claude -> upstream proxy -> model stub

Measured:

- **tool rounds resumed**: tool rounds that continued the parked worker / tool rounds, from
  the server's log (``resumed a parked conversation (tool results ...)``; the turn starts
  are counted apart as ``next turn``), checked against ``/v1/stats`` ``resume_hits``;
- **bridge time per tool round**: the front proxy's duration of the exchange (request in to
  response end, as clibridge streamed it) minus the upstream proxy's duration of the model
  call made for it (the stub's time and the upstream proxy's own). Requests are strictly
  sequential, so the n-th model call belongs to the n-th model round; the script refuses to
  pair them when the counts differ. What remains is clibridge + the claude CLI + one
  loopback hop of the front proxy;
- **upstream calls per round**: the stub's model calls / OpenClaw's model requests;
- **memory** after the 10 turns: VmRSS (``/proc/PID/status``) summed over the worker
  processes ``/v1/stats`` lists, over those parked, and over their whole process groups;
  the server process itself apart; **workers spawned** (worker ids are handed out in order).

It never runs in the test suite (it takes ~3 minutes). Run it with::

    .venv/bin/python bench/openclaw_turns.py [--turns 10] [--api openai-completions]

It prints a table and writes ``bench/results/openclaw_turns.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.openclaw.harness import (
    API_TYPES,
    INTERNAL_CONTEXT,
    find_openclaw,
    make_home_with_cli,
    model_requests,
    run_session_turn,
)

from bench._common import ms, quiet_logs, rss_kb, summary, table, write_results
from clibridge._process import live_group_members
from clibridge.testing.model_stub import STUB_API_KEY, directive, serve_model_stub
from clibridge.testing.realcli import find_real_clis
from clibridge.testing.recording_proxy import Exchange, open_recording_proxy

MODEL = "sonnet"
SESSION_ID = "bench-openclaw-turns"
TURN_DEADLINE = 180.0
#: what the server logs when a request continues a parked worker / does not (``_supervisor``)
RESUMED = re.compile(r"resumed a parked conversation \((tool results|next turn),")
MISSED = re.compile(r"continuation miss \((\w+)\)")


def note_name(turn: int) -> str:
    return f"note-{turn}.txt"


def note_content(turn: int) -> str:
    return f"Note {turn}: the secret word is PAPAYA-{turn:02d}."


def turn_message(turn: int) -> str:
    call = {"name": "mcp__client__read", "input": {"path": note_name(turn)}}
    # a directive must be a line of its own: OpenClaw puts a timestamp before the first line
    return f"Turn {turn}: read {note_name(turn)} and tell me what it says.\n" + directive(
        tool_calls=[call]
    )


# ---------------------------------------------------------------------- the server


class ClaudeServer:
    """``clibridge serve --backend claude`` on the real claude, in its own process group.

    The environment is an allow-list: the caller's ``CLIBRIDGE_*`` / ``ANTHROPIC_*`` never
    reach it; the claude workers get the stub's URL and key through ``claude.pass_env``.
    """

    def __init__(self, root: Path, claude: Path, upstream: str) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.log_path = root / "server.log"
        argv = [
            sys.executable,
            "-m",
            "clibridge",
            "serve",
            "--backend",
            "claude",
            "--claude-command",
            str(claude),
            "--claude-pass-env",
            "ANTHROPIC_API_KEY",
            "--claude-pass-env",
            "ANTHROPIC_BASE_URL",
            "--port",
            "0",
            "--state-dir",
            str(root / "state"),
            "--log-level",
            "info",
        ]
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(root),
            "LANG": "C.UTF-8",
            "NO_PROXY": "127.0.0.1,localhost",
            "ANTHROPIC_API_KEY": STUB_API_KEY,
            "ANTHROPIC_BASE_URL": upstream,
        }
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        self.url = ""

    async def wait_listening(self) -> str:
        """The server's URL once its banner names it (bound the call with ``fail_after``)."""
        # Why polling: the banner in the log file is the only signal the child gives
        while self.process.poll() is None:
            found = re.search(
                rb"listening on (http://127\.0\.0\.1:\d+)", self.log_path.read_bytes()
            )
            if found:
                self.url = found.group(1).decode()
                return self.url
            await trio.sleep(0.05)
        raise RuntimeError(f"the server did not start; its log:\n{self.log_path.read_text()}")

    async def stats(self) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.get(f"{self.url}/v1/stats")
        response.raise_for_status()
        claude: dict[str, Any] = response.json()["service"]["claude"]
        return claude

    def log_lines(self) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines()

    async def stop(self) -> int:
        """SIGTERM (graceful drain), then the whole group is killed as a last resort."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with trio.move_on_after(40):
                while self.process.poll() is None:  # noqa: ASYNC110
                    await trio.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        code = self.process.wait()
        self._log.close()
        return code


# ---------------------------------------------------------------------- analysis


def is_tool_round(body: Mapping[str, Any]) -> bool:
    """The request carries a tool result as its newest item (OpenClaw's trailing
    internal-context message aside): chat ``tool``, Responses ``function_call_output``,
    Messages ``tool_result`` blocks."""
    items = list(body.get("messages") or body.get("input") or [])
    if items and INTERNAL_CONTEXT in json.dumps(items[-1].get("content")):
        items.pop()
    if not items:
        return False
    last = items[-1]
    content = last.get("content")
    return (
        last.get("role") == "tool"
        or last.get("type") == "function_call_output"
        or (
            isinstance(content, list)
            and any(isinstance(p, dict) and p.get("type") == "tool_result" for p in content)
        )
    )


def upstream_model_calls(exchanges: Sequence[Exchange]) -> list[Exchange]:
    chosen = [e for e in exchanges if e.method == "POST" and e.path.split("?")[0] == "/v1/messages"]
    return sorted(chosen, key=lambda e: e.seq)


def memory(stats: Mapping[str, Any], server_pid: int) -> dict[str, Any]:
    """RSS (KiB) of the workers /v1/stats lists, of the parked ones, of their groups."""
    workers = [w for w in stats["workers"] if w["pid"] is not None]

    def total(pids: Sequence[int]) -> int:
        return sum(rss_kb(p) or 0 for p in pids)

    def groups(ws: Sequence[Mapping[str, Any]]) -> int:
        return sum(total(live_group_members(int(w["pid"]))) for w in ws)

    parked = [w for w in workers if w["state"] == "parked"]
    return {
        "workers": len(workers),
        "parked": len(parked),
        "states": [w["state"] for w in workers],
        "workers_rss_kb": total([int(w["pid"]) for w in workers]),
        "parked_rss_kb": total([int(w["pid"]) for w in parked]),
        "worker_groups_rss_kb": groups(workers),
        "parked_groups_rss_kb": groups(parked),
        "server_rss_kb": rss_kb(server_pid),
    }


# ---------------------------------------------------------------------- the run


async def session(turns: int, api: str, root: Path) -> dict[str, Any]:
    install = find_openclaw()
    if install.problem:
        raise SystemExit(f"OpenClaw missing: {install.problem}")
    clis = find_real_clis()
    if clis.claude is None:
        raise SystemExit(f"real claude missing: {clis.missing('claude')}")
    per_turn: list[dict[str, Any]] = []
    async with serve_model_stub() as stub, open_recording_proxy(stub.base_url) as upstream:
        server = ClaudeServer(root / "server", clis.claude, upstream.base_url)
        try:
            with trio.fail_after(60):
                await server.wait_listening()
            with trio.fail_after(60):
                # the pool's spare: the first turn must not wait for a CLI to boot
                while not (await server.stats())["idle"]:  # noqa: ASYNC110
                    await trio.sleep(0.1)
            async with open_recording_proxy(server.url) as front:
                home = await make_home_with_cli(root / "openclaw", api, front.base_url, MODEL)
                for turn in range(1, turns + 1):
                    (home.workspace / note_name(turn)).write_text(note_content(turn) + "\n")
                started = time.perf_counter()
                for turn in range(1, turns + 1):
                    before = await server.stats()
                    with trio.fail_after(TURN_DEADLINE):
                        run = await run_session_turn(install, home, SESSION_ID, turn_message(turn))
                    after = await server.stats()
                    agent = run.result.get("meta", {}).get("agentMeta", {})
                    receipt = agent.get("terminalReceipt", {})
                    per_turn.append(
                        {
                            "turn": turn,
                            "ok": run.ok,
                            "openclaw_s": round(run.seconds, 2),
                            "text": run.text,
                            "assistant_turns": agent.get("assistantTurns"),
                            "tools": receipt.get("successfulToolNames"),
                            "resume_hits": after["resume_hits"] - before["resume_hits"],
                            "resume_misses": after["resume_misses"] - before["resume_misses"],
                        }
                    )
                    print(f"turn {turn}: {per_turn[-1]}", flush=True)
                    if not run.ok:
                        print(run.describe(), file=sys.stderr)
                        break
                wall = time.perf_counter() - started
                # settle: the last response has ended, its worker parked
                await trio.sleep(1.0)
                stats = await server.stats()
                mem = memory(stats, server.process.pid)
                outer = model_requests(front.exchanges)
        finally:
            code = await server.stop()
        inner = upstream_model_calls(upstream.exchanges)
        stub_calls = len(stub.model_calls())
    log = server.log_lines()
    resumed = [m.group(1) for line in log if (m := RESUMED.search(line))]
    missed = [m.group(1) for line in log if (m := MISSED.search(line))]
    tool_rounds = [i for i, e in enumerate(outer) if is_tool_round(e.request)]
    paired = len(inner) == len(outer)
    bridge = [outer[i].duration - inner[i].duration for i in tool_rounds] if paired else []
    starts = [
        outer[i].duration - inner[i].duration
        for i in range(len(outer))
        if paired and i not in tool_rounds
    ]
    gross = [outer[i].duration for i in tool_rounds]
    stub_time = [e.duration for e in inner]
    # the k-th tool round's upstream call carries note k's content (OpenClaw read it)
    reached = (
        sum(
            note_content(k) in json.dumps(inner[i].request)
            for k, i in enumerate(tool_rounds, start=1)
        )
        if paired
        else 0
    )
    return {
        "turns": len(per_turn),
        "api": api,
        "all_ok": all(t["ok"] for t in per_turn),
        "wall_s": round(wall, 1),
        "model_rounds": len(outer),
        "tool_rounds": len(tool_rounds),
        "upstream_calls": stub_calls,
        "upstream_calls_per_round": round(stub_calls / len(outer), 3) if outer else None,
        "paired": paired,
        "tool_rounds_resumed": resumed.count("tool results"),
        "tool_rounds_resumed_pct": round(100 * resumed.count("tool results") / len(tool_rounds), 1)
        if tool_rounds
        else None,
        "turn_starts_resumed": resumed.count("next turn"),
        "turn_starts_after_first": max(0, len(per_turn) - 1),
        "misses_by_reason": {r: missed.count(r) for r in sorted(set(missed))},
        "stats_resume_hits": stats["resume_hits"],
        "stats_resume_misses": stats["resume_misses"],
        "stats_resume_miss_reasons": stats["resume_miss_reasons"],
        "bridge_ms_tool_round": {
            k: round(ms(v), 1) for k, v in summary(bridge).items() if k != "n"
        },
        "bridge_ms_tool_round_values": [round(ms(v), 1) for v in bridge],
        "front_proxy_ms_tool_round": {
            k: round(ms(v), 1) for k, v in summary(gross).items() if k != "n"
        },
        "tool_results_reached_model": reached,
        "bridge_ms_turn_start": {
            k: round(ms(v), 1) for k, v in summary(starts).items() if k != "n"
        },
        "stub_ms": {k: round(ms(v), 1) for k, v in summary(stub_time).items() if k != "n"},
        "workers_spawned": max((w["id"] for w in stats["workers"]), default=0),
        "restarts": stats["restarts"],
        "memory_after": mem,
        "server_exit": code,
        "per_turn": per_turn,
    }


async def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--api", choices=API_TYPES, default="openai-completions")
    args = parser.parse_args(argv)
    quiet_logs()
    with tempfile.TemporaryDirectory(prefix="clibridge-openclaw-turns-") as tmp:
        result = await session(args.turns, args.api, Path(tmp))
    mib = 1024.0
    mem = result["memory_after"]
    tool = result["bridge_ms_tool_round"]
    rows = [
        ["turns ok", f"{sum(t['ok'] for t in result['per_turn'])} / {result['turns']}"],
        [
            "tool rounds resumed on the parked worker",
            f"{result['tool_rounds_resumed']} / {result['tool_rounds']} "
            f"({result['tool_rounds_resumed_pct']} %)",
        ],
        [
            "turn starts resumed (turns 2..n)",
            f"{result['turn_starts_resumed']} / {result['turn_starts_after_first']}",
        ],
        [
            "tool results that reached the model",
            f"{result['tool_results_reached_model']} / {result['tool_rounds']}",
        ],
        ["bridge time per tool round p50 / p95 (ms)", f"{tool.get('p50')} / {tool.get('p95')}"],
        [
            "  (front proxy duration, stub hop included) p50 / p95",
            f"{result['front_proxy_ms_tool_round'].get('p50')} / "
            f"{result['front_proxy_ms_tool_round'].get('p95')}",
        ],
        [
            "bridge time per turn start p50 / p95 (ms)",
            f"{result['bridge_ms_turn_start'].get('p50')} / "
            f"{result['bridge_ms_turn_start'].get('p95')}",
        ],
        [
            "stub hop per call (upstream proxy duration) p50 / p95 (ms)",
            f"{result['stub_ms'].get('p50')} / {result['stub_ms'].get('p95')}",
        ],
        [
            "upstream calls per model round",
            f"{result['upstream_calls']} / {result['model_rounds']} "
            f"= {result['upstream_calls_per_round']}",
        ],
        ["workers spawned", f"{result['workers_spawned']} (restarts {result['restarts']})"],
        [
            "RSS after: workers / parked (MiB)",
            f"{mem['workers_rss_kb'] / mib:.1f} ({mem['workers']}) / "
            f"{mem['parked_rss_kb'] / mib:.1f} ({mem['parked']})",
        ],
        [
            "RSS after: worker groups / parked groups (MiB)",
            f"{mem['worker_groups_rss_kb'] / mib:.1f} / {mem['parked_groups_rss_kb'] / mib:.1f}",
        ],
        ["RSS after: server (MiB)", f"{(mem['server_rss_kb'] or 0) / mib:.1f}"],
        ["OpenClaw session wall (s)", f"{result['wall_s']}"],
    ]
    print(table(["measure", "value"], rows))
    path = write_results("openclaw_turns", result)
    print(f"wrote {path}")


if __name__ == "__main__":
    trio.run(main)
