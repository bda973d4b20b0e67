"""What the interactive claude leaves behind, parsed: transcript lines, debug-log lines, the screen.

Theory of operation
-------------------
An interactive claude has no stdout protocol. A TUI worker reads three things instead
(observed with 2.1.197, ``docs/tui.md``):

* **the session transcript** ``~/.claude/projects/<work dir>/<session>.jsonl``: one JSON
  object per line (:func:`parse_transcript_line`). A turn is our ``user`` line, one
  ``assistant`` line per content block of each model message (same ``message.id``, each
  carrying the message's usage), and ``system/turn_duration`` at the end. An upstream
  error that ends the turn is an ``assistant`` line with ``isApiErrorMessage`` and
  ``apiErrorStatus``; an interrupt writes a ``user`` line ``[Request interrupted by user]``.
* **the debug log** (``--debug-file``): while the CLI retries an upstream error the
  transcript shows nothing, but the log has ``API error (attempt N/M): STATUS ...`` for
  each attempt (:func:`parse_debug_line`).
* **the screen** (``tmux capture-pane -p``): the prompt ``❯`` once the CLI is up, the
  footer ``esc to interrupt`` while a turn runs, and the input box between two rules
  (:func:`screen_state`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final, TypeAlias

import attrs

from ..._events import Usage
from ..claude.parser import usage_from

__all__ = [
    "INTERRUPTED_TEXT",
    "PROMPT_MARK",
    "ApiAttempt",
    "AssistantBlock",
    "Entry",
    "OtherEntry",
    "Screen",
    "TurnEnd",
    "UserEntry",
    "parse_debug_line",
    "parse_transcript_line",
    "screen_state",
]

#: the input prompt the CLI draws once it is up
PROMPT_MARK: Final = "❯"
#: the footer while a turn runs
BUSY_MARK: Final = "esc to interrupt"
#: the footer after one Escape on a non-empty idle input
CLEAR_HINT: Final = "Esc again to clear"
#: how the user lines of a slash command's echo begin
_COMMAND_ECHOES: Final = ("<command-name>", "<local-command-", "<command-message>")
#: the text of the user line the CLI writes when a turn is interrupted
INTERRUPTED_TEXT: Final = "[Request interrupted by user"


@attrs.frozen
class UserEntry:
    """A ``user`` line: a typed prompt (``meta`` False), or something the CLI wrote."""

    text: str
    meta: bool
    interrupted: bool


@attrs.frozen
class AssistantBlock:
    """One ``assistant`` line: one content block of model message ``message_id``."""

    message_id: str
    model: str
    block: Mapping[str, Any]
    usage: Usage
    stop_reason: str | None
    #: the CLI's own error text (``isApiErrorMessage``), with the upstream status if known
    error_status: int | None = None
    is_error: bool = False
    synthetic: bool = False


@attrs.frozen
class TurnEnd:
    """``system/turn_duration``: the turn is over."""

    duration_ms: int


@attrs.frozen
class OtherEntry:
    type: str
    subtype: str | None = None


Entry: TypeAlias = UserEntry | AssistantBlock | TurnEnd | OtherEntry


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(b.get("text", ""))
            for b in content
            if isinstance(b, Mapping) and b.get("type") == "text"
        )
    return ""


def parse_transcript_line(line: bytes | str) -> Entry | None:
    """One transcript line; None for an empty or non-JSON line (the file is the CLI's)."""
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    if not isinstance(obj, Mapping):
        return None
    kind = str(obj.get("type", ""))
    if kind == "user":
        message = obj.get("message") or {}
        text = _text_of(message.get("content") if isinstance(message, Mapping) else None)
        return UserEntry(
            text=text,
            # a slash command's echo (``/clear``) is written as user lines too
            meta=bool(obj.get("isMeta"))
            or "toolUseResult" in obj
            or text.startswith(_COMMAND_ECHOES),
            interrupted=text.startswith(INTERRUPTED_TEXT),
        )
    if kind == "assistant":
        message = obj.get("message") or {}
        if not isinstance(message, Mapping):
            message = {}
        content = message.get("content")
        blocks = (
            content if isinstance(content, list) else [{"type": "text", "text": str(content or "")}]
        )
        block = blocks[0] if blocks and isinstance(blocks[0], Mapping) else {}
        status = obj.get("apiErrorStatus")
        return AssistantBlock(
            message_id=str(message.get("id", "")),
            model=str(message.get("model", "")),
            block=block,
            usage=usage_from(message.get("usage")),
            stop_reason=message.get("stop_reason")
            if isinstance(message.get("stop_reason"), str)
            else None,
            error_status=status if isinstance(status, int) else None,
            is_error=bool(obj.get("isApiErrorMessage")),
            synthetic=message.get("model") == "<synthetic>",
        )
    if kind == "system" and obj.get("subtype") == "turn_duration":
        duration = obj.get("durationMs")
        return TurnEnd(duration if isinstance(duration, int) else 0)
    subtype = obj.get("subtype")
    return OtherEntry(kind, subtype if isinstance(subtype, str) else None)


@attrs.frozen
class ApiAttempt:
    """``API error (attempt N/M): STATUS ...`` in the debug log."""

    attempt: int
    max_attempts: int
    status: int | None
    message: str


_API_ERROR = re.compile(r"API error \(attempt (\d+)/(\d+)\): (?:(\d{3}) )?(.*)$")


def parse_debug_line(line: str) -> ApiAttempt | None:
    match = _API_ERROR.search(line)
    if match is None:
        return None
    status = match.group(3)
    return ApiAttempt(
        int(match.group(1)), int(match.group(2)), int(status) if status else None, match.group(4)
    )


@attrs.frozen
class Screen:
    """What a capture of the pane shows."""

    #: the prompt is drawn
    prompt: bool
    #: a turn runs (the footer says how to interrupt it)
    busy: bool
    #: the text in the input box (None when no input box was found)
    input: str | None
    #: "Esc again to clear" is shown
    clear_hint: bool
    #: the CLI's retry notice: seconds until its next attempt
    retry_in: float | None


_RULE = re.compile(r"^─{10,}\s*$")
_RETRY = re.compile(r"Retrying in (\d+(?:\.\d+)?)\s*s")


def screen_state(text: str) -> Screen:
    """Read a ``capture-pane -p`` text (see module doc)."""
    lines = text.splitlines()
    rules = [i for i, line in enumerate(lines) if _RULE.match(line)]
    box: str | None = None
    if len(rules) >= 2:
        inner = lines[rules[-2] + 1 : rules[-1]]
        if inner and inner[0].startswith(PROMPT_MARK):
            inner = [inner[0][len(PROMPT_MARK) :], *inner[1:]]
            box = "\n".join(line.strip() for line in inner).strip()
    footer = "\n".join(lines[rules[-1] + 1 :]) if rules else text
    retry = _RETRY.search(text)
    return Screen(
        prompt=PROMPT_MARK in text,
        busy=BUSY_MARK in footer,
        input=box,
        clear_hint=CLEAR_HINT in text,
        retry_in=float(retry.group(1)) if retry else None,
    )
