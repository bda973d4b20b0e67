"""The real Aider client on the real claude, through clibridge, with the model stub upstream.

The whole server runs in-process on the pinned real claude (:func:`tests.e2e.conftest.
open_real_server`), pointed at a loopback :class:`~clibridge.testing.model_stub.ModelStub`.
Aider asks for an edit over both routes, one after the other: ``openai/sonnet`` streamed
(Aider's default) and ``anthropic/claude-sonnet-4-5`` with ``--no-stream``; then a two-turn
chat on stdin, whose second turn must continue the parked worker. An ``@stub`` line in
Aider's message makes the model answer a sentence and a SEARCH/REPLACE block; the real claude
relays it, clibridge turns it into the route's answer, Aider applies it to the file.

A second test runs the codex route (``openai/gpt-5``) on the pinned real codex the same way.

Asserted: Aider exits 0, prints the model's sentence, the file is edited, nothing but loopback
was contacted; the stub saw one upstream call per Aider turn, carrying Aider's file and
message; the chat's second turn reached the model as a native continuation (no replayed
transcript); the server is clean afterwards.
"""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import pytest
import trio

from clibridge.testing.model_stub import ModelStub
from clibridge.testing.model_stub import directive as stub_directive
from clibridge.testing.realcli import CodexSetup
from tests.e2e.conftest import CODEX_POOL, FAST_POOL, open_codex_server, open_real_server

from .cases import SESSION_REPLIES, SESSION_TURNS
from .harness import (
    EDIT_AFTER,
    EDIT_FILE,
    EDIT_PROSE,
    AiderInstall,
    edit_reply,
    make_project,
    run_aider,
)

pytestmark = [pytest.mark.aider, pytest.mark.realcli, pytest.mark.slow, pytest.mark.timeout(240)]

#: each Aider run is a new conversation: room for all three parked, and a spare
POOL = attrs.evolve(
    FAST_POOL, workers=4, spares=1, queue_timeout=60.0, turn_timeout=60.0, ready_timeout=60.0
)
#: (route, streamed) in the order they run
RUNS = (("openai", True), ("anthropic", False))


async def test_aider_edits_through_real_claude(
    aider_install: AiderInstall, claude_binary: Path, model_stub: ModelStub, tmp_path: Path
) -> None:
    with trio.fail_after(200):
        async with open_real_server(
            tmp_path / "server", claude_binary, model_stub, pool=POOL
        ) as server:
            for route, stream in RUNS:
                project = make_project(tmp_path / route)
                script = stub_directive(text=edit_reply(), chunk_chars=9)
                message = f"Change the greeting to hello, world ({route}).\n{script}"
                calls_before = len(model_stub.model_calls())
                run = await run_aider(
                    aider_install, project, route, server.base_url, message, stream=stream
                )
                assert run.returncode == 0, run.describe()
                assert run.network == (), run.describe()
                assert not run.leftovers, run.describe()
                assert EDIT_PROSE in run.stdout, run.describe()
                assert f"Applied edit to {EDIT_FILE}" in run.stdout, run.describe()
                assert project.edit_file.read_text() == EDIT_AFTER, run.describe()
                # one upstream model call per Aider turn, carrying Aider's file and message
                calls = model_stub.model_calls()[calls_before:]
                assert len(calls) == 1, [c.path for c in calls]
                upstream = json.dumps(calls[0].body)
                assert f"hello, world ({route})" in upstream
                assert "def greet():" in upstream
            # a two-turn chat: the second turn continues the worker parked by the first
            project = make_project(tmp_path / "chat")
            chat = [
                f"{turn}\n{stub_directive(text=reply)}"
                for turn, reply in zip(SESSION_TURNS, SESSION_REPLIES, strict=True)
            ]
            calls_before = len(model_stub.model_calls())
            run = await run_aider(aider_install, project, "openai", server.base_url, chat)
            assert run.returncode == 0, run.describe()
            assert run.network == (), run.describe()
            for reply in SESSION_REPLIES:
                assert reply in run.stdout, run.describe()
            _, second = model_stub.model_calls()[calls_before:]
            # the worker holds the chat as native turns: upstream, the first answer is an
            # assistant message and the new turn a user message of its own, no replayed
            # transcript (the first request's fresh worker got Aider's few-shot examples as
            # one, inside the first user message)
            *_, answer, question = second.body["messages"]
            assert answer["role"] == "assistant"
            assert SESSION_REPLIES[0] in json.dumps(answer)
            assert question["role"] == "user"
            assert SESSION_TURNS[1] in json.dumps(question)
            assert "<conversation_history>" not in json.dumps(question)
            stats = await server.assert_clean()
    assert stats["served"] == len(RUNS) + 2, stats
    assert stats["resume_hits"] == 1, stats


#: the real codex behind clibridge: generous timeouts for a CLI on a loaded machine
REAL_CODEX_POOL = attrs.evolve(
    CODEX_POOL, queue_timeout=60.0, turn_timeout=60.0, ready_timeout=60.0
)


async def test_aider_edits_through_real_codex(
    aider_install: AiderInstall, real_codex: CodexSetup, model_stub: ModelStub, tmp_path: Path
) -> None:
    """The codex route (``openai/gpt-5``) on the pinned real codex: the edit is applied."""
    with trio.fail_after(200):
        async with open_codex_server(
            tmp_path / "server", real=real_codex, pool=REAL_CODEX_POOL
        ) as server:
            project = make_project(tmp_path / "codex")
            script = stub_directive(text=edit_reply(), chunk_chars=9)
            message = f"Change the greeting to hello, world (codex).\n{script}"
            run = await run_aider(aider_install, project, "codex", server.base_url, message)
            assert run.returncode == 0, run.describe()
            assert run.network == (), run.describe()
            assert not run.leftovers, run.describe()
            assert EDIT_PROSE in run.stdout, run.describe()
            assert project.edit_file.read_text() == EDIT_AFTER, run.describe()
            (call,) = model_stub.model_calls()
            assert call.path.startswith("/v1/responses"), call.path
            assert "hello, world (codex)" in json.dumps(call.body)
            stats = await server.assert_clean()
    assert stats["served"] == 1, stats
