"""The one-conversation worker's shared part: one call at a time and the background reset
(what the claude stream-json worker and the TUI worker inherit)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from clibridge._backends._worker_base import OneConversationWorker
from clibridge._config import PoolConfig
from clibridge._errors import TurnTimeout
from clibridge._worker import WorkerUnusable


class _Worker(OneConversationWorker):
    """A worker whose ``/clear`` takes ``clear_time`` seconds and may fail."""

    label = "test worker"

    def __init__(self) -> None:
        super().__init__(1, PoolConfig())
        self.alive = True
        self.held = False
        self.clear_time = 1.0
        self.clear_fails = False
        self.clears = 0

    @property
    def paused(self) -> bool:
        return self.held

    def _alive(self) -> bool:
        return self.alive

    async def _clear(self) -> None:
        self.clears += 1
        await trio.sleep(self.clear_time)
        if self.clear_fails:
            raise TurnTimeout("the test's /clear failed")
        self._dirty = False

    async def bind(self) -> None:
        await self._reset_done()
        self._enter()
        self._busy = False

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()


async def test_reset_runs_in_the_background_and_bind_waits_for_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    worker = _Worker()
    async with trio.open_nursery() as nursery:
        await nursery.start(worker.run)
        worker.reset_soon()
        assert worker.clears == 0  # clean: nothing to reset
        worker._dirty = True
        start = trio.current_time()
        worker.reset_soon()  # returns at once; the /clear runs in the worker's nursery
        assert trio.current_time() == start
        with pytest.raises(RuntimeError, match="test worker 1 is already serving a call"):
            worker._enter()  # busy meanwhile
        await trio.sleep(0.4)
        await worker.bind()  # waits for the rest of it only
        assert trio.current_time() - start == pytest.approx(1.0)
        assert worker.clears == 1 and not worker._dirty and worker.healthy
        nursery.cancel_scope.cancel()


async def test_no_reset_while_paused_dead_or_unhealthy(
    autojump_clock: trio.testing.MockClock,
) -> None:
    worker = _Worker()
    async with trio.open_nursery() as nursery:
        await nursery.start(worker.run)
        worker._dirty = True
        for attr, value in (("held", True), ("alive", False), ("healthy", False)):
            setattr(worker, attr, value)
            worker.reset_soon()
            await trio.sleep(2)
            assert worker.clears == 0, attr
            setattr(worker, attr, not value)
        nursery.cancel_scope.cancel()


async def test_a_failed_reset_makes_the_worker_unhealthy(
    autojump_clock: trio.testing.MockClock,
) -> None:
    worker = _Worker()
    worker.clear_fails = True
    async with trio.open_nursery() as nursery:
        await nursery.start(worker.run)
        worker._dirty = True
        worker.reset_soon()
        with pytest.raises(WorkerUnusable, match="test worker 1 is not usable"):
            await worker.bind()
        assert not worker.healthy and worker.clears == 1
        nursery.cancel_scope.cancel()
