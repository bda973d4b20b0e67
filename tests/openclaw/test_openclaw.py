"""The real OpenClaw client (pinned, ``scripts/install-openclaw.sh``) against clibridge.

The whole server runs in-process on the fake claude (:func:`tests.e2e.conftest.open_e2e_server`:
real worker processes, process-table checks on exit); a recording proxy
(:mod:`clibridge.testing.recording_proxy`) sits between each OpenClaw and the server, so the
tests see exactly what OpenClaw sent. For each of OpenClaw's three API types:

- **plain**: ``openclaw agent exec`` with one message (a scripted reply);
- **tool loop**: ``agent exec`` with a ``@fake`` line that makes the fake call OpenClaw's own
  ``read`` tool on a file in OpenClaw's workspace; OpenClaw runs it and sends the content back;
- **session**: two turns of ``openclaw agent --local --session-id``.

The fake echoes what it is given (tool results included), so a reply shows what reached the
model, whether the turn continued a parked worker or replayed the history on a fresh one.

One OpenClaw run costs ~10 s of CPU (Node start, plugins), so the module runs the whole matrix
once (:func:`openclaw_matrix`: 12 OpenClaw runs, at most 3 at a time, on one server) and the
tests assert on its results.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from clibridge.testing.recording_proxy import Exchange
from clibridge.testing.scenario import directive
from tests._real_clients import case_proxy, exchanges_of, run_cases, settle
from tests.e2e.conftest import FAST_POOL, open_e2e_server

from .harness import (
    API_TYPES,
    INTERNAL_CONTEXT,
    PLAIN_MESSAGE,
    SESSION_ID,
    SESSION_MESSAGES,
    TOOL_FILE,
    TOOL_FILE_CONTENT,
    TOOL_LOOP_MESSAGE,
    TOOL_LOOP_SCENARIO,
    OpenClawHome,
    OpenClawInstall,
    OpenClawRun,
    RecordedCell,
    make_home,
    role_sequence,
    run_exec,
    run_session_turn,
)

pytestmark = [
    pytest.mark.openclaw,
    pytest.mark.slow,
    # Why: the first test pays for the whole matrix (~1-2 min on 2 CPUs)
    pytest.mark.timeout(480),
]

SCENARIOS = ("plain", "tool_loop", "session")
#: room for every conversation OpenClaw leaves parked (9) and a spare: a continuation must
#: not lose its worker to pressure
POOL = attrs.evolve(
    FAST_POOL, workers=10, spares=1, max_queue=8, queue_timeout=60.0, turn_timeout=60.0
)
#: the fake echoes what it is given (tool results included): a reply shows what reached the
#: model, on a resumed worker and on a replayed history alike
FAKE_SCENARIO = TOOL_LOOP_SCENARIO
#: OpenClaw processes at once (each is a Node process busy for ~10 s of CPU)
CONCURRENT_RUNS = 3
RUN_DEADLINE = 180.0
MATRIX_DEADLINE = 420.0


SESSION_FIRST_REPLY = "Nice to meet you, Ada."


def plain_reply(api: str) -> str:
    return f"Hi from clibridge over {api}."


def plain_message(api: str) -> str:
    # a line of its own: OpenClaw puts a timestamp before the first line
    return f"{PLAIN_MESSAGE}\n{directive(echo=False, reply=plain_reply(api), chunk_chars=4)}"


@attrs.frozen
class Cell(RecordedCell):
    """One API type x scenario: OpenClaw's runs and the HTTP exchanges they made."""

    api: str
    scenario: str
    home: OpenClawHome
    runs: tuple[OpenClawRun, ...]
    exchanges: tuple[Exchange, ...]

    @property
    def tag(self) -> str:
        return f"{self.api} {self.scenario}"


@attrs.frozen
class Matrix:
    cells: Mapping[tuple[str, str], Cell]
    #: the claude pool's /v1/stats once the pool settled after all runs
    stats: Mapping[str, Any]
    #: the fake claude processes' stdin lines
    fake_stdin: tuple[Any, ...]
    #: why the server was not clean (parked conversations aside), or None
    clean_error: str | None
    seconds: float


def _messages(scenario: str, api: str) -> list[str]:
    if scenario == "plain":
        return [plain_message(api)]
    if scenario == "tool_loop":
        return [TOOL_LOOP_MESSAGE]
    first, second = SESSION_MESSAGES
    # Why not an echo in turn 1: OpenClaw strips its internal-context block out of a stored
    # assistant reply, so an echoed turn would come back altered and continue nothing
    return [f"{first}\n{directive(echo=False, reply=SESSION_FIRST_REPLY)}", second]


async def _run_cell(
    install: OpenClawInstall,
    base_url: str,
    root: Path,
    cell: tuple[str, str],
    limiter: trio.CapacityLimiter,
) -> Cell:
    api, scenario = cell
    async with case_proxy(base_url, f"{api}_{scenario}") as proxy:
        home = make_home(root / f"{api}_{scenario}", api, proxy.base_url)
        if scenario == "tool_loop":
            (home.workspace / TOOL_FILE).write_text(TOOL_FILE_CONTENT + "\n")
        runs: list[OpenClawRun] = []
        for message in _messages(scenario, api):
            async with limiter:
                with trio.fail_after(RUN_DEADLINE):
                    if scenario == "session":
                        run = await run_session_turn(install, home, SESSION_ID, message)
                    else:
                        run = await run_exec(install, home, message)
            runs.append(run)
            if not run.ok:
                break
        return Cell(api, scenario, home, tuple(runs), await exchanges_of(proxy))


async def _run_matrix(install: OpenClawInstall, root: Path) -> Matrix:
    # Why one server: open_e2e_server accounts for every child of this process, so a second
    # server (or an OpenClaw still running) would count as its leak
    started = time.monotonic()
    with trio.fail_after(MATRIX_DEADLINE):
        async with open_e2e_server(root / "server", scenario=FAKE_SCENARIO, pool=POOL) as server:
            cells = [(api, scenario) for scenario in SCENARIOS for api in API_TYPES]
            run_cell = partial(_run_cell, install, server.base_url, root)
            results = await run_cases(cells, run_cell, CONCURRENT_RUNS)
            stats, clean_error = await settle(server)
            fake_stdin = tuple(server.stdin_lines())
    return Matrix(
        cells=results,
        stats=stats,
        fake_stdin=fake_stdin,
        clean_error=clean_error,
        seconds=time.monotonic() - started,
    )


@pytest.fixture(scope="module")
def openclaw_matrix(
    openclaw_install: OpenClawInstall, tmp_path_factory: pytest.TempPathFactory
) -> Matrix:
    """Every API type x scenario, run once for the module (see the module docstring)."""
    # Why trio.run in a sync fixture: pytest-trio's async fixtures are per test, and the
    # matrix is too slow to run per test
    root = tmp_path_factory.mktemp("openclaw")
    matrix = trio.run(_run_matrix, openclaw_install, root)
    # shown with -rP (captured output of the first test's setup)
    print(f"OpenClaw matrix: {matrix.seconds:.1f} s")
    for (api, scenario), cell in sorted(matrix.cells.items()):
        times = ", ".join(f"{run.seconds:.1f} s" for run in cell.runs)
        roles = " / ".join(" ".join(role_sequence(body)) for body in cell.bodies())
        print(f"  {api} {scenario}: {times}; {roles}")
    print(f"  stats: { {k: v for k, v in matrix.stats.items() if k != 'workers'} }")
    return matrix


def _text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


# --------------------------------------------------------------------------- plain


@pytest.mark.parametrize("api", API_TYPES)
def test_plain_turn(openclaw_matrix: Matrix, api: str) -> None:
    """One ``agent exec`` turn: the scripted reply reaches OpenClaw's final answer."""
    cell = openclaw_matrix.cells[api, "plain"]
    (run,) = cell.runs
    assert run.ok, cell.describe()
    assert run.text == plain_reply(api), cell.describe()
    assert run.result.get("status") == "ok", cell.describe()
    (body,) = cell.bodies()
    assert all(e.status == 200 and e.error is None for e in cell.exchanges), cell.describe()
    # what OpenClaw sends, every time: streamed, ending with its internal-context message
    assert body["stream"] is True
    if api == "openai-completions":
        assert body["stream_options"] == {"include_usage": True}
    conversation: list[Any] = body.get("messages") or body.get("input") or []
    assert INTERNAL_CONTEXT in _text(conversation[-1]), role_sequence(body)
    assert PLAIN_MESSAGE in _text(conversation), role_sequence(body)


# --------------------------------------------------------------------------- tool loop


@pytest.mark.parametrize("api", API_TYPES)
def test_tool_loop_reads_workspace_file(openclaw_matrix: Matrix, api: str) -> None:
    """The model calls OpenClaw's ``read`` on a workspace file; the content reaches the model."""
    cell = openclaw_matrix.cells[api, "tool_loop"]
    (run,) = cell.runs
    assert run.ok, cell.describe()
    assert run.result.get("toolSummary", {}) == {"calls": 1, "tools": ["read"], "failures": 0}
    assert run.result.get("assistantTurns") == 2, cell.describe()
    first, second = cell.bodies()
    assert TOOL_FILE_CONTENT not in _text(first)
    # OpenClaw ran the tool and sent the file's content back as the call's result ...
    assert TOOL_FILE_CONTENT in _text(second), role_sequence(second)
    tool_results = [r for r in role_sequence(second) if r.startswith(("tool(", "function_call_o"))]
    tool_results += [r for r in role_sequence(second) if "tool_result" in r]
    assert len(tool_results) == 1, role_sequence(second)
    # ... and the model got it: the fake echoes what it was given
    assert TOOL_FILE_CONTENT in run.text, cell.describe()
    assert any(TOOL_FILE_CONTENT in _text(line) for line in openclaw_matrix.fake_stdin)


# --------------------------------------------------------------------------- session


@pytest.mark.parametrize("api", API_TYPES)
def test_session_two_turns(openclaw_matrix: Matrix, api: str) -> None:
    """Two ``agent --local --session-id`` turns: the second replays the first, both answered."""
    cell = openclaw_matrix.cells[api, "session"]
    assert len(cell.runs) == 2, cell.describe()
    for run in cell.runs:
        assert run.ok, cell.describe()
        assert run.result["meta"]["agentMeta"]["sessionId"] == SESSION_ID
    first_user, second_user = SESSION_MESSAGES
    assert cell.runs[0].text == SESSION_FIRST_REPLY, cell.describe()
    # the fake echoes the second turn: its message reached the model
    assert second_user in cell.runs[1].text, cell.describe()
    first, second = cell.bodies()
    assert first_user in _text(first) and second_user not in _text(first)
    # the whole first turn comes back, in order, before the new message
    history = _text(second.get("messages") or second.get("input"))
    assert (
        history.index(first_user) < history.index(SESSION_FIRST_REPLY) < history.index(second_user)
    ), role_sequence(second)
    assert role_sequence(second)[-1].startswith("user(internal"), role_sequence(second)


# --------------------------------------------------------------------------- processes


def test_openclaw_leaves_no_process_behind(openclaw_matrix: Matrix) -> None:
    """No OpenClaw run leaves a process in its group; the server settles clean."""
    leftovers = {
        (cell.api, cell.scenario): run.leftovers
        for cell in openclaw_matrix.cells.values()
        for run in cell.runs
        if run.leftovers
    }
    assert not leftovers
    assert openclaw_matrix.clean_error is None, openclaw_matrix.clean_error
    stats = openclaw_matrix.stats
    assert stats["crashes"] == 0 and stats["timeouts"] == 0 and stats["rejected"] == 0, stats


# --------------------------------------------------------------------------- continuation


def test_openclaw_continuation_resumes_parked_worker(openclaw_matrix: Matrix) -> None:
    """A tool result and a session's second turn continue the worker that holds the turn.

    OpenClaw replays the whole conversation on every request and swaps its trailing
    internal-context message (and, over ``openai-responses``, rewrites call ids to
    ``call_<id>_fc_...``). Each of those continuations (3 tool loops, 3 second turns) must be
    recognised as one: a resume hit on the parked worker, not a replay of the history on a
    fresh one. (The plain turns start conversations that nobody continues.)
    """
    continuations = 2 * len(API_TYPES)
    stats = {
        k: openclaw_matrix.stats.get(k)
        for k in ("resume_hits", "resume_misses", "resume_miss_reasons", "served", "parked")
    }
    assert stats["resume_hits"] == continuations, stats
    assert stats["resume_misses"] == 0, stats
