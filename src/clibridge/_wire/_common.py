"""Helpers the three dialect decoders share (pure).

The decoders first structure the body into their attrs shapes (which checks JSON kinds and
required fields, see :mod:`._converter`), then call these to check what a schema cannot
say (a tool result without an id, a conversation that ends on the wrong side) and to
build the neutral :class:`~clibridge._events.Request`.
"""

from __future__ import annotations

import base64
import binascii
import mimetypes
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .._errors import RequestError, UnsupportedFeature, UpstreamError
from .._events import (
    Finished,
    FinishReason,
    ImagePart,
    Message,
    OutputFormat,
    Part,
    ReasoningEffort,
    Role,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)
from .._formats import check_schema
from .sse import dumps

DEFAULT_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}


def image_from_url(url: str, param: str) -> ImagePart:
    """An ImagePart from a ``data:`` URL (inline base64) or an http(s) URL."""
    if url.startswith("data:"):
        header, sep, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if not sep or encoding != "base64" or not media_type:
            raise RequestError(
                f"{param}: expected a base64 data URL such as data:image/png;base64,..."
                " or an http(s) URL",
                param=param,
            )
        try:
            base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(
                f"{param}: the data URL does not hold valid base64", param=param
            ) from None
        return ImagePart(media_type=media_type, data=data)
    if url.startswith(("http://", "https://")):
        guessed, _ = mimetypes.guess_type(url.split("?", 1)[0])
        return ImagePart(media_type=guessed or "image/*", url=url)
    raise RequestError(
        f"{param}: expected a data: URL or an http(s) URL, got {url[:40]!r}", param=param
    )


def effort_from_budget(budget_tokens: int) -> ReasoningEffort:
    """Map an Anthropic thinking budget onto the neutral effort scale."""
    if budget_tokens < 4096:
        return "low"
    if budget_tokens < 16384:
        return "medium"
    if budget_tokens < 32768:
        return "high"
    return "xhigh"


def positive(value: int | None, param: str) -> int | None:
    """``value`` if it is a positive token count (or absent), else a 400 naming ``param``."""
    if value is not None and value < 1:
        raise RequestError(f"{param}: expected a positive integer, got {value}", param=param)
    return value


def output_format(
    kind: str, schema: dict[str, Any] | None, name: str | None, strict: bool | None, param: str
) -> OutputFormat | None:
    """The neutral format of a ``response_format`` / ``text.format`` / ``output_config.format``
    (``param`` names it); None for plain text. A bad schema is a 400 naming its field."""
    if kind == "text":
        return None
    if kind == "json_object":
        return OutputFormat("json_object")
    if schema is not None:
        schema = check_schema(schema, f"{param}.schema")
    return OutputFormat("json_schema", schema, name or "", bool(strict))


def stop_strings(stop: str | Sequence[str] | None, param: str, *, most: int) -> tuple[str, ...]:
    """The stop strings: a 400 naming ``param`` for an empty one (it would stop at once) or
    for more than ``most`` (each is looked for in every text delta, on the event loop)."""
    stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
    if len(stops) > most:
        raise RequestError(
            f"{param}: at most {most} stop strings are allowed, got {len(stops)}", param=param
        )
    for i, s in enumerate(stops):
        if not s:
            at = param if isinstance(stop, str) else f"{param}[{i}]"
            raise RequestError(f"{at}: a stop string must not be empty", param=at)
    return stops


class ConversationBuilder:
    """Collects neutral messages, folding tool results so roles alternate naturally.

    Tool results always travel in a user message; consecutive ones share it. Dialects
    whose assistant turn arrives in several items (Responses) ask for ``merge=True``.
    """

    def __init__(self) -> None:
        self._messages: list[tuple[Role, list[Part]]] = []
        self._last_is_tool_results = False

    def add(self, role: Role, parts: Iterable[Part], *, merge: bool = False) -> None:
        parts = list(parts)
        if merge and self._messages and self._messages[-1][0] == role:
            self._messages[-1][1].extend(parts)
        else:
            self._messages.append((role, parts))
        self._last_is_tool_results = False

    def add_tool_result(self, part: ToolResultPart) -> None:
        if self._last_is_tool_results:
            self._messages[-1][1].append(part)
        else:
            self._messages.append(("user", [part]))
        self._last_is_tool_results = True

    def build(
        self, *, messages_param: str, last_param: str, allow_assistant_last: bool = False
    ) -> tuple[Message, ...]:
        """The messages, after checking the conversation is one a CLI can answer."""
        if not self._messages:
            raise RequestError(
                f"{messages_param}: the conversation is empty; send at least one user message",
                param=messages_param,
            )
        role = self._messages[-1][0]
        if role != "user" and not allow_assistant_last:
            raise UnsupportedFeature(
                f"{last_param}: the last message must come from the user (or carry tool"
                " results); continuing a partial assistant message (prefill) is not supported",
                param=last_param,
            )
        return tuple(Message(role=r, parts=tuple(p)) for r, p in self._messages)


def tool_call_part(call_id: str, name: str, arguments: object) -> ToolCallPart:
    """A ToolCallPart; ``arguments`` given as an object (some clients do) becomes JSON text."""
    if not isinstance(arguments, str):
        arguments = dumps(arguments) if isinstance(arguments, dict) else "{}"
    return ToolCallPart(id=call_id, name=name, arguments=arguments)


def joined_text(
    content: str | Sequence[object] | None, param: str, text_of: Callable[[object], str | None]
) -> str:
    """The text of a message content that may hold text only: a string, or parts whose
    text ``text_of`` gives (None for a part that is not text: a 400 naming it)."""
    if content is None or isinstance(content, str):
        return content or ""
    texts: list[str] = []
    for j, part in enumerate(content):
        text = text_of(part)
        if text is None:
            raise RequestError(
                f"{param}[{j}]: only text is allowed here, got an image", param=f"{param}[{j}]"
            )
        texts.append(text)
    return "".join(texts)


def text_parts(text: str | None) -> list[Part]:
    """A one-part list for non-empty text, else nothing."""
    return [TextPart(text)] if text else []


class ToolArguments:
    """The argument text streamed so far per tool call, to finish it correctly at its end.

    Backends may stream fragments (``ToolCallDelta``) or give the whole text only at
    ``ToolCallEnd``; an encoder sends, at the end, whatever the fragments did not cover.
    """

    def __init__(self) -> None:
        self._sent: dict[int, list[str]] = {}

    def started(self, index: int) -> None:
        self._sent[index] = []

    def sent(self, index: int, fragment: str) -> None:
        self._sent.setdefault(index, []).append(fragment)

    def remainder(self, index: int, arguments: str) -> str:
        """The tail of ``arguments`` not yet sent (all of it if nothing was streamed)."""
        sent = "".join(self._sent.get(index, ()))
        if arguments.startswith(sent):
            return arguments[len(sent) :]
        # The backend's final text disagrees with what it streamed; a stream cannot take
        # text back, so the streamed fragments stand.
        return ""

    def streamed(self, index: int) -> str:
        return "".join(self._sent.get(index, ()))

    @property
    def any(self) -> bool:
        return bool(self._sent)


def cancelled_error() -> UpstreamError:
    """What a CANCELLED finish becomes: never a success in any dialect."""
    return UpstreamError("the turn was interrupted before it finished; retry the request")


def effective_reason(finish: Finished, has_tool_calls: bool) -> FinishReason:
    """The finish reason to report: a turn that ended on tool calls reports TOOL_USE."""
    if has_tool_calls and finish.reason is FinishReason.END_TURN:
        return FinishReason.TOOL_USE
    return finish.reason


def effort_level(effort: str | None) -> ReasoningEffort | None:
    """An OpenAI ``reasoning_effort`` / ``reasoning.effort`` on the neutral scale."""
    if effort in ("minimal", "low", "medium", "high", "xhigh"):
        return effort  # type: ignore[return-value]
    return None  # absent or "none"
