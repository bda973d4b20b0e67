"""A request as codex takes it: history items for ``thread/inject_items`` and the turn input."""

from __future__ import annotations

from typing import Any

import attrs

from ..._errors import (
    RequestError,
    UnsupportedFeature,
)
from ..._events import (
    ImagePart,
    Message,
    Request,
    TextPart,
    ThinkingPart,
    ToolCallPart,
    ToolResultPart,
)


@attrs.frozen
class RenderedInput:
    """A request as codex takes it: history for ``thread/inject_items`` + the turn input."""

    history: tuple[dict[str, Any], ...]
    input: tuple[dict[str, Any], ...]


def _image_url(part: ImagePart) -> str:
    if part.url is not None:
        return part.url
    return f"data:{part.media_type};base64,{part.data}"


def _history_item(message: Message) -> list[dict[str, Any]]:
    """Raw Responses API items for one earlier message."""
    items: list[dict[str, Any]] = []
    content: list[dict[str, Any]] = []
    text_type = "input_text" if message.role == "user" else "output_text"

    def flush() -> None:
        if content:
            items.append({"type": "message", "role": message.role, "content": list(content)})
            content.clear()

    for part in message.parts:
        if isinstance(part, TextPart):
            content.append({"type": text_type, "text": part.text})
        elif isinstance(part, ImagePart):
            if message.role != "user":
                continue  # the Responses API has no assistant images
            content.append({"type": "input_image", "image_url": _image_url(part)})
        elif isinstance(part, ToolCallPart):
            flush()
            items.append(
                {
                    "type": "function_call",
                    "call_id": part.id,
                    "name": part.name,
                    "arguments": part.arguments,
                }
            )
        elif isinstance(part, ToolResultPart):
            flush()
            items.append(
                {
                    "type": "function_call_output",
                    "call_id": part.tool_call_id,
                    "output": part.content,
                }
            )
        elif isinstance(part, ThinkingPart):
            continue  # replayed reasoning text cannot be given back as reasoning
    flush()
    return items


def _input_items(message: Message) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for part in message.parts:
        if isinstance(part, TextPart):
            items.append({"type": "text", "text": part.text})
        elif isinstance(part, ImagePart):
            items.append({"type": "image", "url": _image_url(part)})
    return items


def render_input(request: Request) -> RenderedInput:
    """Split ``request.messages`` into injected history and the last user message's input."""
    if not request.messages:
        raise RequestError("the request has no messages", param="$.messages")
    last = request.messages[-1]
    if last.role != "user":
        raise UnsupportedFeature(
            "the codex backend needs the conversation to end with a user message "
            "(assistant prefill is not supported)",
            param="$.messages",
        )
    history: list[dict[str, Any]] = []
    for message in request.messages[:-1]:
        history += _history_item(message)
    # tool results end the conversation as function_call_output items (what the model
    # produced them for); the turn input is then only what else the message says
    results = tuple(p for p in last.parts if isinstance(p, ToolResultPart))
    if results:
        history += _history_item(Message("user", results))
    items = _input_items(last)
    if not items and not results:
        items.append({"type": "text", "text": ""})
    return RenderedInput(tuple(history), tuple(items))


def render_transcript(request: Request) -> tuple[dict[str, Any], ...]:
    """The whole conversation as one turn input: for an app-server without inject_items.

    Less faithful than :func:`render_input` (the model sees one user message that quotes
    the earlier turns), so it is only the fallback.
    """
    if len(request.messages) <= 1:
        return render_input(request).input
    blocks: list[str] = ["<conversation_so_far>"]
    images: list[dict[str, Any]] = []
    for message in request.messages[:-1]:
        lines: list[str] = []
        for part in message.parts:
            if isinstance(part, TextPart):
                lines.append(part.text)
            elif isinstance(part, ImagePart):
                lines.append("[image]")
                images.append({"type": "image", "url": _image_url(part)})
            elif isinstance(part, ToolCallPart):
                lines.append(f"[tool call {part.name} {part.arguments}]")
            elif isinstance(part, ToolResultPart):
                lines.append(f"[tool result {part.tool_call_id}: {part.content}]")
        blocks.append(f"[{message.role}]\n" + "\n".join(lines))
    blocks.append("</conversation_so_far>\n")
    head = {"type": "text", "text": "\n\n".join(blocks)}
    return (head, *images, *render_input(request).input)
