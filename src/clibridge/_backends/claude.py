"""The claude stream-json protocol, pure: argv, stdin lines, stdout parser, turn translation.

Theory of operation
-------------------
A claude worker runs ``claude -p --input-format stream-json --output-format stream-json
--verbose --include-partial-messages --no-session-persistence ...`` (:func:`build_argv`).
We write one JSON object per line to its stdin (the ``*_line`` encoders below) and it
writes one JSON object per line to stdout.

Parsing has the h11 shape: the IO layer feeds stdout bytes to
:meth:`ClaudeParser.receive_data` and pulls typed records from
:meth:`ClaudeParser.next_event` until it returns :data:`NEED_DATA`. Every stdout line
becomes exactly one record; lines that are not a JSON object become :class:`GarbageLine`
and message types we do not know become :class:`OtherMessage` (logged, never fatal).

A :class:`TurnTranslator` follows one turn -- from our ``user`` line to the CLI's
``result`` -- and turns its records into neutral events::

    system/init                      -> TurnStarted(model)
    stream_event content_block_*     -> TextDelta / ThinkingDelta / ToolCallStart/Delta/End
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
worker. Inside a turn a :class:`GarbageLine` is a :class:`~clibridge._errors.ProtocolError`:
we cannot tell whether it carried part of the answer, so the turn cannot be trusted.

Fail-fast on upstream trouble (``system/api_retry``; the CLI itself would retry for
minutes): 401 -> :class:`~clibridge._errors.LoginExpired` at once (``fail_fast_on_401``);
429 -> :class:`~clibridge._errors.UpstreamRateLimited` once ``retry_attempts`` retry events
were seen, carrying the CLI's retry delay as ``retry_after``; 529 / 503 ->
:class:`~clibridge._errors.UpstreamOverloaded` likewise. Other statuses are left to the
CLI's own retries (bounded by the worker's timeouts).

Conversation rendering (:func:`render_user_content`)
----------------------------------------------------
A fresh claude worker cannot be fed a prior transcript line by line (FINDINGS.md: assistant
lines written before the first user turn are merged and misplaced). So a request becomes
ONE ``user`` message:

* a single user message goes as its own content: a plain string when it is one text part,
  else a list of ``text`` / ``image`` blocks in order;
* a longer conversation goes as a list of blocks: a short preamble, the earlier turns inside
  ``<conversation_history>`` with one ``<turn role="user|assistant">`` element per message
  (tool calls as ``<tool_call id=.. name=..>ARGS</tool_call>``, tool results as
  ``<tool_result id=.. name=..>TEXT</tool_result>``, images as image blocks at their place,
  thinking dropped), then the latest user message (everything after the last assistant
  message) rendered the same way after the line ``Latest user message:``. When the
  conversation ends with an assistant message, the closing line asks the model to continue it.

Trade-off: the model sees its earlier turns as quoted text, not as real assistant turns, so
prompt caching across requests does not apply and a client's assistant "prefill" is only
approximated. A parked worker that already holds the conversation avoids this entirely.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final, TypeAlias

import attrs

from .._config import ClaudeConfig
from .._errors import (
    BridgeError,
    LoginExpired,
    ProtocolError,
    UnsupportedFeature,
    UpstreamError,
    UpstreamOverloaded,
    UpstreamRateLimited,
)
from .._events import (
    Event,
    Finished,
    FinishReason,
    ImagePart,
    Message,
    Part,
    Request,
    TextDelta,
    TextPart,
    ThinkingDelta,
    ThinkingPart,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallPart,
    ToolCallStart,
    ToolResultPart,
    ToolSpec,
    TurnStarted,
    Usage,
)

log = logging.getLogger(__name__)

#: the SDK MCP server name client tools are exposed under; the model sees ``mcp__client__X``
CLIENT_MCP_SERVER: Final = "client"
CLIENT_TOOL_PREFIX: Final = f"mcp__{CLIENT_MCP_SERVER}__"

# --------------------------------------------------------------------------- argv


def build_argv(
    command: Sequence[str],
    *,
    model: str | None = None,
    enable_cli_tools: bool = False,
    client_tools: Sequence[str] = (),
    host_client_tools: bool = False,
) -> list[str]:
    """The argv of one stream-json worker.

    ``client_tools`` (tool names) or ``host_client_tools`` switches on the SDK MCP server on
    stdio that hosts the client's tools; initialize must then list it (``sdk_mcp=True`` in
    :func:`initialize_line`). ``host_client_tools`` allows every tool of that server
    (``--allowedTools mcp__client``, observed to work with 2.1.197): the tool set itself is
    then whatever the host answers to ``tools/list``, which the CLI asks only after our
    ``initialize`` -- so a spare spawned before any request can still serve any tool set.
    With ``enable_cli_tools`` off the CLI's own tools are disabled.
    """
    argv = [
        *command,
        "-p",
        "--input-format",
        "stream-json",
        "--output-format",
        "stream-json",
        "--verbose",
        "--include-partial-messages",
        "--no-session-persistence",
    ]
    if model:
        argv += ["--model", model]
    if not enable_cli_tools:
        argv += ["--tools", ""]
    if client_tools or host_client_tools:
        mcp = {"mcpServers": {CLIENT_MCP_SERVER: {"type": "sdk", "name": CLIENT_MCP_SERVER}}}
        argv += ["--mcp-config", json.dumps(mcp, separators=(",", ":")), "--strict-mcp-config"]
        if host_client_tools:
            argv += ["--allowedTools", f"mcp__{CLIENT_MCP_SERVER}"]
        else:
            argv += ["--allowedTools", *(CLIENT_TOOL_PREFIX + name for name in client_tools)]
    return argv


# --------------------------------------------------------------------------- stdin lines


def _line(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def control_request_line(request_id: str, request: Mapping[str, Any]) -> bytes:
    return _line({"type": "control_request", "request_id": request_id, "request": request})


def mcp_status_line(request_id: str) -> bytes:
    """The readiness ping: answered once the CLI has booted."""
    return control_request_line(request_id, {"subtype": "mcp_status"})


def initialize_line(request_id: str, system_prompt: str | None, *, sdk_mcp: bool = False) -> bytes:
    """``initialize``; ``system_prompt`` replaces the CLI's default (None keeps it)."""
    request: dict[str, Any] = {"subtype": "initialize"}
    if system_prompt is not None:
        request["systemPrompt"] = system_prompt
    if sdk_mcp:
        request["sdkMcpServers"] = [CLIENT_MCP_SERVER]
    return control_request_line(request_id, request)


def set_model_line(request_id: str, model: str) -> bytes:
    return control_request_line(request_id, {"subtype": "set_model", "model": model})


def interrupt_line(request_id: str) -> bytes:
    return control_request_line(request_id, {"subtype": "interrupt"})


def user_line(content: str | Sequence[Mapping[str, Any]]) -> bytes:
    """One user turn; ``content`` is a string or a list of Anthropic content blocks."""
    return _line(
        {
            "type": "user",
            "message": {"role": "user", "content": content},
            "parent_tool_use_id": None,
            "session_id": "",
        }
    )


def clear_line() -> bytes:
    """``/clear`` as a user message: resets the conversation, keeps the system prompt."""
    return user_line("/clear")


def mcp_response_line(request_id: str, jsonrpc_reply: Mapping[str, Any]) -> bytes:
    """Answer the CLI's ``mcp_message`` control request with a JSON-RPC reply."""
    return _line(
        {
            "type": "control_response",
            "response": {
                "subtype": "success",
                "request_id": request_id,
                "response": {"mcp_response": jsonrpc_reply},
            },
        }
    )


def control_error_line(request_id: str, message: str) -> bytes:
    """Refuse a control request the CLI sent us (so it does not wait forever)."""
    return _line(
        {
            "type": "control_response",
            "response": {"subtype": "error", "request_id": request_id, "error": message},
        }
    )


# --------------------------------------------------------------------------- client tools (MCP)

#: the Anthropic API's tool name limit (64) minus the ``mcp__client__`` prefix
MAX_TOOL_NAME: Final = 64 - len(CLIENT_TOOL_PREFIX)
_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]+")
MCP_PROTOCOL_VERSION: Final = "2025-11-25"


def tools_key(tools: Sequence[ToolSpec]) -> tuple[str, ...]:
    """A canonical, hashable form of a tool set (``Binding.tools_key``); see :func:`tools_from_key`."""
    return tuple(
        json.dumps([t.name, t.description, t.input_schema], sort_keys=True, separators=(",", ":"))
        for t in sorted(tools, key=lambda t: t.name)
    )


def tools_from_key(key: object) -> tuple[ToolSpec, ...]:
    """The tool set a :func:`tools_key` stands for (anything else: no tools)."""
    if not isinstance(key, tuple):
        return ()
    tools = []
    for text in key:
        try:
            name, description, schema = json.loads(text)
        except (TypeError, ValueError):
            continue
        tools.append(ToolSpec(str(name), str(description), dict(schema)))
    return tuple(tools)


def check_tools(request: Request) -> Request:
    """Validate the request's tools for claude; ``tool_choice: none`` hides them.

    Raises :class:`UnsupportedFeature` (400) for what claude cannot honour: a forced tool
    choice (``required`` / a named tool; claude code has no such switch) and tool
    definitions the CLI or its upstream would reject, naming the tool.
    """
    if not request.tools:
        return request
    choice = request.tool_choice
    if choice.mode == "none":
        return attrs.evolve(request, tools=())
    if choice.mode in ("required", "tool"):
        what = "required" if choice.mode == "required" else f"the named tool {choice.name!r}"
        raise UnsupportedFeature(
            f"tool_choice {what} cannot be honoured by the claude backend (the claude CLI "
            "cannot force a tool call); send tool_choice auto or none",
            param="$.tool_choice",
        )
    seen: set[str] = set()
    for i, tool in enumerate(request.tools):
        param = f"$.tools[{i}]"
        if not _TOOL_NAME.fullmatch(tool.name) or len(tool.name) > MAX_TOOL_NAME:
            raise UnsupportedFeature(
                f"tool {tool.name!r}: claude accepts tool names of 1 to {MAX_TOOL_NAME} "
                "letters, digits, '_' or '-'; rename the tool",
                param=param,
            )
        if tool.name in seen:
            raise UnsupportedFeature(f"tool {tool.name!r} is defined twice", param=param)
        seen.add(tool.name)
        schema = tool.input_schema
        if not isinstance(schema, Mapping) or schema.get("type") != "object":
            raise UnsupportedFeature(
                f"tool {tool.name!r}: its parameters schema must be a JSON Schema object with "
                '"type": "object" (claude rejects anything else)',
                param=param,
            )
        try:
            json.dumps(schema)
        except (TypeError, ValueError) as exc:
            raise UnsupportedFeature(
                f"tool {tool.name!r}: its schema is not JSON: {exc}", param=param
            ) from exc
    return request


def mcp_reply(message: Mapping[str, Any], tools: Sequence[ToolSpec]) -> dict[str, Any] | None:
    """Our JSON-RPC reply to an MCP message the CLI sent, except ``tools/call`` (None).

    Notifications get an empty result too: the CLI waits for a control_response to every
    ``mcp_message``, notifications included (observed), or it stalls.
    """
    method = message.get("method")
    result: dict[str, Any]
    if method == "tools/call":
        return None
    if method == "initialize":
        result = {
            "protocolVersion": (message.get("params") or {}).get("protocolVersion")
            or MCP_PROTOCOL_VERSION,
            "capabilities": {"tools": {}},
            "serverInfo": {"name": CLIENT_MCP_SERVER, "version": "1"},
        }
    elif method == "tools/list":
        result = {
            "tools": [
                {"name": t.name, "description": t.description, "inputSchema": t.input_schema}
                for t in tools
            ]
        }
    elif method == "ping" or not isinstance(method, str) or method.startswith("notifications/"):
        result = {}
    else:
        reply: dict[str, Any] = {
            "jsonrpc": "2.0",
            "error": {"code": -32601, "message": f"method {method!r} not supported"},
        }
        if "id" in message:
            reply["id"] = message["id"]
        return reply
    reply = {"jsonrpc": "2.0", "result": result}
    if "id" in message:
        reply["id"] = message["id"]
    return reply


def mcp_tool_result(message: Mapping[str, Any], content: str, *, is_error: bool) -> dict[str, Any]:
    """The JSON-RPC reply to a ``tools/call`` carrying the client's result."""
    result: dict[str, Any] = {"content": [{"type": "text", "text": content}]}
    if is_error:
        result["isError"] = True
    return {"jsonrpc": "2.0", "id": message.get("id"), "result": result}


def tool_use_id(message: Mapping[str, Any]) -> str:
    """The ``tool_use`` id a ``tools/call`` answers (``_meta["claudecode/toolUseId"]``)."""
    params = message.get("params") or {}
    meta = params.get("_meta") or {} if isinstance(params, Mapping) else {}
    return str(meta.get("claudecode/toolUseId", "")) if isinstance(meta, Mapping) else ""


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
        return AssistantMessage(obj["message"], obj.get("parent_tool_use_id"))
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


class ClaudeParser:
    """Bytes from the CLI's stdout in, :data:`Record` objects out (h11 shape)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        # the buffer holds no newline before this offset: long lines stay O(n)
        self._scanned = 0

    def receive_data(self, data: bytes) -> None:
        """Feed stdout bytes (any split). A final line without newline is never parsed."""
        self._buffer += data

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete line waiting for its newline."""
        return len(self._buffer)

    def next_event(self) -> Record | NeedData:
        """The next record, or :data:`NEED_DATA`. Empty lines are skipped."""
        while True:
            idx = self._buffer.find(b"\n", self._scanned)
            if idx < 0:
                self._scanned = len(self._buffer)
                return NEED_DATA
            raw = bytes(self._buffer[:idx]).strip()
            del self._buffer[: idx + 1]
            self._scanned = 0
            if raw:
                return parse_line(raw)


def parse_line(raw: bytes) -> Record:
    """One stdout line (without newline) as a record."""
    try:
        obj = json.loads(raw)
    except ValueError:
        return GarbageLine(raw.decode("utf-8", "replace"))
    if not isinstance(obj, dict):
        return GarbageLine(raw.decode("utf-8", "replace"))
    return record_from(obj)


# --------------------------------------------------------------------------- turn translation


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
) -> UpstreamError:
    """The error of an upstream HTTP status the CLI reported."""
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

    def feed(self, record: Record) -> list[Event]:
        """The events ``record`` yields; raises a BridgeError subclass on failure."""
        if self.done or self.paused:
            return []
        if isinstance(record, SystemInit):
            return self._start(record.model)
        if isinstance(record, ApiRetry):
            self._on_retry(record)
            return []
        if isinstance(record, StreamEvent):
            if record.parent_tool_use_id is not None:
                return []  # a sub-agent's stream
            return self._on_stream_event(record.event)
        if isinstance(record, AssistantMessage):
            if record.parent_tool_use_id is not None:
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
            self._usage_since = _add_usage(self._usage_since, self._msg_usage)
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
            elif kind == "tool_use":
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


def _add_usage(a: Usage, b: Usage) -> Usage:
    return Usage(
        input_tokens=a.input_tokens + b.input_tokens,
        output_tokens=a.output_tokens + b.output_tokens,
        cache_read_input_tokens=a.cache_read_input_tokens + b.cache_read_input_tokens,
        cache_creation_input_tokens=a.cache_creation_input_tokens + b.cache_creation_input_tokens,
        reasoning_tokens=a.reasoning_tokens + b.reasoning_tokens,
    )


def _tool_name(block: Mapping[str, Any]) -> str:
    name = str(block.get("name", ""))
    return name.removeprefix(CLIENT_TOOL_PREFIX)


# --------------------------------------------------------------------------- rendering

HISTORY_PREAMBLE: Final = (
    "The conversation so far is quoted below, oldest turn first. Your own earlier replies "
    'are the turns with role="assistant"; tool calls you made and the results you got are '
    "shown inline. Answer the latest user message as the assistant, continuing this "
    "conversation; do not mention this quoting."
)
LATEST_HEADER: Final = "Latest user message:"
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
        out.text(HISTORY_PREAMBLE + "\n\n<conversation_history>\n")
        for message in history:
            out.text(f'<turn role="{message.role}">\n')
            _render_parts(message.parts, out, tool_names)
            out.text("</turn>\n")
        out.text("</conversation_history>\n\n")
    if latest:
        if history:
            out.text(LATEST_HEADER + "\n")
        for message in latest:
            _render_parts(message.parts, out, tool_names)
    else:
        out.text(CONTINUE_REQUEST + "\n")
    blocks = out.blocks
    # trailing newline of the last text block carries no meaning
    if blocks and blocks[-1]["type"] == "text":
        blocks[-1]["text"] = blocks[-1]["text"].rstrip("\n")
    return blocks
