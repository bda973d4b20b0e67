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

import attrs
import openai
import pytest
import trio

from clibridge.testing.model_stub import ModelStub, Reply, StubToolCall
from clibridge.testing.realcli import CodexSetup
from tests.e2e.conftest import BOUND, CODEX_POOL, CodexServer, open_codex_server
from tests.tools import _loops
from tests.tools.test_tool_loops import codex_tool_replies

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
    return _loops.openai_client(server.base_url)


async def tool_loop(
    server: CodexServer,
    dialect: str,
    *,
    stream: bool,
    prompt: str,
    model: str = MODEL,
    between: Any = None,
) -> tuple[list[_loops.Call], str, list[Any]]:
    return await _loops.tool_loop(
        server.base_url, dialect, stream=stream, prompt=prompt, model=model, between=between
    )


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
            assert (
                codex_tool_replies(server) == [{"contentItems": [abandoned], "success": False}] * 2
            )


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
            assert codex_tool_replies(server) == [
                {
                    "contentItems": [{"type": "inputText", "text": "no result: call abandoned"}],
                    "success": False,
                }
            ]


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
    # the reclaimed turn was interrupted before its calls were answered as abandoned: it
    # did not go on to the model (regression: a third, unread and paid, model request)
    assert len(upstream) == 2, [c.body.get("input") for c in upstream]
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
                    while not codex_tool_replies(server):  # noqa: ASYNC110 (a file another process writes)
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
