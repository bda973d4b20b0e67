"""CodexWorker on the real codex 0.169.0 against the loopback Responses stub."""

from __future__ import annotations

from contextlib import aclosing
from pathlib import Path

import pytest
import trio

from clibridge._backends import codex
from clibridge._backends.codex.worker import CodexWorker
from clibridge._config import CodexConfig, PoolConfig
from clibridge._errors import LoginExpired
from clibridge._events import Event, FinishReason, Message, Request, TextPart, collect
from clibridge._process import ChildSpec, live_group_members
from clibridge.testing.model_stub import ModelStub, directive
from clibridge.testing.realcli import CodexSetup

POOL = PoolConfig(workers=1, spares=0, ready_timeout=30, turn_timeout=30, interrupt_grace=3)


def _worker(setup: CodexSetup) -> CodexWorker:
    # the stub provider flags (setup.config_args) first, then clibridge's own overrides
    argv = codex.build_argv(setup.argv_prefix, overrides=setup.config_args[1::2])
    return CodexWorker(1, CodexConfig(), POOL, ChildSpec(argv, setup.env, setup.cwd))


async def _turn(worker: CodexWorker, request: Request) -> list[Event]:
    with trio.fail_after(30):
        async with aclosing(worker.turn(request)) as events:  # type: ignore[type-var]
            return [e async for e in events]


def _req(text: str, *history: Message, system: str = "") -> Request:
    return Request(
        model="gpt-stub", system=system, messages=(*history, Message("user", (TextPart(text),)))
    )


async def test_real_turn_usage_no_builtin_tools_faithful_history(
    real_codex: CodexSetup, model_stub: ModelStub, tmp_path: Path
) -> None:
    worker = _worker(real_codex)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(30):
            await nursery.start(worker.run)
        text = directive(text="real answer", input_tokens=11, output_tokens=7)
        done = collect(
            "gpt-stub",
            await _turn(
                worker,
                _req(
                    text,
                    Message("user", (TextPart("q1"),)),
                    Message("assistant", (TextPart("a1"),)),
                    system="You are terse.",
                ),
            ),
        )
        assert done.text == "real answer" and done.finish.reason is FinishReason.END_TURN
        assert done.finish.usage.total_input_tokens == 11 and done.finish.usage.output_tokens == 7
        body = model_stub.model_calls()[-1].body
        assert not body.get("tools")  # the model gets no built-in tools
        seen = [
            (item.get("role"), [c.get("text") for c in item.get("content", [])])
            for item in body["input"]
        ]
        assert seen == [
            ("developer", ["You are terse."]),
            ("user", ["q1"]),
            ("assistant", ["a1"]),
            ("user", [text]),
        ]
        nursery.cancel_scope.cancel()
    assert worker.pid is not None and live_group_members(worker.pid) == []


async def test_real_concurrent_threads_overlap_on_one_worker(
    real_codex: CodexSetup, model_stub: ModelStub
) -> None:
    worker = _worker(real_codex)
    results: dict[int, str] = {}
    async with trio.open_nursery() as nursery:
        with trio.fail_after(30):
            await nursery.start(worker.run)

        async def one(i: int) -> None:
            slow = directive(text=f"answer {i}", chunk_chars=2, chunk_delay=0.05)
            results[i] = collect("m", await _turn(worker, _req(slow))).text

        with trio.fail_after(60):
            async with trio.open_nursery() as turns:
                for i in range(4):
                    turns.start_soon(one, i)
        nursery.cancel_scope.cancel()
    assert results == {i: f"answer {i}" for i in range(4)}
    assert model_stub.statistics().max_in_flight >= 2
    assert worker.pid is not None and live_group_members(worker.pid) == []


async def test_real_401_fails_fast_with_login_hint(
    real_codex: CodexSetup, model_stub: ModelStub
) -> None:
    worker = _worker(real_codex)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(30):
            await nursery.start(worker.run)
        with pytest.raises(LoginExpired, match="clibridge login codex"):
            await _turn(worker, _req("@stub:401"))
        assert worker.healthy
        nursery.cancel_scope.cancel()
