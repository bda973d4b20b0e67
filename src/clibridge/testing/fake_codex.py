"""A deterministic fake of ``codex app-server`` (codex 0.169.0), scripted by scenarios.

Theory of operation
-------------------
``clibridge-fake-codex app-server [-c key=value ...]`` speaks newline-delimited JSON-RPC on
stdio like the real app-server (replies carry no ``"jsonrpc"`` field; notifications carry
``emittedAtMs``). Every shape here was copied from transcripts of the real binary against a
loopback model stub (``tests/testing/samples/codex_*.ndjson``):

* the main thread reads stdin and answers requests at once; each turn runs in its own
  Python thread, so one thread's delays never hold up another thread's turn, and
  ``turn/interrupt`` or replies to our server requests are read while a turn streams;
* one lock serialises stdout writes, one JSON message per ``write``;
* server requests we send (``item/tool/call``, approvals, an unknown method) get ids 0, 1, ...
  like the real one; the turn thread waits on a :class:`_Pending` slot the reader fills.

What a turn does is chosen by :mod:`clibridge.testing.scenario` from the turn's text
(``@fake {...}`` / ``@fake:NAME``) over the process defaults in ``CLIBRIDGE_FAKE_SCENARIO``.
Only the newest user turn counts: the ``turn/start`` input, never the history injected with
``thread/inject_items`` nor the ``<conversation_so_far>`` quote of clibridge's transcript
fallback (:func:`clibridge.testing.scenario.directive_text`).
``error_notification`` may name a ``codexErrorInfo`` with a prefix: ``"usageLimitExceeded:
You've hit your usage limit"`` sends ``codexErrorInfo: "usageLimitExceeded"``; without a
known prefix it is ``"other"``. ``api_error: 401 / 429 / 5xx`` reproduces what the real CLI
reported for those upstream statuses.

What the fake "sees": each thread keeps the model-visible history as raw Responses items,
like the real one: ``thread/inject_items`` appends items (validated with the real one's
error messages; unknown item types and ``system`` messages are accepted and dropped, as
observed at the model stub), and every turn appends its user message and the agent's
reply. Echo mode answers with that view: just ``echo: <prompt>`` when the thread has no
earlier history, else ``echo: `` + the earlier items rendered as ``[role]\ntext`` blocks +
``[user]\n<prompt>``. ``CLIBRIDGE_FAKE_CODEX_NO_INJECT=1`` makes the fake answer
``thread/inject_items`` like an app-server that lacks it (an unknown method).

Where the real CLI was not observed, the fake guesses (marked "guess" below).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .scenario import (
    RECORD_ENV,
    DirectiveError,
    FakeToolCall,
    Scenario,
    ScenarioBook,
    load_book,
)

VERSION = "0.169.0"
_CONFIG_WARNING = (
    "Codex could not find bubblewrap on PATH. Install bubblewrap with your OS package manager. "
    "See the sandbox prerequisites: "
    "https://developers.openai.com/codex/concepts/sandboxing#prerequisites. "
    "Codex will use the bundled bubblewrap in the meantime."
)
_CONTEXT_WINDOW = 258400
_UNKNOWN_SERVER_METHOD = "fake/unknownServerRequest"
#: the CodexErrorInfo string values (schema ``CodexErrorInfo``)
_ERROR_INFOS = frozenset(
    [
        "contextWindowExceeded",
        "sessionBudgetExceeded",
        "usageLimitExceeded",
        "rateLimitExceeded",
        "flexUnavailable",
        "serverOverloaded",
        "modelNotFound",
        "policyCapacityUnavailable",
        "cyberPolicy",
        "misalignmentPolicyViolation",
        "tooManyDenials",
        "internalServerError",
        "unauthorized",
        "badRequest",
        "threadRollbackFailed",
        "sandboxError",
        "other",
        "inferenceHookDenied",
    ]
)
_IMPLEMENTED = (
    "initialize",
    "thread/start",
    "thread/inject_items",
    "turn/start",
    "turn/interrupt",
    "account/rateLimits/read",
)
#: env knob: behave like an app-server without ``thread/inject_items``
NO_INJECT_ENV = "CLIBRIDGE_FAKE_CODEX_NO_INJECT"
#: ResponseItem variants and the fields each requires (the real one's serde messages name
#: the first missing field; observed for ``type`` and message ``content``, the rest a guess)
_ITEM_FIELDS: Mapping[str, tuple[str, ...]] = {
    "message": ("role", "content"),
    "reasoning": ("summary",),
    "function_call": ("name", "arguments", "call_id"),
    "function_call_output": ("call_id", "output"),
    "custom_tool_call": ("call_id", "name", "input"),
    "custom_tool_call_output": ("call_id", "output"),
}
_THREAD_ID_CHARS = frozenset("0123456789abcdefABCDEF-")
_INVALID_REQUEST = -32600  # the real app-server uses it for unknown methods too


def _now_ms() -> int:
    return int(time.time() * 1000)


class _Ids:
    """UUIDv7-shaped ids (time-ordered like the real ones), unique within the process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._n = 0

    def new(self) -> str:
        with self._lock:
            self._n += 1
            n = self._n
        ms = _now_ms()
        h = f"{ms:012x}7{os.getpid() & 0xFFF:03x}8{n:015x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


class _Pending:
    """A server request waiting for the client's reply."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.reply: Mapping[str, Any] = {}


class _Turn:
    def __init__(self, turn_id: str, started_at: int) -> None:
        self.id = turn_id
        self.started_at = started_at
        self.interrupted = threading.Event()
        self.steers: list[list[Mapping[str, Any]]] = []
        #: items injected while this turn runs: they enter the history after the current
        #: model message, and the model samples once more to see them
        self.injected: list[dict[str, Any]] = []


class _Thread:
    def __init__(self, body: dict[str, Any], tools: Mapping[str, str | None]) -> None:
        self.body = body  # the ``Thread`` object as thread/start returned it
        self.tools = tools  # dynamic tool name -> namespace
        self.turns = 0
        self.active: _Turn | None = None
        self.total = {"input": 0, "cached": 0, "output": 0, "reasoning": 0}
        #: what the model would see: raw Responses items, oldest first
        self.history: list[dict[str, Any]] = []
        #: thread/started was sent (by the first inject_items or the first turn)
        self.announced = False

    @property
    def id(self) -> str:
        thread_id: str = self.body["id"]
        return thread_id


class FakeCodex:
    """One fake app-server process: state plus the handlers for each client method."""

    def __init__(
        self,
        book: ScenarioBook,
        config: Mapping[str, str],
        out: Any,
        record: Callable[[Mapping[str, Any]], None],
    ) -> None:
        self.book = book
        self.config = config
        self._out = out
        self._record = record
        self._lock = threading.Lock()
        self._ids = _Ids()
        self._next_request_id = 0
        self._pending: dict[Any, _Pending] = {}
        self.threads: dict[str, _Thread] = {}
        self.client_name = "unknown"
        self.client_version = "0.0.0"
        self.experimental = False
        self.initialized = False

    # ------------------------------------------------------------------ output

    def send(self, msg: Mapping[str, Any]) -> None:
        line = json.dumps(msg, separators=(",", ":")) + "\n"
        with self._lock:
            self._out.write(line)
            self._out.flush()

    def raw(self, text: str) -> None:
        with self._lock:
            self._out.write(text + "\n")
            self._out.flush()

    def notify(self, method: str, params: Mapping[str, Any]) -> None:
        self.send({"method": method, "params": params, "emittedAtMs": _now_ms()})

    def reply(self, req_id: Any, result: Mapping[str, Any]) -> None:
        self.send({"id": req_id, "result": result})

    def error(self, req_id: Any, message: str, code: int = _INVALID_REQUEST) -> None:
        self.send({"error": {"code": code, "message": message}, "id": req_id})

    def request(self, method: str, params: Mapping[str, Any]) -> _Pending:
        """Send a server request; the returned slot is filled when the client answers."""
        pending = _Pending()
        with self._lock:
            req_id = self._next_request_id
            self._next_request_id += 1
            self._pending[req_id] = pending
        self.send({"method": method, "id": req_id, "params": params})
        return pending

    # ------------------------------------------------------------------ input

    def handle_line(self, line: str) -> None:
        """One stdin line; a line the fake trips over is answered with an error, never fatal
        (the real app-server answers what it cannot take with JSON-RPC errors)."""
        try:
            self._handle_line(line)
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            sys.stderr.flush()
            try:
                msg = json.loads(line)
            except ValueError:
                return
            if isinstance(msg, dict) and "method" in msg and msg.get("id") is not None:
                self.error(msg["id"], f"Internal error: {type(exc).__name__}: {exc}", -32603)

    def _handle_line(self, line: str) -> None:
        try:
            msg = json.loads(line)
        except ValueError:
            self._record({"stdin": line.rstrip("\n")})
            print("ERROR fake codex: Failed to deserialize JSONRPCMessage", file=sys.stderr)
            return
        self._record({"stdin": msg})
        if not isinstance(msg, dict):
            return
        if "method" not in msg:
            pending = self._pending.pop(msg.get("id"), None)
            if pending is not None:  # a stray reply is ignored, as the real one does
                pending.reply = msg
                pending.done.set()
            return
        method, params, req_id = msg["method"], msg.get("params") or {}, msg.get("id")
        if req_id is None:
            if method == "initialized" and self.initialized:
                self.notify("configWarning", {"summary": _CONFIG_WARNING, "details": None})
                self.notify(
                    "remoteControl/status/changed",
                    {
                        "status": "disabled",
                        "serverName": os.uname().nodename,
                        "installationId": "b9747b8a-69e4-4386-b67d-2a4cc726dc57",
                        "environmentId": None,
                    },
                )
            return
        if method == "initialize":
            self.on_initialize(req_id, params)
        elif not self.initialized:
            self.error(req_id, "Not initialized")
        elif method == "thread/start":
            self.on_thread_start(req_id, params)
        elif method == "thread/inject_items" and not os.environ.get(NO_INJECT_ENV):
            self.on_inject_items(req_id, params)
        elif method == "turn/start":
            self.on_turn_start(req_id, params)
        elif method == "turn/interrupt":
            self.on_turn_interrupt(req_id, params)
        elif method == "account/rateLimits/read":
            self.on_rate_limits_read(req_id)
        else:
            implemented: tuple[str, ...] = _IMPLEMENTED
            if os.environ.get(NO_INJECT_ENV):
                implemented = tuple(m for m in implemented if m != "thread/inject_items")
            known = ", ".join(f"`{m}`" for m in implemented)
            self.error(
                req_id, f"Invalid request: unknown variant `{method}`, expected one of {known}"
            )

    # ------------------------------------------------------------------ handlers

    def on_rate_limits_read(self, req_id: Any) -> None:
        snapshot = self.book.default.rate_limits
        if snapshot is None:
            # what the real one logged in with an API key answers (no ChatGPT account; seen
            # in tests/realcli/test_rate_limit_event.py)
            self.error(req_id, "codex account authentication required to read rate limits")
            return
        self.reply(req_id, {"rateLimits": snapshot, "rateLimitsByLimitId": {"codex": snapshot}})

    def on_initialize(self, req_id: Any, params: Mapping[str, Any]) -> None:
        if self.initialized:
            self.error(req_id, "Already initialized")
            return
        info = params.get("clientInfo") or {}
        self.client_name = str(info.get("name", "unknown"))
        self.client_version = str(info.get("version", "0.0.0"))
        self.experimental = bool((params.get("capabilities") or {}).get("experimentalApi"))
        self.initialized = True
        home = os.environ.get("CODEX_HOME") or str(Path.home() / ".codex")
        agent = (
            f"{self.client_name}/{VERSION} (Debian 12.0.0; x86_64) xterm "
            f"({self.client_name}; {self.client_version})"
        )
        self.reply(
            req_id,
            {
                "userAgent": agent,
                "codexHome": os.path.abspath(home),
                "platformFamily": "unix",
                "platformOs": "linux",
            },
        )

    def on_thread_start(self, req_id: Any, params: Mapping[str, Any]) -> None:
        if params.get("dynamicTools") is not None and not self.experimental:
            self.error(req_id, "thread/start.dynamicTools requires experimentalApi capability")
            return
        tools: dict[str, str | None] = {}
        for spec in params.get("dynamicTools") or []:
            if spec.get("type") == "namespace":
                for tool in spec.get("tools") or []:
                    tools[tool["name"]] = spec["name"]
            else:
                tools[spec["name"]] = None
        thread_id = self._ids.new()
        cwd = os.path.abspath(params.get("cwd") or os.getcwd())
        model = params.get("model") or self.config.get("model") or "gpt-5.5"
        provider = params.get("modelProvider") or self.config.get("model_provider") or "openai"
        now = int(time.time())
        body: dict[str, Any] = {
            "id": thread_id,
            "environments": [
                {"environmentId": "local", "cwd": cwd, "runtimeWorkspaceRoots": [cwd]}
            ],
            "extra": None,
            "sessionId": thread_id,
            "forkedFromId": None,
            "attachedToThreadId": None,
            "parentThreadId": None,
            "preview": "",
            "ephemeral": bool(params.get("ephemeral", False)),
            "section": None,
            "sectionEnteredAt": None,
            "projectId": None,
            "historyMode": "paginated",
            "modelProvider": provider,
            "model": model,
            "reasoningEffort": None,
            "createdAt": now,
            "updatedAt": now,
            "recencyAt": now,
            "status": {"type": "idle"},
            "path": None,
            "cwd": cwd,
            "cliVersion": VERSION,
            "originator": self.client_name,
            "source": "vscode",
            "canAcceptDirectInput": True,
            "threadSource": None,
            "agentNickname": None,
            "agentRole": None,
            "gitInfo": None,
            "name": None,
            "daybreakEnabled": None,
            "turns": [],
        }
        self.threads[thread_id] = _Thread(body, tools)
        self.reply(
            req_id,
            {
                "thread": body,
                "model": model,
                "modelProvider": provider,
                "serviceTier": None,
                "disabledPluginIds": [],
                "cwd": cwd,
                "runtimeWorkspaceRoots": [cwd],
                "instructionSources": [],
                "approvalPolicy": params.get("approvalPolicy") or "on-request",
                "approvalsReviewer": "user",
                "sandbox": {"type": "readOnly", "networkAccess": False},
                "activePermissionProfile": {"id": ":read-only", "extends": None},
                "reasoningEffort": None,
                "multiAgentMode": "explicitRequestOnly",
            },
        )

    def _thread_or_error(self, req_id: Any, thread_id: Any) -> _Thread | None:
        thread = self.threads.get(thread_id)
        if thread is None:
            self.error(req_id, f"thread not found: {thread_id}")
        return thread

    def announce(self, thread: _Thread) -> None:
        """``thread/started``, once: observed before the first inject_items reply or turn."""
        if not thread.announced:
            thread.announced = True
            self.notify("thread/started", {"thread": thread.body})

    def on_inject_items(self, req_id: Any, params: Mapping[str, Any]) -> None:
        """Append raw Responses items to the thread's model-visible history (reply ``{}``).

        Observed with 0.169.0: validation errors are -32600 with serde's wording; an item of
        an unknown type and a ``system`` message are accepted but never reach the model;
        items injected while a turn runs make the model sample once more in that turn.
        """
        for field in ("threadId", "items"):
            if field not in params:
                self.error(req_id, f"Invalid request: missing field `{field}`")
                return
        thread_id = str(params["threadId"])
        bad = next(
            (
                n
                for n, c in enumerate(thread_id.removeprefix("urn:uuid:"), 1)
                if c not in _THREAD_ID_CHARS
            ),
            None,
        )
        if bad is not None:
            found = thread_id.removeprefix("urn:uuid:")[bad - 1]
            self.error(
                req_id,
                "invalid thread id: invalid character: expected an optional prefix of "
                f"`urn:uuid:` followed by [0-9a-fA-F-], found `{found}` at {bad}",
            )
            return
        thread = self._thread_or_error(req_id, thread_id)
        if thread is None:
            return
        items = params["items"]
        if not isinstance(items, list):
            self.error(
                req_id, f"Invalid request: invalid type: {_serde_kind(items)}, expected a sequence"
            )
            return
        if not items:
            self.error(req_id, "items must not be empty")
            return
        for n, item in enumerate(items):
            problem = _item_problem(item)
            if problem is not None:
                self.error(req_id, f"items[{n}] is not a valid response item: {problem}")
                return
        self.announce(thread)
        visible = [dict(item) for item in items if _model_visible(item)]
        active = thread.active
        if active is not None:
            active.injected.extend(visible)
        else:
            thread.history.extend(visible)
        self.reply(req_id, {})

    def on_turn_start(self, req_id: Any, params: Mapping[str, Any]) -> None:
        thread = self._thread_or_error(req_id, params.get("threadId"))
        if thread is None:
            return
        items = list(params.get("input") or [])
        active = thread.active
        if active is not None:
            # Observed: turn/start on a busy thread steers the running turn: the reply names
            # the running turn and the new input shows up as a userMessage item in it.
            self.reply(req_id, {"turn": _turn_obj(active.id, "inProgress", None)})
            active.steers.append(items)
            return
        turn = _Turn(self._ids.new(), int(time.time()))
        runner = _TurnRunner(self, thread, turn, items, req_id, not thread.announced)
        thread.active = turn
        thread.announced = True
        thread.turns += 1
        threading.Thread(target=runner.run, name=f"turn-{turn.id}", daemon=True).start()

    def on_turn_interrupt(self, req_id: Any, params: Mapping[str, Any]) -> None:
        thread = self._thread_or_error(req_id, params.get("threadId"))
        if thread is None:
            return
        active = thread.active
        if active is None:
            self.error(req_id, "no active turn to interrupt")
        elif active.id != params.get("turnId"):
            self.error(
                req_id, f"expected active turn id {params.get('turnId')} but found {active.id}"
            )
        else:
            self.reply(req_id, {})
            active.interrupted.set()


def _turn_obj(
    turn_id: str,
    status: str,
    started_at: int | None,
    items: Sequence[Mapping[str, Any]] = (),
    error: Mapping[str, Any] | None = None,
    duration_ms: int | None = None,
    items_view: str = "notLoaded",
) -> dict[str, Any]:
    done = status not in ("inProgress",)
    return {
        "id": turn_id,
        "rootTurnId": turn_id,
        "items": list(items),
        "itemsView": items_view,
        "status": status,
        "error": error,
        "startedAt": started_at,
        "completedAt": int(time.time()) if done else None,
        "durationMs": duration_ms,
    }


def _serde_kind(value: Any) -> str:
    """How serde names an unexpected JSON value in its error messages."""
    if isinstance(value, bool):
        return f"boolean `{'true' if value else 'false'}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        return f"floating point `{value}`"
    if isinstance(value, str):
        return f"string {json.dumps(value)}"
    if value is None:
        return "null"
    return "sequence" if isinstance(value, list) else "map"


def _item_problem(item: Any) -> str | None:
    """Why ``item`` is not a ResponseItem (the real one's wording), or None."""
    if not isinstance(item, dict):
        return f"invalid type: {_serde_kind(item)}, expected internally tagged enum ResponseItem"
    if "type" not in item:
        return "missing field `type`"
    for field in _ITEM_FIELDS.get(str(item["type"]), ()):
        if field not in item:
            return f"missing field `{field}`"
    if item["type"] == "message" and not isinstance(item["content"], list):
        return f"invalid type: {_serde_kind(item['content'])}, expected a sequence"
    return None


def _model_visible(item: Mapping[str, Any]) -> bool:
    """Observed: unknown item types and system messages are accepted, then dropped."""
    if item.get("type") not in _ITEM_FIELDS:
        return False
    return not (item.get("type") == "message" and item.get("role") == "system")


def _history_user_item(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A turn's input as the Responses user message the model receives."""
    content: list[dict[str, Any]] = []
    for item in items:
        if item.get("type") == "text":
            content.append({"type": "input_text", "text": str(item.get("text", ""))})
        elif item.get("type") in ("image", "localImage"):
            content.append({"type": "input_image", "image_url": str(item.get("url", ""))})
    return {"type": "message", "role": "user", "content": content}


def render_history(history: Sequence[Mapping[str, Any]]) -> str:
    """The model-visible items as text blocks (what echo mode shows).

    A ``function_call_output`` without its ``function_call`` is left out, as the real one
    leaves it out of the model request (observed).
    """
    calls = {i.get("call_id") for i in history if i.get("type") == "function_call"}
    blocks: list[str] = []
    for item in history:
        kind = item.get("type")
        if kind == "message":
            lines = []
            for part in item.get("content") or []:
                if not isinstance(part, Mapping):
                    continue
                if part.get("type") in ("input_image", "image"):
                    lines.append("[image]")
                elif "text" in part:
                    lines.append(str(part["text"]))
            blocks.append(f"[{item.get('role')}]\n" + "\n".join(lines))
        elif kind in ("function_call", "custom_tool_call"):
            args = item.get("arguments", item.get("input"))
            blocks.append(f"[function_call {item.get('name')} {args}]")
        elif kind in ("function_call_output", "custom_tool_call_output"):
            if item.get("call_id") in calls:
                blocks.append(f"[function_call_output {item.get('call_id')}]\n{item.get('output')}")
        elif kind == "reasoning":
            summary = [
                str(s.get("text", "")) for s in item.get("summary") or [] if isinstance(s, Mapping)
            ]
            blocks.append("[reasoning]\n" + "\n".join(summary))
    return "\n\n".join(blocks)


def _user_content(items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    content: list[dict[str, Any]] = []
    for item in items:
        if item.get("type") == "text":
            content.append(
                {
                    "type": "text",
                    "text": item.get("text", ""),
                    "text_elements": list(item.get("text_elements") or []),
                }
            )
        else:
            content.append(dict(item))
    return content


class _Interrupted(Exception):
    pass


class _TurnRunner:
    """Plays one turn of a thread, in its own Python thread."""

    def __init__(
        self,
        server: FakeCodex,
        thread: _Thread,
        turn: _Turn,
        items: list[Mapping[str, Any]],
        req_id: Any,
        first: bool,
    ) -> None:
        self.s = server
        self.thread = thread
        self.turn = turn
        self.items = items
        self.req_id = req_id
        self.first = first
        self.t0 = time.monotonic()
        text = "\n".join(str(i.get("text", "")) for i in items if i.get("type") == "text")
        #: the turn/start request was answered
        self.replied = False
        #: why the turn's directives cannot be played (the turn then fails as a bad request)
        self.refusal: str | None = None
        try:
            self.scenario, self.prompt = server.book.for_turn(text)
        except DirectiveError as exc:
            self.scenario, self.prompt = server.book.default, text
            self.refusal = str(exc)
        self.ignore_interrupt = self.scenario.ignore_interrupt
        #: index of this turn's user message in the thread's history
        self.history_at = len(thread.history)

    # -- helpers

    def ids(self) -> dict[str, str]:
        return {"threadId": self.thread.id, "turnId": self.turn.id}

    def wait(self, seconds: float) -> None:
        """Sleep, but wake up (and stop the turn) when interrupted."""
        if self.ignore_interrupt:
            time.sleep(seconds)
        elif self.turn.interrupted.wait(seconds):
            raise _Interrupted

    def wait_forever(self) -> None:
        while True:
            self.wait(3600)

    def wait_reply(self, pending: _Pending) -> Mapping[str, Any]:
        while not pending.done.wait(0.05):
            if self.turn.interrupted.is_set() and not self.ignore_interrupt:
                raise _Interrupted
        return pending.reply

    def status(self, status: Mapping[str, Any]) -> None:
        self.s.notify("thread/status/changed", {"threadId": self.thread.id, "status": status})

    def item_started(self, item: Mapping[str, Any], at: int) -> None:
        self.s.notify(
            "item/started",
            {
                "item": {**item, "startedAtMs": at, "completedAtMs": None},
                **self.ids(),
                "startedAtMs": at,
            },
        )

    def item_completed(self, item: Mapping[str, Any], at: int) -> dict[str, Any]:
        done = {**item, "startedAtMs": at, "completedAtMs": _now_ms()}
        self.s.notify(
            "item/completed",
            {
                **{"item": done},
                **self.ids(),
                "contentTokenCount": None,
                "completedAtMs": done["completedAtMs"],
            },
        )
        return done

    def steers(self) -> None:
        while self.turn.steers:
            items = self.turn.steers.pop(0)
            self.thread.history.append(_history_user_item(items))
            self.user_message(items)

    def user_message(self, items: Sequence[Mapping[str, Any]]) -> None:
        item = {
            "type": "userMessage",
            "id": self.s._ids.new(),
            "clientId": None,
            "content": _user_content(items),
        }
        at = _now_ms()
        self.item_started(item, at)
        self.item_completed(item, at)

    def usage(self, inp: int, out: int, reasoning: int = 0) -> None:
        sc = self.scenario
        total = self.thread.total
        total["input"] += inp
        total["cached"] += sc.cache_read_input_tokens
        total["output"] += out
        total["reasoning"] += reasoning

        def breakdown(i: int, c: int, o: int, r: int) -> dict[str, int]:
            return {
                "totalTokens": i + o,
                "inputTokens": i,
                "cachedInputTokens": c,
                "cacheWriteInputTokens": 0,
                "outputTokens": o,
                "reasoningOutputTokens": r,
            }

        self.s.notify(
            "thread/tokenUsage/updated",
            {
                **self.ids(),
                "tokenUsage": {
                    "total": breakdown(
                        total["input"], total["cached"], total["output"], total["reasoning"]
                    ),
                    "last": breakdown(inp, sc.cache_read_input_tokens, out, reasoning),
                    "modelContextWindow": _CONTEXT_WINDOW,
                },
            },
        )
        self.s.notify(
            "account/rateLimits/updated",
            {
                "rateLimits": {
                    "limitId": "codex",
                    "limitName": None,
                    "normalModelSlug": None,
                    "primary": None,
                    "secondary": None,
                    "credits": None,
                    "individualLimit": None,
                    "spendControlReached": None,
                    "planType": None,
                    "rateLimitReachedType": None,
                }
            },
        )

    def finish(
        self,
        status: str,
        items: Sequence[Mapping[str, Any]] = (),
        error: Mapping[str, Any] | None = None,
    ) -> None:
        self.take_injected()
        self.thread.active = None
        if self.scenario.rate_limits is not None:
            self.s.notify("account/rateLimits/updated", {"rateLimits": self.scenario.rate_limits})
        duration = int((time.monotonic() - self.t0) * 1000)
        view = "summary" if items else "notLoaded"
        self.s.notify(
            "turn/completed",
            {
                "threadId": self.thread.id,
                "turn": _turn_obj(
                    self.turn.id, status, self.turn.started_at, items, error, duration, view
                ),
            },
        )

    # -- the turn

    def run(self) -> None:
        try:
            self._run()
        except _Interrupted:
            # Observed: reply {} (sent by the reader), then idle, then turn/completed
            # interrupted with no items and no item/completed for the partial message.
            self.status({"type": "idle"})
            self.finish("interrupted")
        except Exception as exc:  # a bug in the fake: fail the turn, keep the process
            traceback.print_exc(file=sys.stderr)
            sys.stderr.flush()
            message = f"fake codex: {type(exc).__name__}: {exc}"[:2000]
            if not self.replied:
                self.thread.active = None
                self.s.error(self.req_id, message, -32603)
            elif self.thread.active is self.turn:
                self.fail_with("other", message)

    def _run(self) -> None:
        sc, s = self.scenario, self.s
        if self.first:
            s.notify("thread/started", {"thread": self.thread.body})
        model = self.thread.body["model"]
        if not model.startswith(("gpt-5", "o3", "o4")):
            s.notify(
                "warning",
                {
                    "threadId": self.thread.id,
                    "message": f"Model metadata for `{model}` not found. Defaulting to fallback "
                    "metadata; this can degrade performance and cause issues.",
                },
            )
        self.status({"type": "active", "activeFlags": []})
        s.notify(
            "turn/started",
            {
                "threadId": self.thread.id,
                "turn": _turn_obj(self.turn.id, "inProgress", self.turn.started_at),
            },
        )
        s.reply(self.req_id, {"turn": _turn_obj(self.turn.id, "inProgress", None)})
        self.replied = True
        if sc.garbage_line:
            s.raw("this is not JSON: fake codex garbage line")
        if sc.stderr:
            print(sc.stderr, file=sys.stderr, flush=True)
        self.history_at = len(self.thread.history)
        self.thread.history.append(_history_user_item(self.items))
        self.user_message(self.items)

        if self.refusal is not None:
            # guess (not observed): what an upstream 400 would look like; clibridge maps
            # badRequest to a 400 for the client, the one whose directive was bad
            self.fail_with("badRequest", self.refusal)
            return
        if sc.api_error is not None or sc.error_notification is not None:
            self.fail()
            return
        if sc.approval_request:
            self.approval()
        if sc.unknown_server_request:
            pending = s.request(
                _UNKNOWN_SERVER_METHOD, {**self.ids(), "note": "made up by the fake"}
            )
            self.wait_reply(pending)  # any answer, even an error, lets the turn go on
        text, seen = self.answer_for_view()
        inp, out = sc.usage_for(seen, text)
        if sc.tool_calls:
            self.tool_calls(sc.tool_calls, inp)
        reasoning_tokens = 0
        if sc.thinking:
            reasoning_tokens = max(1, len(sc.thinking) // 4)
            self.reasoning(sc.thinking)
        self.steers()
        self.wait(sc.first_delay)
        done = [self.agent_message("msg_1", text, first=True)]
        self.usage(inp, out, reasoning_tokens)
        n = 1
        while self.take_injected():
            # Observed: items injected mid-turn make the model sample once more in the turn.
            n += 1
            text, seen = self.answer_for_view()
            more_in, more_out = sc.usage_for(seen, text)
            done.append(self.agent_message(f"msg_{n}", text, first=False))
            self.usage(more_in, more_out)
        self.status({"type": "idle"})
        self.finish("completed", done)

    def take_injected(self) -> bool:
        """Move items injected during the turn into the history; True if there were any."""
        items, self.turn.injected = self.turn.injected, []
        self.thread.history.extend(items)
        return bool(items)

    def answer_for_view(self) -> tuple[str, str]:
        """``(reply, what the model saw)``: the prompt, after any earlier history."""
        earlier = render_history(list(self.thread.history[: self.history_at]))
        later = render_history(list(self.thread.history[self.history_at + 1 :]))
        seen = f"{earlier}\n\n[user]\n{self.prompt}" if earlier else self.prompt
        if later:
            seen += "\n\n" + later
        return self.scenario.reply_text(seen), seen

    def agent_message(self, msg_id: str, text: str, *, first: bool) -> dict[str, Any]:
        sc, s = self.scenario, self.s
        item = {
            "type": "agentMessage",
            "moderation": None,
            "id": msg_id,
            "text": "",
            "phase": None,
            "memoryCitation": None,
            "delivery": None,
            "questions": None,
        }
        at = _now_ms()
        self.item_started(item, at)
        for n, chunk in enumerate(sc.chunks(text)):
            if n:
                self.wait(sc.chunk_delay)
            s.notify("item/agentMessage/delta", {**self.ids(), "itemId": msg_id, "delta": chunk})
            if first and n == 0 and sc.crash_mid_turn:
                print("fake codex: crashing mid-turn as scripted", file=sys.stderr, flush=True)
                os._exit(sc.crash_exit_code)
            if first and n == 0 and sc.hang_mid_turn:
                self.wait_forever()
        self.steers()
        self.thread.history.append(
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text}],
            }
        )
        return self.item_completed({**item, "text": text}, at)

    def reasoning(self, thinking: str) -> None:
        item_id = "rs_1"
        at = _now_ms()
        self.item_started({"type": "reasoning", "id": item_id, "summary": [], "content": []}, at)
        self.s.notify(
            "item/reasoning/summaryPartAdded", {**self.ids(), "itemId": item_id, "summaryIndex": 0}
        )
        for n, chunk in enumerate(self.scenario.chunks(thinking)):
            if n:
                self.wait(self.scenario.chunk_delay)
            self.s.notify(
                "item/reasoning/summaryTextDelta",
                {**self.ids(), "itemId": item_id, "delta": chunk, "summaryIndex": 0},
            )
        self.item_completed(
            {"type": "reasoning", "id": item_id, "summary": [thinking], "content": []}, at
        )

    def tool_calls(self, calls: Sequence[FakeToolCall], inp: int) -> None:
        """All calls go out at once (the real CLI sends parallel calls before any reply)."""
        waiting: list[tuple[dict[str, Any], int, _Pending]] = []
        for n, call in enumerate(calls, start=1):
            if call.name not in self.thread.tools:
                print(
                    f"fake codex: tool {call.name!r} not declared by the thread; skipped",
                    file=sys.stderr,
                    flush=True,
                )
                continue
            call_id = f"call_{n}"
            namespace = self.thread.tools[call.name]
            item = {
                "type": "dynamicToolCall",
                "id": call_id,
                "namespace": namespace,
                "tool": call.name,
                "arguments": call.arguments,
                "status": "inProgress",
                "contentItems": None,
                "success": None,
                "durationMs": None,
            }
            at = _now_ms()
            self.item_started(item, at)
            pending = self.s.request(
                "item/tool/call",
                {
                    **self.ids(),
                    "callId": call_id,
                    "namespace": namespace,
                    "tool": call.name,
                    "arguments": call.arguments,
                },
            )
            waiting.append((item, at, pending))
        for item, at, pending in waiting:
            reply = self.wait_reply(pending)
            result = _result(reply)
            success = bool(result.get("success", "error" not in reply))
            self.item_completed(
                {
                    **item,
                    "status": "completed" if success else "failed",
                    "contentItems": list(result.get("contentItems") or []),
                    "success": success,
                    "durationMs": _now_ms() - at,
                },
                at,
            )
        if waiting:
            args_len = sum(len(json.dumps(c.arguments)) for c in calls)
            self.usage(inp, max(1, args_len // 4))

    def approval(self) -> None:
        item_id = "call_approval_1"
        command = "/bin/bash -lc 'touch fake-approval'"
        cwd = self.thread.body["cwd"]
        actions = [{"type": "unknown", "command": "touch fake-approval"}]
        item = {
            "type": "commandExecution",
            "id": item_id,
            "pluginId": None,
            "scriptPath": None,
            "command": command,
            "cwd": cwd,
            "processId": None,
            "source": "agent",
            "status": "inProgress",
            "commandActions": actions,
            "aggregatedOutput": None,
            "exitCode": None,
            "durationMs": None,
        }
        at = _now_ms()
        self.status({"type": "active", "activeFlags": ["waitingOnApproval"]})
        self.item_started(item, at)
        pending = self.s.request(
            "item/commandExecution/requestApproval",
            {
                "kind": "command",
                **self.ids(),
                "itemId": item_id,
                "startedAtMs": at,
                "environmentId": "local",
                "reason": "fake codex wants to write a file",
                "command": command,
                "cwd": cwd,
                "commandActions": actions,
                "proposedExecpolicyAmendment": ["touch", "fake-approval"],
                "availableDecisions": [
                    "accept",
                    {
                        "acceptWithExecpolicyAmendment": {
                            "execpolicy_amendment": ["touch", "fake-approval"]
                        }
                    },
                    "cancel",
                ],
            },
        )
        reply = self.wait_reply(pending)
        result = _result(reply)
        decision = result.get("decision")
        self.s.notify(
            "serverRequest/resolved", {"threadId": self.thread.id, "requestId": pending_id(reply)}
        )
        accepted = decision == "accept" or isinstance(decision, dict)
        # guess: an accepted command "ran" with no output and exit code 0 (never run for real)
        self.item_completed(
            {
                **item,
                "status": "completed" if accepted else "declined",
                "exitCode": 0 if accepted else None,
                "aggregatedOutput": "" if accepted else None,
            },
            at,
        )
        self.status({"type": "active", "activeFlags": []})

    def fail(self) -> None:
        sc = self.scenario
        if sc.error_notification is not None:
            head, sep, rest = sc.error_notification.partition(":")
            info: Any = head if sep and head in _ERROR_INFOS else "other"
            message = rest.strip() if sep and head in _ERROR_INFOS else sc.error_notification
        else:
            info, message = _api_error(sc)
            for attempt in range(1, sc.api_retries + 1):
                # guess: retries are reported like the real CLI's stream reconnects
                err = {
                    "message": f"Reconnecting... {attempt}/{sc.api_retries}",
                    "codexErrorInfo": {
                        "responseStreamConnectionFailed": {"httpStatusCode": sc.api_error}
                    },
                    "additionalDetails": None,
                    "misalignment": None,
                }
                self.s.notify("error", {"error": err, "willRetry": True, **self.ids()})
                self.wait(sc.retry_delay_ms / 1000)
            if sc.api_error_then == "hang":
                self.wait_forever()
        self.fail_with(info, message)

    def fail_with(self, info: Any, message: str) -> None:
        """The turn fails for good: an ``error`` notification, then a failed turn."""
        err = {
            "message": message,
            "codexErrorInfo": info,
            "additionalDetails": None,
            "misalignment": None,
        }
        self.status({"type": "systemError"})
        self.s.notify("error", {"error": err, "willRetry": False, **self.ids()})
        self.finish("failed", error=err)


def pending_id(reply: Mapping[str, Any]) -> Any:
    """The id of the server request a client reply answers."""
    return reply.get("id")


def _result(reply: Mapping[str, Any]) -> dict[str, Any]:
    result = reply.get("result")
    return result if isinstance(result, dict) else {}


_REASONS = {
    401: "Unauthorized",
    403: "Forbidden",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    529: "Site Overloaded",
}


def _api_error(sc: Scenario) -> tuple[Any, str]:
    """The codexErrorInfo and message the real CLI reported for an upstream HTTP status."""
    status = sc.api_error or 500
    reason = _REASONS.get(status, "Error")
    if status in (429,) or status >= 500:
        # observed for 429 (with retries exhausted); guess for 5xx, which it retries too
        return (
            {"responseTooManyFailedAttempts": {"httpStatusCode": status}},
            f"exceeded retry limit, last status: {status} {reason}",
        )
    # observed for 401
    return (
        {"httpConnectionFailed": {"httpStatusCode": status}},
        f"unexpected status {status} {reason}: fake upstream error, url: http://127.0.0.1/v1/responses",
    )


# ---------------------------------------------------------------------- process


def parse_argv(argv: Sequence[str]) -> tuple[str | None, dict[str, str]]:
    """``(subcommand, -c overrides)``; raw TOML values are kept, quotes stripped from strings."""
    config: dict[str, str] = {}
    sub: str | None = None
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg in ("-c", "--config") and args:
            key, _, value = args.pop(0).partition("=")
            config[key.strip()] = value.strip().strip('"')
        elif arg.startswith("--config="):
            key, _, value = arg.removeprefix("--config=").partition("=")
            config[key.strip()] = value.strip().strip('"')
        elif arg in ("--enable", "--disable") and args:
            args.pop(0)
        elif sub is None and not arg.startswith("-"):
            sub = arg
        elif arg in ("--version", "-V"):
            sub = "--version"
    return sub, config


def _login_status() -> int:
    """``codex login status`` as the real CLI answers it (on stderr; exit 1 when logged
    out): logged in when ``$CODEX_HOME/auth.json`` exists, unless the scenario's upstream
    refuses the login (``api_error`` 401: the fake's model of an expired login)."""
    home = os.environ.get("CODEX_HOME") or os.path.expanduser("~/.codex")
    try:
        expired = load_book().default.api_error == 401
    except (OSError, ValueError):
        expired = False
    if os.path.isfile(os.path.join(home, "auth.json")) and not expired:
        print("Logged in using ChatGPT", file=sys.stderr)
        return 0
    print("Not logged in", file=sys.stderr)
    return 1


def _login() -> str | None:
    """Who this process is logged in as: the ``tokens.account_id`` of the ``auth.json``
    in its CODEX_HOME (where ``codex login`` keeps it), or None."""
    home = Path(os.environ.get("CODEX_HOME") or Path.home() / ".codex")
    try:
        auth = json.loads((home / "auth.json").read_text())
    except (OSError, ValueError):
        return None
    tokens = auth.get("tokens") if isinstance(auth, dict) else None
    account = tokens.get("account_id") if isinstance(tokens, dict) else None
    return account if isinstance(account, str) else None


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: ``clibridge-fake-codex app-server [-c key=value ...]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    sub, config = parse_argv(argv)
    if sub == "--version":
        print(f"codex-cli {VERSION}")
        return 0
    if sub == "login" and argv[1:2] == ["status"]:
        return _login_status()
    if sub != "app-server":
        print("fake codex: only `codex app-server [-c key=value ...]` is faked", file=sys.stderr)
        return 2
    try:
        # the upstream answers each login its own way (a scenario's "logins")
        book = load_book(login=_login())
    except (OSError, ValueError) as exc:  # DirectiveError is a ValueError
        print(f"fake codex: bad scenario file: {exc}", file=sys.stderr)
        return 2
    record_path = os.environ.get(RECORD_ENV)
    record_lock = threading.Lock()

    def record(fact: Mapping[str, Any]) -> None:
        if record_path:
            with record_lock, open(record_path, "a") as f:
                f.write(json.dumps(fact) + "\n")

    record(
        {
            "argv": [sys.argv[0], *argv],
            "env": dict(os.environ),
            "cwd": os.getcwd(),
            "pid": os.getpid(),
        }
    )
    boot = book.default
    if boot.spawn_grandchild:
        # Same process group on purpose: teardown must kill the group, not just us.
        child = subprocess.Popen(["sleep", "3600"], stdin=subprocess.DEVNULL)
        record({"grandchild_pid": child.pid})
        print(f"fake codex: grandchild pid {child.pid}", file=sys.stderr, flush=True)
    if boot.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if boot.crash_at_boot:
        print("fake codex: crashing at boot as scripted", file=sys.stderr, flush=True)
        return boot.crash_exit_code
    if boot.hang_at_boot:
        while True:
            time.sleep(3600)
    if boot.boot_delay:
        time.sleep(boot.boot_delay)
    server = FakeCodex(book, config, sys.stdout, record)
    for line in sys.stdin:
        if line.strip():
            server.handle_line(line)
    # stdin closed: the real app-server exits at once (~40 ms), whatever runs.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
