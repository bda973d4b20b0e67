"""``serve --tui`` end to end on the fake interactive claude, under a real tmux.

The whole server runs in the test's loop (:func:`tests.e2e.conftest.open_e2e_server`) with
``claude.tui`` on: every worker is a foreground tmux server on a socket under the state
dir, with one pane running ``clibridge.testing.fake_claude_tui``. The official SDKs talk
to it over a real port. Leaving the server context proves that no process survived: the
fake panes (they record their pids) and every child of this process (the tmux servers)
must be gone.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import anthropic
import attrs
import httpx
import openai
import pytest
import trio

from clibridge._backends.tui.cli import attach_argv, tui_command
from clibridge._config_load import ConfigError, load_config
from tests._procs import alive, children_of, cmdline, read_record, wait_gone
from tests.e2e.conftest import FAST_POOL, MODEL, E2EServer, open_e2e_server
from tests.e2e.test_sdks import Flavor, run_async_clients, run_sync_clients
from tests.e2e.test_shutdown import serve_process

pytestmark = [
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:Async generator:ResourceWarning"),
]

TUI = {"tui": True}
ONE_PANE = attrs.evolve(FAST_POOL, workers=1, spares=0)


def tmux_servers(server: E2EServer) -> set[int]:
    """The tmux servers among this process's children."""
    return {p for p in children_of(os.getpid()) if "tmux" in cmdline(p)}


def panes(server: E2EServer) -> set[int]:
    """Every fake pane ever started (they record their pid)."""
    return {int(f["pid"]) for f in server.facts() if "argv" in f and "pid" in f}


def prompts(server: E2EServer) -> list[str]:
    return [str(f["prompt"]) for f in server.facts() if "prompt" in f]


async def chat(server: E2EServer, content: str, **extra: Any) -> httpx.Response:
    async with server.client(timeout=30) as client:
        return await client.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": content}], **extra},
        )


async def test_every_dialect_through_the_sdks(tmp_path: Path) -> None:
    async with open_e2e_server(tmp_path, claude=TUI) as server:
        flavor = Flavor.fake()
        with trio.fail_after(90):
            count = await trio.to_thread.run_sync(run_sync_clients, server.base_url, flavor)
            count += await run_async_clients(server.base_url, flavor)
        # every request reached a pane as one pasted prompt, directive and all
        assert sum(1 for p in prompts(server) if p.endswith("say hi")) == count
        assert all(cmdline(p).find("fake_claude_tui") >= 0 for p in panes(server) if alive(p))
        assert tmux_servers(server)
        stats = await server.stats()
        assert {w["pid"] for w in stats["workers"]} <= panes(server)


async def test_a_prompt_arrives_intact_and_the_system_prompt_keys_the_pane(
    tmp_path: Path,
) -> None:
    text = "line one \"quoted\" 'single' `tick` ünïcødé ✓ 🎉\n\n\tindented\n" + "x" * 30_000
    async with open_e2e_server(tmp_path, claude=TUI, pool=ONE_PANE) as server:
        response = await chat(
            server,
            text + '\n@fake {"echo": true, "echo_system": true}',
            **{
                "messages": [
                    {"role": "system", "content": "You are SYS-ONE."},
                    {
                        "role": "user",
                        "content": text + '\n@fake {"echo": true, "echo_system": true}',
                    },
                ]
            },
        )
        assert response.status_code == 200, response.text
        reply = response.json()["choices"][0]["message"]["content"]
        assert reply == f"[system: You are SYS-ONE.] echo: {text}"
        # another system prompt: the same pane restarts its CLI with it
        response = await chat(
            server,
            "",
            messages=[
                {"role": "system", "content": "You are SYS-TWO."},
                {"role": "user", "content": '@fake {"echo_system": true, "reply": "ok"}'},
            ],
        )
        assert (
            response.json()["choices"][0]["message"]["content"] == "[system: You are SYS-TWO.] ok"
        )
        # the restarted CLIs recorded themselves: one per setup at least
        assert len(panes(server)) >= 2


async def test_unrelated_conversations_are_cleared_and_a_continuation_is_not(
    tmp_path: Path,
) -> None:
    async with open_e2e_server(tmp_path, claude=TUI, pool=ONE_PANE) as server:
        first = [{"role": "user", "content": "first question"}]
        response = await chat(server, "", messages=first)
        answer = response.json()["choices"][0]["message"]["content"]
        # the client continues: only the new message is pasted, no /clear before it
        follow = [
            *first,
            {"role": "assistant", "content": answer},
            {"role": "user", "content": "more"},
        ]
        assert (await chat(server, "", messages=follow)).status_code == 200
        # an unrelated conversation: /clear first
        assert (await chat(server, "other topic")).status_code == 200
        assert prompts(server) == ["first question", "more", "/clear", "other topic"]


@pytest.mark.parametrize(
    ("directive", "status", "needle"),
    [
        ('{"api_error": 429, "api_retries": 5, "retry_delay_ms": 200}', 429, "rate limiting"),
        ('{"api_error": 401, "api_retries": 5, "retry_delay_ms": 200}', 503, "login"),
        # 529 is 503 for OpenAI clients (docs/ops.md, error mapping)
        ('{"api_error": 529, "api_retries": 5, "retry_delay_ms": 200}', 503, "overloaded"),
        ('{"no_such_field": 1}', 400, "no_such_field"),
    ],
)
async def test_upstream_errors_fail_fast_and_the_pane_serves_on(
    tmp_path: Path, directive: str, status: int, needle: str
) -> None:
    async with open_e2e_server(tmp_path, claude=TUI, pool=ONE_PANE) as server:
        with trio.fail_after(20):
            response = await chat(server, f"@fake {directive}")
        assert response.status_code == status, response.text
        assert needle in response.text
        before = panes(server)
        await server.assert_serves()
        assert panes(server) == before  # the same pane: interrupted and cleared, not killed


async def test_a_client_tool_loop_parks_the_turn_on_its_pane(tmp_path: Path) -> None:
    tool: Any = {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look a word up",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
        },
    }
    prompt = '@fake {"tool_calls": [{"name": "lookup", "arguments": {"q": "tmux"}}], "reply": "done:", "echo_tool_results": true}'
    async with open_e2e_server(tmp_path, claude=TUI, pool=ONE_PANE) as server:
        async with openai.AsyncOpenAI(
            api_key="x", base_url=f"{server.base_url}/v1", max_retries=0, timeout=30
        ) as oai:
            messages: list[Any] = [{"role": "user", "content": prompt}]
            first = await oai.chat.completions.create(model=MODEL, messages=messages, tools=[tool])
            choice = first.choices[0]
            assert choice.finish_reason == "tool_calls"
            (call,) = choice.message.tool_calls or []
            assert call.type == "function"
            assert call.function.name == "lookup"
            assert json.loads(call.function.arguments) == {"q": "tmux"}
            stats = await server.stats()
            assert stats["parked"] == 1  # the pane waits, its tools/call unanswered
            messages += [
                choice.message.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": call.id, "content": "a terminal multiplexer"},
            ]
            second = await oai.chat.completions.create(model=MODEL, messages=messages, tools=[tool])
        assert second.choices[0].message.content == "done: a terminal multiplexer"
        assert (await server.stats())["resume_hits"] == 1
        # one prompt was pasted: the result went back through the MCP server, not the box
        assert prompts(server) == [prompt]


async def test_a_client_that_goes_away_interrupts_the_turn(tmp_path: Path) -> None:
    async with open_e2e_server(tmp_path, claude=TUI, pool=ONE_PANE) as server:
        async with openai.AsyncOpenAI(
            api_key="x", base_url=f"{server.base_url}/v1", max_retries=0
        ) as oai:
            stream = await oai.chat.completions.create(
                model=MODEL,
                messages=[
                    {"role": "user", "content": '@fake {"hang_mid_turn": true, "thinking": "t"}'}
                ],
                stream=True,
            )
            with trio.move_on_after(1.0):
                async for _chunk in stream:
                    pass
            await stream.close()
        before = panes(server)
        stats = await server.wait_stats(
            lambda s: s["in_flight"] == 0 and s["workers"][0]["state"] == "idle"
        )
        await server.assert_serves("after the interrupt")
        assert panes(server) == before
        # the interrupted prompt went back into the input box; it was cleared, not merged
        assert prompts(server)[-1] == "after the interrupt"
        assert stats["workers"]


async def test_a_turn_timeout_retires_the_pane(tmp_path: Path) -> None:
    pool = attrs.evolve(ONE_PANE, turn_timeout=1.5)
    async with open_e2e_server(tmp_path, claude=TUI, pool=pool) as server:
        with trio.fail_after(20):
            response = await chat(server, '@fake {"hang_mid_turn": true}')
        assert response.status_code == 504, response.text
        await server.assert_serves()


async def test_a_pane_that_crashes_mid_turn_is_replaced(tmp_path: Path) -> None:
    async with open_e2e_server(tmp_path, claude=TUI, pool=ONE_PANE) as server:
        with trio.fail_after(20):
            response = await chat(server, '@fake {"crash_mid_turn": true}')
        assert response.status_code == 502, response.text
        crashed = panes(server)
        await wait_gone(crashed)
        await server.assert_serves()
        assert len(panes(server)) >= 2


async def test_sigkill_of_the_server_leaves_no_tmux_and_no_pane(tmp_path: Path) -> None:
    async with serve_process(tmp_path, "--tui") as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
            response = await client.post(
                "/v1/chat/completions",
                json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
            )
            assert response.status_code == 200, response.text
        assert b"clibridge tui attach N" in server.stderr  # the banner says how to watch
        tmuxes = {p for p in children_of(server.process.pid) if "tmux" in cmdline(p)}
        fakes = {int(f["pid"]) for f in read_record(server.record) if "argv" in f}
        assert tmuxes and fakes and all(alive(p) for p in fakes)
        janitor = server.janitor()
        os.kill(server.process.pid, signal.SIGKILL)
        await server.process.wait()
        await wait_gone(tmuxes | fakes | {janitor}, within=15)
    # the sockets the killed run left behind are reaped by the next start, which serves
    async with serve_process(tmp_path, "--tui") as again:
        async with httpx.AsyncClient(base_url=again.base_url, timeout=30) as client:
            response = await client.post(
                "/v1/chat/completions",
                json={"model": MODEL, "messages": [{"role": "user", "content": "again"}]},
            )
            assert response.status_code == 200, response.text
        # booted and registered with its janitor (not in the instant between spawn and
        # registration, the gap docs/architecture.md leaves to cgroups)
        await again.stats()
        tmuxes = {p for p in children_of(again.process.pid) if "tmux" in cmdline(p)}
        assert tmuxes
    # serve_process ends it with SIGKILL too: its janitor kills its tmux servers
    await wait_gone(tmuxes, within=15)


def test_tui_is_refused_on_a_non_loopback_bind(tmp_path: Path) -> None:
    base = {"CLIBRIDGE_API_KEY": "k" * 32, "CLIBRIDGE_HOST": "0.0.0.0", "CLIBRIDGE_CLAUDE_TUI": "1"}
    with pytest.raises(ConfigError, match="refusing --tui"):
        load_config({}, base, None)
    config = load_config({}, {**base, "CLIBRIDGE_CLAUDE_TUI_TRUSTED_NETWORK": "1"}, None)
    assert config.claude.tui and config.claude.tui_trusted_network


async def test_anthropic_stream_shows_thinking_and_text(tmp_path: Path) -> None:
    async with open_e2e_server(tmp_path, claude=TUI, pool=ONE_PANE) as server:
        async with (
            anthropic.AsyncAnthropic(api_key="x", base_url=server.base_url, max_retries=0) as ant,
            ant.messages.stream(
                model=MODEL,
                max_tokens=100,
                messages=[
                    {"role": "user", "content": '@fake {"thinking": "mull", "reply": "done"}'}
                ],
            ) as stream,
        ):
            final = await stream.get_final_message()
        kinds = [
            (b.type, getattr(b, "thinking", None) or getattr(b, "text", None))
            for b in final.content
        ]
        assert kinds == [("thinking", "mull"), ("text", "done")]


async def test_tui_ls_lists_the_panes_and_attach_names_a_running_one(tmp_path: Path) -> None:
    async with open_e2e_server(tmp_path, claude=TUI, pool=ONE_PANE) as server:
        assert (await chat(server, "hello")).status_code == 200
        await server.wait_stats(lambda s: s["in_flight"] == s["parked"])
        out, err = io.StringIO(), io.StringIO()
        assert tui_command("ls", None, tmp_path / "state", os.environ, out, err) == 0
        header, *rows, hint = out.getvalue().splitlines()
        assert header.split()[:4] == ["WORKER", "STATE", "CONVERSATION", "TURNS"]
        (row,) = rows
        worker, _state, _age, turns, *_ = row.split()
        assert turns == "1"
        assert "attach" in hint
        assert tui_command("attach", 99, tmp_path / "state", os.environ, out, err) == 2
        assert f"running: {worker}" in err.getvalue()
        argv = attach_argv("tmux", tmp_path / "state" / "tui", int(worker))
        assert argv[-4:] == ["attach-session", "-r", "-t", "w"]
        assert await trio.Path(argv[3]).is_socket()


async def test_a_pane_that_ignores_escape_is_retired(tmp_path: Path) -> None:
    async with open_e2e_server(tmp_path, claude=TUI, pool=ONE_PANE) as server:
        stuck = '@fake {"hang_mid_turn": true, "ignore_interrupt": true, "thinking": "t"}'
        async with server.client(timeout=30) as client:
            with trio.move_on_after(1.0):
                async with client.stream(
                    "POST",
                    "/v1/chat/completions",
                    json={
                        "model": MODEL,
                        "stream": True,
                        "messages": [{"role": "user", "content": stuck}],
                    },
                ) as response:
                    async for _chunk in response.aiter_bytes():
                        pass
        first = panes(server)
        # interrupt_grace (1 s) passes without the CLI coming back: the pane is killed
        await wait_gone(first, within=15)
        await server.assert_serves()
        assert panes(server) - first
