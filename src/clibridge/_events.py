"""The neutral vocabulary every layer speaks.

Theory of operation
-------------------
An HTTP dialect (OpenAI Chat Completions, OpenAI Responses, Anthropic Messages) decodes
its JSON into one :class:`Request`. A backend driver turns a :class:`Request` into what
its CLI understands and turns the CLI's output back into a stream of :data:`Event`s:

    TurnStarted? (TextDelta | ThinkingDelta | ToolCallStart | ToolCallDelta | ToolCallEnd)* Finished

A stream always ends with exactly one :class:`Finished` (which carries the usage), or an
exception from :mod:`clibridge._errors` is raised instead. Dialect encoders turn the event
stream into their JSON / SSE. Nothing translates dialect-to-dialect directly.

Every class here is a small frozen attrs record; none is subclassed.
"""

from __future__ import annotations

import enum
from typing import Any, Literal, TypeAlias

import attrs

Role: TypeAlias = Literal["user", "assistant"]


# --------------------------------------------------------------------------- request


@attrs.frozen
class TextPart:
    text: str


@attrs.frozen
class ImagePart:
    """An image given inline (base64 ``data``) or by ``url``; exactly one is set."""

    media_type: str
    data: str | None = None
    url: str | None = None


@attrs.frozen
class ToolCallPart:
    """A tool call the assistant made earlier in the conversation."""

    id: str
    name: str
    arguments: str  # JSON text, exactly as the model produced it


@attrs.frozen
class ToolResultPart:
    """The client's answer to an earlier :class:`ToolCallPart`."""

    tool_call_id: str
    content: str
    is_error: bool = False


@attrs.frozen
class ThinkingPart:
    """Reasoning an assistant turn carried (replayed history); may be dropped by backends."""

    text: str


Part: TypeAlias = TextPart | ImagePart | ToolCallPart | ToolResultPart | ThinkingPart


@attrs.frozen
class Message:
    role: Role
    parts: tuple[Part, ...]

    def text(self) -> str:
        """The concatenated text parts (what most single-text consumers want)."""
        return "".join(p.text for p in self.parts if isinstance(p, TextPart))


@attrs.frozen
class ToolSpec:
    """A client-side function the model may call. ``input_schema`` is a JSON Schema object."""

    name: str
    description: str = ""
    input_schema: dict[str, Any] = attrs.field(factory=lambda: {"type": "object", "properties": {}})


@attrs.frozen
class ToolChoice:
    """``auto`` (default), ``none``, ``required`` (any tool), or ``tool`` with ``name`` set."""

    mode: Literal["auto", "none", "required", "tool"] = "auto"
    name: str | None = None


ReasoningEffort: TypeAlias = Literal["minimal", "low", "medium", "high", "xhigh"]


@attrs.frozen
class OutputFormat:
    """The client wants the reply as JSON (``response_format`` / ``text.format``).

    ``json_object``: any JSON object. ``json_schema``: a JSON value valid under
    ``schema`` (None: any JSON value). Enforced by :mod:`clibridge._formats`.
    """

    kind: Literal["json_object", "json_schema"]
    schema: dict[str, Any] | None = None
    name: str = ""
    strict: bool = False


@attrs.frozen
class Request:
    """One model call, whatever dialect it arrived in.

    ``model`` is the name the client asked for (an alias or a CLI model id); the models
    table resolves it. ``system`` is the whole system prompt (all system / developer
    messages joined). ``messages`` never contains system messages.
    """

    model: str
    messages: tuple[Message, ...]
    system: str = ""
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: ToolChoice = ToolChoice()
    parallel_tool_calls: bool = True
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    output_format: OutputFormat | None = None
    reasoning_effort: ReasoningEffort | None = None
    stream: bool = False
    user: str | None = None


# --------------------------------------------------------------------------- events


class FinishReason(enum.Enum):
    """Why a turn ended, in the neutral vocabulary (dialects map these to their own)."""

    END_TURN = "end_turn"
    MAX_TOKENS = "max_tokens"
    TOOL_USE = "tool_use"
    STOP_SEQUENCE = "stop_sequence"
    CANCELLED = "cancelled"  # interrupted on our side; never sent to a client as success


@attrs.frozen
class Usage:
    """Token counts the CLI reported (never invented). ``input_tokens`` excludes cache reads."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_input_tokens(self) -> int:
        return self.input_tokens + self.cache_read_input_tokens + self.cache_creation_input_tokens

    @property
    def total_tokens(self) -> int:
        return self.total_input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        """Both counts together (a turn of several model calls, a turn run again)."""
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_read_input_tokens=self.cache_read_input_tokens + other.cache_read_input_tokens,
            cache_creation_input_tokens=(
                self.cache_creation_input_tokens + other.cache_creation_input_tokens
            ),
            reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
        )


@attrs.frozen
class Route:
    """Where the supervisor ran a turn: facts for the request ledger, never sent to clients."""

    backend: str
    worker_id: int
    #: the CLI's process id (None for in-process workers)
    pid: int | None
    #: seconds from asking the pool for a worker until one was leased (boot included)
    queue_wait_s: float
    #: the turn continued a conversation parked on this worker
    continued: bool


@attrs.frozen
class TurnStarted:
    """The backend accepted the turn. ``model`` is the model id actually used.

    ``route`` is set by the supervisor (drivers leave it None); it takes no part in
    equality, so an event compares equal whoever served it.
    """

    model: str
    route: Route | None = attrs.field(default=None, eq=False)


@attrs.frozen
class TextDelta:
    text: str


@attrs.frozen
class ThinkingDelta:
    text: str


@attrs.frozen
class ToolCallStart:
    """The model began a tool call. ``index`` counts tool calls within this turn from 0."""

    index: int
    id: str
    name: str


@attrs.frozen
class ToolCallDelta:
    index: int
    arguments: str  # a fragment of the JSON arguments text


@attrs.frozen
class ToolCallEnd:
    """The call's arguments are complete; ``arguments`` is the whole JSON text."""

    index: int
    arguments: str


@attrs.frozen
class Finished:
    reason: FinishReason
    usage: Usage
    stop_sequence: str | None = None


Event: TypeAlias = (
    TurnStarted | TextDelta | ThinkingDelta | ToolCallStart | ToolCallDelta | ToolCallEnd | Finished
)


@attrs.frozen
class ToolCall:
    id: str
    name: str
    arguments: str


@attrs.frozen
class Completion:
    """A whole turn collected from its events (what non-streaming responses encode)."""

    model: str
    text: str
    thinking: str
    tool_calls: tuple[ToolCall, ...]
    finish: Finished


def collect(model: str, events: list[Event]) -> Completion:
    """Fold a finished event stream into a :class:`Completion` (pure)."""
    text: list[str] = []
    thinking: list[str] = []
    calls: dict[int, ToolCall] = {}
    finish: Finished | None = None
    for ev in events:
        if isinstance(ev, TurnStarted):
            model = ev.model or model
        elif isinstance(ev, TextDelta):
            text.append(ev.text)
        elif isinstance(ev, ThinkingDelta):
            thinking.append(ev.text)
        elif isinstance(ev, ToolCallStart):
            calls[ev.index] = ToolCall(ev.id, ev.name, "")
        elif isinstance(ev, ToolCallEnd):
            call = calls[ev.index]
            calls[ev.index] = ToolCall(call.id, call.name, ev.arguments)
        elif isinstance(ev, Finished):
            finish = ev
    if finish is None:
        raise ValueError("event stream ended without Finished")
    return Completion(
        model=model,
        text="".join(text),
        thinking="".join(thinking),
        tool_calls=tuple(calls[i] for i in sorted(calls)),
        finish=finish,
    )
