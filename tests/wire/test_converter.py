"""The converter: strict JSON kinds, nested paths, and fuzzing every decoder."""

from __future__ import annotations

import contextlib
from typing import Any, Literal

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clibridge._errors import RequestError
from clibridge._wire import anthropic_messages, openai_chat, openai_responses
from clibridge._wire._converter import structure


@attrs.frozen
class Leaf:
    type: Literal["leaf"]
    value: int


@attrs.frozen
class Other:
    type: Literal["other"]
    names: list[str]


@attrs.frozen
class Root:
    items: list[list[Leaf | Other]]
    label: str | None = None
    flag: bool = False


@pytest.mark.parametrize(
    ("value", "param", "message"),
    [
        (
            {"items": [[{"type": "leaf", "value": 1}, {"type": "other", "names": ["a", 2]}]]},
            "$.items[0][1].names[1]",
            "expected a string, got number",
        ),
        (
            {"items": [[], [{"type": "leaf", "value": 1.5}]]},
            "$.items[1][0].value",
            "expected an integer, got 1.5",
        ),
        (
            {"items": [[{"type": "leaf", "value": True}]]},
            "$.items[0][0].value",
            "expected an integer, got boolean",
        ),
        ({"items": [[{"type": "leaf"}]]}, "$.items[0][0].value", "required field missing"),
        (
            {"items": [[{"type": "tree"}]]},
            "$.items[0][0]",
            "unsupported type 'tree'; expected one of 'leaf', 'other'",
        ),
        ({"items": [[{"value": 1}]]}, "$.items[0][0]", "unsupported type None"),
        ({"items": [["leaf"]]}, "$.items[0][0]", "expected an object, got string"),
        ({"items": "abc"}, "$.items", "expected an array, got string"),
        ({"items": [], "label": {"a": 1}}, "$.label", "expected a string or null, got object"),
        ({"items": [], "flag": 1}, "$.flag", "expected a boolean, got number"),
        ({}, "$.items", "required field missing"),
        ("x", "$", "expected an object, got string"),
    ],
)
def test_nested_paths(value: object, param: str, message: str) -> None:
    with pytest.raises(RequestError) as info:
        structure(value, Root)
    assert info.value.param == param
    assert info.value.message.startswith(f"{param}: {message}")


def test_multiple_problems_are_counted() -> None:
    with pytest.raises(RequestError) as info:
        structure({"items": 1, "flag": "x"}, Root)
    assert info.value.message == "$.items: expected an array, got number (and 1 more problem)"


def test_valid_value_and_extra_keys() -> None:
    root = structure({"items": [[{"type": "leaf", "value": 2.0, "x": 1}]], "unknown": []}, Root)
    assert root == Root(items=[[Leaf("leaf", 2)]])


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
KEYS = st.sampled_from(
    [
        "model",
        "messages",
        "input",
        "content",
        "role",
        "type",
        "text",
        "tools",
        "tool_choice",
        "system",
        "tool_calls",
        "function",
        "name",
        "image_url",
        "url",
        "source",
        "max_tokens",
        "stop",
        "thinking",
        "budget_tokens",
        "call_id",
        "output",
        "arguments",
        "tool_use_id",
        "id",
        "instructions",
        "stream",
    ]
)
ROLES = st.sampled_from(["user", "assistant", "system", "tool", "developer"])
TYPES = st.sampled_from(
    [
        "text",
        "image_url",
        "image",
        "tool_use",
        "tool_result",
        "thinking",
        "function",
        "message",
        "function_call",
        "function_call_output",
        "input_text",
        "input_image",
        "base64",
        "url",
        "enabled",
    ]
)
# Plausible-looking bodies reach deeper than random JSON: known keys, roles and types.
SHAPED = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 5) | st.text(max_size=4) | ROLES | TYPES,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(KEYS, children, max_size=5),
    max_leaves=30,
)
DECODERS = [
    openai_chat.decode_request,
    openai_responses.decode_request,
    anthropic_messages.decode_request,
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=JSON | SHAPED)
def test_decoders_raise_only_request_errors(body: Any) -> None:
    for decode in DECODERS:
        with contextlib.suppress(RequestError):
            decode(body)


@settings(max_examples=150, deadline=None)
@given(
    messages=st.lists(
        st.fixed_dictionaries({"role": ROLES, "content": SHAPED}), min_size=1, max_size=4
    ),
    extra=st.dictionaries(KEYS, SHAPED, max_size=3),
)
def test_decoders_raise_only_request_errors_on_message_lists(
    messages: list[dict[str, Any]], extra: dict[str, Any]
) -> None:
    for decode in DECODERS:
        for body in (
            {**extra, "model": "m", "messages": messages},
            {**extra, "model": "m", "input": messages},
        ):
            with contextlib.suppress(RequestError):
                decode(body)
