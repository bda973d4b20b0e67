"""Lone UTF-16 surrogates are refused at decode time, with the path of the field.

Regression (issue 15, item 1): a ``\\ud800`` escape without its pair anywhere in text that
reaches a CLI (message, system prompt, tool name / description / schema, tool-call name,
id or arguments, tool result) decoded fine, then raised ``UnicodeEncodeError`` where the
worker encodes its stdin line: a 500 with a traceback, and in a tool schema the worker's
reader died and the worker was replaced (68 such requests caused 41 restarts).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from clibridge._errors import RequestError
from clibridge._events import Request
from clibridge._wire import anthropic_messages, openai_chat, openai_responses
from clibridge._wire._converter import find_lone_surrogate

LONE = "\ud800"
SCHEMA = {"type": "object", "properties": {"city": {"type": "string", "description": "a city"}}}

CHAT: dict[str, Any] = {
    "model": "m",
    "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
        {
            "role": "assistant",
            "content": "looking",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "user", "content": "thanks"},
    ],
    "tools": [
        {
            "type": "function",
            "function": {"name": "get_weather", "description": "the weather", "parameters": SCHEMA},
        }
    ],
}

RESPONSES: dict[str, Any] = {
    "model": "m",
    "instructions": "be brief",
    "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "weather?"}]},
        {
            "type": "function_call",
            "call_id": "call_1",
            "name": "get_weather",
            "arguments": '{"city":"Oslo"}',
        },
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        {"role": "user", "content": "thanks"},
    ],
    "tools": [
        {
            "type": "function",
            "name": "get_weather",
            "description": "the weather",
            "parameters": SCHEMA,
        }
    ],
}

MESSAGES: dict[str, Any] = {
    "model": "m",
    "max_tokens": 100,
    "system": [{"type": "text", "text": "be brief"}],
    "messages": [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "looking"},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Oslo"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                {"type": "text", "text": "thanks"},
            ],
        },
    ],
    "tools": [{"name": "get_weather", "description": "the weather", "input_schema": SCHEMA}],
}

Decoder = Callable[[object], Request]
DIALECTS: dict[str, tuple[Decoder, dict[str, Any]]] = {
    "openai_chat": (openai_chat.decode_request, CHAT),
    "openai_responses": (openai_responses.decode_request, RESPONSES),
    "anthropic_messages": (anthropic_messages.decode_request, MESSAGES),
}

# (dialect, where the lone surrogate goes, the path the 400 names)
Path = tuple[str | int, ...]
CASES: list[tuple[str, Path, str]] = [
    ("openai_chat", ("messages", 0, "content"), "$.messages[0].content"),
    ("openai_chat", ("messages", 1, "content", 0, "text"), "$.messages[1].content[0].text"),
    (
        "openai_chat",
        ("messages", 2, "tool_calls", 0, "id"),
        "$.messages[2].tool_calls[0].id",
    ),
    (
        "openai_chat",
        ("messages", 2, "tool_calls", 0, "function", "name"),
        "$.messages[2].tool_calls[0].function.name",
    ),
    (
        "openai_chat",
        ("messages", 2, "tool_calls", 0, "function", "arguments"),
        "$.messages[2].tool_calls[0].function.arguments",
    ),
    ("openai_chat", ("messages", 3, "content"), "$.messages[3].content"),
    ("openai_chat", ("tools", 0, "function", "name"), "$.tools[0].function.name"),
    (
        "openai_chat",
        ("tools", 0, "function", "description"),
        "$.tools[0].function.description",
    ),
    (
        "openai_chat",
        ("tools", 0, "function", "parameters", "properties", "city", "description"),
        "$.tools[0].function.parameters.properties.city.description",
    ),
    ("openai_responses", ("instructions",), "$.instructions"),
    ("openai_responses", ("input", 0, "content", 0, "text"), "$.input[0].content[0].text"),
    ("openai_responses", ("input", 1, "call_id"), "$.input[1].call_id"),
    ("openai_responses", ("input", 1, "name"), "$.input[1].name"),
    ("openai_responses", ("input", 1, "arguments"), "$.input[1].arguments"),
    ("openai_responses", ("input", 2, "output"), "$.input[2].output"),
    ("openai_responses", ("tools", 0, "description"), "$.tools[0].description"),
    (
        "openai_responses",
        ("tools", 0, "parameters", "properties", "city", "type"),
        "$.tools[0].parameters.properties.city.type",
    ),
    ("anthropic_messages", ("system", 0, "text"), "$.system[0].text"),
    ("anthropic_messages", ("messages", 0, "content"), "$.messages[0].content"),
    ("anthropic_messages", ("messages", 1, "content", 1, "id"), "$.messages[1].content[1].id"),
    (
        "anthropic_messages",
        ("messages", 1, "content", 1, "name"),
        "$.messages[1].content[1].name",
    ),
    (
        "anthropic_messages",
        ("messages", 1, "content", 1, "input", "city"),
        "$.messages[1].content[1].input.city",
    ),
    (
        "anthropic_messages",
        ("messages", 2, "content", 0, "content"),
        "$.messages[2].content[0].content",
    ),
    ("anthropic_messages", ("tools", 0, "name"), "$.tools[0].name"),
    (
        "anthropic_messages",
        ("tools", 0, "input_schema", "properties", "city", "description"),
        "$.tools[0].input_schema.properties.city.description",
    ),
]


def _inject(body: dict[str, Any], path: Path) -> dict[str, Any]:
    out = copy.deepcopy(body)
    node: Any = out
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = f"a{LONE}b" + str(node[path[-1]])
    return out


@pytest.mark.parametrize("dialect", list(DIALECTS))
def test_the_bodies_decode_without_surrogates(dialect: str) -> None:
    decode, body = DIALECTS[dialect]
    req = decode(copy.deepcopy(body))
    assert req.tools and len(req.messages) >= 3


@pytest.mark.parametrize(("dialect", "path", "param"), CASES, ids=[c[2] for c in CASES])
def test_a_lone_surrogate_is_a_400_naming_the_field(dialect: str, path: Path, param: str) -> None:
    """Regression (issue 15): a lone surrogate reached the worker's stdin encoder."""
    decode, body = DIALECTS[dialect]
    with pytest.raises(RequestError) as info:
        decode(_inject(body, path))
    assert info.value.status == 400
    assert info.value.param == param
    assert info.value.message.startswith(f"{param}: contains a lone UTF-16 surrogate")
    info.value.message.encode("utf-8")  # the message itself is safe to send


def test_escapes_in_raw_json_and_encoded_surrogate_bytes_are_refused() -> None:
    """What clients really send: a ``\\ud800`` escape (or the bytes ED A0 80, which
    ``json.loads`` decodes with surrogatepass) in the JSON text."""
    raw = json.dumps(CHAT).replace('"thanks"', '"than\\udc00ks"')
    with pytest.raises(RequestError) as info:
        openai_chat.decode_request(json.loads(raw))
    assert info.value.param == "$.messages[4].content"
    raw_bytes = json.dumps(MESSAGES).encode().replace(b'"weather?"', b'"we\xed\xa0\x80ather?"')
    with pytest.raises(RequestError) as info:
        anthropic_messages.decode_request(json.loads(raw_bytes))
    assert info.value.param == "$.messages[0].content"


def test_a_surrogate_in_a_schema_key_names_the_key() -> None:
    body = copy.deepcopy(MESSAGES)
    body["tools"][0]["input_schema"]["properties"][f"ci{LONE}ty"] = {"type": "string"}
    with pytest.raises(RequestError) as info:
        anthropic_messages.decode_request(body)
    assert info.value.param == '$.tools[0].input_schema.properties["ci\\ud800ty"]'


def test_paired_surrogates_and_other_unicode_pass() -> None:
    raw = json.dumps(CHAT).replace('"thanks"', '"thanks \\ud83d\\ude00 \\u2028 \\u0000 \\uffff"')
    req = openai_chat.decode_request(json.loads(raw))
    assert "\U0001f600" in str(req.messages[-1])


def test_the_scan_survives_deep_nesting_and_non_json_values() -> None:
    deep: Any = "x" + LONE
    for _ in range(5000):  # deeper than the recursion limit
        deep = [deep]
    path = find_lone_surrogate({"a": deep})
    assert path is not None and path.startswith("$.a[0][0]") and path.count("[0]") == 5000
    assert find_lone_surrogate({"a": (1, 2), "b": {1: "x"}}) is None
    assert find_lone_surrogate({"a": object(), "b": ["ok", {"c d": LONE}]}) == '$.b[1]["c d"]'
