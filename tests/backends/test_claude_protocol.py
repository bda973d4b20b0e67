"""The pure claude stream-json driver, against the recorded real-CLI transcripts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from clibridge._backends import claude
from clibridge._backends.claude import (
    NEED_DATA,
    ApiRetry,
    AssistantMessage,
    ClaudeParser,
    ControlRequest,
    ControlResponse,
    GarbageLine,
    OtherMessage,
    Record,
    Result,
    RetryPolicy,
    StreamEvent,
    SystemInit,
    TurnTranslator,
    UserEcho,
)
from clibridge._backends.claude.render import TOOL_RESULTS_HEADER
from clibridge._config import ClaudeConfig
from clibridge._errors import (
    LoginExpired,
    ProtocolError,
    RequestError,
    UpstreamError,
    UpstreamOverloaded,
    UpstreamRateLimited,
)
from clibridge._events import (
    Event,
    Finished,
    FinishReason,
    ImagePart,
    Message,
    TextDelta,
    TextPart,
    ThinkingDelta,
    ThinkingPart,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallPart,
    ToolCallStart,
    ToolResultPart,
    TurnStarted,
    Usage,
    collect,
)

SAMPLES = Path(__file__).parents[1] / "testing" / "samples" / "shared"
POLICY = RetryPolicy()


def sample(name: str) -> list[dict[str, Any]]:
    path = SAMPLES / name
    if not path.exists():
        path = SAMPLES.parent / name  # recorded here, next to the shared ones
    if not path.exists():  # a recording the tests rely on is part of the repo
        pytest.fail(f"recorded sample missing: {name} (neither {SAMPLES / name} nor {path})")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def out_records(name: str, chunk: int = 7) -> list[Record]:
    """Feed the sample's stdout through the parser in small chunks."""
    data = b"".join(
        json.dumps(entry["msg"]).encode() + b"\n" for entry in sample(name) if entry["dir"] == "out"
    )
    parser = ClaudeParser()
    records: list[Record] = []
    for i in range(0, len(data), chunk):
        parser.receive_data(data[i : i + chunk])
        while (rec := parser.next_event()) is not NEED_DATA:
            assert not isinstance(rec, claude.NeedData)
            records.append(rec)
    assert parser.buffered == 0
    return records


def turn_records(records: list[Record]) -> list[list[Record]]:
    """Split records into turns (what the worker routes to the turn: no control traffic)."""
    turns: list[list[Record]] = [[]]
    for rec in records:
        if isinstance(rec, ControlResponse | ControlRequest):
            continue
        turns[-1].append(rec)
        if isinstance(rec, Result):
            turns.append([])
    return [t for t in turns if t]


def translate(records: list[Record], policy: RetryPolicy = POLICY) -> list[Event]:
    tr = TurnTranslator(policy)
    events: list[Event] = []
    for rec in records:
        events += tr.feed(rec)
    assert tr.done
    return events


# --------------------------------------------------------------------------- samples


def test_two_turns_with_set_model() -> None:
    records = out_records("claude_streamjson_two_turns.ndjson")
    controls = [r for r in records if isinstance(r, ControlResponse)]
    assert [(c.request_id, c.ok) for c in controls] == [("init-1", True), ("model-1", True)]
    assert "commands" in controls[0].response
    turns = turn_records(records)
    # the set_model replay arrives between the turns, as a user echo
    assert isinstance(turns[1][0], UserEcho)
    assert turns[1][0].is_replay
    first = translate(turns[0])
    assert first == [
        TurnStarted("claude-sonnet-4-5"),
        TextDelta("Hello from the fake upstream."),
        Finished(FinishReason.END_TURN, Usage(input_tokens=5, output_tokens=6)),
    ]
    second = translate(turns[1][1:])
    assert second[0] == TurnStarted("claude-haiku-4-5")
    # the aggregate assistant message did not double the text
    assert collect("x", second).text == "Hello from the fake upstream."


def test_a_call_the_cli_rejected_is_not_a_tool_call() -> None:
    """Regression: the model called a tool the CLI did not list (its tools/list had timed
    out); the CLI answered the call itself with "No such tool available" and went on, but
    clibridge still streamed finish_reason "tool_calls" and paused the worker."""
    records = out_records("claude_sdk_mcp_unlisted_tool_rejected.ndjson")
    (turn,) = turn_records(records)
    tr = TurnTranslator(POLICY, pause_on_tool_use=True)
    events: list[Event] = []
    for rec in turn:
        events += tr.feed(rec)
    assert tr.done and not tr.paused
    assert not [e for e in events if isinstance(e, ToolCallStart)]
    done = collect("x", events)
    assert done.tool_calls == () and done.finish.reason is FinishReason.END_TURN
    assert done.text == "done"


def test_publishing_tools_the_cli_lists_them() -> None:
    """The recorded publish: mcp_set_servers without and with the SDK server makes the
    real CLI connect anew and list tools again, and the next turn has them."""
    recorded = sample("claude_mcp_set_servers_publish.ndjson")
    lists = [
        e["msg"]["request"]["message"]["method"]
        for e in recorded
        if e["dir"] == "out" and e["msg"].get("request", {}).get("subtype") == "mcp_message"
    ]
    assert lists.count("tools/list") == 2
    (init,) = [
        r
        for r in out_records("claude_mcp_set_servers_publish.ndjson")
        if isinstance(r, claude.SystemInit)
    ]
    assert init.raw["tools"] == ["mcp__client__get_weather"]


def test_sdk_mcp_tool_call_turn() -> None:
    records = out_records("claude_sdk_mcp_tool_call.ndjson")
    mcp = [r for r in records if isinstance(r, ControlRequest)]
    assert {r.subtype for r in mcp} == {"mcp_message"}
    methods = [r.request["message"]["method"] for r in mcp]
    assert methods[-1] == "tools/call"
    assert mcp[-1].request["message"]["params"]["_meta"]["claudecode/toolUseId"] == "toolu_1"
    (turn,) = turn_records(records)
    events = translate(turn)
    assert events[:5] == [
        TurnStarted("claude-sonnet-4-5"),
        ToolCallStart(0, "toolu_1", "get_weather"),
        ToolCallDelta(0, '{"city": "Tok'),
        ToolCallDelta(0, 'yo"}'),
        ToolCallEnd(0, '{"city": "Tokyo"}'),
    ]
    done = collect("x", events)
    assert done.text.startswith("Got tool result: TOOL_RESULT:")
    assert done.text.count("Got tool result") == 1
    assert done.finish == Finished(FinishReason.END_TURN, Usage(input_tokens=10, output_tokens=12))


def test_print_oneshot_without_partial_messages_uses_the_assistant_message() -> None:
    (turn,) = turn_records(out_records("claude_print_oneshot.ndjson"))
    assert isinstance(turn[1], AssistantMessage)
    assert translate(turn) == [
        TurnStarted("claude-sonnet-4-5"),
        TextDelta("Hello from the fake upstream."),
        Finished(FinishReason.END_TURN, Usage(input_tokens=5, output_tokens=6)),
    ]


def test_429_fails_after_retry_attempts_with_the_cli_delay() -> None:
    (turn,) = turn_records(out_records("claude_upstream_429_retries.ndjson"))
    retries = [r for r in turn if isinstance(r, ApiRetry)]
    assert [r.error_status for r in retries] == [429, 429]
    tr = TurnTranslator(RetryPolicy(retry_attempts=2))
    assert tr.feed(turn[0]) == [TurnStarted("claude-sonnet-4-5")]
    assert tr.feed(turn[1]) == []  # system/status
    assert tr.feed(retries[0]) == []
    with pytest.raises(UpstreamRateLimited) as info:
        tr.feed(retries[1])
    assert info.value.retry_after == pytest.approx(1.2103, abs=1e-3)
    assert info.value.status == 429


def test_429_tolerated_below_retry_attempts() -> None:
    (turn,) = turn_records(out_records("claude_upstream_429_retries.ndjson"))
    tr = TurnTranslator(RetryPolicy(retry_attempts=3))
    for rec in turn:
        tr.feed(rec)
    assert not tr.done


def test_529_overloaded_and_interrupted_result() -> None:
    (turn,) = turn_records(out_records("claude_interrupt.ndjson"))
    with pytest.raises(UpstreamOverloaded) as info:
        translate(turn, RetryPolicy(retry_attempts=1))
    assert info.value.retry_after == pytest.approx(0.575, abs=1e-3)
    # with a patient policy the turn reaches the CLI's error result (the interrupt)
    result = turn[-1]
    assert isinstance(result, Result)
    assert result.subtype == "error_during_execution"
    with pytest.raises(UpstreamError, match="error_during_execution"):
        translate(turn, RetryPolicy(retry_attempts=2))


# --------------------------------------------------------------------------- policy


def retry(status: int | None, attempt: int = 1, delay: float = 500.0) -> ApiRetry:
    return ApiRetry(attempt, 10, delay, status, "boom")


def test_401_fails_at_once_and_names_the_login_command() -> None:
    policy = RetryPolicy.from_config(ClaudeConfig(login_hint="clibridge login claude"))
    with pytest.raises(LoginExpired, match="run `clibridge login claude`") as info:
        TurnTranslator(policy).feed(retry(401))
    assert info.value.status == 503


def test_401_left_to_the_cli_when_configured() -> None:
    tr = TurnTranslator(RetryPolicy(fail_fast_on_401=False))
    assert tr.feed(retry(401)) == []


def test_zero_retry_attempts_fails_on_the_first_event() -> None:
    with pytest.raises(UpstreamRateLimited):
        TurnTranslator(RetryPolicy(retry_attempts=0)).feed(retry(429))


def test_other_statuses_are_left_to_the_cli() -> None:
    tr = TurnTranslator(RetryPolicy(retry_attempts=1))
    assert tr.feed(retry(500)) == []
    assert tr.feed(retry(None)) == []


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (401, LoginExpired),
        (429, UpstreamRateLimited),
        (529, UpstreamOverloaded),
        (500, UpstreamError),
    ],
)
def test_error_results_map_by_api_status(status: int, error: type[Exception]) -> None:
    result = claude.parse_line(
        json.dumps(
            {
                "type": "result",
                "subtype": "success",
                "is_error": True,
                "api_error_status": status,
                "result": "API Error",
            }
        ).encode()
    )
    with pytest.raises(error):
        TurnTranslator(POLICY).feed(result)


def test_an_upstream_400_is_the_clients_error_and_its_text_is_not_content() -> None:
    """Regression (issue 15, item 8): a bad ``@fake`` directive answered like an upstream 400
    reached a streaming client as 200 with the error text as content, then an error event;
    the synthetic error message is now skipped and the 400 names the upstream's message."""
    body = {"type": "error", "error": {"type": "invalid_request_error", "message": "bad x"}}
    text = "API Error: 400 " + json.dumps(body)
    synthetic = {
        "type": "assistant",
        "message": {"model": "<synthetic>", "content": [{"type": "text", "text": text}]},
        "parent_tool_use_id": None,
        "error": "invalid_request",
    }
    result = {
        "type": "result",
        "subtype": "success",
        "is_error": True,
        "api_error_status": 400,
        "result": text,
    }
    tr = TurnTranslator(POLICY)
    assert tr.feed(claude.parse_line(json.dumps(synthetic).encode())) == []
    with pytest.raises(RequestError) as info:
        tr.feed(claude.parse_line(json.dumps(result).encode()))
    assert info.value.status == 400
    assert info.value.message == "the upstream model API refused the request: bad x"


def test_garbage_inside_a_turn_is_a_protocol_error() -> None:
    rec = claude.parse_line(b"this is not json")
    assert rec == GarbageLine("this is not json")
    with pytest.raises(ProtocolError):
        TurnTranslator(POLICY).feed(rec)


def test_unknown_messages_and_events_are_skipped() -> None:
    tr = TurnTranslator(POLICY)
    assert tr.feed(claude.parse_line(b'{"type": "brand_new", "x": 1}')) == []
    assert isinstance(claude.parse_line(b'{"type": "brand_new"}'), OtherMessage)
    assert (
        tr.feed(
            StreamEvent({"type": "content_block_delta", "index": 0, "delta": {"type": "x"}}, None)
        )
        == []
    )
    assert tr.feed(StreamEvent({"type": "brand_new_event"}, None)) == []
    assert not tr.done


def test_thinking_stop_sequence_and_subagent_events() -> None:
    tr = TurnTranslator(POLICY)
    events: list[Event] = []
    raw: list[dict[str, Any]] = [
        {"type": "message_start", "message": {"id": "m1", "model": "claude-opus-4-5"}},
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "thinking", "thinking": ""},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "thinking_delta", "thinking": "hmm"},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "signature_delta", "signature": "s"},
        },
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "A"}},
        {"type": "content_block_stop", "index": 1},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "stop_sequence", "stop_sequence": "END"},
        },
        {"type": "message_stop"},
    ]
    for ev in raw:
        events += tr.feed(StreamEvent(ev, None))
    events += tr.feed(
        StreamEvent(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "sub"},
            },
            "toolu_9",
        )
    )
    # the aggregate of a streamed message (same id) after message_stop adds nothing
    events += tr.feed(
        AssistantMessage({"id": "m1", "content": [{"type": "text", "text": "A"}]}, None)
    )
    events += tr.feed(
        claude.parse_line(
            b'{"type":"result","subtype":"success","is_error":false,"stop_reason":null,"usage":{"input_tokens":3,"output_tokens":4,"cache_read_input_tokens":7}}'
        )
    )
    assert events == [
        TurnStarted("claude-opus-4-5"),
        ThinkingDelta("hmm"),
        TextDelta("A"),
        Finished(
            FinishReason.STOP_SEQUENCE,
            Usage(input_tokens=3, output_tokens=4, cache_read_input_tokens=7),
            "END",
        ),
    ]


def test_turn_started_from_system_init_only_once() -> None:
    tr = TurnTranslator(POLICY, model="fallback")
    init = SystemInit("claude-x", "s", {})
    assert tr.feed(init) == [TurnStarted("claude-x")]
    assert tr.feed(init) == []


# --------------------------------------------------------------------------- parser


def test_parser_long_lines_split_anywhere_and_blank_lines() -> None:
    big = {"type": "assistant", "message": {"content": [{"type": "text", "text": "x" * 250_000}]}}
    data = b"\n" + json.dumps(big).encode() + b"\n\n" + b'{"type":"result","subtype":"success"}'
    parser = ClaudeParser()
    for i in range(0, len(data), 4096):
        parser.receive_data(data[i : i + 4096])
    rec = parser.next_event()
    assert isinstance(rec, AssistantMessage)
    assert rec.message["content"][0]["text"] == "x" * 250_000
    assert parser.next_event() is NEED_DATA  # the result line has no newline yet
    parser.receive_data(b"\n")
    assert isinstance(parser.next_event(), Result)
    assert parser.next_event() is NEED_DATA


def test_non_object_json_is_garbage() -> None:
    assert isinstance(claude.parse_line(b"[1, 2]"), GarbageLine)


# --------------------------------------------------------------------------- argv and lines


def test_argv_defaults_and_client_tools() -> None:
    argv = claude.build_argv(["claude"], model="claude-sonnet-4-5")
    assert argv == [
        "claude", "-p", "--input-format", "stream-json", "--output-format", "stream-json",
        "--verbose", "--include-partial-messages", "--no-session-persistence",
        "--model", "claude-sonnet-4-5", "--tools", "",
    ]  # fmt: skip
    with_tools = claude.build_argv(["claude"], enable_cli_tools=True, client_tools=["get_weather"])
    assert "--tools" not in with_tools
    i = with_tools.index("--mcp-config")
    assert json.loads(with_tools[i + 1]) == {
        "mcpServers": {"client": {"type": "sdk", "name": "client"}}
    }
    assert with_tools[i + 2 :] == [
        "--strict-mcp-config",
        "--allowedTools",
        "mcp__client__get_weather",
    ]


def test_stdin_lines() -> None:
    assert json.loads(claude.mcp_status_line("r1")) == {
        "type": "control_request",
        "request_id": "r1",
        "request": {"subtype": "mcp_status"},
    }
    init = json.loads(claude.initialize_line("i1", "Be brief.", sdk_mcp=True))
    assert init["request"] == {
        "subtype": "initialize",
        "systemPrompt": "Be brief.",
        "sdkMcpServers": ["client"],
    }
    assert "systemPrompt" not in json.loads(claude.initialize_line("i2", None))["request"]
    assert json.loads(claude.set_model_line("m", "haiku"))["request"] == {
        "subtype": "set_model",
        "model": "haiku",
    }
    assert json.loads(claude.interrupt_line("x"))["request"] == {"subtype": "interrupt"}
    assert json.loads(claude.user_line("hé\nllo")) == {
        "type": "user",
        "message": {"role": "user", "content": "hé\nllo"},
        "parent_tool_use_id": None,
        "session_id": "",
    }
    assert b"\n" not in claude.user_line("a\nb")
    assert json.loads(claude.clear_line())["message"]["content"] == "/clear"
    resp = json.loads(claude.mcp_response_line("R", {"jsonrpc": "2.0", "id": 1, "result": {}}))
    assert resp["response"] == {
        "subtype": "success",
        "request_id": "R",
        "response": {"mcp_response": {"jsonrpc": "2.0", "id": 1, "result": {}}},
    }
    err = json.loads(claude.control_error_line("R2", "nope"))
    assert err["response"] == {"subtype": "error", "request_id": "R2", "error": "nope"}


# --------------------------------------------------------------------------- rendering


def user(*parts: Any) -> Message:
    return Message("user", tuple(TextPart(p) if isinstance(p, str) else p for p in parts))


def assistant(*parts: Any) -> Message:
    return Message("assistant", tuple(TextPart(p) if isinstance(p, str) else p for p in parts))


def test_render_single_text_message_is_a_string() -> None:
    assert claude.render_user_content([user("hello")]) == "hello"


def test_render_single_message_with_image_keeps_blocks_in_order() -> None:
    img = ImagePart("image/png", data="AAAA")
    url = ImagePart("image/jpeg", url="https://example.invalid/x.jpg")
    assert claude.render_user_content([user("look", img, "and", url)]) == [
        {"type": "text", "text": "look"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
        {"type": "text", "text": "and"},
        {"type": "image", "source": {"type": "url", "url": "https://example.invalid/x.jpg"}},
    ]


def test_render_history_with_tool_calls() -> None:
    messages = [
        user("What's the weather in Tokyo?"),
        assistant(
            ThinkingPart("secret"),
            "Let me check.",
            ToolCallPart("call_1", "get_weather", '{"city":"Tokyo"}'),
        ),
        user(ToolResultPart("call_1", "Sunny, 22C")),
        assistant("It is sunny."),
        user("And tomorrow?"),
    ]
    content = claude.render_user_content(messages)
    assert isinstance(content, list), content
    (block,) = content
    assert block["type"] == "text"
    assert block["text"] == (
        claude.HISTORY_PREAMBLE
        + "\n\n<conversation_history>\n"
        + '<turn role="user">\nWhat\'s the weather in Tokyo?\n</turn>\n'
        + '<turn role="assistant">\nLet me check.\n'
        + '<tool_call id="call_1" name="get_weather">{"city":"Tokyo"}</tool_call>\n</turn>\n'
        + '<turn role="user">\n<tool_result id="call_1" name="get_weather">Sunny, 22C</tool_result>\n</turn>\n'
        + '<turn role="assistant">\nIt is sunny.\n</turn>\n'
        + "</conversation_history>\n\n"
        + "Latest user message:\nAnd tomorrow?"
    )
    assert "secret" not in block["text"]


def test_render_pending_tool_result_is_the_latest_message() -> None:
    messages = [
        user("weather?"),
        assistant(ToolCallPart("c1", "get_weather", "{}")),
        user(ToolResultPart("c1", "boom", is_error=True)),
    ]
    content = claude.render_user_content(messages)
    assert isinstance(content, list), content
    (block,) = content
    assert block["text"].endswith(
        f"</conversation_history>\n\n{TOOL_RESULTS_HEADER}\n"
        '<tool_result id="c1" name="get_weather" is_error="true">boom</tool_result>'
    )


def test_render_history_images_stay_in_place_and_trailing_assistant() -> None:
    img = ImagePart("image/png", data="QQ==")
    blocks = claude.render_user_content([user("see", img), assistant("A cat.")])
    assert isinstance(blocks, list)
    assert [b["type"] for b in blocks] == ["text", "image", "text"]
    assert blocks[0]["text"].endswith('<turn role="user">\nsee\n')
    assert blocks[2]["text"].startswith("</turn>\n")
    assert blocks[2]["text"].endswith(claude.CONTINUE_REQUEST)


def test_render_several_user_messages_without_assistant() -> None:
    assert claude.render_user_content([user("one"), user("two")]) == [
        {"type": "text", "text": "one\ntwo"}
    ]


def test_render_needs_a_message() -> None:
    with pytest.raises(ValueError, match="at least one"):
        claude.render_user_content([])
