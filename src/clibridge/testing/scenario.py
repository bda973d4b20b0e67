"""Scenarios: what a fake CLI does, chosen deterministically per process and per turn.

A fake CLI (``clibridge-fake-claude``, ``clibridge-fake-codex``) behaves by a
:class:`Scenario`, chosen like this:

1. Process-wide defaults come from the JSON file named by ``CLIBRIDGE_FAKE_SCENARIO``
   (its ``"default"`` object; its ``"named"`` object maps names to further scenarios).
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
  ``_backends/claude_render.py``) or ``<conversation_so_far>...</conversation_so_far>``
  (codex's transcript fallback, ``_backends/codex.py``). Everything up to and including the
  *last* such closing tag (:data:`QUOTED_HISTORY_ENDS`) is quoted history.
* **Tool results are not user turns.** Rendered ``<tool_result ...>...</tool_result>``
  elements after the history (and native ``tool_result`` blocks, which the fakes leave out
  of the scanned text) are not scanned.

So a directive acts in the turn that carries it and never again: a tool-calling directive
from an earlier turn cannot fire again when the history is replayed (that looped: ~190
workers spawned in 2 minutes). The model stub (:mod:`.model_stub`) applies the same rule to
the upstream request. Directive lines are removed from the echoed prompt everywhere,
quoted history included.

Recording: when ``CLIBRIDGE_FAKE_RECORD`` names a file, the fake appends one JSON line per
fact: ``{"argv": [...], "env": {...}, "cwd": "...", "pid": N}`` at start, then
``{"stdin": <parsed JSON line or raw text>}`` for every stdin line it reads.

This module is pure (no IO besides reading scenario files) so both fakes share it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import cattrs

SCENARIO_ENV = "CLIBRIDGE_FAKE_SCENARIO"
RECORD_ENV = "CLIBRIDGE_FAKE_RECORD"
BUNDLED_DIR = Path(__file__).parent / "scenarios"

DEFAULT_REPLY = "Hello from the fake CLI."

_DIRECTIVE = re.compile(r"^[ \t]*@fake(?::(?P<name>[\w.-]+)|[ \t]+(?P<json>\{.*\}))[ \t]*$", re.M)

#: closing tags of the quoted history clibridge renders into a replayed user message:
#: claude (``_backends/claude_render.py``), codex's fallback (``_backends/codex.py``)
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
        if not text:
            return []
        if self.chunk_chars <= 0:
            return [text]
        return [text[i : i + self.chunk_chars] for i in range(0, len(text), self.chunk_chars)]

    def usage_for(self, prompt: str, reply: str) -> tuple[int, int]:
        inp = self.input_tokens if self.input_tokens is not None else max(1, len(prompt) // 4)
        out = self.output_tokens if self.output_tokens is not None else max(1, len(reply) // 4)
        return inp, out


_converter = cattrs.Converter(forbid_extra_keys=True)


def scenario_from_dict(data: Mapping[str, Any], base: Scenario | None = None) -> Scenario:
    """Override ``base`` with ``data``; unknown keys raise (a typo must not pass silently)."""
    merged = attrs.asdict(base or Scenario(), recurse=True)
    merged.update(data)
    return _converter.structure(merged, Scenario)


@attrs.frozen
class ScenarioBook:
    default: Scenario = Scenario()
    named: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)

    def lookup(self, name: str) -> Mapping[str, Any]:
        if name in self.named:
            return self.named[name]
        bundled = BUNDLED_DIR / f"{name}.json"
        if bundled.is_file():
            data: Mapping[str, Any] = json.loads(bundled.read_text())
            return data
        raise KeyError(f"unknown fake scenario {name!r}")

    def for_turn(self, text: str, *, scanned: str | None = None) -> tuple[Scenario, str]:
        """The scenario for a turn whose user text is ``text``, and the text minus directives.

        Directives are read from :func:`directive_text` of ``scanned`` (default: ``text``;
        a fake passes the text without native tool results), never from quoted history.
        """
        scenario = self.default
        for match in _DIRECTIVE.finditer(directive_text(text if scanned is None else scanned)):
            if match.group("name"):
                scenario = scenario_from_dict(self.lookup(match.group("name")), scenario)
            else:
                scenario = scenario_from_dict(json.loads(match.group("json")), scenario)
        cleaned = _DIRECTIVE.sub("", text).strip("\n")
        return scenario, cleaned


def load_book(environ: Mapping[str, str] | None = None) -> ScenarioBook:
    env = os.environ if environ is None else environ
    path = env.get(SCENARIO_ENV)
    if not path:
        return ScenarioBook()
    data = json.loads(Path(path).read_text())
    return ScenarioBook(
        default=scenario_from_dict(data.get("default", {})),
        named=data.get("named", {}),
    )


def directive(**fields: Any) -> str:
    """The directive line for ``fields`` (for tests and docs): ``@fake {...}``."""
    return "@fake " + json.dumps(fields)
