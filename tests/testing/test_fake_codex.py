"""The fake ``codex app-server``: schema-valid, shaped like the recorded real transcripts.

Every message the fake prints and every message a test writes goes through the app-server
JSON schema (:mod:`clibridge.testing.codex_schema`); a test fails on any invalid one unless
it names the method it deliberately sends off-schema.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
import trio

from clibridge.testing.codex_schema import SchemaViolation, WireChecker, load_schema
from clibridge.testing.scenario import RECORD_ENV, SCENARIO_ENV, directive

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "fixtures" / "fake_cli" / "codex"
SAMPLES = Path(__file__).parent / "samples"
SHARED_SAMPLE = SAMPLES / "shared" / "codex_appserver_turn.ndjson"
BOUND = 10  # seconds: generous bound on any single real wait

Msg = dict[str, Any]


def load_sample(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Fake:
    """A test's end of the fake's stdio, validating both directions."""

    def __init__(self, proc: trio.Process, allow: frozenset[str] = frozenset()) -> None:
        self.proc = proc
        self.checker = WireChecker()
        self.allow = allow  # methods a test sends / expects off-schema on purpose
        self._buf = bytearray()
        self._next_id = 1
        self.seen: list[Msg] = []

    async def send(self, msg: Msg) -> None:
        if msg.get("method") not in self.allow:
            self.checker.client_sent(msg)
        assert self.proc.stdin is not None
        await self.proc.stdin.send_all(json.dumps(msg).encode() + b"\n")

    async def line(self) -> bytes:
        assert self.proc.stdout is not None
        while b"\n" not in self._buf:
            data = await self.proc.stdout.receive_some(65536)
            if not data:
                raise EOFError("fake codex closed stdout")
            self._buf += data
        line, _, rest = self._buf.partition(b"\n")
        self._buf = bytearray(rest)
        return bytes(line)

    async def recv(self) -> Msg:
        raw = await self.line()
        msg: Msg
        try:
            msg = json.loads(raw)
        except ValueError:
            msg = {"garbage": raw.decode()}
            self.seen.append(msg)
            return msg
        assert "jsonrpc" not in msg, "the real app-server sends no jsonrpc field"
        if msg.get("method") not in self.allow:
            self.checker.server_sent(msg)
        self.seen.append(msg)
        return msg

    async def until(self, pred: Callable[[Msg], bool]) -> list[Msg]:
        got: list[Msg] = []
        with trio.fail_after(BOUND):
            while True:
                msg = await self.recv()
                got.append(msg)
                if pred(msg):
                    return got

    async def request(self, method: str, params: Mapping[str, Any]) -> int:
        req_id = self._next_id
        self._next_id += 1
        await self.send({"jsonrpc": "2.0", "id": req_id, "method": method, "params": params})
        return req_id

    async def call(self, method: str, params: Mapping[str, Any]) -> Msg:
        req_id = await self.request(method, params)
        got = await self.until(lambda m: m.get("id") == req_id and "method" not in m)
        return got[-1]

    async def handshake(self, *, experimental: bool = False) -> Msg:
        params: Msg = {"clientInfo": {"name": "clibridge", "version": "0.0.0"}}
        if experimental:
            params["capabilities"] = {"experimentalApi": True}
        reply = await self.call("initialize", params)
        await self.send({"jsonrpc": "2.0", "method": "initialized"})
        return reply

    async def thread(self, **params: Any) -> str:
        reply = await self.call("thread/start", {"ephemeral": True, **params})
        thread_id: str = reply["result"]["thread"]["id"]
        return thread_id

    async def start_turn(self, thread_id: str, text: str) -> int:
        return await self.request(
            "turn/start", {"threadId": thread_id, "input": [{"type": "text", "text": text}]}
        )

    async def turn(self, thread_id: str, text: str) -> list[Msg]:
        await self.start_turn(thread_id, text)
        return await self.until(lambda m: is_turn_done(m, thread_id))

    async def reply(self, req_id: Any, result: Msg) -> None:
        await self.send({"jsonrpc": "2.0", "id": req_id, "result": result})


def is_turn_done(msg: Msg, thread_id: str | None = None) -> bool:
    return msg.get("method") == "turn/completed" and (
        thread_id is None or msg["params"]["threadId"] == thread_id
    )


def methods(msgs: list[Msg]) -> list[str]:
    return [m.get("method") or ("error" if "error" in m else "response") for m in msgs]


def deltas(msgs: list[Msg]) -> str:
    return "".join(
        m["params"]["delta"] for m in msgs if m.get("method") == "item/agentMessage/delta"
    )


def completed_turn(msgs: list[Msg]) -> Msg:
    turn: Msg = next(m for m in msgs if m.get("method") == "turn/completed")["params"]["turn"]
    return turn


@asynccontextmanager
async def fake_codex(
    tmp_path: Path,
    default: Mapping[str, Any] | None = None,
    *,
    named: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    argv: tuple[str, ...] = ("-c", "model=gpt-stub", "-c", "model_provider=stub"),
    allow: frozenset[str] = frozenset(),
    command: tuple[str, ...] = (sys.executable, str(FIXTURE)),
) -> AsyncIterator[Fake]:
    book = tmp_path / "scenario.json"
    book.write_text(json.dumps({"default": dict(default or {}), "named": dict(named or {})}))
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("CLIBRIDGE_")}
    child_env.update({SCENARIO_ENV: str(book), "CODEX_HOME": str(tmp_path), **(env or {})})
    proc = await trio.lowlevel.open_process(
        [*command, "app-server", *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env,
        cwd=tmp_path,
        start_new_session=True,
    )
    try:
        yield Fake(proc, allow)
    finally:
        with trio.CancelScope(shield=True):
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


# --------------------------------------------------------------------------- schema helper


def test_schema_accepts_every_recorded_real_transcript() -> None:
    files = [*sorted(SAMPLES.glob("codex_*.ndjson")), SHARED_SAMPLE]
    for path in files:
        checker = WireChecker()
        for entry in load_sample(path):
            msg = entry["msg"]
            if entry["dir"] == "out":
                checker.server_sent(msg)
            elif not _deliberately_off_schema(msg):
                checker.client_sent(msg)


def _deliberately_off_schema(msg: Any) -> bool:
    """The probes in the samples that tested how the real CLI reacts to bad input."""
    if not isinstance(msg, dict):
        return True  # a non-JSON line
    bogus = msg.get("method") == "bogus/method" or msg.get("params", {}).get("bogus")
    return bool(bogus) or msg.get("id") == 77  # 77: a reply to a request never sent


def test_schema_rejects_what_the_real_cli_would_not_send() -> None:
    schema = load_schema()
    ok = {"method": "turn/completed", "params": completed_turn_fixture()}
    assert schema.validate_message("server", ok) == "notification"
    bad = json.loads(json.dumps(ok))
    bad["params"]["turn"]["status"] = "finished"
    with pytest.raises(SchemaViolation, match="status"):
        schema.validate_message("server", bad)
    with pytest.raises(SchemaViolation, match="lacks"):
        schema.validate_message("client", {"id": 1, "method": "newConversationX", "params": {}})
    checker = WireChecker()
    checker.client_sent({"id": 7, "method": "thread/start", "params": {}})
    with pytest.raises(SchemaViolation, match="result of thread/start"):
        checker.server_sent({"id": 7, "result": {"thread": {}}})
    with pytest.raises(SchemaViolation, match="nobody asked"):
        checker.server_sent({"id": 99, "result": {}})
    assert (
        schema.response_ref("server", "item/tool/call") == "#/definitions/DynamicToolCallResponse"
    )


def completed_turn_fixture() -> Msg:
    for entry in load_sample(SHARED_SAMPLE):
        if entry["msg"].get("method") == "turn/completed":
            params: Msg = entry["msg"]["params"]
            return params
    raise AssertionError("sample has no turn/completed")


# --------------------------------------------------------------------------- replay


def has_id(want: object) -> Callable[[Msg], bool]:
    """A predicate for :meth:`until`: a message with id ``want``."""
    return lambda m: m.get("id") == want


def keys_shape(value: Any) -> Any:
    """Dict keys all the way down (values and nulls ignored): the structure of a message."""
    if isinstance(value, dict):
        return {k: keys_shape(v) for k, v in value.items() if k != "emittedAtMs"}
    if isinstance(value, list):
        return [keys_shape(v) for v in value[:1]]
    return None


async def test_replays_the_recorded_turn(tmp_path: Path) -> None:
    sample = load_sample(SHARED_SAMPLE)
    reply = "Hello from fake responses."
    async with fake_codex(
        tmp_path, {"reply": reply, "chunk_chars": 10, "input_tokens": 5, "output_tokens": 4}
    ) as fake:
        out: list[Msg] = []
        sample_thread = ""
        for entry in (e for e in sample if e["dir"] == "in"):
            msg = entry["msg"]
            if msg.get("method") == "turn/start":
                sample_thread = msg["params"]["threadId"]
                thread_id = next(m for m in out if "result" in m and "thread" in m["result"])
                msg = json.loads(
                    json.dumps(msg).replace(sample_thread, thread_id["result"]["thread"]["id"])
                )
            await fake.send(msg)
            if "id" in msg:
                out += await fake.until(has_id(msg["id"]))
        out += await fake.until(is_turn_done)
    expected = [e["msg"] for e in sample if e["dir"] == "out"]
    assert methods(out) == methods(expected)
    for got, want in zip(out, expected, strict=True):
        if got.get("method", "").startswith("item/agentMessage/delta"):
            continue
        assert keys_shape(got) == keys_shape(want), got.get("method")
    assert deltas(out) == reply
    usage = next(m for m in out if m.get("method") == "thread/tokenUsage/updated")
    assert usage["params"]["tokenUsage"]["last"]["totalTokens"] == 9


# --------------------------------------------------------------------------- protocol


async def test_handshake_errors_and_unknown_methods(tmp_path: Path) -> None:
    async with fake_codex(tmp_path, allow=frozenset({"bogus/method"})) as fake:
        early = await fake.call("thread/start", {"ephemeral": True})
        assert early["error"] == {"code": -32600, "message": "Not initialized"}
        init = await fake.handshake()
        assert init["result"]["codexHome"] == str(tmp_path)
        assert init["result"]["userAgent"].startswith("clibridge/0.169.0")
        again = await fake.call("initialize", {"clientInfo": {"name": "x", "version": "1"}})
        assert again["error"]["message"] == "Already initialized"
        bogus = await fake.call("bogus/method", {})
        # Observed: the real app-server answers an unknown method with -32600, not -32601.
        assert bogus["error"]["code"] == -32600
        assert "unknown variant `bogus/method`" in bogus["error"]["message"]
        tools = [{"type": "function", "name": "t", "description": "d", "inputSchema": {}}]
        no_exp = await fake.call("thread/start", {"ephemeral": True, "dynamicTools": tools})
        assert "requires experimentalApi" in no_exp["error"]["message"]
        lost = await fake.call("turn/interrupt", {"threadId": "nope", "turnId": "x"})
        assert "thread not found" in lost["error"]["message"]


async def test_threads_interleave_in_one_process(tmp_path: Path) -> None:
    slow = directive(reply="s" * 10, chunk_chars=1, chunk_delay=0.1)
    async with fake_codex(tmp_path) as fake:
        await fake.handshake()
        a, b = await fake.thread(), await fake.thread()
        await fake.start_turn(a, "slow\n" + slow)
        got = await fake.until(lambda m: m.get("method") == "item/agentMessage/delta")
        await fake.start_turn(b, "fast")
        got += await fake.until(lambda m: is_turn_done(m, b))
        assert not any(is_turn_done(m, a) for m in got), "thread a's delays blocked thread b"
        rest = await fake.until(lambda m: is_turn_done(m, a))
        a_deltas = [m for m in got + rest if m.get("method") == "item/agentMessage/delta"]
        assert (
            "".join(m["params"]["delta"] for m in a_deltas if m["params"]["threadId"] == a)
            == "s" * 10
        )


async def test_steering_a_busy_thread_joins_the_running_turn(tmp_path: Path) -> None:
    async with fake_codex(tmp_path, {"chunk_chars": 2, "chunk_delay": 0.05}) as fake:
        await fake.handshake()
        t = await fake.thread()
        first = await fake.start_turn(t, "one")
        got = await fake.until(lambda m: m.get("id") == first)
        turn_id = got[-1]["result"]["turn"]["id"]
        steer = await fake.call(
            "turn/start", {"threadId": t, "input": [{"type": "text", "text": "two"}]}
        )
        assert steer["result"]["turn"]["id"] == turn_id
        rest = await fake.until(is_turn_done)
        users = [
            m
            for m in rest
            if m.get("method") == "item/completed" and m["params"]["item"]["type"] == "userMessage"
        ]
        assert [u["params"]["item"]["content"][0]["text"] for u in users][-1] == "two"


# --------------------------------------------------------------------------- scenario knobs


async def test_reply_knobs(tmp_path: Path) -> None:
    async with fake_codex(
        tmp_path, {"reply": "R"}, named={"big": {"large_output": 200_000}}
    ) as fake:
        await fake.handshake()
        t = await fake.thread()
        msgs = await fake.turn(t, "hi there\n" + directive(echo=True, chunk_chars=3))
        assert deltas(msgs) == "echo: hi there"
        assert [len(m["params"]["delta"]) for m in msgs if "delta" in m.get("params", {})] == [
            3,
            3,
            3,
            3,
            2,
        ]
        msgs = await fake.turn(
            t, directive(input_tokens=11, output_tokens=7, cache_read_input_tokens=2)
        )
        usage = next(m for m in msgs if m.get("method") == "thread/tokenUsage/updated")["params"][
            "tokenUsage"
        ]
        assert usage["last"] == {
            "totalTokens": 18,
            "inputTokens": 11,
            "cachedInputTokens": 2,
            "cacheWriteInputTokens": 0,
            "outputTokens": 7,
            "reasoningOutputTokens": 0,
        }
        assert usage["total"]["inputTokens"] > 11  # accumulates over the thread's turns
        msgs = await fake.turn(t, "@fake:big")
        assert len(deltas(msgs)) == 200_001  # "R" + filler, one delta on one long line
        msgs = await fake.turn(t, directive(thinking="let me think", chunk_chars=4))
        assert (
            "".join(
                m["params"]["delta"]
                for m in msgs
                if m.get("method") == "item/reasoning/summaryTextDelta"
            )
            == "let me think"
        )
        order = methods(msgs)
        assert order.index("item/reasoning/summaryPartAdded") < order.index(
            "item/agentMessage/delta"
        )


async def test_delays_garbage_and_stderr(tmp_path: Path) -> None:
    async with fake_codex(tmp_path) as fake:
        await fake.handshake()
        t = await fake.thread()
        start = trio.current_time()
        msgs = await fake.turn(t, directive(first_delay=0.3, garbage_line=True, stderr="to stderr"))
        assert trio.current_time() - start >= 0.3
        assert {"garbage": "this is not JSON: fake codex garbage line"} in msgs
        assert fake.proc.stderr is not None
        with trio.fail_after(BOUND):
            assert b"to stderr" in await fake.proc.stderr.receive_some(4096)


# --------------------------------------------------------------------------- server requests


TOOLS = [
    {
        "type": "function",
        "name": "lookup",
        "description": "Look up",
        "inputSchema": {"type": "object"},
    },
    {"type": "function", "name": "add", "description": "Add", "inputSchema": {"type": "object"}},
]


async def test_parallel_dynamic_tool_calls_round_trip(tmp_path: Path) -> None:
    calls = [
        {"name": "lookup", "arguments": {"q": "x"}},
        {"name": "add", "arguments": {"a": 1}},
        {"name": "undeclared", "arguments": {}},
    ]
    async with fake_codex(tmp_path, {"tool_calls": calls, "reply": "done"}) as fake:
        await fake.handshake(experimental=True)
        t = await fake.thread(dynamicTools=TOOLS)
        await fake.start_turn(t, "use tools")
        requests: list[Msg] = []
        while len(requests) < 2:
            got = await fake.until(lambda m: m.get("method") == "item/tool/call")
            requests.append(got[-1])
        # both calls are out before any answer (parallel), like the real CLI
        assert [r["params"]["tool"] for r in requests] == ["lookup", "add"]
        assert [r["id"] for r in requests] == [0, 1]
        assert requests[0]["params"]["arguments"] == {"q": "x"}
        for r in reversed(requests):
            await fake.reply(
                r["id"], {"contentItems": [{"type": "inputText", "text": "ok"}], "success": True}
            )
        msgs = await fake.until(is_turn_done)
        tool_items = [
            m["params"]["item"]
            for m in msgs
            if m.get("method") == "item/completed"
            and m["params"]["item"]["type"] == "dynamicToolCall"
        ]
        assert {i["tool"] for i in tool_items} == {"lookup", "add"}
        assert all(i["status"] == "completed" and i["success"] for i in tool_items)
        assert deltas(msgs) == "done"
        assert completed_turn(msgs)["status"] == "completed"
        assert fake.checker.outstanding("server") == []


@pytest.mark.parametrize(("decision", "status"), [("decline", "declined"), ("accept", "completed")])
async def test_approval_round_trip(tmp_path: Path, decision: str, status: str) -> None:
    async with fake_codex(tmp_path, {"approval_request": True}) as fake:
        await fake.handshake()
        t = await fake.thread()
        await fake.start_turn(t, "run")
        got = await fake.until(lambda m: m.get("method") == "item/commandExecution/requestApproval")
        assert got[-2]["params"]["item"]["type"] == "commandExecution"
        await fake.reply(got[-1]["id"], {"decision": decision})
        msgs = await fake.until(is_turn_done)
        assert methods(msgs)[:2] == ["serverRequest/resolved", "item/completed"]
        assert msgs[1]["params"]["item"]["status"] == status
        assert completed_turn(msgs)["status"] == "completed"


async def test_unknown_server_request_continues_after_an_error_reply(tmp_path: Path) -> None:
    method = "fake/unknownServerRequest"
    async with fake_codex(
        tmp_path, {"unknown_server_request": True}, allow=frozenset({method})
    ) as fake:
        await fake.handshake()
        t = await fake.thread()
        await fake.start_turn(t, "x")
        got = await fake.until(lambda m: m.get("method") == method)
        await fake.send(
            {"jsonrpc": "2.0", "id": got[-1]["id"], "error": {"code": -32601, "message": "no"}}
        )
        msgs = await fake.until(is_turn_done)
        assert completed_turn(msgs)["status"] == "completed"


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("knobs", "info", "sample"),
    [
        (
            {"api_error": 429},
            {"responseTooManyFailedAttempts": {"httpStatusCode": 429}},
            "codex_error_429",
        ),
        ({"api_error": 401}, {"httpConnectionFailed": {"httpStatusCode": 401}}, "codex_error_401"),
        (
            {"error_notification": "usageLimitExceeded: You've hit your usage limit"},
            "usageLimitExceeded",
            None,
        ),
        ({"error_notification": "something broke"}, "other", None),
    ],
)
async def test_errors_fail_the_turn(
    tmp_path: Path, knobs: Msg, info: Any, sample: str | None
) -> None:
    async with fake_codex(tmp_path, knobs) as fake:
        await fake.handshake()
        t = await fake.thread()
        msgs = await fake.turn(t, "hi")
    err = next(m for m in msgs if m.get("method") == "error")["params"]
    assert err["error"]["codexErrorInfo"] == info
    assert err["willRetry"] is False
    turn = completed_turn(msgs)
    assert turn["status"] == "failed"
    assert turn["error"] == err["error"]
    if sample:
        real = [e["msg"] for e in load_sample(SAMPLES / f"{sample}.ndjson") if e["dir"] == "out"]
        tail = methods(real)[methods(real).index("turn/started") :]
        mine = [m for m in methods(msgs) if m != "response"]
        assert mine[mine.index("turn/started") :] == [m for m in tail if m != "response"]


async def test_api_retries_then_hang_until_interrupt(tmp_path: Path) -> None:
    knobs = {"api_error": 529, "api_retries": 2, "retry_delay_ms": 10, "api_error_then": "hang"}
    async with fake_codex(tmp_path, knobs) as fake:
        await fake.handshake()
        t = await fake.thread()
        await fake.start_turn(t, "hi")
        got = await fake.until(lambda m: m.get("method") == "error")
        got += await fake.until(lambda m: m.get("method") == "error")
        assert all(m["params"]["willRetry"] for m in got if m.get("method") == "error")
        turn_id = next(m for m in got if m.get("method") == "turn/started")["params"]["turn"]["id"]
        await fake.request("turn/interrupt", {"threadId": t, "turnId": turn_id})
        msgs = await fake.until(is_turn_done)
        assert completed_turn(msgs)["status"] == "interrupted"


# --------------------------------------------------------------------------- interrupt


@pytest.mark.parametrize("knobs", [{"hang_mid_turn": True}, {"chunk_chars": 1, "chunk_delay": 0.2}])
async def test_interrupt_ends_the_turn(tmp_path: Path, knobs: Msg) -> None:
    async with fake_codex(tmp_path) as fake:
        await fake.handshake()
        t = await fake.thread()
        await fake.start_turn(t, "go\n" + directive(**knobs))
        got = await fake.until(lambda m: m.get("method") == "item/agentMessage/delta")
        turn_id = next(m for m in got if m.get("method") == "turn/started")["params"]["turn"]["id"]
        wrong = await fake.call("turn/interrupt", {"threadId": t, "turnId": "other"})
        assert "expected active turn id other" in wrong["error"]["message"]
        req = await fake.request("turn/interrupt", {"threadId": t, "turnId": turn_id})
        msgs = await fake.until(is_turn_done)
        # Observed order: {} reply, thread idle, turn/completed interrupted without items.
        assert methods(msgs[-3:]) == ["response", "thread/status/changed", "turn/completed"]
        assert msgs[-3]["id"] == req
        turn = completed_turn(msgs)
        assert (turn["status"], turn["items"]) == ("interrupted", [])
        after = await fake.turn(t, "again")  # the thread stays usable
        assert completed_turn(after)["status"] == "completed"


async def test_ignore_interrupt_acknowledges_but_runs_on(tmp_path: Path) -> None:
    async with fake_codex(
        tmp_path, {"ignore_interrupt": True, "chunk_chars": 2, "chunk_delay": 0.05}
    ) as fake:
        await fake.handshake()
        t = await fake.thread()
        await fake.start_turn(t, "go")
        got = await fake.until(lambda m: m.get("method") == "turn/started")
        turn_id = got[-1]["params"]["turn"]["id"]
        ack = await fake.call("turn/interrupt", {"threadId": t, "turnId": turn_id})
        assert ack["result"] == {}
        msgs = await fake.until(is_turn_done)
        assert completed_turn(msgs)["status"] == "completed"


async def test_crash_mid_turn(tmp_path: Path) -> None:
    async with fake_codex(tmp_path, {"crash_mid_turn": True, "crash_exit_code": 7}) as fake:
        await fake.handshake()
        t = await fake.thread()
        await fake.start_turn(t, "go")
        await fake.until(lambda m: m.get("method") == "item/agentMessage/delta")
        with trio.fail_after(BOUND):
            assert await fake.proc.wait() == 7


# --------------------------------------------------------------------------- process level


async def test_boot_delay_and_crash_at_boot(tmp_path: Path) -> None:
    async with fake_codex(tmp_path, {"boot_delay": 0.4}) as fake:
        start = trio.current_time()
        await fake.handshake()
        assert trio.current_time() - start >= 0.35  # spawn happened just before `start`
    async with fake_codex(tmp_path, {"crash_at_boot": True}) as fake:
        with trio.fail_after(BOUND):
            assert await fake.proc.wait() == 3


async def test_hang_at_boot_never_answers(tmp_path: Path) -> None:
    async with fake_codex(tmp_path, {"hang_at_boot": True}) as fake:
        await fake.request("initialize", {"clientInfo": {"name": "c", "version": "1"}})
        with trio.move_on_after(0.5) as scope:
            await fake.recv()
        assert scope.cancelled_caught


async def test_ignore_sigterm_and_grandchild_in_group(tmp_path: Path) -> None:
    record = tmp_path / "record.ndjson"
    knobs = {"ignore_sigterm": True, "spawn_grandchild": True}
    async with fake_codex(tmp_path, knobs, env={RECORD_ENV: str(record)}) as fake:
        await fake.handshake()  # after the grandchild is spawned and SIGTERM ignored
        fake.proc.send_signal(signal.SIGTERM)
        await fake.thread()  # still answering: SIGTERM was ignored
        facts = [json.loads(line) for line in record.read_text().splitlines()]
        grandchild = next(f["grandchild_pid"] for f in facts if "grandchild_pid" in f)
        assert os.getpgid(grandchild) == fake.proc.pid  # same group as the fake
        pidfd = os.pidfd_open(grandchild)  # becomes readable when that process ends
    try:
        # fake_codex() killed the group on exit: the grandchild must die with it.
        with trio.fail_after(BOUND):
            await trio.lowlevel.wait_readable(pidfd)
    finally:
        os.close(pidfd)


async def test_recording(tmp_path: Path) -> None:
    record = tmp_path / "record.ndjson"
    async with fake_codex(tmp_path, env={RECORD_ENV: str(record)}) as fake:
        await fake.handshake()
        t = await fake.thread()
        await fake.turn(t, "hello")
        assert fake.proc.stdin is not None
        await fake.proc.stdin.send_all(b"not json\n")
        await fake.call("thread/start", {"ephemeral": True})  # the fake is past the bad line
    facts = [json.loads(line) for line in record.read_text().splitlines()]
    assert facts[0]["argv"][1:] == [
        "app-server",
        "-c",
        "model=gpt-stub",
        "-c",
        "model_provider=stub",
    ]
    assert facts[0]["cwd"] == str(tmp_path)
    assert facts[0]["env"]["CODEX_HOME"] == str(tmp_path)
    stdin = [f["stdin"] for f in facts[1:]]
    assert [s.get("method") if isinstance(s, dict) else s for s in stdin] == [
        "initialize",
        "initialized",
        "thread/start",
        "turn/start",
        "not json",
        "thread/start",
    ]


async def test_fixture_executable_boot_time(tmp_path: Path) -> None:
    """The fixture runs as `codex` itself (shebang); report spawn -> initialize reply."""
    async with fake_codex(tmp_path, command=(str(FIXTURE),)) as fake:
        start = time.monotonic()
        await fake.handshake()
        elapsed = time.monotonic() - start
    print(f"fake codex spawn -> initialize reply: {elapsed * 1000:.0f} ms")
    assert elapsed < 5


# --------------------------------------------------------------------------- thread/inject_items

INJECT_SAMPLE = SAMPLES / "codex_inject_items.ndjson"


def _msg(role: str, text: str) -> Msg:
    kind = "input_text" if role == "user" else "output_text"
    return {"type": "message", "role": role, "content": [{"type": kind, "text": text}]}


async def test_inject_items_replies_and_errors_like_the_real_one(tmp_path: Path) -> None:
    """Reply shapes and error messages copied from the real 0.169.0 (codex_inject_items.ndjson)."""
    sample = load_sample(INJECT_SAMPLE)
    real_errors = {
        e["msg"]["error"]["message"].split(":")[0] for e in sample if "error" in e["msg"]
    }
    async with fake_codex(tmp_path) as fake:
        await fake.handshake()
        t = await fake.thread()
        first = await fake.request(
            "thread/inject_items", {"threadId": t, "items": [_msg("user", "q1")]}
        )
        got = await fake.until(lambda m: m.get("id") == first)
        # Observed: the first inject announces the thread, before its reply {}
        assert methods(got) == ["thread/started", "response"] and got[-1]["result"] == {}
        again = await fake.call(
            "thread/inject_items", {"threadId": t, "items": [{"type": "bogus"}]}
        )
        assert again["result"] == {}
        errors = {
            "non-object": [1],
            "empty": [],
            "no type": [{}],
            "no content": [{"type": "message", "role": "user"}],
            "string content": [{"type": "message", "role": "user", "content": "x"}],
        }
        messages = {}
        for name, items in errors.items():
            reply = await fake.call("thread/inject_items", {"threadId": t, "items": items})
            assert reply["error"]["code"] == -32600, name
            messages[name] = reply["error"]["message"]
        assert messages == {
            "non-object": "items[0] is not a valid response item: invalid type: integer `1`, "
            "expected internally tagged enum ResponseItem",
            "empty": "items must not be empty",
            "no type": "items[0] is not a valid response item: missing field `type`",
            "no content": "items[0] is not a valid response item: missing field `content`",
            "string content": 'items[0] is not a valid response item: invalid type: string "x", '
            "expected a sequence",
        }
        bad_id = await fake.call("thread/inject_items", {"threadId": "nope", "items": [{}]})
        assert bad_id["error"]["message"].startswith("invalid thread id: invalid character")
        assert "found `n` at 1" in bad_id["error"]["message"]
        lost = await fake.call(
            "thread/inject_items",
            {"threadId": "019a0000-0000-7000-8000-000000000000", "items": [_msg("user", "x")]},
        )
        assert lost["error"]["message"] == "thread not found: 019a0000-0000-7000-8000-000000000000"
        got = await fake.turn(t, "q2")
        assert "thread/started" not in methods(got)  # announced once, by the inject
    fake_errors = {m["error"]["message"].split(":")[0] for m in fake.seen if "error" in m}
    assert real_errors <= fake_errors


async def test_echo_sees_injected_history_and_earlier_turns(tmp_path: Path) -> None:
    """What the real one sent the model (observed at the stub): user / assistant messages, a
    call with its output; not a system message, an unknown item or an orphan output."""
    history = [
        _msg("user", "q1"),
        _msg("system", "never seen"),
        _msg("assistant", "a1"),
        {"type": "bogus"},
        {"type": "function_call", "call_id": "c1", "name": "lookup", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "42"},
        {"type": "function_call_output", "call_id": "zz", "output": "orphan"},
    ]
    async with fake_codex(tmp_path, {"echo": True}) as fake:
        await fake.handshake()
        t = await fake.thread()
        assert (await fake.call("thread/inject_items", {"threadId": t, "items": history}))[
            "result"
        ] == {}
        first = deltas(await fake.turn(t, "q2"))
        assert first == (
            "echo: [user]\nq1\n\n[assistant]\na1\n\n[function_call lookup {}]\n\n"
            "[function_call_output c1]\n42\n\n[user]\nq2"
        )
        second = deltas(await fake.turn(t, "q3"))
        assert second.startswith(first.removeprefix("echo: ").join(["echo: ", "\n\n[assistant]\n"]))
        assert second.endswith("\n\n[user]\nq3")
        fresh = await fake.thread()
        assert deltas(await fake.turn(fresh, "alone")) == "echo: alone"


async def test_inject_during_a_turn_makes_the_model_answer_again(tmp_path: Path) -> None:
    """Observed: items injected mid-turn reach the model in a second sampling of that turn."""
    async with fake_codex(tmp_path, {"echo": True, "chunk_chars": 1, "chunk_delay": 0.05}) as fake:
        await fake.handshake()
        t = await fake.thread()
        await fake.start_turn(t, "go")
        await fake.until(lambda m: m.get("method") == "item/agentMessage/delta")
        reply = await fake.call(
            "thread/inject_items", {"threadId": t, "items": [_msg("user", "mid")]}
        )
        assert reply["result"] == {}
        rest = await fake.until(is_turn_done)
        agent = [i for i in completed_turn(rest)["items"] if i["type"] == "agentMessage"]
        assert [a["text"] for a in agent] == [
            "echo: go",  # already under way when "mid" came
            "echo: go\n\n[assistant]\necho: go\n\n[user]\nmid",
        ]


async def test_no_inject_knob_behaves_like_an_app_server_without_it(tmp_path: Path) -> None:
    async with fake_codex(tmp_path, env={"CLIBRIDGE_FAKE_CODEX_NO_INJECT": "1"}) as fake:
        await fake.handshake()
        t = await fake.thread()
        reply = await fake.call(
            "thread/inject_items", {"threadId": t, "items": [_msg("user", "q")]}
        )
        assert "unknown variant `thread/inject_items`" in reply["error"]["message"]
        assert (
            "expected one of `initialize`, `thread/start`, `turn/start`"
            in (reply["error"]["message"])
        )


# --------------------------------------------------------------------------- bad input


async def test_fake_codex_answers_a_bad_directive_like_an_upstream_400(tmp_path: Path) -> None:
    """Regression: a malformed ``@fake`` line killed the fake codex's stdin reader, so the
    whole app-server (and every thread on it) died."""
    async with fake_codex(tmp_path) as fake:
        await fake.handshake()
        t = await fake.thread()
        msgs = await fake.turn(t, '@fake {"large_output": 1150000000}\nhi')
        err = next(m for m in msgs if m.get("method") == "error")["params"]
        assert err["error"]["codexErrorInfo"] == "badRequest"
        assert "large_output is 1150000000" in err["error"]["message"]
        assert err["willRetry"] is False
        assert completed_turn(msgs)["status"] == "failed"
        after = await fake.turn(t, "again")
        assert completed_turn(after)["status"] == "completed"
        assert fake.proc.returncode is None


async def test_fake_codex_answers_a_request_it_trips_over_with_an_error(tmp_path: Path) -> None:
    """A turn/start the fake cannot read is a JSON-RPC error; the thread stays usable."""
    allow = frozenset({"turn/start"})
    async with fake_codex(tmp_path, allow=allow) as fake:
        await fake.handshake()
        t = await fake.thread()
        bad: dict[str, Any] = {"threadId": t, "input": ["not an item"]}
        reply = await fake.call("turn/start", bad)
        assert reply["error"]["code"] == -32603
        fake.allow = frozenset()  # what follows is on the schema again
        after = await fake.turn(t, "again")
        assert completed_turn(after)["status"] == "completed"
