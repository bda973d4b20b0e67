"""Exchange capture: a request and its answer as normalized conversation rows (pure).

Theory of operation
-------------------
Clients of a model API resend the whole conversation with every request. Stored as
sent, a 30-turn conversation would be stored 30 times over; stored as *messages with
stable identities*, each message is stored once and every request points into the same
chain.

A message's identity is the hash of the message before it and its own content hash:
``id = sha256(prev_id + content_hash)``, so the same history sent again names the same
rows. The content hash is taken over a canonical form (:mod:`clibridge._conversations`):
text trimmed, thinking left out, tool-call arguments as sorted JSON, tool-call ids as
their canonical core -- what a client changes when it replays history does not change the
hash. The answer is stored as the assistant message a client replays
(:func:`~clibridge._conversations.assistant_message`), chained after the request's last
message, so the next request of the conversation finds it.

A request belongs to a conversation by its history: the deepest message of its chain that
is already stored (system prompt aside) names the conversation. A request without an
assistant message is a first turn and starts a new conversation, so two conversations
that open with the same words stay two.

Secrets never get here: only the neutral request (no headers, no keys) is captured.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any, Literal

import attrs

from ._conversations import canonical_id
from ._events import (
    ImagePart,
    Message,
    Part,
    TextPart,
    ThinkingPart,
    ToolCallPart,
    ToolResultPart,
)

CaptureMode = Literal["off", "metadata", "full"]

#: the ``prev_id`` of a chain's first message
ROOT = ""


@attrs.frozen
class CapturedMessage:
    """One message as the ledger stores it."""

    id: str
    prev_id: str
    role: str
    content_hash: str
    #: the message as JSON (full capture), None for metadata capture
    content: str | None


@attrs.frozen
class Exchange:
    """One request's capture, handed to the ledger's writer."""

    request_id: str
    started: float
    key: str | None
    model: str
    #: the request's chain: system prompt (when there is one), then its messages
    chain: tuple[CapturedMessage, ...]
    #: the answer chained after the request, None when the turn did not finish
    answer: CapturedMessage | None
    #: the request carries an assistant message (it continues a conversation)
    continues: bool


@attrs.frozen
class PendingCapture:
    """What the app hands over for capture; hashed and stored by the ledger's writer."""

    request_id: str
    started: float
    key: str | None
    model: str
    system: str
    messages: tuple[Message, ...]
    #: the answer as a client replays it, None when the turn did not finish
    answer: Message | None


def _canonical_parts(parts: Sequence[Part]) -> list[Any]:
    out: list[Any] = []
    text: list[str] = []

    def flush() -> None:
        joined = "".join(text).strip()
        if joined:
            out.append(["text", joined])
        text.clear()

    for part in parts:
        if isinstance(part, ThinkingPart):
            continue
        if isinstance(part, TextPart):
            text.append(part.text)
            continue
        flush()
        if isinstance(part, ImagePart):
            out.append(["image", _digest(part.data or part.url or "")])
        elif isinstance(part, ToolCallPart):
            out.append(["call", canonical_id(part.id), part.name, _json_or_text(part.arguments)])
        elif isinstance(part, ToolResultPart):
            out.append(
                ["result", canonical_id(part.tool_call_id), part.content.strip(), part.is_error]
            )
    flush()
    return out


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text.strip()


def _dumps(value: Any, *, canonical: bool) -> str:
    text = json.dumps(value, sort_keys=canonical, separators=(",", ":"), ensure_ascii=False)
    try:
        text.encode()
    except UnicodeEncodeError:
        # lone surrogates (JSON allows "\ud800"): kept, as JSON escapes SQLite can store
        text = json.dumps(value, sort_keys=canonical, separators=(",", ":"))
    return text


def _stored_parts(parts: Sequence[Part]) -> list[dict[str, Any]]:
    """The message as an operator reads it (full capture): thinking kept, images by digest."""
    out: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, TextPart):
            out.append({"type": "text", "text": part.text})
        elif isinstance(part, ThinkingPart):
            out.append({"type": "thinking", "text": part.text})
        elif isinstance(part, ImagePart):
            digest = _digest(part.data or part.url or "")
            out.append({"type": "image", "media_type": part.media_type, "sha256": digest})
        elif isinstance(part, ToolCallPart):
            out.append(
                {"type": "tool_call", "id": part.id, "name": part.name, "arguments": part.arguments}
            )
        elif isinstance(part, ToolResultPart):
            out.append(
                {
                    "type": "tool_result",
                    "tool_call_id": part.tool_call_id,
                    "content": part.content,
                    "is_error": part.is_error,
                }
            )
    return out


def message_row(
    prev_id: str, role: str, parts: Sequence[Part], mode: CaptureMode
) -> CapturedMessage:
    """``parts`` of ``role`` chained after ``prev_id``."""
    content_hash = hashlib.sha256(
        _dumps([role, _canonical_parts(parts)], canonical=True).encode()
    ).hexdigest()  # _dumps gives text that encodes
    ident = hashlib.sha256(f"{prev_id}:{content_hash}".encode()).hexdigest()
    content = _dumps(_stored_parts(parts), canonical=False) if mode == "full" else None
    return CapturedMessage(ident, prev_id, role, content_hash, content)


def chain(
    system: str, messages: Sequence[Message], mode: CaptureMode
) -> tuple[CapturedMessage, ...]:
    """The rows of a request's history, each chained to the one before."""
    out: list[CapturedMessage] = []
    prev = ROOT
    if system.strip():
        row = message_row(prev, "system", (TextPart(system),), mode)
        out.append(row)
        prev = row.id
    for message in messages:
        row = message_row(prev, message.role, message.parts, mode)
        out.append(row)
        prev = row.id
    return tuple(out)


def capture(
    *,
    request_id: str,
    started: float,
    key: str | None,
    model: str,
    system: str,
    messages: Sequence[Message],
    answer: Message | None,
    mode: CaptureMode,
) -> Exchange:
    """The capture of one request and its answer (pure; the ledger's writer calls it)."""
    rows = chain(system, messages, mode)
    prev = rows[-1].id if rows else ROOT
    answer_row = None if answer is None else message_row(prev, "assistant", answer.parts, mode)
    return Exchange(
        request_id=request_id,
        started=started,
        key=key,
        model=model,
        chain=rows,
        answer=answer_row,
        continues=any(m.role == "assistant" for m in messages),
    )
