"""The real OpenClaw client on the real CLIs, through clibridge, with the model stub upstream.

Two stages, one after the other (each server accounts for every child of this process, so
two cannot run at once): the whole server in-process on the pinned real claude
(:func:`tests.e2e.conftest.open_real_server`), then on the pinned real codex
(:func:`tests.e2e.conftest.open_codex_server`), each pointed at its own loopback
:class:`~clibridge.testing.model_stub.ModelStub`. A recording proxy sits between every
OpenClaw home and the server. OpenClaw's config is written by the real command,
``clibridge openclaw-config --url <proxy> --api <api> --write <HOME>/.openclaw/openclaw.json``
(:func:`tests.openclaw.harness.make_home_with_cli`).

Cells (OpenClaw runs of a stage run concurrently, at most :data:`CONCURRENT_RUNS` at once):

- **tool loop** (``openclaw agent exec``): an ``@stub`` line makes the model call OpenClaw's
  ``read`` on a workspace file (named ``mcp__client__read`` upstream of claude, ``read``
  upstream of codex); OpenClaw runs it and sends the content back; the stub then answers
  with its default text. All three API types, on both CLIs.
- **session** (``openclaw agent --local --session-id``, ``openai-completions``): two turns,
  each answered by an ``@stub`` line.

Each cell's first message carries a tag (``[oc-<backend>-<api>-<scenario>]``) that every
upstream request of its conversation repeats, so the stub's requests can be attributed to
cells even though the cells run at the same time.

Asserted at the stub: OpenClaw's tools reached the model, one upstream call per model round,
the file's content reached the model as the result of its call in the next round (and not
before); at clibridge (``/v1/stats``): claude resumes the parked worker for every tool round
trip and for the session's second turn; codex resumes the paused thread for the tool round
trip, but does not keep finished turns, so the session's second turn is a miss
(``not_parked``) and runs on a fresh thread with the history injected.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from clibridge._openclaw import base_url_for
from clibridge.testing.model_stub import (
    DEFAULT_TEXT,
    ModelStub,
    RecordedRequest,
    serve_model_stub,
)
from clibridge.testing.model_stub import directive as stub_directive
from clibridge.testing.pytest_plugin import require_real_cli
from clibridge.testing.realcli import RealClis, codex_setup
from clibridge.testing.recording_proxy import Exchange, open_recording_proxy
from tests._real_clients import exchanges_of
from tests.e2e.conftest import CODEX_POOL, FAST_POOL, open_codex_server, open_real_server

from .harness import (
    API_TYPES,
    PROVIDER,
    TOOL_FILE,
    TOOL_FILE_CONTENT,
    OpenClawHome,
    OpenClawInstall,
    OpenClawRun,
    RecordedCell,
    make_home_with_cli,
    model_requests,
    run_exec,
    run_session_turn,
)

pytestmark = [
    pytest.mark.openclaw,
    pytest.mark.realcli,
    pytest.mark.slow,
    # Why: the first test pays for both stages (~2 min on 2 CPUs)
    pytest.mark.timeout(420),
]

#: the model OpenClaw asks for, per backend (both listed by the server's /v1/models)
MODELS = {"claude": "sonnet", "codex": "gpt-5.5"}
#: OpenClaw's ``read`` as the CLI names it upstream (claude: an MCP tool of server "client")
UPSTREAM_PREFIX = {"claude": "mcp__client__", "codex": ""}
SESSION_API = "openai-completions"
SESSION_ID = "clibridge-realcli-session"
SESSION_TURNS = ("My name is Ada. Please remember it.", "What is my name?")
SESSION_REPLIES = ("Nice to meet you, Ada.", "Your name is Ada.")
#: (backend, api, scenario), in the order they start
CELLS: Mapping[str, tuple[tuple[str, str], ...]] = {
    "claude": (*((api, "tool_loop") for api in API_TYPES), (SESSION_API, "session")),
    "codex": (*((api, "tool_loop") for api in API_TYPES), (SESSION_API, "session")),
}
#: every conversation of the claude stage stays parked (4) next to a spare
CLAUDE_POOL = attrs.evolve(
    FAST_POOL,
    workers=6,
    spares=1,
    max_queue=8,
    queue_timeout=60.0,
    turn_timeout=60.0,
    ready_timeout=60.0,
)
REAL_CODEX_POOL = attrs.evolve(
    CODEX_POOL, queue_timeout=60.0, turn_timeout=60.0, ready_timeout=60.0
)
#: OpenClaw processes at once (each is a Node process busy for ~10 s of CPU)
CONCURRENT_RUNS = 4
RUN_DEADLINE = 180.0
STAGE_DEADLINE = 300.0


def tag_of(backend: str, api: str, scenario: str) -> str:
    return f"oc-{backend}-{api}-{scenario}"


def file_content(tag: str) -> str:
    """The workspace file of a tool-loop cell: its own text, so a result shows whose it is."""
    return f"{TOOL_FILE_CONTENT} ({tag})"


def messages_for(backend: str, scenario: str, tag: str) -> list[str]:
    # a directive must be a line of its own: OpenClaw puts a timestamp before the first line
    if scenario == "tool_loop":
        call = {"name": UPSTREAM_PREFIX[backend] + "read", "input": {"path": TOOL_FILE}}
        return [
            f"Read the file {TOOL_FILE} and tell me what it says. [{tag}]\n"
            + stub_directive(tool_calls=[call])
        ]
    first, second = SESSION_TURNS
    return [
        f"{first} [{tag}]\n" + stub_directive(text=SESSION_REPLIES[0]),
        f"{second}\n" + stub_directive(text=SESSION_REPLIES[1]),
    ]


@attrs.frozen
class Cell(RecordedCell):
    """One conversation: OpenClaw's runs, what it sent, what the model got."""

    backend: str
    api: str
    scenario: str
    home: OpenClawHome
    #: the proxy's URL the config was written for
    url: str
    runs: tuple[OpenClawRun, ...]
    exchanges: tuple[Exchange, ...]

    @property
    def tag(self) -> str:
        return tag_of(self.backend, self.api, self.scenario)


@attrs.frozen
class Stage:
    """One server (one backend) and everything OpenClaw did against it."""

    backend: str
    cells: Mapping[tuple[str, str], Cell]
    #: the backend pool's /v1/stats after the runs, once it settled
    stats: Mapping[str, Any]
    #: every model call the stub received, oldest first
    stub_calls: tuple[RecordedRequest, ...]
    #: why the server was not clean afterwards (parked conversations aside), or None
    clean_error: str | None
    seconds: float

    def calls_of(self, cell: Cell) -> list[RecordedRequest]:
        """The stub's model calls of ``cell``'s conversation (its tag is in every one)."""
        return [c for c in self.stub_calls if cell.tag.encode() in c.raw_body]

    def describe(self, cell: Cell) -> str:
        calls = [f"{c.path} {upstream_shape(c.body)}" for c in self.calls_of(cell)]
        return f"{cell.describe()}\nstub calls: {calls}\nstats: {brief_stats(self.stats)}"


@attrs.frozen
class Results:
    stages: Mapping[str, Stage]
    seconds: float


# --------------------------------------------------------------------------- request shapes


def client_tool_names(body: Mapping[str, Any]) -> list[str]:
    """Tool names of an OpenClaw request, any of its three APIs."""
    return [str(t.get("name") or t.get("function", {}).get("name")) for t in body["tools"]]


def upstream_tool_names(body: Mapping[str, Any]) -> list[str]:
    """Tool names of an upstream request (Anthropic Messages or Responses)."""
    return [str(t.get("name")) for t in body.get("tools") or []]


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            _text(p.get("text", p.get("content"))) for p in content if isinstance(p, dict)
        )
    return ""


def upstream_turns(body: Mapping[str, Any]) -> list[tuple[str, str]]:
    """An upstream request's conversation as ``(kind, text)``, system / developer left out.

    Kinds: ``user``, ``assistant``, ``tool_call`` (text: ``name id json-input``) and
    ``tool_result`` (text: ``id content``), for both the claude (Messages) and the codex
    (Responses) upstream shape.
    """
    out: list[tuple[str, str]] = []
    for item in body.get("messages") or body.get("input") or []:
        kind, role = item.get("type", "message"), item.get("role")
        if kind == "function_call":
            out.append(("tool_call", f"{item['name']} {item['call_id']} {item['arguments']}"))
        elif kind == "function_call_output":
            out.append(("tool_result", f"{item['call_id']} {_text(item['output'])}"))
        elif kind == "message" and role in ("user", "assistant"):
            content = item.get("content")
            blocks = content if isinstance(content, list) else []
            for block in blocks:
                if block.get("type") == "tool_use":
                    args = json.dumps(block["input"])
                    out.append(("tool_call", f"{block['name']} {block['id']} {args}"))
                elif block.get("type") == "tool_result":
                    out.append(("tool_result", f"{block['tool_use_id']} {_text(block['content'])}"))
            plain = [b for b in blocks if b.get("type") in ("text", "input_text", "output_text")]
            if isinstance(content, str) or plain:
                out.append((str(role), _text(content if isinstance(content, str) else plain)))
    return out


def upstream_shape(body: Any) -> list[str]:
    """For failure messages: the kinds of an upstream request's conversation."""
    return [kind for kind, _ in upstream_turns(body)] if isinstance(body, dict) else []


def brief_stats(stats: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in stats.items() if k != "workers"}


# --------------------------------------------------------------------------- the runs


async def _run_cell(
    install: OpenClawInstall,
    limiter: trio.CapacityLimiter,
    backend: str,
    api: str,
    scenario: str,
    server_url: str,
    root: Path,
    cells: dict[tuple[str, str], Cell],
) -> None:
    tag = tag_of(backend, api, scenario)
    async with open_recording_proxy(server_url) as proxy:
        home = await make_home_with_cli(root / tag, api, proxy.base_url, MODELS[backend])
        if scenario == "tool_loop":
            (home.workspace / TOOL_FILE).write_text(file_content(tag) + "\n")
        runs: list[OpenClawRun] = []
        for message in messages_for(backend, scenario, tag):
            async with limiter:
                with trio.fail_after(RUN_DEADLINE):
                    if scenario == "session":
                        run = await run_session_turn(install, home, SESSION_ID, message)
                    else:
                        run = await run_exec(install, home, message)
            runs.append(run)
            if not run.ok:
                break
        cells[api, scenario] = Cell(
            backend, api, scenario, home, proxy.base_url, tuple(runs), await exchanges_of(proxy)
        )


async def _run_stage(
    install: OpenClawInstall,
    backend: str,
    open_server: Callable[[ModelStub], AbstractAsyncContextManager[Any]],
    settle: Callable[[Any], Any],
    root: Path,
) -> Stage:
    cells: dict[tuple[str, str], Cell] = {}
    limiter = trio.CapacityLimiter(CONCURRENT_RUNS)
    started = time.monotonic()
    with trio.fail_after(STAGE_DEADLINE):
        async with serve_model_stub() as stub, open_server(stub) as server:
            async with trio.open_nursery() as nursery:
                for api, scenario in CELLS[backend]:
                    nursery.start_soon(
                        _run_cell,
                        install,
                        limiter,
                        backend,
                        api,
                        scenario,
                        server.base_url,
                        root,
                        cells,
                    )
            clean_error = None
            try:
                await settle(server)
            except AssertionError as exc:
                clean_error = str(exc)
            stats = await server.stats()
            stub_calls = tuple(stub.model_calls())
    return Stage(backend, cells, stats, stub_calls, clean_error, time.monotonic() - started)


async def _run_all(install: OpenClawInstall, clis: RealClis, root: Path) -> Results:
    started = time.monotonic()
    assert clis.claude is not None
    claude = clis.claude

    def claude_server(stub: ModelStub) -> AbstractAsyncContextManager[Any]:
        return open_real_server(root / "claude-server", claude, stub, pool=CLAUDE_POOL)

    def codex_server(stub: ModelStub) -> AbstractAsyncContextManager[Any]:
        setup = codex_setup(clis, stub.base_url, root / "codex-home")
        return open_codex_server(root / "codex-server", real=setup, pool=REAL_CODEX_POOL)

    async def claude_settled(server: Any) -> None:
        await server.assert_clean(settle=30.0)

    async def codex_settled(server: Any) -> None:
        await server.assert_full_capacity(workers=1)

    stages = {
        "claude": await _run_stage(install, "claude", claude_server, claude_settled, root),
        "codex": await _run_stage(install, "codex", codex_server, codex_settled, root),
    }
    return Results(stages, time.monotonic() - started)


@pytest.fixture(scope="module")
def realcli_results(
    openclaw_install: OpenClawInstall,
    real_clis: RealClis,
    tmp_path_factory: pytest.TempPathFactory,
) -> Results:
    """Both stages, run once for the module (see the module docstring)."""
    require_real_cli(real_clis, "claude")
    require_real_cli(real_clis, "codex")
    root = tmp_path_factory.mktemp("openclaw-realcli")
    # Why trio.run in a sync fixture: pytest-trio's async fixtures are per test
    results = trio.run(_run_all, openclaw_install, real_clis, root)
    # shown with -rP (captured output of the first test's setup)
    print(f"OpenClaw on the real CLIs: {results.seconds:.1f} s")
    for stage in results.stages.values():
        print(f" {stage.backend} stage: {stage.seconds:.1f} s; stats {brief_stats(stage.stats)}")
        for (api, scenario), cell in sorted(stage.cells.items()):
            times = ", ".join(f"{run.seconds:.1f} s" for run in cell.runs)
            upstream = [upstream_shape(c.body) for c in stage.calls_of(cell)]
            print(f"  {api} {scenario}: {times}; upstream {upstream}")
    return results


def cell_of(results: Results, backend: str, api: str, scenario: str) -> tuple[Stage, Cell]:
    stage = results.stages[backend]
    assert (api, scenario) in stage.cells, f"{backend} {api} {scenario} never ran"
    return stage, stage.cells[api, scenario]


REALCLI_TOOL_LOOPS = [
    pytest.param(backend, api, id=f"{backend}-{api}")
    for backend, cells in CELLS.items()
    for api, scenario in cells
    if scenario == "tool_loop"
]


# --------------------------------------------------------------------------- config


ALL_CELLS = [
    pytest.param(backend, api, scenario, id=f"{backend}-{api}-{scenario}")
    for backend, cells in CELLS.items()
    for api, scenario in cells
]
PATHS = {
    "openai-completions": "/v1/chat/completions",
    "openai-responses": "/v1/responses",
    "anthropic-messages": "/v1/messages",
}


@pytest.mark.parametrize(("backend", "api", "scenario"), ALL_CELLS)
def test_config_written_by_clibridge_openclaw_config(
    realcli_results: Results, backend: str, api: str, scenario: str
) -> None:
    """``clibridge openclaw-config --write`` merged the provider block OpenClaw then used."""
    stage, cell = cell_of(realcli_results, backend, api, scenario)
    config = json.loads(cell.home.config.read_text())
    block = config["models"]["providers"][PROVIDER]
    assert block["api"] == api
    assert block["baseUrl"] == base_url_for(cell.url, api)
    assert MODELS[backend] in [m["id"] for m in block["models"]]
    # the merge kept what was there (update checks and telemetry off), the old file saved
    assert config["update"] == {"checkOnStart": False}
    assert config["telemetry"] == {"enabled": False}
    assert list(cell.home.config.parent.glob("openclaw.json.bak-*"))
    # OpenClaw's model requests went to that base URL, in that API, and all succeeded
    requests = model_requests(cell.exchanges)
    assert {e.path for e in requests} == {PATHS[api]}, stage.describe(cell)
    assert all(e.status == 200 and e.error is None for e in requests), stage.describe(cell)


# --------------------------------------------------------------------------- tool loop


@pytest.mark.parametrize(("backend", "api"), REALCLI_TOOL_LOOPS)
def test_tool_loop_runs_openclaws_read_for_the_model(
    realcli_results: Results, backend: str, api: str
) -> None:
    """The model calls OpenClaw's ``read``; OpenClaw runs it; the content reaches the model.

    At the stub: OpenClaw's tools are the model's tools, one upstream call per model round,
    the call in round 1, the file's content as its result in round 2 (and not in round 1).
    """
    stage, cell = cell_of(realcli_results, backend, api, "tool_loop")
    why = stage.describe(cell)
    (run,) = cell.runs
    assert run.ok, why
    assert run.result.get("toolSummary") == {"calls": 1, "tools": ["read"], "failures": 0}, why
    assert run.result.get("assistantTurns") == 2, why
    assert run.text == DEFAULT_TEXT, why
    bodies = cell.bodies()
    calls = stage.calls_of(cell)
    # one upstream model call per model round: no title call, no replay, no retry
    assert len(bodies) == 2, why
    assert len(calls) == len(bodies), why
    prefix = UPSTREAM_PREFIX[backend]
    for body, call in zip(bodies, calls, strict=True):
        sent = sorted(prefix + name for name in client_tool_names(body))
        assert sorted(upstream_tool_names(call.body)) == sent, why
    assert prefix + "read" in upstream_tool_names(calls[0].body)
    content = file_content(cell.tag)
    first, second = calls
    assert content not in first.raw_body.decode(), why
    assert first.reply is not None and [t.name for t in first.reply.tool_calls] == [prefix + "read"]
    turns = upstream_turns(second.body)
    tool_calls = [text for kind, text in turns if kind == "tool_call"]
    tool_results = [text for kind, text in turns if kind == "tool_result"]
    assert len(tool_calls) == 1 and len(tool_results) == 1, why
    name, call_id, arguments = tool_calls[0].split(" ", 2)
    assert (name, json.loads(arguments)) == (prefix + "read", {"path": TOOL_FILE}), why
    # the result answers that call and carries the file's content, as OpenClaw read it
    assert tool_results[0].startswith(f"{call_id} "), why
    assert content in tool_results[0], why
    # ... as a native tool result right after the call: the worker holding the call resumed
    kinds = [kind for kind, _ in turns]
    assert kinds[-2:] == ["tool_call", "tool_result"], why


# --------------------------------------------------------------------------- session


@pytest.mark.parametrize("backend", list(CELLS))
def test_session_second_turn_carries_the_first(realcli_results: Results, backend: str) -> None:
    """Two ``agent --local --session-id`` turns: one upstream call each, and the model sees
    the first turn (user, assistant) before the second."""
    stage, cell = cell_of(realcli_results, backend, SESSION_API, "session")
    why = stage.describe(cell)
    assert [run.ok for run in cell.runs] == [True, True], why
    assert [run.text for run in cell.runs] == list(SESSION_REPLIES), why
    for run in cell.runs:
        assert run.result["meta"]["agentMeta"]["sessionId"] == SESSION_ID, why
    bodies = cell.bodies()
    calls = stage.calls_of(cell)
    assert len(bodies) == 2 and len(calls) == 2, why
    prefix = UPSTREAM_PREFIX[backend]
    for body, call in zip(bodies, calls, strict=True):
        sent = sorted(prefix + name for name in client_tool_names(body))
        assert sorted(upstream_tool_names(call.body)) == sent, why
    first_user, second_user = SESSION_TURNS
    turns = upstream_turns(calls[1].body)
    kinds = [kind for kind, _ in turns]
    # the history as real messages, not quoted into the new one
    where = {
        "first user": next(i for i, (k, t) in enumerate(turns) if k == "user" and first_user in t),
        "reply": kinds.index("assistant"),
        "second user": next(
            i for i, (k, t) in enumerate(turns) if k == "user" and second_user in t
        ),
    }
    assert where["first user"] < where["reply"] < where["second user"], (turns, why)
    assert turns[where["reply"]][1] == SESSION_REPLIES[0], why
    assert first_user not in turns[where["second user"]][1], why


# --------------------------------------------------------------------------- clibridge


def test_stub_saw_nothing_but_the_model_rounds(realcli_results: Results) -> None:
    """Every upstream model call belongs to a model round of some OpenClaw conversation."""
    for stage in realcli_results.stages.values():
        rounds = sum(len(cell.bodies()) for cell in stage.cells.values())
        owned = sum(len(stage.calls_of(cell)) for cell in stage.cells.values())
        assert len(stage.stub_calls) == rounds == owned, brief_stats(stage.stats)


def test_claude_resumes_every_tool_round_trip_and_the_second_turn(
    realcli_results: Results,
) -> None:
    """claude: each tool result (3 API types) and the session's second turn continue the
    worker parked with the conversation: 4 resume hits, no miss."""
    stats = realcli_results.stages["claude"].stats
    tool_rounds = sum(1 for _, scenario in CELLS["claude"] if scenario == "tool_loop")
    assert stats["resume_hits"] == tool_rounds + 1, brief_stats(stats)
    assert stats["resume_misses"] == 0, brief_stats(stats)


def test_codex_resumes_the_tool_round_trip_not_the_finished_turn(
    realcli_results: Results,
) -> None:
    """codex: each tool result (3 API types) resumes its paused thread (a hit); a finished
    turn is not kept, so the session's second turn is a miss (``not_parked``) and runs on a
    fresh thread with the history injected (what the model saw: the session test)."""
    stats = realcli_results.stages["codex"].stats
    tool_rounds = sum(1 for _, scenario in CELLS["codex"] if scenario == "tool_loop")
    assert stats["resume_hits"] == tool_rounds, brief_stats(stats)
    assert stats["resume_misses"] == 1, brief_stats(stats)
    assert stats["resume_miss_reasons"] == {"not_parked": 1}, brief_stats(stats)


def test_no_process_left_and_servers_settled(realcli_results: Results) -> None:
    """No OpenClaw run leaves a process in its group; each server settles clean."""
    for stage in realcli_results.stages.values():
        leftovers = {
            (cell.api, cell.scenario): run.leftovers
            for cell in stage.cells.values()
            for run in cell.runs
            if run.leftovers
        }
        assert not leftovers, stage.backend
        assert stage.clean_error is None, (stage.backend, stage.clean_error)
        stats = stage.stats
        assert stats["crashes"] == 0 and stats["timeouts"] == 0, brief_stats(stats)
        assert stats["rejected"] == 0, brief_stats(stats)
