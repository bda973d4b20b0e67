"""A replayed history never replays a directive: tool rounds on the fallback path.

Regression: when clibridge cannot continue a conversation on a parked worker it replays the
history quoted inside the newest user message (``_backends/claude/render.py``); a ``@stub``
tool directive of the first turn was read again from that quote, the model called the tool
again, the client answered, the next fallback replay called it again (~190 workers spawned in
2 minutes). Each test forces the fallback path on every round (``park_ttl`` ends each parked
worker before the next request: ``resume_hits`` stays 0) and asserts one model turn per round
and no repeated tool call, on the fake claude and on the real claude behind the model stub.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import openai
import pytest
import trio

from clibridge._backends.claude.render import HISTORY_CLOSE, LATEST_HEADER, TOOL_RESULTS_HEADER
from clibridge.testing import model_stub as stub_module
from clibridge.testing.model_stub import DEFAULT_TEXT, ModelStub
from clibridge.testing.scenario import DEFAULT_REPLY, directive
from tests.e2e.conftest import FAST_POOL, MODEL, E2EServer, open_e2e_server, open_real_server
from tests.tools import _loops

pytestmark = [
    # Why: openai's AsyncStream leaves its own SSE generators unclosed at ``[DONE]``.
    pytest.mark.filterwarnings("ignore:Async generator:ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

#: every parked worker is gone well before the next round: each round is a fresh worker
POOL = attrs.evolve(FAST_POOL, park_ttl=0.3, interrupt_grace=0.5)
FOLLOW_UP = "Thanks. And tomorrow?"
TOOL = [{"name": "get_weather", "arguments": {"city": "Tokyo"}}]


def openai_client(server: E2EServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key="x", max_retries=0)


async def three_rounds(server: E2EServer, first_prompt: str) -> list[tuple[Any, str, Any]]:
    """Tool call; the result (fallback); a follow-up question (fallback). Each request
    waits until the previous round's parked worker was reclaimed by ``park_ttl``."""
    rounds = []
    async with openai_client(server) as client:
        convo: list[Any] = [{"role": "user", "content": first_prompt}]
        rounds.append(await _loops.chat_round(client, convo, stream=True, model=MODEL))
        await server.wait_stats(lambda s: s["reclaimed"] == 1 and s["parked"] == 0)
        _loops.chat_results(convo, rounds[0][0])
        rounds.append(await _loops.chat_round(client, convo, stream=True, model=MODEL))
        await server.wait_stats(lambda s: s["reclaimed"] == 2 and s["parked"] == 0)
        convo.append({"role": "user", "content": FOLLOW_UP})
        rounds.append(await _loops.chat_round(client, convo, stream=False, model=MODEL))
    stats = await server.stats()
    assert stats["resume_hits"] == 0, stats  # every round went the fallback way
    return rounds


def user_texts(server: E2EServer) -> list[str]:
    """The ``user`` lines the fake claude got (``/clear`` left out), as text."""
    texts = []
    for line in server.stdin_lines():
        if isinstance(line, dict) and line.get("type") == "user":
            content = line["message"]["content"]
            text = (
                content if isinstance(content, str) else "".join(b.get("text", "") for b in content)
            )
            if text != "/clear":
                texts.append(text)
    return texts


async def test_fake_claude_does_not_repeat_a_tool_directive_from_the_replayed_history(
    tmp_path: Path,
) -> None:
    """Regression (the replay loop): the ``@fake`` tool directive of turn 1 is quoted in
    the fallback replays of rounds 2 and 3 and must not fire there."""
    prompt = directive(tool_calls=TOOL) + "\nweather in Tokyo?"
    with trio.fail_after(60):
        async with open_e2e_server(tmp_path, pool=POOL) as server:
            (calls, _, finish), second, third = await three_rounds(server, prompt)
            assert finish == "tool_calls" and [n for _, n, _ in calls] == ["get_weather"]
            assert second == ([], DEFAULT_REPLY, "stop")
            assert third == ([], DEFAULT_REPLY, "stop")
            texts = user_texts(server)
            await server.assert_clean()
    # one user turn per round; rounds 2 and 3 carry the quote, directive and all
    assert len(texts) == 3
    assert all("@fake" in t.split(HISTORY_CLOSE)[0] for t in texts[1:])
    assert texts[1].endswith("sunny in Tokyo</tool_result>")
    assert f"{HISTORY_CLOSE}\n\n{TOOL_RESULTS_HEADER}\n" in texts[1]
    assert texts[2].endswith(f"{HISTORY_CLOSE}\n\n{LATEST_HEADER}\n{FOLLOW_UP}")


def _content_text(message: dict[str, Any]) -> str:
    content = message["content"]
    return content if isinstance(content, str) else "".join(b.get("text", "") for b in content)


@pytest.mark.realcli
async def test_real_claude_does_not_repeat_a_stub_tool_directive_from_the_replayed_history(
    tmp_path: Path, claude_binary: Path, model_stub: ModelStub
) -> None:
    """Regression (the replay loop, as it happened): the real claude on fresh workers, the
    model stub scripted only by the ``@stub`` line of the first user message. Exactly one
    model call per round, one tool call in all, and what the model saw on the fallback
    rounds is the history framed as past context with the new input last."""
    call = stub_module.directive(
        tool_calls=[{"name": "mcp__client__get_weather", "input": {"city": "Tokyo"}}]
    )
    with trio.fail_after(90):
        async with open_real_server(tmp_path, claude_binary, model_stub, pool=POOL) as server:
            (calls, _, finish), second, third = await three_rounds(
                server, call + "\nweather in Tokyo?"
            )
            assert finish == "tool_calls"
            assert [(n, a) for _, n, a in calls] == [("get_weather", {"city": "Tokyo"})]
            assert second == ([], DEFAULT_TEXT, "stop")
            assert third == ([], DEFAULT_TEXT, "stop")
    upstream = model_stub.model_calls()
    assert len(upstream) == 3, [r.last_user_text[-200:] for r in upstream]
    assert [len(r.reply.tool_calls) for r in upstream if r.reply is not None] == [1, 0, 0]
    # fresh workers: one user message holding the quoted history, the new input last
    for request, tail in [
        (upstream[1], f"{TOOL_RESULTS_HEADER}\n"),
        (upstream[2], f"{LATEST_HEADER}\n{FOLLOW_UP}"),
    ]:
        assert [m["role"] for m in request.body["messages"]] == ["user"]
        text = _content_text(request.body["messages"][0])
        quoted, new = text.rsplit(HISTORY_CLOSE, 1)
        assert "@stub" in quoted and "already happened" in quoted
        assert "@stub" not in new and tail in new
    assert _content_text(upstream[2].body["messages"][0]).endswith(FOLLOW_UP)
