"""The claude stream-json stdout parser, pure: bytes in, typed records out.

Parsing has the h11 shape: the IO layer feeds stdout bytes to
:meth:`ClaudeParser.receive_data` and pulls typed records from
:meth:`ClaudeParser.next_event` until it returns :data:`NEED_DATA`. Every stdout line
becomes exactly one record; lines that are not a JSON object become :class:`GarbageLine`
and message types we do not know become :class:`OtherMessage` (logged, never fatal).
What a record means for a turn is :mod:`.translator`'s business.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final, TypeAlias

import attrs

from ..._events import Usage
from .._lines import LineBuffer

# --------------------------------------------------------------------------- records


@attrs.frozen
class ControlResponse:
    """The CLI's answer to one of our control requests."""

    request_id: str
    ok: bool
    response: Mapping[str, Any]
    error: str | None = None


@attrs.frozen
class ControlRequest:
    """A control request the CLI sends us (``mcp_message``, ``can_use_tool``, ...)."""

    request_id: str
    subtype: str
    request: Mapping[str, Any]


@attrs.frozen
class SystemInit:
    """``system/init``: printed at the start of every turn."""

    model: str
    session_id: str
    raw: Mapping[str, Any]


@attrs.frozen
class ApiRetry:
    """``system/api_retry``: the CLI got an upstream error and will retry after a delay."""

    attempt: int
    max_retries: int
    retry_delay_ms: float
    error_status: int | None
    error: str


@attrs.frozen
class StreamEvent:
    """A raw Anthropic SSE event (``--include-partial-messages``)."""

    event: Mapping[str, Any]
    parent_tool_use_id: str | None


@attrs.frozen
class AssistantMessage:
    """One whole assistant message (repeats a streamed message's content)."""

    message: Mapping[str, Any]
    parent_tool_use_id: str | None
    #: set on the synthetic message the CLI prints for an upstream error (its text is the
    #: error, which the ``result`` that follows carries too)
    error: str | None = None


@attrs.frozen
class UserEcho:
    """A ``user`` message the CLI prints (tool results, replays, local command output)."""

    message: Mapping[str, Any]
    is_replay: bool


@attrs.frozen
class Result:
    """``result``: the end of a turn."""

    subtype: str
    is_error: bool
    result: str | None
    stop_reason: str | None
    usage: Usage
    api_error_status: int | None
    errors: tuple[str, ...]
    raw: Mapping[str, Any]


@attrs.frozen
class OtherMessage:
    """Any other JSON object (``system/status``, new message types): logged and skipped."""

    type: str
    subtype: str | None
    raw: Mapping[str, Any]


@attrs.frozen
class GarbageLine:
    """A stdout line that is not a JSON object."""

    text: str


Record: TypeAlias = (
    ControlResponse
    | ControlRequest
    | SystemInit
    | ApiRetry
    | StreamEvent
    | AssistantMessage
    | UserEcho
    | Result
    | OtherMessage
    | GarbageLine
)


class NeedData:
    """The type of :data:`NEED_DATA`."""

    def __repr__(self) -> str:
        return "NEED_DATA"


#: :meth:`ClaudeParser.next_event` returns this when it needs more bytes
NEED_DATA: Final = NeedData()


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def usage_from(data: Any) -> Usage:
    """The neutral usage of an Anthropic ``usage`` object (missing numbers are 0)."""
    if not isinstance(data, Mapping):
        return Usage()
    return Usage(
        input_tokens=_int(data.get("input_tokens")),
        output_tokens=_int(data.get("output_tokens")),
        cache_read_input_tokens=_int(data.get("cache_read_input_tokens")),
        cache_creation_input_tokens=_int(data.get("cache_creation_input_tokens")),
    )


def record_from(obj: Mapping[str, Any]) -> Record:
    """Classify one parsed stdout object."""
    kind = obj.get("type")
    subtype = obj.get("subtype")
    if kind == "control_response" and isinstance(obj.get("response"), Mapping):
        resp = obj["response"]
        return ControlResponse(
            request_id=str(resp.get("request_id", "")),
            ok=resp.get("subtype") == "success",
            response=resp.get("response") or {},
            error=resp.get("error") if isinstance(resp.get("error"), str) else None,
        )
    if kind == "control_request" and isinstance(obj.get("request"), Mapping):
        return ControlRequest(
            request_id=str(obj.get("request_id", "")),
            subtype=str(obj["request"].get("subtype", "")),
            request=obj["request"],
        )
    if kind == "stream_event" and isinstance(obj.get("event"), Mapping):
        return StreamEvent(obj["event"], obj.get("parent_tool_use_id"))
    if kind == "assistant" and isinstance(obj.get("message"), Mapping):
        error = obj.get("error")
        return AssistantMessage(
            obj["message"], obj.get("parent_tool_use_id"), error if isinstance(error, str) else None
        )
    if kind == "user" and isinstance(obj.get("message"), Mapping):
        return UserEcho(obj["message"], bool(obj.get("isReplay")))
    if kind == "system" and subtype == "init":
        return SystemInit(str(obj.get("model", "")), str(obj.get("session_id", "")), obj)
    if kind == "system" and subtype == "api_retry":
        status = obj.get("error_status")
        delay = obj.get("retry_delay_ms")
        return ApiRetry(
            attempt=_int(obj.get("attempt")),
            max_retries=_int(obj.get("max_retries")),
            retry_delay_ms=float(delay) if isinstance(delay, int | float) else 0.0,
            error_status=status if isinstance(status, int) else None,
            error=str(obj.get("error", "")),
        )
    if kind == "result":
        errors = obj.get("errors")
        status = obj.get("api_error_status")
        result = obj.get("result")
        return Result(
            subtype=str(subtype or ""),
            is_error=bool(obj.get("is_error")),
            result=result if isinstance(result, str) else None,
            stop_reason=obj.get("stop_reason") if isinstance(obj.get("stop_reason"), str) else None,
            usage=usage_from(obj.get("usage")),
            api_error_status=status if isinstance(status, int) else None,
            errors=tuple(str(e) for e in errors) if isinstance(errors, list) else (),
            raw=obj,
        )
    return OtherMessage(str(kind), subtype if isinstance(subtype, str) else None, obj)


class ClaudeParser(LineBuffer):
    """Bytes from the CLI's stdout in, :data:`Record` objects out (h11 shape)."""

    def next_event(self) -> Record | NeedData:
        """The next record, or :data:`NEED_DATA`. Empty lines are skipped."""
        raw = self.next_line()
        return NEED_DATA if raw is None else parse_line(raw)


def parse_line(raw: bytes) -> Record:
    """One stdout line (without newline) as a record."""
    try:
        obj = json.loads(raw)
    except ValueError:
        return GarbageLine(raw.decode("utf-8", "replace"))
    if not isinstance(obj, dict):
        return GarbageLine(raw.decode("utf-8", "replace"))
    return record_from(obj)
