"""OpenAI Responses: decoding, golden streams and bodies, and the openai SDK's own parsing."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest
from openai import omit
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import Response, ResponseStreamEvent

from clibridge._errors import QueueFull, RequestError, UnsupportedFeature
from clibridge._events import (
    ImagePart,
    Message,
    OutputFormat,
    TextPart,
    ToolCallPart,
    ToolChoice,
    ToolResultPart,
)
from clibridge._wire import openai_responses as rs

from ._support import SCENARIOS, assert_no_extra, completion, parse_sse

EVENTS: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(ResponseStreamEvent)


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "gpt-5", "input": "hi", **fields}


REQUEST = rs.decode_request(body())


def test_decode_string_input_and_instructions() -> None:
    req = rs.decode_request(
        body(
            instructions="Be brief.",
            max_output_tokens=20,
            reasoning={"effort": "low", "summary": "auto"},
        )
    )
    assert req.messages == (Message("user", (TextPart("hi"),)),)
    assert (req.system, req.max_tokens, req.reasoning_effort) == ("Be brief.", 20, "low")


def test_decode_item_list() -> None:
    req = rs.decode_request(
        body(
            instructions="Be brief.",
            input=[
                {"role": "developer", "content": "Use tools."},
                {
                    "type": "message",
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "What is this?"},
                        {
                            "type": "input_image",
                            "image_url": "data:image/jpeg;base64,/9j/",
                            "detail": "auto",
                        },
                    ],
                },
                {
                    "type": "reasoning",
                    "id": "rs_1",
                    "summary": [{"type": "summary_text", "text": "x"}],
                },
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "Checking.", "annotations": []}],
                },
                {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": '{"a":1}'},
                {"type": "function_call", "call_id": "call_2", "name": "g", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "one"},
                {
                    "type": "function_call_output",
                    "call_id": "call_2",
                    "output": [{"type": "input_text", "text": "two"}],
                },
            ],
            tools=[
                {"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": True}
            ],
            tool_choice={"type": "function", "name": "f"},
            parallel_tool_calls=False,
            stream=True,
            store=False,
            temperature=1,
        )
    )
    assert req.system == "Be brief.\n\nUse tools."
    assert req.messages == (
        Message(
            "user", (TextPart("What is this?"), ImagePart(media_type="image/jpeg", data="/9j/"))
        ),
        Message(
            "assistant",
            (
                TextPart("Checking."),
                ToolCallPart("call_1", "f", '{"a":1}'),
                ToolCallPart("call_2", "g", "{}"),
            ),
        ),
        Message("user", (ToolResultPart("call_1", "one"), ToolResultPart("call_2", "two"))),
    )
    assert req.tool_choice == ToolChoice(mode="tool", name="f")
    assert (req.parallel_tool_calls, req.stream) == (False, True)


@pytest.mark.parametrize(
    ("fields", "param", "needle"),
    [
        ({"input": 5}, "$.input", "expected a string or an array"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
            "$.input[0].content[0]",
            "unsupported type 'input_file'",
        ),
        ({"input": [{"type": "function_call", "name": "f"}]}, "$.input[0].call_id", "missing"),
        (
            {"input": [{"type": "item_reference", "id": "x"}]},
            "$.input[0]",
            "unsupported type 'item_reference'",
        ),
        ({"input": [{"content": "x"}]}, "$.input[0].role", "missing"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image"}]}]},
            "$.input[0].content[0].image_url",
            "missing",
        ),
        ({"input": []}, "$.input", "empty"),
        ({"input": None}, "$.input", "missing"),
        ({"tools": [{"type": "web_search"}]}, "$.tools[0].type", "expected one of 'function'"),
        ({"reasoning": {"effort": "extreme"}}, "$.reasoning.effort", "expected one of"),
        (
            {"input": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
            "$.input[1]",
            "last message",
        ),
    ],
)
def test_bad_requests_name_the_path(fields: dict[str, Any], param: str, needle: str) -> None:
    with pytest.raises(RequestError) as info:
        rs.decode_request(body(**fields))
    assert info.value.param == param
    assert needle in info.value.message


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"previous_response_id": "resp_1"}, "$.previous_response_id"),
        ({"conversation": "conv_1"}, "$.conversation"),
        ({"background": True}, "$.background"),
        (
            {
                "input": [
                    {"role": "user", "content": [{"type": "input_image", "file_id": "file_1"}]}
                ]
            },
            "$.input[0].content[0].file_id",
        ),
    ],
)
def test_unsupported(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(UnsupportedFeature) as info:
        rs.decode_request(body(**fields))
    assert info.value.param == param


def test_text_format_decodes_and_is_echoed() -> None:
    """Regression (issue 14): text.format json_schema was refused."""
    fmt = {"type": "json_schema", "name": "x", "schema": {"type": "object"}, "strict": True}
    req = rs.decode_request(body(text={"format": fmt}))
    assert req.output_format == OutputFormat("json_schema", {"type": "object"}, "x", strict=True)
    assert rs.decode_request(body(text={"format": {"type": "json_object"}})).output_format == (
        OutputFormat("json_object")
    )
    with pytest.raises(RequestError) as info:
        rs.decode_request(body(text={"format": {"type": "json_schema", "schema": {"type": 3}}}))
    assert info.value.param == "$.text.format.schema"


# --------------------------------------------------------------------------- encoding

RID = "resp_abc"


def run_stream(name: str) -> list[bytes]:
    enc = rs.StreamEncoder(REQUEST, response_id=RID, created=1700000000)
    frames = enc.start()
    for event in SCENARIOS[name]:
        frames += enc.feed(event)
    assert enc.finished
    return frames


def summary(frames: list[bytes]) -> list[Any]:
    out: list[Any] = []
    for seq, (event, data) in enumerate(parse_sse(frames)):
        assert event is not None, data
        assert event == data["type"]
        assert data["sequence_number"] == seq
        kind = event.removeprefix("response.")
        if "delta" in data:
            out.append((kind, data.get("output_index"), data["delta"]))
        elif kind in ("output_item.added", "output_item.done"):
            out.append((kind, data["output_index"], data["item"]["type"], data["item"]["id"]))
        elif "response" in data:
            out.append((kind, data["response"]["status"]))
        elif kind == "function_call_arguments.done":
            out.append((kind, data["output_index"], data["arguments"]))
        elif "text" in data:
            out.append((kind, data["output_index"], data["text"]))
        else:
            out.append((kind, data["output_index"]))
    return out


HEAD = [("created", "in_progress"), ("in_progress", "in_progress")]


def text_item(i: int, deltas: list[str]) -> list[Any]:
    text = "".join(deltas)
    item = f"msg_abc_{i}"
    return [
        ("output_item.added", i, "message", item),
        ("content_part.added", i),
        *[("output_text.delta", i, d) for d in deltas],
        ("output_text.done", i, text),
        ("content_part.done", i),
        ("output_item.done", i, "message", item),
    ]


def call_item(i: int, deltas: list[str]) -> list[Any]:
    item = f"fc_abc_{i}"
    return [
        ("output_item.added", i, "function_call", item),
        *[("function_call_arguments.delta", i, d) for d in deltas],
        ("function_call_arguments.done", i, "".join(deltas)),
        ("output_item.done", i, "function_call", item),
    ]


GOLDEN: dict[str, list[Any]] = {
    "text": [*HEAD, *text_item(0, ["Hel", "lo"]), ("completed", "completed")],
    "thinking": [
        *HEAD,
        ("output_item.added", 0, "reasoning", "rs_abc_0"),
        ("reasoning_summary_part.added", 0),
        ("reasoning_summary_text.delta", 0, "hmm"),
        ("reasoning_summary_text.delta", 0, "..."),
        ("reasoning_summary_text.done", 0, "hmm..."),
        ("reasoning_summary_part.done", 0),
        ("output_item.done", 0, "reasoning", "rs_abc_0"),
        *text_item(1, ["Hi"]),
        ("completed", "completed"),
    ],
    "tool": [
        *HEAD,
        *text_item(0, ["Let me look."]),
        *call_item(1, ['{"city":', '"Paris"}']),
        ("completed", "completed"),
    ],
    "parallel": [
        *HEAD,
        *call_item(0, ['{"city":"Oslo"}']),
        *call_item(1, ['{"tz":"UTC"}']),
        ("completed", "completed"),
    ],
    "max_tokens": [*HEAD, *text_item(0, ["Once upon"]), ("incomplete", "incomplete")],
}

USAGE_JSON = {
    "input_tokens": 115,
    "input_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 5},
    "output_tokens": 7,
    "output_tokens_details": {"reasoning_tokens": 3},
    "total_tokens": 122,
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_stream(name: str) -> None:
    assert summary(run_stream(name)) == GOLDEN[name]


def test_final_event_fields() -> None:
    last = parse_sse(run_stream("max_tokens"))[-1][1]["response"]
    assert last["usage"] == USAGE_JSON
    assert last["incomplete_details"] == {"reason": "max_output_tokens"}
    assert last["output"] == [
        {
            "id": "msg_abc_0",
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Once upon", "annotations": []}],
        }
    ]
    first = parse_sse(run_stream("text"))[0][1]["response"]
    assert (first["id"], first["object"], first["created_at"], first["model"], first["usage"]) == (
        RID,
        "response",
        1700000000,
        "gpt-5",
        None,
    )


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_sdk_accumulates_stream_to_the_non_stream_body(name: str) -> None:
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=omit, text_format=omit)
    final: Any = None
    for _, data in parse_sse(run_stream(name)):
        event = EVENTS.validate_python(data)
        assert_no_extra(event)
        state.handle_event(event)
        if data["type"] in ("response.completed", "response.incomplete"):
            final = event.response
    body_ = rs.encode_completion(
        completion(name, REQUEST), REQUEST, response_id=RID, created=1700000000
    )
    parsed = Response.model_validate(body_)
    assert_no_extra(parsed)
    assert final.model_dump() == parsed.model_dump()
    if name != "max_tokens":
        assert state._completed_response is not None
        assert state._completed_response.output_text == parsed.output_text


def test_failure_mid_stream_is_response_failed() -> None:
    enc = rs.StreamEncoder(REQUEST, response_id=RID, created=1)
    frames = enc.start()
    frames += enc.feed(SCENARIOS["text"][1])
    frames += enc.fail(QueueFull("too busy"))
    event, data = parse_sse(frames)[-1]
    assert event == "response.failed"
    assert data["response"]["status"] == "failed"
    assert data["response"]["error"] == {"code": "rate_limit_exceeded", "message": "too busy"}
    assert_no_extra(EVENTS.validate_python(data))
    assert enc.finished and enc.fail(QueueFull("x")) == []
