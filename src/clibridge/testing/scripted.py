"""Scripted stand-ins for clibridge's two seams, for tests (yours too).

:class:`ScriptedService` implements the HTTP layer's ``TurnService`` seam (what the
supervisor implements): it plays a :class:`Script` per model name -- an optional
admission delay or error, then steps (events, :class:`Sleep`, errors to raise) -- and
records every turn (whether its context was entered and exited, with which exception,
when, how many events it sent). Serve it with ``clibridge._http.create_app`` to test a
client against exact event sequences and failures without any CLI.

:class:`ScriptedWorker` implements the pool's ``Worker`` contract in-process: it boots,
serves turns and crashes as its shared :class:`Plan` says, and logs what happened, so a
``WorkerPool`` can be driven under ``trio.testing.MockClock`` to exact timings.
"""

from __future__ import annotations

from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager
from typing import Any, NoReturn

import attrs
import trio

from .._errors import BootError, BridgeError, CliCrashed
from .._events import (
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
from .._service import ModelInfo, Readiness
from .._worker import Binding

__all__ = [
    "MODEL",
    "USAGE",
    "Plan",
    "Script",
    "ScriptedService",
    "ScriptedWorker",
    "Sleep",
    "Step",
    "TurnRecord",
    "hello",
]

MODEL = "claude-sonnet-4-5"
USAGE = Usage(input_tokens=11, output_tokens=7)


@attrs.frozen
class Sleep:
    seconds: float


Step = Event | Sleep | BridgeError


def hello(text: str = "Hello, world") -> list[Step]:
    half = len(text) // 2
    return [
        TurnStarted(MODEL),
        TextDelta(text[:half]),
        TextDelta(text[half:]),
        Finished(FinishReason.END_TURN, USAGE),
    ]


@attrs.define
class Script:
    steps: Iterable[Step] = attrs.field(factory=hello)
    enter_delay: float = 0.0
    enter_error: BridgeError | None = None


@attrs.define(eq=False)
class TurnRecord:
    request: Request
    entered: bool = False
    exit_exc: BaseException | None = None
    exited: bool = False
    exited_at: float | None = None
    sent: int = 0


class ScriptedService:
    """A ``TurnService`` that plays scripts (module doc)."""

    def __init__(self) -> None:
        self.scripts: dict[str, Script] = {}
        self.default = Script()
        self.records: list[TurnRecord] = []
        self._change = trio.Event()
        self.ready = Readiness(True, "scripted service: ready", fake=False)
        self.model_list: list[ModelInfo] = [
            ModelInfo(MODEL, "claude", MODEL, fake=True),
            ModelInfo("gpt-5", "codex", "gpt-5"),
        ]

    @asynccontextmanager
    async def turn(self, request: Request) -> AsyncIterator[AsyncIterator[Event]]:
        record = TurnRecord(request)
        self.records.append(record)
        self._changed()
        script = self.scripts.get(request.model, self.default)
        events = self._play(script.steps, record)
        try:
            if script.enter_delay:
                await trio.sleep(script.enter_delay)
            if script.enter_error is not None:
                raise script.enter_error
            record.entered = True
            self._changed()
            yield events
        except BaseException as exc:
            record.exit_exc = exc
            raise
        finally:
            with trio.CancelScope(shield=True):
                await events.aclose()
            record.exited = True
            record.exited_at = trio.current_time()
            self._changed()

    async def _play(self, steps: Iterable[Step], record: TurnRecord) -> AsyncGenerator[Event, None]:
        for step in steps:
            if isinstance(step, Sleep):
                await trio.sleep(step.seconds)
            elif isinstance(step, BridgeError):
                raise step
            else:
                record.sent += 1
                self._changed()
                yield step
                await trio.lowlevel.checkpoint()

    def models(self) -> Sequence[ModelInfo]:
        return self.model_list

    def readiness(self) -> Readiness:
        return self.ready

    def statistics(self) -> Mapping[str, Any]:
        return {"turns": len(self.records)}

    def last(self) -> TurnRecord:
        return self.records[-1]

    def _changed(self) -> None:
        self._change.set()
        self._change = trio.Event()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Wait (bound it with trio.fail_after) until ``predicate()`` holds after a change."""
        while not predicate():
            await self._change.wait()


# --------------------------------------------------------------------------- the pool seam


@attrs.define
class Plan:
    """How the next workers behave; tests mutate it between spawns."""

    boot_delay: float = 1.0
    boot_fails: bool = False
    turn_delay: float = 0.5
    #: the process exits by itself during the next turn
    crash_in_turn: bool = False
    #: the next this many turns (of any worker) crash like ``crash_in_turn``
    crashes: int = 0
    #: a crash comes after the turn's text instead of before it
    crash_after_text: bool = False
    #: ends a turn only this long after an interrupt (None: never acknowledges)
    interrupt_ack: float | None = 0.01
    #: like codex app-server: per-request threads, so a worker never becomes bound
    multiplexed: bool = False
    #: every turn raises this after ``turn_delay``, before any text (an upstream that turns
    #: the login away: ``UpstreamRateLimited``, ``LoginExpired``); None: turns go through
    fails_with: BridgeError | None = None
    #: ``fails_with`` comes after the turn's text instead of before it
    fails_after_text: bool = False


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

    def _crash(self) -> NoReturn:
        self._note("crash")
        self._exit.set()
        self.healthy = False
        raise CliCrashed("scripted crash", detail=f"worker {self.id}")

    def _refuse(self, refusal: BridgeError) -> NoReturn:
        self._note("refused")
        raise type(refusal)(refusal.message, retry_after=refusal.retry_after)

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
            if self._plan.fails_with is not None and not self._plan.fails_after_text:
                self._refuse(self._plan.fails_with)
            crash = self._plan.crash_in_turn or self._plan.crashes > 0
            self._plan.crashes = max(0, self._plan.crashes - 1)
            if crash and not self._plan.crash_after_text:
                self._crash()
            yield TextDelta("hi")
            if self._plan.fails_with is not None:
                self._refuse(self._plan.fails_with)
            if crash:
                self._crash()
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
