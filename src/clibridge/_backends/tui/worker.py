"""TuiWorker: one interactive ``claude`` in a tmux pane serving the pool (see ``_worker.py``).

Theory of operation
-------------------
:meth:`TuiWorker.run` starts the worker's own tmux server in the foreground (``tmux -D``,
through :func:`clibridge._process.open_child`: own process group, registered with the
janitor, torn down on every path) on a socket under the state dir, then one session with
one pane running the interactive claude (:func:`~.argv.build_pane_argv`) in the claude
spawn home. The pane's process is its own session and process group (tmux forks it with
``setsid``): its pgid is registered with the janitor too, and killed with SIGKILL when the
worker ends, so neither the server nor the CLI outlives clibridge, SIGKILL of clibridge
included. ``remain-on-exit`` keeps a dead pane's last screen for the error message.

**Ready** = the input box is drawn (a rule, then a line starting with ``❯``) and the
CLI has registered its session (``~/.claude/sessions/<pid>.json``, which names the
session id in force). The transcript itself only appears with the first prompt. The pane
runs under ``setpriv --pdeathsig KILL`` where available (the real claude ignores the
SIGHUP of a dying tmux). Liveness is the pane CLI's pid (:func:`_pane_alive`).

**A turn** (:meth:`TuiWorker.turn`): the request is rendered into one prompt as the
stream-json driver renders it for a fresh worker (or only the new messages, when the pane
holds the conversation), loaded into a tmux buffer from stdin (any size) and pasted with
bracketed paste (``paste-buffer -p``). Enter follows once the pasted text shows in the
input box (an Enter sent before is sometimes swallowed), and again if the prompt still
sits in the box 0.25 s later. ``TurnStarted`` comes when the screen shows the CLI busy.
The transcript is tailed from where it ended before the paste
(:class:`~.translator.TranscriptTranslator` turns its lines into neutral events) and so
is the pane's debug log, where the CLI's upstream retries show (fail fast, as the
stream-json driver). Timeouts as there: ``turn_timeout`` and ``stream_idle_timeout``.

**Cancel** (client gone, timeout, a fail-fast error): Escape; the CLI stops the turn
(the footer's ``esc to interrupt`` goes away) and puts the prompt back into the input
box a moment later, which is then cleared (Escape, Escape). A CLI that does not come back within
``interrupt_grace`` makes the worker unhealthy: the pool retires it and the pane dies
with its server.

**Reuse**: the system prompt and model are fixed at pane start, so :meth:`bind` restarts
the CLI in the pane (``respawn-pane -k``, ~1 s) when a binding needs another one, and
new spares start with the setup the pool bound last (:class:`SpawnSetup`). Between
unrelated conversations the pane gets ``/clear`` (in the background, when the pool
releases it idle): the CLI starts a new session, visible as a new ``sessionId``.

Client tools: every pane starts with ``--mcp-config`` naming the worker's loopback MCP
server (:mod:`.mcp`, a new bearer secret per pane start) and ``--allowedTools
mcp__client``; the server lists the binding's tools (another tool set restarts the
pane). A ``tools/call`` from the CLI parks the turn: the call is reported (id = the
model's tool_use id), the response ends with ``Finished(tool_use)`` and the worker is
:attr:`~TuiWorker.paused`; ``turn(tool_results=...)`` answers the held ``tools/call`` and
streams the continuation. A turn left while a call is held retires the pane. Images are
refused with 400.
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from pathlib import Path

import attrs
import psutil
import trio

from ..._config import ClaudeConfig, Config, PoolConfig
from ..._errors import (
    BootError,
    BridgeError,
    CliCrashed,
    RequestError,
    TurnTimeout,
    UnsupportedFeature,
)
from ..._events import (
    Event,
    Finished,
    FinishReason,
    Message,
    Request,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    ToolResultPart,
    TurnStarted,
    Usage,
)
from ..._janitor import Janitor
from ..._process import ChildProcess, ChildSpec, open_child
from ..._process_groups import signal_group
from ..._worker import Binding, WorkerUnusable
from .._env import with_fake_knobs
from .._worker_base import OneConversationWorker
from ..claude import ALIASES, RetryPolicy, render_user_content, tools_from_key
from ..claude.home import prepare_claude_home
from .argv import build_pane_argv
from .home import TuiLaunch, approve_api_key, tui_dir, write_private
from .mcp import McpHost, PendingCall, mcp_config
from .parser import Screen, parse_debug_line, parse_transcript_line, screen_state
from .tmux import TmuxError, find_tmux, reap_stale, server_argv, tmux
from .translator import TranscriptTranslator

__all__ = ["FAKE_TUI_COMMAND", "SpawnSetup", "TuiWorker", "make_tui_factory"]

log = logging.getLogger(__name__)

#: the bundled fake interactive claude
FAKE_TUI_COMMAND: tuple[str, ...] = (sys.executable, "-m", "clibridge.testing.fake_claude_tui")
#: the pane's size: wide enough that the CLI does not wrap its own lines much
PANE_SIZE = ("160", "50")
#: between the paste and Enter (an Enter sent at once is swallowed by the paste)
PASTE_SETTLE = 0.03
#: how often the transcript, the debug log and the pane are looked at
POLL = 0.01
#: Enter again when the prompt still sits in the input box this long after the last one
ENTER_RETRY = 0.25
#: how long to wait for a paste to show in the input box before Enter anyway
PASTE_SHOWN_TIMEOUT = 2.0
#: how often the screen is looked at until the CLI has taken the prompt
SCREEN_POLL = 0.05
#: after an interrupt, how long the CLI may take to put the prompt back into the box
RESTORE_WAIT = 0.5
#: the session name inside each worker's tmux server
SESSION = "w"


@attrs.define
class SpawnSetup:
    """The system prompt and model new panes of a pool start with: the last ones bound."""

    system: str = ""
    model: str = ALIASES["sonnet"]
    tools_key: object = ()


@attrs.define(eq=False)
class _TurnState:
    """Where a turn is: kept while it is parked on tool calls."""

    translator: TranscriptTranslator
    session: str
    path: Path | None
    offset: int
    debug: Path
    debug_offset: int
    deadline: float
    entered: float = 0.0
    next_look: float = 0.0
    last_output: float = 0.0
    #: the tools/call requests the CLI waits on
    pending: list[PendingCall] = attrs.Factory(list)
    #: tool calls reported in the current response
    calls: int = 0


class TuiWorker(OneConversationWorker):
    """An interactive claude in a tmux pane implementing :class:`clibridge._worker.Worker`."""

    label = "TUI worker"

    def __init__(
        self,
        id: int,
        config: ClaudeConfig,
        pool: PoolConfig,
        launch: TuiLaunch,
        janitor: Janitor | None = None,
        *,
        setup: SpawnSetup | None = None,
    ) -> None:
        super().__init__(id, pool)
        self._config = config
        self._launch = launch
        self._janitor = janitor
        self._setup = setup or SpawnSetup()
        self._policy = RetryPolicy.from_config(config)
        self.socket = launch.socket(id)
        self._dir: Path | None = None
        #: the system prompt and model the pane's CLI was started with
        self._system = self._setup.system
        self.model = self._setup.model
        self._server: ChildProcess | None = None
        self._ended = trio.Event()
        self._respawning = False
        #: wall-clock start of the conversation the pane holds (None: empty)
        self.conversation_started: float | None = None
        self.state = "booting"
        self._mcp = McpHost()
        self._tools_key: object = self._setup.tools_key
        self._paused: _TurnState | None = None

    def __repr__(self) -> str:
        return f"<TuiWorker {self.id} pane={self.pid} healthy={self.healthy}>"

    # ------------------------------------------------------------------ contract bits

    @property
    def paused(self) -> bool:
        """Mid-turn, the CLI waiting on the client's tool results."""
        return self._paused is not None

    def holds_paused_calls(self, call_ids: Iterable[str]) -> bool:
        wanted = set(call_ids)
        return (
            self._paused is not None
            and bool(wanted)
            and wanted == {c.id for c in self._paused.pending}
        )

    # ------------------------------------------------------------------ life

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the tmux server and the pane, serve until cancelled or the pane/server ends."""
        self.started_at = trio.current_time()
        self._dir = self._launch.worker_dir(self.id)
        self.socket.unlink(missing_ok=True)
        spec = ChildSpec(
            argv=server_argv(self._launch.tmux, self.socket),
            env=dict(self._launch.env),
            cwd=self._launch.workdir,
        )
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(self._mcp.run)
                try:
                    async with open_child(
                        spec,
                        nursery=nursery,
                        kill_grace=self._pool.kill_grace,
                        janitor=self._janitor,
                    ) as server:
                        try:
                            await self._boot(server)
                            nursery.start_soon(self._watch, server)
                            self._set_state("idle")
                            task_status.started()
                            await self._ended.wait()
                        finally:
                            self._kill_pane()
                finally:
                    nursery.cancel_scope.cancel()
        except OSError as exc:
            raise BootError(f"TUI worker {self.id}: tmux could not be started: {exc}") from exc
        finally:
            self._set_state("gone")
            self.socket.unlink(missing_ok=True)

    async def _boot(self, server: ChildProcess) -> None:
        with trio.move_on_after(self._pool.ready_timeout) as scope:
            while not self.socket.exists():
                if server.returncode is not None:
                    raise BootError(
                        f"tmux exited ({server.returncode}) before listening on {self.socket}",
                        detail=server.stderr_tail(),
                    )
                await trio.sleep(POLL)
        if scope.cancelled_caught:
            raise BootError(f"tmux did not listen on {self.socket} within the ready_timeout")
        try:
            await self._tmux("set-option", "-g", "remain-on-exit", "on")
            await self._tmux("set-option", "-g", "status", "off")
            await self._start_pane(self._system, self.model, self._tools_key, respawn=False)
        except TmuxError as exc:
            raise BootError(f"TUI worker {self.id}: {exc.message}") from exc

    async def _watch(self, server: ChildProcess) -> None:
        """End the worker when its tmux server or its pane's CLI ends by itself."""
        while True:
            if server.returncode is not None:
                log.warning("TUI worker %d: tmux server exited (%s)", self.id, server.returncode)
                break
            if not self._respawning and self.pid is not None and not _pane_alive(self.pid):
                log.warning("TUI worker %d: the claude in its pane exited", self.id)
                break
            await trio.sleep(0.1)
        self.healthy = False
        self._ended.set()

    def _kill_pane(self) -> None:
        pid, self.pid = self.pid, None
        if pid is not None:
            signal_group(pid, signal.SIGKILL)
            if self._janitor is not None:
                self._janitor.unregister(pid)

    async def _start_pane(
        self, system: str, model: str, tools_key: object, *, respawn: bool
    ) -> None:
        assert self._dir is not None
        system_file = self._dir / "system.txt"
        debug_file = self._dir / "debug.log"
        write_private(system_file, system)
        write_private(debug_file, "")
        argv = build_pane_argv(
            (*self._launch.pane_prefix, *self._launch.command),
            session_id=str(uuid.uuid4()),
            system_prompt_file=system_file,
            debug_file=debug_file,
            model=model,
            enable_cli_tools=self._launch.enable_cli_tools,
            mcp_config=mcp_config(self._mcp.port, self._mcp.new_secret()),
        )
        self._mcp.tools = tools_from_key(tools_key)
        workdir = str(self._launch.workdir)
        if respawn:
            self._respawning = True
            self._kill_pane()
            await self._tmux("respawn-pane", "-k", "-t", SESSION, "-c", workdir, "--", *argv)
        else:
            x, y = PANE_SIZE
            await self._tmux(
                "new-session", "-d", "-s", SESSION, "-x", x, "-y", y, "-c", workdir, "--", *argv
            )
        try:
            pid = int(
                (await self._tmux("display-message", "-p", "-t", SESSION, "#{pane_pid}")).strip()
            )
            if self._janitor is not None:
                self._janitor.register(pid)
            self.pid = pid
        finally:
            self._respawning = False
        self._system, self.model, self._tools_key = system, model, tools_key
        self._dirty = False
        self.conversation_started = None
        await self._wait_ready(pid)

    async def _wait_ready(self, pid: int) -> None:
        screen = ""
        with trio.move_on_after(self._pool.ready_timeout):
            while True:
                if not _pane_alive(pid):
                    raise BootError(
                        f"the claude in TUI worker {self.id}'s pane exited while starting",
                        detail=await self._capture_text(),
                    )
                screen = await self._capture_text()
                # the input box, not just a ❯ (a dialog's selection cursor is one too)
                if screen_state(screen).input is not None and self._session_file(pid).exists():
                    return
                await trio.sleep(0.05)
        raise BootError(
            f"the claude in TUI worker {self.id}'s pane did not draw its prompt within "
            f"{self._pool.ready_timeout:g} s (ready_timeout)",
            detail=screen[-2000:],
        )

    # ------------------------------------------------------------------ plumbing

    async def _tmux(self, *args: str, stdin: bytes | None = None, check: bool = True) -> str:
        return await tmux(
            self._launch.tmux, self.socket, *args, stdin=stdin, env=self._launch.env, check=check
        )

    async def _capture_text(self) -> str:
        try:
            return await self._tmux("capture-pane", "-p", "-t", SESSION)
        except TmuxError:
            return ""

    async def _screen(self) -> Screen:
        return screen_state(await self._capture_text())

    async def _keys(self, *keys: str) -> None:
        await self._tmux("send-keys", "-t", SESSION, *keys)

    def _session_file(self, pid: int) -> Path:
        return self._launch.home / ".claude" / "sessions" / f"{pid}.json"

    def _session_id(self) -> str | None:
        if self.pid is None:
            return None
        try:
            data = json.loads(self._session_file(self.pid).read_text())
        except (OSError, ValueError):
            return None
        sid = data.get("sessionId") if isinstance(data, dict) else None
        return sid if isinstance(sid, str) else None

    def _transcript(self, session_id: str) -> Path | None:
        found = sorted((self._launch.home / ".claude" / "projects").glob(f"*/{session_id}.jsonl"))
        return found[0] if found else None

    def _alive(self) -> bool:
        return self.pid is not None and _pane_alive(self.pid) and not self._ended.is_set()

    async def _crashed(self, what: str) -> CliCrashed:
        self.healthy = False
        return CliCrashed(
            f"the claude in TUI worker {self.id}'s pane exited during {what}",
            detail=(await self._capture_text())[-2000:],
        )

    def _set_state(self, state: str) -> None:
        self.state = state
        if self._dir is None:
            return
        status = {
            "worker": self.id,
            "state": state,
            "turns": self.turns,
            "conversation_started": self.conversation_started,
            "pane_pid": self.pid,
            "socket": str(self.socket),
            "model": self.model,
            "updated": time.time(),
        }
        try:
            if state == "gone":
                (self._dir / "status.json").unlink(missing_ok=True)
            else:
                write_private(self._dir / "status.json", json.dumps(status))
        except OSError as exc:
            log.debug("TUI worker %d: status file: %s", self.id, exc)

    async def _paste(self, text: str) -> None:
        """Bracketed paste of ``text`` into the input box, then Enter (module doc)."""
        buffer = f"clibridge{self.id}"
        await self._tmux("load-buffer", "-b", buffer, "-", stdin=text.encode("utf-8"))
        await self._tmux("paste-buffer", "-p", "-d", "-b", buffer, "-t", SESSION)
        # Why wait for the box: the CLI takes a paste in 0.1-0.3 s, and an Enter that comes
        # before it shows the text is sometimes swallowed (observed with 2.1.197)
        await trio.sleep(PASTE_SETTLE)
        with trio.move_on_after(PASTE_SHOWN_TIMEOUT):
            while not (await self._screen()).input:  # noqa: ASYNC110 - a screen has no event
                await trio.sleep(0.005)
        await self._keys("Enter")

    async def _clear_input(self) -> bool:
        """Empty the input box (Escape, Escape) if it holds text; True when it is empty."""
        screen = await self._screen()
        if not screen.input:
            return True
        await self._keys("Escape")
        with trio.move_on_after(1.0):
            while not (await self._screen()).clear_hint:  # noqa: ASYNC110 - a screen has no event
                await trio.sleep(0.02)
        await self._keys("Escape")
        with trio.move_on_after(1.0):
            while (await self._screen()).input:  # noqa: ASYNC110 - a screen has no event
                await trio.sleep(0.02)
            return True
        return False

    # ------------------------------------------------------------------ bind / reset

    async def _clear(self) -> None:
        """``/clear``: wait for the CLI to start its new session (a new sessionId)."""
        self._set_state("clearing")
        before = self._session_id()
        if not await self._clear_input():
            self.healthy = False
            raise TurnTimeout(f"TUI worker {self.id}: the input box could not be emptied")
        await self._paste("/clear")
        with trio.move_on_after(self._pool.ready_timeout):
            while True:
                if not self._alive():
                    raise await self._crashed("/clear")
                screen = await self._screen()
                # the box still shows "/clear" for a moment after the new session began
                if self._session_id() != before and not screen.busy and not screen.input:
                    self._dirty = False
                    self.conversation_started = None
                    self._set_state("idle")
                    return
                await trio.sleep(0.02)
        self.healthy = False
        raise TurnTimeout(
            f"the claude CLI did not finish /clear within {self._pool.ready_timeout:g} s"
        )

    async def bind(self, binding: Binding) -> None:
        """Restart the pane's CLI for another system prompt or model, /clear for the same."""
        await self._reset_done()
        self._enter()
        try:
            if self._paused is not None:
                raise WorkerUnusable(f"TUI worker {self.id} is mid-turn, waiting for tool results")
            wanted = (binding.system, binding.model, binding.tools_key)
            if wanted != (self._system, self.model, self._tools_key):
                log.info("TUI worker %d: restarting its claude for another setup", self.id)
                self._set_state("restarting")
                try:
                    await self._start_pane(*wanted, respawn=True)
                except TmuxError as exc:
                    self.healthy = False
                    raise BootError(f"TUI worker {self.id}: {exc.message}") from exc
            elif self._dirty:
                await self._clear()
            self._setup.system, self._setup.model = binding.system, binding.model
            self._setup.tools_key = binding.tools_key
            self.binding = binding
            self._set_state("idle")
        finally:
            self._busy = False

    # ------------------------------------------------------------------ turn

    async def turn(
        self,
        request: Request,
        *,
        messages: Sequence[Message] | None = None,
        tool_results: Mapping[str, ToolResultPart] | None = None,
    ) -> AsyncIterator[Event]:
        """One turn's neutral events; raises a BridgeError on failure (module doc).

        ``tool_results`` (by the CLI's tool_use id) answers the calls a parked turn waits
        on and streams the continuation.
        """
        paused = self._paused
        if (tool_results is None) != (paused is None):
            raise WorkerUnusable(
                f"TUI worker {self.id} is "
                + ("waiting for tool results" if paused else "not waiting for tool results")
            )
        text = ""
        if paused is None:
            text = _prompt_text(request.messages if messages is None else messages)
        self._enter()
        pool = self._pool
        state = paused
        try:
            if state is None:
                if not await self._clear_input():
                    self.healthy = False
                    raise TurnTimeout(f"TUI worker {self.id}: the input box could not be emptied")
                self._dirty = True
                self.turns += 1
                if self.conversation_started is None:
                    self.conversation_started = time.time()
                self._set_state("busy")
                session = self._session_id()
                if session is None:
                    raise await self._crashed("a turn (no session registered)")
                path = self._transcript(session)
                assert self._dir is not None
                debug = self._dir / "debug.log"
                state = _TurnState(
                    translator=TranscriptTranslator(self._policy, self.model or request.model),
                    session=session,
                    path=path,
                    offset=path.stat().st_size if path is not None else 0,
                    debug=debug,
                    debug_offset=debug.stat().st_size if debug.exists() else 0,
                    deadline=trio.current_time() + pool.turn_timeout,
                )
                await self._paste(text)
                state.entered = state.last_output = trio.current_time()
                state.next_look = state.entered + SCREEN_POLL
            else:
                assert tool_results is not None
                self._paused = None
                self._set_state("busy")
                yield TurnStarted(self.model)  # the continuation is a new response
                for call in state.pending:
                    result = tool_results.get(call.id)
                    if result is None:
                        raise WorkerUnusable(f"no result for tool call {call.id}")
                    call.answer(result.content, is_error=result.is_error)
                state.pending = []
                state.calls = 0
                state.last_output = trio.current_time()
            translator = state.translator
            while not translator.done:
                now = trio.current_time()
                if now >= state.deadline:
                    self.healthy = False
                    raise TurnTimeout(
                        f"the turn took longer than turn_timeout ({pool.turn_timeout:g} s)",
                        detail=(await self._capture_text())[-2000:],
                    )
                if now - state.last_output >= pool.stream_idle_timeout:
                    self.healthy = False
                    raise TurnTimeout(
                        f"the claude CLI said nothing for {pool.stream_idle_timeout:g} s "
                        "(stream_idle_timeout)",
                        detail=(await self._capture_text())[-2000:],
                    )
                if not self._alive():
                    raise await self._crashed("a turn")
                if state.path is None:
                    state.path = self._transcript(state.session)
                lines: list[bytes] = []
                if state.path is not None:
                    lines, state.offset = _read_lines(state.path, state.offset)
                for raw in lines:
                    entry = parse_transcript_line(raw)
                    if entry is None:
                        continue
                    events = translator.feed(entry)
                    state.last_output = trio.current_time()
                    for event in events:
                        yield event
                    if translator.done:
                        break
                if translator.done:
                    break
                calls = self._tool_calls()
                if calls:
                    # the CLI waits on our answer to tools/call: park the turn (module doc)
                    for event in translator.take_started():
                        yield event
                    for call in calls:
                        args = json.dumps(call.arguments, ensure_ascii=False)
                        index = state.calls
                        state.calls += 1
                        yield ToolCallStart(index, call.id, call.name)
                        yield ToolCallDelta(index, args)
                        yield ToolCallEnd(index, args)
                    state.pending = calls
                    self._paused = state
                    self._set_state("paused")
                    yield Finished(FinishReason.TOOL_USE, Usage())
                    return
                attempts, state.debug_offset = _read_lines(state.debug, state.debug_offset)
                for raw in attempts:
                    attempt = parse_debug_line(raw.decode("utf-8", "replace"))
                    if attempt is not None:
                        screen = await self._screen()
                        translator.attempt(attempt, screen.retry_in)
                if not translator.started and trio.current_time() >= state.next_look:
                    # the transcript may show the prompt only at the end of the turn: the
                    # screen says when the CLI took it (busy), or that Enter was swallowed
                    state.next_look = trio.current_time() + SCREEN_POLL
                    screen = await self._screen()
                    if screen.busy:
                        for event in translator.take_started():
                            yield event
                    elif screen.input and trio.current_time() - state.entered >= ENTER_RETRY:
                        log.info(
                            "TUI worker %d: Enter again (the prompt is still in the box)", self.id
                        )
                        await self._keys("Enter")
                        state.entered = trio.current_time()
                await trio.sleep(POLL)
            if translator.interrupted:
                raise CliCrashed(f"the turn on TUI worker {self.id} was interrupted in its pane")
        finally:
            try:
                if (
                    self._paused is None
                    and state is not None
                    and not state.translator.done
                    and self.healthy
                    and self._alive()
                ):
                    if state.pending:
                        # a turn left while the CLI waits on tools/call: the pane cannot be
                        # interrupted cleanly (Escape leaves the call hanging): retire it
                        self.healthy = False
                    else:
                        await self._interrupt()
            finally:
                self._busy = False
                if self.state == "busy":
                    self._set_state("idle")

    def _tool_calls(self) -> list[PendingCall]:
        """The tools/call requests that arrived (the CLI sends one, then the next after it
        was answered)."""
        calls = []
        while True:
            try:
                calls.append(self._mcp.calls.receive_nowait())
            except trio.WouldBlock:
                return calls

    async def _interrupt(self) -> None:
        """Escape, wait for the CLI to be idle, empty the input box; unhealthy if it won't."""
        with trio.CancelScope(shield=True):
            ok = False
            with trio.move_on_after(self._pool.interrupt_grace):
                try:
                    await self._keys("Escape")
                    await trio.sleep(0.05)
                    while (await self._screen()).busy:
                        if not self._alive():
                            break
                        await trio.sleep(0.02)
                    else:
                        # the CLI puts the interrupted prompt back into the box a moment
                        # after it stops: wait for it, or it lands in front of the next one
                        with trio.move_on_after(RESTORE_WAIT):
                            while not (await self._screen()).input:  # noqa: ASYNC110 - a screen has no event
                                await trio.sleep(0.02)
                        ok = await self._clear_input()
                except BridgeError as exc:
                    log.info("TUI worker %d: interrupt failed: %s", self.id, exc.message)
            if not ok:
                log.warning(
                    "TUI worker %d did not come back from an interrupt within interrupt_grace; "
                    "retiring it",
                    self.id,
                )
                self.healthy = False


def _pane_alive(pid: int) -> bool:
    """The pane's CLI lives (not a zombie). Why the process and not its group: right after
    tmux forks the pane the child has not called setsid yet (its group is tmux's), and a
    group check scans the whole process table, too much for every poll of a turn."""
    try:
        return psutil.Process(pid).status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.Error:
        return False


def _prompt_text(messages: Sequence[Message]) -> str:
    """The request as one pasted prompt: text only (images cannot be pasted)."""
    content = render_user_content(messages)
    if isinstance(content, str):
        text = content
    else:
        parts = []
        for block in content:
            if block.get("type") != "text":
                raise UnsupportedFeature(
                    "images are not supported in TUI mode (serve --tui): a prompt is pasted "
                    "into the interactive claude as text",
                    param="messages",
                )
            parts.append(str(block.get("text", "")))
        text = "\n\n".join(parts)
    if not text.strip():
        raise RequestError(
            "the prompt is empty: nothing to send to the interactive claude", param="messages"
        )
    if text.lstrip()[:1] in ("/", "!", "#", "&"):
        # Why: the interactive CLI runs a prompt that starts with "/" as a slash command,
        # "!" as a shell command, "#" as a memory note; a leading zero-width space keeps it text
        text = "\u200b" + text
    return text


def _read_lines(path: Path, offset: int) -> tuple[list[bytes], int]:
    """Complete lines appended to ``path`` since ``offset``, and the new offset."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return [], offset
    end = data.rfind(b"\n")
    if end < 0:
        return [], offset
    return [line for line in data[:end].split(b"\n") if line.strip()], offset + end + 1


def _tmux_env(env: Mapping[str, str]) -> dict[str, str]:
    out = dict(env)
    if not any(out.get(k) for k in ("LC_ALL", "LC_CTYPE", "LANG")):
        out["LANG"] = "C.UTF-8"
    return out


def _death_signal(environ: Mapping[str, str]) -> tuple[str, ...]:
    """``setpriv --pdeathsig KILL`` (util-linux) when there is one: the pane's CLI then dies
    with its tmux server even in the instant before clibridge registered its group with the
    janitor (the CLI ignores the SIGHUP a dying tmux sends). The parent is the tmux server,
    single-threaded, so the thread caveat of PR_SET_PDEATHSIG does not apply."""
    setpriv = shutil.which("setpriv", path=environ.get("PATH"))
    return (setpriv, "--pdeathsig", "KILL") if setpriv else ()


def make_tui_factory(
    config: Config,
    command: tuple[str, ...],
    state_dir: Path,
    janitor: Janitor | None,
    environ: Mapping[str, str],
    *,
    fake: bool,
) -> Callable[[int], TuiWorker]:
    """A pool factory for TUI workers (blocking setup: spawn home, stale tmux servers)."""
    tmux_bin = find_tmux(environ)
    if tmux_bin is None:
        raise SystemExit("clibridge: error: --tui needs tmux on PATH (apt-get install tmux)")
    if fake:
        command = FAKE_TUI_COMMAND
    settings = attrs.evolve(config.claude, command=command)
    spawn_home = prepare_claude_home(settings, state_dir, environ)
    env = dict(spawn_home.env)
    if env.get("ANTHROPIC_API_KEY") and not settings.use_real_home:
        approve_api_key(spawn_home.home, env["ANTHROPIC_API_KEY"])
    if fake:
        env = with_fake_knobs(env, environ)
    directory = tui_dir(state_dir)
    launch = TuiLaunch(
        command=command,
        env=_tmux_env(env),
        home=spawn_home.home,
        workdir=spawn_home.workdir,
        directory=directory,
        tmux=tmux_bin,
        enable_cli_tools=settings.enable_cli_tools,
        pane_prefix=_death_signal(environ),
    )
    reap_stale(tmux_bin, launch.socket(0).parent)
    log.info(
        "claude TUI workers: tmux sockets in %s, spawn home %s",
        launch.socket(0).parent,
        spawn_home.home,
    )
    setup = SpawnSetup()

    def factory(worker_id: int) -> TuiWorker:
        return TuiWorker(worker_id, settings, settings.pool, launch, janitor, setup=setup)

    return factory
