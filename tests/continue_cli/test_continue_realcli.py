"""The real Continue CLI on the real claude, through clibridge, with the model stub upstream.

The whole server runs in-process on the pinned real claude (:func:`tests.e2e.conftest.
open_real_server`), pointed at a loopback :class:`~clibridge.testing.model_stub.ModelStub`.
Two ``cn -p`` runs, one after the other:

- ``openai`` provider, tool loop: an ``@stub`` line makes the model call ``cn``'s ``Read`` (an
  MCP tool of server "client" upstream of claude: ``mcp__client__Read``) on ``note.txt``;
  ``cn`` runs it and sends the content back; the stub then answers its default text;
- ``anthropic`` provider, plain: an ``@stub`` line scripts the answer.

Asserted: ``cn`` exits 0 and prints the model's final text; the file's content reached the
model as the result of its call; one upstream call per model round; the tool result resumed
the paused worker; the server is clean afterwards.
"""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import pytest
import trio

from clibridge.testing.model_stub import DEFAULT_TEXT, ModelStub
from clibridge.testing.model_stub import directive as stub_directive
from tests.e2e.conftest import FAST_POOL, open_real_server

from .harness import NOTE_CONTENT, NOTE_FILE, ContinueInstall, make_home, run_cn

pytestmark = [
    pytest.mark.continue_cli,
    pytest.mark.realcli,
    pytest.mark.slow,
    pytest.mark.timeout(240),
]

POOL = attrs.evolve(
    FAST_POOL, workers=3, spares=1, queue_timeout=60.0, turn_timeout=60.0, ready_timeout=60.0
)
ANTHROPIC_REPLY = "Hello from the stub, via clibridge and Continue."


async def test_cn_through_real_claude(
    continue_install: ContinueInstall, claude_binary: Path, model_stub: ModelStub, tmp_path: Path
) -> None:
    with trio.fail_after(200):
        async with open_real_server(
            tmp_path / "server", claude_binary, model_stub, pool=POOL
        ) as server:
            # openai provider, a tool loop through cn's own Read tool
            home = make_home(tmp_path / "openai", "openai", server.base_url)
            call = {"name": "mcp__client__Read", "input": {"filepath": NOTE_FILE}}
            prompt = f"Read {NOTE_FILE} and tell me what it says.\n"
            run = await run_cn(continue_install, home, prompt + stub_directive(tool_calls=[call]))
            assert run.returncode == 0, run.describe()
            assert run.unexpected_network == (), run.describe()
            assert not run.leftovers, run.describe()
            assert run.stdout.strip() == DEFAULT_TEXT, run.describe()
            first, second = model_stub.model_calls()
            assert NOTE_CONTENT not in json.dumps(first.body)
            assert NOTE_CONTENT in json.dumps(second.body["messages"][-1])
            stats = await server.stats()
            assert stats["resume_hits"] == 1, stats

            # anthropic provider, a plain prompt
            home = make_home(tmp_path / "anthropic", "anthropic", server.base_url)
            prompt = f"say hi\n{stub_directive(text=ANTHROPIC_REPLY, chunk_chars=6)}"
            run = await run_cn(continue_install, home, prompt)
            assert run.returncode == 0, run.describe()
            assert run.unexpected_network == (), run.describe()
            assert run.stdout.strip() == ANTHROPIC_REPLY, run.describe()
            assert len(model_stub.model_calls()) == 3
            stats = await server.assert_clean()
    assert stats["served"] == 3, stats
