"""A bounded pool of warm CLI workers for one backend.

Theory of operation
-------------------
Two limits, two mechanisms:

* **Turn permits** bound concurrency: at most ``workers`` leases exist at once (a lease is a
  turn in flight, or later a parked conversation). A request that finds no free permit
  waits in a FIFO queue of at most ``max_queue`` entries; a full queue, or a wait longer
  than ``queue_timeout``, raises :class:`~clibridge._errors.QueueFull` (HTTP 429) with a
  Retry-After estimate. A released permit goes straight to the head of the queue, so
  nobody barges ahead of a waiter.
* **Processes** are bounded by ``workers + spares``. The maintainer task keeps ``spares``
  booted, unbound workers ahead of demand, plus one booting worker for every permit holder
  that found nothing to use; when the process limit is reached it retires the idle worker
  that was used least recently (it is bound to a conversation setup nobody wants now).

Checkout with a permit in hand: an idle worker already bound to the same system prompt and
tool set (its ``/clear`` started when it was released: ``worker.reset_soon()``; ``bind``
waits for the rest of it and sets the model), else a booted spare (``bind`` initializes
it), else the worker of the least recently parked *finished* conversation of the same
setup (only a cache of a conversation that may never continue: it gives way rather than
make a request wait for a boot), else wait until the maintainer produces one. A request
whose setup's clients do not continue their conversations (``lease(...,
reuse_finished=True)``, the supervisor's one-shot signal) takes a parked finished
conversation's worker before a spare, so such a client keeps reusing one worker instead of
consuming spares; for any other request that would take the worker of a conversation
another client is about to continue.

Every worker's life runs in a task of the pool's nursery: ``worker.run`` spawns, answers the
readiness handshake and then lives until the pool cancels its scope (retire) or the
process exits. Retiring never blocks the caller: the teardown (group TERM, grace, KILL)
runs shielded in the worker's own task.

Releasing is synchronous and happens on every path out of a lease (success, error,
cancel): the permit goes back, and the worker goes back to idle only when it is healthy and
young enough; otherwise it is retired and replaced. A lease can also trade its worker for
another (:meth:`Lease.move_to_another_worker`: the supervisor's one retry of a turn whose
CLI failed before producing output) without giving the permit back, so the retry neither
queues again nor loses its place to newer requests.

Failures: a worker that fails to boot, or exits while booted, bumps a consecutive-failure
counter; respawns wait ``restart_backoff_initial * 2**(n-1)`` (capped). ``crash_loop_threshold``
consecutive failures make the pool not ready until a worker boots and serves a turn again.
"""

from __future__ import annotations

import enum
import logging
import math
from collections import deque
from collections.abc import AsyncIterator, Callable, Hashable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from ._config import PoolConfig
from ._errors import BootError, BridgeError, QueueFull, TurnTimeout, UnavailableError
from ._usage import ReportsUsage, UsageMeter
from ._worker import Binding, Worker, WorkerRetired, WorkerUnusable

log = logging.getLogger("clibridge.pool")

WorkerFactory = Callable[[int], Worker]


class SlotState(enum.Enum):
    BOOTING = "booting"
    IDLE = "idle"  # booted; bound or not
    BUSY = "busy"  # leased for a turn
    PARKED = "parked"  # leased, holding a conversation between two requests
    RETIRING = "retiring"


@attrs.define(eq=False)
class _Slot:
    worker: Worker
    state: SlotState = SlotState.BOOTING
    #: leases on this worker (more than one only for multiplexing workers such as codex)
    active: int = 0
    #: worn out (max_turns / max_age): no new leases, retire when the last one ends
    closing: bool = False
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    last_used: float = 0.0


@attrs.define(eq=False)
class _Waiter:
    event: trio.Event = attrs.field(factory=trio.Event)
    granted: bool = False
    error: BridgeError | None = None


@attrs.frozen
class WorkerStats:
    id: int
    state: str
    pid: int | None
    age: float
    turns: int
    bound: bool
    system_chars: int
    #: a turn of it waits for a client's tool results (parked on a tool call, not finished)
    paused: bool = False


@attrs.frozen
class PoolStatistics:
    """A snapshot for /readyz, metrics and tests."""

    name: str
    ready: bool
    reason: str
    workers: tuple[WorkerStats, ...]
    permits_total: int
    in_flight: int  # leases: busy + parked
    parked: int
    queued: int
    booting: int
    idle: int
    served: int
    rejected: int
    restarts: int  # replacements for workers that died or failed to boot
    boot_failures: int
    crashes: int
    timeouts: int
    draining: bool
    reclaimed: int = 0  # parked leases ended by park_ttl, pressure or drain
    retried: int = 0  # leases moved to another worker to run their turn again
    boots: int = 0  # workers that booted (became ready)
    #: checkouts that found no worker to take and waited for one (a boot or a release)
    worker_waits: int = 0


class _ReadySignal:
    """The ``task_status`` handed to ``Worker.run``: marks the worker booted."""

    def __init__(self, on_ready: Callable[[], None]) -> None:
        self._on_ready = on_ready
        self.booted = False

    def started(self, value: object = None) -> None:
        if self.booted:
            raise RuntimeError("started() called twice")
        self.booted = True
        self._on_ready()


class Lease:
    """A checked-out worker. Obtained from :meth:`WorkerPool.lease` or :meth:`WorkerPool.resume`."""

    def __init__(self, pool: WorkerPool, slot: _Slot) -> None:
        self._pool = pool
        self._slot = slot
        #: the slot was given back (by :meth:`move_to_another_worker`); the permit was not
        self._slot_released = False
        self.retire_on_release = False
        self.park_key: Hashable | None = None
        self.park_reusable = False
        self._park_holding: object = None
        self._park_on_reclaim: Callable[[], object] | None = None

    @property
    def worker(self) -> Worker:
        return self._slot.worker

    @property
    def pool(self) -> WorkerPool:
        """The pool the lease (and its permit) belongs to."""
        return self._pool

    async def move_to_another_worker(self, binding: Binding) -> None:
        """Give this lease's worker back and check out another bound to ``binding``.

        For a turn that failed on its worker before producing any output (the CLI lost its
        tools, or its process died): the permit stays with the lease, so the retry does not
        queue again. Raises what a checkout raises (``BootError`` after ``ready_timeout``,
        ``UnavailableError`` in a crash loop); the lease then still ends normally.
        """
        pool = self._pool
        if not self._slot_released:
            self._slot_released = True
            pool._release(self._slot, retire=self.retire_on_release)
        self.retire_on_release = False
        self._slot = await pool._checkout(binding)
        self._slot_released = False
        pool._retried += 1

    def park(
        self,
        key: Hashable,
        *,
        reusable: bool,
        holding: object = None,
        on_reclaim: Callable[[], object] | None = None,
    ) -> None:
        """Keep the worker checked out under ``key`` when this lease ends.

        The parked lease keeps its permit (it counts toward capacity) until
        :meth:`WorkerPool.resume` takes it up, ``park_ttl`` passes, or a queued request
        needs the permit (oldest parked first). ``reusable``: the worker is at a turn
        boundary and may serve others after a reclaim; otherwise (a turn waiting for a
        client's tool result) a reclaim retires it. ``holding``: what the caller needs to
        know about the parked conversation (:meth:`WorkerPool.parked` lists it while it
        is parked). ``on_reclaim``: called when the pool ends the parked lease instead of
        a request resuming it (e.g. to end a paused thread of a multiplexed worker).
        """
        self.park_key = key
        self.park_reusable = reusable
        self._park_holding = holding
        self._park_on_reclaim = on_reclaim


@attrs.define(eq=False)
class _Parked:
    slot: _Slot
    key: Hashable
    reusable: bool
    since: float
    holding: object = None
    on_reclaim: Callable[[], object] | None = None


class WorkerPool:
    """See the module docstring. Start it with ``await nursery.start(pool.run)``."""

    def __init__(
        self,
        name: str,
        config: PoolConfig,
        factory: WorkerFactory,
        *,
        threads_per_worker: int = 1,
    ) -> None:
        self.name = name
        self.config = config
        self._factory = factory
        #: the backend's subscription windows, as its workers report them (/v1/stats)
        self.usage = UsageMeter(name, config.usage_warning)
        #: concurrent leases one worker serves (codex app-server threads); 1 for claude
        self.capacity = threads_per_worker
        self._permits_total = config.workers * threads_per_worker
        self._slots: dict[int, _Slot] = {}
        self._next_id = 1
        self._free_permits = self._permits_total
        self._queue: deque[_Waiter] = deque()
        # permit holders that found no usable worker and wait for one
        self._wanting = 0
        self._changed = trio.Event()  # fired (and replaced) on every state change
        self._parked: dict[Hashable, _Parked] = {}
        self._reclaimed = 0
        self._retried = 0
        self._maintainer_wake = trio.Event()  # set on changes and when someone wants a worker
        self._nursery: trio.Nursery | None = None
        self._draining = False
        self._last_error = ""
        self._boot_failures_in_a_row = 0
        self._crashes_in_a_row = 0
        self._spawn_not_before = 0.0
        self._turn_seconds = 5.0  # EWMA of lease durations, for Retry-After estimates
        # counters
        self._served = 0
        self._boots = 0
        self._worker_waits = 0
        self._rejected = 0
        self._boot_failures = 0
        self._crashes = 0
        self._timeouts = 0

    # ------------------------------------------------------------------ life

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the workers' nursery; report started at once (spares boot in the background)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._maintain)
            task_status.started()
            # runs until cancelled; worker teardown is shielded inside each worker's task

    def begin_drain(self) -> None:
        """Stop admitting: new and queued requests get 503; leases in flight go on."""
        self._draining = True
        while self._parked:
            self._reclaim(self._parked.pop(next(iter(self._parked))))
        while self._queue:
            waiter = self._queue.popleft()
            waiter.error = UnavailableError("clibridge is shutting down", retry_after=5)
            waiter.event.set()
        self._notify()

    async def wait_idle(self) -> None:
        """Wait until no lease is in flight (for a graceful drain)."""
        while self._permits_total - self._free_permits > 0:
            await self._wait_change()

    # ------------------------------------------------------------------ checkout

    @asynccontextmanager
    async def lease(
        self, binding: Binding, *, reuse_finished: bool = False
    ) -> AsyncIterator[Lease]:
        """Admit, check out a worker bound to ``binding``, and give it back on every path.

        ``reuse_finished``: a parked finished conversation of the setup gives way before
        a spare is used (module doc)."""
        await self._acquire_permit()
        started = trio.current_time()
        try:
            slot = await self._checkout(binding, reuse_finished=reuse_finished)
        except BaseException:
            self._release_permit()
            raise
        try:
            async with self._held(slot) as lease:
                yield lease
        finally:
            elapsed = trio.current_time() - started
            self._turn_seconds = 0.8 * self._turn_seconds + 0.2 * elapsed

    @asynccontextmanager
    async def resume(self, key: Hashable) -> AsyncIterator[Lease | None]:
        """Take up the lease parked under ``key``; yields None when there is none (any more)."""
        parked = self._parked.pop(key, None)
        if parked is None or parked.slot.state is SlotState.RETIRING:
            if parked is not None:  # its worker died while parked
                self._release_permit()
            yield None
            return
        parked.slot.state = SlotState.BUSY
        async with self._held(parked.slot) as lease:
            yield lease

    @asynccontextmanager
    async def _held(self, slot: _Slot) -> AsyncIterator[Lease]:
        """A lease on ``slot`` (permit held), ended on every path (:meth:`_end_lease`)."""
        lease = Lease(self, slot)
        try:
            yield lease
        except TurnTimeout:
            self._timeouts += 1
            raise
        finally:
            self._end_lease(lease)

    def _end_lease(self, lease: Lease) -> None:
        """Every path out of a lease: park it, or give back the worker and the permit."""
        if lease._slot_released:  # a move to another worker failed: only the permit is left
            self._release_permit()
            return
        slot = lease._slot
        key = lease.park_key
        if (
            key is not None
            and not lease.retire_on_release
            and slot.worker.healthy
            and slot.state is SlotState.BUSY
            and not self._draining
        ):
            old = self._parked.pop(key, None)
            if old is not None:  # the same key parked twice: the older one loses
                self._reclaim(old)
            self._parked[key] = _Parked(
                slot,
                key,
                lease.park_reusable,
                trio.current_time(),
                lease._park_holding,
                lease._park_on_reclaim,
            )
            self._served += 1  # the turn itself is done; parking only keeps the worker
            if self.capacity == 1:
                slot.state = SlotState.PARKED
            # requests already waiting come first: parked conversations give way (see
            # _reclaim_for_pressure for which, and when)
            while self._queue and self._reclaim_for_pressure():
                pass
            self._notify()
            return
        self._release(slot, retire=lease.retire_on_release)
        self._release_permit()

    def parked(self) -> list[object]:
        """What each parked lease holds (:meth:`Lease.park`), the oldest first; a lease
        whose worker died while parked is not listed."""
        return [p.holding for p in self._parked.values() if p.slot.state is not SlotState.RETIRING]

    def holds_parked(self, key: Hashable) -> bool:
        """Whether a lease is parked under ``key`` here (:meth:`resume` would find it)."""
        return key in self._parked

    def busy_share(self) -> float:
        """Turns running or waiting per permit: how busy the pool is, for choosing among
        pools (a parked lease gives way under pressure, so it does not count)."""
        in_flight = self._permits_total - self._free_permits
        return (in_flight - len(self._parked) + len(self._queue)) / self._permits_total

    def _reclaim(self, parked: _Parked) -> None:
        """End a parked lease (ttl, pressure, drain): free its permit; retire if mid-turn."""
        slot = parked.slot
        self._reclaimed += 1
        if (
            parked.on_reclaim is not None
            and slot.state is not SlotState.RETIRING
            and slot.worker.healthy
        ):
            # only a live worker has a pause to end (a dead one's nursery is closed)
            parked.on_reclaim()
        if slot.state is SlotState.PARKED:
            slot.state = SlotState.BUSY
        self._release(slot, retire=not parked.reusable, count=False)
        self._release_permit()

    def _reclaim_for_pressure(self) -> bool:
        """Free one parked lease for a request that needs a permit; False if none may go.

        A finished conversation (reusable) gives way first, oldest first: only a
        follow-up's speed is lost. A turn parked on a client's tool call keeps its worker
        for ``park_grace`` seconds, since its client is usually back within milliseconds and
        reclaiming it throws away a turn already paid for upstream; after that it gives way
        too (the maintainer re-checks when the grace ends).
        """
        if not self._parked:
            return False
        now = trio.current_time()
        chosen: _Parked | None = None
        for parked in self._parked.values():  # insertion order: the oldest first
            if parked.reusable:
                chosen = parked
                break
            if chosen is None and now - parked.since >= self.config.park_grace:
                chosen = parked
        if chosen is None:
            return False
        del self._parked[chosen.key]
        self._reclaim(chosen)
        return True

    def _next_grace_end(self) -> float:
        ends = [p.since + self.config.park_grace for p in self._parked.values() if not p.reusable]
        return min(ends, default=math.inf)

    async def _acquire_permit(self) -> None:
        if self._draining:
            raise UnavailableError("clibridge is shutting down", retry_after=5)
        if self._free_permits == 0 and self._parked:
            # parked conversations give way to new requests; the freed permit goes to the
            # head of the queue, or to the free count when none waits
            self._reclaim_for_pressure()
        if self._free_permits > 0 and not self._queue:
            self._free_permits -= 1
            return
        if len(self._queue) >= self.config.max_queue:
            self._rejected += 1
            raise QueueFull(
                f"all {self._permits_total} {self.name} slots are busy and the wait queue "
                f"({self.config.max_queue}) is full; retry later",
                retry_after=self._retry_after(len(self._queue)),
            )
        waiter = _Waiter()
        self._queue.append(waiter)
        if self._parked:
            # a request waits while conversations sit parked: one gives way, now or when
            # its grace ends (the maintainer watches that)
            self._reclaim_for_pressure()
            self._kick_maintainer()
        try:
            with trio.move_on_after(self.config.queue_timeout):
                await waiter.event.wait()
        except BaseException:
            if waiter.granted:
                # the permit arrived in the tick the request was cancelled: give it back,
                # or it leaks for good (found by the chaos soak)
                self._release_permit()
            raise
        finally:
            # Trio wakes a parked task either by set() or by a cancel, never both: an unset
            # event means we are still queued and must leave the queue (cancel or timeout).
            if not waiter.event.is_set():
                self._queue.remove(waiter)
        if waiter.error is not None:
            raise waiter.error
        if not waiter.granted:
            self._rejected += 1
            raise QueueFull(
                f"waited {self.config.queue_timeout:g} s for a free {self.name} worker; retry later",
                retry_after=self._retry_after(len(self._queue)),
            )

    def _release_permit(self) -> None:
        if self._queue:
            # hand the permit straight to the head of the queue: no barging
            waiter = self._queue.popleft()
            waiter.granted = True
            waiter.event.set()
        else:
            self._free_permits += 1
        self._notify()

    async def _checkout(self, binding: Binding, *, reuse_finished: bool = False) -> _Slot:
        """With a permit held: find, or wait for, a worker and bind it."""
        waited = False
        with trio.move_on_after(self.config.ready_timeout):
            while True:
                slot = self._pick(binding)
                if (
                    slot is None or (reuse_finished and slot.worker.binding is None)
                ) and self._reclaim_finished_for(
                    binding,
                    min_age=0.0
                    if reuse_finished or not self._boot_possible()
                    else self.config.park_grace,
                ):
                    continue  # its worker is idle now: _pick takes it
                if slot is not None:
                    slot.state = SlotState.BUSY
                    slot.active += 1
                    try:
                        await slot.worker.bind(binding)
                    except WorkerUnusable:
                        self._release(slot, retire=True)
                        continue
                    except BaseException:
                        self._release(slot, retire=True)
                        raise
                    if not slot.worker.healthy:
                        self._release(slot, retire=True)
                        continue
                    return slot
                if self._crash_looping():
                    raise UnavailableError(
                        f"the {self.name} CLI keeps failing: {self._last_error}", retry_after=30
                    )
                if not waited:
                    waited = True
                    self._worker_waits += 1
                self._wanting += 1
                self._kick_maintainer()  # not _notify(): waiters must not wake each other
                try:
                    await self._wait_change()
                finally:
                    self._wanting -= 1
        raise BootError(
            f"no {self.name} worker became ready within {self.config.ready_timeout:g} s"
            + (f" (last error: {self._last_error})" if self._last_error else ""),
            retry_after=5,
        )

    def _reclaim_finished_for(self, binding: Binding, *, min_age: float = 0.0) -> bool:
        """End the least recently parked finished conversation of ``binding``'s setup
        that has been parked for ``min_age`` seconds at least.

        Why: such a worker is only a cache of a conversation that may never continue;
        a request of that setup takes it rather than wait for a boot. While a boot can
        serve the request, a conversation parked less than ``park_grace`` ago is left
        alone: its client is usually about to continue it, and taking it turns that
        request into a fresh one that takes the next conversation -- under concurrent
        clients a chain of continuation misses (measured: 16 of 40 turns of 4 clients).
        """
        too_young = trio.current_time() - min_age
        for parked in self._parked.values():  # insertion order: the oldest first
            if parked.since > too_young:
                return False  # the rest were parked later still
            bound = parked.slot.worker.binding
            if (
                parked.reusable
                and bound is not None
                and bound.same_conversation_setup(binding)
                and parked.slot.active == 1
            ):
                del self._parked[parked.key]
                log.debug(
                    "%s worker %d: its finished conversation gives way to a new request",
                    self.name,
                    parked.slot.worker.id,
                )
                self._reclaim(parked)
                return True
        return False

    def _boot_possible(self) -> bool:
        """A worker is booting, or one may be booted (now or after evicting an idle one)."""
        if self._crash_looping() or self._draining:
            return False
        counts = self._counts()
        live = counts["booting"] + counts["idle"] + counts["busy"] + counts["parked"]
        return (
            counts["booting"] > 0
            or live < self.config.workers + self.config.spares
            or counts["idle"] > counts["idle_unbound"]
        )

    def _pick(self, binding: Binding) -> _Slot | None:
        same: _Slot | None = None
        spare: _Slot | None = None
        for slot in self._slots.values():
            if not self._has_room(slot):
                continue
            bound = slot.worker.binding
            if bound is None:
                # spread multiplexed leases: the least loaded worker first
                if spare is None or slot.active < spare.active:
                    spare = slot
            elif bound.same_conversation_setup(binding) and (
                same is None or slot.last_used > same.last_used
            ):
                same = slot
        return same or spare

    def _has_room(self, slot: _Slot) -> bool:
        return (
            slot.state in (SlotState.IDLE, SlotState.BUSY)
            and not slot.closing
            and slot.active < self.capacity
            and slot.worker.healthy
        )

    def _release(self, slot: _Slot, *, retire: bool, count: bool = True) -> None:
        worker = slot.worker
        now = trio.current_time()
        slot.last_used = now
        slot.active -= 1
        if (
            now - worker.started_at
        ) >= self.config.max_age or worker.turns >= self.config.max_turns:
            slot.closing = True
        if retire or slot.state is not SlotState.BUSY:
            self._retire(slot)  # a broken process: its other leases fail with it
        else:
            if worker.healthy:
                self._served += count
                self._crashes_in_a_row = 0
            else:
                # no new leases; a multiplexed worker's other leases may still finish
                slot.closing = True
            if slot.active == 0:
                slot.state = SlotState.IDLE
                if slot.closing:
                    self._retire(slot)
                else:
                    worker.reset_soon()  # e.g. /clear now, not when the next request binds
        self._notify()

    def _retire(self, slot: _Slot) -> None:
        if slot.state is SlotState.RETIRING:
            return
        slot.state = SlotState.RETIRING
        slot.scope.cancel()
        self._notify()

    # ------------------------------------------------------------------ workers

    async def _maintain(self) -> None:
        """Keep spares booted and boot for permit holders that wait; retire old idle workers."""
        while True:
            now = trio.current_time()
            while self._parked:
                oldest = next(iter(self._parked.values()))
                if now - oldest.since < self.config.park_ttl:
                    break
                self._reclaim(self._parked.pop(oldest.key))
            while self._queue and self._reclaim_for_pressure():
                pass  # tool-call parks whose grace ended give way to waiting requests
            for slot in list(self._slots.values()):
                if slot.state is SlotState.IDLE and (
                    now - slot.worker.started_at >= self.config.max_age
                ):
                    self._retire(slot)
            if not self._draining:
                self._spawn_as_needed(now)
            deadline = now + min(self.config.max_age, 60.0)
            if self._parked:
                oldest_since = next(iter(self._parked.values())).since
                deadline = min(deadline, oldest_since + self.config.park_ttl)
                if self._queue:
                    deadline = min(deadline, self._next_grace_end())
            if self._spawn_not_before > now:
                deadline = min(deadline, self._spawn_not_before)
            with trio.move_on_at(deadline):
                await self._maintainer_wake.wait()
            self._maintainer_wake = trio.Event()

    def _spawn_as_needed(self, now: float) -> None:
        counts = self._counts()
        failing = self._boot_failures_in_a_row > 0 or self._crashes_in_a_row > 0
        if now < self._spawn_not_before or (failing and counts["booting"] > 0):
            return  # backing off; while failing, boot one at a time
        max_procs = self.config.workers + self.config.spares
        live = counts["booting"] + counts["idle"] + counts["busy"] + counts["parked"]
        want = self.config.spares + self._wanting
        have = counts["booting"] + counts["idle_unbound"]
        while have < want:
            if live >= max_procs:
                if self._wanting == 0 or not self._evict_one():
                    return
                live -= 1
            self._spawn()
            live += 1
            have += 1
            if failing:
                return

    def _evict_one(self) -> bool:
        idle_bound = [
            s
            for s in self._slots.values()
            if s.state is SlotState.IDLE and s.worker.binding is not None
        ]
        if not idle_bound:
            return False
        self._retire(min(idle_bound, key=lambda s: s.last_used))
        return True

    def _spawn(self) -> None:
        assert self._nursery is not None
        worker_id = self._next_id
        self._next_id += 1
        worker = self._factory(worker_id)
        if isinstance(worker, ReportsUsage):
            worker.usage = self.usage
        slot = _Slot(worker)
        self._slots[worker_id] = slot
        self._nursery.start_soon(self._life, slot)

    async def _life(self, slot: _Slot) -> None:
        worker = slot.worker
        ready = _ReadySignal(lambda: self._on_booted(slot))
        failure: str | None = None
        try:
            with slot.scope:
                await worker.run(task_status=ready)
                # run() returns normally only when the process exited by itself
                failure = "the CLI process exited"
        except WorkerRetired:
            log.info("%s worker %d retired itself", self.name, worker.id)
        except BootError as exc:
            if slot.state is not SlotState.RETIRING:
                failure = str(exc)
            if exc.detail:
                log.warning("%s worker %d stderr tail:\n%s", self.name, worker.id, exc.detail)
        except Exception as exc:  # a bug or an OS error: keep the pool alive, count a failure
            failure = f"{type(exc).__name__}: {exc}"
            log.exception("%s worker %d failed", self.name, worker.id)
        finally:
            self._slots.pop(worker.id, None)
            for key, parked in list(self._parked.items()):
                if parked.slot is slot:  # died while parked: its permit goes back now
                    del self._parked[key]
                    self._release_permit()
            if failure is not None:
                self._last_error = failure
                if ready.booted:
                    self._crashes += 1
                    self._crashes_in_a_row += 1
                    log.warning("%s worker %d died: %s", self.name, worker.id, failure)
                else:
                    self._boot_failures += 1
                    self._boot_failures_in_a_row += 1
                    log.warning("%s worker %d failed to boot: %s", self.name, worker.id, failure)
                self._spawn_not_before = trio.current_time() + self._backoff()
            slot.state = SlotState.RETIRING
            self._notify()

    def _on_booted(self, slot: _Slot) -> None:
        self._boots += 1
        slot.last_used = trio.current_time()
        self._boot_failures_in_a_row = 0
        if slot.state is SlotState.BOOTING:
            slot.state = SlotState.IDLE
        self._notify()

    def _backoff(self) -> float:
        n = max(self._boot_failures_in_a_row, self._crashes_in_a_row)
        delay = self.config.restart_backoff_initial * 2 ** max(n - 1, 0)
        return float(min(delay, self.config.restart_backoff_max))

    # ------------------------------------------------------------------ state

    def _crash_looping(self) -> bool:
        limit = self.config.crash_loop_threshold
        return self._boot_failures_in_a_row >= limit or self._crashes_in_a_row >= limit

    def _counts(self) -> dict[str, int]:
        counts = dict.fromkeys(("booting", "idle", "idle_unbound", "busy", "parked", "retiring"), 0)
        for slot in self._slots.values():
            counts[slot.state.value] += 1
            if slot.worker.binding is None and self._has_room(slot):
                # a booted worker with room for one more unrelated lease
                counts["idle_unbound"] += 1
        return counts

    def _retry_after(self, position: int) -> float:
        return float(max(1, math.ceil((position + 1) * self._turn_seconds / self._permits_total)))

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()
        self._maintainer_wake.set()

    def _kick_maintainer(self) -> None:
        self._maintainer_wake.set()

    async def _wait_change(self) -> None:
        await self._changed.wait()

    def readiness(self) -> tuple[bool, str]:
        counts = self._counts()
        if self._draining:
            return False, "draining"
        if self._crash_looping():
            return False, f"{self.name} CLI is crash-looping: {self._last_error}"
        if counts["idle"] + counts["busy"] + counts["parked"] == 0:
            if self.config.spares == 0 and not self._last_error:
                # nothing is kept booted on purpose: the first request boots a worker
                return True, f"{self.name}: no worker yet (spares = 0: boots on demand)"
            if self._last_error:
                return False, f"no {self.name} worker booted yet (last error: {self._last_error})"
            return False, f"no {self.name} worker booted yet"
        return True, f"{self.name}: {counts['idle']} idle, {counts['busy']} busy"

    def statistics(self) -> PoolStatistics:
        now = trio.current_time()
        counts = self._counts()
        ready, reason = self.readiness()
        return PoolStatistics(
            name=self.name,
            ready=ready,
            reason=reason,
            workers=tuple(
                WorkerStats(
                    id=s.worker.id,
                    state=s.state.value,
                    pid=s.worker.pid,
                    age=now - s.worker.started_at,
                    turns=s.worker.turns,
                    bound=s.worker.binding is not None,
                    system_chars=len(s.worker.binding.system) if s.worker.binding else 0,
                    paused=s.worker.paused,
                )
                for s in self._slots.values()
            ),
            permits_total=self._permits_total,
            in_flight=self._permits_total - self._free_permits,
            parked=len(self._parked),
            queued=len(self._queue),
            booting=counts["booting"],
            idle=counts["idle"],
            served=self._served,
            rejected=self._rejected,
            restarts=self._crashes + self._boot_failures,
            boot_failures=self._boot_failures,
            crashes=self._crashes,
            timeouts=self._timeouts,
            draining=self._draining,
            reclaimed=self._reclaimed,
            retried=self._retried,
            boots=self._boots,
            worker_waits=self._worker_waits,
        )

    def statistics_dict(self) -> dict[str, Any]:
        """:meth:`statistics`, plus ``subscription``: the windows its CLI reported."""
        return {**attrs.asdict(self.statistics()), "subscription": self.usage.statistics()}
