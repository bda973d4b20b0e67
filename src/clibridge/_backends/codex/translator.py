"""One thread's notifications -> neutral events, and codex's errors -> clibridge errors."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from ..._errors import (
    BridgeError,
    LoginExpired,
    ModelNotFound,
    ProtocolError,
    RequestError,
    UpstreamError,
    UpstreamOverloaded,
    UpstreamRateLimited,
)
from ..._events import (
    Event,
    Finished,
    FinishReason,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    TurnStarted,
    Usage,
)
from .parser import Notification, ServerRequest

# --------------------------------------------------------------------------- errors


_DELAY = re.compile(
    r"(?:try again|retry) in (?:about )?(\d+(?:\.\d+)?)\s*(ms|milliseconds?|s|sec|seconds?|m|min|minutes?|h|hours?)\b",
    re.I,
)


def retry_delay(message: str) -> float | None:
    """A retry delay stated in an upstream error message, in seconds."""
    match = _DELAY.search(message)
    if match is None:
        return None
    unit = match.group(2).lower()
    scale = 1.0
    if unit.startswith("milli") or unit == "ms":
        scale = 0.001
    elif unit.startswith("min") or unit == "m":
        scale = 60.0
    elif unit.startswith("h"):
        scale = 3600.0
    return float(match.group(1)) * scale


def _info(error: Mapping[str, Any]) -> tuple[str, int | None]:
    """``(variant, httpStatusCode)`` of a TurnError's ``codexErrorInfo``."""
    info = error.get("codexErrorInfo")
    if isinstance(info, str):
        return info, None
    if isinstance(info, Mapping) and info:
        variant = next(iter(info))
        body = info[variant]
        status = body.get("httpStatusCode") if isinstance(body, Mapping) else None
        return str(variant), status if isinstance(status, int) else None
    return "other", None


def is_hopeless(error: Mapping[str, Any]) -> bool:
    """True when retrying cannot help: fail at once even while codex still retries."""
    variant, status = _info(error)
    return status in (401, 403) or variant in ("unauthorized", "usageLimitExceeded")


def map_error(error: Mapping[str, Any], login_hint: str) -> BridgeError:
    """The clibridge error for a codex ``TurnError`` (``error`` notification / failed turn)."""
    variant, status = _info(error)
    message = str(error.get("message") or "the codex turn failed")
    detail = json.dumps(dict(error), default=str)[:2000]
    if status in (401, 403) or variant == "unauthorized":
        return LoginExpired(
            f"the codex login is not valid ({message}): run `{login_hint}`", detail=detail
        )
    if status == 429 or variant in ("usageLimitExceeded", "rateLimitExceeded"):
        return UpstreamRateLimited(
            f"codex upstream rate limit: {message}",
            retry_after=retry_delay(message),
            detail=detail,
        )
    if status in (503, 529) or variant in ("serverOverloaded", "policyCapacityUnavailable"):
        return UpstreamOverloaded(f"codex upstream overloaded: {message}", detail=detail)
    if variant == "modelNotFound":
        return ModelNotFound(f"codex: {message}", detail=detail)
    if variant in ("contextWindowExceeded", "badRequest"):
        return RequestError(f"codex: {message}", detail=detail)
    return UpstreamError(f"codex upstream error: {message}", detail=detail)


# --------------------------------------------------------------------------- turn translator


def usage_from(token_usage: Mapping[str, Any]) -> Usage:
    """Neutral usage from a ``ThreadTokenUsage``.

    The thread is ephemeral and holds this one turn, so ``total`` is the turn's usage over
    all its model calls (``last`` is only the last call's); ``last`` is the fallback.
    """
    counts = token_usage.get("total") or token_usage.get("last") or {}

    def n(key: str) -> int:
        value = counts.get(key, 0)
        return value if isinstance(value, int) else 0

    cached = n("cachedInputTokens")
    return Usage(
        input_tokens=max(n("inputTokens") - cached, 0),
        output_tokens=n("outputTokens"),
        cache_read_input_tokens=cached,
        cache_creation_input_tokens=n("cacheWriteInputTokens"),
        reasoning_tokens=n("reasoningOutputTokens"),
    )


class TurnTranslator:
    """One thread's notifications -> neutral events; raises mapped errors.

    ``done`` turns True at ``turn/completed``; ``turn_id`` is known from ``turn/started``
    (or the ``turn/start`` reply, via :meth:`set_turn_id`).
    """

    def __init__(self, model: str, login_hint: str = "clibridge login codex") -> None:
        self.model = model
        self.login_hint = login_hint
        self.done = False
        self.turn_id: str | None = None
        self.usage = Usage()
        #: usage already reported by responses that ended at tool calls (see :meth:`pause`)
        self._reported = Usage()
        self._tool_count = 0
        self._started = False
        self._last_error: Mapping[str, Any] | None = None
        #: per reasoning item: "summary" or "raw", whichever streamed first
        self._reasoning_mode: dict[str, str] = {}

    def set_turn_id(self, turn_id: str) -> None:
        self.turn_id = self.turn_id or turn_id

    def _start(self) -> list[Event]:
        if self._started:
            return []
        self._started = True
        return [TurnStarted(self.model)]

    def feed(self, note: Notification) -> list[Event]:
        method, params = note.method, note.params
        if method == "turn/started":
            turn = params.get("turn") or {}
            if isinstance(turn, Mapping) and isinstance(turn.get("id"), str):
                self.set_turn_id(str(turn["id"]))
            return self._start()
        if method == "item/agentMessage/delta":
            delta = params.get("delta")
            if isinstance(delta, str) and delta:
                return [*self._start(), TextDelta(delta)]
            return []
        if method in ("item/reasoning/summaryTextDelta", "item/reasoning/textDelta"):
            return self._reasoning(method, params)
        if method == "thread/tokenUsage/updated":
            usage = params.get("tokenUsage")
            if isinstance(usage, Mapping):
                self.usage = usage_from(usage)
            return []
        if method == "error":
            error = params.get("error")
            if not isinstance(error, Mapping):
                return []
            self._last_error = error
            if is_hopeless(error):
                # codex would retry for a while: nothing can come of it
                raise map_error(error, self.login_hint)
            return []
        if method == "turn/completed":
            return self._completed(params)
        return []

    def tool_call(self, request: ServerRequest) -> list[Event]:
        """An ``item/tool/call`` server request -> one whole tool call of this response."""
        params = request.params
        arguments = params.get("arguments")
        text = (
            arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
        )
        index = self._tool_count
        self._tool_count += 1
        call_id, name = str(params.get("callId", "")), str(params.get("tool", ""))
        return [
            *self._start(),
            ToolCallStart(index, call_id, name),
            ToolCallDelta(index, text),
            ToolCallEnd(index, text),
        ]

    def pause(self) -> list[Event]:
        """End this response at its tool calls; the thread's turn waits for the results."""
        usage = self._since_reported()
        self._reported = self.usage
        return [*self._start(), Finished(FinishReason.TOOL_USE, usage)]

    def resume(self) -> list[Event]:
        """Continue the paused turn in a new response (after the tool results were sent)."""
        self._started = False
        self._tool_count = 0
        return self._start()

    def _since_reported(self) -> Usage:
        a, b = self.usage, self._reported
        return Usage(
            input_tokens=max(a.input_tokens - b.input_tokens, 0),
            output_tokens=max(a.output_tokens - b.output_tokens, 0),
            cache_read_input_tokens=max(a.cache_read_input_tokens - b.cache_read_input_tokens, 0),
            cache_creation_input_tokens=max(
                a.cache_creation_input_tokens - b.cache_creation_input_tokens, 0
            ),
            reasoning_tokens=max(a.reasoning_tokens - b.reasoning_tokens, 0),
        )

    def _reasoning(self, method: str, params: Mapping[str, Any]) -> list[Event]:
        delta = params.get("delta")
        if not isinstance(delta, str) or not delta:
            return []
        mode = "summary" if method.endswith("summaryTextDelta") else "raw"
        item = str(params.get("itemId", ""))
        if self._reasoning_mode.setdefault(item, mode) != mode:
            return []  # the same reasoning twice (summary and raw): keep the first kind
        return [*self._start(), ThinkingDelta(delta)]

    def _completed(self, params: Mapping[str, Any]) -> list[Event]:
        turn = params.get("turn")
        if not isinstance(turn, Mapping):
            raise ProtocolError(f"codex sent turn/completed without a turn: {params!r}"[:300])
        self.done = True
        status = turn.get("status")
        if status == "completed":
            return [*self._start(), Finished(FinishReason.END_TURN, self._since_reported())]
        if status == "interrupted":
            return [Finished(FinishReason.CANCELLED, self._since_reported())]
        error = turn.get("error")
        if not isinstance(error, Mapping):
            error = self._last_error or {"message": f"the codex turn ended with status {status!r}"}
        raise map_error(error, self.login_hint)
