"""OpenAI Responses (``POST /v1/responses``): decode requests, encode replies.

Decoding
    ``instructions`` and ``system`` / ``developer`` message items become ``Request.system``
    (joined with blank lines, in order). ``input`` is a string (one user message) or a list
    of items: messages (``input_text``, ``output_text``, ``refusal``, ``input_image`` with a
    data: or http(s) URL), ``function_call`` (assistant tool calls; consecutive assistant
    items form one assistant message), ``function_call_output`` (tool results, folded into
    one user message) and ``reasoning`` (ignored: its summary is not the model's context).
    Function ``tools``, ``tool_choice``, ``parallel_tool_calls``, ``max_output_tokens``
    (enforced on the event stream: :mod:`clibridge._output`), ``text.format``
    (``json_object`` / ``json_schema``: :mod:`clibridge._formats`), ``reasoning.effort``,
    ``stream`` and ``user`` are honoured.

    Rejected with a clear 400: ``previous_response_id`` and ``conversation`` (the server
    keeps no response store: send the whole input), ``background``, built-in tools
    (web_search, file_search, ...), files given by ``file_id``, an unknown ``text.format``
    type and an invalid schema.

    Accepted and ignored (the CLIs take no such knobs): ``temperature``, ``top_p``,
    ``store``, ``metadata``, ``include``, ``truncation``, ``service_tier``,
    ``prompt_cache_key``, ``safety_identifier``, ``reasoning.summary``, ``max_tool_calls``,
    ``text.verbosity`` and any field this module does not know.

Encoding
    ``response`` objects and the event stream: ``response.created``,
    ``response.in_progress``, then per output item ``response.output_item.added``, its
    content events (``response.content_part.added`` / ``response.output_text.delta`` /
    ``.done`` / ``response.content_part.done`` for messages; ``reasoning_summary_part`` and
    ``reasoning_summary_text`` events for reasoning; ``function_call_arguments.delta`` /
    ``.done`` for function calls) and ``response.output_item.done``, and finally
    ``response.completed`` with usage — or ``response.incomplete`` (status ``incomplete``,
    ``incomplete_details.reason`` ``max_output_tokens``) when the token limit cut the turn,
    as the OpenAI API does. Every event carries a ``sequence_number``.
"""

from __future__ import annotations

import secrets
from typing import Any, Literal

import attrs

from .._errors import BridgeError, ErrorKind, RequestError, UnsupportedFeature
from .._events import (
    Completion,
    Event,
    Finished,
    FinishReason,
    OutputFormat,
    Part,
    ReasoningEffort,
    Request,
    TextDelta,
    TextPart,
    ThinkingDelta,
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
    effort_level,
    image_from_url,
    joined_text,
    output_format,
    positive,
    text_parts,
    tool_call_part,
)
from ._converter import JsonObject, structure
from .sse import frame

# --------------------------------------------------------------------------- request shapes


@attrs.frozen
class InputText:
    type: Literal["input_text"]
    text: str


@attrs.frozen
class OutputText:
    type: Literal["output_text"]
    text: str


@attrs.frozen
class InputImage:
    type: Literal["input_image"]
    image_url: str | None = None
    file_id: str | None = None
    detail: str | None = None


@attrs.frozen
class Refusal:
    type: Literal["refusal"]
    refusal: str


MessageContent = InputText | OutputText | InputImage | Refusal


@attrs.frozen
class MessageItem:
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[MessageContent]
    # the "easy" message shape omits the type
    type: Literal["message"] = "message"


@attrs.frozen
class FunctionCallItem:
    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str | JsonObject = ""


@attrs.frozen
class FunctionCallOutputItem:
    type: Literal["function_call_output"]
    call_id: str
    output: str | list[MessageContent]


@attrs.frozen
class ReasoningItem:
    type: Literal["reasoning"]


InputItem = MessageItem | FunctionCallItem | FunctionCallOutputItem | ReasoningItem


@attrs.frozen
class FunctionTool:
    type: Literal["function"]
    name: str
    description: str | None = None
    parameters: JsonObject | None = None
    strict: bool | None = None


@attrs.frozen
class FunctionChoice:
    type: Literal["function"]
    name: str


@attrs.frozen
class Reasoning:
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None


@attrs.frozen
class TextFormat:
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    schema: JsonObject | None = None
    strict: bool | None = None
    description: str | None = None


@attrs.frozen
class TextConfig:
    format: TextFormat | None = None


@attrs.frozen
class ResponsesRequest:
    model: str
    input: str | list[InputItem] | None = None
    instructions: str | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["auto", "none", "required"] | FunctionChoice | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: int | None = None
    reasoning: Reasoning | None = None
    stream: bool | None = None
    user: str | None = None
    previous_response_id: str | None = None
    conversation: object = None
    background: bool | None = None
    text: TextConfig | None = None


# --------------------------------------------------------------------------- decoding


def decode_request(body: object) -> Request:
    """Decode a Responses request body (parsed JSON) into a neutral Request.

    Raises RequestError naming the JSON path of a bad field, or UnsupportedFeature.
    """
    req = structure(body, ResponsesRequest)
    _reject_unsupported(req)
    system = [req.instructions] if req.instructions else []
    conv = ConversationBuilder()
    if req.input is None:
        raise RequestError("$.input: required field missing", param="$.input")
    items: list[InputItem] = (
        [MessageItem(role="user", content=req.input)] if isinstance(req.input, str) else req.input
    )
    for i, item in enumerate(items):
        at = f"$.input[{i}]"
        if isinstance(item, MessageItem):
            if item.role in ("system", "developer"):
                text = _text(item.content, f"{at}.content")
                if text:
                    system.append(text)
            elif item.role == "user":
                conv.add("user", _user_parts(item.content, f"{at}.content"))
            else:
                conv.add("assistant", text_parts(_text(item.content, f"{at}.content")), merge=True)
        elif isinstance(item, FunctionCallItem):
            conv.add(
                "assistant", [tool_call_part(item.call_id, item.name, item.arguments)], merge=True
            )
        elif isinstance(item, FunctionCallOutputItem):
            content = _text(item.output, f"{at}.output")
            conv.add_tool_result(ToolResultPart(tool_call_id=item.call_id, content=content))
        # reasoning items: nothing a CLI can take
    last = f"$.input[{len(items) - 1}]" if isinstance(req.input, list) else "$.input"
    messages = conv.build(messages_param="$.input", last_param=last)
    effort = req.reasoning.effort if req.reasoning else None
    return Request(
        model=req.model,
        messages=messages,
        system="\n\n".join(system),
        tools=tuple(
            ToolSpec(
                name=t.name,
                description=t.description or "",
                input_schema=t.parameters if t.parameters is not None else DEFAULT_SCHEMA,
            )
            for t in req.tools or ()
        ),
        tool_choice=_tool_choice(req.tool_choice),
        parallel_tool_calls=req.parallel_tool_calls is not False,
        max_tokens=positive(req.max_output_tokens, "$.max_output_tokens"),
        output_format=_output_format(req.text),
        reasoning_effort=effort_level(effort),
        stream=bool(req.stream),
        user=req.user,
    )


def _reject_unsupported(req: ResponsesRequest) -> None:
    if req.previous_response_id is not None:
        raise UnsupportedFeature(
            "$.previous_response_id: this server keeps no stored responses; send the whole"
            " conversation in `input` instead",
            param="$.previous_response_id",
        )
    if req.conversation is not None:
        raise UnsupportedFeature(
            "$.conversation: stored conversations are not supported; send the whole"
            " conversation in `input` instead",
            param="$.conversation",
        )
    if req.background:
        raise UnsupportedFeature(
            "$.background: background responses are not supported", param="$.background"
        )


def _output_format(text: TextConfig | None) -> OutputFormat | None:
    if text is None or text.format is None:
        return None
    fmt = text.format
    return output_format(fmt.type, fmt.schema, fmt.name, fmt.strict, "$.text.format")


def _text_of(part: object) -> str | None:
    if isinstance(part, InputText | OutputText):
        return part.text
    if isinstance(part, Refusal):
        return part.refusal
    return None


def _text(content: str | list[MessageContent], param: str) -> str:
    return joined_text(content, param, _text_of)


def _user_parts(content: str | list[MessageContent], param: str) -> list[Part]:
    if isinstance(content, str):
        return [TextPart(content)]
    parts: list[Part] = []
    for j, part in enumerate(content):
        at = f"{param}[{j}]"
        if isinstance(part, InputText | OutputText):
            parts.append(TextPart(part.text))
        elif isinstance(part, Refusal):
            parts.append(TextPart(part.refusal))
        elif part.image_url is not None:
            parts.append(image_from_url(part.image_url, f"{at}.image_url"))
        elif part.file_id is not None:
            raise UnsupportedFeature(
                f"{at}.file_id: uploaded files are not available here; send the image as a"
                " data: URL in image_url",
                param=f"{at}.file_id",
            )
        else:
            raise RequestError(f"{at}.image_url: required field missing", param=f"{at}.image_url")
    return parts


def _tool_choice(choice: str | FunctionChoice | None) -> ToolChoice:
    if choice is None or choice == "auto":
        return ToolChoice()
    if isinstance(choice, FunctionChoice):
        return ToolChoice(mode="tool", name=choice.name)
    return ToolChoice(mode="none" if choice == "none" else "required")


# --------------------------------------------------------------------------- encoding


def new_response_id() -> str:
    """A fresh response id."""
    return "resp_" + secrets.token_hex(12)


def encode_usage(usage: Usage) -> dict[str, Any]:
    """The Responses ``usage`` object (input tokens include cache reads and writes)."""
    return {
        "input_tokens": usage.total_input_tokens,
        "input_tokens_details": {
            "cached_tokens": usage.cache_read_input_tokens,
            "cache_write_tokens": usage.cache_creation_input_tokens,
        },
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    }


def _encode_tool_choice(choice: ToolChoice) -> str | dict[str, Any]:
    if choice.mode == "tool":
        return {"type": "function", "name": choice.name}
    return choice.mode


def _encode_format(fmt: OutputFormat | None) -> dict[str, Any]:
    if fmt is None:
        return {"type": "text"}
    if fmt.kind == "json_object":
        return {"type": "json_object"}
    return {
        "type": "json_schema",
        "name": fmt.name,
        "schema": fmt.schema,
        "strict": fmt.strict,
        "description": None,
    }


def _response(
    request: Request, response_id: str, created: int, status: str, output: list[dict[str, Any]]
) -> dict[str, Any]:
    """A ``response`` object echoing the request's settings, as OpenAI does."""
    effort: ReasoningEffort | None = request.reasoning_effort
    return {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": request.system or None,
        "max_output_tokens": request.max_tokens,
        "model": request.model,
        "output": output,
        "parallel_tool_calls": request.parallel_tool_calls,
        "previous_response_id": None,
        "reasoning": {"effort": effort, "summary": None},
        "text": {"format": _encode_format(request.output_format)},
        "tool_choice": _encode_tool_choice(request.tool_choice),
        "tools": [
            {
                "type": "function",
                "name": tool.name,
                "description": tool.description or None,
                "parameters": tool.input_schema,
                "strict": False,
            }
            for tool in request.tools
        ],
        "truncation": "disabled",
        "usage": None,
        "user": request.user,
        "metadata": {},
    }


def _finalize(response: dict[str, Any], finish: Finished) -> None:
    if finish.reason is FinishReason.CANCELLED:
        raise cancelled_error()
    if finish.reason is FinishReason.MAX_TOKENS:
        response["status"] = "incomplete"
        response["incomplete_details"] = {"reason": "max_output_tokens"}
    else:
        response["status"] = "completed"
    response["usage"] = encode_usage(finish.usage)


def _message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    content = (
        [{"type": "output_text", "text": text, "annotations": []}]
        if status != "in_progress"
        else []
    )
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": content,
    }


def _reasoning_item(item_id: str, text: str | None) -> dict[str, Any]:
    summary = [] if text is None else [{"type": "summary_text", "text": text}]
    return {"id": item_id, "type": "reasoning", "summary": summary}


def _call_item(
    item_id: str, call_id: str, name: str, arguments: str, status: str
) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "arguments": arguments,
        "call_id": call_id,
        "name": name,
    }


def _item_id(response_id: str, prefix: str, output_index: int) -> str:
    # Derived from the response id: unique, and stable for golden tests.
    return f"{prefix}_{response_id.removeprefix('resp_')}_{output_index}"


def encode_completion(
    completion: Completion, request: Request, *, response_id: str, created: int
) -> dict[str, Any]:
    """A ``response`` object for a finished turn (raises for a CANCELLED turn)."""
    output: list[dict[str, Any]] = []
    if completion.thinking:
        output.append(
            _reasoning_item(_item_id(response_id, "rs", len(output)), completion.thinking)
        )
    if completion.text:
        output.append(
            _message_item(_item_id(response_id, "msg", len(output)), completion.text, "completed")
        )
    for call in completion.tool_calls:
        item_id = _item_id(response_id, "fc", len(output))
        output.append(_call_item(item_id, call.id, call.name, call.arguments, "completed"))
    response = _response(request, response_id, created, "completed", output)
    _finalize(response, completion.finish)
    return response


@attrs.define
class _Item:
    """An output item being streamed."""

    kind: Literal["message", "reasoning", "function_call"]
    id: str
    output_index: int
    text: list[str] = attrs.Factory(list)
    call_id: str = ""
    name: str = ""


class StreamEncoder:
    """Turns one turn's neutral events into Responses stream events."""

    def __init__(
        self, request: Request, *, response_id: str, created: int, include_usage: bool = False
    ) -> None:
        # include_usage is meaningless here: response.completed always carries usage
        self._request = request
        self._id = response_id
        self._created = created
        self._seq = 0
        self._finished = False
        self._slots = 0  # output indexes handed out
        self._open: _Item | None = None  # the open message or reasoning item
        self._calls: dict[int, _Item] = {}  # neutral tool index -> open function_call item
        self._args = ToolArguments()
        self._done: dict[int, dict[str, Any]] = {}  # output index -> finished item

    @property
    def finished(self) -> bool:
        """True once the stream has ended (after Finished or a failure)."""
        return self._finished

    def _event(self, data: dict[str, Any]) -> bytes:
        data["sequence_number"] = self._seq
        self._seq += 1
        return frame(data, event=data["type"])

    def start(self) -> list[bytes]:
        """``response.created`` and ``response.in_progress``."""
        response = _response(self._request, self._id, self._created, "in_progress", [])
        return [
            self._event({"type": "response.created", "response": response}),
            self._event({"type": "response.in_progress", "response": response}),
        ]

    def feed(self, event: Event) -> list[bytes]:
        """Frames for one neutral event; Finished ends the stream."""
        if self._finished:
            return []
        if isinstance(event, TextDelta | ThinkingDelta):
            if not event.text:
                return []
            kind: Literal["message", "reasoning"] = (
                "message" if isinstance(event, TextDelta) else "reasoning"
            )
            frames = [] if self._open is None or self._open.kind == kind else self._close_open()
            item = self._open or self._open_item(kind, frames)
            item.text.append(event.text)
            if kind == "message":
                frames.append(
                    self._event(
                        {
                            "type": "response.output_text.delta",
                            "item_id": item.id,
                            "output_index": item.output_index,
                            "content_index": 0,
                            "delta": event.text,
                            "logprobs": [],
                        }
                    )
                )
            else:
                frames.append(
                    self._event(
                        {
                            "type": "response.reasoning_summary_text.delta",
                            "item_id": item.id,
                            "output_index": item.output_index,
                            "summary_index": 0,
                            "delta": event.text,
                        }
                    )
                )
            return frames
        if isinstance(event, ToolCallStart):
            frames = self._close_open()
            index = self._slots
            self._slots += 1
            item = _Item(
                "function_call",
                _item_id(self._id, "fc", index),
                index,
                call_id=event.id,
                name=event.name,
            )
            self._calls[event.index] = item
            self._args.started(event.index)
            added = _call_item(item.id, item.call_id, item.name, "", "in_progress")
            frames.append(
                self._event(
                    {"type": "response.output_item.added", "output_index": index, "item": added}
                )
            )
            return frames
        if isinstance(event, ToolCallDelta):
            if not event.arguments or event.index not in self._calls:
                return []
            self._args.sent(event.index, event.arguments)
            return [self._args_delta(self._calls[event.index], event.arguments)]
        if isinstance(event, ToolCallEnd):
            return self._close_call(event.index, event.arguments)
        if isinstance(event, Finished):
            return self._finish(event)
        return []

    def _open_item(self, kind: Literal["message", "reasoning"], frames: list[bytes]) -> _Item:
        index = self._slots
        self._slots += 1
        item = _Item(kind, _item_id(self._id, "msg" if kind == "message" else "rs", index), index)
        self._open = item
        if kind == "message":
            added = _message_item(item.id, "", "in_progress")
            part_event = {
                "type": "response.content_part.added",
                "item_id": item.id,
                "output_index": index,
                "content_index": 0,
                "part": {"type": "output_text", "text": "", "annotations": []},
            }
        else:
            added = _reasoning_item(item.id, None)
            part_event = {
                "type": "response.reasoning_summary_part.added",
                "item_id": item.id,
                "output_index": index,
                "summary_index": 0,
                "part": {"type": "summary_text", "text": ""},
            }
        frames.append(
            self._event(
                {"type": "response.output_item.added", "output_index": index, "item": added}
            )
        )
        frames.append(self._event(part_event))
        return item

    def _close_open(self) -> list[bytes]:
        item = self._open
        if item is None:
            return []
        self._open = None
        text = "".join(item.text)
        ids = {"item_id": item.id, "output_index": item.output_index}
        if item.kind == "message":
            part = {"type": "output_text", "text": text, "annotations": []}
            done = _message_item(item.id, text, "completed")
            frames = [
                self._event(
                    {
                        "type": "response.output_text.done",
                        **ids,
                        "content_index": 0,
                        "text": text,
                        "logprobs": [],
                    }
                ),
                self._event(
                    {"type": "response.content_part.done", **ids, "content_index": 0, "part": part}
                ),
            ]
        else:
            part = {"type": "summary_text", "text": text}
            done = _reasoning_item(item.id, text)
            frames = [
                self._event(
                    {
                        "type": "response.reasoning_summary_text.done",
                        **ids,
                        "summary_index": 0,
                        "text": text,
                    }
                ),
                self._event(
                    {
                        "type": "response.reasoning_summary_part.done",
                        **ids,
                        "summary_index": 0,
                        "part": part,
                    }
                ),
            ]
        self._done[item.output_index] = done
        frames.append(self._item_done(item, done))
        return frames

    def _item_done(self, item: _Item, done: dict[str, Any]) -> bytes:
        return self._event(
            {"type": "response.output_item.done", "output_index": item.output_index, "item": done}
        )

    def _args_delta(self, item: _Item, fragment: str) -> bytes:
        return self._event(
            {
                "type": "response.function_call_arguments.delta",
                "item_id": item.id,
                "output_index": item.output_index,
                "delta": fragment,
            }
        )

    def _close_call(self, tool_index: int, arguments: str) -> list[bytes]:
        item = self._calls.pop(tool_index, None)
        if item is None:
            return []
        frames = []
        rest = self._args.remainder(tool_index, arguments)
        if rest:
            self._args.sent(tool_index, rest)
            frames.append(self._args_delta(item, rest))
        full = self._args.streamed(tool_index)
        done = _call_item(item.id, item.call_id, item.name, full, "completed")
        self._done[item.output_index] = done
        frames.append(
            self._event(
                {
                    "type": "response.function_call_arguments.done",
                    "item_id": item.id,
                    "output_index": item.output_index,
                    "arguments": full,
                }
            )
        )
        frames.append(self._item_done(item, done))
        return frames

    def _finish(self, event: Finished) -> list[bytes]:
        if event.reason is FinishReason.CANCELLED:
            return self.fail(cancelled_error())
        frames = self._close_open()
        for tool_index in sorted(self._calls):
            frames.extend(self._close_call(tool_index, self._args.streamed(tool_index)))
        self._finished = True
        output = [self._done[i] for i in sorted(self._done)]
        response = _response(self._request, self._id, self._created, "completed", output)
        _finalize(response, event)
        kind = "response.completed" if response["status"] == "completed" else "response.incomplete"
        frames.append(self._event({"type": kind, "response": response}))
        return frames

    def fail(self, error: BridgeError) -> list[bytes]:
        """``response.failed`` carrying the error; the stream ends there."""
        if self._finished:
            return []
        self._finished = True
        output = [self._done[i] for i in sorted(self._done)]
        response = _response(self._request, self._id, self._created, "failed", output)
        response["error"] = {"code": _failure_code(error), "message": error.message}
        return [self._event({"type": "response.failed", "response": response})]


def _failure_code(error: BridgeError) -> str:
    # ResponseError.code is a closed set in the API; these three are the ones that fit
    if error.kind is ErrorKind.RATE_LIMIT:
        return "rate_limit_exceeded"
    if error.kind is ErrorKind.INVALID_REQUEST:
        return "invalid_prompt"
    return "server_error"
