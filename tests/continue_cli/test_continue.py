"""The real Continue CLI (``cn``, pinned, ``scripts/install-continue.sh``) against clibridge on
the fake claude.

The whole server runs in-process (:func:`tests.e2e.conftest.open_e2e_server`); a recording
proxy sits between each ``cn`` and the server. ``cn -p --config config.yaml PROMPT`` runs as a
user runs it (docs/clients.md, "Continue") with both providers Continue has for clibridge's
dialects (``openai``: Chat Completions, ``anthropic``: Messages): a plain prompt, and a tool
loop in which ``cn`` runs its own ``Read`` tool (:mod:`tests.continue_cli.cases`). The module
runs every case once (:func:`continue_matrix`, 4 runs, 2 at a time, ~10 s).
"""

from __future__ import annotations

import json

import pytest
import trio

from .cases import CASES, PLAIN_REPLY, Case, Matrix, run_matrix
from .harness import NOTE_CONTENT, PROVIDER_PATHS, PROVIDERS, ContinueInstall

pytestmark = [pytest.mark.continue_cli, pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def continue_matrix(
    continue_install: ContinueInstall, tmp_path_factory: pytest.TempPathFactory
) -> Matrix:
    """Every case, run once for the module (see the module docstring)."""
    # Why trio.run in a sync fixture: pytest-trio's async fixtures are per test
    root = tmp_path_factory.mktemp("continue")
    matrix = trio.run(run_matrix, continue_install, root)
    print(f"Continue matrix: {matrix.seconds:.1f} s")  # shown with -rP
    for name, result in sorted(matrix.results.items()):
        print(f"  {name}: {result.run.seconds:.1f} s")
    return matrix


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_cn_answers(continue_matrix: Matrix, case: Case) -> None:
    """``cn`` exits 0 and prints the model's answer; nothing left behind; nothing but
    clibridge contacted, besides its version check (refused)."""
    result = continue_matrix.results[case.name]
    run = result.run
    assert run.returncode == 0, result.describe()
    assert run.unexpected_network == (), result.describe()
    assert not run.leftovers, result.describe()
    if case.scenario == "plain":
        assert run.stdout.strip() == PLAIN_REPLY, result.describe()
    else:
        # the fake echoes the tool result it got: the file's content reached the model
        assert NOTE_CONTENT in run.stdout, result.describe()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_cn_requests(continue_matrix: Matrix, case: Case) -> None:
    """One request per model round on the provider's API, streamed, with ``cn``'s tools; the
    tool loop's second request carries ``Read``'s result."""
    result = continue_matrix.results[case.name]
    bodies = result.bodies()
    assert len(bodies) == (1 if case.scenario == "plain" else 2), result.describe()
    for exchange in result.exchanges:
        assert (exchange.method, exchange.path, exchange.status) == (
            "POST",
            PROVIDER_PATHS[case.provider],
            200,
        ), result.describe()
    for body in bodies:
        assert body["model"] == PROVIDERS[case.provider]
        assert body["stream"] is True
        names = [t.get("name") or t["function"]["name"] for t in body["tools"]]
        assert "Read" in names, names
    if case.scenario == "tool_loop":
        result_message = json.dumps(bodies[1]["messages"][-1])
        assert NOTE_CONTENT in result_message, result_message


def test_tool_loops_continue_the_parked_worker(continue_matrix: Matrix) -> None:
    """Each tool result resumes the worker that paused on the call (one hit per tool loop),
    and the server is clean afterwards."""
    assert continue_matrix.clean_error is None, continue_matrix.clean_error
    stats = continue_matrix.stats
    loops = sum(case.scenario == "tool_loop" for case in CASES)
    assert stats["served"] == len(CASES) + loops, stats
    assert stats["resume_hits"] == loops, stats
    assert (stats["rejected"], stats["crashes"], stats["timeouts"]) == (0, 0, 0), stats
