"""A deterministic fake of the ``claude`` CLI (Claude Code 2.1.197), scripted by scenarios.

Theory of operation
-------------------
The fake speaks exactly what the real CLI printed in the recorded transcripts
(``tests/testing/samples``), so a driver cannot tell
the two apart on the paths clibridge uses:

* **Worker mode** (``-p --input-format stream-json --output-format stream-json --verbose
  [--include-partial-messages]``): one JSON object per stdin line in, one per stdout line
  out. A reader thread feeds stdin lines into a queue; the main thread owns stdout and
  runs the protocol. Every wait inside a turn (deltas with delays, retries, an MCP reply
  the host has not sent yet) drains that queue, so ``interrupt``, ``set_model``,
  ``mcp_status`` and MCP replies are handled while a turn streams. ``user`` lines that
  arrive during a turn are merged into the next turn, as the real CLI does.
* **One-shot** (``-p "prompt" [--output-format text|json|stream-json --verbose]``).

What the real CLI does that the fake reproduces (observed, see the samples):

* ``mcp_status`` answers ``{"mcpServers": [...]}`` once booted, listing each SDK server
  whose ``tools/list`` was answered, with its tools (``[]`` before that).
* The CLI times out its own MCP requests after 30 s (``mcp_timeout`` in the process
  scenario shortens it): it sends ``notifications/cancelled`` (``McpError: MCP error
  -32001: Request timed out``), ignores a late answer, and a server whose ``tools/list``
  timed out stays connected with no tools (observed, FINDINGS.md).
* ``mcp_set_servers`` sets the dynamic servers: one it no longer names is dropped, one it
  adds (``"type": "sdk"``) is answered first and then connected anew (``initialize``,
  ``notifications/initialized``, ``tools/list``).
* A model call of a tool no server lists is rejected by the CLI itself: a ``user``
  tool_result ``<tool_use_error>Error: No such tool available: NAME</tool_use_error>``
  with ``is_error``, and the turn goes on.
* SDK MCP servers named in ``--mcp-config`` (``"type": "sdk"``) are connected at boot
  *through the host*: ``initialize`` (JSON-RPC id 0) is sent before anything is answered,
  then ``notifications/initialized`` and ``tools/list`` (id 1). ``tools/call`` ids go on
  from 2 with ``_meta.progressToken`` equal to the id.
* A model message streams block by block; the aggregate ``assistant`` line for a block
  comes *before* its ``content_block_stop``, one ``assistant`` line per block.
* Parallel tool calls: the first ``tools/call`` is sent as soon as its block is complete;
  the next ones only after the previous one was answered (after ``message_stop``).
  Then one ``user`` tool_result line per call, then the next model message.
* The first ``initialize`` sets the system prompt; a second one is answered with success
  but does **not** change it (nor does ``/clear``).
* ``/clear`` starts a new session id and prints ``system/init``, a synthetic
  ``assistant`` "(no content)" and a ``result`` with ``num_turns`` 0.
* Upstream errors: ``system/api_retry`` events, then a synthetic ``assistant`` with an
  ``error`` field and a ``result`` with subtype ``success``, ``is_error`` true and
  ``api_error_status``. The failed prompt stays in the history and is merged into the
  next prompt.
* ``interrupt``: ``control_response`` then ``[Request interrupted by user]`` and a
  ``result`` ``error_during_execution``; with a ``tools/call`` pending, first an MCP
  ``notifications/cancelled``, then a rejected tool_result line and
  ``[Request interrupted by user for tool use]``.

Directives (``@fake ...`` lines, :mod:`.scenario`) are read from the newest user turn
only: a ``user`` line (or the lines merged into one turn) minus its quoted history (the
``<conversation_history>`` clibridge renders when it replays a conversation into a fresh
worker) and minus tool results. A directive in an earlier turn never fires again.

The start path imports only the standard library, so the fake answers ``mcp_status`` in a
few tens of ms; the scenario module (attrs, cattrs) is imported in the background meanwhile,
so a first turn is as fast as the next.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from .scenario import FakeToolCall, Scenario, ScenarioBook

VERSION = "2.1.197"
DEFAULT_MODEL = "claude-sonnet-4-5"
BUILTIN_TOOLS = [
    "Task",
    "Bash",
    "CronCreate",
    "CronDelete",
    "CronList",
    "Edit",
    "EnterWorktree",
    "ExitWorktree",
    "NotebookEdit",
    "Read",
    "ReportFindings",
    "ScheduleWakeup",
    "SendMessage",
    "Skill",
    "TaskCreate",
    "TaskGet",
    "TaskList",
    "TaskOutput",
    "TaskStop",
    "TaskUpdate",
    "WebFetch",
    "WebSearch",
    "Workflow",
    "Write",
]
SLASH_COMMANDS = ["clear", "compact", "config", "context", "init", "review", "usage"]
AGENTS = ["claude", "Explore", "general-purpose", "Plan", "statusline-setup"]
#: flags of the real CLI that take a value (the others are switches)
VALUE_FLAGS = frozenset(
    [
        "--input-format",
        "--output-format",
        "--model",
        "--tools",
        "--mcp-config",
        "--allowedTools",
        "--allowed-tools",
        "--disallowedTools",
        "--disallowed-tools",
        "--system-prompt",
        "--append-system-prompt",
        "--permission-mode",
        "--settings",
        "--setting-sources",
        "--max-turns",
        "--resume",
        "-r",
        "--session-id",
        "--add-dir",
        "--fallback-model",
        "--agents",
        "--betas",
        "--debug-file",
        "--max-budget-usd",
        "--permission-prompt-tool",
        "--json-schema",
        "--plugin-dir",
        "--agent",
        "--system-prompt-file",
        "--append-system-prompt-file",
        "--effort",
    ]
)
#: switches of the real CLI the fake accepts without acting on them
KNOWN_SWITCHES = frozenset(
    [
        "--no-session-persistence",
        "--strict-mcp-config",
        "--dangerously-skip-permissions",
        "--allow-dangerously-skip-permissions",
        "--continue",
        "-c",
        "--replay-user-messages",
        "--bare",
        "--ide",
        "--debug",
        "-d",
        "--mcp-debug",
        "--fork-session",
        "--disable-slash-commands",
    ]
)
#: flags that take a list of values up to the next flag
LIST_FLAGS = frozenset(
    [
        "--allowedTools",
        "--allowed-tools",
        "--disallowedTools",
        "--disallowed-tools",
        "--add-dir",
        "--mcp-config",
        "--betas",
        "--plugin-dir",
    ]
)
FLAG_ALIASES = {
    "--allowed-tools": "--allowedTools",
    "--disallowed-tools": "--disallowedTools",
    "-r": "--resume",
}
API_ERRORS = {
    # guess (no 400 was recorded): the upstream's JSON error body after the status
    400: ("invalid_request", "API Error: 400 {detail}"),
    401: ("authentication_failed", "Failed to authenticate. API Error: 401 {detail}"),
    403: ("authentication_failed", "Failed to authenticate. API Error: 403 {detail}"),
    429: ("rate_limit", "API Error: Request rejected (429) · {detail}"),
    500: (
        "server_error",
        "API Error: 500 {detail}. This is a server-side issue, usually temporary — try again in a moment.",
    ),
    529: (
        "server_error",
        "API Error: 529 {detail}. This is a server-side issue, usually temporary — try again in a moment.",
    ),
}
RETRY_ERROR_NAMES = {401: "authentication_failed", 429: "rate_limit", 529: "overloaded"}
ZERO_USAGE_EXTRA: dict[str, Any] = {
    "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 0},
    "service_tier": "standard",
    "cache_creation": {"ephemeral_1h_input_tokens": 0, "ephemeral_5m_input_tokens": 0},
    "inference_geo": "",
    "iterations": [],
    "speed": "standard",
}
_EOF = object()


class Interrupted(Exception):
    """The host interrupted the running turn (raised at the fake's next wait)."""


class Exit(Exception):
    """Leave the process with this status once the current line is out."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


# ---------------------------------------------------------------- command line


class Args:
    """The part of the real CLI's command line the fake understands; the rest is kept."""

    def __init__(self, argv: list[str]) -> None:
        self.print_mode = False
        self.verbose = False
        self.partial = False
        self.values: dict[str, list[str]] = {}
        self.unknown: list[str] = []
        self.switches: list[str] = []
        self.positional: list[str] = []
        i = 0
        while i < len(argv):
            arg = argv[i]
            i += 1
            if arg == "--":
                self.positional.extend(argv[i:])
                break
            if not arg.startswith("-") or arg == "-":
                self.positional.append(arg)
                continue
            name, eq, inline = arg.partition("=")
            if name in ("-p", "--print"):
                self.print_mode = True
            elif name == "--verbose":
                self.verbose = True
            elif name == "--include-partial-messages":
                self.partial = True
            elif name in VALUE_FLAGS:
                vals = self.values.setdefault(FLAG_ALIASES.get(name, name), [])
                if eq:
                    vals.append(inline)
                    continue
                if i < len(argv):
                    vals.append(argv[i])
                    i += 1
                while name in LIST_FLAGS and i < len(argv) and not argv[i].startswith("-"):
                    vals.append(argv[i])
                    i += 1
            elif name in KNOWN_SWITCHES:
                self.switches.append(name)
            else:
                # Unknown switches are accepted (and recorded), never fatal: newer drivers
                # may pass flags this fake does not know.
                self.unknown.append(arg)

    def get(self, name: str, default: str | None = None) -> str | None:
        vals = self.values.get(name)
        return vals[-1] if vals else default

    def sdk_servers(self) -> list[str]:
        names = []
        for text in self.values.get("--mcp-config", []):
            try:
                config = json.loads(text)
            except ValueError:
                try:
                    with open(text) as f:
                        config = json.load(f)
                except (OSError, ValueError):
                    continue
            for name, server in (config.get("mcpServers") or {}).items():
                if isinstance(server, dict) and server.get("type") == "sdk":
                    names.append(name)
        return names

    def base_tools(self) -> list[str]:
        tools = self.get("--tools")
        if tools is None:
            return list(BUILTIN_TOOLS)
        return [t for t in tools.replace(",", " ").split() if t and t != "default"]


# ---------------------------------------------------------------- small helpers


def _uuid() -> str:
    return str(uuid.uuid4())


def _now_iso() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def _synthetic_assistant(session_id: str, text: str) -> dict[str, Any]:
    """The CLI's own ``<synthetic>`` assistant message (``/clear``'s ``(no content)``, an
    upstream error's text), as the recorded samples show it."""
    return {
        "type": "assistant",
        "message": {
            "id": _uuid(),
            "container": None,
            "model": "<synthetic>",
            "role": "assistant",
            "stop_details": None,
            "stop_reason": "stop_sequence",
            "stop_sequence": "",
            "type": "message",
            "usage": _usage(0, 0),
            "content": [{"type": "text", "text": text}],
            "context_management": None,
        },
        "parent_tool_use_id": None,
        "session_id": session_id,
        "uuid": _uuid(),
    }


def _usage(inp: int, out: int, cache_read: int = 0) -> dict[str, Any]:
    return {
        "input_tokens": inp,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cache_read,
        "output_tokens": out,
        **ZERO_USAGE_EXTRA,
    }


def _prompt_text(content: Any, *, tool_results: bool = True) -> str:
    """The text of a user message's content; non-text blocks become short markers.

    ``tool_results=False`` leaves ``tool_result`` blocks out: the text scanned for
    directives (a tool result is not a user turn, see :mod:`.scenario`).
    """
    if isinstance(content, str):
        return content
    parts = []
    for block in content if isinstance(content, list) else []:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":
            parts.append(str(block.get("text", "")))
        elif kind == "image":
            parts.append(f"[image:{(block.get('source') or {}).get('media_type', '?')}]")
        elif kind == "tool_result" and tool_results:
            parts.append(
                f"[tool_result:{block.get('tool_use_id')}] {_prompt_text(block.get('content'))}"
            )
    return "\n".join(parts)


def _result_texts(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in content or [] if isinstance(b, dict))


class Recorder:
    """Appends facts to ``CLIBRIDGE_FAKE_RECORD`` (one JSON per line), thread-safe."""

    def __init__(self, path: str | None) -> None:
        self._lock = threading.Lock()
        self._file = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115

    def write(self, fact: dict[str, Any]) -> None:
        if self._file is None:
            return
        line = json.dumps(fact, ensure_ascii=False) + "\n"
        with self._lock:
            self._file.write(line)
            self._file.flush()


# ---------------------------------------------------------------- the worker protocol


class FakeClaude:
    """One fake claude process: its conversation state and its output stream."""

    def __init__(self, args: Args, recorder: Recorder, process_scenario: dict[str, Any]) -> None:
        self.args = args
        self.recorder = recorder
        self.process_scenario = process_scenario
        self.model = args.get("--model") or DEFAULT_MODEL
        self.system_prompt = args.get("--system-prompt")
        self.initialized = False
        self.session_id = _uuid()
        self.cwd = os.getcwd()
        self.inbox: queue.Queue[Any] = queue.Queue()
        self.eof = False
        #: user prompts waiting for a turn: (prompt, the text scanned for directives)
        self.backlog: list[tuple[str, str]] = []
        self.carry: list[str] = []  # prompts of failed turns, merged into the next one
        self.responses: dict[str, Any] = {}  # control_response payloads by request_id
        self.deferred: list[dict[str, Any]] | None = None  # control requests held at boot
        self.servers: dict[str, list[str]] = {}  # connected SDK MCP server -> tool names
        self.listed: set[str] = set()  # servers whose tools/list was answered (or timed out)
        self.mcp_ids: dict[str, int] = {}
        self.in_turn = False
        self.scenario: Scenario | None = None
        self.interrupt_id: str | None = None
        self.model_usage: dict[str, dict[str, Any]] = {}
        self.total_cost = 0.0
        self.tool_seq = 0
        self._book: ScenarioBook | None = None
        #: when set, output lines go here instead of stdout (the one-shot text/json forms)
        self.sink: list[dict[str, Any]] | None = None

    # -- output

    def emit(self, msg: dict[str, Any]) -> None:
        if self.sink is not None:
            self.sink.append(msg)
            return
        data = (json.dumps(msg, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        try:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        except BrokenPipeError:
            os._exit(1)

    def stream(self, event: dict[str, Any], **extra: Any) -> None:
        if self.args.partial:
            self.emit(
                {
                    "type": "stream_event",
                    "event": event,
                    "session_id": self.session_id,
                    "parent_tool_use_id": None,
                    "uuid": _uuid(),
                    **extra,
                }
            )

    def control_success(self, request_id: str, response: dict[str, Any] | None = None) -> None:
        body: dict[str, Any] = {"subtype": "success", "request_id": request_id}
        if response is not None:
            body["response"] = response
        self.emit({"type": "control_response", "response": body})

    # -- input

    def start_reader(self) -> None:
        def read() -> None:
            for raw in sys.stdin.buffer:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if not line.strip():
                    continue
                try:
                    msg: Any = json.loads(line)
                except ValueError:
                    msg = line
                self.recorder.write({"stdin": msg})
                self.inbox.put(msg)
            self.inbox.put(_EOF)

        threading.Thread(target=read, name="stdin", daemon=True).start()

    def pump(self, timeout: float | None) -> bool:
        """Handle at most one inbound line, waiting up to ``timeout``; False on timeout."""
        if self.eof:
            if timeout is None:
                raise Exit(0)  # nothing can ever arrive: a wait forever ends the process
            time.sleep(max(0.0, timeout))
            return False
        try:
            msg = self.inbox.get(timeout=timeout)
        except queue.Empty:
            return False
        if msg is _EOF:
            self.eof = True
        elif isinstance(msg, dict):
            self.handle(msg)
        else:
            # The real CLI dies on a non-JSON stdin line; a fake that survives it would
            # hide a driver bug.
            sys.stderr.write(
                f"Error parsing streaming input line: {str(msg)[:200]}: SyntaxError: JSON Parse error\n"
            )
            sys.stderr.flush()
            raise Exit(1)
        return True

    def pause(self, seconds: float) -> None:
        """Sleep while staying responsive; raises Interrupted when the host interrupts."""
        deadline = time.monotonic() + seconds
        while True:
            self.check_interrupt()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.pump(left)

    def check_interrupt(self) -> None:
        if self.interrupt_id is not None:
            raise Interrupted

    def handle(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "user":
            message = msg.get("message") or {}
            content = message.get("content", "")
            self.backlog.append((_prompt_text(content), _prompt_text(content, tool_results=False)))
        elif kind == "control_response":
            body = msg.get("response") or {}
            self.responses[str(body.get("request_id"))] = body
        elif kind == "control_request":
            if self.deferred is not None:
                self.deferred.append(msg)
            else:
                self.control(msg)
        # assistant lines, keep_alive, control_cancel_request ...: accepted, no answer

    def control(self, msg: dict[str, Any]) -> None:
        request_id = str(msg.get("request_id"))
        request = msg.get("request") or {}
        subtype = request.get("subtype")
        if subtype == "mcp_status":
            self.control_success(
                request_id,
                {
                    "mcpServers": [
                        {
                            "name": name,
                            "status": "connected",
                            "scope": "dynamic",
                            "tools": [{"name": t, "annotations": {}} for t in tools],
                        }
                        for name, tools in self.servers.items()
                        if name in self.listed
                    ]
                },
            )
        elif subtype == "mcp_set_servers":
            self.set_servers(request_id, request.get("servers") or {})
        elif subtype == "initialize":
            delay = float(self.process_scenario.get("initialize_delay") or 0)
            if delay:
                time.sleep(delay)  # a slow initialize: nothing else is answered meanwhile
            self.initialize(request_id, request)
        elif subtype == "set_model":
            self.model = str(request.get("model") or DEFAULT_MODEL)
            self.emit(
                {
                    "type": "user",
                    "message": {
                        "role": "user",
                        "content": f"<local-command-stdout>Set model to {self.model}</local-command-stdout>",
                    },
                    "session_id": self.session_id,
                    "parent_tool_use_id": None,
                    "uuid": _uuid(),
                    "timestamp": _now_iso(),
                    "isReplay": True,
                }
            )
            self.control_success(request_id)
        elif subtype == "interrupt":
            if not self.in_turn:
                self.control_success(request_id)
            elif self.scenario is not None and self.scenario.ignore_interrupt:
                pass
            else:
                self.interrupt_id = request_id
        else:
            self.control_success(request_id)

    def initialize(self, request_id: str, request: dict[str, Any]) -> None:
        # Observed: only the first initialize sets the system prompt; a later one is
        # answered with success and changes nothing about it.
        if not self.initialized and request.get("systemPrompt") is not None:
            self.system_prompt = str(request["systemPrompt"])
        self.initialized = True
        for name in request.get("sdkMcpServers") or []:
            if name not in self.servers:
                self.connect(str(name))
        self.control_success(
            request_id,
            {
                "commands": [
                    {"name": n, "description": "", "argumentHint": ""} for n in SLASH_COMMANDS
                ],
                "agents": [{"name": n, "description": ""} for n in AGENTS],
                "output_style": "default",
                "available_output_styles": ["default"],
                "models": [
                    {"value": "default", "resolvedModel": DEFAULT_MODEL, "displayName": "Default"},
                    {"value": "haiku", "resolvedModel": "claude-haiku-4-5", "displayName": "Haiku"},
                ],
                "account": {
                    "tokenSource": "none",
                    "apiKeySource": "ANTHROPIC_API_KEY",
                    "apiProvider": "firstParty",
                },
                "pid": os.getpid(),
            },
        )

    # -- MCP through the host

    def mcp_send(self, server: str, message: dict[str, Any]) -> str:
        request_id = _uuid()
        self.emit(
            {
                "type": "control_request",
                "request_id": request_id,
                "request": {"subtype": "mcp_message", "server_name": server, "message": message},
            }
        )
        return request_id

    def mcp_call(
        self, server: str, method: str, params: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Send a JSON-RPC request to the host's server and wait for the reply."""
        msg_id = self.mcp_ids.get(server, 0)
        self.mcp_ids[server] = msg_id + 1
        message: dict[str, Any] = {"method": method}
        if params is not None:
            message["params"] = params
        message.update({"jsonrpc": "2.0", "id": msg_id})
        request_id = self.mcp_send(server, message)
        deadline = time.monotonic() + float(self.process_scenario.get("mcp_timeout") or 30.0)
        while request_id not in self.responses:
            self.check_interrupt()
            left = deadline - time.monotonic()
            if left <= 0:
                # Observed: the CLI gives up on its own request and ignores a late answer.
                self.mcp_send(
                    server,
                    {
                        "method": "notifications/cancelled",
                        "params": {
                            "requestId": msg_id,
                            "reason": "McpError: MCP error -32001: Request timed out",
                        },
                        "jsonrpc": "2.0",
                    },
                )
                return {"error": {"code": -32001, "message": "Request timed out"}}
            self.pump(left)
        body = self.responses.pop(request_id)
        reply = (body.get("response") or {}).get("mcp_response") or {}
        if body.get("subtype") == "error":
            return {"error": {"message": str(body.get("error"))}}
        return dict(reply)

    def set_servers(self, request_id: str, servers: dict[str, Any]) -> None:
        wanted = [n for n, c in servers.items() if isinstance(c, dict) and c.get("type") == "sdk"]
        removed = [n for n in self.servers if n not in wanted]
        added = [n for n in wanted if n not in self.servers]
        for name in removed:
            del self.servers[name]
            self.listed.discard(name)
        self.control_success(request_id, {"added": added, "removed": removed, "errors": {}})
        for name in added:
            self.connect(name)

    def connect(self, server: str) -> None:
        self.mcp_ids[server] = 0
        self.mcp_call(server, "initialize", _mcp_init_params())
        self.servers[server] = []
        self.after_connect(server)

    def after_connect(self, server: str) -> None:
        self.mcp_send(server, {"method": "notifications/initialized", "jsonrpc": "2.0"})
        reply = self.mcp_call(server, "tools/list")
        tools = (reply.get("result") or {}).get("tools") or []
        if server in self.servers:  # not dropped meanwhile
            self.servers[server] = [str(t.get("name")) for t in tools if isinstance(t, dict)]
            self.listed.add(server)

    def boot(self) -> None:
        """Connect the SDK servers of --mcp-config, holding control requests until then."""
        servers = self.args.sdk_servers()
        if not servers:
            return
        self.deferred = []
        for server in servers:
            self.mcp_ids[server] = 0
        try:
            for server in servers:
                self.mcp_call(server, "initialize", _mcp_init_params())
                self.servers[server] = []
        finally:
            held, self.deferred = self.deferred, None
        for msg in held:
            self.control(msg)
        for server in servers:
            self.after_connect(server)

    # -- turns

    def _preload_book(self) -> None:
        with contextlib.suppress(Exception):  # a bad book raises again at the turn
            self.book()

    def book(self) -> ScenarioBook:
        if self._book is None:
            from .scenario import load_book

            # the upstream answers each login its own way (a scenario's "logins")
            self._book = load_book(login=os.environ.get("CLAUDE_CODE_OAUTH_TOKEN"))
        return self._book

    def run(self) -> int:
        self.start_reader()
        # Why: the scenario machinery (attrs, cattrs, the book) costs 50-170 ms to import
        # and load; loaded meanwhile, a first turn does not pay it (the real CLI's first
        # turn is as fast as the next), while control requests are answered at once
        threading.Thread(target=self._preload_book, daemon=True).start()
        try:
            self.boot()
            while True:
                if self.backlog:
                    prompt = "\n".join(p for p, _ in self.backlog)
                    scanned = "\n".join(s for _, s in self.backlog)
                    self.backlog.clear()
                    self.turn(prompt, scanned=scanned)
                else:
                    self.pump(None)
        except Exit as exc:
            return exc.code

    def system_init(self) -> None:
        tools = self.args.base_tools()
        if not self._lose_tools():
            for server, names in self.servers.items():
                tools += [f"mcp__{server}__{n}" for n in names]
        self.emit(
            {
                "type": "system",
                "subtype": "init",
                "cwd": self.cwd,
                "session_id": self.session_id,
                "tools": tools,
                "mcp_servers": [{"name": s, "status": "connected"} for s in self.servers],
                "model": self.model,
                "permissionMode": self.args.get("--permission-mode", "default"),
                "slash_commands": SLASH_COMMANDS,
                "apiKeySource": "ANTHROPIC_API_KEY"
                if os.environ.get("ANTHROPIC_API_KEY")
                else "none",
                "claude_code_version": VERSION,
                "output_style": "default",
                "agents": AGENTS,
                "skills": [],
                "plugins": [],
                "analytics_disabled": False,
                "product_feedback_disabled": False,
                "uuid": _uuid(),
                "memory_paths": {
                    "auto": os.path.join(os.path.expanduser("~"), ".claude", "memory/")
                },
                "fast_mode_state": "off",
            }
        )

    def _lose_tools(self) -> bool:
        """``lose_tools_once: PATH`` (process scenario): the first process to remove PATH
        lists no MCP tools in this ``system/init``, like a CLI whose tools/list timed out."""
        path = self.process_scenario.get("lose_tools_once")
        if not path:
            return False
        try:
            os.remove(str(path))
        except FileNotFoundError:
            return False
        return True

    def clear(self) -> None:
        self.session_id = _uuid()
        self.carry.clear()
        self.system_init()
        self.emit(_synthetic_assistant(self.session_id, "(no content)"))
        self.emit(
            {
                "type": "result",
                "subtype": "success",
                "is_error": False,
                "duration_ms": 1,
                "duration_api_ms": 0,
                "num_turns": 0,
                "result": "",
                "stop_reason": None,
                "session_id": self.session_id,
                "total_cost_usd": self.total_cost,
                "usage": _usage(0, 0),
                "modelUsage": self.model_usage,
                "permission_denials": [],
                "fast_mode_state": "off",
                "uuid": _uuid(),
            }
        )

    def turn(self, raw_prompt: str, *, scanned: str | None = None) -> None:
        """One turn; directives come from the newest user turn in ``scanned`` (see
        :func:`.scenario.directive_text`: never from a replayed history or tool results)."""
        if raw_prompt.strip() == "/clear":
            self.clear()
            return
        from .scenario import DirectiveError, Scenario

        started = time.monotonic()
        try:
            scenario, prompt = self.book().for_turn(raw_prompt, scanned=scanned)
        except DirectiveError as exc:
            refused = Turn(self, Scenario(), raw_prompt, started)
            self.system_init()
            refused.status()
            refused.refuse(str(exc))
            return
        prompt = "\n".join([*self.carry, prompt])
        self.scenario = scenario
        self.in_turn = True
        self.interrupt_id = None
        turn = Turn(self, scenario, prompt, started)
        try:
            turn.play()
        except Interrupted:
            turn.interrupted()
        except Exit:
            raise
        except Exception as exc:  # the fake must never die of a turn's input
            turn.failed(exc)
        finally:
            self.in_turn = False
            self.interrupt_id = None
            self.scenario = None


def _mcp_init_params() -> dict[str, Any]:
    return {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {
            "name": "claude-code",
            "title": "Claude Code",
            "version": VERSION,
            "description": "Anthropic's agentic coding tool",
            "websiteUrl": "https://claude.com/claude-code",
        },
    }


class Turn:
    """One user turn: the model messages, tool round trips and the final result."""

    def __init__(self, fake: FakeClaude, scenario: Scenario, prompt: str, started: float) -> None:
        self.fake = fake
        self.sc = scenario
        self.prompt = prompt
        self.started = started
        self.num_turns = 1
        self.usage_in = 0
        self.usage_out = 0
        #: the tools/call in flight: (tool_use id, JSON-RPC id, server, control request id)
        self.pending_tool: tuple[str, int, str, str] | None = None
        self.tool_uses: list[dict[str, Any]] = []
        #: calls of tools no server lists: the CLI rejected them itself
        self.rejected: set[str] = set()

    # -- pieces

    def assistant(self, message_id: str, block: dict[str, Any], **extra: Any) -> None:
        inp, _ = self.tokens
        fake = self.fake
        fake.emit(
            {
                "type": "assistant",
                "message": {
                    "id": message_id,
                    "type": "message",
                    "role": "assistant",
                    "model": fake.model,
                    "content": [block],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": inp, "output_tokens": 1},
                    "context_management": None,
                },
                "parent_tool_use_id": None,
                "session_id": fake.session_id,
                "uuid": _uuid(),
                **extra,
            }
        )

    @property
    def tokens(self) -> tuple[int, int]:
        return self.sc.usage_for(self.prompt, self.sc.reply_text(self.prompt))

    def status(self) -> None:
        if self.fake.args.get("--input-format") != "stream-json":
            return  # the one-shot form prints no status lines (samples/claude_print_oneshot)
        self.fake.emit(
            {
                "type": "system",
                "subtype": "status",
                "status": "requesting",
                "uuid": _uuid(),
                "session_id": self.fake.session_id,
            }
        )

    def deltas(self, index: int, chunks: list[str], key: str, delta_type: str) -> Iterator[None]:
        for n, chunk in enumerate(chunks):
            if n:
                self.fake.pause(self.sc.chunk_delay)
            self.fake.stream(
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": delta_type, key: chunk},
                }
            )
            yield

    def misbehave_after_first_delta(self) -> None:
        sc = self.sc
        if sc.crash_mid_turn:
            sys.stderr.write("Error: fake claude crashed mid-turn (scenario crash_mid_turn)\n")
            sys.stderr.flush()
            os._exit(sc.crash_exit_code)
        if sc.hang_mid_turn:
            while True:
                self.fake.pause(3600.0)

    # -- the turn

    def play(self) -> None:
        fake, sc = self.fake, self.sc
        if sc.garbage_line:
            sys.stdout.buffer.write(b"this is not JSON: fake claude garbage_line\n")
            sys.stdout.buffer.flush()
        fake.system_init()
        if sc.stderr:
            sys.stderr.write(sc.stderr + "\n")
            sys.stderr.flush()
        self.status()
        if sc.api_error is not None:
            self.upstream_error(sc.api_error)
            return
        calls = self.resolve_tool_calls(sc.tool_calls)
        first = True
        if calls:
            self.message(thinking=sc.thinking, text=None, calls=calls, first=True)
            first = False
            self.run_tools(calls)
            self.status()
        reply = self.reply()
        self.message(thinking=sc.thinking if first else None, text=reply, calls=[], first=first)
        self.result(reply)

    def reply(self) -> str:
        text = self.sc.reply_text(self.prompt)
        if self.sc.echo_system:
            text = f"[system: {self.fake.system_prompt or ''}]\n{text}"
        if self.sc.echo_tool_results and self.tool_uses:
            text += "\n" + "\n".join(
                f"[{t['tool_use_id']}] {_result_texts(t['content'])}" for t in self.tool_uses
            )
        return text

    def resolve_tool_calls(
        self, calls: tuple[FakeToolCall, ...]
    ) -> list[tuple[str, str, str, dict[str, Any]]]:
        """(tool_use id, server, tool name, arguments) for each call the host offers."""
        resolved = []
        for call in calls:
            server = tool = None
            if call.name.startswith("mcp__"):
                # a full name is called even when no server lists it: the model may (a
                # hallucination, or tools the CLI lost); the CLI then rejects the call
                _, server, tool = call.name.split("__", 2)
            else:
                for name, tools in self.fake.servers.items():
                    if call.name in tools:
                        server, tool = name, call.name
                        break
            if server is None or tool is None:
                sys.stderr.write(
                    f"fake claude: tool {call.name!r} not offered by the host, not called\n"
                )
                sys.stderr.flush()
                continue
            self.fake.tool_seq += 1
            resolved.append(
                (f"toolu_{os.getpid()}_{self.fake.tool_seq}", server, tool, dict(call.arguments))
            )
        return resolved

    def message(
        self, *, thinking: str | None, text: str | None, calls: list[Any], first: bool
    ) -> None:
        fake, sc = self.fake, self.sc
        inp, out = self.tokens
        self.usage_in += inp
        self.usage_out += out
        if sc.first_delay:
            fake.pause(sc.first_delay)
        message_id = "msg_" + uuid.uuid4().hex[:24]
        fake.stream(
            {
                "type": "message_start",
                "message": {
                    "id": message_id,
                    "type": "message",
                    "role": "assistant",
                    "model": fake.model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {
                        "input_tokens": inp,
                        "cache_read_input_tokens": sc.cache_read_input_tokens,
                        "output_tokens": 1,
                    },
                },
            },
            ttft_ms=int((time.monotonic() - self.started) * 1000),
        )
        index = 0
        misbehaved = False
        if thinking:
            fake.stream(
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "thinking", "thinking": "", "signature": ""},
                }
            )
            estimate = max(1, len(thinking) // 4)
            fake.emit(
                {
                    "type": "system",
                    "subtype": "thinking_tokens",
                    "estimated_tokens": estimate,
                    "estimated_tokens_delta": estimate,
                    "session_id": fake.session_id,
                    "uuid": _uuid(),
                }
            )
            for _ in self.deltas(index, sc.chunks(thinking), "thinking", "thinking_delta"):
                pass
            fake.stream(
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "signature_delta", "signature": "fake-signature"},
                }
            )
            self.assistant(
                message_id,
                {"type": "thinking", "thinking": thinking, "signature": "fake-signature"},
            )
            fake.stream({"type": "content_block_stop", "index": index})
            index += 1
        if text is not None:
            fake.stream(
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "text", "text": ""},
                }
            )
            for _ in self.deltas(index, sc.chunks(text), "text", "text_delta"):
                if not misbehaved:
                    misbehaved = True
                    self.misbehave_after_first_delta()
            self.assistant(message_id, {"type": "text", "text": text})
            fake.stream({"type": "content_block_stop", "index": index})
            index += 1
        for n, (tool_id, server, tool, arguments) in enumerate(calls):
            name = f"mcp__{server}__{tool}"
            fake.stream(
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "tool_use", "id": tool_id, "name": name, "input": {}},
                }
            )
            js = json.dumps(arguments)
            cut = max(1, len(js) // 2)
            for _ in self.deltas(
                index,
                [js[:cut], js[cut:]] if len(js) > 1 else [js],
                "partial_json",
                "input_json_delta",
            ):
                if not misbehaved:
                    misbehaved = True
                    self.misbehave_after_first_delta()
            self.assistant(
                message_id,
                {"type": "tool_use", "id": tool_id, "name": name, "input": arguments},
                tool_use_meta=[
                    {
                        "id": tool_id,
                        "display_name": tool.replace("_", " ").title(),
                        "server_display_name": server,
                    }
                ],
            )
            if n == 0:
                # Observed: the first call goes out as soon as its block is complete,
                # while the model message is still streaming.
                self.send_tool_call(tool_id, server, tool, arguments)
            fake.stream({"type": "content_block_stop", "index": index})
            index += 1
        fake.check_interrupt()
        fake.stream(
            {
                "type": "message_delta",
                "delta": {
                    "stop_reason": "tool_use" if calls else sc.stop_reason,
                    "stop_sequence": None,
                },
                "usage": {"output_tokens": out},
            }
        )
        fake.stream({"type": "message_stop"})

    def send_tool_call(
        self, tool_id: str, server: str, tool: str, arguments: dict[str, Any]
    ) -> None:
        fake = self.fake
        if tool not in fake.servers.get(server, ()):
            # Observed: the CLI rejects it by itself as soon as the block is complete
            self.pending_tool = None
            self.rejected.add(tool_id)
            self.tool_result(
                tool_id,
                {
                    "content": f"<tool_use_error>Error: No such tool available: "
                    f"mcp__{server}__{tool}</tool_use_error>",
                    "isError": True,
                },
            )
            return
        msg_id = fake.mcp_ids.get(server, 2)
        fake.mcp_ids[server] = msg_id + 1
        request_id = fake.mcp_send(
            server,
            {
                "method": "tools/call",
                "params": {
                    "name": tool,
                    "arguments": arguments,
                    "_meta": {"claudecode/toolUseId": tool_id, "progressToken": msg_id},
                },
                "jsonrpc": "2.0",
                "id": msg_id,
            },
        )
        self.pending_tool = (tool_id, msg_id, server, request_id)

    def await_tool_call(self) -> dict[str, Any]:
        fake = self.fake
        assert self.pending_tool is not None
        request_id = self.pending_tool[3]
        while request_id not in fake.responses:
            fake.check_interrupt()
            fake.pump(None)
        body = fake.responses.pop(request_id)
        self.pending_tool = None
        if body.get("subtype") == "error":
            return {"content": [{"type": "text", "text": str(body.get("error"))}], "isError": True}
        reply = (body.get("response") or {}).get("mcp_response") or {}
        if "error" in reply:
            return {
                "content": [{"type": "text", "text": str((reply["error"] or {}).get("message"))}],
                "isError": True,
            }
        return dict(reply.get("result") or {})

    def run_tools(self, calls: list[tuple[str, str, str, dict[str, Any]]]) -> None:
        results = []
        for n, (tool_id, server, tool, arguments) in enumerate(calls):
            if n:
                self.send_tool_call(tool_id, server, tool, arguments)
            if tool_id in self.rejected:
                continue
            result = self.await_tool_call()
            results.append((tool_id, result))
            self.num_turns += 1
        for tool_id, result in results:
            self.tool_result(tool_id, result)

    def tool_result(self, tool_id: str, result: dict[str, Any]) -> None:
        """The ``user`` line with one call's result, as the CLI prints it."""
        content = result.get("content", [])
        block: dict[str, Any] = {
            "tool_use_id": tool_id,
            "type": "tool_result",
            "content": content,
        }
        if result.get("isError"):
            block["is_error"] = True
        self.tool_uses.append(block)
        self.fake.emit(
            {
                "type": "user",
                "message": {"role": "user", "content": [block]},
                "parent_tool_use_id": None,
                "session_id": self.fake.session_id,
                "uuid": _uuid(),
                "timestamp": _now_iso(),
                "tool_use_result": content,
            }
        )

    def result(self, reply: str) -> None:
        fake, sc = self.fake, self.sc
        fake.carry.clear()
        cost = round((self.usage_in * 3 + self.usage_out * 15) / 1e6, 9)
        fake.total_cost += cost
        mu = fake.model_usage.setdefault(
            fake.model,
            {
                "inputTokens": 0,
                "outputTokens": 0,
                "cacheReadInputTokens": 0,
                "cacheCreationInputTokens": 0,
                "webSearchRequests": 0,
                "costUSD": 0.0,
                "contextWindow": 200000,
                "maxOutputTokens": 32000,
            },
        )
        mu["inputTokens"] += self.usage_in
        mu["outputTokens"] += self.usage_out
        mu["cacheReadInputTokens"] += sc.cache_read_input_tokens
        mu["costUSD"] += cost
        ms = int((time.monotonic() - self.started) * 1000)
        if self.sc.rate_limit_info is not None:
            # as the real one: after the message, before the result (a recorded sample:
            # tests/testing/samples/claude_rate_limit_event.ndjson)
            fake.emit(
                {
                    "type": "rate_limit_event",
                    "rate_limit_info": self.sc.rate_limit_info,
                    "uuid": _uuid(),
                    "session_id": fake.session_id,
                }
            )
        fake.emit(
            {
                "type": "result",
                "subtype": "success",
                "is_error": False,
                "api_error_status": None,
                "duration_ms": ms,
                "duration_api_ms": ms,
                "ttft_ms": ms,
                "ttft_stream_ms": ms,
                "time_to_request_ms": 0,
                "num_turns": self.num_turns,
                "result": reply,
                "stop_reason": sc.stop_reason,
                "session_id": fake.session_id,
                "total_cost_usd": fake.total_cost,
                "usage": _usage(self.usage_in, self.usage_out, sc.cache_read_input_tokens),
                "modelUsage": fake.model_usage,
                "permission_denials": [],
                "terminal_reason": "completed",
                "fast_mode_state": "off",
                "uuid": _uuid(),
            }
        )

    def upstream_error(self, status: int) -> None:
        fake, sc = self.fake, self.sc
        env_max = os.environ.get("CLAUDE_CODE_MAX_RETRIES", "")
        max_retries = int(env_max) if env_max.isdigit() else 10
        attempt = 0
        while sc.api_error_then == "hang" or attempt < sc.api_retries:
            attempt += 1
            fake.emit(
                {
                    "type": "system",
                    "subtype": "api_retry",
                    "attempt": attempt,
                    "max_retries": max_retries,
                    "retry_delay_ms": sc.retry_delay_ms,
                    "error_status": status,
                    "error": RETRY_ERROR_NAMES.get(
                        status, "server_error" if status >= 500 else "unknown"
                    ),
                    "session_id": fake.session_id,
                    "uuid": _uuid(),
                }
            )
            fake.pause(sc.retry_delay_ms / 1000.0)
        self.api_error_result(status, "fake upstream error")
        # Observed: the failed prompt stays in the history and is merged into the next one.
        fake.carry = [self.prompt]

    def refuse(self, problem: str) -> None:
        """A directive the fake cannot play: answered like an upstream 400 (the client's
        error, see :mod:`.scenario`); nothing is carried into the next turn."""
        body = {"type": "error", "error": {"type": "invalid_request_error", "message": problem}}
        self.api_error_result(400, json.dumps(body, ensure_ascii=False, separators=(",", ":")))

    def failed(self, exc: Exception) -> None:
        """A bug in the fake: the turn ends with an error result, the process lives on."""
        import traceback

        traceback.print_exc(file=sys.stderr)
        sys.stderr.flush()
        self.fake.emit(
            {
                "type": "result",
                "subtype": "error_during_execution",
                "duration_ms": int((time.monotonic() - self.started) * 1000),
                "duration_api_ms": 0,
                "is_error": True,
                "num_turns": self.num_turns,
                "stop_reason": None,
                "session_id": self.fake.session_id,
                "total_cost_usd": self.fake.total_cost,
                "usage": _usage(0, 0),
                "modelUsage": {},
                "permission_denials": [],
                "fast_mode_state": "off",
                "uuid": _uuid(),
                "errors": [f"fake claude: {type(exc).__name__}: {exc}"[:2000]],
            }
        )

    def api_error_result(self, status: int, detail: str) -> None:
        """What the CLI prints when the upstream answered ``status`` for good."""
        fake = self.fake
        error, template = API_ERRORS.get(status, ("unknown", "API Error: {status} {detail}"))
        text = template.format(status=status, detail=detail)
        fake.emit({**_synthetic_assistant(fake.session_id, text), "error": error})
        ms = int((time.monotonic() - self.started) * 1000)
        fake.emit(
            {
                "type": "result",
                "subtype": "success",
                "is_error": True,
                "api_error_status": status,
                "duration_ms": ms,
                "duration_api_ms": 0,
                "num_turns": 1,
                "result": text,
                "stop_reason": "stop_sequence",
                "session_id": fake.session_id,
                "total_cost_usd": fake.total_cost,
                "usage": _usage(0, 0),
                "modelUsage": fake.model_usage,
                "permission_denials": [],
                "terminal_reason": "completed",
                "fast_mode_state": "off",
                "uuid": _uuid(),
            }
        )

    def interrupted(self) -> None:
        fake = self.fake
        pending = self.pending_tool
        if pending is not None:
            tool_id, msg_id, server, _ = pending
            fake.mcp_send(
                server,
                {
                    "jsonrpc": "2.0",
                    "method": "notifications/cancelled",
                    "params": {"requestId": msg_id, "reason": "AbortError: remote-cancel"},
                },
            )
        assert fake.interrupt_id is not None
        fake.control_success(fake.interrupt_id)
        if pending is not None:
            fake.emit(
                {
                    "type": "user",
                    "message": {
                        "role": "user",
                        "content": [
                            {
                                "type": "tool_result",
                                "content": "The user doesn't want to proceed with this tool use. The tool use was rejected (eg. if it was a file edit, the new_string was NOT written to the file). STOP what you are doing and wait for the user to tell you how to proceed.",
                                "is_error": True,
                                "tool_use_id": tool_id,
                            }
                        ],
                    },
                    "parent_tool_use_id": None,
                    "session_id": fake.session_id,
                    "uuid": _uuid(),
                    "timestamp": _now_iso(),
                    "tool_use_result": "User rejected tool use",
                }
            )
        note = (
            "[Request interrupted by user for tool use]"
            if pending
            else "[Request interrupted by user]"
        )
        fake.emit(
            {
                "type": "user",
                "message": {"role": "user", "content": [{"type": "text", "text": note}]},
                "parent_tool_use_id": None,
                "session_id": fake.session_id,
                "uuid": _uuid(),
                "timestamp": _now_iso(),
            }
        )
        fake.emit(
            {
                "type": "result",
                "subtype": "error_during_execution",
                "duration_ms": int((time.monotonic() - self.started) * 1000),
                "duration_api_ms": 0,
                "is_error": True,
                "num_turns": self.num_turns + 1,
                "stop_reason": "tool_use" if pending else None,
                "session_id": fake.session_id,
                "total_cost_usd": fake.total_cost,
                "usage": _usage(0, 0),
                "modelUsage": {},
                "permission_denials": [],
                "terminal_reason": "aborted_tools" if pending else "aborted_streaming",
                "fast_mode_state": "off",
                "uuid": _uuid(),
                "errors": [
                    "[ede_diagnostic] result_type=user last_content_type=n/a stop_reason=null"
                ],
            }
        )


# ---------------------------------------------------------------- one-shot form


def one_shot(fake: FakeClaude, prompt: str) -> int:
    """``claude -p PROMPT``: one turn, printed as text, one JSON result, or stream-json."""
    fmt = fake.args.get("--output-format", "text")
    captured: list[dict[str, Any]] = []
    if fmt != "stream-json":
        fake.sink = captured
    fake.eof = True  # nothing to read: stdin held the prompt or nothing
    try:
        fake.turn(prompt)
    except Exit as exc:
        return exc.code
    results = [m for m in captured if m.get("type") == "result"]
    fake.sink = None
    if fmt == "json" and results:
        fake.emit(results[-1])
    elif fmt == "text" and results:
        sys.stdout.write(str(results[-1].get("result", "")) + "\n")
        sys.stdout.flush()
    return 1 if results and results[-1].get("is_error") else 0


# ---------------------------------------------------------------- process level


def _process_scenario() -> dict[str, Any]:
    """The scenario file's process-level fields, read without importing attrs/cattrs."""
    path = os.environ.get("CLIBRIDGE_FAKE_SCENARIO")
    if not path:
        return {}
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    default = data.get("default") or {}
    return dict(default) if isinstance(default, dict) else {}


def _auth_status(proc: dict[str, Any]) -> int:
    """``claude auth status`` as the real CLI prints it: JSON, exit 1 when logged out.

    Logged in by ``CLAUDE_CODE_OAUTH_TOKEN``, ``ANTHROPIC_API_KEY`` or
    ``$HOME/.claude/.credentials.json``, unless the scenario's upstream refuses the login
    (``api_error`` 401, e.g. ``claude_login_expired.json``): the fake's model of an expired
    login.
    """
    method = "none"
    if os.environ.get("CLAUDE_CODE_OAUTH_TOKEN"):
        method = "oauth_token"
    elif os.environ.get("ANTHROPIC_API_KEY"):
        method = "api_key"
    elif os.path.isfile(os.path.expanduser("~/.claude/.credentials.json")):
        method = "claude.ai"
    logged_in = method != "none" and proc.get("api_error") != 401
    status = {"loggedIn": logged_in, "authMethod": method, "apiProvider": "firstParty"}
    print(json.dumps(status, indent=2))
    return 0 if logged_in else 1


def _hang() -> NoReturn:
    while True:
        time.sleep(3600)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``clibridge-fake-claude`` (and ``fixtures/fake_cli/claude``)."""
    argv = sys.argv[1:] if argv is None else argv
    recorder = Recorder(os.environ.get("CLIBRIDGE_FAKE_RECORD"))
    recorder.write(
        {
            "argv": [sys.argv[0], *argv],
            "env": dict(os.environ),
            "cwd": os.getcwd(),
            "pid": os.getpid(),
        }
    )
    proc = _process_scenario()
    if argv[:1] == ["--version"]:
        print(f"{VERSION} (Claude Code)")
        return 0
    if argv[:2] == ["auth", "status"]:
        return _auth_status(proc)
    if proc.get("ignore_sigterm"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if proc.get("spawn_grandchild"):
        import subprocess

        # Same process group (no new session): a teardown that kills only the child
        # leaks this one, one that kills the group does not.
        child = subprocess.Popen(
            ["sleep", "3600"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
        )
        recorder.write({"grandchild_pid": child.pid})
    if proc.get("crash_at_boot"):
        sys.stderr.write("Error: fake claude crashed at boot (scenario crash_at_boot)\n")
        sys.stderr.flush()
        return int(proc.get("crash_exit_code", 3))
    if proc.get("hang_at_boot"):
        _hang()
    if proc.get("boot_delay"):
        time.sleep(float(proc["boot_delay"]))

    args = Args(argv)
    if args.unknown:
        recorder.write({"unknown_flags": args.unknown})
    fake = FakeClaude(args, recorder, proc)
    fmt = args.get("--output-format", "text")
    if fmt == "stream-json" and args.print_mode and not args.verbose:
        sys.stderr.write(
            "Error: When using --print, --output-format=stream-json requires --verbose\n"
        )
        return 1
    if args.get("--input-format") == "stream-json":
        if fmt != "stream-json":
            sys.stderr.write(
                "Error: --input-format=stream-json requires output-format=stream-json.\n"
            )
            return 1
        code = fake.run()
        sys.stdout.flush()
        sys.stderr.flush()
        # Why os._exit: the stdin reader thread may sit in a blocking read holding the
        # buffer's lock, and interpreter shutdown then aborts (SIGABRT) instead of exiting.
        os._exit(code)
    if not args.print_mode:
        sys.stderr.write(
            "fake claude: only the -p (print) forms are faked; the interactive TUI is not\n"
        )
        return 2
    prompt = " ".join(args.positional)
    if not prompt and not sys.stdin.isatty():
        prompt = sys.stdin.read()
        recorder.write({"stdin": prompt})
    if not prompt.strip():
        sys.stderr.write(
            "Error: Input must be provided either through stdin or as a prompt argument when using --print\n"
        )
        return 1
    return one_shot(fake, prompt.strip("\n"))


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
