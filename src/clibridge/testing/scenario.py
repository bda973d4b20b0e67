"""Scenarios: what a fake CLI does, chosen deterministically per process and per turn.

A fake CLI (``clibridge-fake-claude``, ``clibridge-fake-codex``) behaves by a
:class:`Scenario`, chosen like this:

1. Process-wide defaults come from the JSON file named by ``CLIBRIDGE_FAKE_SCENARIO``
   (its ``"default"`` object; its ``"named"`` object maps names to further scenarios; its
   ``"logins"`` object maps a login -- the fake claude's ``CLAUDE_CODE_OAUTH_TOKEN``, the
   fake codex's ``tokens.account_id`` in ``$CODEX_HOME/auth.json`` -- to fields over the
   default, see :func:`load_book`).
   Process-level fields (``boot_delay``, ``initialize_delay``, ``mcp_timeout``,
   ``lose_tools_once``, ``crash_at_boot``, ``hang_at_boot``, ``ignore_sigterm``,
   ``spawn_grandchild``) are read from there only, since no prompt exists at boot.
2. A turn's user text may carry directives that override fields for that turn only:
     ``@fake {"reply": "hi", "chunk_chars": 2}``   (a JSON object on the rest of the line)
     ``@fake:NAME``                                 (a named scenario from the file, or a
                                                     bundled one from ``testing/scenarios``)
   Several directives apply in order; directive lines are not part of the echoed prompt.

Directives apply to the newest user turn only
---------------------------------------------
Only the text of the *newest user turn* is scanned for directives (:func:`directive_text`):

* **Quoted history is never scanned.** When clibridge cannot continue a conversation on a
  worker that holds it, it replays the earlier turns inside the newest user message, as
  ``<conversation_history>...</conversation_history>`` (claude,
  ``_backends/claude/render.py``) or ``<conversation_so_far>...</conversation_so_far>``
  (codex's transcript fallback, ``_backends/codex/render.py``). Everything up to and including the
  *last* such closing tag (:data:`QUOTED_HISTORY_ENDS`) is quoted history.
* **Tool results are not user turns.** Rendered ``<tool_result ...>...</tool_result>``
  elements after the history (and native ``tool_result`` blocks, which the fakes leave out
  of the scanned text) are not scanned.

So a directive acts in the turn that carries it and never again: a tool-calling directive
from an earlier turn cannot fire again when the history is replayed (that looped: ~190
workers spawned in 2 minutes). The model stub (:mod:`.model_stub`) applies the same rule to
the upstream request. Directive lines are removed from the echoed prompt everywhere,
quoted history included.

A bad directive is the client's error, never a crash
-----------------------------------------------------
A line that starts with ``@fake`` but is not a well-formed directive, an unknown field or
scenario name, a value of the wrong type (strict: ``"2"`` is not an int, ``1`` is not a
bool) or out of range raises :class:`DirectiveError`, whose message names the line and
what is wrong. The fakes answer it the way the real CLIs answer a request their upstream
refuses with HTTP 400 (claude: an error ``result`` with ``api_error_status`` 400; codex: a
failed turn with ``codexErrorInfo: "badRequest"``), which clibridge maps to a 400 in the
client's dialect. The fake process goes on serving. Other exceptions in a fake's turn end
that turn with an error too (never the process).

Limits
------
What one turn may make a fake print is bounded (a request once drove a fake to 1.15 GB):

* ``large_output`` <= :data:`MAX_LARGE_OUTPUT` (4 MiB) -- above is a :class:`DirectiveError`;
* at most :data:`MAX_DELTAS` (10,000) deltas per streamed text: a text that ``chunk_chars``
  would cut into more streams in longer chunks (:meth:`Scenario.chunks`);
* ``tool_calls``: at most :data:`MAX_TOOL_CALLS` (64);
* ``api_retries`` <= 1,000,000, and ``retry_delay_ms`` >= 10 when ``api_retries`` > 100 or
  ``api_error_then`` is ``"hang"`` (at most 100 retry events a second);
* delays (``first_delay``, ``chunk_delay``, ``boot_delay``, ...) within 0..3600 s,
  ``retry_delay_ms`` within 0..3,600,000, token counts within 0..10**9,
  ``crash_exit_code`` within 0..255, ``api_error`` an HTTP status (100..599).

Recording: when ``CLIBRIDGE_FAKE_RECORD`` names a file, the fake appends one JSON line per
fact: ``{"argv": [...], "env": {...}, "cwd": "...", "pid": N}`` at start, then
``{"stdin": <parsed JSON line or raw text>}`` for every stdin line it reads.

This module is pure (no IO besides reading scenario files) so both fakes share it.
"""

from __future__ import annotations

import json
import math
import os
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import attrs
import cattrs

SCENARIO_ENV = "CLIBRIDGE_FAKE_SCENARIO"
RECORD_ENV = "CLIBRIDGE_FAKE_RECORD"
BUNDLED_DIR = Path(__file__).parent / "scenarios"

DEFAULT_REPLY = "Hello from the fake CLI."

_DIRECTIVE = re.compile(r"^[ \t]*@fake(?::(?P<name>[\w.-]+)|[ \t]+(?P<json>\{.*\}))[ \t]*$", re.M)
#: a line that means to be a directive (starts with the ``@fake`` word): it must match
#: :data:`_DIRECTIVE`, else the turn is refused rather than the line passed on as text
_ATTEMPT = re.compile(r"^[ \t]*@fake\b.*$", re.M)

#: bytes of ``large_output`` filler one turn may ask for
MAX_LARGE_OUTPUT: Final = 4 * 1024 * 1024
#: deltas one streamed text is cut into, at most (``chunk_chars`` grows beyond it)
MAX_DELTAS: Final = 10_000
#: tool calls one turn may make
MAX_TOOL_CALLS: Final = 64
#: retries above which (or with ``api_error_then: "hang"``) each waits at least
#: :data:`MIN_BUSY_RETRY_DELAY_MS`
MAX_QUICK_RETRIES: Final = 100
MIN_BUSY_RETRY_DELAY_MS: Final = 10.0
_MAX_SECONDS = 3600.0
_MAX_TOKENS = 10**9
#: inclusive ranges of the numeric fields (see "Limits" in the module doc)
_RANGES: Final[Mapping[str, tuple[float, float]]] = {
    "chunk_chars": (0, math.inf),
    "first_delay": (0, _MAX_SECONDS),
    "chunk_delay": (0, _MAX_SECONDS),
    "input_tokens": (0, _MAX_TOKENS),
    "output_tokens": (0, _MAX_TOKENS),
    "cache_read_input_tokens": (0, _MAX_TOKENS),
    "large_output": (0, MAX_LARGE_OUTPUT),
    "api_error": (100, 599),
    "api_retries": (0, 1_000_000),
    "retry_delay_ms": (0, _MAX_SECONDS * 1000),
    "crash_exit_code": (0, 255),
    "boot_delay": (0, _MAX_SECONDS),
    "initialize_delay": (0, _MAX_SECONDS),
    "mcp_timeout": (0, _MAX_SECONDS),
}
_CHOICES: Final[Mapping[str, tuple[str, ...]]] = {"api_error_then": ("result", "hang")}


class DirectiveError(ValueError):
    """A directive (or named scenario) a fake cannot play; the message says what is wrong.

    The fakes answer it like an upstream HTTP 400 (see the module doc), never by crashing.
    """


#: closing tags of the quoted history clibridge renders into a replayed user message:
#: claude (``_backends/claude/render.py``), codex's fallback (``_backends/codex/render.py``)
QUOTED_HISTORY_ENDS = ("</conversation_history>", "</conversation_so_far>")
_RENDERED_TOOL_RESULT = re.compile(r"<tool_result\b[^>]*>.*?</tool_result>", re.S)


def directive_text(text: str) -> str:
    """The part of a user turn's ``text`` whose directive lines apply (see module doc).

    Everything up to and including the last closing tag of a quoted history is cut, and
    rendered ``<tool_result>`` elements are dropped. Shared by both fakes and the model stub.
    """
    cut = max((text.rfind(end) + len(end) for end in QUOTED_HISTORY_ENDS if end in text), default=0)
    return _RENDERED_TOOL_RESULT.sub("", text[cut:])


@attrs.frozen
class FakeToolCall:
    """A call the fake model makes to one of the tools the host offered."""

    name: str
    arguments: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class Scenario:
    # --- the reply
    reply: str = DEFAULT_REPLY
    #: reply with ``echo_prefix`` + the turn's user text (directive lines removed)
    echo: bool = False
    echo_prefix: str = "echo: "
    #: characters per text delta (0: the whole reply in one delta)
    chunk_chars: int = 0
    #: seconds before the first delta, and between deltas
    first_delay: float = 0.0
    chunk_delay: float = 0.0
    thinking: str | None = None
    tool_calls: tuple[FakeToolCall, ...] = ()
    #: None: derived from the text lengths (len // 4, at least 1)
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_input_tokens: int = 0
    stop_reason: str = "end_turn"
    #: bytes of filler text appended to the reply (a very large output line)
    large_output: int = 0
    # --- upstream trouble, as the CLI reports it
    api_error: int | None = None  # 401 / 429 / 529 ...
    api_retries: int = 0  # how many api_retry events before giving up (or hanging on)
    retry_delay_ms: float = 1000.0
    #: after the retries: "result" (an error result) or "hang" (keep retrying forever)
    api_error_then: str = "result"
    # --- misbehaviour
    crash_mid_turn: bool = False
    crash_exit_code: int = 3
    hang_mid_turn: bool = False  # after the first delta, say nothing more
    ignore_interrupt: bool = False
    garbage_line: bool = False  # print a non-JSON line before the turn's output
    stderr: str | None = None  # a line to print on stderr during the turn
    # --- the subscription window (clibridge._usage)
    #: claude: send a ``rate_limit_event`` with this ``rate_limit_info`` before the result
    rate_limit_info: dict[str, Any] | None = None
    #: codex: this ``RateLimitSnapshot`` answers ``account/rateLimits/read`` (default
    #: scenario; None: an error, as without a ChatGPT login) and, set for a turn, is sent as
    #: ``account/rateLimits/updated`` before the turn completes
    rate_limits: dict[str, Any] | None = None
    # --- claude only (fake_claude)
    #: prefix the reply with ``[system: <the system prompt in force>]`` (tests of binding)
    echo_system: bool = False
    #: after tool calls, append the tool results' texts to the reply
    echo_tool_results: bool = False
    # --- codex app-server only
    approval_request: bool = False  # send item/commandExecution/requestApproval first
    unknown_server_request: bool = False  # send a server request with an unknown method
    error_notification: str | None = None  # send an ``error`` notification with this message
    # --- process-level (scenario file ``default`` only)
    boot_delay: float = 0.0
    initialize_delay: float = 0.0  # claude: seconds before answering ``initialize``
    #: claude: the CLI's own timeout of its MCP requests (the real one: 30 s)
    mcp_timeout: float = 30.0
    #: claude: the first process to remove this file lists no MCP tools in that turn's
    #: ``system/init`` (a CLI whose tools/list timed out)
    lose_tools_once: str | None = None
    crash_at_boot: bool = False
    hang_at_boot: bool = False
    ignore_sigterm: bool = False
    spawn_grandchild: bool = False

    def reply_text(self, prompt: str) -> str:
        text = f"{self.echo_prefix}{prompt}" if self.echo else self.reply
        if self.large_output:
            text += ("0123456789abcdef" * (self.large_output // 16 + 1))[: self.large_output]
        return text

    def chunks(self, text: str) -> list[str]:
        """``text`` cut into ``chunk_chars`` pieces, but never more than :data:`MAX_DELTAS`."""
        if not text:
            return []
        size = self.chunk_chars if self.chunk_chars > 0 else len(text)
        size = max(size, -(-len(text) // MAX_DELTAS))
        return [text[i : i + size] for i in range(0, len(text), size)]

    def usage_for(self, prompt: str, reply: str) -> tuple[int, int]:
        inp = self.input_tokens if self.input_tokens is not None else max(1, len(prompt) // 4)
        out = self.output_tokens if self.output_tokens is not None else max(1, len(reply) // 4)
        return inp, out


_converter = cattrs.Converter(forbid_extra_keys=True)
_FIELDS: Final = attrs.fields_dict(attrs.resolve_types(Scenario))


def _type_problem(value: Any, kind: Any) -> str | None:
    """Why ``value`` is not of the field type ``kind`` (strictly: no coercion), or None."""
    args = typing.get_args(kind)
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        if value is None and type(None) in args:
            return None
        (kind,) = [a for a in args if a is not type(None)]
        args = typing.get_args(kind)
    if kind is bool:
        return None if isinstance(value, bool) else "must be true or false"
    if kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else "must be an integer"
    if kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return None if ok and math.isfinite(value) else "must be a finite number"
    if kind is str:
        return None if isinstance(value, str) else "must be a string"
    if typing.get_origin(kind) is dict:
        return None if isinstance(value, dict) else "must be a JSON object"
    if typing.get_origin(kind) is tuple and args[0] is FakeToolCall:
        return _tool_calls_problem(value)
    raise AssertionError(f"no check for the Scenario field type {kind!r}")  # a new field


def _tool_calls_problem(value: Any) -> str | None:
    if not isinstance(value, list):
        return 'must be a list of {"name": ..., "arguments": {...}} objects'
    if len(value) > MAX_TOOL_CALLS:
        return f"has {len(value)} calls; at most {MAX_TOOL_CALLS}"
    for n, call in enumerate(value):
        if not isinstance(call, dict) or set(call) - {"name", "arguments"}:
            return f'[{n}] must be an object with "name" and optionally "arguments"'
        name = call.get("name")
        if not isinstance(name, str) or not name:
            return f"[{n}].name must be a non-empty string"
        if name.startswith("mcp__") and len(name.split("__", 2)) != 3:
            return f"[{n}].name {name!r}: a full name is mcp__<server>__<tool>"
        if not isinstance(call.get("arguments", {}), dict):
            return f"[{n}].arguments must be an object"
    return None


def check_fields(data: Any) -> None:
    """Raise :class:`DirectiveError` unless ``data`` is a valid set of Scenario overrides."""
    if not isinstance(data, Mapping):
        raise DirectiveError("a scenario must be a JSON object")
    for key, value in data.items():
        field = _FIELDS.get(key)
        if field is None:
            raise DirectiveError(
                f"unknown field {key!r} (the fields are listed in fixtures/fake_cli/README.md)"
            )
        problem = _type_problem(value, field.type)
        if problem is None and key in _RANGES and value is not None:
            low, high = _RANGES[key]
            if not low <= value <= high:
                allowed = f"at least {low:g}" if high == math.inf else f"{low:g}..{high:.0f}"
                problem = f"is {value}; allowed {allowed}"
        if problem is None and key in _CHOICES and value not in _CHOICES[key]:
            problem = f"is {value!r}; one of {', '.join(map(repr, _CHOICES[key]))}"
        if problem is not None:
            raise DirectiveError(f"{key} {problem}")


def _check_scenario(sc: Scenario) -> None:
    """Rules that tie fields together (after merging over the base)."""
    busy = sc.api_error_then == "hang" or sc.api_retries > MAX_QUICK_RETRIES
    if sc.api_error is not None and busy and sc.retry_delay_ms < MIN_BUSY_RETRY_DELAY_MS:
        raise DirectiveError(
            f"retry_delay_ms must be at least {MIN_BUSY_RETRY_DELAY_MS:g} when api_retries is "
            f'over {MAX_QUICK_RETRIES} or api_error_then is "hang" (at most 100 retry events '
            "a second)"
        )


def scenario_from_dict(data: Mapping[str, Any], base: Scenario | None = None) -> Scenario:
    """Override ``base`` with ``data``; anything unknown, mistyped or out of range raises
    :class:`DirectiveError` (a typo must not pass silently, nor crash a fake)."""
    check_fields(data)
    merged = attrs.asdict(base or Scenario(), recurse=True)
    merged.update(data)
    scenario = _converter.structure(merged, Scenario)
    _check_scenario(scenario)
    return scenario


def _parse_directive_json(text: str) -> Any:
    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


@attrs.frozen
class ScenarioBook:
    default: Scenario = Scenario()
    named: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)

    def lookup(self, name: str) -> Mapping[str, Any]:
        """The fields of the named scenario; :class:`DirectiveError` when there is none."""
        if name in self.named:
            return self.named[name]
        bundled = BUNDLED_DIR / f"{name}.json"
        if bundled.is_file():
            data: Mapping[str, Any] = json.loads(bundled.read_text())
            return data
        known = sorted({*self.named, *(p.stem for p in BUNDLED_DIR.glob("*.json"))})
        raise DirectiveError(f"unknown fake scenario {name!r}; known: {', '.join(known)}")

    def for_turn(self, text: str, *, scanned: str | None = None) -> tuple[Scenario, str]:
        """The scenario for a turn whose user text is ``text``, and the text minus directives.

        Directives are read from :func:`directive_text` of ``scanned`` (default: ``text``;
        a fake passes the text without native tool results), never from quoted history.
        A bad one raises :class:`DirectiveError` naming the line and what is wrong.
        """
        scenario = self.default
        for attempt in _ATTEMPT.finditer(directive_text(text if scanned is None else scanned)):
            line = attempt.group(0)
            try:
                scenario = self._apply(line, scenario)
            except DirectiveError as exc:
                quoted = line.strip() if len(line) <= 200 else line.strip()[:200] + "..."
                raise DirectiveError(f"bad fake directive {quoted!r}: {exc}") from None
        cleaned = _DIRECTIVE.sub("", text).strip("\n")
        return scenario, cleaned

    def _apply(self, line: str, scenario: Scenario) -> Scenario:
        match = _DIRECTIVE.fullmatch(line)
        if match is None:
            raise DirectiveError(
                "a directive line is `@fake {JSON object}` or `@fake:NAME`, alone on its line"
            )
        if match.group("name"):
            return scenario_from_dict(self.lookup(match.group("name")), scenario)
        try:
            data = _parse_directive_json(match.group("json"))
        except (ValueError, RecursionError) as exc:
            raise DirectiveError(f"not valid JSON: {exc}") from None
        return scenario_from_dict(data, scenario)


def load_book(
    environ: Mapping[str, str] | None = None, *, login: str | None = None
) -> ScenarioBook:
    """The scenario book of ``CLIBRIDGE_FAKE_SCENARIO`` (an empty one without).

    ``login`` is who the fake is logged in as (fake claude: its ``CLAUDE_CODE_OAUTH_TOKEN``;
    fake codex: the ``tokens.account_id`` of its ``auth.json``):
    the file's ``"logins"`` object maps a login to fields applied over ``"default"``, so
    one scenario file makes one account's processes rate-limited and another's healthy,
    as an upstream would answer each login."""
    env = os.environ if environ is None else environ
    path = env.get(SCENARIO_ENV)
    if not path:
        return ScenarioBook()
    data = json.loads(Path(path).read_text())
    default = scenario_from_dict(data.get("default", {}))
    logins = data.get("logins", {})
    if login is not None and login in logins:
        default = scenario_from_dict(logins[login], default)
    return ScenarioBook(default=default, named=data.get("named", {}))


def directive(**fields: Any) -> str:
    """The directive line for ``fields`` (for tests and docs): ``@fake {...}``."""
    return "@fake " + json.dumps(fields)
