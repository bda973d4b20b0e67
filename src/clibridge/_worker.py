"""The contract between the pool and one worker.

A worker is one CLI child process (or, in pool tests, a scripted in-process stand-in).
The pool owns the nursery the worker runs in; the worker owns its process.

Life cycle (DESIGN.md): ``spawning -> booted -> bound -> busy -> idle/parked -> retired``.

    nursery.start(worker.run)   spawn + readiness handshake; ``task_status.started()``
                                only once the CLI answered its readiness ping (booted).
                                Raises BootError (with the CLI's stderr tail) when the
                                process dies or ready_timeout passes before that.
                                After started, run() lives until its scope is cancelled
                                (teardown: group TERM, grace, KILL, shielded and bounded)
                                or the process exits by itself: run() returns normally
                                ONLY then (a teardown lets trio.Cancelled propagate).
    await worker.bind(binding)  make the worker serve ``binding`` (system prompt, tools,
                                model): initialize on a fresh worker, /clear + set_model
                                on one already bound to the same prompt and tools.
                                Raises WorkerUnusable when this worker cannot take it
                                (bound to something else) -- the pool then retires it.
    worker.turn(request)        async iterator of neutral events for one turn. Leaving it
                                early (cancel, client gone) interrupts the turn and waits
                                up to interrupt_grace for the CLI to end it; if it does
                                not, ``worker.healthy`` turns False and the pool retires it.
                                ``messages=``: continue the finished conversation the
                                worker holds with only these (when it
                                ``continues_finished_turns``); ``tool_results=``: answer
                                the calls of a turn paused on them.
    worker.reset_soon()         the pool released the worker idle: make it ready for a new
                                conversation in the background (claude: /clear), so that
                                work is off the next request's path; bind waits for it.
    worker.holds_paused_calls / drop_paused_calls
                                whether a turn of this worker waits for exactly these
                                tool calls; end that turn because the client went another
                                way (False: only retiring the process ends it).
    worker.healthy              False after a protocol error, crash, unacknowledged
                                interrupt or timeout: the pool must not reuse it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Hashable, Iterable, Mapping, Sequence
from typing import Protocol

import attrs
import trio

from ._events import Event, Message, Request, ToolResultPart


@attrs.frozen
class Binding:
    """What a worker is bound to; two requests with equal bindings can share a worker."""

    system: str
    tools_key: Hashable  # canonical form of the tool set (e.g. a tuple of JSON texts)
    model: str  # the CLI model id

    def same_conversation_setup(self, other: Binding) -> bool:
        """True when only the model differs (switchable without a new process)."""
        return self.system == other.system and self.tools_key == other.tools_key


class WorkerRetired(Exception):
    """Raised by ``run()`` when the worker ended its own process on purpose (e.g. a codex
    app-server stuck with an abandoned thread): the pool replaces it without counting a crash."""


class WorkerUnusable(Exception):
    """The worker cannot serve this binding; retire it and use another."""


class Worker(Protocol):
    #: a small integer unique within its pool, for logs and statistics
    id: int
    #: None until bound
    binding: Binding | None
    #: turns served so far
    turns: int
    #: trio.current_time() when spawned
    started_at: float
    healthy: bool
    #: the child's process id, None when not spawned or for in-process fakes
    pid: int | None
    #: a finished turn can be continued on this worker with only the new messages
    continues_finished_turns: bool

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None: ...

    async def bind(self, binding: Binding) -> None: ...

    def turn(
        self,
        request: Request,
        *,
        messages: Sequence[Message] | None = None,
        tool_results: Mapping[str, ToolResultPart] | None = None,
    ) -> AsyncIterator[Event]: ...

    @property
    def paused(self) -> bool:
        """A turn of this worker waits for a client's tool results."""
        ...

    def reset_soon(self) -> None: ...

    def holds_paused_calls(self, call_ids: Iterable[str]) -> bool: ...

    def drop_paused_calls(self, call_ids: Iterable[str]) -> bool: ...
