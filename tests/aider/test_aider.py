"""The real Aider client (pinned, ``scripts/install-aider.sh``) against clibridge on the fake
claude.

The whole server runs in-process (:func:`tests.e2e.conftest.open_e2e_server`: real worker
processes, process-table checks on exit); a recording proxy sits between each Aider and the
server, so the tests see exactly what Aider sent. Aider runs as a user runs it
(docs/clients.md, "Aider"): ``aider --message ... --yes-always --no-git ... hello.py`` in a
project directory, over both of its routes to a custom server (``openai/sonnet`` on Chat
Completions, ``anthropic/claude-sonnet-4-5`` on Messages; ``openai/gpt-5`` to the fake codex),
streamed and ``--no-stream``
(:mod:`tests.aider.cases`), a two-turn chat typed on stdin, and an edit in a git repository
(committed). The module runs every case once (:func:`aider_matrix`, 8 Aider runs, 2 at a
time, ~25 s) and the tests assert on the results.
"""

from __future__ import annotations

import json

import pytest
import trio

from .cases import CASES, SESSION_REPLIES, Case, Matrix, run_matrix
from .harness import (
    EDIT_AFTER,
    EDIT_BEFORE,
    EDIT_FILE,
    EDIT_PROSE,
    ROUTE_PATHS,
    ROUTES,
    AiderInstall,
    git,
)

pytestmark = [
    pytest.mark.aider,
    pytest.mark.slow,
    # Why: the first test pays for the whole matrix
    pytest.mark.timeout(360),
]


@pytest.fixture(scope="module")
def aider_matrix(aider_install: AiderInstall, tmp_path_factory: pytest.TempPathFactory) -> Matrix:
    """Every case, run once for the module (see the module docstring)."""
    # Why trio.run in a sync fixture: pytest-trio's async fixtures are per test, and the
    # matrix is too slow to run per test
    root = tmp_path_factory.mktemp("aider")
    matrix = trio.run(run_matrix, aider_install, root)
    print(f"Aider matrix: {matrix.seconds:.1f} s")  # shown with -rP
    for name, result in sorted(matrix.results.items()):
        print(f"  {name}: {result.run.seconds:.1f} s")
    return matrix


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_aider_turn(aider_matrix: Matrix, case: Case) -> None:
    """Aider exits 0, prints the model's text, applies the edit block (edit cases), leaves no
    process behind and contacts nothing but clibridge."""
    result = aider_matrix.results[case.name]
    run = result.run
    assert run.returncode == 0, result.describe()
    assert run.network == (), result.describe()
    assert not run.leftovers, result.describe()
    at = 0
    for reply in result.case.replies:  # each answer printed, in order
        at = run.stdout.find(reply, at)
        assert at >= 0, (reply, result.describe())
    assert run.stdout.count("Tokens:") == len(result.case.replies), result.describe()
    edited = result.project.edit_file.read_text()
    if result.case.scenario in ("edit", "git_edit"):
        assert f"Applied edit to {EDIT_FILE}" in run.stdout, result.describe()
        assert edited == EDIT_AFTER, result.describe()
    else:
        assert edited == EDIT_BEFORE, result.describe()
    # nothing Aider would call an error (a failed request, an unparsable answer)
    for marker in ("litellm.", "Error", "error:", "Retrying"):
        assert marker not in run.stdout + run.stderr, result.describe()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_aider_requests(aider_matrix: Matrix, case: Case) -> None:
    """One model request per turn, on the route's API, with the route's model and stream
    flag, answered 200; nothing else is asked of the server."""
    result = aider_matrix.results[case.name]
    exchanges = sorted(result.exchanges, key=lambda e: e.seq)
    if case.scenario == "git_edit":
        exchanges = exchanges[:-1]  # the commit message's: test_aider_commits_its_edit
    assert len(exchanges) == len(case.messages), result.describe()
    for exchange, typed in zip(exchanges, case.messages, strict=True):
        body = exchange.request
        assert (exchange.method, exchange.path, exchange.status) == (
            "POST",
            ROUTE_PATHS[case.route],
            200,
        ), result.describe()
        assert exchange.error is None, result.describe()
        assert body["model"] == ROUTES[case.route].split("/", 1)[1]
        assert bool(body.get("stream")) is case.stream
        if case.stream:
            answer = exchange.response_text or ""
            assert answer.count("data: ") > 3, answer  # streamed in deltas, not in one piece
        # what the user typed reached the model last, after Aider's own prompt and the file
        last = body["messages"][-1]
        assert last["role"] == "user"
        assert typed.splitlines()[0] in json.dumps(last)
        assert any(EDIT_FILE in json.dumps(m) for m in body["messages"][:-1])


def test_aider_session_sends_the_history(aider_matrix: Matrix) -> None:
    """The second turn of a chat carries the first: the user's words and the answer clibridge
    gave, in front of the new message."""
    (case,) = [c for c in CASES if c.scenario == "session"]
    first, second = (
        e.request for e in sorted(aider_matrix.results[case.name].exchanges, key=lambda e: e.seq)
    )
    assert len(second["messages"]) == len(first["messages"]) + 2
    earlier = second["messages"][len(first["messages"]) - 1 : -1]
    assert [m["role"] for m in earlier] == ["user", "assistant"]
    assert case.messages[0].splitlines()[0] in json.dumps(earlier[0])
    assert earlier[1]["content"] == SESSION_REPLIES[0]


def test_aider_commits_its_edit(aider_matrix: Matrix) -> None:
    """In a git repository Aider asks the model for a commit message (a second, unstreamed
    request quoting the chat and the diff) and commits the edit with it."""
    (case,) = [c for c in CASES if c.scenario == "git_edit"]
    result = aider_matrix.results[case.name]
    _, message = sorted(result.exchanges, key=lambda e: e.seq)
    body = message.request
    assert (message.path, message.status, message.error) == (ROUTE_PATHS["openai"], 200, None)
    assert "stream" not in body, body
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert "commit message" in body["messages"][0]["content"]
    assert "# Diffs:" in body["messages"][1]["content"]
    log = git(result.project, "log", "--format=%s", "--name-only", "-1")
    # the fake answered with the chat's scripted text (the commit request quotes it)
    assert log.splitlines()[0] == EDIT_PROSE, log
    assert EDIT_FILE in log.splitlines(), log
    assert git(result.project, "status", "--porcelain", EDIT_FILE) == ""


def test_server_clean_after_aider(aider_matrix: Matrix) -> None:
    """Every worker accounted for once Aider is done: each turn served, nothing in flight but
    parked conversations; the chat's second turn continued the parked worker."""
    assert aider_matrix.clean_error is None, aider_matrix.clean_error
    turns = sum(len(r.exchanges) for r in aider_matrix.results.values() if r.case.route != "codex")
    assert turns == sum(len(c.messages) for c in CASES if c.route != "codex") + 1  # + commit
    assert aider_matrix.stats["served"] == turns, aider_matrix.stats
    codex = aider_matrix.codex_stats
    assert (codex["served"], codex["crashes"], codex["timeouts"]) == (1, 0, 0), codex
    stats = aider_matrix.stats
    assert (stats["rejected"], stats["crashes"], stats["timeouts"]) == (0, 0, 0), stats
    # the chat's second turn continued the worker parked by its first (every request counts
    # as one with history: Aider's few-shot example turns precede the user's message)
    assert stats["resume_hits"] == 1, stats
    assert stats["resume_misses"] == sum(c.route != "codex" for c in CASES), stats
