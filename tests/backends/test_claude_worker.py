"""ClaudeWorker against the fake claude (real subprocesses), plus the spawn home.

Every test that runs a worker checks afterwards that no process of its group is left.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from clibridge._backends.claude import tools_key
from clibridge._backends.claude.home import SETTINGS, SpawnHome, child_env, prepare_claude_home
from clibridge._backends.claude.worker import ClaudeWorker
from clibridge._config import ClaudeConfig, PoolConfig
from clibridge._errors import (
    BootError,
    CliCrashed,
    LoginExpired,
    ProtocolError,
    TurnTimeout,
    UpstreamRateLimited,
)
from clibridge._events import (
    Event,
    Finished,
    FinishReason,
    ImagePart,
    Message,
    Request,
    TextDelta,
    TextPart,
    ToolCallEnd,
    ToolResultPart,
    ToolSpec,
    TurnStarted,
    collect,
)
from clibridge._process import live_group_members
from clibridge._worker import Binding, WorkerUnusable
from clibridge.testing.model_stub import STUB_API_KEY, ModelStub
from clibridge.testing.pytest_plugin import require_real_cli
from clibridge.testing.realcli import RealClis
from clibridge.testing.scenario import directive
from tests._aio import agen

FAKE = (sys.executable, "-m", "clibridge.testing.fake_claude")
MODEL = "claude-sonnet-4-5"


def fast_pool(**overrides: Any) -> PoolConfig:
    values: dict[str, Any] = {
        "ready_timeout": 20.0,
        "turn_timeout": 30.0,
        "stream_idle_timeout": 20.0,
        "interrupt_grace": 3.0,
        "kill_grace": 1.0,
    }
    values.update(overrides)
    return PoolConfig(**values)


class Harness:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.record = tmp_path / "record.ndjson"
        self.config = ClaudeConfig(command=FAKE, login_hint="claude setup-token")
        self.home = prepare_claude_home(
            self.config, tmp_path / "state", environ={"PATH": "/usr/bin:/bin"}
        )

    def worker(
        self,
        *,
        scenario: dict[str, Any] | None = None,
        pool: PoolConfig | None = None,
        model: str | None = MODEL,
    ) -> ClaudeWorker:
        env = dict(self.home.env)
        # the fake's own knobs: CLIBRIDGE_* never passes the allow-list, so add them here
        env["CLIBRIDGE_FAKE_RECORD"] = str(self.record)
        if scenario is not None:
            path = self.tmp_path / "scenario.json"
            path.write_text(json.dumps({"default": scenario}))
            env["CLIBRIDGE_FAKE_SCENARIO"] = str(path)
        home = SpawnHome(self.home.home, self.home.workdir, env)
        return ClaudeWorker(1, self.config, pool or fast_pool(), home, model=model)

    def stdin_lines(self) -> list[Any]:
        if not self.record.exists():
            return []
        facts = [json.loads(line) for line in self.record.read_text().splitlines()]
        return [f["stdin"] for f in facts if "stdin" in f]


@pytest.fixture
def harness(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


@asynccontextmanager
async def running(worker: ClaudeWorker) -> AsyncIterator[ClaudeWorker]:
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.run)
            try:
                yield worker
            finally:
                nursery.cancel_scope.cancel()
    finally:
        if worker.pid is not None:
            assert live_group_members(worker.pid) == []


async def boot_error(worker: ClaudeWorker) -> BootError:
    """What nursery.start(worker.run) raises (as the pool sees it)."""
    async with trio.open_nursery() as nursery:
        with pytest.raises(BootError) as info:
            await nursery.start(worker.run)
    if worker.pid is not None:
        assert live_group_members(worker.pid) == []
    return info.value


def request(text: str, model: str = MODEL, **kw: Any) -> Request:
    return Request(model=model, messages=(Message("user", (TextPart(text),)),), **kw)


async def run_turn(worker: ClaudeWorker, req: Request) -> list[Event]:
    return await run_turn_with(worker, req)


async def run_turn_with(worker: ClaudeWorker, req: Request, **kw: Any) -> list[Event]:
    events: list[Event] = []
    async with aclosing(agen(worker.turn(req, **kw))) as stream:
        async for event in stream:
            events.append(event)
    return events


BIND = Binding(system="You are terse.", tools_key=(), model=MODEL)


# --------------------------------------------------------------------------- happy paths


async def test_boot_bind_turn(harness: Harness) -> None:
    with trio.fail_after(60):
        async with running(harness.worker()) as worker:
            assert worker.pid is not None
            await worker.bind(BIND)
            line = directive(reply="Hi there.", chunk_chars=3, input_tokens=11, output_tokens=4)
            events = await run_turn(worker, request(f"{line}\nsay hi"))
            assert events[0] == TurnStarted(MODEL)
            assert all(isinstance(e, TextDelta) for e in events[1:-1])
            done = collect(MODEL, events)
            assert done.text == "Hi there."
            assert done.finish.reason is FinishReason.END_TURN
            assert done.finish.usage.input_tokens == 11
            assert done.finish.usage.output_tokens == 4
            assert worker.turns == 1 and worker.healthy
    lines = harness.stdin_lines()
    subtypes = [m["request"]["subtype"] for m in lines if m.get("type") == "control_request"]
    assert subtypes[:2] == ["mcp_status", "initialize"]
    init = next(m for m in lines if m.get("request", {}).get("subtype") == "initialize")
    assert init["request"]["systemPrompt"] == "You are terse."
    assert [m["message"]["content"] for m in lines if m.get("type") == "user"] == [
        f"{line}\nsay hi"
    ]


async def test_reuse_clears_and_switches_model_and_refuses_other_setups(harness: Harness) -> None:
    with trio.fail_after(60):
        async with running(harness.worker()) as worker:
            await worker.bind(BIND)
            await run_turn(worker, request("one"))
            await worker.bind(Binding(BIND.system, (), "claude-haiku-4-5"))
            events = await run_turn(
                worker, request(directive(echo=True) + "\ntwo", "claude-haiku-4-5")
            )
            assert events[0] == TurnStarted("claude-haiku-4-5")
            assert collect("x", events).text == "echo: two"
            with pytest.raises(WorkerUnusable):
                await worker.bind(Binding("another prompt", (), MODEL))
            assert worker.healthy
    lines = harness.stdin_lines()
    users = [m["message"]["content"] for m in lines if m.get("type") == "user"]
    assert users == ["one", "/clear", directive(echo=True) + "\ntwo"]
    subtypes = [m["request"]["subtype"] for m in lines if m.get("type") == "control_request"]
    assert subtypes == ["mcp_status", "initialize", "set_model"]


async def test_large_output_line(harness: Harness) -> None:
    with trio.fail_after(60):
        async with running(harness.worker()) as worker:
            await worker.bind(BIND)
            events = await run_turn(worker, request(directive(reply="", large_output=300_000)))
            assert len(collect("x", events).text) == 300_000


WEATHER = ToolSpec(
    "get_weather",
    "Get weather",
    {"type": "object", "properties": {"city": {"type": "string"}}},
)
TOOLS_BIND = Binding(system="S", tools_key=tools_key((WEATHER,)), model=MODEL)


async def test_client_tools_pause_the_turn_and_results_resume_it(harness: Harness) -> None:
    """Two parallel calls: the stream ends with them; the results continue the same turn."""
    calls = [
        {"name": "get_weather", "arguments": {"city": "Tokyo"}},
        {"name": "get_weather", "arguments": {"city": "Paris"}},
    ]
    line = directive(tool_calls=calls, echo_tool_results=True, reply="Done.")
    with trio.fail_after(60):
        async with running(harness.worker()) as worker:
            await worker.bind(TOOLS_BIND)
            req = request(f"{line}\nweather", tools=(WEATHER,))
            events = await run_turn(worker, req)
            done = collect(MODEL, events)
            assert done.finish.reason is FinishReason.TOOL_USE
            assert [(c.name, json.loads(c.arguments)) for c in done.tool_calls] == [
                ("get_weather", {"city": "Tokyo"}),
                ("get_weather", {"city": "Paris"}),
            ]
            assert worker.paused and worker.healthy
            with pytest.raises(WorkerUnusable):
                await worker.bind(TOOLS_BIND)  # a paused worker serves nobody else
            results = {
                c.id: ToolResultPart(c.id, f"sunny in {json.loads(c.arguments)['city']}")
                for c in done.tool_calls
            }
            events = await run_turn_with(worker, req, tool_results=results)
            assert isinstance(events[0], TurnStarted)
            after = collect(MODEL, events)
            assert after.finish.reason is FinishReason.END_TURN
            assert after.tool_calls == ()
            ids = [c.id for c in done.tool_calls]
            assert after.text == f"Done.\n[{ids[0]}] sunny in Tokyo\n[{ids[1]}] sunny in Paris"
            assert not worker.paused
            # the same worker goes on (same setup: /clear) after the tool round trip
            await worker.bind(TOOLS_BIND)
            assert collect(MODEL, await run_turn(worker, request("plain"))).text
    lines = harness.stdin_lines()
    mcp = [m for m in lines if m.get("type") == "control_response"]
    listed = [
        m["response"]["response"]["mcp_response"]["result"]["tools"]
        for m in mcp
        if "tools" in m["response"]["response"]["mcp_response"].get("result", {})
    ]
    # answered at once at boot (no tools yet), then published at bind: the CLI lists again
    assert listed == [
        [],
        [
            {
                "name": "get_weather",
                "description": "Get weather",
                "inputSchema": WEATHER.input_schema,
            }
        ],
    ]
    servers = [
        m["request"]["servers"]
        for m in lines
        if m.get("request", {}).get("subtype") == "mcp_set_servers"
    ]
    assert servers == [{}, {"client": {"type": "sdk", "name": "client"}}]
    init = next(m for m in lines if m.get("request", {}).get("subtype") == "initialize")
    assert init["request"]["sdkMcpServers"] == ["client"]


async def test_cancel_while_a_tool_call_is_pending_interrupts_cleanly(harness: Harness) -> None:
    """Leaving the stream before Finished (client gone) interrupts; the CLI's
    notifications/cancelled is answered and the worker stays usable."""
    line = directive(tool_calls=[{"name": "get_weather", "arguments": {"city": "X"}}])
    with trio.fail_after(60):
        async with running(harness.worker()) as worker:
            await worker.bind(TOOLS_BIND)
            async with aclosing(
                agen(worker.turn(request(f"{line}\nw", tools=(WEATHER,))))
            ) as stream:
                async for event in stream:
                    if isinstance(event, ToolCallEnd):
                        break
            assert worker.healthy and not worker.paused
            await worker.bind(TOOLS_BIND)
            assert collect(MODEL, await run_turn(worker, request("again"))).text


async def test_a_spare_without_tools_lists_none(harness: Harness) -> None:
    with trio.fail_after(60):
        async with running(harness.worker()) as worker:
            await worker.bind(BIND)
            line = directive(tool_calls=[{"name": "get_weather", "arguments": {}}])
            done = collect(MODEL, await run_turn(worker, request(f"{line}\nw")))
            assert done.tool_calls == () and done.finish.reason is FinishReason.END_TURN


# --------------------------------------------------------------------------- boot failures


async def test_crash_at_boot_is_a_boot_error_with_stderr(harness: Harness) -> None:
    worker = harness.worker(scenario={"crash_at_boot": True})
    with trio.fail_after(60):
        error = await boot_error(worker)
    assert "crashed at boot" in (error.detail or "")
    assert not worker.healthy


async def test_hang_at_boot_times_out(harness: Harness) -> None:
    worker = harness.worker(scenario={"hang_at_boot": True}, pool=fast_pool(ready_timeout=1.0))
    with trio.fail_after(60):
        error = await boot_error(worker)
    assert "did not get ready" in error.message


async def test_missing_binary_is_a_boot_error(harness: Harness) -> None:
    home = SpawnHome(harness.home.home, harness.home.workdir, harness.home.env)
    config = ClaudeConfig(command=("/nonexistent/claude",))
    worker = ClaudeWorker(1, config, fast_pool(), home)
    with trio.fail_after(60):
        error = await boot_error(worker)
    assert "cannot start" in error.message


# --------------------------------------------------------------------------- turn failures


async def test_crash_mid_turn(harness: Harness) -> None:
    with trio.fail_after(60):
        async with running(harness.worker()) as worker:
            await worker.bind(BIND)
            with pytest.raises(CliCrashed) as info:
                await run_turn(worker, request(directive(crash_mid_turn=True, chunk_chars=2)))
            assert "crashed mid-turn" in (info.value.detail or "")
            assert not worker.healthy


async def test_hang_mid_turn_hits_the_idle_timeout(harness: Harness) -> None:
    pool = fast_pool(stream_idle_timeout=0.5)
    with trio.fail_after(60):
        async with running(harness.worker(pool=pool)) as worker:
            await worker.bind(BIND)
            with pytest.raises(TurnTimeout, match="stream_idle_timeout"):
                await run_turn(worker, request(directive(hang_mid_turn=True, chunk_chars=2)))
            assert not worker.healthy


async def test_turn_timeout(harness: Harness) -> None:
    pool = fast_pool(turn_timeout=0.5)
    with trio.fail_after(60):
        async with running(harness.worker(pool=pool)) as worker:
            await worker.bind(BIND)
            slow = directive(reply="abcdefghij" * 10, chunk_chars=1, chunk_delay=0.05)
            with pytest.raises(TurnTimeout, match="turn_timeout"):
                await run_turn(worker, request(slow))
            assert not worker.healthy


async def test_garbage_line_in_a_turn(harness: Harness) -> None:
    with trio.fail_after(60):
        async with running(harness.worker()) as worker:
            await worker.bind(BIND)
            with pytest.raises(ProtocolError):
                await run_turn(worker, request(directive(garbage_line=True)))
            assert not worker.healthy


async def test_401_fails_fast_and_the_worker_stays_usable(harness: Harness) -> None:
    with trio.fail_after(60):
        async with running(harness.worker()) as worker:
            await worker.bind(BIND)
            t0 = trio.current_time()
            trouble = directive(
                api_error=401, api_retries=10, retry_delay_ms=2000, api_error_then="hang"
            )
            with pytest.raises(LoginExpired, match="claude setup-token"):
                await run_turn(worker, request(trouble))
            assert trio.current_time() - t0 < 5
            assert worker.healthy  # the interrupt was acknowledged
            await worker.bind(BIND)
            assert collect("x", await run_turn(worker, request("again"))).text


async def test_429_after_retry_attempts_carries_the_delay(harness: Harness) -> None:
    with trio.fail_after(60):
        async with running(harness.worker()) as worker:
            await worker.bind(BIND)
            trouble = directive(
                api_error=429, api_retries=10, retry_delay_ms=100, api_error_then="hang"
            )
            with pytest.raises(UpstreamRateLimited) as info:
                await run_turn(worker, request(trouble))
            assert info.value.retry_after is not None and info.value.retry_after > 0
            assert worker.healthy


# --------------------------------------------------------------------------- cancellation


async def test_cancel_mid_turn_interrupts_and_keeps_the_worker(harness: Harness) -> None:
    with trio.fail_after(60):
        async with running(harness.worker()) as worker:
            await worker.bind(BIND)
            slow = directive(reply="x" * 200, chunk_chars=1, chunk_delay=0.05)
            got: list[Event] = []
            with trio.move_on_after(0.5) as scope:
                async with aclosing(agen(worker.turn(request(slow)))) as stream:
                    async for event in stream:
                        got.append(event)
            assert scope.cancelled_caught
            assert any(isinstance(e, TextDelta) for e in got)
            assert not any(isinstance(e, Finished) for e in got)
            assert worker.healthy
            await worker.bind(BIND)
            assert collect("x", await run_turn(worker, request("next"))).text
    interrupts = [
        m for m in harness.stdin_lines() if m.get("request", {}).get("subtype") == "interrupt"
    ]
    assert len(interrupts) == 1


async def test_ignored_interrupt_marks_unhealthy(harness: Harness) -> None:
    pool = fast_pool(interrupt_grace=0.3)
    with trio.fail_after(60):
        async with running(harness.worker(pool=pool)) as worker:
            await worker.bind(BIND)
            slow = directive(
                reply="x" * 200, chunk_chars=1, chunk_delay=0.05, ignore_interrupt=True
            )
            async with aclosing(agen(worker.turn(request(slow)))) as stream:
                async for event in stream:
                    if isinstance(event, TextDelta):
                        break
            assert not worker.healthy


async def test_sigterm_ignoring_cli_with_grandchild_leaves_nothing(harness: Harness) -> None:
    worker = harness.worker(
        scenario={"ignore_sigterm": True, "spawn_grandchild": True}, pool=fast_pool(kill_grace=0.3)
    )
    with trio.fail_after(60):
        async with running(worker):
            await worker.bind(BIND)
            assert worker.pid is not None
            assert len(live_group_members(worker.pid)) >= 2


# --------------------------------------------------------------------------- spawn home


def test_spawn_home_files(tmp_path: Path) -> None:
    home = prepare_claude_home(ClaudeConfig(), tmp_path, environ={"PATH": "/bin"})
    assert home.home == tmp_path / "claude" / "home"
    assert home.workdir.is_dir() and not any(home.workdir.iterdir())
    seeds = json.loads((home.home / ".claude.json").read_text())
    assert seeds["hasCompletedOnboarding"] is True
    assert seeds["projects"][str(home.workdir)]["hasTrustDialogAccepted"] is True
    settings = json.loads((home.home / ".claude" / "settings.json").read_text())
    assert settings == dict(SETTINGS)
    assert settings["disableAllHooks"] is True and settings["autoMemoryEnabled"] is False
    assert not (home.home / ".claude" / ".credentials.json").exists()
    # the CLI's own additions to .claude.json survive a restart
    seeds["numStartups"] = 7
    (home.home / ".claude.json").write_text(json.dumps(seeds))
    again = prepare_claude_home(ClaudeConfig(), tmp_path, environ={"PATH": "/bin"})
    assert json.loads((again.home / ".claude.json").read_text())["numStartups"] == 7


def test_child_env_allow_list() -> None:
    inbound = {
        "PATH": "/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": "/home/operator",
        "CLIBRIDGE_AUTH_TOKEN": "secret",
        "ANTHROPIC_API_KEY": "sk-ant",
        "ANTHROPIC_BASE_URL": "http://x",
        "CLAUDECODE": "1",
        "AWS_SECRET_ACCESS_KEY": "nope",
        "CLAUDE_CODE_OAUTH_TOKEN": "oauth",
        "MY_PROXY_SETTING": "p",
    }
    env = child_env(ClaudeConfig(pass_env=("MY_PROXY_SETTING",)), Path("/spawn"), inbound)
    assert env["HOME"] == "/spawn"
    assert env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"
    assert env["CLAUDE_CODE_OAUTH_TOKEN"] == "oauth"
    assert env["MY_PROXY_SETTING"] == "p"
    assert env["LC_ALL"] == "C.UTF-8"
    for name in (
        "CLIBRIDGE_AUTH_TOKEN",
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_BASE_URL",
        "CLAUDECODE",
        "AWS_SECRET_ACCESS_KEY",
    ):
        assert name not in env
    on_purpose = child_env(
        ClaudeConfig(pass_env=("ANTHROPIC_API_KEY", "CLIBRIDGE_AUTH_TOKEN")),
        Path("/spawn"),
        inbound,
    )
    assert on_purpose["ANTHROPIC_API_KEY"] == "sk-ant"
    assert "CLIBRIDGE_AUTH_TOKEN" not in on_purpose


def test_use_real_home_is_explicit_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    home = prepare_claude_home(ClaudeConfig(use_real_home=True), tmp_path, environ={"PATH": "/bin"})
    assert home.home == Path.home()
    assert "real HOME" in caplog.text
    assert not (tmp_path / "claude" / "home").exists()


# --------------------------------------------------------------------------- real claude


@pytest.mark.realcli
async def test_real_claude_warm_reuse_clear_isolation_and_fail_fast(
    real_clis: RealClis, model_stub: ModelStub, tmp_path: Path
) -> None:
    """The pinned claude in a clibridge spawn home against the loopback stub."""
    require_real_cli(real_clis, "claude")
    assert real_clis.claude is not None
    config = ClaudeConfig(
        command=(str(real_clis.claude),),
        pass_env=("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"),
        login_hint="claude setup-token",
    )
    environ = {
        "PATH": "/usr/bin:/bin",
        "ANTHROPIC_API_KEY": STUB_API_KEY,
        "ANTHROPIC_BASE_URL": model_stub.base_url,
        "NO_PROXY": "127.0.0.1,localhost",
        "CLIBRIDGE_AUTH_TOKEN": "must-not-leak",
    }
    home = prepare_claude_home(config, tmp_path / "state", environ=environ)
    # a CLAUDE.md in the work dir (and above it) must not reach the model
    (home.workdir / "CLAUDE.md").write_text("MARKER-CLAUDE-MD\n")
    (tmp_path / "state" / "CLAUDE.md").write_text("MARKER-CLAUDE-MD\n")
    worker = ClaudeWorker(1, config, fast_pool(), home, model=MODEL)
    with trio.fail_after(90):
        async with running(worker):
            await worker.bind(BIND)
            first = await run_turn(worker, request("first-question"))
            assert first[0] == TurnStarted(MODEL)
            done = collect(MODEL, first)
            assert done.text == "Hello from the model stub."
            assert done.finish.usage.input_tokens > 0
            (call,) = model_stub.model_calls()
            assert call.system_text.endswith("You are terse.")
            assert "MARKER-CLAUDE-MD" not in call.raw_body.decode()
            assert call.body["model"] == MODEL

            # warm reuse: /clear + set_model, and nothing of the first turn goes upstream
            await worker.bind(Binding(BIND.system, (), "claude-haiku-4-5"))
            second = await run_turn(worker, request("second-question", "claude-haiku-4-5"))
            assert second[0] == TurnStarted("claude-haiku-4-5")
            calls = model_stub.model_calls()
            assert len(calls) == 2  # exactly one upstream call per turn, none for /clear
            assert "first-question" not in calls[1].raw_body.decode()
            assert calls[1].body["model"] == "claude-haiku-4-5"
            assert calls[1].system_text.endswith("You are terse.")

            # a different system prompt cannot be set on a bound worker
            with pytest.raises(WorkerUnusable):
                await worker.bind(Binding("other", (), MODEL))

            # upstream 401: fail fast, interrupt the CLI's retries, worker stays usable
            await worker.bind(BIND)
            t0 = trio.current_time()
            with pytest.raises(LoginExpired, match="claude setup-token"):
                await run_turn(worker, request("@stub:401"))
            assert trio.current_time() - t0 < 10
            assert worker.healthy
            # leaving a streaming turn early interrupts it; the CLI acknowledges
            await worker.bind(BIND)
            slow = '@stub {"text": "' + "y" * 60 + '", "chunk_chars": 1, "chunk_delay": 0.05}'
            async with aclosing(agen(worker.turn(request(slow)))) as stream:
                async for event in stream:
                    if isinstance(event, TextDelta):
                        break
            assert worker.healthy
            await worker.bind(BIND)
            assert collect(MODEL, await run_turn(worker, request("after-401"))).text
            # a cold multi-turn conversation arrives as one rendered user message
            await worker.bind(BIND)
            png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
            history = Request(
                model=MODEL,
                messages=(
                    Message("user", (TextPart("hi-one"), ImagePart("image/png", data=png))),
                    Message("assistant", (TextPart("answer-one"),)),
                    Message("user", (TextPart("question-two"),)),
                ),
            )
            await run_turn(worker, history)
            content = model_stub.model_calls()[-1].body["messages"][-1]["content"]
            kinds = [block["type"] for block in content]
            assert "image" in kinds
            text = "".join(block.get("text", "") for block in content)
            assert '<turn role="assistant">\nanswer-one\n</turn>' in text
            assert text.rstrip().endswith("Latest user message:\nquestion-two")
    assert not any(
        "must-not-leak" in (c.raw_body.decode() + json.dumps(dict(c.headers)))
        for c in model_stub.model_calls()
    )
