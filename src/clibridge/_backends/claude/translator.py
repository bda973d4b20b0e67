"""One claude turn, pure: stdout records in, neutral events out, per the retry policy.

Theory of operation
-------------------
A :class:`TurnTranslator` follows one turn -- from our ``user`` line to the CLI's
``result`` -- and turns its records (:mod:`.parser`) into neutral events::

    system/init                      -> TurnStarted(model)
    stream_event content_block_*     -> TextDelta / ThinkingDelta / ToolCallStart/Delta/End
                                        (nothing for a call of a tool system/init did not
                                        list: the CLI rejects it itself and the turn goes on)
    stream_event message_delta       -> remembers stop_reason
    result (success)                 -> Finished(reason, usage from the result)
    result (error) / api_retry       -> a BridgeError, per the fail-fast policy

``stream_event`` lines wrap the raw Anthropic SSE events and carry the tokens; the
aggregate ``assistant`` message repeats a streamed message's content and is therefore
ignored when its message was streamed (the CLI prints it *before* ``content_block_stop``,
so "streamed" means: a ``message_start`` was seen and its ``message_stop`` not yet, or the
message id was streamed in this turn). An ``assistant`` message that was not streamed
(``--include-partial-messages`` off, or a message the CLI made up itself) is translated
from its content blocks. Events with a ``parent_tool_use_id`` belong to a sub-agent and
are skipped.

Non-JSON lines: between turns (boot banners, warnings) they are logged and skipped by the
worker. Inside a turn a :class:`~.parser.GarbageLine` is a
:class:`~clibridge._errors.ProtocolError`: we cannot tell whether it carried part of the
answer, so the turn cannot be trusted.

Fail-fast on upstream trouble (``system/api_retry``; the CLI itself would retry for
minutes): 401 -> :class:`~clibridge._errors.LoginExpired` at once (``fail_fast_on_401``);
429 -> :class:`~clibridge._errors.UpstreamRateLimited` once ``retry_attempts`` retry events
were seen, carrying the CLI's retry delay as ``retry_after``; 529 / 503 ->
:class:`~clibridge._errors.UpstreamOverloaded` likewise. Other statuses are left to the
CLI's own retries (bounded by the worker's timeouts). An error ``result`` maps by its
``api_error_status`` the same way, and 400 (the upstream refused the request itself) is a
:class:`~clibridge._errors.RequestError` naming the upstream's message.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, Final

import attrs

from ..._config import ClaudeConfig
from ..._errors import (
    BridgeError,
    LoginExpired,
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
from .parser import (
    ApiRetry,
    AssistantMessage,
    GarbageLine,
    OtherMessage,
    Record,
    Result,
    StreamEvent,
    SystemInit,
    _int,
    usage_from,
)
from .tools import CLIENT_TOOL_PREFIX

# the logger name docs/ops.md tells operators to watch for upstream retries
log = logging.getLogger("clibridge._backends.claude")


@attrs.frozen
class RetryPolicy:
    """How long to let the CLI retry upstream errors before failing the request."""

    retry_attempts: int = 2
    fail_fast_on_401: bool = True
    login_hint: str = ClaudeConfig().login_hint

    @classmethod
    def from_config(cls, config: ClaudeConfig) -> RetryPolicy:
        return cls(config.retry_attempts, config.fail_fast_on_401, config.login_hint)


_FINISH_REASONS: Final = {
    "end_turn": FinishReason.END_TURN,
    "max_tokens": FinishReason.MAX_TOKENS,
    "tool_use": FinishReason.TOOL_USE,
    "stop_sequence": FinishReason.STOP_SEQUENCE,
}


def finish_reason(stop_reason: str | None) -> FinishReason:
    """Map an Anthropic stop_reason (``pause_turn``, ``refusal``: end of turn)."""
    return _FINISH_REASONS.get(stop_reason or "", FinishReason.END_TURN)


def login_expired(policy: RetryPolicy, status: int | None = 401) -> LoginExpired:
    return LoginExpired(
        f"the claude login has expired or is invalid (upstream {status}): run `{policy.login_hint}`",
    )


def error_for_status(
    status: int | None, message: str, policy: RetryPolicy, retry_after: float | None = None
) -> BridgeError:
    """The error of an upstream HTTP status the CLI reported."""
    if status == 400:
        # the upstream refused what the request asked for (a prompt too long, a bad
        # image; the fake CLI: a bad @fake directive): the client's error, as with codex
        return RequestError(f"the upstream model API refused the request: {_api_message(message)}")
    if status == 401:
        return login_expired(policy, status)
    if status == 429:
        return UpstreamRateLimited(
            f"the upstream model API is rate limiting this login: {message}",
            retry_after=retry_after,
        )
    if status in (503, 529):
        return UpstreamOverloaded(
            f"the upstream model API is overloaded: {message}", retry_after=retry_after
        )
    return UpstreamError(f"the claude CLI failed: {message}")


def _api_message(text: str) -> str:
    """The ``error.message`` of an API error body the CLI quotes (``API Error: 400 {...}``),
    else ``text``."""
    start = text.find("{")
    if start >= 0:
        try:
            body = json.loads(text[start:])
        except ValueError:
            return text
        error = body.get("error") if isinstance(body, Mapping) else None
        if isinstance(error, Mapping) and isinstance(error.get("message"), str):
            return str(error["message"])
    return text


class TurnTranslator:
    """One turn's records in, neutral events out (or a BridgeError raised).

    Feed every record that belongs to the turn to :meth:`feed`; it returns the events to
    emit. After a ``result`` the turn is :attr:`done`. Control traffic (control responses
    and requests) is the worker's business and must not be fed here.

    With ``pause_on_tool_use``, a model message that ends with ``stop_reason: tool_use``
    (the CLI now waits for our answers to its ``tools/call``) ends the event stream with
    ``Finished(TOOL_USE)`` carrying the usage of the messages since the last pause, and
    the translator is :attr:`paused`; :meth:`resume` starts the next response of the same
    CLI turn (tool call indexes from 0 again), whose ``Finished`` then carries the usage
    of its own messages rather than the ``result``'s whole-turn total.
    """

    def __init__(
        self, policy: RetryPolicy, model: str = "", *, pause_on_tool_use: bool = False
    ) -> None:
        self._policy = policy
        self._model = model
        self._pause_on_tool_use = pause_on_tool_use
        self.paused = False
        self._resumed = False
        self._msg_usage = Usage()
        self._usage_since = Usage()
        self._calls_in_message = 0
        self.done = False
        self.started = False
        self._retries: dict[int | None, int] = {}
        self._in_message = False
        self._streamed_ids: set[str] = set()
        # Anthropic block index -> ("text" | "thinking" | "tool", tool call index)
        self._blocks: dict[int, tuple[str, int]] = {}
        self._tool_args: dict[int, list[str]] = {}
        self._tool_count = 0
        self._stop_reason: str | None = None
        self._stop_sequence: str | None = None
        #: the tool names the CLI listed in system/init (None: not seen, trust every call)
        self._callable: frozenset[str] | None = None

    def feed(self, record: Record) -> list[Event]:
        """The events ``record`` yields; raises a BridgeError subclass on failure."""
        if self.done or self.paused:
            return []
        if isinstance(record, SystemInit):
            tools = record.raw.get("tools")
            if isinstance(tools, list):
                self._callable = frozenset(str(t) for t in tools)
            return self._start(record.model)
        if isinstance(record, ApiRetry):
            self._on_retry(record)
            return []
        if isinstance(record, StreamEvent):
            if record.parent_tool_use_id is not None:
                return []  # a sub-agent's stream
            return self._on_stream_event(record.event)
        if isinstance(record, AssistantMessage):
            if record.parent_tool_use_id is not None or record.error is not None:
                # a sub-agent's, or the CLI's own error text: not model output (the error
                # comes with the result, and a stream must not show it as content first)
                return []
            return self._on_assistant(record.message)
        if isinstance(record, Result):
            return self._on_result(record)
        if isinstance(record, GarbageLine):
            raise ProtocolError(
                "the claude CLI printed a line that is not JSON in the middle of a turn",
                detail=record.text[:500],
            )
        if isinstance(record, OtherMessage) and record.type != "system":
            log.info("skipping unknown claude message type %r", record.type)
        return []

    # ------------------------------------------------------------------ pieces

    def _start(self, model: str) -> list[Event]:
        if self.started:
            return []
        self.started = True
        self._model = model or self._model
        return [TurnStarted(self._model)]

    def _on_retry(self, retry: ApiRetry) -> None:
        status = retry.error_status
        count = self._retries[status] = self._retries.get(status, 0) + 1
        retry_after = retry.retry_delay_ms / 1000 if retry.retry_delay_ms else None
        if status == 401 and self._policy.fail_fast_on_401:
            raise login_expired(self._policy, status)
        if status in (429, 503, 529) and count >= max(1, self._policy.retry_attempts):
            raise error_for_status(
                status,
                f"{retry.error or status} (the CLI reported {count} retries)",
                self._policy,
                retry_after,
            )
        log.info(
            "claude CLI retrying upstream error %s (%s), attempt %d/%d",
            status,
            retry.error,
            retry.attempt,
            retry.max_retries,
        )

    def _on_stream_event(self, event: Mapping[str, Any]) -> list[Event]:
        kind = event.get("type")
        out: list[Event] = []
        if kind == "message_start":
            message = event.get("message") or {}
            out += self._start(str(message.get("model", "")))
            self._in_message = True
            self._msg_usage = usage_from(message.get("usage"))
            self._calls_in_message = 0
            if message.get("id"):
                self._streamed_ids.add(str(message["id"]))
        elif kind == "content_block_start":
            out += self._start("")
            out += self._block_start(_int(event.get("index")), event.get("content_block") or {})
        elif kind == "content_block_delta":
            out += self._block_delta(_int(event.get("index")), event.get("delta") or {})
        elif kind == "content_block_stop":
            out += self._block_stop(_int(event.get("index")))
        elif kind == "message_delta":
            delta = event.get("delta") or {}
            if delta.get("stop_reason"):
                self._stop_reason = delta["stop_reason"]
                self._stop_sequence = delta.get("stop_sequence")
            usage = event.get("usage")
            if isinstance(usage, Mapping) and isinstance(usage.get("output_tokens"), int):
                self._msg_usage = attrs.evolve(
                    self._msg_usage, output_tokens=usage["output_tokens"]
                )
        elif kind == "message_stop":
            self._in_message = False
            self._blocks.clear()
            self._usage_since = self._usage_since + self._msg_usage
            self._msg_usage = Usage()
            if (
                self._pause_on_tool_use
                and self._stop_reason == "tool_use"
                and self._calls_in_message > 0
            ):
                self.paused = True
                out.append(Finished(FinishReason.TOOL_USE, self._usage_since))
                self._usage_since = Usage()
        elif kind not in ("ping",):
            log.info("skipping unknown claude stream event %r", kind)
        return out

    def _block_start(self, index: int, block: Mapping[str, Any]) -> list[Event]:
        kind = block.get("type")
        if kind == "text":
            self._blocks[index] = ("text", -1)
            return [TextDelta(block["text"])] if block.get("text") else []
        if kind == "thinking":
            self._blocks[index] = ("thinking", -1)
            return [ThinkingDelta(block["thinking"])] if block.get("thinking") else []
        if kind == "tool_use" and self._rejected(block):
            self._blocks[index] = ("rejected", -1)
            return []
        if kind == "tool_use":
            call = self._tool_count
            self._tool_count += 1
            self._calls_in_message += 1
            self._blocks[index] = ("tool", call)
            self._tool_args[call] = []
            out: list[Event] = [ToolCallStart(call, str(block.get("id", "")), _tool_name(block))]
            # a start block normally carries input {} and the arguments follow as deltas
            if block.get("input"):
                text = json.dumps(block["input"], ensure_ascii=False)
                self._tool_args[call].append(text)
                out.append(ToolCallDelta(call, text))
            return out
        self._blocks[index] = (str(kind), -1)
        return []

    def _rejected(self, block: Mapping[str, Any]) -> bool:
        """A call of a tool the CLI does not have: it answers it with an error by itself."""
        name = str(block.get("name", ""))
        if self._callable is None or name in self._callable:
            return False
        log.warning(
            "the model called %r, which the claude CLI does not list: the CLI rejects the call "
            "and the turn goes on; not reported to the client",
            name,
        )
        return True

    def _block_delta(self, index: int, delta: Mapping[str, Any]) -> list[Event]:
        kind = delta.get("type")
        if kind == "text_delta" and delta.get("text"):
            return [TextDelta(str(delta["text"]))]
        if kind == "thinking_delta" and delta.get("thinking"):
            return [ThinkingDelta(str(delta["thinking"]))]
        if kind == "input_json_delta":
            block = self._blocks.get(index)
            fragment = str(delta.get("partial_json", ""))
            if block is None or block[0] != "tool" or not fragment:
                return []
            self._tool_args[block[1]].append(fragment)
            return [ToolCallDelta(block[1], fragment)]
        return []  # signature_delta, citations_delta, ...

    def _block_stop(self, index: int) -> list[Event]:
        block = self._blocks.pop(index, None)
        if block is None or block[0] != "tool":
            return []
        return [ToolCallEnd(block[1], "".join(self._tool_args[block[1]]) or "{}")]

    def _on_assistant(self, message: Mapping[str, Any]) -> list[Event]:
        if self._in_message or str(message.get("id", "")) in self._streamed_ids:
            return []  # its content already arrived as stream events
        out = self._start(str(message.get("model", "")))
        content = message.get("content")
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        for block in content if isinstance(content, list) else []:
            if not isinstance(block, Mapping):
                continue
            kind = block.get("type")
            if kind == "text" and block.get("text"):
                out.append(TextDelta(str(block["text"])))
            elif kind == "thinking" and block.get("thinking"):
                out.append(ThinkingDelta(str(block["thinking"])))
            elif kind == "tool_use" and not self._rejected(block):
                call = self._tool_count
                self._tool_count += 1
                args = json.dumps(block.get("input") or {}, ensure_ascii=False)
                out += [
                    ToolCallStart(call, str(block.get("id", "")), _tool_name(block)),
                    ToolCallDelta(call, args),
                    ToolCallEnd(call, args),
                ]
        if message.get("stop_reason"):
            self._stop_reason = str(message["stop_reason"])
            self._stop_sequence = message.get("stop_sequence")
        return out

    def _on_result(self, result: Result) -> list[Event]:
        self.done = True
        if result.is_error or result.subtype != "success":
            raise self.result_error(result)
        out = self._start("")
        stop = result.stop_reason or self._stop_reason
        stop_sequence = self._stop_sequence if stop == "stop_sequence" else None
        usage = result.usage
        if self._resumed and self._usage_since != Usage():
            usage = self._usage_since  # the result's usage covers the whole CLI turn
        out.append(Finished(finish_reason(stop), usage, stop_sequence))
        return out

    def resume(self) -> list[Event]:
        """Continue a paused turn in a new response (after the tool results were sent)."""
        self.paused = False
        self._resumed = True
        self._tool_count = 0
        self._stop_reason = None
        self._stop_sequence = None
        return [TurnStarted(self._model)]

    def result_error(self, result: Result) -> BridgeError:
        """The error an error ``result`` stands for."""
        text = result.result or "; ".join(result.errors) or result.subtype
        if result.api_error_status is not None:
            return error_for_status(result.api_error_status, text, self._policy)
        return UpstreamError(
            f"the claude CLI ended the turn with an error ({result.subtype}): {text}"[:2000]
        )


def _tool_name(block: Mapping[str, Any]) -> str:
    name = str(block.get("name", ""))
    return name.removeprefix(CLIENT_TOOL_PREFIX)
