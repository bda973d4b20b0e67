"""The supervisor on scripted in-process workers under a MockClock: routing, the one retry
on another worker, and what the client sees when a turn cannot be retried.

The pool is named after a registered backend ("claude"), so requests take the
supervisor's whole path (tool checks, continuation lookup, settle); the scripted workers
never keep a conversation, so nothing parks.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from clibridge._config import PoolConfig
from clibridge._errors import CliCrashed, ModelNotFound
from clibridge._events import (
    Event,
    Finished,
    FinishReason,
    Message,
    Request,
    TextDelta,
    TextPart,
    TurnStarted,
)
from clibridge._models import ModelTable
from clibridge._pool import WorkerPool
from clibridge._supervisor import Supervisor
from clibridge.testing.scripted import Plan, ScriptedWorker

MODEL = "claude-sonnet-4-5"


class Harness:
    def __init__(self) -> None:
        self.plan = Plan(boot_delay=1.0, turn_delay=0.5)
        self.log: list[tuple[float, str, int]] = []
        self.pool = WorkerPool("claude", PoolConfig(workers=2, spares=1), self._make)
        self.supervisor = Supervisor({"claude": self.pool}, ModelTable(["claude"]))

    def _make(self, worker_id: int) -> ScriptedWorker:
        return ScriptedWorker(worker_id, self.plan, self.log)

    def workers(self, what: str) -> list[int]:
        return [wid for _, w, wid in self.log if w == what]

    async def ask(self, model: str = MODEL, seen: list[Event] | None = None) -> list[Event]:
        """The turn's events (also appended to ``seen`` as they come)."""
        seen = [] if seen is None else seen
        request = Request(model=model, messages=(Message("user", (TextPart("hi"),)),))
        async with self.supervisor.turn(request) as events:
            async for event in events:
                seen.append(event)
        return seen


@pytest.fixture
async def h(nursery: trio.Nursery) -> Harness:
    harness = Harness()
    await nursery.start(harness.pool.run)
    return harness


async def test_a_crash_before_any_output_runs_the_turn_again_on_another_worker(
    h: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    await trio.sleep(1.1)
    await h.ask()  # one worker bound to the setup; the pool boots a spare next to it
    await trio.sleep(1.1)
    h.plan.crashes = 1
    t0 = trio.current_time()
    events = await h.ask()
    # the client was told of the turn once, and got the whole answer from the second worker
    assert [type(e) for e in events] == [TurnStarted, TextDelta, Finished]
    last = events[-1]
    assert isinstance(last, Finished) and last.reason is FinishReason.END_TURN
    crashed, retried = h.workers("turn")[1:]
    assert crashed != retried and h.workers("crash") == [crashed]
    # two turns, no boot on the path: the retry took the booted spare at once
    assert trio.current_time() - t0 == pytest.approx(1.0)
    assert h.pool.statistics().retried == 1


async def test_a_second_crash_reaches_the_client_saying_it_was_retried(
    h: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    await trio.sleep(1.1)
    h.plan.crashes = 2
    with pytest.raises(CliCrashed, match="already been retried once on another worker"):
        await h.ask()
    assert len(set(h.workers("crash"))) == 2
    await trio.sleep(5)  # both replaced; nothing is left in flight
    stats = h.pool.statistics()
    assert stats.in_flight == 0 and stats.retried == 1


async def test_a_crash_after_output_is_not_retried(
    h: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    await trio.sleep(1.1)
    h.plan.crashes, h.plan.crash_after_text = 1, True
    seen: list[Event] = []
    with pytest.raises(CliCrashed, match="already produced output"):
        await h.ask(seen=seen)
    # what the client had is all it gets: the text is never sent twice
    assert [type(e) for e in seen] == [TurnStarted, TextDelta]
    assert len(h.workers("turn")) == 1 and h.pool.statistics().retried == 0


async def test_unknown_models_are_refused_before_any_worker_is_used(
    h: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    with pytest.raises(ModelNotFound):
        await h.ask("no-such-model")
    with pytest.raises(ModelNotFound):
        await h.ask("gpt-5.5")  # a codex model, and no codex pool runs
    assert h.workers("turn") == []
    # a backend alias is served by its pool
    assert [type(e) for e in await h.ask("sonnet")][-1] is Finished
    assert h.supervisor.statistics()["claude"]["resume_hits"] == 0
