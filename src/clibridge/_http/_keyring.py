"""The server's view of the named keys: who a key is, and whether its quotas admit one more.

Theory of operation
-------------------
A :class:`KeyRing` holds the keys of :mod:`clibridge._keys` in memory, so admission
never touches the disk: :meth:`KeyRing.authenticate` is a dict lookup by the key's
SHA-256 digest. Its :meth:`KeyRing.run` task looks at the file every ``poll_interval``:
a ``stat`` (inode, size, modification time) that has not moved since the last sync, with no
tokens to write, ends the look there. Otherwise it syncs in a worker thread: it writes the
tokens counted since the last sync and, when ``PRAGMA data_version`` says another
connection (``clibridge keys add`` / ``set`` / ``revoke``, another server) committed,
reloads the keys and today's token counts. A revoked key is refused, and a key's changed
quotas apply, from the next sync on (half a second by default), without a restart.

Why the stat can be trusted: SQLite (rollback journal, the default this file keeps) writes
the database file itself on every commit, so its size or modification time moves -- except
for two commits within one tick of the file system's clock. A file modified less than
:data:`_RACY` seconds ago is therefore always synced (git's "racy clean" rule), and the
stat is taken *before* the sync, so a commit during the sync is seen at the next look.

Quotas, all per key and all decided synchronously (no checkpoint between the check and
the count, so concurrent requests cannot both take the last unit):

- *concurrency*: requests in flight; :meth:`KeyRing.admit` takes one and hands back an
  :class:`Admission` whose :meth:`~Admission.release` gives it back, once, however
  often it is called;
- *rpm*: a sliding window of the admission times of the last 60 seconds;
- *daily_tokens*: tokens (input, cache and output, as the CLI reported them) counted
  per UTC day by :meth:`KeyRing.count_tokens` when a request ends, kept in the file so
  a restart keeps today's count. A request running when the limit is reached finishes;
  the next one is refused.

A refused request gets :class:`~clibridge._errors.QuotaExceeded` (429) naming the limit,
with a ``retry_after``: when the oldest request leaves the window, when the day ends, or
one second for concurrency.
"""

from __future__ import annotations

import collections
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path

import attrs
import trio

from .._errors import QuotaExceeded
from .._keys import (
    DEFAULT_KEY_NAME,
    KeyRecord,
    KeyStore,
    find_key,
    seconds_to_midnight,
    today,
)
from ._record import RequestRecord

log = logging.getLogger("clibridge.http")

#: the RPM window (seconds)
_WINDOW = 60.0
#: a keys file modified this recently is synced even when its stat looks unchanged
_RACY = 1.0

#: (inode, size, modification time in ns): what a look at the keys file compares
FileStamp = tuple[int, int, int]


def file_stamp(path: Path, *, now: float | None = None) -> FileStamp | None:
    """The file's stamp, or None when it cannot be trusted to show the next change (no
    file, or modified within :data:`_RACY` seconds)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if (time.time() if now is None else now) - st.st_mtime < _RACY:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


@attrs.define(eq=False)
class Admission:
    """One admitted request's hold on its key's concurrency quota."""

    _ring: KeyRing
    name: str
    released: bool = False

    def release(self) -> None:
        """Give the concurrency unit back (idempotent)."""
        if not self.released:
            self.released = True
            self._ring._release(self.name)


class KeyRing:
    """The named keys and their quotas, for one server (see the module doc)."""

    def __init__(
        self, state_dir: Path | None, *, required: bool = False, poll_interval: float = 0.5
    ) -> None:
        self._state_dir = state_dir
        #: a key is needed even when none exists (a server off loopback: revoking the last
        #: key must not open it to everyone)
        self.required = required
        self._poll_interval = poll_interval
        self._store: KeyStore | None = None
        self._version: int | None = None
        self._keys: dict[bytes, KeyRecord] = {}
        self._in_flight: dict[str, int] = collections.defaultdict(int)
        self._recent: dict[str, collections.deque[float]] = collections.defaultdict(
            collections.deque
        )
        self._day = today()
        #: today's tokens by key name: the file's count plus what is not written yet
        self._tokens: dict[str, int] = collections.defaultdict(int)
        #: tokens not written yet, by (day, key name)
        self._pending: dict[tuple[str, str], int] = collections.defaultdict(int)
        self._reload_now = False
        #: the keys file's stamp before the last sync (None: sync at the next look)
        self._stamp: FileStamp | None = None
        #: syncs with the file (worker-thread hops); tests and statistics read it
        self.syncs = 0

    @property
    def active(self) -> bool:
        """Whether a request needs a key: any named key exists, or :attr:`required`."""
        return self.required or bool(self._keys)

    def names(self) -> list[str]:
        return sorted(record.name for record in self._keys.values())

    # -------------------------------------------------------------- admission

    def authenticate(self, presented: str) -> KeyRecord | None:
        """The key ``presented`` is, or None (unknown or revoked)."""
        return find_key(self._keys, presented)

    def admit(self, record: KeyRecord) -> Admission:
        """Count one request against ``record``'s quotas, or raise QuotaExceeded."""
        name, quotas = record.name, record.quotas
        if quotas.daily_tokens is not None:
            self._roll_day()
            used = self._tokens.get(name, 0)
            if used >= quotas.daily_tokens:
                raise QuotaExceeded(
                    f"key {name!r} used {used} of its {quotas.daily_tokens} tokens for today "
                    "(daily_tokens quota; it resets at 00:00 UTC)",
                    retry_after=seconds_to_midnight(),
                )
        if quotas.concurrency is not None and self._in_flight[name] >= quotas.concurrency:
            raise QuotaExceeded(
                f"key {name!r} already has {self._in_flight[name]} requests in flight, its "
                f"concurrency quota is {quotas.concurrency}; retry when one has finished",
                retry_after=1,
            )
        if quotas.rpm is not None:
            now = trio.current_time()
            recent = self._recent[name]
            while recent and recent[0] <= now - _WINDOW:
                recent.popleft()
            if len(recent) >= quotas.rpm:
                raise QuotaExceeded(
                    f"key {name!r} made {len(recent)} requests in the last minute, its rpm "
                    f"quota is {quotas.rpm}",
                    retry_after=recent[0] + _WINDOW - now,
                )
            recent.append(now)
        self._in_flight[name] += 1
        return Admission(self, name)

    def _release(self, name: str) -> None:
        self._in_flight[name] -= 1
        if not self._in_flight[name]:
            del self._in_flight[name]

    def in_flight(self, name: str) -> int:
        return self._in_flight.get(name, 0)

    def count_tokens(self, name: str, tokens: int) -> None:
        """Count ``tokens`` against ``name``'s day (written to the file at the next sync)."""
        if tokens <= 0:
            return
        self._roll_day()
        self._tokens[name] += tokens
        self._pending[(self._day, name)] += tokens

    def observe(self, record: RequestRecord) -> None:
        """A request observer: count a named key's tokens when its request ends."""
        if record.key is None or record.key == DEFAULT_KEY_NAME:
            return
        tokens = (
            (record.input_tokens or 0)
            + (record.output_tokens or 0)
            + (record.cache_read_tokens or 0)
            + (record.cache_write_tokens or 0)
        )
        self.count_tokens(record.key, tokens)

    def tokens_today(self, name: str) -> int:
        self._roll_day()
        return self._tokens.get(name, 0)

    def _roll_day(self) -> None:
        day = today()
        if day != self._day:
            self._day = day
            self._tokens = collections.defaultdict(int)
            self._reload_now = True

    # -------------------------------------------------------------- the file

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Load the keys, report started, then keep in sync with the file until cancelled;
        the last sync (the counted tokens) is shielded and runs on the way out."""
        if self._state_dir is None:
            task_status.started()
            return
        state_dir = self._state_dir
        self._store = await trio.to_thread.run_sync(KeyStore.open, state_dir)
        try:
            await self.sync()
            log.info(
                "named keys: %s",
                ", ".join(self.names()) if self._keys else "none (clibridge keys add NAME)",
            )
            task_status.started()
            while True:
                await trio.sleep(self._poll_interval)
                try:
                    await self.look()
                except Exception as exc:  # a locked or broken file: keep the last keys
                    log.warning("cannot read the keys file %s: %s", self._store.path, exc)
        finally:
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + 5.0
                try:
                    await self.sync()
                except Exception as exc:
                    log.warning("cannot write today's token counts: %s", exc)
                store, self._store = self._store, None
                await trio.to_thread.run_sync(store.close)

    async def look(self) -> None:
        """Sync unless there is nothing to write and the file's stamp has not moved."""
        store = self._store
        if store is None:
            return
        self._roll_day()
        if (
            not self._pending
            and not self._reload_now
            and self._stamp is not None
            and file_stamp(store.path) == self._stamp
        ):
            return
        await self.sync()

    async def sync(self) -> None:
        """Write the counted tokens; reload keys and counts if the file changed."""
        store = self._store
        if store is None:
            return
        self._roll_day()
        stamp = file_stamp(store.path)
        pending, self._pending = self._pending, collections.defaultdict(int)
        day, force = self._day, self._reload_now
        self._reload_now = False
        try:
            version, records, tokens = await trio.to_thread.run_sync(
                _sync, store, pending, day, None if force else self._version
            )
        except BaseException:
            for where, n in pending.items():
                self._pending[where] += n
            self._reload_now = self._reload_now or force
            self._stamp = None
            raise
        self.syncs += 1
        self._stamp = stamp
        self._version = version
        if records is not None and tokens is not None:
            before = {r.name: r for r in self._keys.values()}
            self._keys = {record.digest: record for record in records}
            if {r.name for r in records} != before.keys():
                log.info("named keys now: %s", ", ".join(self.names()) or "none")
            for record in records:
                old = before.get(record.name)
                if old is not None and old.digest == record.digest and old != record:
                    log.info("key %r now has %s", record.name, record.quotas)
            if day == self._day:
                # counted meanwhile (not in the file yet) on top of the file's count
                fresh: dict[str, int] = collections.defaultdict(int, tokens)
                for (d, name), n in self._pending.items():
                    if d == day:
                        fresh[name] += n
                self._tokens = fresh


def _sync(
    store: KeyStore, pending: Mapping[tuple[str, str], int], day: str, version: int | None
) -> tuple[int, list[KeyRecord] | None, dict[str, int] | None]:
    """In a worker thread: write ``pending``, reload when the data version moved."""
    by_day: dict[str, dict[str, int]] = collections.defaultdict(dict)
    for (d, name), n in pending.items():
        by_day[d][name] = n
    for d, counts in by_day.items():
        store.add_tokens(d, counts)
    now = store.data_version()
    if now == version:
        return now, None, None
    return now, store.records(), store.tokens_on(day)
