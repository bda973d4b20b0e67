"""CodexWorker on the fake codex app-server: every failure path, no process left behind."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from clibridge._backends import codex
from clibridge._backends.codex.worker import CodexWorker, make_codex_factory
from clibridge._config import CodexConfig, Config, PoolConfig
from clibridge._errors import (
    CliCrashed,
    LoginExpired,
    TurnTimeout,
    UpstreamOverloaded,
    UpstreamRateLimited,
)
from clibridge._events import (
    Event,
    FinishReason,
    Message,
    Request,
    TextDelta,
    TextPart,
    ToolCallPart,
    ToolResultPart,
    ToolSpec,
    TurnStarted,
    collect,
)
from clibridge._pool import WorkerPool
from clibridge._process import ChildSpec, live_group_members
from clibridge._worker import Binding, WorkerRetired
from clibridge.testing.codex_schema import WireChecker, load_schema

FAKE = (sys.executable, "-m", "clibridge.testing.fake_codex")
POOL = PoolConfig(
    workers=1, spares=0, ready_timeout=20, turn_timeout=20, interrupt_grace=1.0, kill_grace=1.0
)


def _request(text: str, *history: Message, **kw: Any) -> Request:
    return Request(model="gpt-5.5", messages=(*history, Message("user", (TextPart(text),))), **kw)


def _fake(directive: dict[str, Any], text: str = "hi") -> str:
    return f"@fake {json.dumps(directive)}\n{text}"


def _spec(
    tmp_path: Path, scenario: dict[str, Any] | None = None, *, inject: bool = True
) -> ChildSpec:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "CLIBRIDGE_FAKE_RECORD": str(tmp_path / "rec.ndjson"),
    }
    if not inject:  # behave like an app-server without thread/inject_items
        env["CLIBRIDGE_FAKE_CODEX_NO_INJECT"] = "1"
    if scenario is not None:
        path = tmp_path / "scenario.json"
        path.write_text(json.dumps({"default": scenario}))
        env["CLIBRIDGE_FAKE_SCENARIO"] = str(path)
    return ChildSpec(codex.build_argv(FAKE), env, tmp_path)


def _recorded_stdin(tmp_path: Path) -> list[Any]:
    lines = (tmp_path / "rec.ndjson").read_text().splitlines()
    return [json.loads(x)["stdin"] for x in lines if "stdin" in json.loads(x)]


@asynccontextmanager
async def running(
    tmp_path: Path,
    pool: PoolConfig = POOL,
    scenario: dict[str, Any] | None = None,
    *,
    inject: bool = True,
    prestart: bool = False,
) -> AsyncIterator[CodexWorker]:
    worker = CodexWorker(
        1, CodexConfig(prestart_threads=prestart), pool, _spec(tmp_path, scenario, inject=inject)
    )
    async with trio.open_nursery() as nursery:
        with trio.fail_after(30):
            await nursery.start(worker.run)
        yield worker
        nursery.cancel_scope.cancel()
    assert worker.pid is not None and live_group_members(worker.pid) == []


async def _turn(worker: CodexWorker, request: Request) -> list[Event]:
    with trio.fail_after(30):
        async with aclosing(worker.turn(request)) as events:  # type: ignore[type-var]
            return [e async for e in events]


async def test_turn_streams_text_with_usage_and_schema_valid_client(tmp_path: Path) -> None:
    async with running(tmp_path) as worker:
        events = await _turn(worker, _request(_fake({"reply": "hello there", "chunk_chars": 3})))
        assert isinstance(events[0], TurnStarted)
        done = collect("gpt-5.5", events)
        assert done.text == "hello there"
        assert done.finish.reason is FinishReason.END_TURN
        assert done.finish.usage.output_tokens > 0
        assert worker.healthy and worker.active == 0 and worker.binding is None
    checker = WireChecker()
    sent = _recorded_stdin(tmp_path)
    for msg in sent:
        checker.client_sent(msg)
    # account/rateLimits/read (the subscription window) is sent at boot, in the background
    methods = [m.get("method") for m in sent if m.get("method") != "account/rateLimits/read"]
    assert methods[:4] == ["initialize", "initialized", "thread/start", "turn/start"]
    assert "account/rateLimits/read" in [m.get("method") for m in sent]
    start = next(m for m in sent if m.get("method") == "thread/start")["params"]
    assert start["ephemeral"] is True and start["sandbox"] == "read-only"


async def test_system_prompt_model_and_effort_reach_codex(tmp_path: Path) -> None:
    async with running(tmp_path) as worker:
        req = _request("hi", system="Be terse.", reasoning_effort="high")
        await _turn(worker, req)
    sent = _recorded_stdin(tmp_path)
    start = next(m for m in sent if m.get("method") == "thread/start")["params"]
    turn = next(m for m in sent if m.get("method") == "turn/start")["params"]
    assert start["baseInstructions"] == "Be terse." and start["model"] == "gpt-5.5"
    assert turn["effort"] == "high"


async def test_history_falls_back_to_a_transcript_when_inject_is_refused(tmp_path: Path) -> None:
    async with running(tmp_path, inject=False) as worker:
        req = _request(
            _fake({"echo": True}, "q2"),
            Message("user", (TextPart("q1"),)),
            Message("assistant", (TextPart("a1"),)),
        )
        done = collect("m", await _turn(worker, req))
        assert "[user]\nq1" in done.text and "[assistant]\na1" in done.text and "q2" in done.text
        assert worker.healthy


WEATHER = ToolSpec(
    "get_weather",
    "Get weather",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


def _calls(*cities: str) -> dict[str, Any]:
    return {"tool_calls": [{"name": "get_weather", "arguments": {"city": c}} for c in cities]}


async def test_tool_calls_pause_the_thread_and_results_resume_it(tmp_path: Path) -> None:
    """Parallel calls end the response together; the results go back as tool responses."""
    async with running(tmp_path) as worker:
        worker.tool_settle = 0.1
        req = _request(_fake({**_calls("Tokyo", "Paris"), "reply": "Done."}), tools=(WEATHER,))
        first = collect("m", await _turn(worker, req))
        assert first.finish.reason is FinishReason.TOOL_USE
        assert [(c.name, json.loads(c.arguments)) for c in first.tool_calls] == [
            ("get_weather", {"city": "Tokyo"}),
            ("get_weather", {"city": "Paris"}),
        ]
        ids = [c.id for c in first.tool_calls]
        assert worker.paused_threads == 1 and worker.active == 0
        assert worker.holds_paused_calls(ids) and not worker.holds_paused_calls(ids[:1])
        results = {i: ToolResultPart(i, f"sunny {n}") for n, i in enumerate(ids)}
        with trio.fail_after(30):
            async with aclosing(worker.turn(req, tool_results=results)) as events:  # type: ignore[type-var]
                second = [e async for e in events]
        assert isinstance(second[0], TurnStarted)
        done = collect("m", second)
        assert done.text == "Done." and done.finish.reason is FinishReason.END_TURN
        assert worker.paused_threads == 0 and worker.refused_requests == 0
    sent = _recorded_stdin(tmp_path)
    checker, schema = WireChecker(), load_schema()
    for msg in sent:
        if "method" in msg:
            checker.client_sent(msg)
        else:  # our replies to the server's item/tool/call requests
            schema.validate_response("client", "item/tool/call", msg)
    start = next(m for m in sent if m.get("method") == "thread/start")["params"]
    assert start["dynamicTools"] == [
        {
            "type": "function",
            "name": "get_weather",
            "description": "Get weather",
            "inputSchema": WEATHER.input_schema,
        }
    ]
    replies = [m for m in sent if "result" in m and "contentItems" in (m["result"] or {})]
    assert [r["result"] for r in replies] == [
        {"contentItems": [{"type": "inputText", "text": "sunny 0"}], "success": True},
        {"contentItems": [{"type": "inputText", "text": "sunny 1"}], "success": True},
    ]


async def test_results_for_a_thread_that_is_gone_run_the_full_history(tmp_path: Path) -> None:
    async with running(tmp_path) as worker:
        history = (
            Message("user", (TextPart("weather?"),)),
            Message("assistant", (ToolCallPart("call1", "get_weather", '{"city":"Tokyo"}'),)),
        )
        req = Request(
            model="m",
            messages=(*history, Message("user", (ToolResultPart("call1", "sunny"),))),
            tools=(WEATHER,),
        )
        done = collect("m", await _turn_with(worker, req, {"call_x": ToolResultPart("x", "y")}))
        assert done.finish.reason is FinishReason.END_TURN
    sent = _recorded_stdin(tmp_path)
    inject = next(m for m in sent if m.get("method") == "thread/inject_items")["params"]
    assert [i["type"] for i in inject["items"]] == [
        "message",
        "function_call",
        "function_call_output",
    ]
    assert inject["items"][2] == {
        "type": "function_call_output",
        "call_id": "call1",
        "output": "sunny",
    }
    turn = next(m for m in sent if m.get("method") == "turn/start")["params"]
    assert turn["input"] == []


async def test_dropped_paused_thread_is_interrupted_and_the_worker_goes_on(
    tmp_path: Path,
) -> None:
    async with running(tmp_path) as worker:
        worker.tool_settle = 0.05
        req = _request(_fake(_calls("Tokyo")), tools=(WEATHER,))
        first = collect("m", await _turn(worker, req))
        worker.drop_paused_calls([first.tool_calls[0].id])
        with trio.fail_after(10):
            while worker._threads:  # noqa: ASYNC110 (the drop runs in the worker's nursery)
                await trio.sleep(0.01)
        assert worker.paused_threads == 0 and worker.healthy
        done = collect("m", await _turn(worker, _request(_fake({"reply": "next"}))))
        assert done.text == "next"


async def test_a_paused_thread_has_no_clock_of_its_own(tmp_path: Path) -> None:
    """One owner, one clock: the pool's ``park_ttl`` reclaims a parked pause and drops it
    (``drop_paused_calls``); the worker itself never ends a pause on a timer of its own."""
    pool = attrs.evolve(POOL, park_ttl=0.1, interrupt_grace=0.1)
    async with running(tmp_path, pool) as worker:
        worker.tool_settle = 0.05
        first = collect(
            "m", await _turn(worker, _request(_fake(_calls("Tokyo")), tools=(WEATHER,)))
        )
        await trio.sleep(1.0)  # well past park_ttl + interrupt_grace
        assert worker.paused_threads == 1 and worker.holds_paused_calls([first.tool_calls[0].id])
        worker.drop_paused_calls([first.tool_calls[0].id])
        with trio.fail_after(10):
            while worker._threads:  # noqa: ASYNC110 (the drop runs in the worker's nursery)
                await trio.sleep(0.01)
        assert worker.paused_threads == 0 and worker.healthy


async def test_tool_call_for_a_thread_without_tools_is_refused(tmp_path: Path) -> None:
    """A call the model makes with no client tools declared must not stall the turn."""
    async with running(tmp_path) as worker:
        done = collect("m", await _turn(worker, _request(_fake({"reply": "ok"}))))
        assert done.text == "ok"


async def _turn_with(
    worker: CodexWorker, request: Request, results: dict[str, ToolResultPart]
) -> list[Event]:
    with trio.fail_after(30):
        async with aclosing(worker.turn(request, tool_results=results)) as events:  # type: ignore[type-var]
            return [e async for e in events]


async def test_approval_request_is_declined_and_the_turn_goes_on(tmp_path: Path) -> None:
    async with running(tmp_path) as worker:
        done = collect("m", await _turn(worker, _request(_fake({"approval_request": True}))))
        assert done.finish.reason is FinishReason.END_TURN
        assert worker.declined_approvals == 1
    replies = [m for m in _recorded_stdin(tmp_path) if "result" in m]
    assert replies == [{"jsonrpc": "2.0", "id": 0, "result": {"decision": "decline"}}]


async def test_unknown_server_request_gets_an_error_at_once(tmp_path: Path) -> None:
    async with running(tmp_path) as worker:
        done = collect("m", await _turn(worker, _request(_fake({"unknown_server_request": True}))))
        assert done.finish.reason is FinishReason.END_TURN
        assert worker.refused_requests == 1
    errors = [m for m in _recorded_stdin(tmp_path) if "error" in m]
    assert len(errors) == 1 and errors[0]["error"]["code"] == codex.METHOD_NOT_FOUND


@pytest.mark.parametrize(
    ("directive", "kind"),
    [
        (
            {"error_notification": "usageLimitExceeded: You've hit your usage limit"},
            UpstreamRateLimited,
        ),
        ({"error_notification": "serverOverloaded: busy"}, UpstreamOverloaded),
        ({"api_error": 429}, UpstreamRateLimited),
        ({"api_error": 401}, LoginExpired),
    ],
)
async def test_error_notifications_are_mapped(
    tmp_path: Path, directive: dict[str, Any], kind: type[Exception]
) -> None:
    async with running(tmp_path) as worker:
        with pytest.raises(kind):
            await _turn(worker, _request(_fake(directive)))
        assert worker.healthy and worker.active == 0
        # the worker serves the next request
        assert collect("m", await _turn(worker, _request("again"))).text


async def test_401_fails_fast_without_waiting_for_the_retries(tmp_path: Path) -> None:
    async with running(tmp_path) as worker:
        start = trio.current_time()
        with pytest.raises(LoginExpired, match="clibridge login codex"):
            await _turn(
                worker,
                _request(_fake({"api_error": 401, "api_retries": 5, "retry_delay_ms": 2000})),
            )
        assert trio.current_time() - start < 2.0  # the retries would take 10 s


async def test_cancel_interrupts_the_thread(tmp_path: Path) -> None:
    async with running(tmp_path) as worker:
        req = _request(_fake({"reply": "x" * 200, "chunk_chars": 2, "chunk_delay": 0.05}))
        with trio.fail_after(20):
            async with aclosing(worker.turn(req)) as events:  # type: ignore[type-var]
                async for event in events:
                    if isinstance(event, TextDelta):
                        break
        assert worker.healthy and worker.active == 0
        assert collect("m", await _turn(worker, _request("next"))).text
    methods = [m.get("method") for m in _recorded_stdin(tmp_path)]
    assert "turn/interrupt" in methods


async def test_hang_times_out_and_the_worker_survives(tmp_path: Path) -> None:
    pool = attrs.evolve(POOL, turn_timeout=1.0)
    async with running(tmp_path, pool) as worker:
        with pytest.raises(TurnTimeout):
            await _turn(worker, _request(_fake({"hang_mid_turn": True})))
        # the fake honours the interrupt: the thread ended, the worker is fine
        assert worker.healthy
        assert collect("m", await _turn(worker, _request("after"))).text


async def test_thread_that_ignores_interrupt_is_abandoned_then_worker_retires(
    tmp_path: Path,
) -> None:
    pool = attrs.evolve(POOL, turn_timeout=0.5, interrupt_grace=0.5)
    worker = CodexWorker(1, CodexConfig(prestart_threads=False), pool, _spec(tmp_path))
    # then it retires itself: run() raises WorkerRetired, the process group is gone
    with pytest.RaisesGroup(WorkerRetired):
        async with trio.open_nursery() as nursery:
            with trio.fail_after(30):
                await nursery.start(worker.run)
                with pytest.raises(TurnTimeout):
                    await _turn(
                        worker, _request(_fake({"hang_mid_turn": True, "ignore_interrupt": True}))
                    )
                assert worker.healthy  # abandoned, not yet judged
    assert not worker.healthy
    assert worker.pid is not None and live_group_members(worker.pid) == []


async def test_crash_fails_every_thread_in_flight_and_the_pool_replaces_the_worker(
    tmp_path: Path,
) -> None:
    config = Config(
        codex=CodexConfig(
            command=FAKE,
            prestart_threads=False,
            pool=attrs.evolve(POOL, restart_backoff_initial=0.1),
        )
    )
    factory = make_codex_factory(config, FAKE, tmp_path / "state", None, os.environ, fake=True)
    pool = WorkerPool("codex", config.codex.pool, factory, threads_per_worker=3)
    binding = Binding("", (), "gpt-5.5")
    started = 0
    changed = trio.Event()
    errors: list[BaseException] = []
    pids: list[int] = []

    async def one(text: str) -> None:
        nonlocal started, changed
        async with pool.lease(binding) as lease:
            assert isinstance(lease.worker, CodexWorker)
            pids.append(lease.worker.pid or 0)
            try:
                async with aclosing(lease.worker.turn(_request(text))) as events:  # type: ignore[type-var]
                    async for event in events:
                        if isinstance(event, TurnStarted):
                            started += 1
                            changed.set()
            except CliCrashed as exc:
                errors.append(exc)

    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        with trio.fail_after(60):
            async with trio.open_nursery() as turns:
                for _ in range(2):
                    turns.start_soon(one, _fake({"first_delay": 30}))
                while started < 2:
                    await changed.wait()
                    changed = trio.Event()
                turns.start_soon(one, _fake({"crash_mid_turn": True, "stderr": "boom on stderr"}))
            assert len(errors) == 3
            assert all("exited" in str(e) for e in errors)
            assert any("boom on stderr" in (e.detail or "") for e in errors)  # type: ignore[attr-defined]
            # replaced: the next request is served by a new process
            async with pool.lease(binding) as lease:
                done = collect("m", await _turn(lease.worker, _request("after the crash")))  # type: ignore[arg-type]
                assert done.text and lease.worker.pid not in pids
            stats = pool.statistics()
            assert stats.crashes == 1 and stats.in_flight == 0
        nursery.cancel_scope.cancel()
    for pid in set(pids):
        assert live_group_members(pid) == []


def test_login_codex_runs_the_cli_login_in_clibridges_home(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from clibridge._cli import main

    script = tmp_path / "codex"
    script.write_text('#!/bin/sh\necho "ARGS $* HOME=$CODEX_HOME KEY=$OPENAI_API_KEY"\n')
    script.chmod(0o755)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "OPENAI_API_KEY": "must-not-leak",
        "CLIBRIDGE_CODEX_COMMAND": str(script),
        "CLIBRIDGE_STATE_DIR": str(tmp_path / "state"),
    }
    assert main(["login", "codex", "--device-auth"], env) == 0
    out = capfd.readouterr().out
    assert f"ARGS login --device-auth HOME={tmp_path / 'state' / 'codex' / 'home'} KEY=\n" == out
    # --state-dir is clibridge's, wherever it stands; the rest goes to the CLI
    del env["CLIBRIDGE_STATE_DIR"]
    other = tmp_path / "other"
    assert main(["login", "codex", "--state-dir", str(other), "--device-auth"], env) == 0
    out = capfd.readouterr().out
    assert f"ARGS login --device-auth HOME={other / 'codex' / 'home'} KEY=\n" == out


async def test_a_thread_is_started_ahead_for_the_next_request_like_this(tmp_path: Path) -> None:
    """thread/start is most of a warm request's latency: the worker starts the next one
    in the background, and the next request with the same system prompt and tools uses it."""
    async with running(tmp_path, prestart=True) as worker:
        first = collect("m", await _turn(worker, _request("one")))
        with trio.fail_after(5):
            while not worker._spare_threads:  # noqa: ASYNC110 - internal state, no event
                await trio.sleep(0.01)
        ((spare_id, _),) = worker._spare_threads.values()
        second = collect("m", await _turn(worker, _request("two")))
        assert "one" not in second.text
        assert first.finish.reason is second.finish.reason
    sent = _recorded_stdin(tmp_path)
    methods = [m.get("method") for m in sent if isinstance(m, dict)]
    second_turn = [i for i, m in enumerate(methods) if m == "turn/start"][1]
    # before the second turn: the first request's thread and the spare, nothing inline
    assert methods[:second_turn].count("thread/start") == 2
    turns = [m for m in sent if isinstance(m, dict) and m.get("method") == "turn/start"]
    assert turns[1]["params"]["threadId"] == spare_id
