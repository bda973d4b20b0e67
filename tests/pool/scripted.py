"""An in-process worker scripted by the test: the pool cannot tell it from a CLI process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

import attrs
import trio

from clibridge._errors import BootError, CliCrashed
from clibridge._events import (
    Event,
    Finished,
    FinishReason,
    Message,
    Request,
    TextDelta,
    ToolResultPart,
    TurnStarted,
    Usage,
)
from clibridge._worker import Binding


@attrs.define
class Plan:
    """How the next workers behave; tests mutate it between spawns."""

    boot_delay: float = 1.0
    boot_fails: bool = False
    turn_delay: float = 0.5
    #: the process exits by itself during the next turn
    crash_in_turn: bool = False
    #: ends a turn only this long after an interrupt (None: never acknowledges)
    interrupt_ack: float | None = 0.01
    #: like codex app-server: per-request threads, so a worker never becomes bound
    multiplexed: bool = False


class ScriptedWorker:
    continues_finished_turns = False
    paused = False

    def __init__(self, id: int, plan: Plan, log: list[tuple[float, str, int]]) -> None:
        self.id = id
        self.binding: Binding | None = None
        self.turns = 0
        self.started_at = trio.current_time()
        self.healthy = True
        self.pid: int | None = None
        self.binds: list[Binding] = []
        self._plan = plan  # shared: tests change behaviour of live workers too
        self._log = log
        self._exit = trio.Event()
        self.alive = False

    def _note(self, what: str) -> None:
        self._log.append((trio.current_time(), what, self.id))

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self._note("spawn")
        self.alive = True
        try:
            await trio.sleep(self._plan.boot_delay)
            if self._plan.boot_fails:
                self._note("boot-failed")
                raise BootError("scripted boot failure", detail="stderr tail")
            self._note("booted")
            task_status.started()
            await self._exit.wait()
            self._note("exited")
        finally:
            self.alive = False
            self.healthy = False
            if not self._exit.is_set():
                self._note("killed")

    async def bind(self, binding: Binding) -> None:
        await trio.lowlevel.checkpoint()
        self.binds.append(binding)
        if not self._plan.multiplexed:
            self.binding = binding

    def holds_paused_calls(self, call_ids: Iterable[str]) -> bool:
        return False

    def reset_soon(self) -> None:
        pass

    def drop_paused_calls(self, call_ids: Iterable[str]) -> bool:
        return False

    async def turn(
        self,
        request: Request,
        *,
        messages: Sequence[Message] | None = None,
        tool_results: Mapping[str, ToolResultPart] | None = None,
    ) -> AsyncIterator[Event]:
        self._note("turn")
        yield TurnStarted(model=request.model)
        try:
            await trio.sleep(self._plan.turn_delay)
            if self._plan.crash_in_turn:
                self._exit.set()
                self.healthy = False
                raise CliCrashed("scripted crash")
            yield TextDelta("hi")
        except trio.Cancelled:
            self._note("interrupt")
            with trio.CancelScope(shield=True):
                if self._plan.interrupt_ack is None:
                    await trio.sleep(5)  # the grace period, then give up on the worker
                    self.healthy = False
                else:
                    await trio.sleep(self._plan.interrupt_ack)
            raise
        self.turns += 1
        yield Finished(FinishReason.END_TURN, Usage(1, 1))
