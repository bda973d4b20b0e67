"""Pool logic on scripted in-process workers under a MockClock: exact virtual times."""

from __future__ import annotations

from functools import partial

import pytest
import trio
import trio.testing

from clibridge._config import PoolConfig
from clibridge._errors import BootError, CliCrashed, QueueFull, UnavailableError
from clibridge._events import Message, Request, TextPart
from clibridge._pool import WorkerPool
from clibridge._worker import Binding
from clibridge.testing.scripted import Plan, ScriptedWorker

A = Binding(system="A", tools_key=(), model="m")
B = Binding(system="B", tools_key=(), model="m")
REQ = Request(model="m", messages=(Message("user", (TextPart("hi"),)),))


class Harness:
    def __init__(self, config: PoolConfig, plan: Plan | None = None) -> None:
        self.plan = plan or Plan()
        self.log: list[tuple[float, str, int]] = []
        self.workers: dict[int, ScriptedWorker] = {}
        self.pool = WorkerPool("fake", config, self._make)

    def _make(self, worker_id: int) -> ScriptedWorker:
        worker = ScriptedWorker(worker_id, self.plan, self.log)
        self.workers[worker_id] = worker
        return worker

    async def turn(
        self, binding: Binding = A, record: list[tuple[float, int]] | None = None
    ) -> int:
        async with self.pool.lease(binding) as lease:
            if record is not None:
                record.append((trio.current_time(), lease.worker.id))
            async for _ in lease.worker.turn(REQ):
                pass
            return lease.worker.id

    def events(self, what: str) -> list[tuple[float, int]]:
        return [(t, wid) for t, w, wid in self.log if w == what]

    def alive(self) -> int:
        return sum(w.alive for w in self.workers.values())


async def start(nursery: trio.Nursery, h: Harness) -> Harness:
    await nursery.start(h.pool.run)
    return h


async def test_spares_boot_ahead_and_a_steady_stream_never_waits_for_boot(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    h = await start(nursery, Harness(PoolConfig(workers=2, spares=1)))
    await trio.sleep(1.1)  # the spare's boot
    assert h.pool.statistics().idle == 1
    for _ in range(5):
        t0 = trio.current_time()
        await h.turn()
        assert trio.current_time() - t0 == pytest.approx(0.5)  # the turn only, no boot
    # one worker bound to A served all, and a spare stays booted next to it
    await trio.sleep(1.0)
    stats = h.pool.statistics()
    assert stats.served == 5
    assert stats.idle == 2
    assert stats.worker_waits == 0
    assert [wid for _, wid in h.events("turn")] == [1] * 5


async def test_a_checkout_that_waits_for_a_boot_is_counted_once(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    h = await start(nursery, Harness(PoolConfig(workers=2, spares=0)))
    t0 = trio.current_time()
    await h.turn()  # no spare: waits for the first boot
    assert trio.current_time() - t0 == pytest.approx(1.5)
    assert h.pool.statistics().worker_waits == 1
    await h.turn()  # the released worker: no wait
    assert h.pool.statistics().worker_waits == 1


async def test_fifo_queue_and_429_when_full(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    h = await start(nursery, Harness(PoolConfig(workers=1, spares=1, max_queue=2)))
    await trio.sleep(1.1)
    order: list[tuple[float, int]] = []
    async with trio.open_nursery() as inner:
        for _ in range(3):
            inner.start_soon(h.turn, A, order)
            await trio.sleep(0.01)  # arrive in a known order
        with pytest.raises(QueueFull) as info:
            await h.turn()
        assert info.value.retry_after is not None and info.value.retry_after >= 1
        assert h.pool.statistics().queued == 2
    # one at a time, in arrival order, each right after the previous
    starts = [t for t, _ in order]
    assert starts == pytest.approx([1.1, 1.6, 2.1])
    assert h.pool.statistics().rejected == 1


async def test_queue_timeout_gives_429_at_exactly_queue_timeout(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    h = await start(
        nursery, Harness(PoolConfig(workers=1, spares=0, queue_timeout=3.0), Plan(turn_delay=100))
    )
    nursery.start_soon(h.turn)
    await trio.sleep(2.0)  # boot (1 s) + into the turn
    t0 = trio.current_time()
    with pytest.raises(QueueFull, match="waited 3 s"):
        await h.turn()
    assert trio.current_time() - t0 == pytest.approx(3.0)
    assert h.pool.statistics().queued == 0


async def test_cancel_while_queued_leaves_queue_and_keeps_accounting(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    h = await start(nursery, Harness(PoolConfig(workers=1, spares=0), Plan(turn_delay=10)))
    nursery.start_soon(h.turn)
    await trio.sleep(2.0)
    with trio.move_on_after(1.0):
        await h.turn()
    stats = h.pool.statistics()
    assert stats.queued == 0 and stats.in_flight == 1
    await trio.sleep(10)
    stats = h.pool.statistics()
    assert stats.in_flight == 0 and stats.served == 1
    await h.turn()  # capacity is back
    assert h.pool.statistics().served == 2


async def test_cancel_while_waiting_for_boot_keeps_the_booting_worker(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    h = await start(nursery, Harness(PoolConfig(workers=2, spares=0), Plan(boot_delay=5)))
    with trio.move_on_after(1.0):
        await h.turn()
    assert h.pool.statistics().in_flight == 0
    await trio.sleep(5.1)
    # the worker booted anyway and is there for the next request, which does not wait
    t0 = trio.current_time()
    await h.turn()
    assert trio.current_time() - t0 == pytest.approx(0.5)


async def test_cancel_during_turn_interrupts_and_returns_a_healthy_worker(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    h = await start(nursery, Harness(PoolConfig(workers=1, spares=0), Plan(turn_delay=10)))
    with trio.move_on_after(3.0):
        await h.turn()
    interrupted: list[tuple[object, int]] = [(pytest.approx(3.0), 1)]  # (time, worker id)
    assert h.events("interrupt") == interrupted
    assert h.pool.statistics().in_flight == 0
    await h.turn()  # same worker, reused
    assert [wid for _, wid in h.events("turn")] == [1, 1]


async def test_unacknowledged_interrupt_retires_and_replaces_the_worker(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    h = await start(
        nursery, Harness(PoolConfig(workers=1, spares=0), Plan(turn_delay=10, interrupt_ack=None))
    )
    with trio.move_on_after(3.0):
        await h.turn()
    await trio.sleep(0.1)
    assert not h.workers[1].alive  # killed after the grace period
    h.plan.interrupt_ack = 0.01
    h.plan.turn_delay = 0.5
    assert await h.turn() == 2
    assert h.pool.statistics().in_flight == 0


async def test_same_binding_reuses_worker_other_binding_takes_the_spare(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    h = await start(nursery, Harness(PoolConfig(workers=2, spares=1)))
    await trio.sleep(1.1)
    first = await h.turn(A)
    await trio.sleep(1.1)  # a new spare boots
    other = await h.turn(B)
    again = await h.turn(A)
    assert first == again != other
    assert h.workers[first].binds == [A, A]


async def test_process_limit_evicts_least_recently_used_idle_worker(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    # workers=1 + spares=0: one process; a new system prompt must replace it
    h = await start(nursery, Harness(PoolConfig(workers=1, spares=0)))
    assert await h.turn(A) == 1
    t0 = trio.current_time()
    assert await h.turn(B) == 2
    assert trio.current_time() - t0 == pytest.approx(1.5)  # boot + turn
    await trio.testing.wait_all_tasks_blocked()
    assert not h.workers[1].alive


async def test_max_turns_retires_worker(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    h = await start(nursery, Harness(PoolConfig(workers=1, spares=1, max_turns=2)))
    ids = [await h.turn() for _ in range(3)]
    assert ids[0] == ids[1] != ids[2]


async def test_crash_mid_turn_fails_request_and_is_replaced(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    h = await start(
        nursery,
        Harness(
            PoolConfig(workers=1, spares=1, restart_backoff_initial=2.0), Plan(crash_in_turn=True)
        ),
    )
    with pytest.raises(CliCrashed):
        await h.turn()
    h.plan.crash_in_turn = False
    assert await h.turn() == 2  # the spare
    stats = h.pool.statistics()
    assert stats.crashes == 1 and stats.in_flight == 0
    await trio.sleep(10)
    assert h.pool.statistics().restarts == 1


async def test_boot_failures_back_off_exponentially_and_mark_crash_loop(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    config = PoolConfig(
        workers=1,
        spares=1,
        restart_backoff_initial=1.0,
        restart_backoff_max=8.0,
        crash_loop_threshold=4,
    )
    h = await start(nursery, Harness(config, Plan(boot_delay=0.5, boot_fails=True)))
    await trio.sleep(60)
    spawns = [t for t, _ in h.events("spawn")]
    # boot takes 0.5 s; then waits of 1, 2, 4, 8, 8, ...
    assert spawns[:6] == pytest.approx([0.0, 1.5, 4.0, 8.5, 17.0, 25.5])
    ready, reason = h.pool.readiness()
    assert not ready and "crash-looping" in reason and "scripted boot failure" in reason
    with pytest.raises(UnavailableError, match="keeps failing"):
        await h.turn()
    # recovery: the next boot works, the backend is ready again
    h.plan.boot_fails = False
    await trio.sleep(10)
    assert h.pool.readiness()[0]
    await h.turn()


async def test_drain_rejects_new_and_queued_and_waits_for_in_flight(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    h = await start(nursery, Harness(PoolConfig(workers=1, spares=1), Plan(turn_delay=5)))
    await trio.sleep(1.1)
    results: list[str] = []

    async def queued() -> None:
        try:
            await h.turn()
        except UnavailableError:
            results.append("rejected")

    nursery.start_soon(h.turn)
    await trio.sleep(0.1)
    nursery.start_soon(queued)
    await trio.sleep(0.1)
    h.pool.begin_drain()
    with pytest.raises(UnavailableError):
        await h.turn()
    await trio.testing.wait_all_tasks_blocked()
    assert results == ["rejected"]
    t0 = trio.current_time()
    await h.pool.wait_idle()
    assert trio.current_time() - t0 == pytest.approx(4.8)


async def test_statistics_account_for_every_worker(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    h = await start(nursery, Harness(PoolConfig(workers=3, spares=2)))
    await trio.sleep(1.1)
    stats = h.pool.statistics()
    assert stats.idle == 2 and stats.booting == 0 and len(stats.workers) == 2
    assert stats.ready
    async with trio.open_nursery() as inner:
        for _ in range(3):
            inner.start_soon(h.turn)
        await trio.sleep(0.1)
        stats = h.pool.statistics()
        assert stats.in_flight == 3
        # two spares taken, a third booting for the third request, and spares refilling
        assert stats.booting >= 1
    stats = h.pool.statistics()
    assert stats.in_flight == 0 and stats.served == 3
    assert len(stats.workers) <= 5


async def test_multiplexed_workers_serve_several_leases_each(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    h = Harness(PoolConfig(workers=2, spares=1, max_queue=0), Plan(multiplexed=True, turn_delay=5))
    h.pool = WorkerPool("fake", h.pool.config, h._make, threads_per_worker=3)
    await start(nursery, h)
    await trio.sleep(1.1)
    used: list[tuple[float, int]] = []
    async with trio.open_nursery() as inner:
        for _ in range(6):
            inner.start_soon(h.turn, A, used)
        await trio.sleep(0.1)
        assert h.pool.statistics().in_flight == 6
        with pytest.raises(QueueFull):  # 2 workers x 3 threads, no queue
            await h.turn()
    per_worker: dict[int, int] = {}
    for _, wid in used:
        per_worker[wid] = per_worker.get(wid, 0) + 1
    assert sum(per_worker.values()) == 6
    assert max(per_worker.values()) == 3  # the first worker was filled to its capacity
    assert len(h.workers) <= 3  # workers + spares processes at most


async def test_parked_lease_resumes_on_the_same_worker_without_a_permit_wait(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    h = await start(nursery, Harness(PoolConfig(workers=1, spares=0, park_ttl=10)))
    async with h.pool.lease(A) as lease:
        first = lease.worker.id
        lease.park("conv-1", reusable=True)
    stats = h.pool.statistics()
    assert stats.parked == 1
    assert stats.in_flight == 1  # a parked conversation holds its permit
    async with h.pool.resume("conv-1") as again:
        assert again is not None
        assert again.worker.id == first
    async with h.pool.resume("conv-1") as gone:
        assert gone is None
    stats = h.pool.statistics()
    assert (stats.parked, stats.in_flight) == (0, 0)


async def test_park_ttl_reclaims_reusable_to_idle_and_mid_turn_by_retiring(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    h = await start(nursery, Harness(PoolConfig(workers=2, spares=0, park_ttl=10)))
    async with h.pool.lease(A) as lease:
        lease.park("done", reusable=True)
    async with h.pool.lease(B) as lease:
        lease.park("waiting-for-tool", reusable=False)
    # parked at t=1 and t=2 (each after a 1 s boot): reclaimed at t=11 and t=12
    assert trio.current_time() == pytest.approx(2)
    await trio.sleep(8.9)
    assert h.pool.statistics().parked == 2
    await trio.sleep(0.2)
    assert h.pool.statistics().parked == 1
    await trio.sleep(1.0)
    assert h.pool.statistics().parked == 0
    await trio.testing.wait_all_tasks_blocked()
    assert h.workers[1].alive  # reusable: back to idle
    assert not h.workers[2].alive  # mid-turn: retired
    stats = h.pool.statistics()
    assert (stats.reclaimed, stats.in_flight) == (2, 0)


async def test_a_queued_request_reclaims_the_oldest_parked_lease_at_once(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    h = await start(nursery, Harness(PoolConfig(workers=1, spares=0, park_ttl=300)))
    async with h.pool.lease(A) as lease:
        lease.park("idle-conversation", reusable=True)
    t0 = trio.current_time()
    await h.turn(A)
    assert trio.current_time() - t0 == pytest.approx(0.5)  # no wait for park_ttl
    async with h.pool.resume("idle-conversation") as gone:
        assert gone is None


async def test_drain_reclaims_parked_leases(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    h = await start(nursery, Harness(PoolConfig(workers=1, spares=0)))
    async with h.pool.lease(A) as lease:
        lease.park("x", reusable=False)
    h.pool.begin_drain()
    with trio.fail_after(1):
        await h.pool.wait_idle()


async def test_parking_gives_way_to_requests_already_queued(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Regression: a finished turn parked its worker while requests waited in the queue,
    and they starved until queue_timeout (no new arrival ever reclaimed the parked lease)."""
    h = await start(nursery, Harness(PoolConfig(workers=1, spares=0, queue_timeout=30)))
    done: list[float] = []

    async def parked_turn() -> None:
        async with h.pool.lease(A) as lease:
            async for _ in lease.worker.turn(REQ):
                pass
            lease.park(object(), reusable=True)
        done.append(trio.current_time())

    async def plain() -> None:
        await h.turn(A)
        done.append(trio.current_time())

    async with trio.open_nursery() as inner:
        inner.start_soon(parked_turn)
        await trio.sleep(0.1)
        inner.start_soon(plain)  # queued behind the first
    assert done == pytest.approx([1.5, 2.0])  # boot + turn, then the next turn at once
    assert h.pool.statistics().reclaimed == 1


# parked at t=1.1, the request comes at t=2.2: the grace (2 s) ends at t=3.1
@pytest.mark.parametrize(("reusable", "wait"), [(True, 0.0), (False, 0.9)])
async def test_a_turn_parked_on_a_tool_call_keeps_its_worker_for_park_grace(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, reusable: bool, wait: float
) -> None:
    """Under pressure a finished conversation gives way at once, but a turn waiting for
    its client's tool results keeps its worker for ``park_grace`` (its client is usually
    back within milliseconds; reclaiming it would throw away a paid-for turn)."""
    config = PoolConfig(workers=1, spares=1, park_grace=2.0, park_ttl=300)
    h = await start(nursery, Harness(config))
    await trio.sleep(1.1)  # the spare boots
    async with h.pool.lease(A) as lease:
        lease.park("conversation", reusable=reusable)
    await trio.sleep(1.1)  # a new spare boots
    started: list[tuple[float, int]] = []
    t0 = trio.current_time()
    await h.turn(B, started)
    assert started[0][0] - t0 == pytest.approx(wait)
    async with h.pool.resume("conversation") as gone:
        assert gone is None
    assert h.pool.statistics().reclaimed == 1


async def test_a_one_shot_request_takes_a_finished_conversation_rather_than_a_spare(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Regression: one sequential client's next request waited ~1 s for a spare to boot
    while the worker of its previous, finished conversation sat parked (p95 784 ms), and
    the pool grew to 5 processes for that one client. A request whose setup's clients do
    not continue their conversations (the supervisor's one-shot signal) reuses it."""
    h = await start(nursery, Harness(PoolConfig(workers=4, spares=1, park_ttl=60)))
    await trio.sleep(1.1)  # the first spare
    for n in range(3):
        t0 = trio.current_time()
        async with h.pool.lease(A, reuse_finished=n > 0) as lease:
            assert trio.current_time() - t0 == 0  # never a boot on the request path
            async for _ in lease.worker.turn(REQ):
                pass
            lease.park(f"conv-{n}", reusable=True)
        await trio.sleep(2.0)  # the client thinks; the spare has long booted
    # every new conversation took the worker of the previous, finished one: no spare was
    # consumed, so one sequential client needs 1 + spares processes
    assert [wid for _, wid in h.events("turn")] == [1, 1, 1]
    assert h.alive() == 2
    stats = h.pool.statistics()
    assert (stats.parked, stats.idle, stats.crashes) == (1, 1, 0)


async def test_a_new_request_leaves_a_young_finished_conversation_to_its_client(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Regression (4 concurrent clients, real claude: 16 of 40 turns missed): a new
    request that found no free worker took the conversation another client had parked
    a moment ago; that client's next turn, a miss now, took the next one, and so on.
    While a boot can serve it, a request leaves a conversation parked less than
    ``park_grace`` alone; an older one still gives way rather than make it wait."""
    config = PoolConfig(workers=4, spares=1, park_ttl=60, park_grace=2.0)
    h = await start(nursery, Harness(config))
    await trio.sleep(1.1)  # the first spare (worker 1)
    async with h.pool.lease(A) as lease:
        lease.park("young", reusable=True)
    t0 = trio.current_time()
    async with h.pool.lease(A) as lease:  # worker 2 is booting, "young" is 0 s old
        assert trio.current_time() - t0 == pytest.approx(1.0)
        assert lease.worker.id == 2
    async with h.pool.resume("young") as lease:
        assert lease is not None and lease.worker.id == 1
        lease.park("old", reusable=True)
    await trio.sleep(config.park_grace + 0.1)  # "old" is old now; worker 3 is the spare
    async with h.pool.lease(A) as first, h.pool.lease(A) as second:
        # the idle worker 2 and the spare 3 first; then "old" gives way, no boot waited
        assert trio.current_time() - t0 == pytest.approx(1.1 + config.park_grace)
        assert {first.worker.id, second.worker.id} == {2, 3}
        t1 = trio.current_time()
        async with h.pool.lease(A) as third:
            assert third.worker.id == 1 and trio.current_time() == t1
    async with h.pool.resume("old") as gone:
        assert gone is None


async def test_a_lease_moves_to_another_worker_and_keeps_its_permit(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Issue 15, item 10: the supervisor's one retry of a turn whose worker died before any
    output runs on another worker *on the same permit*: a request queued meanwhile stays
    queued behind it instead of taking the permit (and the retry does not queue again)."""
    h = await start(
        nursery,
        Harness(
            PoolConfig(workers=1, spares=0, restart_backoff_initial=0.5), Plan(crash_in_turn=True)
        ),
    )
    seen: list[tuple[str, float, int]] = []

    async def retried() -> None:
        async with h.pool.lease(A) as lease:
            with pytest.raises(CliCrashed):
                async for _ in lease.worker.turn(REQ):
                    pass
            h.plan.crash_in_turn = False
            await lease.move_to_another_worker(A)
            seen.append(("moved", trio.current_time(), lease.worker.id))
            async for _ in lease.worker.turn(REQ):
                pass

    async def queued() -> None:
        async with h.pool.lease(A) as lease:
            seen.append(("queued one", trio.current_time(), lease.worker.id))

    async with trio.open_nursery() as inner:
        inner.start_soon(retried)
        await trio.sleep(1.1)  # worker 1 booted (1.0), its turn runs
        inner.start_soon(queued)
        await trio.sleep(0.2)
        assert h.pool.statistics().queued == 1
    # crash at 1.5; the replacement boots in 1 s (after the 0.5 s backoff when the death is
    # counted as a crash, which depends on which the pool notices first: seen 2.5 and 3.0);
    # the queued request comes after the retry, on the same permit's worker
    assert [(what, wid) for what, _, wid in seen] == [("moved", 2), ("queued one", 2)]
    (moved, _, _), (queued_at, _, _) = ((t, w, i) for w, t, i in seen)
    assert 2.5 <= moved <= 3.0 and queued_at == pytest.approx(moved + 0.5)
    stats = h.pool.statistics()
    assert (stats.retried, stats.crashes, stats.in_flight, stats.queued) == (1, 1, 0, 0)


async def test_a_lease_whose_move_fails_gives_its_permit_back(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    h = await start(
        nursery,
        Harness(
            PoolConfig(workers=1, spares=0, ready_timeout=5.0, restart_backoff_initial=0.5),
            Plan(crash_in_turn=True),
        ),
    )
    async with h.pool.lease(A) as lease:
        with pytest.raises(CliCrashed):
            async for _ in lease.worker.turn(REQ):
                pass
        h.plan.boot_fails = True
        with pytest.raises((BootError, UnavailableError)):
            await lease.move_to_another_worker(A)
    stats = h.pool.statistics()
    assert (stats.in_flight, stats.retried) == (0, 0)
    h.plan.boot_fails = False
    h.plan.crash_in_turn = False
    await trio.sleep(60)  # past the backoff
    assert await h.turn() >= 2  # capacity is back


async def test_the_pool_owns_parked_conversations_and_their_one_clock(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """What a parked lease holds is listed by ``parked()`` for exactly as long as the
    lease is parked: a resume takes it without ``on_reclaim``; ``park_ttl`` (the one
    clock) ends the other and calls its ``on_reclaim`` (a codex worker ends the paused
    thread there)."""
    h = await start(nursery, Harness(PoolConfig(workers=2, spares=1, park_ttl=10)))
    await trio.sleep(1.1)
    reclaimed: list[str] = []
    for name in ("resumed", "expires"):
        async with h.pool.lease(A) as lease:
            lease.park(
                name, reusable=True, holding=name, on_reclaim=partial(reclaimed.append, name)
            )
    assert h.pool.parked() == ["resumed", "expires"]
    await trio.sleep(5)
    async with h.pool.resume("resumed") as lease:
        assert lease is not None
    assert h.pool.parked() == ["expires"] and reclaimed == []
    await trio.sleep(5.1)  # "expires" was parked 10.1 s ago
    assert h.pool.parked() == [] and reclaimed == ["expires"]
    async with h.pool.resume("expires") as gone:
        assert gone is None


async def test_a_reclaim_does_not_call_on_reclaim_of_a_worker_that_died_parked(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """``on_reclaim`` ends a live worker's pause; a worker that died while parked has
    none to end (a codex worker's nursery is closed then: the call would raise in the
    pool's maintainer)."""
    h = await start(nursery, Harness(PoolConfig(workers=2, spares=0, park_ttl=10)))
    called: list[str] = []
    async with h.pool.lease(A) as lease:
        lease.park("dies", reusable=True, on_reclaim=partial(called.append, "dies"))
        worker = lease.worker
    assert isinstance(worker, ScriptedWorker)
    worker.healthy = False  # the process died while parked
    await trio.sleep(10.1)
    assert called == [] and h.pool.statistics().reclaimed == 1
