"""A conversation as the content of ONE claude ``user`` message, pure.

A fresh claude worker cannot be fed a prior transcript line by line (FINDINGS.md: assistant
lines written before the first user turn are merged and misplaced). So a request becomes
ONE ``user`` message (:func:`render_user_content`):

* a single user message goes as its own content: a plain string when it is one text part,
  else a list of ``text`` / ``image`` blocks in order;
* a longer conversation goes as a list of blocks: a short preamble, the earlier turns inside
  ``<conversation_history>`` with one ``<turn role="user|assistant">`` element per message
  (tool calls as ``<tool_call id=.. name=..>ARGS</tool_call>``, tool results as
  ``<tool_result id=.. name=..>TEXT</tool_result>``, images as image blocks at their place,
  thinking dropped), then the newest turn (every message after the last assistant
  message) rendered the same way after the line ``Latest user message:`` -- or, when it
  holds only tool results, after :data:`TOOL_RESULTS_HEADER`. When the conversation ends
  with an assistant message, the closing line asks the model to continue it.

The framing is built so the model cannot take an earlier request for a new one: the
preamble says the quoted turns already happened (their requests answered, their tool calls
made and returned), the history is ONE element closed by :data:`HISTORY_CLOSE` before the
newest turn, and the newest turn comes last, labelled. Nothing after the last
:data:`HISTORY_CLOSE` is history: the fake CLIs and the model stub rely on that to read
their ``@fake`` / ``@stub`` directives from the newest turn only
(:func:`clibridge.testing.scenario.directive_text`).

Trade-off: the model sees its earlier turns as quoted text, not as real assistant turns, so
prompt caching across requests does not apply and a client's assistant "prefill" is only
approximated. A parked worker that already holds the conversation avoids this entirely.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, TypeAlias

from ..._events import (
    ImagePart,
    Message,
    Part,
    TextPart,
    ThinkingPart,
    ToolCallPart,
    ToolResultPart,
)

HISTORY_OPEN: Final = "<conversation_history>"
HISTORY_CLOSE: Final = "</conversation_history>"
HISTORY_PREAMBLE: Final = (
    "The conversation so far is quoted below as context, oldest turn first. Your own earlier "
    'replies are the turns with role="assistant"; tool calls you made and the results you '
    f"got are shown inline. Everything inside {HISTORY_OPEN} has already happened: its "
    "requests were answered and its tool calls were made and returned their results. Respond "
    "only to what follows the history, as the assistant continuing this conversation; do not "
    "mention this quoting."
)
LATEST_HEADER: Final = "Latest user message:"
TOOL_RESULTS_HEADER: Final = (
    "Results of the tool calls in your last turn above (new; continue from them):"
)
CONTINUE_REQUEST: Final = (
    "The conversation ends with your own (assistant) turn: continue it exactly where it stops."
)

Block: TypeAlias = dict[str, Any]


def image_block(part: ImagePart) -> Block:
    if part.data is not None:
        source: dict[str, Any] = {
            "type": "base64",
            "media_type": part.media_type,
            "data": part.data,
        }
    else:
        source = {"type": "url", "url": part.url}
    return {"type": "image", "source": source}


class _Blocks:
    """Accumulates text and image blocks, merging adjacent text."""

    def __init__(self) -> None:
        self.blocks: list[Block] = []

    def text(self, text: str) -> None:
        if not text:
            return
        if self.blocks and self.blocks[-1]["type"] == "text":
            self.blocks[-1]["text"] += text
        else:
            self.blocks.append({"type": "text", "text": text})

    def image(self, part: ImagePart) -> None:
        self.blocks.append(image_block(part))


def _render_parts(parts: Sequence[Part], out: _Blocks, tool_names: Mapping[str, str]) -> None:
    for part in parts:
        if isinstance(part, TextPart):
            out.text(part.text + "\n")
        elif isinstance(part, ImagePart):
            out.image(part)
        elif isinstance(part, ToolCallPart):
            out.text(f'<tool_call id="{part.id}" name="{part.name}">{part.arguments}</tool_call>\n')
        elif isinstance(part, ToolResultPart):
            name = tool_names.get(part.tool_call_id, "")
            error = ' is_error="true"' if part.is_error else ""
            out.text(
                f'<tool_result id="{part.tool_call_id}" name="{name}"{error}>'
                f"{part.content}</tool_result>\n"
            )
        elif isinstance(part, ThinkingPart):
            pass  # earlier reasoning is not replayed


def _only_tool_results(messages: Sequence[Message]) -> bool:
    """True when ``messages`` say nothing but tool results (blank text aside)."""
    said = [
        part
        for message in messages
        for part in message.parts
        if not isinstance(part, ThinkingPart)
        and not (isinstance(part, TextPart) and not part.text.strip())
    ]
    return bool(said) and all(isinstance(part, ToolResultPart) for part in said)


def render_user_content(messages: Sequence[Message]) -> str | list[Block]:
    """The content of the one ``user`` line that carries ``messages`` (see module doc)."""
    if not messages:
        raise ValueError("a request needs at least one message")
    if len(messages) == 1 and messages[0].role == "user":
        parts = messages[0].parts
        if len(parts) == 1 and isinstance(parts[0], TextPart):
            return parts[0].text
        simple = [p for p in parts if isinstance(p, TextPart | ImagePart)]
        if len(simple) == len(parts):
            return [
                {"type": "text", "text": p.text} if isinstance(p, TextPart) else image_block(p)
                for p in simple
                if not (isinstance(p, TextPart) and not p.text)
            ]
    tool_names = {
        part.id: part.name
        for message in messages
        for part in message.parts
        if isinstance(part, ToolCallPart)
    }
    last_assistant = max((i for i, m in enumerate(messages) if m.role == "assistant"), default=-1)
    history = messages[: last_assistant + 1]
    latest = messages[last_assistant + 1 :]
    out = _Blocks()
    if history:
        out.text(f"{HISTORY_PREAMBLE}\n\n{HISTORY_OPEN}\n")
        for message in history:
            out.text(f'<turn role="{message.role}">\n')
            _render_parts(message.parts, out, tool_names)
            out.text("</turn>\n")
        out.text(f"{HISTORY_CLOSE}\n\n")
    if latest:
        if history:
            header = TOOL_RESULTS_HEADER if _only_tool_results(latest) else LATEST_HEADER
            out.text(header + "\n")
        for message in latest:
            _render_parts(message.parts, out, tool_names)
    else:
        out.text(CONTINUE_REQUEST + "\n")
    blocks = out.blocks
    # trailing newline of the last text block carries no meaning
    if blocks and blocks[-1]["type"] == "text":
        blocks[-1]["text"] = blocks[-1]["text"].rstrip("\n")
    return blocks
