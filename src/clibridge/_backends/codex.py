"""The codex ``app-server`` protocol, pure: argv, JSON-RPC lines, parser, turn translator.

Theory of operation
-------------------
``codex app-server`` speaks newline-delimited JSON-RPC 2.0 on stdio (its replies carry no
``"jsonrpc"`` field). One process serves many *threads*; clibridge opens one ephemeral
thread per request (``thread/start``), optionally appends the earlier conversation to it
(``thread/inject_items``, raw Responses items: the model sees real user / assistant
messages, checked at the model stub), and runs one turn (``turn/start``) with the last
user message as input. Notifications then stream, each naming its ``threadId``::

    turn/started  item/started  item/agentMessage/delta*  item/reasoning/*Delta*
    item/completed  thread/tokenUsage/updated  error*  turn/completed

The IO layer (:mod:`clibridge._backends.codex_worker`) feeds stdout bytes into an
:class:`AppServerParser` (h11 shape: ``receive_data`` / ``next_event`` until
:class:`NeedData`) and routes each message: responses to their waiter by id, server
requests to a policy (approvals declined, anything else answered with a JSON-RPC error),
notifications to the :class:`TurnTranslator` of their thread, which turns them into
neutral events and raises the mapped :mod:`clibridge._errors` error when the turn fails.

Client tools become ``dynamicTools`` on ``thread/start`` under the client's own names
(:func:`check_tools` refuses what codex cannot honour: a forced ``tool_choice``, names or
schemas the upstream rejects). A model call arrives as the server request
``item/tool/call``; :meth:`TurnTranslator.tool_call` makes it a whole tool call,
:meth:`~TurnTranslator.pause` ends the response there (``Finished(TOOL_USE)``) and
:meth:`~TurnTranslator.resume` starts the continuation's response; the client's result
goes back as a ``DynamicToolCallResponse`` (:func:`tool_call_response`). In a replayed
history the calls and results are ``function_call`` / ``function_call_output`` items; a
conversation that ends with tool results starts its turn with an empty input (observed
with codex 0.169.0 at the stub: the model's input then ends with the outputs).

A model API, not a remote shell: :func:`build_argv` switches the CLI's own tools off
(observed with codex 0.169.0 at the model stub: the upstream request then carries no
``tools`` at all), drops the built-in developer messages (permissions, environment,
skills, apps, collaboration mode) and the project docs. The request's system prompt goes
as ``baseInstructions`` (it replaces codex's own prompt and becomes the one developer
message; an empty system prompt gives none). Reasoning effort goes with ``turn/start``.

Errors: codex retries upstream trouble itself and reports every attempt as an ``error``
notification with ``willRetry: true`` before a failed ``turn/completed``. A 401 / an
``unauthorized`` or ``usageLimitExceeded`` error cannot get better by retrying, so the
translator raises at the first such notification instead of waiting through the retries.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final, TypeAlias

import attrs

from .._errors import (
    BridgeError,
    LoginExpired,
    ModelNotFound,
    ProtocolError,
    RequestError,
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
from ._lines import LineBuffer
from ._tools import check_tools as _check_tools

#: ``-c`` overrides for every app-server clibridge runs: no project docs, no update check
BASE_OVERRIDES: Final = (
    "project_doc_max_bytes=0",
    "check_for_update_on_startup=false",
    'sandbox_mode="read-only"',
    'approval_policy="never"',
)
#: ``-c`` overrides that take the CLI's own tools and their developer messages away
#: (each one checked against codex 0.169.0 at the model stub)
NO_CLI_TOOLS_OVERRIDES: Final = (
    "features.shell_tool=false",
    "features.unified_exec=false",
    "features.shell_snapshot=false",
    "features.view_image=false",
    "features.multi_agent=false",
    "features.goals=false",
    "features.apps=false",
    "features.plugins=false",
    "features.hooks=false",
    "features.image_generation=false",
    "features.skill_search=false",
    "features.tool_suggest=false",
    "features.memories=false",
    'web_search="disabled"',
    "tools.experimental_request_user_input={enabled=false}",
    "skills.bundled.enabled=false",
    "include_permissions_instructions=false",
    "include_environment_context=false",
    "include_apps_instructions=false",
    "include_collaboration_mode_instructions=false",
)

#: JSON-RPC error codes
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601

#: server requests that ask for an approval, and the reply that declines each
APPROVAL_DECLINES: Final[Mapping[str, Mapping[str, Any]]] = {
    "item/commandExecution/requestApproval": {"decision": "decline"},
    "item/fileChange/requestApproval": {"decision": "decline"},
    "execCommandApproval": {"decision": "denied"},
    "applyPatchApproval": {"decision": "denied"},
    "item/permissions/requestApproval": {"permissions": {}},
    "mcpServer/elicitation/request": {"action": "decline"},
}


def build_argv(
    command: Sequence[str],
    *,
    enable_cli_tools: bool = False,
    overrides: Sequence[str] = (),
) -> tuple[str, ...]:
    """``codex app-server -c ...``; the operator's ``overrides`` come last and win."""
    argv = [*command, "app-server"]
    chosen = [*BASE_OVERRIDES, *(() if enable_cli_tools else NO_CLI_TOOLS_OVERRIDES), *overrides]
    for item in chosen:
        argv += ["-c", item]
    return tuple(argv)


# --------------------------------------------------------------------------- encoders


def _line(msg: Mapping[str, Any]) -> bytes:
    return json.dumps(msg, ensure_ascii=False, separators=(",", ":")).encode()


def request_line(req_id: int, method: str, params: Mapping[str, Any]) -> bytes:
    return _line({"jsonrpc": "2.0", "id": req_id, "method": method, "params": params})


def notification_line(method: str) -> bytes:
    return _line({"jsonrpc": "2.0", "method": method})


def result_line(req_id: Any, result: Mapping[str, Any]) -> bytes:
    return _line({"jsonrpc": "2.0", "id": req_id, "result": result})


def error_line(req_id: Any, message: str, code: int = METHOD_NOT_FOUND) -> bytes:
    return _line({"jsonrpc": "2.0", "id": req_id, "error": {"code": code, "message": message}})


def initialize_params(version: str) -> dict[str, Any]:
    # experimentalApi: needed for ``environments: []`` and, later, dynamic tools
    return {
        "clientInfo": {"name": "clibridge", "title": "clibridge", "version": version},
        "capabilities": {"experimentalApi": True},
    }


def thread_start_params(
    *,
    system: str,
    model: str | None,
    cwd: str,
    enable_cli_tools: bool = False,
    tools: Sequence[ToolSpec] = (),
) -> dict[str, Any]:
    params: dict[str, Any] = {
        "ephemeral": True,
        "baseInstructions": system,
        "cwd": cwd,
        "sandbox": "read-only",
        "approvalPolicy": "never",
    }
    if model:
        params["model"] = model
    if not enable_cli_tools:
        params["environments"] = []  # no environment: nothing to run commands in
    if tools:
        params["dynamicTools"] = dynamic_tools(tools)
    return params


def turn_start_params(
    thread_id: str, items: Sequence[Mapping[str, Any]], effort: str | None
) -> dict[str, Any]:
    params: dict[str, Any] = {"threadId": thread_id, "input": list(items)}
    if effort:
        params["effort"] = effort
    return params


def interrupt_params(thread_id: str, turn_id: str) -> dict[str, Any]:
    return {"threadId": thread_id, "turnId": turn_id}


# --------------------------------------------------------------------------- client tools

#: what the Responses API (codex's upstream) accepts as a function name


def check_tools(request: Request) -> Request:
    """Validate the request's tools for codex; ``tool_choice: none`` hides them.

    Raises :class:`UnsupportedFeature` (400) for what codex cannot honour: a forced tool
    choice (the app-server has no per-turn tool_choice) and tool definitions the upstream
    would reject, naming the tool.
    """
    return _check_tools(request, cli="codex", max_name=64)


def dynamic_tools(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    """``thread/start`` ``dynamicTools``: the client's tools under the client's own names."""
    return [
        {
            "type": "function",
            "name": tool.name,
            "description": tool.description,
            "inputSchema": tool.input_schema,
        }
        for tool in tools
    ]


def tool_call_response(result: ToolResultPart) -> dict[str, Any]:
    """The ``DynamicToolCallResponse`` answering an ``item/tool/call`` with a client result."""
    return {
        "contentItems": [{"type": "inputText", "text": result.content}],
        "success": not result.is_error,
    }


TOOL_CALL_METHOD: Final = "item/tool/call"


# --------------------------------------------------------------------------- request rendering


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


# --------------------------------------------------------------------------- parser


@attrs.frozen
class Response:
    """The reply to one of our requests: ``result`` or ``error`` (``{"code", "message"}``)."""

    id: Any
    result: Any = None
    error: Mapping[str, Any] | None = None

    @property
    def error_message(self) -> str:
        return str((self.error or {}).get("message", ""))


@attrs.frozen
class ServerRequest:
    """The app-server asks the client something (approvals, tool calls ...)."""

    id: Any
    method: str
    params: Mapping[str, Any]

    @property
    def thread_id(self) -> str | None:
        value = self.params.get("threadId")
        return value if isinstance(value, str) else None


@attrs.frozen
class Notification:
    method: str
    params: Mapping[str, Any]

    @property
    def thread_id(self) -> str | None:
        value = self.params.get("threadId")
        if isinstance(value, str):
            return value
        thread = self.params.get("thread")
        if isinstance(thread, Mapping) and isinstance(thread.get("id"), str):
            return str(thread["id"])
        return None


@attrs.frozen
class GarbageLine:
    """A stdout line that is not a JSON-RPC message (logged and skipped)."""

    text: str


@attrs.frozen
class NeedData:
    pass


Message_: TypeAlias = Response | ServerRequest | Notification | GarbageLine
NEED_DATA: Final = NeedData()


class AppServerParser(LineBuffer):
    """Bytes in, JSON-RPC messages out (h11 shape)."""

    def next_event(self) -> Message_ | NeedData:
        raw = self.next_line()
        return NEED_DATA if raw is None else parse_message(raw)


def parse_message(raw: bytes) -> Message_:
    try:
        msg = json.loads(raw)
    except ValueError:
        return GarbageLine(raw.decode("utf-8", "replace"))
    if not isinstance(msg, dict):
        return GarbageLine(raw.decode("utf-8", "replace"))
    method = msg.get("method")
    params = msg.get("params")
    if not isinstance(params, Mapping):
        params = {}
    if isinstance(method, str):
        if "id" in msg and msg["id"] is not None:
            return ServerRequest(msg["id"], method, params)
        return Notification(method, params)
    if "id" in msg:
        error = msg.get("error")
        return Response(msg["id"], msg.get("result"), error if isinstance(error, Mapping) else None)
    return GarbageLine(raw.decode("utf-8", "replace"))


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
