"""Conversations across HTTP requests: canonical items, alignment, tool call ids.

Theory of operation
-------------------
Model APIs are stateless: every request carries the whole conversation. A CLI worker is
stateful: after a turn it holds the conversation (as native turns, tool blocks included),
and after a tool call it even holds the turn itself, waiting for the result. The
supervisor parks such a worker with the conversation it holds, and a later request that
*continues* it resumes the worker and sends only what is new. Pure: no trio, no IO.

Items. Clients re-serialise what they replay: JSON arguments re-encoded, text trimmed,
thinking dropped, ids rewritten, consecutive messages of one role merged or split. So a
conversation is compared as a sequence of *items*, one per part (:func:`items`): a text
part trimmed, an image by digest, a tool call with its arguments as sorted compact JSON,
a tool result; thinking and empty text count for nothing. Each item is the hash of its
role and canonical form.

Ids. The model's tool_use ids never reach the client: each call gets a fresh id
``call`` + 24 hex (:func:`new_call_id`). Clients rewrite ids they replay -- OpenClaw
turns ``call_1`` into ``call1`` in chat completions and wraps ours as
``call_<ours>_fc_<hex>_<hex>`` in the Responses API -- so an id is compared by
:func:`canonical_id`: lowercase letters and digits only, and when one of our ids stands
inside that, just our id.

Alignment. Real clients add transient context to each request and drop it from the next
one: OpenClaw appends a user message ``<<<BEGIN_OPENCLAW_INTERNAL_CONTEXT>>>...`` after the
user's own message (or after the tool results) and replays the history without it. A
request continues a parked conversation when the parked items can be walked in order
against the request's items, where a parked item the request lacks may be skipped only if
it is *droppable*: user text or image that follows another user item (never the first
item of a user turn, never a tool result or anything the model wrote). Aider instead
appends its edit-format rules (~3 KB) to the newest user message and replays that message
without them: so a user text of the parked conversation's *last* user message also matches
the request's text when it starts with it and goes on at a line break (:func:`_trimmed`).
The request's items after the walk are the new ones; they must start on a message boundary.
:func:`best_match` tries every parked conversation of the request's setup (system prompt,
tools, model) and takes the one that aligns furthest. The parked conversations themselves
live in the pool, with their workers (:meth:`clibridge._pool.WorkerPool.parked`): one
owner, one clock (``park_ttl``, pressure, drain), nothing to keep in step.

One-shot clients. A client that starts a new conversation with every request never
continues what was parked for it, and parking costs it: the worker holding the finished
conversation is reused only after a ``/clear`` on the next request's path. So a setup whose
last :data:`ONE_SHOT_STREAK` requests all began new conversations gets its finished
conversations not parked (:meth:`OneShotWatch.parks_finished`): the worker is released,
cleared in the background and ready. The first request with history for that setup --
hit or miss -- ends the streak. Turns paused on tool calls are always parked. Already
from the second new conversation in a row (:meth:`OneShotWatch.reuses_finished`) a
request takes the worker of a parked finished conversation of its setup at once, before a
spare and however recently it was parked (otherwise a conversation parked moments ago is
left to its client while a boot can serve the request: :mod:`clibridge._pool`).

Decisions (:func:`plan`): a worker paused mid-turn is resumed only when the new messages
are user messages carrying exactly the results of its pending calls (any order, each once);
text after the results (the client's context for this round) is appended to the last
result, as the model would have seen it right after the results in one user turn. A
parked finished turn takes new messages that are all user messages. Anything else: a
fresh worker with the full history, and the parked worker is let go at once.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Hashable, Iterable, Mapping, Sequence
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
_OUR_ID = re.compile(r"call[0-9a-f]{24}")


def normalize_id(call_id: str) -> str:
    """What survives any id rewriting we know of: lowercase letters and digits."""
    return _NOT_ALNUM.sub("", call_id.lower())


def canonical_id(call_id: str) -> str:
    """The id a client's rewritten id stands for: ours when it carries one (module doc)."""
    normal = normalize_id(call_id)
    found = _OUR_ID.search(normal)
    return found.group() if found else normal


def new_call_id() -> str:
    """A client-visible tool call id that rewriting leaves findable (``call`` + 24 hex)."""
    return "call" + secrets.token_hex(12)


def _canonical_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text.strip()


def _canonical_part(part: Part) -> list[Any] | None:
    if isinstance(part, ThinkingPart):
        return None
    if isinstance(part, TextPart):
        text = part.text.strip()
        return ["text", text] if text else None
    if isinstance(part, ImagePart):
        digest = hashlib.sha256((part.data or part.url or "").encode()).hexdigest()
        return ["image", part.media_type if part.data is not None else "", digest]
    if isinstance(part, ToolCallPart):
        return ["call", canonical_id(part.id), part.name, _canonical_json(part.arguments)]
    if isinstance(part, ToolResultPart):
        return ["result", canonical_id(part.tool_call_id), part.content.strip(), part.is_error]
    return None


@attrs.frozen
class Item:
    """One part of a conversation as compared: its digest, and whether a client may drop it."""

    digest: str
    droppable: bool
    #: the index of the message it belongs to
    message: int
    #: a user text's canonical text (alignment allows for a trimmed one), else None
    text: str | None = attrs.field(default=None, repr=False)


def items(messages: Sequence[Message], start: int = 0) -> list[Item]:
    """The items of ``messages`` (message indexes counted from ``start``)."""
    out: list[Item] = []
    previous_role: str | None = None
    for index, message in enumerate(messages, start):
        for part in message.parts:
            canonical = _canonical_part(part)
            if canonical is None:
                continue
            blob = json.dumps(
                [message.role, canonical],
                sort_keys=True,
                separators=(",", ":"),
                ensure_ascii=False,
            )
            droppable = (
                message.role == "user"
                and previous_role == "user"
                and canonical[0] in ("text", "image")
            )
            text = canonical[1] if message.role == "user" and canonical[0] == "text" else None
            digest = hashlib.sha256(blob.encode()).hexdigest()
            out.append(Item(digest, droppable, index, text))
            previous_role = message.role
    return out


def setup_digest(setup: Hashable) -> str:
    """The digest of what must be equal for two requests to share a conversation."""
    return hashlib.sha256(repr(setup).encode()).hexdigest()


def conversation_key(setup: str, held: Sequence[Item]) -> str:
    """A parked conversation's key: its setup and every item it holds."""
    digest = hashlib.sha256(setup.encode())
    for item in held:
        digest.update(item.digest.encode())
    return digest.hexdigest()


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

    #: the pool's park key (:func:`conversation_key`)
    key: str
    setup: str
    #: the items of the conversation the worker holds, as the client last sent them
    held: tuple[Item, ...]
    #: the pending calls of a turn waiting for results: (canonical client id, CLI id)
    pending: tuple[tuple[str, str], ...]

    @property
    def mid_turn(self) -> bool:
        return bool(self.pending)


def align(held: Sequence[Item], request: Sequence[Item]) -> tuple[int, int] | None:
    """Walk ``held`` against ``request`` (module doc): (request items used, held dropped).

    None when ``held`` is not the start of ``request`` modulo dropped context, or when the
    walk ends inside a message.
    """
    j = dropped = 0
    last_user = max((item.message for item in held if item.text is not None), default=None)
    for item in held:
        if j < len(request) and (
            request[j].digest == item.digest
            or (item.message == last_user and _trimmed(item, request[j]))
        ):
            j += 1
        elif item.droppable:
            dropped += 1
        else:
            return None
    if 0 < j < len(request) and request[j].message == request[j - 1].message:
        return None
    return j, dropped


def _trimmed(held: Item, sent: Item) -> bool:
    """``sent`` is the user text ``held`` without what the client appended to it for one
    request only (module doc): ``held`` starts with it and goes on at a line break."""
    if held.text is None or sent.text is None or len(sent.text) >= len(held.text):
        return False
    return held.text.startswith(sent.text) and held.text[len(sent.text)] == "\n"


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
    """How the parked worker can take ``new`` (the messages after what it holds), or None."""
    if not new or any(message.role != "user" for message in new):
        return None
    if not conversation.mid_turn:
        return Continue(tuple(new))
    by_id = dict(conversation.pending)
    results: dict[str, ToolResultPart] = {}
    context: list[str] = []
    for message in new:
        for part in message.parts:
            if isinstance(part, ToolResultPart):
                cli_id = by_id.get(canonical_id(part.tool_call_id))
                if cli_id is None or cli_id in results or context:
                    return None  # unknown, answered twice, or after the context
                results[cli_id] = part
            elif isinstance(part, TextPart):
                if part.text.strip():
                    context.append(part.text.strip())
            elif not isinstance(part, ThinkingPart):
                return None  # an image or a call after tool results: not for an MCP result
    if len(results) != len(by_id):
        return None
    if context:
        last = conversation.pending[-1][1]
        part = results[last]
        results[last] = attrs.evolve(part, content="\n\n".join([part.content, *context]))
    return ToolResume(results)


@attrs.frozen
class Match:
    """A parked conversation a request continues: what to send it, or why it can't."""

    conversation: Conversation
    #: the request's messages the worker has not seen
    new: tuple[Message, ...]
    #: context messages the worker holds that the client no longer sends
    dropped: int
    #: None when the worker cannot take ``new`` faithfully (let it go, use a fresh worker)
    plan: Plan | None


#: this many new conversations in a row, and a setup's finished turns are not parked
ONE_SHOT_STREAK = 3
#: setups whose streak is remembered (least recently seen forgotten first)
STREAK_SETUPS = 256


def best_match(
    parked: Iterable[Conversation],
    setup: str,
    messages: Sequence[Message],
    request: Sequence[Item],
) -> Match | None:
    """The parked conversation of ``setup`` that ``request`` continues furthest, if any.

    ``parked``: what the pool holds parked now (the pool is the one owner of parked
    conversations and their expiry; this only chooses among them)."""
    best: tuple[int, Conversation, int] | None = None
    for conversation in parked:
        if conversation.setup != setup:
            continue
        walked = align(conversation.held, request)
        if walked is None:
            continue
        used, dropped = walked
        if best is None or used > best[0]:
            best = (used, conversation, dropped)
    if best is None:
        return None
    used, conversation, dropped = best
    start = request[used].message if used < len(request) else len(messages)
    new = tuple(messages[start:])
    return Match(conversation, new, dropped, plan(conversation, new))


class OneShotWatch:
    """Per backend: how many new conversations in a row each setup's requests began
    (module doc, "One-shot clients")."""

    def __init__(self) -> None:
        #: setup digest -> new conversations in a row (least recently seen first)
        self._new_in_a_row: dict[str, int] = {}
        #: finished conversations released instead of parked (one-shot clients)
        self.one_shot_releases = 0

    def note_request(self, setup: str, messages: Sequence[Message]) -> None:
        """Count a request of ``setup``: a new conversation, or one with history."""
        streak = self._new_in_a_row.pop(setup, 0)
        if not any(m.role == "assistant" for m in messages):
            self._new_in_a_row[setup] = streak + 1
            if len(self._new_in_a_row) > STREAK_SETUPS:
                del self._new_in_a_row[next(iter(self._new_in_a_row))]

    def parks_finished(self, setup: str) -> bool:
        """Whether a finished conversation of ``setup`` is worth parking (module doc)."""
        return self._new_in_a_row.get(setup, 0) < ONE_SHOT_STREAK

    def reuses_finished(self, setup: str) -> bool:
        """Whether this request (just noted) and the one before it of ``setup`` both began
        new conversations: the conversation parked by that one was not continued, so this
        one may take its worker at once rather than a spare or a boot (module doc)."""
        return self._new_in_a_row.get(setup, 0) >= 2
