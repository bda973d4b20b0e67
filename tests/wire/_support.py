"""Shared pieces of the wire tests: scripted event streams, SSE parsing, SDK strictness."""

from __future__ import annotations

import json
from typing import Any

import pydantic

from clibridge._events import (
    Event,
    Finished,
    FinishReason,
    Request,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    TurnStarted,
    Usage,
    collect,
)

USAGE = Usage(
    input_tokens=10,
    output_tokens=7,
    cache_read_input_tokens=100,
    cache_creation_input_tokens=5,
    reasoning_tokens=3,
)

SCENARIOS: dict[str, list[Event]] = {
    "text": [
        TurnStarted("claude-x"),
        TextDelta("Hel"),
        TextDelta("lo"),
        Finished(FinishReason.END_TURN, USAGE),
    ],
    "thinking": [
        TurnStarted("claude-x"),
        ThinkingDelta("hmm"),
        ThinkingDelta("..."),
        TextDelta("Hi"),
        Finished(FinishReason.END_TURN, USAGE),
    ],
    "tool": [
        TextDelta("Let me look."),
        ToolCallStart(0, "call_1", "get_weather"),
        ToolCallDelta(0, '{"city":'),
        ToolCallDelta(0, '"Paris"}'),
        ToolCallEnd(0, '{"city":"Paris"}'),
        Finished(FinishReason.TOOL_USE, USAGE),
    ],
    "parallel": [
        ToolCallStart(0, "call_a", "get_weather"),
        ToolCallEnd(0, '{"city":"Oslo"}'),
        ToolCallStart(1, "call_b", "get_time"),
        ToolCallDelta(1, '{"tz":"UTC"}'),
        ToolCallEnd(1, '{"tz":"UTC"}'),
        Finished(FinishReason.TOOL_USE, USAGE),
    ],
    "max_tokens": [
        TextDelta("Once upon"),
        Finished(FinishReason.MAX_TOKENS, USAGE),
    ],
}


def completion(name: str, request: Request) -> Any:
    return collect(request.model, SCENARIOS[name])


def parse_sse(frames: list[bytes]) -> list[tuple[str | None, Any]]:
    """(event name, decoded data) per frame; checks each frame is one well-formed event."""
    out: list[tuple[str | None, Any]] = []
    for raw in frames:
        text = raw.decode()
        assert text.endswith("\n\n") and text.count("\n\n") == 1, text
        event = None
        data: list[str] = []
        for line in text[:-2].split("\n"):
            field, _, value = line.partition(": ")
            if field == "event":
                event = value
            else:
                assert field == "data", line
                data.append(value)
        payload = "\n".join(data)
        out.append((event, payload if payload == "[DONE]" else json.loads(payload)))
    return out


def assert_no_extra(model: Any, allowed: frozenset[str] = frozenset(), path: str = "$") -> None:
    """Fail on any field the SDK type does not declare (the SDKs accept extras silently)."""
    if isinstance(model, pydantic.BaseModel):
        extra = set(model.model_extra or {}) - allowed
        assert not extra, f"{path}: fields the SDK does not know: {sorted(extra)}"
        for name in type(model).model_fields:
            assert_no_extra(getattr(model, name), allowed, f"{path}.{name}")
    elif isinstance(model, list):
        for i, item in enumerate(model):
            assert_no_extra(item, allowed, f"{path}[{i}]")
