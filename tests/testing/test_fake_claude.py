"""The fake ``claude``: shaped like the recorded real transcripts, every knob does what it says.

The fake runs as a real child process (in its own process group, killed in teardown) and
is driven over its stdio like clibridge's claude driver drives the real CLI.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
import trio

from clibridge.testing.scenario import RECORD_ENV, SCENARIO_ENV, directive

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "fixtures" / "fake_cli" / "claude"
LOCAL_SAMPLES = Path(__file__).parent / "samples"
SHARED_SAMPLES = LOCAL_SAMPLES / "shared"
BOUND = 5  # seconds: generous bound on any single real wait
WORKER_ARGS = [
    "-p",
    "--input-format",
    "stream-json",
    "--output-format",
    "stream-json",
    "--verbose",
    "--include-partial-messages",
    "--no-session-persistence",
    "--model",
    "claude-sonnet-4-5",
]
MCP_ARGS = [
    "--mcp-config",
    json.dumps({"mcpServers": {"client": {"type": "sdk", "name": "client"}}}),
    "--strict-mcp-config",
    "--tools",
    "",
    "--allowedTools",
    "mcp__client__get_weather",
]
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Get weather",
    "inputSchema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
HANDSHAKE = {"initialize", "notifications/initialized", "tools/list"}

Msg = dict[str, Any]


def user(content: Any) -> Msg:
    return {
        "type": "user",
        "message": {"role": "user", "content": content},
        "parent_tool_use_id": None,
        "session_id": "",
    }


def control(request_id: str, subtype: str, **fields: Any) -> Msg:
    return {
        "type": "control_request",
        "request_id": request_id,
        "request": {"subtype": subtype, **fields},
    }


def mcp_method(msg: Msg) -> str | None:
    if msg.get("type") == "control_request" and msg["request"].get("subtype") == "mcp_message":
        return str(msg["request"]["message"].get("method"))
    return None


def mcp_reply(msg: Msg, result: Any) -> Msg:
    rpc = msg["request"]["message"]
    reply: Msg = {"jsonrpc": "2.0", "result": result}
    if "id" in rpc:
        reply["id"] = rpc["id"]
    return {
        "type": "control_response",
        "response": {
            "subtype": "success",
            "request_id": msg["request_id"],
            "response": {"mcp_response": reply},
        },
    }


class Fake:
    """A test's end of the fake's stdio. Answers the MCP handshake by itself."""

    def __init__(self, proc: trio.Process, tools: list[Msg]) -> None:
        self.proc = proc
        self.tools = tools
        self._buf = bytearray()
        self.seen: list[Msg] = []

    async def send(self, msg: Msg) -> None:
        assert self.proc.stdin is not None
        await self.proc.stdin.send_all(json.dumps(msg).encode() + b"\n")

    async def raw_line(self) -> bytes:
        assert self.proc.stdout is not None
        with trio.fail_after(BOUND):
            while b"\n" not in self._buf:
                data = await self.proc.stdout.receive_some(1 << 20)
                if not data:
                    raise EOFError(bytes(self._buf))
                self._buf += data
        line, _, rest = self._buf.partition(b"\n")
        self._buf = bytearray(rest)
        return bytes(line)

    async def next(self) -> Msg:
        """The next line the fake printed; MCP handshake requests are answered on the way."""
        while True:
            msg: Msg = json.loads(await self.raw_line())
            self.seen.append(msg)
            method = mcp_method(msg)
            if method == "initialize":
                await self.send(
                    mcp_reply(
                        msg,
                        {
                            "protocolVersion": "2025-11-25",
                            "capabilities": {"tools": {}},
                            "serverInfo": {"name": "client", "version": "1"},
                        },
                    )
                )
            elif method == "tools/list":
                await self.send(mcp_reply(msg, {"tools": self.tools}))
            elif method == "notifications/initialized":
                await self.send(mcp_reply(msg, {}))
            return msg

    async def until(self, pred: Callable[[Msg], bool]) -> list[Msg]:
        """Lines up to and including the first one ``pred`` accepts."""
        got = []
        while True:
            msg = await self.next()
            got.append(msg)
            if pred(msg):
                return got

    async def turn(self, content: Any) -> list[Msg]:
        await self.send(user(content))
        return await self.until(lambda m: m["type"] == "result")

    async def ctl(self, request_id: str, subtype: str, **fields: Any) -> Msg:
        await self.send(control(request_id, subtype, **fields))
        got = await self.until(
            lambda m: m["type"] == "control_response" and m["response"]["request_id"] == request_id
        )
        return got[-1]

    async def wait(self) -> int:
        with trio.fail_after(BOUND):
            return await self.proc.wait()

    async def stderr(self) -> str:
        assert self.proc.stderr is not None
        chunks = []
        with trio.fail_after(BOUND):
            while data := await self.proc.stderr.receive_some(65536):
                chunks.append(data)
        return b"".join(chunks).decode()


def _killpg(pid: int, sig: int = signal.SIGKILL) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


@asynccontextmanager
async def fake_claude(
    tmp_path: Path,
    *args: str,
    default: Msg | None = None,
    named: Msg | None = None,
    tools: list[Msg] | None = None,
    env: dict[str, str] | None = None,
    stdin: bool = True,
) -> AsyncIterator[Fake]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CLIBRIDGE_FAKE")}
    if default is not None or named is not None:
        path = tmp_path / "scenario.json"
        path.write_text(json.dumps({"default": default or {}, "named": named or {}}))
        environ[SCENARIO_ENV] = str(path)
    environ.update(env or {})
    proc = await trio.lowlevel.open_process(
        [sys.executable, str(FIXTURE), *(args or WORKER_ARGS)],
        stdin=-1 if stdin else subprocess_devnull(),
        stdout=-1,
        stderr=-1,
        env=environ,
        cwd=str(tmp_path),
        start_new_session=True,
    )
    try:
        yield Fake(proc, tools if tools is not None else [WEATHER_TOOL])
    finally:
        _killpg(proc.pid)
        with trio.CancelScope(shield=True), trio.move_on_after(BOUND):
            await proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                with suppress(trio.ClosedResourceError, trio.BrokenResourceError):
                    await stream.aclose()


def subprocess_devnull() -> int:
    import subprocess

    return subprocess.DEVNULL


def kinds(msgs: list[Msg]) -> list[tuple[str, ...]]:
    return [key(m) for m in msgs]


def key(msg: Msg) -> tuple[str, ...]:
    """What must match between the real CLI and the fake: message kinds, not values."""
    kind = msg.get("type", "?")
    if kind == "stream_event":
        event = msg["event"]
        return (kind, event["type"], (event.get("delta") or {}).get("type", ""))
    if kind == "system":
        return (kind, msg["subtype"])
    if kind == "control_request":
        return (kind, msg["request"]["subtype"], mcp_method(msg) or "")
    if kind == "control_response":
        return (kind, msg["response"]["subtype"])
    if kind == "user":
        content = msg["message"]["content"]
        blocks = "str" if isinstance(content, str) else ",".join(b["type"] for b in content)
        return (kind, blocks, "replay" if msg.get("isReplay") else "")
    if kind == "assistant":
        return (
            kind,
            ",".join(b["type"] for b in msg["message"]["content"]),
            str(msg.get("error", "")),
        )
    if kind == "result":
        return (kind, msg["subtype"], str(msg["is_error"]))
    return (kind,)


def comparable(msgs: list[Msg]) -> list[tuple[str, ...]]:
    """Kinds without the MCP handshake (its timing differs between runs of the real CLI
    too) and with runs of equal deltas collapsed (chunking is the upstream's choice)."""
    out: list[tuple[str, ...]] = []
    for msg in msgs:
        if mcp_method(msg) in HANDSHAKE:
            continue
        k = key(msg)
        if k[0] == "stream_event" and k[1] == "content_block_delta" and out and out[-1] == k:
            continue
        out.append(k)
    return out


# ---------------------------------------------------------------- replay of the samples

NAMED = {
    "tool": {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Tokyo"}}]},
    "ptool": {
        "tool_calls": [
            {"name": "get_weather", "arguments": {"city": "Tokyo"}},
            {"name": "get_weather", "arguments": {"city": "Paris"}},
        ]
    },
    "think": {"thinking": "Let me think."},
    # the model calls a tool by its full name although the host listed none
    "unlisted": {"tool_calls": [{"name": "mcp__client__get_weather", "arguments": {"city": "x"}}]},
    "hang429": {"api_error": 429, "retry_delay_ms": 30, "api_error_then": "hang"},
    "hang529": {"api_error": 529, "retry_delay_ms": 30, "api_error_then": "hang"},
    "e429": {"api_error": 429, "api_retries": 2, "retry_delay_ms": 1},
    "e401": {"api_error": 401, "api_retries": 2, "retry_delay_ms": 1},
    "e529": {"api_error": 529, "api_retries": 1, "retry_delay_ms": 1},
}
# sample prompt (what the loopback stub reacted to) -> the scenario that plays that part
PROMPTS = {
    "MODE:tool weather in tokyo": "tool",
    "MODE:ptool weather": "ptool",
    "MODE:tool again": "tool",
    "MODE:tool x": "tool",
    "MODE:think blocks": "think",
    "MODE:error429": "e429",
    "MODE:error401": "e401",
    "MODE:error529": "e529",
    "hello": "e401",  # merged with the failed MODE:error401 prompt upstream
    "weather?": "tool",
}
SAMPLES = {
    # name: (file, extra args, prompt overrides)
    "two_turns": (SHARED_SAMPLES / "claude_streamjson_two_turns.ndjson", [], {}),
    "sdk_mcp_tool_call": (SHARED_SAMPLES / "claude_sdk_mcp_tool_call.ndjson", MCP_ARGS, {}),
    "upstream_429_retries": (
        SHARED_SAMPLES / "claude_upstream_429_retries.ndjson",
        [],
        {"MODE:error429": "hang429"},
    ),
    "interrupt": (SHARED_SAMPLES / "claude_interrupt.ndjson", [], {"MODE:error529": "hang529"}),
    "reinitialize_clear": (LOCAL_SAMPLES / "claude_mcp_status_reinitialize_clear.ndjson", [], {}),
    "parallel_thinking_image": (
        LOCAL_SAMPLES / "claude_sdk_mcp_parallel_thinking_image.ndjson",
        MCP_ARGS,
        {},
    ),
    "deferred_tools_interrupt": (
        LOCAL_SAMPLES / "claude_deferred_tool_calls_interrupt.ndjson",
        MCP_ARGS,
        {},
    ),
    "upstream_error_result": (LOCAL_SAMPLES / "claude_upstream_error_result.ndjson", [], {}),
    "mcp_set_servers_publish": (
        LOCAL_SAMPLES / "claude_mcp_set_servers_publish.ndjson",
        MCP_ARGS,
        {},
    ),
    "unlisted_tool_rejected": (
        LOCAL_SAMPLES / "claude_sdk_mcp_unlisted_tool_rejected.ndjson",
        MCP_ARGS,
        {"weather?": "unlisted"},
    ),
    "529_idle_interrupt": (
        LOCAL_SAMPLES / "claude_upstream_529_result_idle_interrupt.ndjson",
        ["--tools", ""],
        {},
    ),
}


def with_directive(msg: Msg, overrides: dict[str, str]) -> Msg:
    content = msg["message"]["content"]
    text = (
        content
        if isinstance(content, str)
        else " ".join(b["text"] for b in content if b["type"] == "text")
    )
    name = overrides.get(text, PROMPTS.get(text))
    if name is None:
        return msg
    line = f"@fake:{name}\n"
    if isinstance(content, str):
        new: Any = line + content
    else:
        new = [{"type": "text", "text": line}, *content]
    return user(new)


@pytest.mark.parametrize("name", list(SAMPLES))
async def test_replays_sample_structure(tmp_path: Path, name: str) -> None:
    path, extra, overrides = SAMPLES[name]
    assert path.exists(), f"recorded sample missing: {path}"
    sample = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    # Each stdin line of the transcript is sent once the fake has printed as many
    # (comparable) lines as the real CLI had printed before it.
    steps: list[tuple[int, Msg]] = []
    outs: list[Msg] = []
    sample_calls: list[str] = []  # request ids of the sample's tools/call, in order
    for rec in sample:
        msg = rec["msg"]
        if rec["dir"] == "out":
            outs.append(msg)
            if mcp_method(msg) == "tools/call":
                sample_calls.append(msg["request_id"])
            continue
        if msg["type"] == "control_response":
            rid = msg["response"]["request_id"]
            if rid not in sample_calls:
                continue  # handshake replies: the test answers the fake's own requests
        steps.append((len(comparable(outs)), msg))
    expected = comparable(outs)
    # the tools the sample's host listed last (the real CLI went on with those)
    list_ids = {m["request_id"] for m in outs if mcp_method(m) == "tools/list"}
    listed = [
        r["msg"]["response"]["response"]["mcp_response"]["result"]["tools"]
        for r in sample
        if r["dir"] == "in"
        and r["msg"]["type"] == "control_response"
        and r["msg"]["response"]["request_id"] in list_ids
    ]

    async with fake_claude(
        tmp_path,
        *WORKER_ARGS,
        *extra,
        named=NAMED,
        env={"CLAUDE_CODE_MAX_RETRIES": "2"},
    ) as fake:
        if listed:
            fake.tools = listed[-1]
        got: list[Msg] = []
        fake_calls: list[Msg] = []

        async def catch_up(count: int) -> None:
            while len(comparable(got)) < count:
                try:
                    msg = await fake.next()
                except trio.TooSlowError:
                    # Show where the fake went astray rather than only that it stalled.
                    assert comparable(got) == expected[: len(comparable(got))]
                    raise
                got.append(msg)
                if mcp_method(msg) == "tools/call":
                    fake_calls.append(msg)

        for count, msg in steps:
            await catch_up(count)
            if msg["type"] == "user":
                msg = with_directive(msg, overrides)
            elif msg["type"] == "control_response":
                # A tools/call reply: aim it at the fake's matching request.
                call = fake_calls[sample_calls.index(msg["response"]["request_id"])]
                result = msg["response"]["response"]["mcp_response"]["result"]
                msg = mcp_reply(call, result)
            await fake.send(msg)
        await catch_up(len(expected))
    assert comparable(got) == expected


# ---------------------------------------------------------------- worker-mode knobs


async def test_mcp_status_shape_and_boot_time(tmp_path: Path) -> None:
    started = time.monotonic()
    async with fake_claude(tmp_path) as fake:
        reply = await fake.ctl("r1", "mcp_status")
        elapsed = time.monotonic() - started
    assert reply["response"] == {
        "subtype": "success",
        "request_id": "r1",
        "response": {"mcpServers": []},
    }
    # The target is well under 150 ms on an idle machine; the bound allows a loaded CI box.
    assert elapsed < 2.0, elapsed


async def test_text_chunks_usage_and_directive_stripping(tmp_path: Path) -> None:
    async with fake_claude(tmp_path) as fake:
        prompt = directive(
            echo=True, chunk_chars=3, input_tokens=7, output_tokens=9, cache_read_input_tokens=2
        )
        msgs = await fake.turn(f"{prompt}\nhello world")
    deltas = [m["event"]["delta"]["text"] for m in msgs if key(m)[2:] == ("text_delta",)]
    assert "".join(deltas) == "echo: hello world"
    assert all(len(d) <= 3 for d in deltas) and len(deltas) == 6
    result = msgs[-1]
    assert result["result"] == "echo: hello world"
    assert result["usage"]["input_tokens"] == 7
    assert result["usage"]["output_tokens"] == 9
    assert result["usage"]["cache_read_input_tokens"] == 2
    assert result["stop_reason"] == "end_turn"


async def test_delays_are_applied(tmp_path: Path) -> None:
    async with fake_claude(tmp_path) as fake:
        start = time.monotonic()
        await fake.turn(directive(reply="abcd", chunk_chars=1, first_delay=0.2, chunk_delay=0.05))
        assert time.monotonic() - start >= 0.2 + 3 * 0.05


async def test_content_blocks_text_and_image(tmp_path: Path) -> None:
    async with fake_claude(tmp_path) as fake:
        content = [
            {"type": "text", "text": directive(echo=True)},
            {"type": "text", "text": "look"},
            {
                "type": "image",
                "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"},
            },
        ]
        msgs = await fake.turn(content)
    assert msgs[-1]["result"] == "echo: look\n[image:image/png]"


async def test_first_initialize_sets_system_prompt_second_does_not(tmp_path: Path) -> None:
    """Observed on the real CLI: a second initialize succeeds but keeps the first prompt."""
    async with fake_claude(tmp_path, *WORKER_ARGS, "--system-prompt", "SPAWN") as fake:
        await fake.ctl("i1", "initialize", systemPrompt="SYS-A")
        first = await fake.turn(directive(echo_system=True, reply="x"))
        again = await fake.ctl("i2", "initialize", systemPrompt="SYS-B")
        second = await fake.turn(directive(echo_system=True, reply="x"))
        await fake.turn("/clear")
        third = await fake.turn(directive(echo_system=True, reply="x"))
    assert again["response"]["subtype"] == "success"
    assert (
        first[-1]["result"] == second[-1]["result"] == third[-1]["result"] == "[system: SYS-A]\nx"
    )


async def test_set_model_and_clear(tmp_path: Path) -> None:
    async with fake_claude(tmp_path) as fake:
        first = await fake.turn("one")
        await fake.ctl("m1", "set_model", model="claude-haiku-4-5")
        second = await fake.turn("two")
        cleared = await fake.turn("/clear")
        third = await fake.turn("three")
    replay = [m for m in fake.seen if m["type"] == "user" and m.get("isReplay")]
    assert (
        replay[0]["message"]["content"]
        == "<local-command-stdout>Set model to claude-haiku-4-5</local-command-stdout>"
    )
    assert first[0]["model"] == "claude-sonnet-4-5" and second[0]["model"] == "claude-haiku-4-5"
    assert kinds(cleared) == [
        ("system", "init"),
        ("assistant", "text", ""),
        ("result", "success", "False"),
    ]
    assert cleared[-1]["num_turns"] == 0 and cleared[-1]["result"] == ""
    assert cleared[0]["session_id"] != second[0]["session_id"] == first[0]["session_id"]
    assert third[0]["session_id"] == cleared[0]["session_id"]


async def test_user_lines_during_a_turn_merge_into_the_next(tmp_path: Path) -> None:
    async with fake_claude(tmp_path) as fake:
        await fake.send(user(directive(reply="slow", chunk_chars=1, chunk_delay=0.05)))
        await fake.until(lambda m: key(m)[2:] == ("text_delta",))
        await fake.send(user(directive(echo=True) + "\nQ2"))
        await fake.send(user("Q3"))
        await fake.until(lambda m: m["type"] == "result")
        merged = await fake.until(lambda m: m["type"] == "result")
    assert merged[-1]["result"] == "echo: Q2\nQ3"


async def test_parallel_tool_calls_are_sent_one_at_a_time(tmp_path: Path) -> None:
    """Observed: the second tools/call goes out only after the first was answered."""
    calls = [{"name": "get_weather", "arguments": {"city": c}} for c in ("Tokyo", "Paris")]
    async with fake_claude(tmp_path, *WORKER_ARGS, *MCP_ARGS) as fake:
        await fake.ctl("i1", "initialize", sdkMcpServers=["client"])
        await fake.send(user(directive(tool_calls=calls, echo_tool_results=True, reply="done")))
        first = (await fake.until(lambda m: mcp_method(m) == "tools/call"))[-1]
        msgs = await fake.until(lambda m: key(m)[:2] == ("stream_event", "message_stop"))
        await fake.send(control("ping", "mcp_status"))
        # The ping is answered while the fake waits: no second call went out before it.
        msgs += await fake.until(lambda m: m["type"] == "control_response")
        assert not any(mcp_method(m) == "tools/call" for m in msgs)
        init = next(m for m in fake.seen if key(m) == ("system", "init"))
        assert init["tools"] == ["mcp__client__get_weather"]
        uses = [m for m in fake.seen if key(m)[:2] == ("assistant", "tool_use")]
        assert [u["message"]["content"][0]["input"]["city"] for u in uses] == ["Tokyo", "Paris"]
        assert (
            first["request"]["message"]["params"]["_meta"]["claudecode/toolUseId"]
            == uses[0]["message"]["content"][0]["id"]
        )
        await fake.send(mcp_reply(first, {"content": [{"type": "text", "text": "Sunny"}]}))
        second = (await fake.until(lambda m: mcp_method(m) == "tools/call"))[-1]
        assert second["request"]["message"]["params"]["arguments"] == {"city": "Paris"}
        await fake.send(mcp_reply(second, {"content": [{"type": "text", "text": "Rain"}]}))
        rest = await fake.until(lambda m: m["type"] == "result")
    results = [m for m in rest if key(m)[:2] == ("user", "tool_result")]
    assert [r["tool_use_result"][0]["text"] for r in results] == ["Sunny", "Rain"]
    assert rest[-1]["num_turns"] == 3
    assert rest[-1]["result"].startswith("done\n[toolu_")
    assert "Sunny" in rest[-1]["result"] and "Rain" in rest[-1]["result"]


async def test_interrupt_streaming_turn_then_usable(tmp_path: Path) -> None:
    async with fake_claude(tmp_path) as fake:
        await fake.send(user(directive(reply="x" * 50, chunk_chars=1, chunk_delay=0.05)))
        await fake.until(lambda m: key(m)[2:] == ("text_delta",))
        await fake.send(control("int1", "interrupt"))
        msgs = await fake.until(lambda m: m["type"] == "result")
        after = await fake.turn("again")
    tail = [k for k in kinds(msgs) if k[0] != "stream_event"]
    assert tail[-3:] == [
        ("control_response", "success"),
        ("user", "text", ""),
        ("result", "error_during_execution", "True"),
    ]
    assert msgs[-2]["message"]["content"][0]["text"] == "[Request interrupted by user]"
    assert after[-1]["subtype"] == "success"


async def test_interrupt_with_pending_tool_call_cancels_it(tmp_path: Path) -> None:
    async with fake_claude(tmp_path, *WORKER_ARGS, *MCP_ARGS) as fake:
        await fake.send(user(directive(tool_calls=[{"name": "get_weather", "arguments": {}}])))
        call = (await fake.until(lambda m: mcp_method(m) == "tools/call"))[-1]
        await fake.until(lambda m: key(m)[:2] == ("stream_event", "message_stop"))
        await fake.send(control("int1", "interrupt"))
        msgs = await fake.until(lambda m: m["type"] == "result")
        await fake.send(mcp_reply(call, {"content": []}))  # a late reply is ignored
        after = await fake.turn("again")
    cancelled = msgs[0]
    assert mcp_method(cancelled) == "notifications/cancelled"
    assert (
        cancelled["request"]["message"]["params"]["requestId"] == call["request"]["message"]["id"]
    )
    assert msgs[-1]["terminal_reason"] == "aborted_tools"
    assert after[-1]["subtype"] == "success"


async def test_ignore_interrupt(tmp_path: Path) -> None:
    async with fake_claude(tmp_path) as fake:
        await fake.send(
            user(directive(ignore_interrupt=True, reply="abc", chunk_chars=1, chunk_delay=0.05))
        )
        await fake.until(lambda m: key(m)[2:] == ("text_delta",))
        await fake.send(control("int1", "interrupt"))
        msgs = await fake.until(lambda m: m["type"] == "result")
    assert msgs[-1]["subtype"] == "success"
    assert not any(m["type"] == "control_response" for m in msgs)


async def test_api_error_result_and_failed_prompt_carried(tmp_path: Path) -> None:
    async with fake_claude(tmp_path) as fake:
        msgs = await fake.turn(
            directive(api_error=429, api_retries=3, retry_delay_ms=1) + "\nfirst"
        )
        after = await fake.turn(directive(echo=True) + "\nsecond")
    retries = [m for m in msgs if key(m) == ("system", "api_retry")]
    assert [r["attempt"] for r in retries] == [1, 2, 3]
    assert {(r["error_status"], r["error"]) for r in retries} == {(429, "rate_limit")}
    assert msgs[-2]["error"] == "rate_limit"
    result = msgs[-1]
    assert (result["subtype"], result["is_error"], result["api_error_status"]) == (
        "success",
        True,
        429,
    )
    assert after[-1]["result"] == "echo: first\nsecond"


async def test_api_error_hang_still_answers_interrupt(tmp_path: Path) -> None:
    async with fake_claude(tmp_path) as fake:
        await fake.send(user(directive(api_error=401, api_error_then="hang", retry_delay_ms=20)))
        msgs = await fake.until(lambda m: key(m) == ("system", "api_retry") and m["attempt"] == 3)
        assert msgs[-1]["error"] == "authentication_failed"
        await fake.send(control("int1", "interrupt"))
        msgs = await fake.until(lambda m: m["type"] == "result")
    assert msgs[-1]["subtype"] == "error_during_execution"


async def test_crash_mid_turn(tmp_path: Path) -> None:
    async with fake_claude(tmp_path) as fake:
        await fake.send(
            user(directive(crash_mid_turn=True, crash_exit_code=7, reply="abcdef", chunk_chars=2))
        )
        deltas = await _deltas_until_eof(fake)
        assert await fake.wait() == 7
        assert "crashed mid-turn" in await fake.stderr()
    assert deltas == 1


async def _deltas_until_eof(fake: Fake) -> int:
    deltas = 0
    while True:
        try:
            msg = await fake.next()
        except EOFError:
            return deltas
        deltas += key(msg)[2:] == ("text_delta",)


async def test_hang_mid_turn_until_interrupt(tmp_path: Path) -> None:
    async with fake_claude(tmp_path) as fake:
        await fake.send(user(directive(hang_mid_turn=True, reply="abcdef", chunk_chars=2)))
        await fake.until(lambda m: key(m)[2:] == ("text_delta",))
        # Still responsive, but the turn makes no progress.
        await fake.send(control("ping", "mcp_status"))
        pong = await fake.until(lambda m: m["type"] == "control_response")
        assert kinds(pong) == [("control_response", "success")]
        await fake.send(control("int1", "interrupt"))
        msgs = await fake.until(lambda m: m["type"] == "result")
    assert msgs[-1]["subtype"] == "error_during_execution"


async def test_garbage_stderr_and_large_output(tmp_path: Path) -> None:
    async with fake_claude(tmp_path) as fake:
        await fake.send(
            user(directive(garbage_line=True, stderr="fake warning", large_output=300_000))
        )
        first = await fake.raw_line()
        assert first == b"this is not JSON: fake claude garbage_line"
        msgs = await fake.until(lambda m: m["type"] == "result")
        assert fake.proc.stdin is not None
        await fake.proc.stdin.aclose()
        assert await fake.wait() == 0
        assert "fake warning" in await fake.stderr()
    deltas = [m for m in msgs if key(m)[2:] == ("text_delta",)]
    assert len(deltas) == 1 and len(deltas[0]["event"]["delta"]["text"]) >= 300_000


async def test_not_json_on_stdin_is_fatal(tmp_path: Path) -> None:
    async with fake_claude(tmp_path) as fake:
        assert fake.proc.stdin is not None
        await fake.proc.stdin.send_all(b"not json\n")
        assert await fake.wait() == 1


async def test_unknown_flags_are_accepted_and_recorded(tmp_path: Path) -> None:
    record = tmp_path / "record.jsonl"
    async with fake_claude(
        tmp_path, *WORKER_ARGS, "--future-flag", "--effort", "high", env={RECORD_ENV: str(record)}
    ) as fake:
        await fake.ctl("r1", "mcp_status")
        await fake.turn("hi")
        assert fake.proc.stdin is not None
        await fake.proc.stdin.aclose()
        assert await fake.wait() == 0
        pid = fake.proc.pid
    facts = [json.loads(line) for line in record.read_text().splitlines()]
    start = facts[0]
    assert start["argv"][1:] == [*WORKER_ARGS, "--future-flag", "--effort", "high"]
    assert start["pid"] == pid and start["cwd"] == str(tmp_path)
    assert start["env"][RECORD_ENV] == str(record)
    assert {"unknown_flags": ["--future-flag"]} in facts
    stdin = [f["stdin"] for f in facts if "stdin" in f]
    assert stdin[0] == control("r1", "mcp_status") and stdin[1] == user("hi")


# ---------------------------------------------------------------- process-level knobs


async def test_boot_delay(tmp_path: Path) -> None:
    async with fake_claude(tmp_path, default={"boot_delay": 0.3}) as fake:
        start = time.monotonic()
        await fake.ctl("r1", "mcp_status")
        assert time.monotonic() - start >= 0.3


async def test_crash_at_boot(tmp_path: Path) -> None:
    async with fake_claude(tmp_path, default={"crash_at_boot": True, "crash_exit_code": 5}) as fake:
        assert await fake.wait() == 5
        assert "crashed at boot" in await fake.stderr()


async def test_hang_at_boot(tmp_path: Path) -> None:
    async with fake_claude(tmp_path, default={"hang_at_boot": True}) as fake:
        await fake.send(control("r1", "mcp_status"))
        # No signal exists for "never answers": a short bounded wait is the test.
        with trio.move_on_after(0.5) as scope:
            await fake.next()
        assert scope.cancelled_caught


async def test_ignore_sigterm_and_grandchild(tmp_path: Path) -> None:
    record = tmp_path / "record.jsonl"
    async with fake_claude(
        tmp_path,
        default={"ignore_sigterm": True, "spawn_grandchild": True},
        env={RECORD_ENV: str(record)},
    ) as fake:
        await fake.ctl("r1", "mcp_status")
        os.kill(fake.proc.pid, signal.SIGTERM)
        await fake.ctl("r2", "mcp_status")  # still alive and answering
        grandchild = next(
            f["grandchild_pid"]
            for f in map(json.loads, record.read_text().splitlines())
            if "grandchild_pid" in f
        )
        assert os.getpgid(grandchild) == fake.proc.pid
        os.killpg(fake.proc.pid, signal.SIGKILL)
        assert await fake.wait() == -signal.SIGKILL
    with trio.fail_after(BOUND):
        # Polling: a grandchild's death gives this process no signal to wait on.
        while _alive(grandchild):  # noqa: ASYNC110
            await trio.sleep(0.01)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A killed grandchild is reparented and may linger as a zombie until reaped.
    with suppress(OSError), open(f"/proc/{pid}/stat") as f:
        return f.read().split()[2] != "Z"
    return False


# ---------------------------------------------------------------- one-shot form


async def test_one_shot_text_json_stream(tmp_path: Path) -> None:
    async def run(*args: str) -> tuple[int, str, str]:
        with trio.fail_after(BOUND):
            done = await trio.run_process(
                [sys.executable, str(FIXTURE), *args],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                stdin=b"",
                cwd=str(tmp_path),
            )
        return done.returncode, done.stdout.decode(), done.stderr.decode()

    rc, out, _ = await run("-p", "say hi")
    assert (rc, out) == (0, "Hello from the fake CLI.\n")
    rc, out, _ = await run("-p", "say hi", "--output-format", "json")
    result = json.loads(out)
    assert rc == 0 and result["type"] == "result" and result["result"] == "Hello from the fake CLI."
    rc, out, _ = await run(
        "-p", directive(reply="streamed"), "--output-format", "stream-json", "--verbose"
    )
    lines = [json.loads(line) for line in out.splitlines()]
    assert kinds(lines) == [
        ("system", "init"),
        ("assistant", "text", ""),
        ("result", "success", "False"),
    ]
    assert lines[-1]["result"] == "streamed"
    rc, _, err = await run("-p", "x", "--output-format", "stream-json")
    assert rc == 1 and "requires --verbose" in err


def test_scenario_files_are_valid() -> None:
    """Every bundled claude scenario and example file structures (a typo must fail here)."""
    from clibridge.testing.scenario import BUNDLED_DIR, load_book, scenario_from_dict

    bundled = sorted(BUNDLED_DIR.glob("claude_*.json"))
    examples = sorted((ROOT / "fixtures" / "fake_cli" / "scenarios").glob("claude_*.json"))
    assert bundled and examples
    for path in bundled:
        scenario_from_dict(json.loads(path.read_text()))
    for path in examples:
        book = load_book({SCENARIO_ENV: str(path)})
        for name in book.named:
            book.for_turn(f"@fake:{name}\nhi")


async def test_fake_claude_answers_a_bad_directive_like_an_upstream_400(tmp_path: Path) -> None:
    """Regression: a malformed ``@fake`` line crashed the fake claude (exit -6)."""
    async with fake_claude(tmp_path) as fake:
        await fake.send(user('@fake {"chunk_char": 2}\nhi'))
        msgs = await fake.until(lambda m: m["type"] == "result")
        result = msgs[-1]
        assert (result["is_error"], result["api_error_status"]) == (True, 400)
        assert result["result"].startswith("API Error: 400 {")
        body = json.loads(result["result"].removeprefix("API Error: 400 "))
        assert "unknown field 'chunk_char'" in body["error"]["message"]
        assert (msgs[0]["type"], msgs[0]["subtype"]) == ("system", "init")
        assert any(m.get("error") == "invalid_request" for m in msgs if m["type"] == "assistant")
        # the same process serves the next turn, and nothing of the refused one is carried
        await fake.send(user(directive(echo=True) + "\nnext"))
        msgs = await fake.until(lambda m: m["type"] == "result")
        assert msgs[-1]["result"] == "echo: next"
        assert fake.proc.returncode is None
