"""Client tool calling on the codex backend, end to end through the official SDKs.

The whole server runs in-process (``open_codex_server``) on the fake codex, whose ``@fake``
lines make the model call ``get_weather`` (``item/tool/call`` server requests, parallel
calls all sent before any reply, like codex 0.169.0), and on the pinned real codex behind
the Responses stub, which emits ``function_call`` items. Leaving the server context drains
it and proves no process is left.
"""

from __future__ import annotations

import json
import re
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anthropic
import attrs
import openai
import pytest
import trio

from clibridge.testing.model_stub import ModelStub, Reply, StubToolCall
from clibridge.testing.realcli import CodexSetup
from tests.e2e.conftest import BOUND, CODEX_POOL, CodexServer, open_codex_server
from tests.tools import _loops

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    # Why: openai's AsyncStream leaves its own SSE generators unclosed at ``[DONE]``.
    pytest.mark.filterwarnings("ignore:Async generator:ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

MODEL = "gpt-5.5"
ID = re.compile(r"call[0-9a-f]{24}")
ONE = [{"name": "get_weather", "arguments": {"city": "Tokyo"}}]
TWO = [*ONE, {"name": "get_weather", "arguments": {"city": "Paris"}}]


def fake(**fields: Any) -> str:
    return "@fake " + json.dumps(fields)


def openai_client(server: CodexServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.v1, api_key="x", max_retries=0, timeout=30)


def anthropic_client(server: CodexServer) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        base_url=server.base_url, api_key="x", max_retries=0, timeout=30
    )


def tool_replies(server: CodexServer) -> list[dict[str, Any]]:
    """Our answers to the fake's ``item/tool/call`` requests (DynamicToolCallResponse)."""
    return [
        f["stdin"]["result"]
        for f in server.facts()
        if isinstance(f.get("stdin"), dict) and "contentItems" in (f["stdin"].get("result") or {})
    ]


def dialect_fns(dialect: str) -> tuple[Any, Any]:
    if dialect == "messages":
        return _loops.messages_round, _loops.messages_results
    if dialect == "chat":
        return _loops.chat_round, _loops.chat_results
    return _loops.responses_round, _loops.responses_results


async def tool_loop(
    server: CodexServer,
    dialect: str,
    *,
    stream: bool,
    prompt: str,
    model: str = MODEL,
    rewrite: Any = None,
    between: Any = None,
) -> tuple[list[_loops.Call], str, list[Any]]:
    """Round 1 (tool calls), the results, round 2 (the answer)."""
    convo = _loops.first_user(dialect, prompt)
    round_, results = dialect_fns(dialect)
    client: Any = anthropic_client(server) if dialect == "messages" else openai_client(server)
    async with client:
        first, _, finish = await round_(client, convo, stream=stream, model=model)
        assert finish in ("tool_calls", "tool_use")
        if between is not None:
            await between()
        results(convo, first, rewrite)
        second, text, finish = await round_(client, convo, stream=stream, model=model)
    assert second == [] and finish in ("stop", "end_turn", "completed")
    return first, text, convo


@pytest.mark.parametrize("dialect", ["chat", "responses", "messages"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("calls", [ONE, TWO], ids=["single", "parallel"])
async def test_codex_tool_loop_resumes_the_paused_thread(
    tmp_path: Path, dialect: str, stream: bool, calls: list[Any]
) -> None:
    with trio.fail_after(BOUND):
        async with open_codex_server(tmp_path) as server:
            prompt = fake(tool_calls=calls, reply="Done.") + "\nweather?"
            first, text, _ = await tool_loop(server, dialect, stream=stream, prompt=prompt)
            assert [(n, a) for _, n, a in first] == [("get_weather", c["arguments"]) for c in calls]
            assert all(ID.fullmatch(cid) for cid, _, _ in first)
            assert text == "Done."
            stats = await server.stats()
            assert stats["resume_hits"] == 1 and stats["resume_misses"] == 0
            # one thread and one turn: the results answered the paused item/tool/call
            assert len(server.sent("thread/start")) == len(server.sent("turn/start")) == 1
            start = server.sent("thread/start")[0]["params"]
            assert [t["name"] for t in start["dynamicTools"]] == ["get_weather"]
            assert tool_replies(server) == [
                {
                    "contentItems": [
                        {"type": "inputText", "text": _loops.weather(c["arguments"]["city"])}
                    ],
                    "success": True,
                }
                for c in calls
            ]
            await server.assert_full_capacity()


async def test_rewritten_ids_still_match(tmp_path: Path) -> None:
    """OpenClaw replays ``call_1`` as ``call1``: ids without separators, case changed."""

    def rewrite(cid: str) -> str:
        return "call_" + cid.removeprefix("call").upper()

    with trio.fail_after(BOUND):
        async with open_codex_server(tmp_path) as server:
            prompt = fake(tool_calls=TWO, reply="Done.") + "\nweather?"
            await tool_loop(server, "chat", stream=False, prompt=prompt, rewrite=rewrite)
            assert (await server.stats())["resume_hits"] == 1
            assert len(tool_replies(server)) == 2


async def test_park_timeout_falls_back_to_the_full_history(tmp_path: Path) -> None:
    """The parked lease is reclaimed; the results then go to a fresh thread as history."""
    pool = attrs.evolve(CODEX_POOL, park_ttl=0.5, interrupt_grace=0.5)
    scenario = {"default": {"echo": True}}
    with trio.fail_after(BOUND):
        async with open_codex_server(tmp_path, pool=pool, scenario=scenario) as server:
            pids: list[int] = []

            async def wait_reclaim() -> None:
                stats = await server.wait_stats(lambda s: s["reclaimed"] == 1)
                assert stats["parked"] == 0 and stats["in_flight"] == 0
                pids.append(stats["workers"][0]["pid"])

            prompt = fake(tool_calls=TWO) + "\nweather?"
            first, text, _ = await tool_loop(
                server, "responses", stream=True, prompt=prompt, between=wait_reclaim
            )
            # the model saw its calls and their results as native items, in order
            assert "sunny in Tokyo" in text and "sunny in Paris" in text
            inject = server.sent("thread/inject_items")[-1]["params"]["items"]
            kinds = [i["type"] for i in inject]
            assert kinds == ["message", *["function_call"] * 2, *["function_call_output"] * 2]
            assert [i["call_id"] for i in inject[1:3]] == [cid for cid, _, _ in first]
            assert [i["call_id"] for i in inject[3:]] == [cid for cid, _, _ in first]
            assert server.sent("turn/start")[-1]["params"]["input"] == []
            stats = await server.assert_full_capacity()
            # a reclaim ends the paused thread (the pool's one clock: the worker has none of
            # its own), not the multiplexed process
            assert [w["pid"] for w in stats["workers"]] == pids and stats["resume_hits"] == 0
            abandoned = {"type": "inputText", "text": "no result: call abandoned"}
            assert tool_replies(server) == [{"contentItems": [abandoned], "success": False}] * 2


async def test_other_threads_go_on_while_one_is_parked(tmp_path: Path) -> None:
    """A parked thread holds one thread permit; the same worker serves others meanwhile."""
    with trio.fail_after(BOUND):
        async with (
            open_codex_server(tmp_path, threads_per_worker=2) as server,
            AsyncExitStack() as stack,
        ):
            client = await stack.enter_async_context(openai_client(server))
            convo: list[Any] = [{"role": "user", "content": fake(tool_calls=ONE) + "\nw"}]
            calls, _, _ = await _loops.chat_round(client, convo, stream=False, model=MODEL)
            assert len(calls) == 1
            stats = await server.stats()
            assert stats["parked"] == 1 and stats["in_flight"] == 1
            msgs: Any = [{"role": "user", "content": fake(reply="plain") + "\nhi"}]
            done = await client.chat.completions.create(model=MODEL, messages=msgs)
            assert done.choices[0].message.content == "plain"
            # the client goes another way: the paused thread ends, the worker stays
            convo.append({"role": "user", "content": fake(reply="changed my mind") + "\nno"})
            done = await client.chat.completions.create(
                model=MODEL, messages=convo, tools=_loops.CHAT_TOOLS
            )
            assert done.choices[0].message.content == "changed my mind"
            stats = await server.assert_full_capacity()
            assert (stats["resume_hits"], stats["resume_miss_reasons"]) == (
                0,
                {"cannot_continue": 1},
            )
            assert stats["crashes"] == 0
            assert tool_replies(server) == [
                {
                    "contentItems": [{"type": "inputText", "text": "no result: call abandoned"}],
                    "success": False,
                }
            ]


async def test_tool_choice_and_bad_schemas_are_clear_400s(tmp_path: Path) -> None:
    with trio.fail_after(BOUND):
        async with open_codex_server(tmp_path) as server, AsyncExitStack() as stack:
            client = await stack.enter_async_context(openai_client(server))
            msgs: list[Any] = [{"role": "user", "content": "x"}]
            with pytest.raises(openai.BadRequestError, match="tool_choice"):
                await client.chat.completions.create(
                    model=MODEL, messages=msgs, tools=_loops.CHAT_TOOLS, tool_choice="required"
                )
            named: Any = {"type": "function", "function": {"name": "get_weather"}}
            with pytest.raises(openai.BadRequestError, match="get_weather"):
                await client.chat.completions.create(
                    model=MODEL, messages=msgs, tools=_loops.CHAT_TOOLS, tool_choice=named
                )
            bad = [
                {"type": "function", "function": {"name": "bad name!", "parameters": _loops.SCHEMA}}
            ]
            with pytest.raises(openai.BadRequestError, match="bad name!"):
                await client.chat.completions.create(model=MODEL, messages=msgs, tools=bad)  # type: ignore[arg-type]
            arr = [{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}]
            with pytest.raises(openai.BadRequestError, match="'f'"):
                await client.chat.completions.create(model=MODEL, messages=msgs, tools=arr)  # type: ignore[arg-type]
            # none: the tools are not exposed, the model answers in text
            msgs = [{"role": "user", "content": fake(tool_calls=ONE, reply="text") + "\nw"}]
            done = await client.chat.completions.create(
                model=MODEL, messages=msgs, tools=_loops.CHAT_TOOLS, tool_choice="none"
            )
            assert done.choices[0].finish_reason == "stop"
            assert done.choices[0].message.content == "text"
            assert all("dynamicTools" not in s["params"] for s in server.sent("thread/start"))


# --------------------------------------------------------------------------- real codex

CALL = StubToolCall("get_weather", {"city": "Tokyo"})
PARIS = StubToolCall("get_weather", {"city": "Paris"})


def _items(body: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [i for i in body.get("input", []) if isinstance(i, dict) and i.get("type") == kind]


@pytest.mark.realcli
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_real_codex_tool_loop_on_the_paused_thread(
    real_codex: CodexSetup, model_stub: ModelStub, tmp_path: Path, stream: bool
) -> None:
    model_stub.push(Reply(tool_calls=(CALL, PARIS)), Reply(text="Tokyo and Paris are sunny."))
    with trio.fail_after(BOUND):
        async with open_codex_server(tmp_path / "srv", real=real_codex) as server:
            async with openai_client(server) as client:
                convo: list[Any] = [{"role": "user", "content": "weather in Tokyo and Paris?"}]
                calls, _, finish = await _loops.chat_round(
                    client, convo, stream=stream, model="gpt-stub"
                )
                assert finish == "tool_calls"
                # codex dispatches parallel calls concurrently: any order
                assert sorted((n, a["city"]) for _, n, a in calls) == [
                    ("get_weather", "Paris"),
                    ("get_weather", "Tokyo"),
                ]
                assert all(ID.fullmatch(cid) for cid, _, _ in calls)
                _loops.chat_results(convo, calls)
                calls2, text, finish = await _loops.chat_round(
                    client, convo, stream=stream, model="gpt-stub"
                )
                assert (calls2, text, finish) == ([], "Tokyo and Paris are sunny.", "stop")
            stats = await server.stats()
            assert stats["resume_hits"] == 1
            await server.assert_full_capacity()
    upstream = model_stub.model_calls()
    assert len(upstream) == 2
    first, body = upstream[0].body, upstream[-1].body
    assert [t.get("name") for t in first["tools"]] == ["get_weather"]
    # the model sees its own calls and the results as native items, ids matching
    calls_up = _items(body, "function_call")
    outputs = _items(body, "function_call_output")
    assert [json.loads(c["arguments"]) for c in calls_up] == [{"city": "Tokyo"}, {"city": "Paris"}]
    by_id = {o["call_id"]: json.dumps(o["output"]) for o in outputs}
    assert len(outputs) == 2 and set(by_id) == {c["call_id"] for c in calls_up}
    for c in calls_up:
        assert "sunny in " + json.loads(c["arguments"])["city"] in by_id[c["call_id"]]
    user_texts = [
        m for m in body["input"] if m.get("role") == "user" and "Tokyo and Paris?" in json.dumps(m)
    ]
    assert len(user_texts) == 1  # the prompt was not sent again


@pytest.mark.realcli
async def test_real_codex_park_timeout_then_result_uses_the_fallback(
    real_codex: CodexSetup, model_stub: ModelStub, tmp_path: Path
) -> None:
    model_stub.push(Reply(tool_calls=(CALL,)), Reply(text="It is sunny in Tokyo."))
    pool = attrs.evolve(CODEX_POOL, park_ttl=0.5, interrupt_grace=0.5)
    with trio.fail_after(BOUND):
        async with open_codex_server(tmp_path / "srv", real=real_codex, pool=pool) as server:

            async def wait_reclaim() -> None:
                await server.wait_stats(lambda s: s["reclaimed"] == 1)

            _, text, _ = await tool_loop(
                server,
                "messages",
                stream=True,
                prompt="weather in Tokyo?",
                model="gpt-stub",
                between=wait_reclaim,
            )
            assert text == "It is sunny in Tokyo."
            assert (await server.stats())["resume_hits"] == 0
            await server.assert_full_capacity()
    upstream = model_stub.model_calls()
    body = upstream[-1].body
    calls_up = _items(body, "function_call")
    outputs = _items(body, "function_call_output")
    assert [json.loads(c["arguments"]) for c in calls_up] == [{"city": "Tokyo"}]
    assert [o["call_id"] for o in outputs] == [calls_up[0]["call_id"]]
    assert "sunny in Tokyo" in json.dumps(outputs[0]["output"])
    # the history ends with the tool output: no empty user message after it
    assert body["input"][-1]["type"] == "function_call_output"


async def test_a_resumed_turn_whose_process_dies_before_output_runs_again(tmp_path: Path) -> None:
    """Issue 15, item 10, on the continuation path: the client's tool results went to the
    paused thread, and the app-server died (another request crashed it) before the
    continuation produced anything. The request runs once more, with the whole history, on
    a new process -- there the replayed directive is history, so the default reply comes."""
    with trio.fail_after(BOUND):
        async with open_codex_server(tmp_path) as server:
            prompt = fake(tool_calls=ONE, reply="Done.", first_delay=4) + "\nweather?"
            convo = _loops.first_user("chat", prompt)
            got: list[Any] = []
            async with openai_client(server) as client:
                first, _, finish = await _loops.chat_round(client, convo, stream=False, model=MODEL)
                assert finish == "tool_calls"
                _loops.chat_results(convo, first)

                async def second() -> None:
                    got.append(await _loops.chat_round(client, convo, stream=False, model=MODEL))

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(second)
                    while not tool_replies(server):  # noqa: ASYNC110 (a file another process writes)
                        await trio.sleep(0.02)
                    async with server.client() as raw:
                        crash = await raw.post(
                            "/v1/chat/completions",
                            json={
                                "model": MODEL,
                                "messages": [
                                    {"role": "user", "content": fake(crash_mid_turn=True)}
                                ],
                            },
                        )
                    assert crash.status_code == 502, crash.text
            ((calls, text, finish),) = got
            assert (calls, text, finish) == ([], "Hello from the fake CLI.", "stop")
            stats = await server.stats()
            assert (stats["resume_hits"], stats["retried"]) == (1, 1)
            # the retry replayed the conversation into a new thread on the new process
            assert len(server.sent("thread/start")) == 3
