"""OpenClaw-shaped sessions against the whole server, through the official ``openai`` SDK.

OpenClaw (through its model layer) talks Chat Completions like this, and fails a run when a
stream ends without a ``finish_reason``:

- every request streams, with ``stream_options: {"include_usage": true}``, ``store: false``
  and ``max_completion_tokens``;
- every request carries the same ~26 KB system prompt and the same ~11 tools
  (``strict: false`` on each function);
- every request replays the whole conversation: the assistant turns as text *parts*
  (``content: null`` when the turn only called tools), tool call arguments re-serialised
  compactly (``JSON.stringify``), ``role: tool`` results;
- tool call ids are sanitised to letters and digits (``call_1`` -> ``call1``), in the
  replayed assistant turn and in the results alike;
- tool calls are assembled the way its stream reader does it: a delta that carries an id
  different from the current call's starts a new call.

A recording transport under the SDK keeps each response's raw bytes, so a test sees the
``data: [DONE]`` the SDK swallows. Each session checks every stream (role chunk first,
exactly one finish_reason, one usage chunk last, ``[DONE]``) and what the backend was given
on the way: the fake claude's stdin record, the fake codex's JSON-RPC record, or the model
stub behind the real claude.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import openai
import pytest
import trio

# Why: the installed openai SDK is built on httpx2 (earlier ones on httpx); the recording
# transport must be of the kind the SDK's client takes.
try:
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx  # type: ignore[no-redef]

from clibridge.testing.model_stub import ModelStub, Reply, StubToolCall
from clibridge.testing.scenario import directive

from .conftest import (
    BOUND,
    FAST_POOL,
    MODEL,
    E2EServer,
    open_codex_server,
    open_e2e_server,
    open_real_server,
)

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    # Why: openai's AsyncStream leaves its own SSE generators unclosed at ``[DONE]``
    # (openai._streaming, httpx, httpcore); trio reports that at GC time.
    pytest.mark.filterwarnings("ignore:Async generator:ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

CODEX_MODEL = "gpt-5.5"

# --------------------------------------------------------------------------- the shape


def _fn(name: str, description: str, properties: dict[str, Any], required: list[str]) -> Any:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": properties, "required": required},
            "strict": False,
        },
    }


_S = {"type": "string"}
_N = {"type": "number"}
_B = {"type": "boolean"}

#: OpenClaw's usual agent tool set (names and rough schemas as its agents send them)
TOOLS: list[Any] = [
    _fn(
        "read",
        "Read the contents of a file. Supports text files and images.",
        {"path": {**_S, "description": "Path to the file"}, "offset": _N, "limit": _N},
        ["path"],
    ),
    _fn("write", "Write content to a file.", {"path": _S, "content": _S}, ["path", "content"]),
    _fn(
        "edit",
        "Edit a file by replacing exact text.",
        {"path": _S, "oldText": _S, "newText": _S},
        ["path", "oldText", "newText"],
    ),
    _fn(
        "exec",
        "Execute a shell command in the workspace.",
        {
            "command": _S,
            "workdir": _S,
            "timeout": _N,
            "background": _B,
            "env": {"type": "object", "additionalProperties": _S},
        },
        ["command"],
    ),
    _fn(
        "process",
        "Manage running exec sessions: list, poll, log, write, kill.",
        {
            "action": {"type": "string", "enum": ["list", "poll", "log", "write", "kill"]},
            "sessionId": _S,
            "data": _S,
        },
        ["action"],
    ),
    _fn(
        "web_search",
        "Search the web.",
        {"query": _S, "count": {"type": "integer", "minimum": 1, "maximum": 10}},
        ["query"],
    ),
    _fn(
        "web_fetch",
        "Fetch a URL and extract readable content.",
        {"url": _S, "extractMode": {"type": "string", "enum": ["markdown", "text"]}},
        ["url"],
    ),
    _fn(
        "browser",
        "Control the browser: status, open, snapshot, act.",
        {
            "action": _S,
            "targetUrl": _S,
            "request": {
                "type": "object",
                "properties": {"kind": _S, "ref": _S, "text": _S},
            },
        },
        ["action"],
    ),
    _fn(
        "message",
        "Send a message to a channel.",
        {"action": _S, "channel": _S, "to": _S, "message": _S},
        ["action"],
    ),
    _fn(
        "memory_search",
        "Search MEMORY.md and memory/*.md.",
        {"query": _S, "maxResults": _N},
        ["query"],
    ),
    _fn(
        "sessions_spawn",
        "Spawn a sub-agent run in an isolated session.",
        {"task": _S, "label": _S, "runTimeoutSeconds": _N},
        ["task"],
    ),
]
TOOL_NAMES = [t["function"]["name"] for t in TOOLS]

SYSTEM_FIRST_LINE = "You are a personal assistant running inside OpenClaw."
SYSTEM_LAST_LINE = "Runtime: agent=main | host=clibridge-e2e | model=bridge | channel=webchat"


def _system_prompt() -> str:
    parts = [SYSTEM_FIRST_LINE, "", "## Tooling", "Tool availability (filtered by policy):"]
    parts += [f"- {t['function']['name']}: {t['function']['description']}" for t in TOOLS]
    parts += ["", "## Safety", "Never exfiltrate secrets. Ask before destructive actions.", ""]
    parts += ["## Skills (mandatory)", "Before replying: scan <available_skills>.", ""]
    parts.append("<available_skills>")
    for i in range(60):
        parts.append(
            f"  <skill><name>skill-{i:02d}</name><description>Helps with task family {i}: "
            f"look up, summarise and act on items of kind {i} (see SKILL.md).</description>"
            f"<location>~/.openclaw/skills/skill-{i:02d}/SKILL.md</location></skill>"
        )
    parts += ["</available_skills>", "", "# Project Context", ""]
    for name in ("AGENTS.md", "SOUL.md", "TOOLS.md", "IDENTITY.md", "USER.md", "HEARTBEAT.md"):
        parts += [f"## {name}", ""]
        for j in range(14):
            parts.append(
                f"{name} rule {j}: keep replies short, cite files by path, prefer the read "
                f"tool over guessing, and write memory notes to memory/{j:02d}.md."
            )
        parts.append("")
    parts += ["## Runtime", SYSTEM_LAST_LINE]
    return "\n".join(parts)


SYSTEM = _system_prompt()
assert 24_000 < len(SYSTEM.encode()) < 28_000, len(SYSTEM.encode())

#: a file the ``read`` tool returns (~3 KB, like a real README)
README = "# Demo project\n\n" + "".join(
    f"Section {i}: the demo project does thing {i} and keeps notes in notes/{i}.md.\n"
    for i in range(40)
)
RESULTS = {
    "read": README,
    "exec": "total 3\n-rw-r--r-- 1 me me 3021 README.md\n-rw-r--r-- 1 me me 88 notes.md\n",
}


def sanitize_id(call_id: str) -> str:
    """OpenClaw's strict tool call id policy: letters and digits only."""
    return re.sub(r"[^A-Za-z0-9]", "", call_id)


# --------------------------------------------------------------------------- raw bytes


class _Tee(httpx.AsyncByteStream):
    def __init__(self, inner: Any, sink: bytearray) -> None:
        self._inner = inner
        self._sink = sink

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            self._sink += chunk
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class RecordingTransport(httpx.AsyncBaseTransport):
    """Keeps the raw bytes of every response the SDK reads (its SSE parser hides ``[DONE]``)."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.bodies: list[bytearray] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        sink = bytearray()
        self.bodies.append(sink)
        return httpx.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=_Tee(response.stream, sink),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


# --------------------------------------------------------------------------- a session


@attrs.define
class Turn:
    """One streamed request as OpenClaw's reader sees it."""

    finish: str
    text: str
    #: (id as sent, name, parsed arguments)
    calls: list[tuple[str, str, dict[str, Any]]]
    usage: Any
    raw: bytes


def check_stream(chunks: list[Any], raw: bytes, *, counted: bool = True) -> None:
    """What OpenClaw needs of every stream (and what OpenAI sends).

    ``counted``: the usage must be non-zero (codex reports a tool round's tokens only after
    the results came back, so its tool-call responses say 0 and the next one carries them).
    """
    assert chunks, raw
    assert chunks[0].choices and chunks[0].choices[0].delta.role == "assistant", chunks[0]
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert len({c.id for c in chunks}) == 1
    finishing = [i for i, c in enumerate(chunks) if c.choices and c.choices[0].finish_reason]
    assert len(finishing) == 1, [c.choices[0].finish_reason for c in chunks if c.choices]
    after = chunks[finishing[0] + 1 :]
    # after the finish: only the usage chunk (no choices)
    assert [c.choices for c in after] == [[]], after
    with_usage = [c for c in chunks if c.usage is not None]
    assert with_usage == [chunks[-1]]
    usage = chunks[-1].usage
    assert usage.prompt_tokens >= 0 and usage.completion_tokens >= 0
    if counted:
        assert usage.prompt_tokens > 0 and usage.completion_tokens > 0, usage
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    data = [line for line in raw.decode().splitlines() if line.startswith("data:")]
    assert data[-1] == "data: [DONE]", raw[-300:]
    assert raw.endswith(b"\n\n")
    assert data.count("data: [DONE]") == 1


@attrs.define
class OpenClawSession:
    """One OpenClaw agent conversation: its whole history is replayed on every request."""

    client: openai.AsyncOpenAI
    transport: RecordingTransport
    model: str
    #: False: tool-call responses may report zero usage (codex, see :func:`check_stream`)
    counted_tool_rounds: bool = True
    #: what each tool returns
    results: dict[str, str] = attrs.field(factory=lambda: dict(RESULTS))
    messages: list[Any] = attrs.field(factory=lambda: [{"role": "system", "content": SYSTEM}])
    turns: list[Turn] = attrs.field(factory=list)

    @classmethod
    def open(
        cls, base_url: str, model: str, *, counted_tool_rounds: bool = True
    ) -> OpenClawSession:
        transport = RecordingTransport()
        client = openai.AsyncOpenAI(
            base_url=base_url + "/v1",
            api_key="clibridge-local",
            max_retries=0,
            timeout=30,
            http_client=openai.DefaultAsyncHttpxClient(transport=transport, timeout=30),
        )
        return cls(client, transport, model, counted_tool_rounds)

    async def aclose(self) -> None:
        await self.client.close()

    def user(self, text: str) -> None:
        self.messages.append({"role": "user", "content": text})

    def tool_results(self) -> None:
        """Run the last turn's calls (canned results) and append them, ids sanitised."""
        for call_id, name, _ in self.turns[-1].calls:
            self.messages.append(
                {
                    "role": "tool",
                    "tool_call_id": sanitize_id(call_id),
                    "content": self.results[name],
                }
            )

    async def request(self) -> Turn:
        stream = await self.client.chat.completions.create(
            model=self.model,
            messages=self.messages,
            tools=TOOLS,
            stream=True,
            stream_options={"include_usage": True},
            store=False,
            max_completion_tokens=8192,
        )
        chunks = [chunk async for chunk in stream]
        raw = bytes(self.transport.bodies[-1])
        tool_round = any(c.choices and c.choices[0].finish_reason == "tool_calls" for c in chunks)
        check_stream(chunks, raw, counted=self.counted_tool_rounds or not tool_round)
        text = ""
        calls: list[dict[str, Any]] = []
        for chunk in chunks:
            if not chunk.choices:
                continue
            delta = chunk.choices[0].delta
            text += delta.content or ""
            for tc in delta.tool_calls or []:
                # OpenClaw's reader: a delta with an id other than the current call's starts
                # a new call; the others extend the current one
                if not calls or (tc.id and tc.id != calls[-1]["id"]):
                    calls.append({"id": tc.id, "name": "", "arguments": ""})
                if tc.function and tc.function.name:
                    calls[-1]["name"] = tc.function.name
                if tc.function and tc.function.arguments:
                    calls[-1]["arguments"] += tc.function.arguments
        finishing = [c.choices[0].finish_reason for c in chunks if c.choices]
        turn = Turn(
            finish=str(next(f for f in finishing if f)),
            text=text,
            calls=[(c["id"], c["name"], json.loads(c["arguments"] or "{}")) for c in calls],
            usage=chunks[-1].usage,
            raw=raw,
        )
        assert all(cid and sanitize_id(cid) == cid for cid, _, _ in turn.calls), turn.calls
        # the replay, as OpenClaw writes it
        assistant: dict[str, Any] = {"role": "assistant", "content": None}
        if text.strip():
            assistant["content"] = [{"type": "text", "text": text}]
        if turn.calls:
            assistant["tool_calls"] = [
                {
                    "id": sanitize_id(cid),
                    "type": "function",
                    "function": {
                        "name": name,
                        "arguments": json.dumps(args, separators=(",", ":")),
                    },
                }
                for cid, name, args in turn.calls
            ]
        if assistant["content"] is not None or turn.calls:
            self.messages.append(assistant)
        self.turns.append(turn)
        return turn


def spawns(stats: dict[str, Any]) -> int:
    """Worker ids are handed out in order: the highest one seen is the number of spawns."""
    return max(int(w["id"]) for w in stats["workers"])


# --------------------------------------------------------------------------- fake claude

READ = [{"name": "read", "arguments": {"path": "README.md"}}]
EXEC = [{"name": "exec", "arguments": {"command": "ls -l", "timeout": 30}}]
ASK = "What does README.md in my workspace say?"
FOLLOW_UP = "Thanks. Summarise it in one sentence."
SECOND_ASK = "And which files are next to it?"


def fake_steps() -> list[tuple[str | None, str]]:
    """(new user text, or None for the last turn's tool results; the expected finish)."""
    return [
        (
            directive(tool_calls=READ, reply="README read.", chunk_chars=5) + "\n" + ASK,
            "tool_calls",
        ),
        (None, "stop"),
        (
            directive(reply="It is a demo project.", chunk_chars=4) + "\n" + FOLLOW_UP,
            "stop",
        ),
        (
            directive(tool_calls=EXEC, reply="Only notes.md.") + "\n" + SECOND_ASK,
            "tool_calls",
        ),
        (None, "stop"),
    ]


async def run_session(session: OpenClawSession, steps: list[tuple[str | None, str]]) -> None:
    for user, finish in steps:
        if user is None:
            session.tool_results()
        else:
            session.user(user)
        turn = await session.request()
        assert turn.finish == finish, (user, turn)


def user_lines(server: E2EServer) -> list[Any]:
    return [
        m["message"]["content"]
        for m in server.stdin_lines()
        if isinstance(m, dict) and m.get("type") == "user"
    ]


async def test_openclaw_session_on_fake_claude(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with open_e2e_server(tmp_path) as server:
            session = OpenClawSession.open(server.base_url, MODEL)
            try:
                await run_session(session, fake_steps())
            finally:
                await session.aclose()
            t = session.turns
            assert [(c[1], c[2]) for c in t[0].calls] == [("read", {"path": "README.md"})]
            assert t[1].text == "README read."
            assert t[2].text == "It is a demo project."
            assert [(c[1], c[2]) for c in t[3].calls] == [
                ("exec", {"command": "ls -l", "timeout": 30})
            ]
            assert t[4].text == "Only notes.md."
            stats = await server.assert_clean()
            # every follow-up resumed the parked worker: tool results twice, user turns twice
            assert (stats["resume_hits"], stats["resume_misses"]) == (4, 0), stats
            assert stats["served"] == 5
            assert spawns(stats) <= 3, stats
            # only the new messages went to the CLI on resumes: two user lines (the two new
            # questions, no history, no /clear) ...
            users = user_lines(server)
            texts = [
                u if isinstance(u, str) else "".join(b.get("text", "") for b in u) for u in users
            ]
            assert len(texts) == 3, texts
            assert texts[0].endswith(ASK) and texts[1].endswith(FOLLOW_UP)
            assert texts[2].endswith(SECOND_ASK)
            assert "/clear" not in texts
            # ... the system prompt once (the binding), each tool result once
            record = json.dumps(server.stdin_lines())
            assert record.count(SYSTEM_LAST_LINE) == 1
            assert record.count("Section 39: the demo project") == 1


# --------------------------------------------------------------------------- real claude


def _blocks(content: Any) -> list[dict[str, Any]]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content)


@pytest.mark.realcli
async def test_openclaw_session_on_real_claude(
    tmp_path: Path, claude_binary: Path, model_stub: ModelStub
) -> None:
    model_stub.push(
        Reply(tool_calls=(StubToolCall("mcp__client__read", {"path": "README.md"}),)),
        Reply(text="README read.", chunk_chars=5),
        Reply(text="It is a demo project.", chunk_chars=4),
        Reply(tool_calls=(StubToolCall("mcp__client__exec", {"command": "ls -l"}),)),
        Reply(text="Only notes.md."),
    )
    steps: list[tuple[str | None, str]] = [
        (ASK, "tool_calls"),
        (None, "stop"),
        (FOLLOW_UP, "stop"),
        (SECOND_ASK, "tool_calls"),
        (None, "stop"),
    ]
    with trio.fail_after(90):
        async with open_real_server(tmp_path, claude_binary, model_stub) as server:
            session = OpenClawSession.open(server.base_url, MODEL)
            try:
                await run_session(session, steps)
            finally:
                await session.aclose()
            t = session.turns
            assert [(c[1], c[2]) for c in t[0].calls] == [("read", {"path": "README.md"})]
            assert [x.text for x in t] == [
                "",
                "README read.",
                "It is a demo project.",
                "",
                "Only notes.md.",
            ]
            assert [(c[1], c[2]) for c in t[3].calls] == [("exec", {"command": "ls -l"})]
            stats = await server.assert_clean()
            assert (stats["resume_hits"], stats["resume_misses"]) == (4, 0), stats
            assert stats["served"] == 5
            assert spawns(stats) <= 3, stats
    upstream = model_stub.model_calls()
    # each bridged request cost exactly one upstream call (no title call, no replays)
    assert len(upstream) == len(steps)
    expected_tools = sorted(f"mcp__client__{n}" for n in TOOL_NAMES)
    for i, call in enumerate(upstream):
        body = call.body
        assert sorted(t["name"] for t in body["tools"]) == expected_tools, (i, body["tools"])
        system = call.system_text
        # the system prompt, once, whole, in the system field and nowhere else
        assert system.count(SYSTEM_FIRST_LINE) == 1 and system.count(SYSTEM_LAST_LINE) == 1
        assert SYSTEM.strip() in system
        assert SYSTEM_FIRST_LINE not in json.dumps(body["messages"])
    # the conversation grows natively upstream: the follow-up is one new user message after
    # the earlier tool_use / tool_result turns; the client's replay was never re-sent
    follow = upstream[2].body["messages"]
    kinds = [[b["type"] for b in _blocks(m["content"])] for m in follow]
    assert ["tool_use"] in kinds and any("tool_result" in k for k in kinds), kinds
    assert _blocks(follow[-1]["content"])[-1]["text"] == FOLLOW_UP
    user_texts = [
        b.get("text", "")
        for m in follow
        if m["role"] == "user"
        for b in _blocks(m["content"])
        if b["type"] == "text"
    ]
    assert sum(ASK in x for x in user_texts) == 1, user_texts
    assert json.dumps(follow).count("Section 39: the demo project") == 1
    last = upstream[4].body["messages"]
    assert json.dumps(last).count("notes.md") >= 1
    assert _blocks(last[-1]["content"])[0]["type"] == "tool_result"


# --------------------------------------------------------------------------- fake codex


async def test_openclaw_session_on_fake_codex(tmp_path: Path) -> None:
    with trio.fail_after(BOUND):
        async with open_codex_server(tmp_path) as server:
            session = OpenClawSession.open(server.base_url, CODEX_MODEL, counted_tool_rounds=False)
            try:
                await run_session(session, fake_steps())
            finally:
                await session.aclose()
            t = session.turns
            assert [(c[1], c[2]) for c in t[0].calls] == [("read", {"path": "README.md"})]
            assert [x.text for x in t[1:3]] == ["README read.", "It is a demo project."]
            assert [(c[1], c[2]) for c in t[3].calls] == [
                ("exec", {"command": "ls -l", "timeout": 30})
            ]
            assert t[4].text == "Only notes.md."
            stats = await server.assert_full_capacity()
    # the tool results resumed the paused threads; finished turns are not continued on
    # codex: each new user message got a fresh thread with the history injected, and
    # /v1/stats counts those follow-ups as misses with their reason
    assert (stats["resume_hits"], stats["resume_miss_reasons"]) == (2, {"not_parked": 2}), stats
    starts = server.sent("thread/start")
    assert len(starts) == len(server.sent("turn/start")) == 3
    for start in starts:
        assert start["params"]["baseInstructions"] == SYSTEM
        assert sorted(x["name"] for x in start["params"]["dynamicTools"]) == sorted(TOOL_NAMES)
    injected = server.sent("thread/inject_items")
    assert len(injected) == 2
    assert "Section 39: the demo project" in json.dumps(injected[0]["params"]["items"])


# --------------------------------------------------------------------------- parallel


async def agent_loop(session: OpenClawSession, user: str, *, rounds: int = 6) -> Turn:
    """OpenClaw's loop for one user message: run the tools until the model stops."""
    session.user(user)
    for _ in range(rounds):
        turn = await session.request()
        if turn.finish != "tool_calls":
            return turn
        session.tool_results()
    raise AssertionError(f"no stop after {rounds} rounds: {session.turns}")


async def test_three_openclaw_sessions_on_two_workers(tmp_path: Path) -> None:
    """Three agents at once on two workers: one waits in the queue, parked turns give way
    under pressure (a reclaimed tool turn falls back to the full history); every stream of
    every session ends with a finish_reason, a usage chunk and ``[DONE]``.

    The fake model follows directives only, and only those of the newest user turn: on the
    resume path the answer after a tool result comes from the paused turn's directive, on
    the fallback path (the replayed history is never read for directives) from the process
    default. Both say "README read.", so the answer does not depend on the path taken.
    """
    pool = attrs.evolve(FAST_POOL, workers=2, spares=1, max_queue=4)
    slow = {"first_delay": 0.4, "chunk_chars": 6, "chunk_delay": 0.01}
    max_queued = 0
    finals: dict[int, list[Turn]] = {}

    async def one(server: E2EServer, n: int) -> None:
        session = OpenClawSession.open(server.base_url, MODEL)
        try:
            first = directive(tool_calls=READ, **slow)
            second = directive(reply=f"Agent {n}: a demo project.", **slow)
            finals[n] = [
                await agent_loop(session, f"{first}\n{ASK} (agent {n})"),
                await agent_loop(session, f"{second}\n{FOLLOW_UP}"),
            ]
        finally:
            await session.aclose()
        # every request of the session got a complete stream (checked in request())
        assert all(t.finish in ("tool_calls", "stop") for t in session.turns)

    async def watch(server: E2EServer, done: trio.Event) -> None:
        nonlocal max_queued
        while not done.is_set():
            max_queued = max(max_queued, (await server.stats())["queued"])
            with trio.move_on_after(0.02):
                await done.wait()

    scenario = {"default": {"reply": "README read."}}
    with trio.fail_after(60):
        async with open_e2e_server(tmp_path, pool=pool, scenario=scenario) as server:
            await server.wait_stats(lambda s: s["idle"] >= 1, within=20)
            done = trio.Event()
            async with trio.open_nursery() as watchers:
                watchers.start_soon(watch, server, done)
                async with trio.open_nursery() as nursery:
                    for n in range(3):
                        nursery.start_soon(one, server, n)
                done.set()
            stats = await server.assert_clean()
    assert max_queued >= 1, stats
    for n in range(3):
        answer, follow = finals[n]
        assert answer.finish == follow.finish == "stop"
        assert answer.text == "README read."
        assert follow.text == f"Agent {n}: a demo project."
    # 3 sessions x (question, tool result, follow-up); a continuation whose parked worker
    # gave way under pressure is a resume miss and goes to a fresh worker with the history
    assert stats["served"] == 9, stats
    assert stats["rejected"] == 0 and stats["crashes"] == 0, stats
    assert stats["resume_hits"] + stats["resume_misses"] == 6, stats
