"""The pinned real interactive claude (2.1.197) as a TUI worker, under tmux, against the stub.

Worker-level tests build a :class:`~clibridge._backends.tui.worker.TuiWorker` on the real
claude set up against the loopback model stub (``real_claude``: a seeded HOME, the stub's
URL and key); the last test runs ``serve --tui`` as a whole with the official SDK. The stub
records every upstream request, so the tests assert what the model actually received.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from pathlib import Path

import attrs
import openai
import pytest
import trio

from clibridge._backends.claude import tools_key
from clibridge._backends.tui.home import TuiLaunch, tui_dir
from clibridge._backends.tui.worker import SpawnSetup, TuiWorker, _tmux_env
from clibridge._config import ClaudeConfig, PoolConfig
from clibridge._errors import LoginExpired, TurnTimeout, UpstreamRateLimited
from clibridge._events import (
    Event,
    Finished,
    FinishReason,
    Message,
    Request,
    TextDelta,
    TextPart,
    ToolCallStart,
    ToolResultPart,
    ToolSpec,
)
from clibridge._worker import Binding
from clibridge.testing.model_stub import ModelStub, RecordedRequest, directive
from clibridge.testing.realcli import ClaudeSetup
from tests._aio import agen
from tests._procs import wait_gone
from tests.e2e.conftest import (
    FAST_POOL,
    MODEL,
    REAL_PASS_ENV,
    open_e2e_server,
    real_claude_env,
)

pytestmark = [
    pytest.mark.realcli,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
]

SYSTEM = "You are TUI-SYSTEM, answering briefly."
POOL = PoolConfig(ready_timeout=40, turn_timeout=10, stream_idle_timeout=40, interrupt_grace=5)
BOUND = 60


@asynccontextmanager
async def tui_worker(
    setup: ClaudeSetup, tmp: Path, system: str = SYSTEM
) -> AsyncIterator[TuiWorker]:
    launch = TuiLaunch(
        command=setup.argv_prefix,
        env=_tmux_env(setup.env),
        home=setup.home,
        workdir=setup.cwd,
        directory=tui_dir(tmp / "state"),
        tmux=shutil.which("tmux") or "tmux",
    )
    worker = TuiWorker(1, ClaudeConfig(), POOL, launch, setup=SpawnSetup(system, setup.model))
    async with trio.open_nursery() as nursery:
        with trio.fail_after(BOUND):
            await nursery.start(worker.run)
            await worker.bind(Binding(system, (), setup.model))
        pane = worker.pid
        try:
            yield worker
        finally:
            nursery.cancel_scope.cancel()
    assert pane is not None
    await wait_gone({pane})
    assert not worker.socket.exists()


def request(text: str, model: str = MODEL) -> Request:
    return Request(model=model, messages=(Message("user", (TextPart(text),)),), system=SYSTEM)


async def run_turn(worker: TuiWorker, text: str) -> list[Event]:
    with trio.fail_after(BOUND):
        try:
            async with aclosing(agen(worker.turn(request(text)))) as events:
                return [e async for e in events]
        except TurnTimeout as exc:
            raise AssertionError(f"{exc}; the pane shows:\n{exc.detail}") from exc


def turn_calls(stub: ModelStub) -> list[RecordedRequest]:
    """The model calls of turns (not the CLI's session-title requests)."""
    return [r for r in stub.model_calls() if SYSTEM in r.system_text]


def billing_header(call: RecordedRequest) -> str:
    system = call.body.get("system") or []
    return str(system[0].get("text", "")) if system else ""


async def test_a_turn_reaches_the_stub_as_the_interactive_cli(
    real_claude: ClaudeSetup, model_stub: ModelStub, tmp_path: Path
) -> None:
    async with tui_worker(real_claude, tmp_path) as worker:
        events = await run_turn(
            worker,
            "say hi\n" + directive(text="Hi from the TUI!", input_tokens=21, output_tokens=5),
        )
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["Hi from the TUI!"]
    finished = events[-1]
    assert isinstance(finished, Finished)
    assert (finished.usage.input_tokens, finished.usage.output_tokens) == (21, 5)
    (call,) = turn_calls(model_stub)
    assert "cc_entrypoint=cli;" in billing_header(call), billing_header(call)
    assert SYSTEM in call.system_text
    assert call.body.get("tools") in (None, [])


async def test_clear_isolates_unrelated_conversations(
    real_claude: ClaudeSetup, model_stub: ModelStub, tmp_path: Path
) -> None:
    async with tui_worker(real_claude, tmp_path) as worker:
        await run_turn(worker, "the secret word is ALPHA-PELICAN")
        worker.reset_soon()  # the pool releases it idle: /clear in the background
        with trio.fail_after(BOUND):
            await worker.bind(Binding(SYSTEM, (), real_claude.model))
        await run_turn(worker, "what is the secret word?")
    first, second = turn_calls(model_stub)
    assert "ALPHA-PELICAN" in str(first.body["messages"])
    assert "ALPHA-PELICAN" not in str(second.body["messages"])
    assert "what is the secret word?" in second.newest_user_text


async def test_a_large_multiline_unicode_prompt_arrives_intact(
    real_claude: ClaudeSetup, model_stub: ModelStub, tmp_path: Path
) -> None:
    system = "SYSTEM-START\n" + ('Rules: be exact; «quotes» ‘single’ "double" ✓\n' * 500) + "END"
    assert len(system.encode()) > 26_000
    body = "\n".join(
        f'line {i}: "quoted" \'apos\' `code` $HOME \\n ünïcødé 🎉 <tag attr="x">&amp;</tag>'
        for i in range(400)
    )
    prompt = body + "\n\n    indented after a blank line\n" + directive(text="got it")
    async with tui_worker(real_claude, tmp_path, system=system) as worker:
        events = await run_turn(worker, prompt)
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["got it"]
    (call,) = [r for r in model_stub.model_calls() if "SYSTEM-START" in r.system_text]
    assert system in call.system_text
    assert prompt in call.newest_user_text


async def test_an_interrupt_stops_the_turn_and_the_pane_serves_on(
    real_claude: ClaudeSetup, model_stub: ModelStub, tmp_path: Path
) -> None:
    async with tui_worker(real_claude, tmp_path) as worker:
        with trio.fail_after(BOUND):
            async with aclosing(agen(worker.turn(request("hang please\n@stub:hang")))) as hang:
                async for _event in hang:
                    break  # TurnStarted: the CLI took the prompt; leave mid-turn
        # (the stub is not waited for: the CLI's session-title request got the same hanging
        # reply, and the CLI does not cancel that one)
        assert worker.healthy
        events = await run_turn(worker, "next\n" + directive(text="fine"))
        assert [e.text for e in events if isinstance(e, TextDelta)] == ["fine"]
    last = turn_calls(model_stub)[-1]
    # the interrupted prompt went back into the input box and was cleared, not merged into
    # the next one (it stays in the conversation as the earlier, interrupted message)
    final = last.body["messages"][-1]["content"]
    texts = (
        [b["text"] for b in final if b.get("type") == "text"]
        if isinstance(final, list)
        else [final]
    )
    assert texts[-1] == "next\n" + directive(text="fine")


@pytest.mark.parametrize(("preset", "error"), [("401", LoginExpired), ("429", UpstreamRateLimited)])
async def test_upstream_errors_fail_fast(
    real_claude: ClaudeSetup,
    model_stub: ModelStub,
    tmp_path: Path,
    preset: str,
    error: type[Exception],
) -> None:
    async with tui_worker(real_claude, tmp_path) as worker:
        started = trio.current_time()
        with pytest.raises(error):
            await run_turn(worker, f"trouble\n@stub:{preset}")
        # the CLI would retry for minutes; two attempts at most here
        assert trio.current_time() - started < 20
        assert worker.healthy
        # released after an error, the pool clears the pane (else the stub, which reads
        # directives from every user message since the last reply, would fail again)
        worker.reset_soon()
        with trio.fail_after(BOUND):
            await worker.bind(Binding(SYSTEM, (), real_claude.model))
        events = await run_turn(worker, "again\n" + directive(text="recovered"))
        assert [e.text for e in events if isinstance(e, TextDelta)] == ["recovered"]


async def test_serve_tui_with_the_sdk(
    claude_binary: Path, model_stub: ModelStub, tmp_path: Path
) -> None:
    async with (
        open_e2e_server(
            tmp_path,
            pool=attrs.evolve(FAST_POOL, workers=1, spares=0),
            claude={"pass_env": REAL_PASS_ENV, "tui": True},
            command=(str(claude_binary),),
            environ=real_claude_env(model_stub),
            fake=False,
        ) as server,
        openai.AsyncOpenAI(
            api_key="x", base_url=f"{server.base_url}/v1", max_retries=0, timeout=60
        ) as oai,
    ):
        completion = await oai.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "hi\n" + directive(text="served")}],
        )
    assert completion.choices[0].message.content == "served"
    calls = [r for r in model_stub.model_calls() if "hi\n@stub" in r.newest_user_text]
    assert calls and "cc_entrypoint=cli;" in billing_header(calls[-1])


async def test_a_client_tool_call_parks_the_turn_and_its_result_resumes_it(
    real_claude: ClaudeSetup, model_stub: ModelStub, tmp_path: Path
) -> None:
    tools = (
        ToolSpec(
            "lookup", "Look a word up", {"type": "object", "properties": {"q": {"type": "string"}}}
        ),
    )
    call_text = "use it\n" + directive(
        tool_calls=[{"name": "mcp__client__lookup", "input": {"q": "tmux"}}]
    )
    req = attrs.evolve(request(call_text), tools=tools)
    async with tui_worker(real_claude, tmp_path) as worker:
        with trio.fail_after(BOUND):
            await worker.bind(Binding(SYSTEM, tools_key(tools), real_claude.model))
            async with aclosing(agen(worker.turn(req))) as events:
                first = [e async for e in events]
            assert worker.paused
            (start,) = [e for e in first if isinstance(e, ToolCallStart)]
            assert start.name == "lookup"
            assert isinstance(first[-1], Finished) and first[-1].reason == FinishReason.TOOL_USE
            assert worker.holds_paused_calls([start.id])
            result = {start.id: ToolResultPart(start.id, "a terminal multiplexer")}
            async with aclosing(agen(worker.turn(req, tool_results=result))) as events:
                second = [e async for e in events]
        assert not worker.paused
        assert [e.text for e in second if isinstance(e, TextDelta)] == [
            "Hello from the model stub."
        ]
    # the model got the tool, the call went through clibridge's MCP server, and the result
    # came back as a real tool_result
    first_call, second_call = turn_calls(model_stub)
    assert "mcp__client__lookup" in [t["name"] for t in first_call.body.get("tools") or []]
    blocks = second_call.body["messages"][-1]["content"]
    (tool_result,) = [b for b in blocks if b.get("type") == "tool_result"]
    assert tool_result["tool_use_id"] == start.id
    assert tool_result["content"][0]["text"] == "a terminal multiplexer"
