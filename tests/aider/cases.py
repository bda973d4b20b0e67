"""The Aider runs the fast tests make, and the sample recordings keep: one server on the fake
claude, a recording proxy per case between Aider and the server.

A case is a route (``openai``: Chat Completions, ``anthropic``: Messages, ``codex``: Chat
Completions to a model clibridge serves with codex), streamed (Aider's default) or
``--no-stream``, and a scenario:

- ``edit``: "change the greeting"; a ``@fake`` line scripts the model's answer, a sentence and
  one SEARCH/REPLACE block on ``hello.py`` (:func:`tests.aider.harness.edit_reply`), streamed
  in 7-character deltas; Aider must print the sentence and apply the block to the file;
- ``plain``: "say hi", answered with a sentence and no edit; the file stays as it was;
- ``session``: a chat of two turns typed on Aider's stdin ("My name is Ada...", then "What is
  my name?"), each answered by its ``@fake`` line; the second request carries the first turn;
- ``git_edit``: ``edit`` in a git repository, without ``--no-git``: Aider commits the edit
  after asking the model for a commit message in a second request (which quotes the chat,
  ``@fake`` line included, so the fake answers it with the same text: its first line becomes
  the commit's subject).
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

from clibridge._supervisor import FAKE_CODEX_COMMAND
from clibridge.testing.recording_proxy import Exchange
from clibridge.testing.scenario import directive
from tests._real_clients import case_proxy, describe_case, exchanges_of, run_cases, settle
from tests.e2e.conftest import FAST_POOL, open_e2e_server

from .harness import (
    EDIT_PROSE,
    AiderInstall,
    AiderProject,
    AiderRun,
    edit_reply,
    make_project,
    run_aider,
)

PLAIN_REPLY = "Hi! I am clibridge's fake model, ready to help with hello.py."
SESSION_TURNS = ("My name is Ada. Please remember it.", "What is my name?")
SESSION_REPLIES = ("Nice to meet you, Ada.", "Your name is Ada.")


@attrs.frozen
class Case:
    route: str
    stream: bool
    scenario: str

    @property
    def name(self) -> str:
        return f"{self.route}_{'stream' if self.stream else 'nostream'}_{self.scenario}"

    @property
    def messages(self) -> tuple[str, ...]:
        """What the user types: one ``--message``, or the turns of a chat (``session``)."""
        # a directive is a line of its own: the fake reads it only from a whole line
        if self.scenario in ("edit", "git_edit"):
            script = directive(echo=False, reply=edit_reply(), chunk_chars=7)
            return (f"Change the greeting to hello, world.\n{script}",)
        if self.scenario == "session":
            return tuple(
                f"{turn}\n{directive(echo=False, reply=reply, chunk_chars=5)}"
                for turn, reply in zip(SESSION_TURNS, SESSION_REPLIES, strict=True)
            )
        return (f"say hi\n{directive(echo=False, reply=PLAIN_REPLY, chunk_chars=5)}",)

    @property
    def replies(self) -> tuple[str, ...]:
        """What Aider must print of the model's answers, in order."""
        if self.scenario in ("edit", "git_edit"):
            return (EDIT_PROSE,)
        return SESSION_REPLIES if self.scenario == "session" else (PLAIN_REPLY,)


CASES = (
    Case("openai", True, "edit"),
    Case("openai", False, "edit"),
    Case("anthropic", True, "edit"),
    Case("anthropic", False, "edit"),
    Case("openai", True, "plain"),
    Case("openai", True, "session"),
    Case("openai", True, "git_edit"),
    Case("codex", True, "edit"),
)
#: room for every conversation a case leaves parked, and a spare
POOL = attrs.evolve(
    FAST_POOL, workers=len(CASES) + 1, spares=1, max_queue=8, queue_timeout=60.0, turn_timeout=60.0
)
#: Aider processes at once (each needs ~3 s of CPU to start)
CONCURRENT_RUNS = 2
RUN_DEADLINE = 90.0
MATRIX_DEADLINE = 300.0


@attrs.frozen
class CaseResult:
    case: Case
    project: AiderProject
    run: AiderRun
    exchanges: tuple[Exchange, ...]

    def describe(self) -> str:
        return describe_case(self.case.name, self.exchanges, self.run.describe())


@attrs.frozen
class Matrix:
    results: Mapping[str, CaseResult]
    #: the claude pool's /v1/stats once the pool settled after all runs
    stats: Mapping[str, Any]
    #: the codex pool's
    codex_stats: Mapping[str, Any]
    #: why the server was not clean (parked conversations aside), or None
    clean_error: str | None
    seconds: float


async def _run_case(
    install: AiderInstall,
    base_url: str,
    root: Path,
    record_dir: Path | None,
    case: Case,
    limiter: trio.CapacityLimiter,
) -> CaseResult:
    async with case_proxy(base_url, case.name, record_dir) as proxy:
        project = make_project(root / case.name, with_git=case.scenario == "git_edit")
        async with limiter:
            run = await run_aider(
                install,
                project,
                case.route,
                proxy.base_url,
                case.messages[0] if len(case.messages) == 1 else case.messages,
                stream=case.stream,
                deadline=RUN_DEADLINE,
            )
        return CaseResult(case, project, run, await exchanges_of(proxy))


async def run_matrix(install: AiderInstall, root: Path, record_dir: Path | None = None) -> Matrix:
    """Every case of :data:`CASES` on one server; with ``record_dir`` each case's exchanges
    are also written there as ``<case>.jsonl``."""
    started = time.monotonic()
    with trio.fail_after(MATRIX_DEADLINE):
        # the fake codex next to the fake claude, for the codex route
        async with open_e2e_server(root / "server", pool=POOL, codex=FAKE_CODEX_COMMAND) as server:
            run_case = partial(_run_case, install, server.base_url, root, record_dir)
            results = await run_cases(CASES, run_case, CONCURRENT_RUNS)
            stats, clean_error = await settle(server)
            codex_stats = await server.stats("codex")
    return Matrix(
        results={case.name: result for case, result in results.items()},
        stats=stats,
        codex_stats=codex_stats,
        clean_error=clean_error,
        seconds=time.monotonic() - started,
    )


def summary(matrix: Matrix) -> dict[str, Any]:
    """What the recording's ``summary.json`` keeps: per case Aider's exit status, run time and
    output, the requests' paths and flags; the server's stats after all runs."""
    out: dict[str, Any] = {}
    for name, result in sorted(matrix.results.items()):
        requests = [
            {
                "path": e.path,
                "status": e.status,
                "stream": (e.request or {}).get("stream"),
                "stream_options": (e.request or {}).get("stream_options"),
                "model": (e.request or {}).get("model"),
                "roles": [m.get("role") for m in (e.request or {}).get("messages", [])],
                "system": "system" in (e.request or {}),
                "keys": sorted(e.request or {}),
            }
            for e in sorted(result.exchanges, key=lambda e: e.seq)
        ]
        out[name] = {
            "returncode": result.run.returncode,
            "seconds": round(result.run.seconds, 1),
            "stdout": result.run.stdout,
            "edited_file": result.project.edit_file.read_text(),
            "requests": requests,
        }
    stats = {
        backend: {k: v for k, v in pool.items() if k != "workers"}
        for backend, pool in (("claude", matrix.stats), ("codex", matrix.codex_stats))
    }
    return {"cases": out, "stats": json.loads(json.dumps(stats, default=str))}
