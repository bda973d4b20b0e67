"""A deterministic fake of the *interactive* ``claude`` (2.1.197) for TUI-mode tests.

Theory of operation
-------------------
It runs in a terminal (a tmux pane) and leaves behind what the real interactive CLI leaves
(recorded: ``tests/testing/samples/tui/``), so a TUI worker cannot tell the two apart on
the paths clibridge uses:

* **Screen**: a banner, the conversation, the input box between two rules starting with
  ``❯``, and a footer: ``esc to interrupt`` while a turn runs, ``Esc again to clear``
  after one Escape on a non-empty idle input, else ``? for shortcuts``. Retries show
  ``API error · Retrying in Ns · attempt N/10``.
* **Input**: the terminal in raw mode with bracketed paste on (``ESC[?2004h``); a paste
  (``ESC[200~ ... ESC[201~``, carriage returns inside become newlines) and typed keys
  go into the input box; Enter submits it; a lone ESC is Escape: it interrupts a running
  turn (the prompt goes back into the box), clears a non-empty idle box on the second
  press.
* **Files** under ``$HOME/.claude``: ``sessions/<pid>.json`` with the session id in force
  (``--session-id`` at start, a new one after ``/clear``); the transcript
  ``projects/<cwd with non-alphanumerics as ->/<session>.jsonl``: ``mode`` and
  ``permission-mode`` first, then per turn ``file-history-snapshot``, the ``user`` line
  (``"entrypoint":"cli"``), one ``assistant`` line per content block (same message id and
  usage), ``system/turn_duration``. An interrupt writes a synthetic ``assistant`` and the
  ``user`` line ``[Request interrupted by user]``; an upstream error that ends the turn is
  an ``assistant`` line with ``isApiErrorMessage`` and ``apiErrorStatus``, then
  ``turn_duration``. ``/clear`` starts a new session whose transcript opens with the
  command echo.
* **Debug log** (``--debug-file``): ``API error (attempt N/11): STATUS ...`` per retry.

Scripted by ``@fake`` directives in the prompt and ``CLIBRIDGE_FAKE_SCENARIO``, parsed by
:class:`clibridge.testing.scenario.ScenarioBook` exactly as for the stream-json fake
(``reply``, ``echo``, ``echo_system``, ``thinking``, ``chunk_chars`` / ``first_delay`` /
``chunk_delay`` (time only: the transcript has whole blocks), token counts, ``api_error`` /
``api_retries`` / ``retry_delay_ms`` / ``api_error_then``, ``crash_mid_turn``,
``hang_mid_turn``, ``ignore_interrupt``; process level: ``boot_delay``,
``crash_at_boot``, ``hang_at_boot``). ``CLIBRIDGE_FAKE_RECORD`` gets the argv at start
and ``{"prompt": text}`` for every submitted prompt.
"""

from __future__ import annotations

import json
import os
import re
import select
import sys
import termios
import threading
import time
import tty
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from .scenario import RECORD_ENV, DirectiveError, Scenario, ScenarioBook, load_book

VERSION = "2.1.197"
DEFAULT_MODEL = "claude-sonnet-4-5"
PASTE_START = b"\x1b[200~"
PASTE_END = b"\x1b[201~"
RULE = "─" * 60


def _now_iso() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def _usage(inp: int, out: int, cache_read: int = 0) -> dict[str, Any]:
    return {
        "input_tokens": inp,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cache_read,
        "output_tokens": out,
        "service_tier": "standard",
    }


class Interrupted(Exception):
    pass


class FakeTui:
    def __init__(self, args: dict[str, str], book: ScenarioBook) -> None:
        self.book = book
        self.model = args.get("--model") or DEFAULT_MODEL
        self.system = ""
        if args.get("--system-prompt-file"):
            self.system = Path(args["--system-prompt-file"]).read_text(encoding="utf-8")
        elif args.get("--system-prompt"):
            self.system = args["--system-prompt"]
        self.debug = args.get("--debug-file")
        self.mcp_url: str | None = None
        self.mcp_headers: dict[str, str] = {}
        self.mcp_ids = 0
        if args.get("--mcp-config"):
            server = json.loads(args["--mcp-config"]).get("mcpServers", {}).get("client") or {}
            if server.get("type") == "http":
                self.mcp_url = str(server["url"])
                self.mcp_headers = {
                    str(k): str(v) for k, v in (server.get("headers") or {}).items()
                }
        self.home = Path(os.environ.get("HOME", "."))
        self.cwd = os.getcwd()
        self.session = args.get("--session-id") or str(uuid.uuid4())
        self.lock = threading.RLock()
        self.input = ""
        self.log: list[str] = []
        self.busy = False
        self.hint = False
        self.notice = ""
        self.interrupt = threading.Event()
        self.parent: str | None = None
        self.tools: list[str] = []
        self.record = (
            open(os.environ[RECORD_ENV], "a", encoding="utf-8")  # noqa: SIM115 - for the process's life
            if os.environ.get(RECORD_ENV)
            else None
        )

    # ------------------------------------------------------------- files

    def transcript(self) -> Path:
        project = re.sub(r"[^A-Za-z0-9]", "-", self.cwd)
        return self.home / ".claude" / "projects" / project / f"{self.session}.jsonl"

    def write_session_file(self) -> None:
        path = self.home / ".claude" / "sessions" / f"{os.getpid()}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "pid": os.getpid(),
            "sessionId": self.session,
            "cwd": self.cwd,
            "version": VERSION,
            "kind": "interactive",
            "entrypoint": "cli",
            "status": "busy" if self.busy else "idle",
        }
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(path)

    def append(self, entry: dict[str, Any], *, chain: bool = True) -> None:
        path = self.transcript()
        path.parent.mkdir(parents=True, exist_ok=True)
        if chain:
            uid = str(uuid.uuid4())
            entry = {
                "parentUuid": self.parent,
                "isSidechain": False,
                **entry,
                "uuid": uid,
                "timestamp": _now_iso(),
                "userType": "external",
                "entrypoint": "cli",
                "cwd": self.cwd,
                "sessionId": self.session,
                "version": VERSION,
            }
            self.parent = uid
        fresh = not path.exists()
        with open(path, "a", encoding="utf-8") as f:
            if fresh:
                f.write(
                    json.dumps({"type": "mode", "mode": "normal", "sessionId": self.session}) + "\n"
                )
                f.write(
                    json.dumps(
                        {
                            "type": "permission-mode",
                            "permissionMode": "default",
                            "sessionId": self.session,
                        }
                    )
                    + "\n"
                )
            f.write(json.dumps(entry, ensure_ascii=False) + "\n")

    def debug_line(self, text: str) -> None:
        if self.debug:
            with open(self.debug, "a", encoding="utf-8") as f:
                f.write(f"{_now_iso()} [ERROR] {text}\n")

    # ------------------------------------------------------------- MCP client

    def mcp(
        self, method: str, params: dict[str, Any] | None = None, *, notify: bool = False
    ) -> Any:
        """One JSON-RPC request to the ``client`` MCP server over HTTP (blocking)."""
        assert self.mcp_url is not None
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        if not notify:
            message["id"] = self.mcp_ids
            self.mcp_ids += 1
        request = urllib.request.Request(
            self.mcp_url,
            data=json.dumps(message).encode(),
            headers={"Content-Type": "application/json", **self.mcp_headers},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=3600) as response:
            body = response.read()
        return json.loads(body).get("result") if body and not notify else None

    def connect_mcp(self) -> None:
        """What the real CLI does at start: initialize, initialized, tools/list."""
        if self.mcp_url is None:
            return
        self.mcp(
            "initialize",
            {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "fake-claude-tui", "version": VERSION},
            },
        )
        self.mcp("notifications/initialized", notify=True)
        self.tools = [t["name"] for t in (self.mcp("tools/list") or {}).get("tools", [])]

    # ------------------------------------------------------------- screen

    def draw(self) -> None:
        with self.lock:
            out = ["\x1b[2J\x1b[H", f" Claude Code v{VERSION} (fake)", f" {self.model}", ""]
            out += [line for entry in self.log[-12:] for line in entry.splitlines()[:6]]
            if self.notice:
                out.append(self.notice)
            out.append(RULE)
            lines = self.input.split("\n") if self.input else [""]
            if len(lines) > 8:
                lines = [f"[Pasted text #1 +{len(lines)} lines]"]
            out.append("❯ " + lines[0][:150])
            out += ["  " + line[:150] for line in lines[1:]]
            out.append(RULE)
            if self.busy:
                out.append("  esc to interrupt")
            elif self.hint:
                out.append("  Esc again to clear")
            else:
                out.append("  ? for shortcuts")
            sys.stdout.write("\r\n".join(out))
            sys.stdout.flush()

    # ------------------------------------------------------------- turns

    def submit(self) -> None:
        text, self.input = self.input, ""
        if self.record is not None:
            self.record.write(json.dumps({"prompt": text}, ensure_ascii=False) + "\n")
            self.record.flush()
        if text.strip() == "/clear":
            self.clear()
            return
        self.busy = True
        self.interrupt.clear()
        self.log.append("❯ " + text)
        self.write_session_file()
        self.draw()
        threading.Thread(target=self.turn, args=(text,), daemon=True).start()

    def clear(self) -> None:
        self.session = str(uuid.uuid4())
        self.parent = None
        self.log = ["❯ /clear"]
        caveat = (
            "<local-command-caveat>Caveat: The messages below were generated by the user while "
            "running local commands. DO NOT respond to these messages or otherwise consider them "
            "in your response unless the user explicitly asks you to.</local-command-caveat>"
        )
        self.append(
            {"type": "user", "message": {"role": "user", "content": caveat}, "isMeta": True}
        )
        self.append(
            {
                "type": "user",
                "message": {
                    "role": "user",
                    "content": "<command-name>/clear</command-name>\n            "
                    "<command-message>clear</command-message>\n            <command-args></command-args>",
                },
            }
        )
        self.append(
            {
                "type": "system",
                "subtype": "local_command",
                "content": "<local-command-stdout></local-command-stdout>",
                "level": "info",
            }
        )
        self.write_session_file()
        self.draw()

    def wait(self, seconds: float, sc: Scenario) -> None:
        if self.interrupt.wait(seconds) and not sc.ignore_interrupt:
            raise Interrupted

    def assistant(
        self, message_id: str, block: dict[str, Any], usage: dict[str, Any], stop: str
    ) -> None:
        self.append(
            {
                "type": "assistant",
                "message": {
                    "id": message_id,
                    "type": "message",
                    "role": "assistant",
                    "model": self.model,
                    "content": [block],
                    "stop_reason": stop,
                    "stop_sequence": None,
                    "usage": usage,
                },
                "requestId": "req_fake_" + message_id,
            }
        )

    def error_line(self, status: int, message: str) -> None:
        self.append(
            {
                "type": "assistant",
                "message": {
                    "id": str(uuid.uuid4()),
                    "type": "message",
                    "role": "assistant",
                    "model": "<synthetic>",
                    "content": [{"type": "text", "text": f"API Error: {status} {message}"}],
                    "stop_reason": "stop_sequence",
                    "stop_sequence": "",
                    "usage": _usage(0, 0),
                },
                "error": "unknown",
                "isApiErrorMessage": True,
                "apiErrorStatus": status,
            }
        )

    def turn(self, text: str) -> None:
        started = time.monotonic()
        self.append({"type": "file-history-snapshot", "messageId": str(uuid.uuid4())}, chain=False)
        self.append(
            {
                "type": "user",
                "message": {"role": "user", "content": text},
                "promptSource": "typed",
                "origin": {"kind": "human"},
            }
        )
        sc: Scenario | None = None
        try:
            try:
                sc, cleaned = self.book.for_turn(text)
            except DirectiveError as exc:
                self.error_line(400, str(exc))
                self.log.append(f"● API Error: 400 {exc}")
            else:
                self.run_scenario(sc, cleaned)
            duration = int((time.monotonic() - started) * 1000)
            self.append(
                {
                    "type": "system",
                    "subtype": "turn_duration",
                    "durationMs": duration,
                    "isMeta": False,
                }
            )
        except Interrupted:
            self.append(
                {
                    "type": "assistant",
                    "message": {
                        "id": str(uuid.uuid4()),
                        "model": "<synthetic>",
                        "role": "assistant",
                        "type": "message",
                        "content": [{"type": "text", "text": "No response requested."}],
                        "stop_reason": "stop_sequence",
                        "usage": _usage(0, 0),
                    },
                }
            )
            self.append(
                {
                    "type": "user",
                    "message": {
                        "role": "user",
                        "content": [{"type": "text", "text": "[Request interrupted by user]"}],
                    },
                }
            )
            self.log.append("  ⎿  Interrupted · What should Claude do instead?")
            with self.lock:
                self.input = text  # the real CLI puts the prompt back into the box
        finally:
            with self.lock:
                self.busy = False
                self.notice = ""
                self.write_session_file()
                self.draw()

    def run_scenario(self, sc: Scenario, cleaned: str) -> None:
        if sc.api_error is not None:
            attempt = 0
            while sc.api_error_then == "hang" or attempt < sc.api_retries:
                attempt += 1
                body = json.dumps(
                    {
                        "type": "error",
                        "error": {"type": "api_error", "message": f"fake {sc.api_error}"},
                    }
                )
                self.debug_line(
                    f"API error (attempt {attempt}/11): {sc.api_error} {sc.api_error} {body}"
                )
                delay = sc.retry_delay_ms / 1000
                self.notice = (
                    f"✻ API error · Retrying in {max(1, round(delay))}s · attempt {attempt}/10"
                )
                self.draw()
                self.wait(delay, sc)
            self.error_line(sc.api_error, f"fake upstream error {sc.api_error}")
            return
        if sc.crash_mid_turn:
            os._exit(sc.crash_exit_code)
        results = self.call_tools(sc) if sc.tool_calls else []
        reply = sc.reply_text(cleaned)
        if sc.echo_tool_results and results:
            reply = f"{reply} {' | '.join(results)}"
        if sc.echo_system:
            reply = f"[system: {self.system}] {reply}"
        inp, out = sc.usage_for(cleaned, reply)
        usage = _usage(inp, out, sc.cache_read_input_tokens)
        message_id = "msg_fake_" + uuid.uuid4().hex[:16]
        self.wait(sc.first_delay, sc)
        if sc.thinking:
            self.assistant(
                message_id,
                {"type": "thinking", "thinking": sc.thinking, "signature": "fake"},
                usage,
                sc.stop_reason,
            )
        if sc.hang_mid_turn:
            while True:
                self.wait(3600, sc)
        chunks = sc.chunks(reply)
        for _ in chunks[1:]:
            self.wait(sc.chunk_delay, sc)
        self.assistant(message_id, {"type": "text", "text": reply}, usage, sc.stop_reason)
        self.log.append("● " + reply)

    def call_tools(self, sc: Scenario) -> list[str]:
        """The model's tool calls, each through the MCP server (the host answers when its
        client has the result), written to the transcript as the real CLI does."""
        usage = _usage(1, 1)
        message_id = "msg_fake_" + uuid.uuid4().hex[:16]
        results = []
        for call in sc.tool_calls:
            tool_id = "toolu_fake_" + uuid.uuid4().hex[:12]
            block = {
                "type": "tool_use",
                "id": tool_id,
                "name": "mcp__client__" + call.name,
                "input": call.arguments,
            }
            self.assistant(message_id, block, usage, "tool_use")
            if self.mcp_url is None or call.name not in self.tools:
                text, is_error = (
                    f"<tool_use_error>Error: No such tool available: mcp__client__{call.name}</tool_use_error>",
                    True,
                )
            else:
                result = (
                    self.mcp(
                        "tools/call",
                        {
                            "name": call.name,
                            "arguments": call.arguments,
                            "_meta": {"claudecode/toolUseId": tool_id},
                        },
                    )
                    or {}
                )
                text = "".join(
                    c.get("text", "") for c in result.get("content", []) if isinstance(c, dict)
                )
                is_error = bool(result.get("isError"))
            results.append(text)
            self.append(
                {
                    "type": "user",
                    "message": {
                        "role": "user",
                        "content": [
                            {
                                "tool_use_id": tool_id,
                                "type": "tool_result",
                                "content": [{"type": "text", "text": text}],
                                "is_error": is_error,
                            }
                        ],
                    },
                    "toolUseResult": [{"type": "text", "text": text}],
                }
            )
        return results

    # ------------------------------------------------------------- keys

    def on_escape(self) -> None:
        with self.lock:
            if self.busy:
                self.interrupt.set()
            elif self.input and self.hint:
                self.input = ""
                self.hint = False
            elif self.input:
                self.hint = True
        self.draw()

    def feed(self, data: bytes, state: dict[str, Any]) -> None:
        buf: bytes = state["pending"] + data
        state["pending"] = b""
        i = 0
        while i < len(buf):
            if state["paste"] is not None:
                end = buf.find(PASTE_END, i)
                if end < 0:
                    state["paste"] += buf[i:]
                    return
                state["paste"] += buf[i:end]
                pasted = (
                    state["paste"]
                    .decode("utf-8", "replace")
                    .replace("\r\n", "\n")
                    .replace("\r", "\n")
                )
                state["paste"] = None
                with self.lock:
                    self.input += pasted
                    self.hint = False
                i = end + len(PASTE_END)
                continue
            if buf.startswith(PASTE_START, i):
                state["paste"] = b""
                i += len(PASTE_START)
                continue
            byte = buf[i : i + 1]
            if byte == b"\x1b":
                rest = buf[i + 1 : i + 6]
                if not rest or rest.startswith(b"\x1b"):
                    self.on_escape()
                    i += 1
                    continue
                if PASTE_START.startswith(buf[i : i + 6]) and len(buf) - i < len(PASTE_START):
                    state["pending"] = buf[i:]
                    return
                i += 1  # another escape sequence: skip its introducer
                continue
            if byte in (b"\r", b"\n"):
                with self.lock:
                    ready = bool(self.input.strip()) and not self.busy
                if ready:
                    self.submit()
                i += 1
                continue
            if byte == b"\x7f":
                with self.lock:
                    self.input = self.input[:-1]
                i += 1
                continue
            # typed text (UTF-8 sequences pass through whole)
            j = i + 1
            while j < len(buf) and buf[j : j + 1] not in (b"\x1b", b"\r", b"\n", b"\x7f"):
                j += 1
            with self.lock:
                self.input += buf[i:j].decode("utf-8", "replace")
                self.hint = False
            i = j
        self.draw()


def _args(argv: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    it = iter(argv)
    for arg in it:
        if arg.startswith("--") and arg in (
            "--session-id",
            "--system-prompt",
            "--system-prompt-file",
            "--debug-file",
            "--model",
            "--tools",
            "--mcp-config",
        ):
            out[arg] = next(it, "")
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if os.environ.get(RECORD_ENV):
        with open(os.environ[RECORD_ENV], "a", encoding="utf-8") as f:
            f.write(json.dumps({"argv": argv, "cwd": os.getcwd(), "pid": os.getpid()}) + "\n")
    book = load_book()
    boot = book.default
    if boot.crash_at_boot:
        print("fake claude: crash at boot", file=sys.stderr)
        return boot.crash_exit_code
    if boot.hang_at_boot:
        while True:
            time.sleep(3600)
    time.sleep(boot.boot_delay)
    fake = FakeTui(_args(argv), book)
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd) if os.isatty(fd) else None
    if saved is not None:
        tty.setraw(fd)
    sys.stdout.write("\x1b[?2004h")
    fake.connect_mcp()
    fake.write_session_file()
    fake.draw()
    state: dict[str, Any] = {"paste": None, "pending": b""}
    try:
        while True:
            readable, _, _ = select.select([fd], [], [], 1.0)
            if not readable:
                continue
            data = os.read(fd, 65536)
            if not data:
                return 0
            fake.feed(data, state)
    finally:
        if saved is not None:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)


if __name__ == "__main__":
    sys.exit(main())
