"""The pure codex app-server protocol against transcripts recorded from codex 0.169.0."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import pytest

from clibridge._backends import codex
from clibridge._backends.codex import (
    AppServerParser,
    GarbageLine,
    NeedData,
    Notification,
    Response,
    ServerRequest,
    TurnTranslator,
)
from clibridge._errors import (
    LoginExpired,
    UnsupportedFeature,
    UpstreamError,
    UpstreamOverloaded,
    UpstreamRateLimited,
)
from clibridge._events import (
    Event,
    FinishReason,
    ImagePart,
    Message,
    Request,
    TextPart,
    ToolCallPart,
    ToolChoice,
    ToolResultPart,
    ToolSpec,
    collect,
)
from clibridge.testing.codex_schema import WireChecker

SAMPLES = Path(__file__).parent.parent / "testing" / "samples"


def _out_messages(name: str) -> list[Any]:
    lines = (SAMPLES / f"{name}.ndjson").read_text().splitlines()
    return [json.loads(line)["msg"] for line in lines if json.loads(line)["dir"] == "out"]


def _parse_all(name: str) -> list[Any]:
    parser = AppServerParser()
    raw = b"".join(json.dumps(m).encode() + b"\n" for m in _out_messages(name))
    out: list[Any] = []
    # split at an awkward place: the parser must reassemble lines
    for chunk in (raw[:37], raw[37:5000], raw[5000:]):
        parser.receive_data(chunk)
        while not isinstance(msg := parser.next_event(), NeedData):
            out.append(msg)
    return out


def _translate(name: str) -> tuple[list[Event], TurnTranslator]:
    tr = TurnTranslator("gpt-stub")
    events: list[Event] = []
    for msg in _parse_all(name):
        if isinstance(msg, Notification) and msg.thread_id and not tr.done:
            events += tr.feed(msg)
    return events, tr


def test_parser_kinds_and_garbage() -> None:
    parser = AppServerParser()
    parser.receive_data(
        b'{"id": 1, "result": {}}\nnot json\n{"method": "x", "id": 0, "params": {}}\n{"method": "n"'
    )
    assert parser.next_event() == Response(1, {}, None)
    assert isinstance(parser.next_event(), GarbageLine)
    assert parser.next_event() == ServerRequest(0, "x", {})
    assert isinstance(parser.next_event(), NeedData)
    parser.receive_data(b', "params": {"threadId": "t"}}\n')
    msg = parser.next_event()
    assert isinstance(msg, Notification) and msg.thread_id == "t"


def test_reasoning_sample_gives_thinking_text_and_real_usage() -> None:
    events, _tr = _translate("codex_reasoning")
    done = collect("gpt-stub", events)
    assert done.text == "Thought done."
    # summary and raw reasoning of the same item: the summary only, once
    assert done.thinking == "Let me think."
    assert done.finish.reason is FinishReason.END_TURN
    assert done.finish.usage.input_tokens == 5 and done.finish.usage.output_tokens == 4


def test_401_sample_maps_to_login_expired_with_hint() -> None:
    with pytest.raises(LoginExpired, match="clibridge login codex"):
        _translate("codex_error_401")


def test_429_sample_maps_to_rate_limited() -> None:
    with pytest.raises(UpstreamRateLimited):
        _translate("codex_error_429")


def test_interrupt_sample_finishes_cancelled() -> None:
    tr = TurnTranslator("m")
    events: list[Event] = []
    for msg in _parse_all("codex_interrupt"):
        if isinstance(msg, Notification) and msg.thread_id and not tr.done:
            events += tr.feed(msg)
    assert events[-1].reason is FinishReason.CANCELLED  # type: ignore[union-attr]


def test_approval_sample_is_a_server_request_we_can_decline() -> None:
    requests = [m for m in _parse_all("codex_approval_request") if isinstance(m, ServerRequest)]
    assert [r.method for r in requests] == ["item/commandExecution/requestApproval"]
    reply = json.loads(
        codex.result_line(requests[0].id, codex.APPROVAL_DECLINES[requests[0].method])
    )
    checker = WireChecker()
    checker.server_sent(
        {"method": requests[0].method, "id": requests[0].id, "params": dict(requests[0].params)}
    )
    checker.client_sent(reply)


def test_hopeless_error_fails_fast_while_codex_still_retries() -> None:
    tr = TurnTranslator("m")
    err = {
        "message": "Reconnecting... 1/5",
        "codexErrorInfo": {"responseStreamConnectionFailed": {"httpStatusCode": 401}},
    }
    with pytest.raises(LoginExpired):
        tr.feed(Notification("error", {"threadId": "t", "error": err, "willRetry": True}))
    # a retried 503 is not hopeless: codex goes on retrying
    err503 = {
        "message": "Reconnecting... 1/5",
        "codexErrorInfo": {"responseStreamConnectionFailed": {"httpStatusCode": 503}},
    }
    assert (
        TurnTranslator("m").feed(Notification("error", {"error": err503, "willRetry": True})) == []
    )


@pytest.mark.parametrize(
    ("info", "message", "kind", "retry_after"),
    [
        ("unauthorized", "no", LoginExpired, None),
        (
            "usageLimitExceeded",
            "You've hit your usage limit. Try again in 20 minutes.",
            UpstreamRateLimited,
            1200.0,
        ),
        (
            {"responseTooManyFailedAttempts": {"httpStatusCode": 429}},
            "try again in 1.5s",
            UpstreamRateLimited,
            1.5,
        ),
        ("serverOverloaded", "busy", UpstreamOverloaded, None),
        ({"responseTooManyFailedAttempts": {"httpStatusCode": 529}}, "x", UpstreamOverloaded, None),
        ("other", "boom", UpstreamError, None),
    ],
)
def test_map_error(
    info: Any, message: str, kind: type[Exception], retry_after: float | None
) -> None:
    err = codex.map_error({"message": message, "codexErrorInfo": info}, "clibridge login codex")
    assert type(err) is kind
    assert err.retry_after == retry_after


def test_build_argv_switches_cli_tools_off_unless_enabled() -> None:
    argv = codex.build_argv(("codex",), overrides=('model="x"',))
    assert argv[:2] == ("codex", "app-server")
    assert "features.shell_tool=false" in argv and 'web_search="disabled"' in argv
    assert argv[-1] == 'model="x"'  # the operator's overrides win
    on = codex.build_argv(("codex",), enable_cli_tools=True)
    assert "features.shell_tool=false" not in on and "project_doc_max_bytes=0" in on


def test_render_input_history_and_last_user_message() -> None:
    req = Request(
        model="m",
        messages=(
            Message("user", (TextPart("q1"), ImagePart("image/png", data="AAAA"))),
            Message("assistant", (TextPart("a1"), ToolCallPart("c1", "f", "{}"))),
            Message("user", (ToolResultPart("c1", "r"),)),
            Message("assistant", (TextPart("a2"),)),
            Message("user", (TextPart("q2"),)),
        ),
    )
    out = codex.render_input(req)
    assert out.input == ({"type": "text", "text": "q2"},)
    assert [i["type"] for i in out.history] == [
        "message",
        "message",
        "function_call",
        "function_call_output",
        "message",
    ]
    assert out.history[0]["content"][1] == {
        "type": "input_image",
        "image_url": "data:image/png;base64,AAAA",
    }
    assert out.history[1] == {
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_text", "text": "a1"}],
    }
    transcript = codex.render_transcript(req)
    assert "[assistant]\na2" in transcript[0]["text"] and transcript[-1] == {
        "type": "text",
        "text": "q2",
    }


def test_client_messages_match_the_schema() -> None:
    checker = WireChecker()
    checker.client_sent(
        json.loads(codex.request_line(1, "initialize", codex.initialize_params("1.0")))
    )
    checker.client_sent(json.loads(codex.notification_line("initialized")))
    params = codex.thread_start_params(system="s", model="gpt-5.5", cwd="/tmp")
    checker.client_sent(json.loads(codex.request_line(2, "thread/start", params)))
    items = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "x"}]}]
    checker.client_sent(
        json.loads(codex.request_line(3, "thread/inject_items", {"threadId": "t", "items": items}))
    )
    turn = codex.turn_start_params("t", [{"type": "text", "text": "hi"}], "high")
    checker.client_sent(json.loads(codex.request_line(4, "turn/start", turn)))
    checker.client_sent(
        json.loads(codex.request_line(5, "turn/interrupt", codex.interrupt_params("t", "u")))
    )
    checker.client_sent(json.loads(codex.error_line(9, "no")))


def test_dynamic_tool_sample_pauses_at_the_calls_and_resumes() -> None:
    """The real codex's dynamic tool flow: two item/tool/call requests, then the answer."""
    tr = TurnTranslator("gpt-stub")
    first: list[Event] = []
    second: list[Event] = []
    paused = False
    for msg in _parse_all("codex_dynamic_tool_call"):
        if isinstance(msg, ServerRequest) and msg.method == codex.TOOL_CALL_METHOD:
            first += tr.tool_call(msg)
        elif isinstance(msg, Notification) and msg.thread_id:
            if not paused and msg.method == "item/completed" and first:
                # the client sent the results: what the worker does at the pause
                first += tr.pause()
                second += tr.resume()
                paused = True
            (second if paused else first).extend(tr.feed(msg))
    one, two = collect("gpt-stub", first), collect("gpt-stub", second)
    assert one.finish.reason is FinishReason.TOOL_USE
    assert [(c.id, c.name, json.loads(c.arguments)) for c in one.tool_calls] == [
        ("call_1", "lookup", {"q": "x"}),
        ("call_2", "add", {"a": 1}),
    ]
    assert two.text == "Tool said ok." and two.finish.reason is FinishReason.END_TURN
    assert not two.tool_calls
    # usage is not counted twice: the whole turn's total is 10 in / 8 out
    assert two.finish.usage.input_tokens + one.finish.usage.input_tokens == 10


def test_tool_call_response_matches_the_schema() -> None:
    checker = WireChecker()
    request = {
        "id": 0,
        "method": "item/tool/call",
        "params": {"threadId": "t", "turnId": "u", "callId": "c", "tool": "f", "arguments": {}},
    }
    checker.server_sent(request)
    reply = json.loads(codex.result_line(0, codex.tool_call_response(ToolResultPart("c", "r"))))
    checker.client_sent(reply)
    bad = codex.tool_call_response(ToolResultPart("c", "boom", is_error=True))
    assert bad == {"contentItems": [{"type": "inputText", "text": "boom"}], "success": False}


def test_tool_results_at_the_end_become_history_and_the_input_is_empty() -> None:
    req = Request(
        model="m",
        messages=(
            Message("user", (TextPart("q"),)),
            Message("assistant", (ToolCallPart("c1", "f", '{"a":1}'),)),
            Message("user", (ToolResultPart("c1", "r"), TextPart("and now?"))),
        ),
    )
    out = codex.render_input(req)
    assert [i["type"] for i in out.history] == ["message", "function_call", "function_call_output"]
    assert out.input == ({"type": "text", "text": "and now?"},)
    only = attrs.evolve(
        req, messages=(*req.messages[:2], Message("user", (ToolResultPart("c1", "r"),)))
    )
    assert codex.render_input(only).input == ()


@pytest.mark.parametrize(
    ("tools", "choice", "match"),
    [
        ((ToolSpec("f"),), ToolChoice("required"), "tool_choice required"),
        ((ToolSpec("f"),), ToolChoice("tool", "f"), "named tool 'f'"),
        ((ToolSpec("bad name"),), ToolChoice(), "'bad name'"),
        ((ToolSpec("f", input_schema={"type": "array"}),), ToolChoice(), "'f'"),
        ((ToolSpec("f"), ToolSpec("f")), ToolChoice(), "twice"),
    ],
)
def test_check_tools_refuses_what_codex_cannot_honour(
    tools: tuple[ToolSpec, ...], choice: ToolChoice, match: str
) -> None:
    req = Request(model="m", messages=(Message("user", (TextPart("x"),)),), tools=tools)
    with pytest.raises(UnsupportedFeature, match=match):
        codex.check_tools(attrs.evolve(req, tool_choice=choice))


def test_check_tools_none_hides_the_tools() -> None:
    req = Request(
        model="m",
        messages=(Message("user", (TextPart("x"),)),),
        tools=(ToolSpec("f"),),
        tool_choice=ToolChoice("none"),
    )
    assert codex.check_tools(req).tools == ()
    start = codex.thread_start_params(system="", model=None, cwd="/", tools=(ToolSpec("f", "d"),))
    assert start["dynamicTools"] == [
        {
            "type": "function",
            "name": "f",
            "description": "d",
            "inputSchema": ToolSpec("f").input_schema,
        }
    ]
