"""A scriptable loopback model API: the upstream the *real* CLIs talk to in tests.

``ModelStub`` is a small HTTP server on 127.0.0.1 (an ephemeral port by default) that speaks
just enough of two provider APIs for the pinned ``claude`` and ``codex`` binaries, and the
official ``anthropic`` / ``openai`` SDKs, to work offline:

- Anthropic Messages: ``POST /v1/messages`` (the claude CLI appends ``?beta=true``), streamed
  as SSE when the body says ``"stream": true``, else one JSON message;
  ``POST /v1/messages/count_tokens``.
- OpenAI Responses: ``POST /v1/responses``, SSE or one JSON response object.

Theory of operation
-------------------
Each model request (messages or responses) picks one :class:`Reply`:

1. the oldest reply queued with :meth:`ModelStub.push` (a FIFO shared by both APIs), else
2. directives in the text of the *newest user turn*::

       @stub {"text": "hi", "chunk_chars": 2, "chunk_delay": 0.05}
       @stub:echo

   A directive is a line of its own; ``@stub`` + a JSON object sets :class:`Reply` fields
   (``tool_calls`` as ``[{"name": ..., "input": {...}}]``), ``@stub:NAME`` applies a named
   preset (:data:`PRESETS`). Several directives merge in order. Else
3. the stub's default reply.

The newest user turn is every user message after the last assistant or tool message:

- Anthropic Messages: a ``user`` message with a ``tool_result`` block is a tool message;
- Responses: any input item but a ``user`` message ends the turn (``function_call``,
  ``function_call_output``, assistant messages, reasoning ...), except ``developer`` /
  ``system`` messages, which are skipped;

(several user messages count: clients like OpenClaw send a context message after the
user's), and of their text only :func:`clibridge.testing.scenario.directive_text`: nothing
up to the end of a quoted history (``</conversation_history>``, ``</conversation_so_far>``:
clibridge's replay of a conversation into a fresh CLI puts the earlier turns, directives
and all, inside the newest user message) and no rendered ``<tool_result>``. So a directive
acts in the turn that carries it and never again: a tool-calling directive cannot fire a
second time after its tool result, nor from a replayed history (that looped: ~190 workers
spawned in 2 minutes).

The reply is rendered by pure functions (``_anthropic_*`` / ``_responses_*``) into a list of
frames, each an encoded SSE event with the delay to wait before it; the server only sleeps and
writes. Every request is recorded (:class:`RecordedRequest`) *before* it is answered, so a
test can assert what the model saw and how many upstream calls a bridged request cost.

Tests inspect ``stub.requests`` / ``stub.calls_to(path)`` / ``stub.model_calls()``, read
``stub.statistics()`` (requests, in flight, max in flight: overlap tests), and wait on real
signals with ``wait_for_requests(n)``, ``wait_for_in_flight(n)`` and ``wait_for_idle()``.
Errors carry ``retry-after`` and, if asked, ``x-should-retry`` (the claude CLI obeys
``x-should-retry: false``: it gives up at once instead of retrying for minutes).

Run it inside a nursery (``port = await nursery.start(stub.run)``), with
``async with serve_model_stub() as stub:``, or standalone for benchmarks and by hand::

    python -m clibridge.testing.model_stub --port 8701 [--record requests.jsonl]

``record=PATH`` (``--record PATH``) also appends every request to a file, one JSON line
each: ``{"time": <unix seconds>, "method", "path", "query", "body"}`` (``raw_body`` as text
instead when the body is not JSON). Headers are left out, so no API key is written.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import re
import signal
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import attrs
import cattrs
import trio

from ._asgi import Receive, Scope, Send, read_request, serve_loopback
from .scenario import directive_text

__all__ = [
    "DEFAULT_TEXT",
    "PRESETS",
    "STUB_API_KEY",
    "ModelStub",
    "RecordedRequest",
    "Reply",
    "StubStatistics",
    "StubToolCall",
    "directive",
    "serve_model_stub",
]

DEFAULT_TEXT = "Hello from the model stub."
#: the API key the real-CLI setups hand their CLI; the stub accepts any key.
STUB_API_KEY = "sk-ant-stub-0123456789abcdefghijklmnopqrstuvwxyz"

_DIRECTIVE = re.compile(r"^[ \t]*@stub(?::(?P<name>[\w.-]+)|[ \t]+(?P<json>\{.*\}))[ \t]*$", re.M)


@attrs.frozen
class StubToolCall:
    """A tool call the stub model makes: a ``tool_use`` block / a ``function_call`` item."""

    name: str
    input: dict[str, Any] = attrs.field(factory=dict)
    #: None: ``toolu_stub_N`` (Anthropic) / ``call_stub_N`` (Responses)
    id: str | None = None


@attrs.frozen
class Reply:
    """What the stub model answers to one request. Every field has a harmless default."""

    #: None: :data:`DEFAULT_TEXT` when there are no tool calls, else no text at all
    text: str | None = None
    #: answer with a JSON digest of the request instead (see :meth:`ModelStub.digest`)
    echo: bool = False
    thinking: str | None = None
    tool_calls: tuple[StubToolCall, ...] = ()
    #: characters per delta (0: one delta per block)
    chunk_chars: int = 0
    #: seconds after the response headers before the first event, and between deltas
    first_delay: float = 0.0
    chunk_delay: float = 0.0
    #: None: ``tool_use`` when there are tool calls, else ``end_turn`` (Responses: ignored)
    stop_reason: str | None = None
    #: None: estimated from the text lengths (len // 4, at least 1)
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    # --- trouble
    #: an HTTP error status (401, 429, 500, 529, ...) answered with the provider's error JSON
    error: int | None = None
    error_message: str | None = None
    #: seconds for the ``retry-after`` header of an error
    retry_after: float | None = None
    #: the ``x-should-retry`` header of an error (the official SDKs obey it)
    should_retry: bool | None = None
    #: after this many content deltas, stop writing and hold the stream open until the
    #: client goes away (0: right after ``message_start`` / ``response.created``)
    hang_after: int | None = None
    #: after this many content deltas, end the stream with an in-stream error event
    stream_error_after: int | None = None
    # --- extra response headers, on any answer (error, JSON or stream): e.g. Anthropic's
    # ``anthropic-ratelimit-unified-*`` subscription headers, which claude reads
    headers: dict[str, str] = attrs.field(factory=dict)


#: named directive presets: ``@stub:NAME``
PRESETS: Mapping[str, Mapping[str, Any]] = {
    "echo": {"echo": True},
    "slow": {"chunk_chars": 4, "chunk_delay": 0.05},
    "hang": {"hang_after": 1, "chunk_chars": 4},
    "429": {"error": 429, "retry_after": 1},
    "529": {"error": 529},
    "401": {"error": 401},
}

_converter = cattrs.Converter(forbid_extra_keys=True)


def reply_from_dict(data: Mapping[str, Any], base: Reply | None = None) -> Reply:
    """Override ``base`` with ``data``; unknown keys raise (a typo must not pass silently)."""
    merged = attrs.asdict(base or Reply(), recurse=True)
    merged.update(data)
    return _converter.structure(merged, Reply)


def directive(**fields: Any) -> str:
    """The directive line for ``fields``: ``@stub {...}`` (for tests and docs)."""
    return "@stub " + json.dumps(fields)


@attrs.frozen
class RecordedRequest:
    """One HTTP request as the stub received it."""

    method: str
    path: str
    #: the query string parsed into a dict (``{"beta": "true"}`` from the claude CLI)
    query: Mapping[str, str]
    #: header names lower-cased; a repeated header keeps its last value
    headers: Mapping[str, str]
    #: the parsed JSON body, or None when there was none or it was not JSON
    body: Any
    raw_body: bytes
    #: ``trio.current_time()`` when the request arrived
    time: float
    #: which reply it got (None for count_tokens and unknown paths)
    reply: Reply | None = None

    @property
    def last_user_text(self) -> str:
        """The text of the last user message of a Messages / Responses body."""
        return _last_user_text(self.body) if isinstance(self.body, dict) else ""

    @property
    def newest_user_text(self) -> str:
        """The text of the newest user turn (module doc), quoted history included."""
        return _newest_user_text(self.body) if isinstance(self.body, dict) else ""

    @property
    def system_text(self) -> str:
        """The system prompt (Messages ``system``, Responses ``instructions``) as one text."""
        return _system_text(self.body) if isinstance(self.body, dict) else ""


@attrs.frozen
class StubStatistics:
    """Counters for tests: how much and how concurrently the stub was used."""

    requests: int
    in_flight: int
    max_in_flight: int
    queued_replies: int


# --------------------------------------------------------------------- request reading (pure)


def _content_text(content: Any, *, with_tool_results: bool = False) -> str:
    """Text of a message ``content`` in either API's shape (str or list of parts)."""
    if isinstance(content, str):
        return content
    texts: list[str] = []
    if isinstance(content, list):
        for part in content:
            if not isinstance(part, dict):
                continue
            if part.get("type") in ("text", "input_text", "output_text"):
                texts.append(str(part.get("text", "")))
            elif with_tool_results and part.get("type") == "tool_result":
                texts.append(_content_text(part.get("content")))
    return "\n".join(texts)


def _messages(body: Mapping[str, Any]) -> list[Any]:
    """The message list: Messages ``messages`` or Responses ``input`` items."""
    if "messages" in body:
        msgs = body["messages"]
    else:
        msgs = body.get("input", [])
        if isinstance(msgs, str):
            msgs = [{"role": "user", "content": msgs}]
    return msgs if isinstance(msgs, list) else []


def _last_user_text(body: Mapping[str, Any]) -> str:
    for msg in reversed(_messages(body)):
        if isinstance(msg, dict) and msg.get("role") == "user":
            return _content_text(msg.get("content"))
    return ""


def _has_tool_result(content: Any) -> bool:
    return isinstance(content, list) and any(
        isinstance(part, dict) and part.get("type") == "tool_result" for part in content
    )


def _newest_user_text(body: Mapping[str, Any]) -> str:
    """The text of the user messages after the last assistant or tool message (module doc)."""
    turn: list[str] = []
    for item in reversed(_messages(body)):
        if not isinstance(item, dict):
            break
        role = item.get("role")
        # Messages entries have no "type"; Responses messages may omit it (EasyInputMessage)
        is_message = item.get("type", "message") == "message"
        if is_message and role in ("developer", "system"):
            continue
        if not is_message or role != "user" or _has_tool_result(item.get("content")):
            break
        turn.append(_content_text(item.get("content")))
    return "\n".join(reversed(turn))


def _system_text(body: Mapping[str, Any]) -> str:
    """Messages ``system``; Responses ``instructions`` plus ``developer`` / ``system`` items
    (codex sends its whole system prompt as developer messages, ``instructions`` empty)."""
    parts = [_content_text(body.get("system", body.get("instructions")) or "")]
    if "messages" not in body:
        for item in _messages(body):
            if isinstance(item, dict) and item.get("role") in ("developer", "system"):
                parts.append(_content_text(item.get("content")))
    return "\n".join(p for p in parts if p)


def _tool_names(body: Mapping[str, Any]) -> list[str]:
    names = []
    for tool in body.get("tools") or []:
        if isinstance(tool, dict):
            names.append(str(tool.get("name") or tool.get("function", {}).get("name", "")))
    return names


def _estimate_tokens(*texts: str) -> int:
    return max(1, sum(len(t) for t in texts) // 4)


def digest(body: Mapping[str, Any]) -> dict[str, Any]:
    """What an ``echo`` reply says about a request body (directive lines removed)."""
    system = _system_text(body)
    return {
        "model": body.get("model"),
        "system_chars": len(system),
        "system_tail": system[-300:],
        "messages": len(_messages(body)),
        "last_user": _DIRECTIVE.sub("", _last_user_text(body)).strip("\n"),
        "tools": _tool_names(body),
    }


def choose_reply(
    body: Mapping[str, Any], queued: deque[Reply], default: Reply
) -> tuple[Reply, str | None]:
    """The reply for ``body`` (theory of operation above) and its text, resolved.

    Pops ``queued`` when it is not empty. Raises ValueError for a malformed directive.
    """
    if queued:
        reply = queued.popleft()
    else:
        reply = default
        for match in _DIRECTIVE.finditer(directive_text(_newest_user_text(body))):
            if match.group("name"):
                if match.group("name") not in PRESETS:
                    raise ValueError(f"unknown @stub preset {match.group('name')!r}")
                reply = reply_from_dict(PRESETS[match.group("name")], reply)
            else:
                reply = reply_from_dict(json.loads(match.group("json")), reply)
    if reply.echo:
        return reply, json.dumps(digest(body))
    if reply.text is None:
        return reply, None if reply.tool_calls else DEFAULT_TEXT
    return reply, reply.text


def _chunks(text: str, size: int) -> list[str]:
    if not text:
        return []
    if size <= 0:
        return [text]
    return [text[i : i + size] for i in range(0, len(text), size)]


def _usage_numbers(
    reply: Reply, body: Mapping[str, Any], out_texts: Iterable[str]
) -> tuple[int, int]:
    inp = reply.input_tokens
    if inp is None:
        inp = _estimate_tokens(_system_text(body), *(json.dumps(m) for m in _messages(body)))
    out = reply.output_tokens
    if out is None:
        out = _estimate_tokens(*out_texts)
    return inp, out


# --------------------------------------------------------------------- frames (pure)


@attrs.frozen
class _Frame:
    """One SSE event to write after sleeping ``delay`` seconds (``math.inf``: hang)."""

    data: bytes
    delay: float = 0.0


def _sse(event: str, data: Mapping[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


class _Pacer:
    """Turns a reply's timing fields into frame delays while frames are being built.

    Counts content deltas so ``hang_after`` / ``stream_error_after`` trigger at the right one.
    """

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.deltas = 0
        self.frames: list[_Frame] = []
        self.stopped = False  # a hang or an in-stream error ended the script

    def add(self, data: bytes) -> None:
        if not self.stopped:
            self.frames.append(_Frame(data))

    def delta(self, data: bytes, error_frame: Callable[[], bytes]) -> None:
        if self.stopped:
            return
        if self.reply.hang_after is not None and self.deltas >= self.reply.hang_after:
            self.frames.append(_Frame(b"", math.inf))
            self.stopped = True
            return
        if (
            self.reply.stream_error_after is not None
            and self.deltas >= self.reply.stream_error_after
        ):
            self.frames.append(_Frame(error_frame()))
            self.stopped = True
            return
        first = self.deltas == 0
        self.frames.append(
            _Frame(data, self.reply.first_delay if first else self.reply.chunk_delay)
        )
        self.deltas += 1

    def content_done(self, error_frame: Callable[[], bytes]) -> None:
        """Call after the last delta: a hang/error point the deltas did not reach happens here."""
        if self.stopped:
            return
        hang, fail = self.reply.hang_after, self.reply.stream_error_after
        if hang is not None and (fail is None or hang <= fail):
            self.frames.append(_Frame(b"", math.inf))
            self.stopped = True
        elif fail is not None:
            self.frames.append(_Frame(error_frame()))
            self.stopped = True


_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}

_OPENAI_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("rate_limit_exceeded", "rate_limit_exceeded"),
    500: ("server_error", "server_error"),
    503: ("server_error", "server_is_overloaded"),
    529: ("server_error", "server_is_overloaded"),
}


def _error_message(status: int, reply: Reply | None) -> str:
    if reply is not None and reply.error_message:
        return reply.error_message
    return f"model stub: scripted HTTP {status}"


def anthropic_error_body(status: int, message: str) -> dict[str, Any]:
    """The Anthropic error envelope for ``status``."""
    kind = _ANTHROPIC_ERROR_TYPES.get(status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def openai_error_body(status: int, message: str) -> dict[str, Any]:
    """The OpenAI error envelope for ``status``."""
    kind, code = _OPENAI_ERROR_TYPES.get(status, ("server_error", None))
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


class _Ids:
    """Deterministic ids per stub, so recorded transcripts compare equal across runs."""

    def __init__(self) -> None:
        self._counter = itertools.count(1)

    def __call__(self, prefix: str) -> str:
        return f"{prefix}_stub_{next(self._counter)}"


def _anthropic_usage(reply: Reply, inp: int, out: int) -> dict[str, int]:
    return {
        "input_tokens": inp,
        "cache_creation_input_tokens": reply.cache_creation_input_tokens,
        "cache_read_input_tokens": reply.cache_read_input_tokens,
        "output_tokens": out,
    }


def _anthropic_blocks(
    reply: Reply, text: str | None, ids: _Ids
) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Content blocks as (start block, deltas) pairs."""
    blocks: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    if reply.thinking is not None:
        deltas = [
            {"type": "thinking_delta", "thinking": c}
            for c in _chunks(reply.thinking, reply.chunk_chars)
        ]
        deltas.append({"type": "signature_delta", "signature": "stub-signature"})
        blocks.append(({"type": "thinking", "thinking": "", "signature": ""}, deltas))
    if text:
        deltas = [{"type": "text_delta", "text": c} for c in _chunks(text, reply.chunk_chars)]
        blocks.append(({"type": "text", "text": ""}, deltas))
    for call in reply.tool_calls:
        start = {"type": "tool_use", "id": call.id or ids("toolu"), "name": call.name, "input": {}}
        args = json.dumps(call.input)
        deltas = [
            {"type": "input_json_delta", "partial_json": c}
            for c in _chunks(args, reply.chunk_chars)
        ]
        blocks.append((start, deltas))
    return blocks


def _anthropic_final_block(
    start: Mapping[str, Any], deltas: list[dict[str, Any]]
) -> dict[str, Any]:
    block = dict(start)
    if block["type"] == "thinking":
        block["thinking"] = "".join(d.get("thinking", "") for d in deltas)
        block["signature"] = "stub-signature"
    elif block["type"] == "text":
        block["text"] = "".join(d["text"] for d in deltas)
    else:
        block["input"] = json.loads("".join(d["partial_json"] for d in deltas) or "{}")
    return block


def _anthropic_texts(reply: Reply, text: str | None) -> list[str]:
    return [text or "", reply.thinking or "", *(json.dumps(c.input) for c in reply.tool_calls)]


def anthropic_message(
    reply: Reply, text: str | None, body: Mapping[str, Any], ids: _Ids
) -> dict[str, Any]:
    """The non-streamed Messages response."""
    inp, out = _usage_numbers(reply, body, _anthropic_texts(reply, text))
    content = [_anthropic_final_block(s, d) for s, d in _anthropic_blocks(reply, text, ids)]
    return {
        "id": ids("msg"),
        "type": "message",
        "role": "assistant",
        "model": body.get("model", "claude-stub"),
        "content": content,
        "stop_reason": reply.stop_reason or ("tool_use" if reply.tool_calls else "end_turn"),
        "stop_sequence": None,
        "usage": _anthropic_usage(reply, inp, out),
    }


def anthropic_stream(
    reply: Reply, text: str | None, body: Mapping[str, Any], ids: _Ids
) -> list[_Frame]:
    """The Messages SSE stream as frames."""
    inp, out = _usage_numbers(reply, body, _anthropic_texts(reply, text))
    pacer = _Pacer(reply)
    message = {
        "id": ids("msg"),
        "type": "message",
        "role": "assistant",
        "model": body.get("model", "claude-stub"),
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": _anthropic_usage(reply, inp, 1),
    }
    pacer.add(_sse("message_start", {"type": "message_start", "message": message}))
    pacer.add(_sse("ping", {"type": "ping"}))

    def error() -> bytes:
        return _sse("error", anthropic_error_body(529, _error_message(529, None)))

    for index, (start, deltas) in enumerate(_anthropic_blocks(reply, text, ids)):
        pacer.add(
            _sse(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": start},
            )
        )
        for delta in deltas:
            frame = _sse(
                "content_block_delta",
                {"type": "content_block_delta", "index": index, "delta": delta},
            )
            pacer.delta(frame, error)
        pacer.add(_sse("content_block_stop", {"type": "content_block_stop", "index": index}))
    pacer.content_done(error)
    stop_reason = reply.stop_reason or ("tool_use" if reply.tool_calls else "end_turn")
    usage = _anthropic_usage(reply, inp, out)
    pacer.add(
        _sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": usage,
            },
        )
    )
    pacer.add(_sse("message_stop", {"type": "message_stop"}))
    return pacer.frames


def _responses_usage(reply: Reply, inp: int, out: int) -> dict[str, Any]:
    reasoning = _estimate_tokens(reply.thinking) if reply.thinking else 0
    return {
        "input_tokens": inp,
        "input_tokens_details": {"cached_tokens": reply.cache_read_input_tokens},
        "output_tokens": out,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": inp + out,
    }


def _responses_items(reply: Reply, text: str | None, ids: _Ids) -> list[dict[str, Any]]:
    """The final output items (reasoning, message, function calls)."""
    items: list[dict[str, Any]] = []
    if reply.thinking is not None:
        items.append(
            {
                "type": "reasoning",
                "id": ids("rs"),
                "summary": [{"type": "summary_text", "text": reply.thinking}],
            }
        )
    if text:
        items.append(
            {
                "type": "message",
                "id": ids("msg"),
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        )
    for call in reply.tool_calls:
        items.append(
            {
                "type": "function_call",
                "id": ids("fc"),
                "call_id": call.id or ids("call"),
                "name": call.name,
                "arguments": json.dumps(call.input),
                "status": "completed",
            }
        )
    return items


def _response_object(
    body: Mapping[str, Any], resp_id: str, status: str, output: list[dict[str, Any]], usage: Any
) -> dict[str, Any]:
    return {
        "id": resp_id,
        "object": "response",
        "created_at": 1_800_000_000,
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "model": body.get("model", "gpt-stub"),
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools", []),
        "usage": usage,
    }


def responses_response(
    reply: Reply, text: str | None, body: Mapping[str, Any], ids: _Ids
) -> dict[str, Any]:
    """The non-streamed Responses response object."""
    items = _responses_items(reply, text, ids)
    inp, out = _usage_numbers(reply, body, _anthropic_texts(reply, text))
    return _response_object(
        body, ids("resp"), "completed", items, _responses_usage(reply, inp, out)
    )


def responses_stream(
    reply: Reply, text: str | None, body: Mapping[str, Any], ids: _Ids
) -> list[_Frame]:
    """The Responses SSE stream as frames."""
    resp_id = ids("resp")
    inp, out = _usage_numbers(reply, body, _anthropic_texts(reply, text))
    items = _responses_items(reply, text, ids)
    pacer = _Pacer(reply)
    seq = itertools.count()

    def ev(kind: str, **data: Any) -> bytes:
        return _sse(kind, {"type": kind, "sequence_number": next(seq), **data})

    def error() -> bytes:
        failed = _response_object(body, resp_id, "failed", [], None)
        failed["error"] = {"code": "server_error", "message": _error_message(500, None)}
        return ev("response.failed", response=failed)

    def response(status: str, output: list[dict[str, Any]], usage: Any) -> dict[str, Any]:
        return _response_object(body, resp_id, status, output, usage)

    pacer.add(ev("response.created", response=response("in_progress", [], None)))
    pacer.add(ev("response.in_progress", response=response("in_progress", [], None)))
    for index, item in enumerate(items):
        at: dict[str, Any] = {"item_id": item["id"], "output_index": index}
        if item["type"] == "reasoning":
            full = item["summary"][0]["text"]
            part: dict[str, Any] = {"type": "summary_text", "text": ""}
            at["summary_index"] = 0
            pacer.add(
                ev("response.output_item.added", output_index=index, item={**item, "summary": []})
            )
            pacer.add(ev("response.reasoning_summary_part.added", **at, part=part))
            for chunk in _chunks(full, reply.chunk_chars):
                pacer.delta(ev("response.reasoning_summary_text.delta", **at, delta=chunk), error)
            pacer.add(ev("response.reasoning_summary_text.done", **at, text=full))
            pacer.add(ev("response.reasoning_summary_part.done", **at, part={**part, "text": full}))
        elif item["type"] == "message":
            full = item["content"][0]["text"]
            part = {"type": "output_text", "text": "", "annotations": []}
            at["content_index"] = 0
            added = {**item, "status": "in_progress", "content": []}
            pacer.add(ev("response.output_item.added", output_index=index, item=added))
            pacer.add(ev("response.content_part.added", **at, part=part))
            for chunk in _chunks(full, reply.chunk_chars):
                pacer.delta(ev("response.output_text.delta", **at, delta=chunk, logprobs=[]), error)
            pacer.add(ev("response.output_text.done", **at, text=full, logprobs=[]))
            pacer.add(ev("response.content_part.done", **at, part={**part, "text": full}))
        else:
            args = item["arguments"]
            added = {**item, "status": "in_progress", "arguments": ""}
            pacer.add(ev("response.output_item.added", output_index=index, item=added))
            for chunk in _chunks(args, reply.chunk_chars):
                pacer.delta(ev("response.function_call_arguments.delta", **at, delta=chunk), error)
            pacer.add(ev("response.function_call_arguments.done", **at, arguments=args))
        pacer.add(ev("response.output_item.done", output_index=index, item=item))
    pacer.content_done(error)
    usage = _responses_usage(reply, inp, out)
    pacer.add(ev("response.completed", response=response("completed", items, usage)))
    return pacer.frames


# --------------------------------------------------------------------- the server


def _api_key(scope: Scope) -> str:
    """The key a request authenticates with: ``x-api-key``, or an ``authorization``
    bearer token (what a CLI logged in with an OAuth token sends)."""
    headers: dict[str, str] = {
        k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]
    }
    if "x-api-key" in headers:
        return headers["x-api-key"]
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
_JSON_HEADERS = [(b"content-type", b"application/json")]


class ModelStub:
    """The loopback model API server. See the module docstring.

    Tests read :attr:`requests`, :meth:`calls_to`, :meth:`statistics` and wait with
    :meth:`wait_for_requests` / :meth:`wait_for_in_flight`.
    """

    def __init__(
        self,
        *,
        default: Reply | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        record: Path | str | None = None,
    ) -> None:
        self.default = default or Reply()
        self.host = host
        self.requested_port = port
        #: a file every request is appended to (module doc), or None
        self.record_path = None if record is None else Path(record)
        #: the bound port, set once :meth:`run` reported started
        self.port: int | None = None
        #: every request received, oldest first
        self.requests: list[RecordedRequest] = []
        self._queue: deque[Reply] = deque()
        #: API key or bearer token -> the reply every model request carrying it gets,
        #: before queued replies and directives (an upstream that rate-limits one login)
        self.by_key: dict[str, Reply] = {}
        self._ids = _Ids()
        self._in_flight = 0
        self._max_in_flight = 0
        self._changed = trio.Event()

    # ----- scripting and inspection

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (no ``/v1``: the Anthropic SDK and claude add it)."""
        if self.port is None:
            raise RuntimeError("the model stub is not running yet")
        return f"http://{self.host}:{self.port}"

    def push(self, *replies: Reply) -> None:
        """Queue replies for the next model requests, in order (before any directive)."""
        self._queue.extend(replies)

    def calls_to(self, path: str) -> list[RecordedRequest]:
        """The recorded requests whose path (without query) is ``path``."""
        return [r for r in self.requests if r.path == path]

    def model_calls(self) -> list[RecordedRequest]:
        """The recorded requests that asked the model for a reply (messages or responses)."""
        return [r for r in self.requests if r.path in ("/v1/messages", "/v1/responses")]

    def clear(self) -> None:
        """Forget recorded requests, queued replies and the in-flight high-water mark."""
        self.requests.clear()
        self._queue.clear()
        self._max_in_flight = self._in_flight

    def statistics(self) -> StubStatistics:
        """Counters as a frozen record."""
        return StubStatistics(
            requests=len(self.requests),
            in_flight=self._in_flight,
            max_in_flight=self._max_in_flight,
            queued_replies=len(self._queue),
        )

    async def wait_for_requests(self, count: int, path: str | None = None) -> list[RecordedRequest]:
        """Wait until ``count`` requests (to ``path``, if given) were recorded; returns them."""
        while True:
            got = self.requests if path is None else self.calls_to(path)
            if len(got) >= count:
                return list(got)
            await self._changed.wait()

    async def wait_for_in_flight(self, count: int) -> None:
        """Wait until ``count`` requests are being answered at the same time."""
        while self._in_flight < count:
            await self._changed.wait()

    async def wait_for_idle(self) -> None:
        """Wait until no request is being answered (e.g. after a client hung up a stream)."""
        while self._in_flight:
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # ----- serving

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; reports the bound port once it accepts connections."""
        async with trio.open_nursery() as nursery:
            self.port = await nursery.start(
                serve_loopback, self._app, self.host, self.requested_port
            )
            task_status.started(self.port)

    async def _app(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = await read_request(scope, receive, send)
        if raw is None:
            return
        self._in_flight += 1
        self._max_in_flight = max(self._max_in_flight, self._in_flight)
        try:
            await self._answer(scope, raw, receive, send)
        finally:
            self._in_flight -= 1
            self._notify()

    def _record(self, scope: Scope, raw: bytes, body: Any, reply: Reply | None) -> None:
        self.requests.append(
            RecordedRequest(
                method=scope["method"],
                path=scope["path"],
                query=dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"))),
                headers={
                    k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]
                },
                body=body,
                raw_body=raw,
                time=trio.current_time(),
                reply=reply,
            )
        )
        if self.record_path is not None:
            _append_to_record(self.record_path, scope, raw, body)
        self._notify()

    async def _answer(self, scope: Scope, raw: bytes, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        anthropic = path.startswith("/v1/messages")
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        if scope["method"] == "HEAD":
            # Why: claude opens with ``HEAD /`` to warm the connection; answer it plainly.
            self._record(scope, raw, body, None)
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        if (
            path not in ("/v1/messages", "/v1/messages/count_tokens", "/v1/responses")
            or scope["method"] != "POST"
        ):
            self._record(scope, raw, body, None)
            error = anthropic_error_body if anthropic else openai_error_body
            await _send_json(
                send, 404, error(404, f"model stub: no route for {scope['method']} {path}")
            )
            return
        error = anthropic_error_body if anthropic else openai_error_body
        if not isinstance(body, dict):
            self._record(scope, raw, body, None)
            await _send_json(send, 400, error(400, "model stub: the body is not a JSON object"))
            return
        if path == "/v1/messages/count_tokens":
            self._record(scope, raw, body, None)
            inp = _estimate_tokens(_system_text(body), *(json.dumps(m) for m in _messages(body)))
            await _send_json(send, 200, {"input_tokens": inp})
            return
        keyed = self.by_key.get(_api_key(scope))
        try:
            # a keyed reply comes first, like a queued one (no directive overrides it)
            queue = self._queue if keyed is None else deque([keyed])
            reply, text = choose_reply(body, queue, self.default)
        except (ValueError, cattrs.BaseValidationError) as exc:
            self._record(scope, raw, body, None)
            await _send_json(send, 400, error(400, f"model stub: bad @stub directive: {exc}"))
            return
        self._record(scope, raw, body, reply)
        extra = [(k.lower().encode(), str(v).encode()) for k, v in reply.headers.items()]
        if reply.error is not None:
            headers = list(extra)
            if reply.retry_after is not None:
                headers.append((b"retry-after", _number(reply.retry_after).encode()))
            if reply.should_retry is not None:
                headers.append((b"x-should-retry", b"true" if reply.should_retry else b"false"))
            message = _error_message(reply.error, reply)
            await _send_json(send, reply.error, error(reply.error, message), headers)
            return
        if not body.get("stream"):
            if reply.hang_after is not None:
                await _until_disconnect(receive)
                return
            await trio.sleep(reply.first_delay)
            render = anthropic_message if anthropic else responses_response
            await _send_json(send, 200, render(reply, text, body, self._ids), extra)
            return
        stream = anthropic_stream if anthropic else responses_stream
        frames = stream(reply, text, body, self._ids)
        await send(
            {"type": "http.response.start", "status": 200, "headers": [*_SSE_HEADERS, *extra]}
        )
        async with trio.open_nursery() as nursery:
            # Why: hypercorn tells a gone client only through receive(); a hanging or slow
            # stream must notice it so in-flight counts drop when the CLI hangs up.
            nursery.start_soon(_cancel_on_disconnect, receive, nursery.cancel_scope)
            for frame in frames:
                await trio.sleep(frame.delay)
                await send({"type": "http.response.body", "body": frame.data, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            nursery.cancel_scope.cancel()


def _append_to_record(path: Path, scope: Scope, raw: bytes, body: Any) -> None:
    """One request as one JSON line of the ``record`` file (module doc)."""
    # Why no headers: they carry the API key (x-api-key / authorization).
    entry: dict[str, Any] = {
        "time": time.time(),
        "method": scope["method"],
        "path": scope["path"],
        "query": dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"))),
        "body": body,
    }
    if body is None and raw:
        entry["raw_body"] = raw.decode("utf-8", errors="replace")
    # one small append per request: a stub's file IO, not worth a thread
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


async def _send_json(
    send: Send, status: int, data: Any, extra_headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    payload = json.dumps(data).encode()
    headers = [
        *_JSON_HEADERS,
        (b"content-length", str(len(payload)).encode()),
        *(extra_headers or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload, "more_body": False})


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _cancel_on_disconnect(receive: Receive, scope: trio.CancelScope) -> None:
    await _until_disconnect(receive)
    scope.cancel()


@asynccontextmanager
async def serve_model_stub(
    *, default: Reply | None = None, port: int = 0, record: Path | str | None = None
) -> AsyncIterator[ModelStub]:
    """A running :class:`ModelStub` for the body of the ``async with``."""
    stub = ModelStub(default=default, port=port, record=record)
    async with trio.open_nursery() as nursery:
        await nursery.start(stub.run)
        try:
            yield stub
        finally:
            nursery.cancel_scope.cancel()


# --------------------------------------------------------------------- standalone


async def _main(port: int, host: str, default: Reply, record: Path | None) -> None:
    stub = ModelStub(default=default, host=host, port=port, record=record)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(stub.run)
            print(f"model stub listening on http://{host}:{bound}", flush=True)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


def main(argv: list[str] | None = None) -> None:
    """``python -m clibridge.testing.model_stub``: serve until SIGTERM / SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0, help="port to bind (0: ephemeral)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--default",
        default="{}",
        help='default reply as JSON, e.g. \'{"text": "hi", "chunk_chars": 3}\'',
    )
    parser.add_argument(
        "--record",
        type=Path,
        metavar="FILE",
        help="append every request to FILE, one JSON line each (time, method, path, query, "
        "body; no headers)",
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    trio.run(_main, args.port, args.host, reply_from_dict(json.loads(args.default)), args.record)
    print(f"model stub stopped after {time.monotonic() - started:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
