"""Conversations across HTTP requests: canonical form, prefix fingerprints, tool call ids.

Theory of operation
-------------------
Model APIs are stateless: every request carries the whole conversation. A claude worker
is stateful: after a turn it holds the conversation (as native turns, tool blocks
included), and after a tool call it even holds the turn itself, waiting for the result.
The supervisor parks such a worker under the *fingerprint* of what it has seen, and a
later request whose messages extend exactly that resumes it and sends only the new
messages. Pure: no trio, no IO.

Canonical form. Clients re-serialise what they replay: JSON arguments re-encoded, text
trimmed, thinking dropped, ids rewritten. So a message is compared by a canonical form
(:func:`canonical_message`): text parts trimmed and joined, thinking dropped, images by
digest, tool call arguments as sorted compact JSON, and tool call ids reduced to their
lowercase letters and digits (:func:`normalize_id`). A message with nothing left (an
empty assistant turn) does not count.

Fingerprints. ``fingerprints(setup, messages)[i]`` is a SHA-256 chain over the setup
(system prompt, tool set, model) and the canonical forms of the first ``i`` messages, so a
request's every prefix is looked up in O(n).

Ids. The model's tool_use ids (``toolu_01...``) never reach the client: each call gets a
fresh id of lowercase letters and digits only (:func:`new_call_id`, ``call`` + 24 hex), so
a client that strips ``_`` (OpenClaw replays ``call_1`` as ``call1``), changes case or
otherwise keeps only the alphanumerics replays an id that still matches; results are
matched by the normalized id and mapped back to the CLI's id.

Decisions (:func:`plan`): a parked mid-turn worker is resumed only when the new messages
are exactly the results of its pending calls (any order, each once); a parked finished
turn only when the new messages are user messages (an assistant message written by the
client cannot be put into the worker's history faithfully). Anything else: a fresh worker
with the full history.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, TypeAlias

import attrs

from ._events import (
    Completion,
    ImagePart,
    Message,
    Part,
    TextPart,
    ThinkingPart,
    ToolCallPart,
    ToolResultPart,
)

_NOT_ALNUM = re.compile(r"[^a-z0-9]")


def normalize_id(call_id: str) -> str:
    """What survives any id rewriting we know of: lowercase letters and digits."""
    return _NOT_ALNUM.sub("", call_id.lower())


def new_call_id() -> str:
    """A client-visible tool call id that rewriting leaves intact (``call`` + 24 hex)."""
    return "call" + secrets.token_hex(12)


def _canonical_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text.strip()


def _canonical_part(part: Part) -> list[Any] | None:
    if isinstance(part, ImagePart):
        digest = hashlib.sha256((part.data or part.url or "").encode()).hexdigest()
        return ["image", part.media_type if part.data is not None else "", digest]
    if isinstance(part, ToolCallPart):
        return ["call", normalize_id(part.id), part.name, _canonical_json(part.arguments)]
    if isinstance(part, ToolResultPart):
        return ["result", normalize_id(part.tool_call_id), part.content.strip(), part.is_error]
    return None


def canonical_message(message: Message) -> bytes | None:
    """The bytes a message is compared by (None: it carries nothing that counts)."""
    items: list[Any] = []
    texts: list[str] = []
    for part in message.parts:
        if isinstance(part, ThinkingPart):
            continue
        if isinstance(part, TextPart):
            if part.text.strip():
                texts.append(part.text.strip())
            continue
        if texts:
            items.append(["text", "\n".join(texts)])
            texts = []
        items.append(_canonical_part(part))
    if texts:
        items.append(["text", "\n".join(texts)])
    if not items:
        return None
    return json.dumps(
        [message.role, items], sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode()


def fingerprints(setup: Hashable, messages: Sequence[Message]) -> list[str]:
    """``result[i]``: the fingerprint of ``setup`` plus the first ``i`` messages."""
    digest = hashlib.sha256(repr(setup).encode()).hexdigest()
    out = [digest]
    for message in messages:
        digest = extend_fingerprint(digest, message)
        out.append(digest)
    return out


def extend_fingerprint(digest: str, message: Message) -> str:
    """The fingerprint of a conversation whose fingerprint is ``digest`` plus ``message``."""
    canonical = canonical_message(message)
    if canonical is None:
        return digest
    return hashlib.sha256(digest.encode() + b"\n" + canonical).hexdigest()


def assistant_message(completion: Completion) -> Message:
    """The assistant message a client replays for ``completion`` (ids as the client saw them)."""
    parts: list[Part] = []
    if completion.text:
        parts.append(TextPart(completion.text))
    parts += [ToolCallPart(c.id, c.name, c.arguments) for c in completion.tool_calls]
    return Message("assistant", tuple(parts))


# --------------------------------------------------------------------------- parked


@attrs.frozen
class Conversation:
    """What the supervisor remembers about a parked worker."""

    #: the fingerprint of everything the worker has seen (its park key)
    key: str
    #: the pending calls of a turn waiting for results: (normalized client id, CLI id)
    pending: tuple[tuple[str, str], ...]
    since: float

    @property
    def mid_turn(self) -> bool:
        return bool(self.pending)


@attrs.frozen
class ToolResume:
    """Answer the paused turn's calls; ``results`` by the CLI's tool_use id."""

    results: Mapping[str, ToolResultPart]


@attrs.frozen
class Continue:
    """Write only ``messages`` into the conversation the worker holds."""

    messages: tuple[Message, ...]


Plan: TypeAlias = ToolResume | Continue


def plan(conversation: Conversation, new: Sequence[Message]) -> Plan | None:
    """How the parked worker can take ``new`` (the messages after its fingerprint), or None."""
    if not new:
        return None
    if conversation.mid_turn:
        by_id = dict(conversation.pending)
        results: dict[str, ToolResultPart] = {}
        for message in new:
            if message.role != "user":
                return None
            for part in message.parts:
                if not isinstance(part, ToolResultPart):
                    return None
                cli_id = by_id.get(normalize_id(part.tool_call_id))
                if cli_id is None or cli_id in results:
                    return None
                results[cli_id] = part
        if len(results) != len(by_id):
            return None
        return ToolResume(results)
    if any(message.role != "user" for message in new):
        return None
    return Continue(tuple(new))


class ConversationTable:
    """Parked conversations by fingerprint (the pool holds the workers under the same key)."""

    def __init__(self, ttl: float) -> None:
        self._ttl = ttl
        self._by_key: dict[str, Conversation] = {}

    def __len__(self) -> int:
        return len(self._by_key)

    def add(self, conversation: Conversation) -> None:
        self._by_key.pop(conversation.key, None)
        self._by_key[conversation.key] = conversation

    def take_longest(self, prints: Sequence[str]) -> tuple[int, Conversation] | None:
        """Remove and return the parked conversation that is the longest proper prefix."""
        for i in range(len(prints) - 2, 0, -1):
            found = self._by_key.pop(prints[i], None)
            if found is not None:
                return i, found
        return None

    def prune(self, now: float) -> None:
        """Forget entries the pool has surely reclaimed (older than its park_ttl)."""
        for key, conversation in list(self._by_key.items()):
            if now - conversation.since < self._ttl:
                break  # insertion order: the rest is younger
            del self._by_key[key]
