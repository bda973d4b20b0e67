"""Anthropic Messages: decoding, golden streams and bodies, and the anthropic SDK's own parsing."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message as SdkMessage
from anthropic.types import RawMessageStreamEvent

from clibridge._errors import RequestError, UnsupportedFeature, UpstreamOverloaded
from clibridge._events import (
    ImagePart,
    Message,
    OutputFormat,
    TextPart,
    ThinkingPart,
    ToolCallPart,
    ToolChoice,
    ToolResultPart,
)
from clibridge._wire import anthropic_messages as am

from ._support import SCENARIOS, assert_no_extra, completion, parse_sse

EVENTS: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(RawMessageStreamEvent)


def body(**fields: Any) -> dict[str, Any]:
    return {
        "model": "sonnet",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "hi"}],
        **fields,
    }


REQUEST = am.decode_request(body())


def test_decode_full_conversation() -> None:
    req = am.decode_request(
        body(
            system=[
                {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "Use tools."},
            ],
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Look"},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"},
                        },
                        {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}},
                    ],
                },
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                        {"type": "redacted_thinking", "data": "xx"},
                        {"type": "text", "text": "Checking."},
                        {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_1",
                            "content": [{"type": "text", "text": "bad"}],
                            "is_error": True,
                        },
                        {"type": "text", "text": "and?"},
                    ],
                },
            ],
            tools=[{"name": "f", "description": "F", "input_schema": {"type": "object"}}],
            tool_choice={"type": "tool", "name": "f", "disable_parallel_tool_use": True},
            stop_sequences=["STOP"],
            stream=True,
            thinking={"type": "enabled", "budget_tokens": 10000},
            metadata={"user_id": "u1"},
            temperature=0.5,
            top_k=3,
        )
    )
    assert req.system == "Be brief.\n\nUse tools."
    assert req.messages == (
        Message(
            "user",
            (
                TextPart("Look"),
                ImagePart(media_type="image/png", data="AAAA"),
                ImagePart(media_type="image/png", url="https://x.test/a.png"),
            ),
        ),
        Message(
            "assistant",
            (ThinkingPart("hmm"), TextPart("Checking."), ToolCallPart("toolu_1", "f", '{"a":1}')),
        ),
        Message("user", (ToolResultPart("toolu_1", "bad", is_error=True), TextPart("and?"))),
    )
    assert req.tools[0].input_schema == {"type": "object"}
    assert req.tool_choice == ToolChoice(mode="tool", name="f")
    assert req.parallel_tool_calls is False
    assert (req.max_tokens, req.stop, req.reasoning_effort) == (1024, ("STOP",), "medium")
    assert (req.stream, req.user) == (True, "u1")


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, ToolChoice()),
        ({"type": "any"}, ToolChoice(mode="required")),
        ({"type": "none"}, ToolChoice(mode="none")),
    ],
)
def test_tool_choice(choice: Any, expected: ToolChoice) -> None:
    req = am.decode_request(body(tool_choice=choice))
    assert (req.tool_choice, req.parallel_tool_calls) == (expected, True)


@pytest.mark.parametrize(
    ("fields", "effort"),
    [
        ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, "low"),
        ({"thinking": {"type": "enabled", "budget_tokens": 20000}}, "high"),
        ({"thinking": {"type": "enabled", "budget_tokens": 64000}}, "xhigh"),
        ({"thinking": {"type": "disabled"}}, None),
        ({"thinking": {"type": "adaptive"}, "output_config": {"effort": "max"}}, "xhigh"),
        ({"output_config": {"effort": "low"}}, "low"),
    ],
)
def test_effort(fields: dict[str, Any], effort: str | None) -> None:
    assert am.decode_request(body(**fields)).reasoning_effort == effort


@pytest.mark.parametrize(
    ("fields", "param", "needle"),
    [
        (
            {"messages": [{"role": "user", "content": [{"type": "text"}]}]},
            "$.messages[0].content[0].text",
            "missing",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]},
            "$.messages[0].content[0]",
            "unsupported type 'document'",
        ),
        (
            {"messages": [{"role": "system", "content": "x"}]},
            "$.messages[0].role",
            "expected one of",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "a"},
                    {"role": "user", "content": [{"type": "tool_result"}]},
                ]
            },
            "$.messages[1].content[0].tool_use_id",
            "missing",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "image",
                                "source": {"type": "base64", "media_type": "image/png"},
                            }
                        ],
                    }
                ]
            },
            "$.messages[0].content[0].source.data",
            "missing",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}],
                    }
                ]
            },
            "$.messages[0].content[0].type",
            "cannot appear in a user message",
        ),
        (
            {"tools": [{"name": "web_search", "type": "web_search_20250305"}]},
            "$.tools[0].type",
            "expected one of",
        ),
        (
            {"tools": [{"name": "f", "input_schema": "x"}]},
            "$.tools[0].input_schema",
            "expected an object",
        ),
        ({"tool_choice": {"type": "sometimes"}}, "$.tool_choice", "unsupported type 'sometimes'"),
        ({"system": 5}, "$.system", "expected a string or an array"),
        ({"messages": []}, "$.messages", "empty"),
        ({"max_tokens": -1}, "$.max_tokens", "positive"),
        ({"thinking": {"type": "enabled"}}, "$.thinking.budget_tokens", "missing"),
    ],
)
def test_bad_requests_name_the_path(fields: dict[str, Any], param: str, needle: str) -> None:
    with pytest.raises(RequestError) as info:
        am.decode_request(body(**fields))
    assert info.value.param == param
    assert needle in info.value.message


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        (
            {
                "messages": [
                    {"role": "user", "content": "a"},
                    {"role": "assistant", "content": "The answer is"},
                ]
            },
            "$.messages[1]",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "tool_result",
                                "tool_use_id": "t",
                                "content": [
                                    {
                                        "type": "image",
                                        "source": {"type": "url", "url": "https://x/y.png"},
                                    }
                                ],
                            }
                        ],
                    }
                ]
            },
            "$.messages[0].content[0].content[0]",
        ),
    ],
)
def test_unsupported(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(UnsupportedFeature) as info:
        am.decode_request(body(**fields))
    assert info.value.param == param


# --------------------------------------------------------------------------- encoding


def run_stream(name: str) -> list[bytes]:
    enc = am.StreamEncoder(REQUEST, response_id="msg_1", created=0)
    frames = enc.start()
    for event in SCENARIOS[name]:
        frames += enc.feed(event)
    assert enc.finished
    return frames


def summary(frames: list[bytes]) -> list[Any]:
    out: list[Any] = []
    for event, data in parse_sse(frames):
        assert event == data["type"]
        if event == "content_block_start":
            out.append((event, data["index"], data["content_block"]))
        elif event == "content_block_delta":
            out.append((event, data["index"], data["delta"]))
        elif event == "content_block_stop":
            out.append((event, data["index"]))
        elif event == "message_delta":
            out.append((event, data["delta"]["stop_reason"], data["usage"]["output_tokens"]))
        else:
            out.append(event)
    return out


SIG = ("content_block_delta", 0, {"type": "signature_delta", "signature": am.THINKING_SIGNATURE})
GOLDEN: dict[str, list[Any]] = {
    "text": [
        "message_start",
        ("content_block_start", 0, {"type": "text", "text": ""}),
        ("content_block_delta", 0, {"type": "text_delta", "text": "Hel"}),
        ("content_block_delta", 0, {"type": "text_delta", "text": "lo"}),
        ("content_block_stop", 0),
        ("message_delta", "end_turn", 7),
        "message_stop",
    ],
    "thinking": [
        "message_start",
        ("content_block_start", 0, {"type": "thinking", "thinking": "", "signature": ""}),
        ("content_block_delta", 0, {"type": "thinking_delta", "thinking": "hmm"}),
        ("content_block_delta", 0, {"type": "thinking_delta", "thinking": "..."}),
        SIG,
        ("content_block_stop", 0),
        ("content_block_start", 1, {"type": "text", "text": ""}),
        ("content_block_delta", 1, {"type": "text_delta", "text": "Hi"}),
        ("content_block_stop", 1),
        ("message_delta", "end_turn", 7),
        "message_stop",
    ],
    "tool": [
        "message_start",
        ("content_block_start", 0, {"type": "text", "text": ""}),
        ("content_block_delta", 0, {"type": "text_delta", "text": "Let me look."}),
        ("content_block_stop", 0),
        (
            "content_block_start",
            1,
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {}},
        ),
        ("content_block_delta", 1, {"type": "input_json_delta", "partial_json": '{"city":'}),
        ("content_block_delta", 1, {"type": "input_json_delta", "partial_json": '"Paris"}'}),
        ("content_block_stop", 1),
        ("message_delta", "tool_use", 7),
        "message_stop",
    ],
    "parallel": [
        "message_start",
        (
            "content_block_start",
            0,
            {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {}},
        ),
        ("content_block_delta", 0, {"type": "input_json_delta", "partial_json": '{"city":"Oslo"}'}),
        ("content_block_stop", 0),
        (
            "content_block_start",
            1,
            {"type": "tool_use", "id": "call_b", "name": "get_time", "input": {}},
        ),
        ("content_block_delta", 1, {"type": "input_json_delta", "partial_json": '{"tz":"UTC"}'}),
        ("content_block_stop", 1),
        ("message_delta", "tool_use", 7),
        "message_stop",
    ],
    "max_tokens": [
        "message_start",
        ("content_block_start", 0, {"type": "text", "text": ""}),
        ("content_block_delta", 0, {"type": "text_delta", "text": "Once upon"}),
        ("content_block_stop", 0),
        ("message_delta", "max_tokens", 7),
        "message_stop",
    ],
}

USAGE_JSON = {
    "input_tokens": 10,
    "cache_creation_input_tokens": 5,
    "cache_read_input_tokens": 100,
    "output_tokens": 7,
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_stream(name: str) -> None:
    assert summary(run_stream(name)) == GOLDEN[name]


def test_message_start_and_delta_fields() -> None:
    parsed = [data for _, data in parse_sse(run_stream("text"))]
    assert parsed[0] == {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "sonnet",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": 0,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": 0,
            },
        },
    }
    assert parsed[-2] == {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": USAGE_JSON,
    }


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_sdk_accumulates_stream_to_the_non_stream_body(name: str) -> None:
    snapshot: Any = None
    json_bufs: dict[int, bytes] = {}
    for _, data in parse_sse(run_stream(name)):
        event = EVENTS.validate_python(data)
        assert_no_extra(event)
        snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs=json_bufs)
    body_ = am.encode_completion(completion(name, REQUEST), REQUEST, response_id="msg_1", created=0)
    parsed = SdkMessage.model_validate(body_)
    assert_no_extra(parsed)
    assert snapshot.model_dump(exclude_none=True) == parsed.model_dump(exclude_none=True)


def test_non_stream_body() -> None:
    assert am.encode_completion(
        completion("tool", REQUEST), REQUEST, response_id="msg_1", created=0
    ) == {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "sonnet",
        "content": [
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": USAGE_JSON,
    }


def test_failure_mid_stream_is_an_error_event() -> None:
    enc = am.StreamEncoder(REQUEST, response_id="msg_1", created=0)
    enc.start()
    frames = enc.fail(UpstreamOverloaded("upstream is overloaded"))
    assert parse_sse(frames) == [
        (
            "error",
            {
                "type": "error",
                "error": {"type": "overloaded_error", "message": "upstream is overloaded"},
            },
        )
    ]
    assert enc.finished and enc.fail(UpstreamOverloaded("x")) == []


def test_output_config_format_and_stop_sequences() -> None:
    """Regression (issue 14): output_config.format was ignored."""
    schema = {"type": "object", "required": ["a"]}
    req = am.decode_request(
        body(output_config={"format": {"type": "json_schema", "schema": schema}})
    )
    assert req.output_format == OutputFormat("json_schema", schema, "", strict=True)
    assert am.decode_request(body(stop_sequences=["END"])).stop == ("END",)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"output_config": {"format": {"type": "json_schema"}}}, "$.output_config.format.schema"),
        ({"output_config": {"format": {"type": "xml"}}}, "$.output_config.format.type"),
        ({"stop_sequences": ["ok", ""]}, "$.stop_sequences[1]"),
        ({"stop_sequences": [f"s{i}" for i in range(65)]}, "$.stop_sequences"),
    ]
    for fields, param in cases:
        with pytest.raises(RequestError) as info:
            am.decode_request(body(**fields))
        assert info.value.param == param, info.value.message
