"""OpenAI Chat Completions (``POST /v1/chat/completions``): decode requests, encode replies.

Decoding
    ``system`` and ``developer`` messages become ``Request.system`` (joined with blank
    lines, in order); ``user`` content (text, ``image_url`` parts with data: or http(s)
    URLs), ``assistant`` content with ``tool_calls`` (and a replayed ``reasoning_content``)
    and ``tool`` messages (folded, consecutive ones into one user message) become neutral
    messages. ``tools`` of type function, ``tool_choice``, ``parallel_tool_calls``,
    ``max_completion_tokens`` / ``max_tokens``, ``stop`` (both enforced on the event stream:
    :mod:`clibridge._output`), ``response_format`` (``json_object`` / ``json_schema``:
    :mod:`clibridge._formats`), ``reasoning_effort``, ``stream`` and ``user`` are honoured.

    Rejected with a clear 400 (UnsupportedFeature): ``n`` > 1, ``logprobs`` /
    ``top_logprobs``, audio output (``modalities`` with audio, ``audio``), the legacy
    ``functions`` / ``function_call`` / ``role: function``. An unknown ``response_format``
    type or an invalid schema is a 400 naming the field.

    Accepted and ignored (the CLIs take no such knobs): ``temperature``, ``top_p``,
    ``presence_penalty``, ``frequency_penalty``, ``seed``, ``logit_bias``, ``metadata``,
    ``store``, ``service_tier``, ``prompt_cache_key``, ``safety_identifier``,
    ``verbosity``, ``prediction``, ``web_search_options``, and any field this module does
    not know.

Encoding
    ``chat.completion`` bodies and ``chat.completion.chunk`` streams: a role chunk first,
    one chunk per content / reasoning / tool call delta (reasoning as
    ``delta.reasoning_content``, as OpenAI-compatible servers do), a chunk with
    ``finish_reason``, a usage chunk with ``choices: []`` when the client asked for
    ``stream_options.include_usage``, then ``data: [DONE]``. The ``model`` field echoes the
    name the client asked for.
"""

from __future__ import annotations

import secrets
from typing import Any, Literal

import attrs

from .._errors import BridgeError, RequestError, UnsupportedFeature
from .._events import (
    Completion,
    Event,
    Finished,
    FinishReason,
    Part,
    Request,
    TextDelta,
    TextPart,
    ThinkingDelta,
    ThinkingPart,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    ToolChoice,
    ToolResultPart,
    ToolSpec,
    Usage,
)
from ._common import (
    DEFAULT_SCHEMA,
    ConversationBuilder,
    ToolArguments,
    cancelled_error,
    effective_reason,
    effort_level,
    image_from_url,
    joined_text,
    output_format,
    positive,
    stop_strings,
    text_parts,
    tool_call_part,
)
from ._converter import JsonObject, structure
from .errors import error_body
from .sse import dumps, frame

#: OpenAI's own bound on ``stop`` ("up to 4 sequences")
MOST_STOP_STRINGS = 4

# --------------------------------------------------------------------------- request shapes


@attrs.frozen
class ImageUrl:
    url: str
    detail: str | None = None


@attrs.frozen
class TextContent:
    type: Literal["text"]
    text: str


@attrs.frozen
class ImageContent:
    type: Literal["image_url"]
    image_url: ImageUrl


@attrs.frozen
class RefusalContent:
    type: Literal["refusal"]
    refusal: str


ContentPart = TextContent | ImageContent | RefusalContent


@attrs.frozen
class FunctionCall:
    name: str
    # some clients replay arguments as an object rather than JSON text
    arguments: str | JsonObject = ""


@attrs.frozen
class MessageToolCall:
    id: str
    function: FunctionCall
    type: Literal["function"] = "function"


@attrs.frozen
class ChatMessage:
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[MessageToolCall] | None = None
    tool_call_id: str | None = None
    reasoning_content: str | None = None


@attrs.frozen
class FunctionDef:
    name: str
    description: str | None = None
    parameters: JsonObject | None = None
    strict: bool | None = None


@attrs.frozen
class Tool:
    function: FunctionDef
    type: Literal["function"] = "function"


@attrs.frozen
class NamedFunction:
    name: str


@attrs.frozen
class NamedToolChoice:
    type: Literal["function"]
    function: NamedFunction


@attrs.frozen
class StreamOptions:
    include_usage: bool | None = None


@attrs.frozen
class JsonSchemaFormat:
    name: str | None = None
    schema: JsonObject | None = None
    strict: bool | None = None
    description: str | None = None


@attrs.frozen
class ResponseFormat:
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


@attrs.frozen
class ChatRequest:
    model: str
    messages: list[ChatMessage]
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stop: str | list[str] | None = None
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    user: str | None = None
    n: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    modalities: list[str] | None = None
    audio: object = None
    functions: object = None
    function_call: object = None
    response_format: ResponseFormat | None = None


# --------------------------------------------------------------------------- decoding


def decode_request(body: object) -> Request:
    """Decode a Chat Completions request body (parsed JSON) into a neutral Request.

    Raises RequestError naming the JSON path of a bad field, or UnsupportedFeature.
    """
    req = structure(body, ChatRequest)
    _reject_unsupported(req)
    system: list[str] = []
    conv = ConversationBuilder()
    for i, msg in enumerate(req.messages):
        at = f"$.messages[{i}]"
        if msg.role in ("system", "developer"):
            text = _flatten_text(msg.content, f"{at}.content")
            if text:
                system.append(text)
        elif msg.role == "user":
            if msg.content is None:
                raise RequestError(
                    f"{at}.content: a user message needs content", param=f"{at}.content"
                )
            conv.add("user", _user_parts(msg.content, f"{at}.content"))
        elif msg.role == "assistant":
            conv.add("assistant", _assistant_parts(msg, at))
        elif msg.role == "tool":
            if not msg.tool_call_id:
                raise RequestError(
                    f"{at}.tool_call_id: a tool message needs the id of the call it answers",
                    param=f"{at}.tool_call_id",
                )
            content = _flatten_text(msg.content, f"{at}.content")
            conv.add_tool_result(ToolResultPart(tool_call_id=msg.tool_call_id, content=content))
        else:  # "function": the legacy shape
            raise UnsupportedFeature(
                f"{at}.role: role 'function' (legacy function calling) is not supported;"
                " use tools and role 'tool'",
                param=f"{at}.role",
            )
    n = len(req.messages)
    messages = conv.build(messages_param="$.messages", last_param=f"$.messages[{n - 1}]")
    tools = tuple(
        ToolSpec(
            name=t.function.name,
            description=t.function.description or "",
            input_schema=t.function.parameters
            if t.function.parameters is not None
            else DEFAULT_SCHEMA,
        )
        for t in req.tools or ()
    )
    max_tokens = req.max_completion_tokens
    if max_tokens is None:
        max_tokens = positive(req.max_tokens, "$.max_tokens")
    else:
        positive(max_tokens, "$.max_completion_tokens")
    stop = stop_strings(req.stop, "$.stop", most=MOST_STOP_STRINGS)
    fmt = req.response_format
    spec = fmt.json_schema if fmt is not None else None
    if fmt is not None and fmt.type == "json_schema" and spec is None:
        raise RequestError(
            "$.response_format.json_schema: required for type json_schema",
            param="$.response_format.json_schema",
        )
    return Request(
        model=req.model,
        messages=messages,
        system="\n\n".join(system),
        tools=tools,
        tool_choice=_tool_choice(req.tool_choice),
        parallel_tool_calls=req.parallel_tool_calls is not False,
        max_tokens=max_tokens,
        stop=stop,
        output_format=None
        if fmt is None
        else output_format(
            fmt.type,
            spec.schema if spec else None,
            spec.name if spec else None,
            spec.strict if spec else None,
            "$.response_format.json_schema",
        ),
        reasoning_effort=effort_level(req.reasoning_effort),
        stream=bool(req.stream),
        user=req.user,
    )


def stream_include_usage(body: object) -> bool:
    """Whether a (decodable) request asked for ``stream_options.include_usage``."""
    if isinstance(body, dict):
        options = body.get("stream_options")
        if isinstance(options, dict):
            return options.get("include_usage") is True
    return False


def _reject_unsupported(req: ChatRequest) -> None:
    if req.n is not None and req.n != 1:
        raise UnsupportedFeature(f"$.n: only n=1 is supported, got {req.n}", param="$.n")
    if req.logprobs or req.top_logprobs:
        param = "$.logprobs" if req.logprobs else "$.top_logprobs"
        raise UnsupportedFeature(f"{param}: log probabilities are not available", param=param)
    if req.audio is not None or (req.modalities and "audio" in req.modalities):
        param = "$.audio" if req.audio is not None else "$.modalities"
        raise UnsupportedFeature(f"{param}: audio output is not supported", param=param)
    if req.functions is not None or req.function_call is not None:
        param = "$.functions" if req.functions is not None else "$.function_call"
        raise UnsupportedFeature(
            f"{param}: legacy function calling is not supported; use tools", param=param
        )


def _text_of(part: object) -> str | None:
    if isinstance(part, TextContent):
        return part.text
    if isinstance(part, RefusalContent):
        return part.refusal
    return None


def _flatten_text(content: str | list[ContentPart] | None, param: str) -> str:
    return joined_text(content, param, _text_of)


def _user_parts(content: str | list[ContentPart], param: str) -> list[Part]:
    if isinstance(content, str):
        return [TextPart(content)]
    parts: list[Part] = []
    for j, part in enumerate(content):
        if isinstance(part, TextContent):
            parts.append(TextPart(part.text))
        elif isinstance(part, ImageContent):
            parts.append(image_from_url(part.image_url.url, f"{param}[{j}].image_url.url"))
        else:
            parts.append(TextPart(part.refusal))
    return parts


def _assistant_parts(msg: ChatMessage, at: str) -> list[Part]:
    parts: list[Part] = []
    if msg.reasoning_content:
        parts.append(ThinkingPart(msg.reasoning_content))
    parts.extend(text_parts(_flatten_text(msg.content, f"{at}.content")))
    for call in msg.tool_calls or ():
        parts.append(tool_call_part(call.id, call.function.name, call.function.arguments))
    return parts


def _tool_choice(choice: str | NamedToolChoice | None) -> ToolChoice:
    if choice is None or choice == "auto":
        return ToolChoice()
    if isinstance(choice, NamedToolChoice):
        return ToolChoice(mode="tool", name=choice.function.name)
    return ToolChoice(mode="none" if choice == "none" else "required")


# --------------------------------------------------------------------------- encoding

_FINISH: dict[FinishReason, str] = {
    FinishReason.END_TURN: "stop",
    FinishReason.STOP_SEQUENCE: "stop",
    FinishReason.MAX_TOKENS: "length",
    FinishReason.TOOL_USE: "tool_calls",
}


def new_response_id() -> str:
    """A fresh chat completion id."""
    return "chatcmpl-" + secrets.token_hex(12)


def encode_usage(usage: Usage) -> dict[str, Any]:
    """The Chat Completions ``usage`` object (prompt tokens include cache reads and writes)."""
    return {
        "prompt_tokens": usage.total_input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read_input_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def _finish_reason(finish: Finished, has_tool_calls: bool) -> str:
    reason = effective_reason(finish, has_tool_calls)
    if reason is FinishReason.CANCELLED:
        raise cancelled_error()
    return _FINISH[reason]


def encode_completion(
    completion: Completion, request: Request, *, response_id: str, created: int
) -> dict[str, Any]:
    """A ``chat.completion`` body for a finished turn (raises for a CANCELLED turn)."""
    finish_reason = _finish_reason(completion.finish, bool(completion.tool_calls))
    message: dict[str, Any] = {
        "role": "assistant",
        "content": completion.text or (None if completion.tool_calls else ""),
        "refusal": None,
    }
    if completion.thinking:
        message["reasoning_content"] = completion.thinking
    if completion.tool_calls:
        message["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in completion.tool_calls
        ]
    return {
        "id": response_id,
        "object": "chat.completion",
        "created": created,
        "model": request.model,
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
        ],
        "usage": encode_usage(completion.finish.usage),
    }


class StreamEncoder:
    """Turns one turn's neutral events into ``chat.completion.chunk`` SSE frames."""

    def __init__(
        self, request: Request, *, response_id: str, created: int, include_usage: bool = False
    ) -> None:
        self._include_usage = include_usage
        self._finished = False
        self._args = ToolArguments()
        # Every chunk starts with the same fields: encode them once, not per delta.
        head = dumps(
            {
                "id": response_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": request.model,
            }
        )
        self._head = head[:-1]
        # OpenAI sends `usage: null` on every chunk but the last when usage was asked for
        self._usage_null = ',"usage":null' if include_usage else ""

    @property
    def finished(self) -> bool:
        """True once the stream has ended (after Finished or a failure)."""
        return self._finished

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return f'data: {self._head},"choices":[{dumps(choice)}]{self._usage_null}}}\n\n'.encode()

    def start(self) -> list[bytes]:
        """The role chunk every OpenAI stream begins with."""
        return [self._chunk({"role": "assistant", "content": ""})]

    def feed(self, event: Event) -> list[bytes]:
        """Frames for one neutral event; Finished ends the stream."""
        if self._finished:
            return []
        if isinstance(event, TextDelta):
            return [self._chunk({"content": event.text})] if event.text else []
        if isinstance(event, ThinkingDelta):
            return [self._chunk({"reasoning_content": event.text})] if event.text else []
        if isinstance(event, ToolCallStart):
            self._args.started(event.index)
            call = {
                "index": event.index,
                "id": event.id,
                "type": "function",
                "function": {"name": event.name, "arguments": ""},
            }
            return [self._chunk({"tool_calls": [call]})]
        if isinstance(event, ToolCallDelta):
            if not event.arguments:
                return []
            self._args.sent(event.index, event.arguments)
            return [self._tool_args(event.index, event.arguments)]
        if isinstance(event, ToolCallEnd):
            rest = self._args.remainder(event.index, event.arguments)
            if not rest:
                return []
            self._args.sent(event.index, rest)
            return [self._tool_args(event.index, rest)]
        if isinstance(event, Finished):
            return self._finish(event)
        return []  # TurnStarted: nothing to say

    def _tool_args(self, index: int, fragment: str) -> bytes:
        return self._chunk({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]})

    def _finish(self, event: Finished) -> list[bytes]:
        if event.reason is FinishReason.CANCELLED:
            return self.fail(cancelled_error())
        self._finished = True
        frames = [self._chunk({}, _FINISH[effective_reason(event, self._args.any)])]
        if self._include_usage:
            frames.append(
                f'data: {self._head},"choices":[],"usage":{dumps(encode_usage(event.usage))}}}\n\n'.encode()
            )
        frames.append(frame("[DONE]"))
        return frames

    def fail(self, error: BridgeError) -> list[bytes]:
        """An error chunk (the openai SDK raises APIError on it), then ``[DONE]``."""
        if self._finished:
            return []
        self._finished = True
        return [frame(error_body("openai_chat", error)), frame("[DONE]")]
