"""What the backends' workers share: the contract's fields and the one-conversation reset.

Theory of operation
-------------------
:class:`WorkerBase` sets the fields of :class:`clibridge._worker.Worker` every driver keeps
(``id``, ``binding``, ``turns``, ``started_at``, ``healthy``, ``pid``) and the two every
driver reads (its pool settings and the nursery its background tasks run in), once.

:class:`OneConversationWorker` is the part the drivers whose process holds one
conversation at a time share (claude stream-json, the interactive claude in tmux; not
codex, whose threads are per request):

* **one call at a time** -- :meth:`~OneConversationWorker._enter` refuses a second bind or
  turn while one runs (a bug in the caller) and a worker that is not usable;
* **the reset between conversations** -- a turn leaves the process holding its
  conversation (``_dirty``). When the pool releases the worker idle,
  :meth:`~OneConversationWorker.reset_soon` starts the driver's :meth:`_clear` in the
  worker's own nursery, marked busy meanwhile, so that work is off the next request's
  path; :meth:`~OneConversationWorker._reset_done` (the start of ``bind``) waits for the
  rest of it. A reset that fails makes the worker unhealthy: the pool retires it.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Iterable
from typing import ClassVar

import trio

from .._config import PoolConfig
from .._errors import BridgeError
from .._worker import Binding, WorkerUnusable

__all__ = ["OneConversationWorker", "WorkerBase"]

log = logging.getLogger(__name__)


class WorkerBase:
    """The :class:`~clibridge._worker.Worker` fields every driver keeps."""

    def __init__(self, id: int, pool: PoolConfig) -> None:
        self.id = id
        #: None until bound (a multiplexed worker is never bound)
        self.binding: Binding | None = None
        self.turns = 0
        self.started_at = 0.0
        self.healthy = True
        self.pid: int | None = None
        self._pool = pool
        #: the nursery the worker's background tasks run in, once it runs
        self._nursery: trio.Nursery | None = None

    def _unhealthy(self) -> None:
        """Not to be reused (the pool retires it): e.g. the CLI session's crash callback."""
        self.healthy = False


class OneConversationWorker(WorkerBase, abc.ABC):
    """A worker whose process holds one conversation at a time (module doc)."""

    #: how logs and errors name a worker of this driver ("claude worker 3")
    label: ClassVar[str] = "worker"
    #: one conversation per process, continued across turns
    continues_finished_turns = True

    def __init__(self, id: int, pool: PoolConfig) -> None:
        super().__init__(id, pool)
        self._busy = False
        #: the conversation holds a turn: reset (``_clear``) before another one
        self._dirty = False
        #: set when the background reset started by reset_soon has ended
        self._reset: trio.Event | None = None

    @property
    @abc.abstractmethod
    def paused(self) -> bool:
        """Mid-turn, waiting for the client's tool results."""

    @abc.abstractmethod
    def _alive(self) -> bool:
        """The CLI process runs."""

    @abc.abstractmethod
    async def _clear(self) -> None:
        """Start a new conversation in the process (``/clear``); clears ``_dirty``."""

    def drop_paused_calls(self, call_ids: Iterable[str]) -> bool:
        """False: the CLI's one conversation waits in the process; retiring it ends it."""
        return False

    def _enter(self) -> None:
        """Mark the worker busy for one bind or turn; WorkerUnusable when it cannot serve."""
        if self._busy:
            raise RuntimeError(f"{self.label} {self.id} is already serving a call")
        if not self.healthy or not self._alive():
            raise WorkerUnusable(f"{self.label} {self.id} is not usable")
        self._busy = True

    def reset_soon(self) -> None:
        """Released idle with a conversation in it: ``/clear`` now, in the background."""
        if (
            not self._dirty
            or self._busy
            or self.paused
            or self._nursery is None
            or not self.healthy
            or not self._alive()
        ):
            return
        self._reset = trio.Event()
        self._busy = True  # the reset is an exchange: no bind or turn meanwhile
        self._nursery.start_soon(self._reset_in_background, self._reset)

    async def _reset_in_background(self, done: trio.Event) -> None:
        try:
            await self._clear()
        except BridgeError as exc:
            log.info("%s %d: /clear on release failed: %s", self.label, self.id, exc.message)
            self._unhealthy()
        finally:
            self._busy = False
            done.set()

    async def _reset_done(self) -> None:
        """Wait for the rest of the reset :meth:`reset_soon` started, if any."""
        if self._reset is not None:
            await self._reset.wait()
            self._reset = None
