"""Request bodies per dialect and SSE parsing for the HTTP tests."""

from __future__ import annotations

import json
from typing import Any

from clibridge._wire.errors import Dialect

from .conftest import MODEL

PATHS: dict[Dialect, str] = {
    "openai_chat": "/v1/chat/completions",
    "openai_responses": "/v1/responses",
    "anthropic_messages": "/v1/messages",
}
DIALECTS: tuple[Dialect, ...] = tuple(PATHS)


def body_for(
    dialect: Dialect, *, stream: bool = False, model: str = MODEL, text: str = "hi"
) -> dict[str, Any]:
    if dialect == "openai_chat":
        body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": text}]}
        if stream:
            body["stream_options"] = {"include_usage": True}
    elif dialect == "openai_responses":
        body = {"model": model, "input": text}
    else:
        body = {"model": model, "max_tokens": 100, "messages": [{"role": "user", "content": text}]}
    body["stream"] = stream
    return body


def parse_sse(raw: bytes) -> list[tuple[str | None, str]]:
    """(event, data) per frame; comments (keepalives) come back as ("comment", text)."""
    out: list[tuple[str | None, str]] = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        event: str | None = None
        data: list[str] = []
        for line in block.split("\n"):
            if line.startswith(":"):
                out.append(("comment", line[1:].strip()))
            elif line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        if data:
            out.append((event, "\n".join(data)))
    return out


def streamed_text(dialect: Dialect, frames: list[tuple[str | None, str]]) -> str:
    text: list[str] = []
    for _event, data in frames:
        if data == "[DONE]" or _event == "comment":
            continue
        obj = json.loads(data)
        if dialect == "openai_chat":
            for choice in obj.get("choices", []):
                text.append(choice["delta"].get("content") or "")
        elif dialect == "openai_responses":
            if obj["type"] == "response.output_text.delta":
                text.append(obj["delta"])
        elif obj["type"] == "content_block_delta" and obj["delta"]["type"] == "text_delta":
            text.append(obj["delta"]["text"])
    return "".join(text)


def assert_error_shape(dialect: Dialect, payload: Any) -> dict[str, Any]:
    """The error object of ``payload`` after checking the dialect's envelope."""
    error: dict[str, Any]
    if dialect == "anthropic_messages":
        assert payload["type"] == "error", payload
        error = payload["error"]
        assert set(error) >= {"type", "message"}
    else:
        error = payload["error"]
        assert set(error) >= {"message", "type", "param", "code"}, payload
    assert isinstance(error["message"], str) and error["message"]
    return error
