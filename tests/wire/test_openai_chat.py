"""Chat Completions: decoding, golden streams and bodies, and the openai SDK's own parsing."""

from __future__ import annotations

from typing import Any

import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessageFunctionToolCall,
)

from clibridge._errors import RequestError, UnsupportedFeature, UpstreamError, UpstreamOverloaded
from clibridge._events import (
    Completion,
    Finished,
    FinishReason,
    ImagePart,
    Message,
    OutputFormat,
    TextDelta,
    TextPart,
    ThinkingPart,
    ToolCallPart,
    ToolChoice,
    ToolResultPart,
    Usage,
)
from clibridge._wire import openai_chat as chat

from ._support import SCENARIOS, USAGE, assert_no_extra, completion, parse_sse

# the one field OpenAI-compatible servers add to deltas and messages
EXTENSIONS = frozenset({"reasoning_content"})


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "sonnet", "messages": [{"role": "user", "content": "hi"}], **fields}


REQUEST = chat.decode_request(body())

# --------------------------------------------------------------------------- decoding


def test_decode_full_conversation() -> None:
    req = chat.decode_request(
        {
            "model": "sonnet",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this?"},
                        {
                            "type": "image_url",
                            "image_url": {"url": "data:image/png;base64,iVBORw0K"},
                        },
                        {
                            "type": "image_url",
                            "image_url": {"url": "https://x.test/a.jpg", "detail": "low"},
                        },
                    ],
                },
                {
                    "role": "assistant",
                    "content": None,
                    "reasoning_content": "think",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "f", "arguments": '{"a":1}'},
                        },
                        {
                            "id": "call_2",
                            "type": "function",
                            "function": {"name": "g", "arguments": "{}"},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "one"},
                {
                    "role": "tool",
                    "tool_call_id": "call_2",
                    "content": [{"type": "text", "text": "two"}],
                },
            ],
            "tools": [
                {
                    "type": "function",
                    "function": {"name": "f", "description": "F", "parameters": {"type": "object"}},
                },
                {"type": "function", "function": {"name": "g"}},
            ],
            "tool_choice": {"type": "function", "function": {"name": "f"}},
            "parallel_tool_calls": False,
            "max_completion_tokens": 50,
            "stop": "END",
            "reasoning_effort": "high",
            "stream": True,
            "user": "u1",
            "temperature": 0.2,
            "top_p": 0.9,
            "seed": 7,
            "brand_new_field": {"x": 1},
        }
    )
    assert req.system == "Be brief.\n\nUse tools."
    assert req.messages == (
        Message(
            "user",
            (
                TextPart("What is this?"),
                ImagePart(media_type="image/png", data="iVBORw0K"),
                ImagePart(media_type="image/jpeg", url="https://x.test/a.jpg"),
            ),
        ),
        Message(
            "assistant",
            (
                ThinkingPart("think"),
                ToolCallPart("call_1", "f", '{"a":1}'),
                ToolCallPart("call_2", "g", "{}"),
            ),
        ),
        Message("user", (ToolResultPart("call_1", "one"), ToolResultPart("call_2", "two"))),
    )
    assert [t.name for t in req.tools] == ["f", "g"]
    assert req.tools[0].input_schema == {"type": "object"}
    assert req.tools[1].input_schema == {"type": "object", "properties": {}}
    assert req.tool_choice == ToolChoice(mode="tool", name="f")
    assert req.parallel_tool_calls is False
    assert (req.max_tokens, req.stop, req.reasoning_effort) == (50, ("END",), "high")
    assert (req.stream, req.user) == (True, "u1")


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", ToolChoice()),
        ("none", ToolChoice(mode="none")),
        ("required", ToolChoice(mode="required")),
        (None, ToolChoice()),
    ],
)
def test_tool_choice(choice: Any, expected: ToolChoice) -> None:
    assert chat.decode_request(body(tool_choice=choice)).tool_choice == expected


def test_max_tokens_and_stop_list_and_effort_none() -> None:
    req = chat.decode_request(body(max_tokens=9, stop=["a", "b"], reasoning_effort="none"))
    assert (req.max_tokens, req.stop, req.reasoning_effort) == (9, ("a", "b"), None)


@pytest.mark.parametrize(
    ("fields", "param", "needle"),
    [
        (
            {"messages": [{"role": "user", "content": 5}]},
            "$.messages[0].content",
            "expected a string or an array",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "a"},
                    {"role": "user", "content": [{"type": "text"}]},
                ]
            },
            "$.messages[1].content[0].text",
            "required field missing",
        ),
        (
            {"messages": [{"role": "robot", "content": "a"}]},
            "$.messages[0].role",
            "expected one of",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
            "$.messages[0].content[0]",
            "unsupported type 'input_audio'",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": 3}}]}
                ]
            },
            "$.messages[0].content[0].image_url.url",
            "expected a string, got number",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}],
                    }
                ]
            },
            "$.messages[0].content[0].image_url.url",
            "http(s) URL",
        ),
        ({"messages": "hi"}, "$.messages", "expected an array, got string"),
        ({"messages": []}, "$.messages", "the conversation is empty"),
        (
            {"messages": [{"role": "system", "content": "s"}]},
            "$.messages",
            "the conversation is empty",
        ),
        (
            {"messages": [{"role": "tool", "content": "x"}]},
            "$.messages[0].tool_call_id",
            "needs the id",
        ),
        ({"messages": [{"role": "user"}]}, "$.messages[0].content", "needs content"),
        ({"model": 3}, "$.model", "expected a string"),
        ({"max_tokens": "9"}, "$.max_tokens", "expected an integer"),
        ({"max_tokens": 0}, "$.max_tokens", "positive"),
        ({"stream": "yes"}, "$.stream", "expected a boolean"),
        ({"tool_choice": "sometimes"}, "$.tool_choice", "expected one of"),
        (
            {"tools": [{"type": "function", "function": {"parameters": {}}}]},
            "$.tools[0].function.name",
            "missing",
        ),
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
            "$.messages[1]",
            "last message",
        ),
    ],
)
def test_bad_requests_name_the_path(fields: dict[str, Any], param: str, needle: str) -> None:
    with pytest.raises(RequestError) as info:
        chat.decode_request(body(**fields))
    assert info.value.param == param
    assert needle in info.value.message
    assert info.value.message.startswith(param)


def test_missing_model_and_not_an_object() -> None:
    with pytest.raises(RequestError) as info:
        chat.decode_request({"messages": []})
    assert info.value.param == "$.model"
    with pytest.raises(RequestError) as info:
        chat.decode_request([])
    assert info.value.param == "$"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"n": 2}, "$.n"),
        ({"logprobs": True}, "$.logprobs"),
        ({"top_logprobs": 3}, "$.top_logprobs"),
        ({"modalities": ["text", "audio"]}, "$.modalities"),
        ({"audio": {"voice": "x"}}, "$.audio"),
        ({"functions": [{"name": "f"}]}, "$.functions"),
        ({"messages": [{"role": "function", "name": "f", "content": "x"}]}, "$.messages[0].role"),
    ],
)
def test_unsupported_features(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(UnsupportedFeature) as info:
        chat.decode_request(body(**fields))
    assert info.value.param == param


def test_n_one_and_json_object_are_fine() -> None:
    req = chat.decode_request(body(n=1, logprobs=False, response_format={"type": "json_object"}))
    assert req.output_format == OutputFormat("json_object")


def test_response_formats_decode() -> None:
    """Regression (issue 14): json_object was ignored and json_schema refused."""
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    spec = {"name": "thing", "schema": schema, "strict": True}
    req = chat.decode_request(body(response_format={"type": "json_schema", "json_schema": spec}))
    assert req.output_format == OutputFormat("json_schema", schema, "thing", strict=True)
    req = chat.decode_request(body(response_format={"type": "json_schema", "json_schema": {}}))
    assert req.output_format == OutputFormat("json_schema")
    assert chat.decode_request(body(response_format={"type": "text"})).output_format is None


@pytest.mark.parametrize(
    ("fmt", "param"),
    [
        ({"type": "yaml"}, "$.response_format.type"),
        ({"type": "json_schema"}, "$.response_format.json_schema"),
        (
            {"type": "json_schema", "json_schema": {"schema": {"type": "integr"}}},
            "$.response_format.json_schema.schema",
        ),
        (
            {"type": "json_schema", "json_schema": {"schema": []}},
            "$.response_format.json_schema.schema",
        ),
    ],
)
def test_bad_response_formats_name_the_field(fmt: dict[str, Any], param: str) -> None:
    with pytest.raises(RequestError) as info:
        chat.decode_request(body(response_format=fmt))
    assert info.value.param == param, info.value.message


def test_stop_strings() -> None:
    assert chat.decode_request(body(stop="x")).stop == ("x",)
    assert chat.decode_request(body(stop=["a", "b"])).stop == ("a", "b")
    with pytest.raises(RequestError) as info:
        chat.decode_request(body(stop=["a", ""]))
    assert info.value.param == "$.stop[1]"
    assert len(chat.decode_request(body(stop=list("abcd"))).stop) == 4
    with pytest.raises(RequestError, match="at most 4 stop strings") as info:
        chat.decode_request(body(stop=list("abcde")))
    assert info.value.param == "$.stop"


def test_include_usage() -> None:
    assert chat.stream_include_usage(body(stream_options={"include_usage": True}))
    assert not chat.stream_include_usage(body())
    assert not chat.stream_include_usage("x")


# --------------------------------------------------------------------------- encoding


def run_stream(name: str, include_usage: bool = False) -> list[bytes]:
    enc = chat.StreamEncoder(
        REQUEST, response_id="chatcmpl-1", created=1700000000, include_usage=include_usage
    )
    frames = enc.start()
    for event in SCENARIOS[name]:
        assert not enc.finished
        frames += enc.feed(event)
    assert enc.finished
    return frames


def summary(frames: list[bytes]) -> list[Any]:
    out: list[Any] = []
    for event, data in parse_sse(frames):
        assert event is None
        if data == "[DONE]":
            out.append("DONE")
        elif not data["choices"]:
            out.append(("usage", data["usage"]))
        else:
            (choice,) = data["choices"]
            out.append((choice["delta"], choice["finish_reason"]))
    return out


ROLE = ({"role": "assistant", "content": ""}, None)
GOLDEN: dict[str, list[Any]] = {
    "text": [ROLE, ({"content": "Hel"}, None), ({"content": "lo"}, None), ({}, "stop"), "DONE"],
    "thinking": [
        ROLE,
        ({"reasoning_content": "hmm"}, None),
        ({"reasoning_content": "..."}, None),
        ({"content": "Hi"}, None),
        ({}, "stop"),
        "DONE",
    ],
    "tool": [
        ROLE,
        ({"content": "Let me look."}, None),
        (
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": ""},
                    }
                ]
            },
            None,
        ),
        ({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}, None),
        ({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}, None),
        ({}, "tool_calls"),
        "DONE",
    ],
    "parallel": [
        ROLE,
        (
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_a",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": ""},
                    }
                ]
            },
            None,
        ),
        ({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":"Oslo"}'}}]}, None),
        (
            {
                "tool_calls": [
                    {
                        "index": 1,
                        "id": "call_b",
                        "type": "function",
                        "function": {"name": "get_time", "arguments": ""},
                    }
                ]
            },
            None,
        ),
        ({"tool_calls": [{"index": 1, "function": {"arguments": '{"tz":"UTC"}'}}]}, None),
        ({}, "tool_calls"),
        "DONE",
    ],
    "max_tokens": [ROLE, ({"content": "Once upon"}, None), ({}, "length"), "DONE"],
}

USAGE_JSON = {
    "prompt_tokens": 115,
    "completion_tokens": 7,
    "total_tokens": 122,
    "prompt_tokens_details": {"cached_tokens": 100},
    "completion_tokens_details": {"reasoning_tokens": 3},
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_stream(name: str) -> None:
    assert summary(run_stream(name)) == GOLDEN[name]


def test_stream_chunk_envelope_and_usage_chunk() -> None:
    frames = run_stream("text", include_usage=True)
    parsed = [data for _, data in parse_sse(frames)]
    assert parsed[0] == {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "sonnet",
        "choices": [
            {
                "index": 0,
                "delta": {"role": "assistant", "content": ""},
                "logprobs": None,
                "finish_reason": None,
            }
        ],
        "usage": None,
    }
    assert parsed[-2] == {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "sonnet",
        "choices": [],
        "usage": USAGE_JSON,
    }
    assert parsed[-1] == "[DONE]"
    assert "usage" not in parse_sse(run_stream("text"))[0][1]


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_sdk_accumulates_stream_to_the_non_stream_body(name: str) -> None:
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    for _, data in parse_sse(run_stream(name, include_usage=True)):
        if data == "[DONE]":
            break
        chunk = ChatCompletionChunk.model_validate(data)
        assert_no_extra(chunk, EXTENSIONS)
        state.handle_chunk(chunk)
    streamed = state.current_completion_snapshot
    body_ = chat.encode_completion(
        completion(name, REQUEST), REQUEST, response_id="chatcmpl-1", created=1700000000
    )
    parsed = ChatCompletion.model_validate(body_)
    assert_no_extra(parsed, EXTENSIONS)
    s_msg, b_msg = streamed.choices[0].message, parsed.choices[0].message
    assert (s_msg.content or None) == (b_msg.content or None)
    b_calls = b_msg.tool_calls or []
    assert all(isinstance(c, ChatCompletionMessageFunctionToolCall) for c in b_calls), b_calls
    assert [(c.id, c.function.name, c.function.arguments) for c in s_msg.tool_calls or []] == [
        (c.id, c.function.name, c.function.arguments)
        for c in b_calls
        if isinstance(c, ChatCompletionMessageFunctionToolCall)
    ]
    assert streamed.choices[0].finish_reason == parsed.choices[0].finish_reason
    assert streamed.usage == parsed.usage


def test_non_stream_bodies() -> None:
    tool = chat.encode_completion(
        completion("tool", REQUEST), REQUEST, response_id="chatcmpl-1", created=5
    )
    assert tool == {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 5,
        "model": "sonnet",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Let me look.",
                    "refusal": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                        }
                    ],
                },
                "logprobs": None,
                "finish_reason": "tool_calls",
            }
        ],
        "usage": USAGE_JSON,
    }
    thinking = chat.encode_completion(
        completion("thinking", REQUEST), REQUEST, response_id="c", created=5
    )
    assert thinking["choices"][0]["message"]["reasoning_content"] == "hmm..."
    parallel = chat.encode_completion(
        completion("parallel", REQUEST), REQUEST, response_id="c", created=5
    )
    assert parallel["choices"][0]["message"]["content"] is None
    assert [c["id"] for c in parallel["choices"][0]["message"]["tool_calls"]] == [
        "call_a",
        "call_b",
    ]


def test_failure_mid_stream_is_an_error_chunk_the_sdk_raises_on() -> None:
    enc = chat.StreamEncoder(REQUEST, response_id="c", created=1)
    enc.start()
    frames = enc.fail(UpstreamOverloaded("upstream is overloaded"))
    assert enc.finished
    assert parse_sse(frames) == [
        (
            None,
            {
                "error": {
                    "message": "upstream is overloaded",
                    "type": "server_error",
                    "param": None,
                    "code": "overloaded",
                }
            },
        ),
        (None, "[DONE]"),
    ]
    assert enc.fail(UpstreamOverloaded("again")) == []
    assert enc.feed(Finished(FinishReason.END_TURN, Usage())) == []


def test_cancelled_is_never_success() -> None:
    enc = chat.StreamEncoder(REQUEST, response_id="c", created=1)
    frames = enc.feed(Finished(FinishReason.CANCELLED, USAGE))
    assert "error" in parse_sse(frames)[0][1]
    with pytest.raises(UpstreamError):
        chat.encode_completion(
            Completion("m", "", "", (), Finished(FinishReason.CANCELLED, USAGE)),
            REQUEST,
            response_id="c",
            created=1,
        )


def test_tool_call_end_without_deltas_sends_whole_arguments() -> None:
    assert summary(run_stream("parallel"))[2] == (
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"city":"Oslo"}'}}]},
        None,
    )


def test_non_ascii_is_kept_as_utf8() -> None:
    enc = chat.StreamEncoder(REQUEST, response_id="c", created=1)
    (frame,) = enc.feed(TextDelta("héllo ✓"))
    assert "héllo ✓".encode() in frame
