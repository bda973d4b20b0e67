"""Anthropic Messages (``POST /v1/messages``): decode requests, encode replies.

Decoding
    ``system`` (a string or text blocks, joined with blank lines) becomes
    ``Request.system``. Message content: ``text``, ``image`` (base64 or url source),
    ``tool_use`` (assistant), ``tool_result`` (user; content flattened to text,
    ``is_error`` kept), ``thinking`` (assistant, replayed as ThinkingPart; signatures are
    not checked) and ``redacted_thinking`` (dropped: nothing can read it). ``tools`` (client
    tools), ``tool_choice`` (auto / any / tool / none, with
    ``disable_parallel_tool_use``), ``max_tokens``, ``stop_sequences``, ``stream``,
    ``metadata.user_id``, ``thinking`` (a budget maps onto an effort level) and
    ``output_config.effort`` are honoured.

    Rejected with a clear 400: server tools (``web_search_...``, ``bash_...``), documents,
    images inside tool results, and a last message from the assistant (prefill).

    Accepted and ignored (the CLIs take no such knobs): ``temperature``, ``top_p``,
    ``top_k``, ``cache_control`` on any block, ``service_tier``, ``container``,
    ``inference_geo``, ``speed`` and any field this module does not know.

Encoding
    ``message`` bodies and the event stream: ``message_start`` (input usage is not known
    until the turn ends, so it carries zeros and the final counts come in
    ``message_delta.usage``, which the SDK applies), ``content_block_start`` / ``_delta``
    / ``_stop`` for thinking (``thinking_delta`` then a ``signature_delta``), text
    (``text_delta``) and tool_use (``input_json_delta``), ``message_delta`` with
    ``stop_reason``, ``stop_sequence`` and usage, then ``message_stop``. Every frame has
    its ``event:`` line. The ``model`` field echoes the name the client asked for.
"""

from __future__ import annotations

import json
import secrets
from typing import Any, Literal

import attrs

from .._errors import BridgeError, RequestError, UnsupportedFeature
from .._events import (
    Completion,
    Event,
    Finished,
    FinishReason,
    ImagePart,
    OutputFormat,
    Part,
    ReasoningEffort,
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
    effort_from_budget,
    image_from_url,
    output_format,
    positive,
    stop_strings,
    tool_call_part,
)
from ._converter import JsonObject, structure
from .errors import error_body
from .sse import frame

#: what a thinking block's ``signature`` says: there is no upstream signature to pass on
THINKING_SIGNATURE = "clibridge-unsigned"
#: clibridge's bound on ``stop_sequences`` (the API documents none; each is looked for in
#: every text delta, on the event loop)
MOST_STOP_SEQUENCES = 64

# --------------------------------------------------------------------------- request shapes


@attrs.frozen
class Base64Source:
    type: Literal["base64"]
    media_type: str
    data: str


@attrs.frozen
class UrlSource:
    type: Literal["url"]
    url: str


@attrs.frozen
class TextBlock:
    type: Literal["text"]
    text: str


@attrs.frozen
class ImageBlock:
    type: Literal["image"]
    source: Base64Source | UrlSource


@attrs.frozen
class ToolUseBlock:
    type: Literal["tool_use"]
    id: str
    name: str
    input: JsonObject


@attrs.frozen
class ToolResultBlock:
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[TextBlock | ImageBlock] | None = None
    is_error: bool | None = None


@attrs.frozen
class ThinkingBlock:
    type: Literal["thinking"]
    thinking: str
    signature: str | None = None


@attrs.frozen
class RedactedThinkingBlock:
    type: Literal["redacted_thinking"]
    data: str | None = None


ContentBlock = (
    TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock | RedactedThinkingBlock
)


@attrs.frozen
class InputMessage:
    role: Literal["user", "assistant"]
    content: str | list[ContentBlock]


@attrs.frozen
class SystemText:
    type: Literal["text"]
    text: str


@attrs.frozen
class ClientTool:
    name: str
    description: str | None = None
    input_schema: JsonObject | None = None
    # server tools carry a versioned type (web_search_20250305, bash_20250124, ...)
    type: Literal["custom"] | None = None


@attrs.frozen
class ToolChoiceAuto:
    type: Literal["auto"]
    disable_parallel_tool_use: bool | None = None


@attrs.frozen
class ToolChoiceAny:
    type: Literal["any"]
    disable_parallel_tool_use: bool | None = None


@attrs.frozen
class ToolChoiceTool:
    type: Literal["tool"]
    name: str
    disable_parallel_tool_use: bool | None = None


@attrs.frozen
class ToolChoiceNone:
    type: Literal["none"]


@attrs.frozen
class ThinkingEnabled:
    type: Literal["enabled"]
    budget_tokens: int


@attrs.frozen
class ThinkingDisabled:
    type: Literal["disabled"]


@attrs.frozen
class ThinkingAdaptive:
    type: Literal["adaptive"]


@attrs.frozen
class Metadata:
    user_id: str | None = None


@attrs.frozen
class OutputFormatConfig:
    type: Literal["json_schema"]
    schema: JsonObject | None = None


@attrs.frozen
class OutputConfig:
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None
    format: OutputFormatConfig | None = None


@attrs.frozen
class MessagesRequest:
    model: str
    messages: list[InputMessage]
    # required by the API, but clients of a local bridge often leave it out
    max_tokens: int | None = None
    system: str | list[SystemText] | None = None
    tools: list[ClientTool] | None = None
    tool_choice: ToolChoiceAuto | ToolChoiceAny | ToolChoiceTool | ToolChoiceNone | None = None
    stop_sequences: list[str] | None = None
    stream: bool | None = None
    thinking: ThinkingEnabled | ThinkingDisabled | ThinkingAdaptive | None = None
    metadata: Metadata | None = None
    output_config: OutputConfig | None = None


# --------------------------------------------------------------------------- decoding


def decode_request(body: object) -> Request:
    """Decode a Messages request body (parsed JSON) into a neutral Request.

    Raises RequestError naming the JSON path of a bad field, or UnsupportedFeature.
    """
    req = structure(body, MessagesRequest)
    conv = ConversationBuilder()
    for i, msg in enumerate(req.messages):
        at = f"$.messages[{i}].content"
        if isinstance(msg.content, str):
            conv.add(msg.role, [TextPart(msg.content)])
        else:
            parts = [
                _part(msg.role, block, f"{at}[{j}]")
                for j, block in enumerate(msg.content)
                if not isinstance(block, RedactedThinkingBlock)
            ]
            conv.add(msg.role, parts)
    n = len(req.messages)
    messages = conv.build(messages_param="$.messages", last_param=f"$.messages[{n - 1}]")
    if isinstance(req.system, str):
        system = req.system
    else:
        system = "\n\n".join(block.text for block in req.system or () if block.text)
    choice, parallel = _tool_choice(req.tool_choice)
    return Request(
        model=req.model,
        messages=messages,
        system=system,
        tools=tuple(
            ToolSpec(
                name=t.name,
                description=t.description or "",
                input_schema=t.input_schema if t.input_schema is not None else DEFAULT_SCHEMA,
            )
            for t in req.tools or ()
        ),
        tool_choice=choice,
        parallel_tool_calls=parallel,
        max_tokens=positive(req.max_tokens, "$.max_tokens"),
        stop=stop_strings(req.stop_sequences, "$.stop_sequences", most=MOST_STOP_SEQUENCES),
        output_format=_output_format(req.output_config),
        reasoning_effort=_effort(req),
        stream=bool(req.stream),
        user=req.metadata.user_id if req.metadata else None,
    )


def _output_format(config: OutputConfig | None) -> OutputFormat | None:
    if config is None or config.format is None:
        return None
    fmt = config.format
    if fmt.schema is None:
        raise RequestError(
            "$.output_config.format.schema: required for type json_schema",
            param="$.output_config.format.schema",
        )
    return output_format(fmt.type, fmt.schema, None, True, "$.output_config.format")


def _part(role: str, block: ContentBlock, at: str) -> Part:
    if isinstance(block, TextBlock):
        return TextPart(block.text)
    if isinstance(block, ImageBlock) and role == "user":
        return _image(block, f"{at}.source")
    if isinstance(block, ToolResultBlock) and role == "user":
        return ToolResultPart(
            tool_call_id=block.tool_use_id,
            content=_tool_result_text(block, f"{at}.content"),
            is_error=bool(block.is_error),
        )
    if isinstance(block, ToolUseBlock) and role == "assistant":
        return tool_call_part(block.id, block.name, block.input)
    if isinstance(block, ThinkingBlock) and role == "assistant":
        return ThinkingPart(block.thinking)
    raise RequestError(
        f"{at}: a {block.type} block cannot appear in a {role} message", param=f"{at}.type"
    )


def _image(block: ImageBlock, at: str) -> ImagePart:
    if isinstance(block.source, Base64Source):
        return ImagePart(media_type=block.source.media_type, data=block.source.data)
    return image_from_url(block.source.url, f"{at}.url")


def _tool_result_text(block: ToolResultBlock, at: str) -> str:
    if block.content is None or isinstance(block.content, str):
        return block.content or ""
    texts: list[str] = []
    for k, item in enumerate(block.content):
        if isinstance(item, ImageBlock):
            raise UnsupportedFeature(
                f"{at}[{k}]: images inside tool results are not supported; send text",
                param=f"{at}[{k}]",
            )
        texts.append(item.text)
    return "\n\n".join(texts)


def _tool_choice(choice: object) -> tuple[ToolChoice, bool]:
    parallel = not getattr(choice, "disable_parallel_tool_use", None)
    if isinstance(choice, ToolChoiceAny):
        return ToolChoice(mode="required"), parallel
    if isinstance(choice, ToolChoiceTool):
        return ToolChoice(mode="tool", name=choice.name), parallel
    if isinstance(choice, ToolChoiceNone):
        return ToolChoice(mode="none"), parallel
    return ToolChoice(), parallel


def _effort(req: MessagesRequest) -> ReasoningEffort | None:
    if req.output_config is not None and req.output_config.effort is not None:
        effort = req.output_config.effort
        return "xhigh" if effort == "max" else effort
    if isinstance(req.thinking, ThinkingEnabled):
        return effort_from_budget(req.thinking.budget_tokens)
    return None


# --------------------------------------------------------------------------- encoding

_STOP: dict[FinishReason, str] = {
    FinishReason.END_TURN: "end_turn",
    FinishReason.STOP_SEQUENCE: "stop_sequence",
    FinishReason.MAX_TOKENS: "max_tokens",
    FinishReason.TOOL_USE: "tool_use",
}


def new_response_id() -> str:
    """A fresh message id."""
    return "msg_" + secrets.token_hex(12)


def encode_usage(usage: Usage) -> dict[str, Any]:
    """The Messages ``usage`` object (``input_tokens`` excludes cache reads and writes)."""
    return {
        "input_tokens": usage.input_tokens,
        "cache_creation_input_tokens": usage.cache_creation_input_tokens,
        "cache_read_input_tokens": usage.cache_read_input_tokens,
        "output_tokens": usage.output_tokens,
    }


def _stop_reason(finish: Finished, has_tool_calls: bool) -> str:
    reason = effective_reason(finish, has_tool_calls)
    if reason is FinishReason.CANCELLED:
        raise cancelled_error()
    return _STOP[reason]


def _tool_input(arguments: str) -> dict[str, Any]:
    try:
        value = json.loads(arguments) if arguments else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def encode_completion(
    completion: Completion, request: Request, *, response_id: str, created: int
) -> dict[str, Any]:
    """A ``message`` body for a finished turn (raises for a CANCELLED turn).

    ``created`` is unused (Messages bodies carry no timestamp); it keeps the three
    dialects' signatures alike.
    """
    stop_reason = _stop_reason(completion.finish, bool(completion.tool_calls))
    content: list[dict[str, Any]] = []
    if completion.thinking:
        content.append(
            {"type": "thinking", "thinking": completion.thinking, "signature": THINKING_SIGNATURE}
        )
    if completion.text:
        content.append({"type": "text", "text": completion.text})
    for call in completion.tool_calls:
        content.append(
            {
                "type": "tool_use",
                "id": call.id,
                "name": call.name,
                "input": _tool_input(call.arguments),
            }
        )
    return {
        "id": response_id,
        "type": "message",
        "role": "assistant",
        "model": request.model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": completion.finish.stop_sequence,
        "usage": encode_usage(completion.finish.usage),
    }


def _event(data: dict[str, Any]) -> bytes:
    return frame(data, event=data["type"])


class StreamEncoder:
    """Turns one turn's neutral events into Messages stream events."""

    def __init__(
        self, request: Request, *, response_id: str, created: int, include_usage: bool = False
    ) -> None:
        # include_usage is meaningless here: Messages streams always carry usage
        self._request = request
        self._id = response_id
        self._finished = False
        self._blocks = 0  # content blocks opened so far: the next block's index
        self._text_block: int | None = None  # the open text or thinking block
        self._text_kind: Literal["text", "thinking"] = "text"
        self._tool_blocks: dict[int, int] = {}  # neutral tool index -> open block index
        self._args = ToolArguments()

    @property
    def finished(self) -> bool:
        """True once the stream has ended (after Finished or a failure)."""
        return self._finished

    def start(self) -> list[bytes]:
        """``message_start`` with an empty message."""
        message: dict[str, Any] = {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "model": self._request.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": encode_usage(Usage()),
        }
        return [_event({"type": "message_start", "message": message})]

    def feed(self, event: Event) -> list[bytes]:
        """Frames for one neutral event; Finished ends the stream."""
        if self._finished:
            return []
        if isinstance(event, TextDelta | ThinkingDelta):
            if not event.text:
                return []
            kind: Literal["text", "thinking"] = (
                "text" if isinstance(event, TextDelta) else "thinking"
            )
            frames = [] if self._text_kind == kind else self._close_text()
            if self._text_block is None:
                frames.append(self._open_text(kind))
            assert self._text_block is not None
            delta = (
                {"type": "text_delta", "text": event.text}
                if kind == "text"
                else {"type": "thinking_delta", "thinking": event.text}
            )
            frames.append(
                _event({"type": "content_block_delta", "index": self._text_block, "delta": delta})
            )
            return frames
        if isinstance(event, ToolCallStart):
            frames = self._close_text()
            index = self._blocks
            self._blocks += 1
            self._tool_blocks[event.index] = index
            self._args.started(event.index)
            block = {"type": "tool_use", "id": event.id, "name": event.name, "input": {}}
            frames.append(
                _event({"type": "content_block_start", "index": index, "content_block": block})
            )
            return frames
        if isinstance(event, ToolCallDelta):
            if not event.arguments or event.index not in self._tool_blocks:
                return []
            self._args.sent(event.index, event.arguments)
            return [self._json_delta(event.index, event.arguments)]
        if isinstance(event, ToolCallEnd):
            return self._close_tool(event.index, event.arguments)
        if isinstance(event, Finished):
            return self._finish(event)
        return []

    def _open_text(self, kind: Literal["text", "thinking"]) -> bytes:
        self._text_block = self._blocks
        self._text_kind = kind
        self._blocks += 1
        block = (
            {"type": "text", "text": ""}
            if kind == "text"
            else {"type": "thinking", "thinking": "", "signature": ""}
        )
        return _event(
            {"type": "content_block_start", "index": self._text_block, "content_block": block}
        )

    def _close_text(self) -> list[bytes]:
        index = self._text_block
        if index is None:
            return []
        self._text_block = None
        frames = []
        if self._text_kind == "thinking":
            delta = {"type": "signature_delta", "signature": THINKING_SIGNATURE}
            frames.append(_event({"type": "content_block_delta", "index": index, "delta": delta}))
        frames.append(_event({"type": "content_block_stop", "index": index}))
        return frames

    def _json_delta(self, tool_index: int, fragment: str) -> bytes:
        delta = {"type": "input_json_delta", "partial_json": fragment}
        return _event(
            {"type": "content_block_delta", "index": self._tool_blocks[tool_index], "delta": delta}
        )

    def _close_tool(self, tool_index: int, arguments: str) -> list[bytes]:
        if tool_index not in self._tool_blocks:
            return []
        frames = []
        rest = self._args.remainder(tool_index, arguments)
        if rest:
            self._args.sent(tool_index, rest)
            frames.append(self._json_delta(tool_index, rest))
        frames.append(
            _event({"type": "content_block_stop", "index": self._tool_blocks.pop(tool_index)})
        )
        return frames

    def _finish(self, event: Finished) -> list[bytes]:
        if event.reason is FinishReason.CANCELLED:
            return self.fail(cancelled_error())
        frames = self._close_text()
        for tool_index in sorted(self._tool_blocks):
            frames.extend(self._close_tool(tool_index, self._args.streamed(tool_index)))
        self._finished = True
        delta = {
            "stop_reason": _STOP[effective_reason(event, self._args.any)],
            "stop_sequence": event.stop_sequence,
        }
        frames.append(
            _event({"type": "message_delta", "delta": delta, "usage": encode_usage(event.usage)})
        )
        frames.append(_event({"type": "message_stop"}))
        return frames

    def fail(self, error: BridgeError) -> list[bytes]:
        """An ``error`` event (the anthropic SDK raises on it); the stream ends there."""
        if self._finished:
            return []
        self._finished = True
        return [frame(error_body("anthropic_messages", error), event="error")]
