"""Client tool calling end to end on either fake: official SDKs -> server -> fake CLI.

The tool loop both backends share runs on each fake (parametrized by backend; what differs
is data in :data:`LOOPS`): ``@fake`` lines make the fake model call ``get_weather``, the
client sends the results back its own way, and the continuation must go to the *paused*
turn of the parked worker (claude: the MCP ``tools/call`` answered in the same CLI turn;
codex: the ``item/tool/call`` server requests answered on the same thread), never as a
replayed history. Each backend's own machinery is in ``test_claude_tools.py`` and
``test_codex_tools.py``. Leaving the server context drains it and proves no process is
left (``open_e2e_server``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from pathlib import Path
from typing import Any

import attrs
import openai
import pytest
import trio

from clibridge.testing.scenario import directive
from tests.e2e.conftest import BOUND, MODEL, E2EServer, open_codex_server, open_e2e_server
from tests.tools import _loops

pytestmark = [
    pytest.mark.filterwarnings("ignore:The model.*is deprecated:DeprecationWarning"),
    # Why: openai's AsyncStream leaves its own SSE generators unclosed at ``[DONE]``.
    pytest.mark.filterwarnings("ignore:Async generator:ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

ID = re.compile(r"call[0-9a-f]{24}")
ONE = [{"name": "get_weather", "arguments": {"city": "Tokyo"}}]
TWO = [*ONE, {"name": "get_weather", "arguments": {"city": "Paris"}}]


def _claude_resumed(server: E2EServer, calls: list[Any], text: str) -> None:
    # the model got each result for its own call, in its turn (echo_tool_results)
    assert text.startswith("Done."), text
    for c in calls:
        assert f"] sunny in {c['arguments']['city']}" in text
    # the results went to the paused CLI turn, not as a new user message
    users = [m for m in server.stdin_lines() if isinstance(m, dict) and m.get("type") == "user"]
    assert len(users) == 1, users


def codex_tool_replies(server: E2EServer) -> list[dict[str, Any]]:
    """Our answers to the fake codex's ``item/tool/call`` requests (DynamicToolCallResponse)."""
    return [
        f["stdin"]["result"]
        for f in server.facts()
        if isinstance(f.get("stdin"), dict) and "contentItems" in (f["stdin"].get("result") or {})
    ]


def _codex_resumed(server: E2EServer, calls: list[Any], text: str) -> None:
    assert text == "Done."
    # one thread and one turn: the results answered the paused item/tool/call requests
    assert len(server.sent("thread/start")) == len(server.sent("turn/start")) == 1
    start = server.sent("thread/start")[0]["params"]
    assert [t["name"] for t in start["dynamicTools"]] == ["get_weather"]
    assert codex_tool_replies(server) == [
        {
            "contentItems": [{"type": "inputText", "text": _loops.weather(c["arguments"]["city"])}],
            "success": True,
        }
        for c in calls
    ]


def _codex_tools_hidden(server: E2EServer) -> None:
    assert all("dynamicTools" not in s["params"] for s in server.sent("thread/start"))


@attrs.frozen
class Loop:
    """What differs between the fake CLIs in the tool loop both backends share."""

    backend: str
    model: str
    open: Callable[[Path], AbstractAsyncContextManager[E2EServer]]
    #: directive fields beyond the calls and the answer ("Done.")
    extra: dict[str, Any]
    #: proof that the results reached the paused turn (beyond the answer itself)
    resumed: Callable[[E2EServer, list[Any], str], None]
    #: proof that ``tool_choice: none`` kept the tools from the CLI (None: only the answer)
    tools_hidden: Callable[[E2EServer], None] | None
    #: conversations left parked after the answer (claude keeps its finished turn for a
    #: follow-up; a codex thread ends with its turn)
    parked_after: int


LOOPS = {
    "claude": Loop(
        "claude",
        MODEL,
        lambda tmp: open_e2e_server(tmp),
        {"echo_tool_results": True},
        _claude_resumed,
        None,
        parked_after=1,
    ),
    "codex": Loop(
        "codex",
        "gpt-5.5",
        lambda tmp: open_codex_server(tmp),
        {},
        _codex_resumed,
        _codex_tools_hidden,
        parked_after=0,
    ),
}


@pytest.fixture(params=list(LOOPS))
def cli(request: pytest.FixtureRequest) -> Loop:
    loop: Loop = LOOPS[request.param]
    return loop


def prompt(cli: Loop, calls: list[Any]) -> str:
    return directive(tool_calls=calls, reply="Done.", **cli.extra) + "\nweather?"


@pytest.mark.parametrize("dialect", ["chat", "responses", "messages"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("calls", [ONE, TWO], ids=["single", "parallel"])
async def test_tool_loop_resumes_the_paused_turn(
    tmp_path: Path, cli: Loop, dialect: str, stream: bool, calls: list[Any]
) -> None:
    with trio.fail_after(BOUND):
        async with cli.open(tmp_path) as server:
            first, text, _ = await _loops.tool_loop(
                server.base_url, dialect, stream=stream, prompt=prompt(cli, calls), model=cli.model
            )
            assert [(n, a) for _, n, a in first] == [("get_weather", c["arguments"]) for c in calls]
            assert all(ID.fullmatch(cid) for cid, _, _ in first)
            cli.resumed(server, calls, text)
            stats = await server.stats()
            assert stats["resume_hits"] == 1 and stats["resume_misses"] == 0
            assert stats["parked"] == stats["in_flight"] == cli.parked_after, stats


async def test_rewritten_ids_still_match(tmp_path: Path, cli: Loop) -> None:
    """OpenClaw replays ``call_1`` as ``call1``: ids without separators, case changed."""

    def rewrite(cid: str) -> str:
        return "call_" + cid.removeprefix("call").upper()

    with trio.fail_after(BOUND):
        async with cli.open(tmp_path) as server:
            _, text, _ = await _loops.tool_loop(
                server.base_url,
                "chat",
                stream=False,
                prompt=prompt(cli, TWO),
                model=cli.model,
                rewrite=rewrite,
            )
            cli.resumed(server, TWO, text)
            assert (await server.stats())["resume_hits"] == 1


async def test_tool_choice_and_bad_schemas_are_clear_400s(tmp_path: Path, cli: Loop) -> None:
    with trio.fail_after(BOUND):
        async with cli.open(tmp_path) as server, AsyncExitStack() as stack:
            client = await stack.enter_async_context(_loops.openai_client(server.base_url))
            model = cli.model
            msgs: list[Any] = [{"role": "user", "content": "x"}]
            tools = _loops.CHAT_TOOLS
            with pytest.raises(openai.BadRequestError, match="tool_choice"):
                await client.chat.completions.create(
                    model=model, messages=msgs, tools=tools, tool_choice="required"
                )
            named: Any = {"type": "function", "function": {"name": "get_weather"}}
            with pytest.raises(openai.BadRequestError, match="get_weather"):
                await client.chat.completions.create(
                    model=model, messages=msgs, tools=tools, tool_choice=named
                )
            bad = [
                {"type": "function", "function": {"name": "bad name!", "parameters": _loops.SCHEMA}}
            ]
            with pytest.raises(openai.BadRequestError, match="bad name!"):
                await client.chat.completions.create(model=model, messages=msgs, tools=bad)  # type: ignore[arg-type]
            arr = [{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}]
            with pytest.raises(openai.BadRequestError, match="'f'"):
                await client.chat.completions.create(model=model, messages=msgs, tools=arr)  # type: ignore[arg-type]
            # none: the tools are not exposed, the model answers in text
            msgs = [{"role": "user", "content": directive(tool_calls=ONE, reply="text") + "\nw"}]
            done = await client.chat.completions.create(
                model=model, messages=msgs, tools=tools, tool_choice="none"
            )
            choice = done.choices[0]
            assert choice.finish_reason == "stop" and not choice.message.tool_calls
            if cli.tools_hidden is not None:
                cli.tools_hidden(server)
