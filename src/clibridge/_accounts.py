"""Several logins of one backend: an account = a spawn home + a pool; route to the least busy
healthy one, cool down the ones the upstream turned away.

Theory of operation
-------------------
An :class:`AccountGroup` stands where one :class:`~clibridge._pool.WorkerPool` stood: the
supervisor holds one group per backend and talks to it through the pool's interface
(``lease``, ``resume``, ``parked``, ``readiness``, ``statistics_dict``, ``begin_drain``,
``wait_idle``, ``run``). Each :class:`Account` owns a pool whose workers run in that
account's spawn home, with that account's login (see ``_supervisor.serve``).

* **A new lease** goes to the least busy account (:meth:`WorkerPool.busy_share`) among
  those not cooling down, preferring accounts whose pool is ready, then accounts whose
  subscription is not close to its limit (a window at ``usage_warning`` percent or more, as
  the CLI reported it: :meth:`clibridge._usage.UsageMeter.near_limit`), then the configured
  order. So new conversations move away from an account before its limit is hit; its
  parked conversations still continue on it.
* **A resume** goes to the account whose pool holds the parked conversation: a
  conversation stays on its account. :meth:`AccountGroup.parked` lists only the
  conversations of accounts that are not cooling down, so a follow-up to a conversation
  parked on a cooling account starts fresh (whole history) on another account.
* **Cooling down.** A turn that fails with :class:`~clibridge._errors.UpstreamRateLimited`
  or :class:`~clibridge._errors.LoginExpired` (:data:`ACCOUNT_TROUBLE`) cools its account
  down: rate-limited for the delay the CLI announced (``retry_after``: codex's usage
  limit names its reset, "try again in 3 hours"), at least ``rate_limit_cooldown`` (claude
  announces only its own backoff between retries, seconds, not when the limit resets);
  login expired for ``login_recheck`` (a codex login can be
  fixed while clibridge runs: ``clibridge login codex --account NAME``; a claude token is
  read at start, so a new one needs a restart).
  Each further failure of the account without a good turn in between doubles the delay,
  up to 16 times. When the delay has passed the account takes requests again; the next
  good turn makes it healthy (and resets the doubling), a failure cools it down again.
  The supervisor runs a request that hit a cooling account again on another one when it
  had produced no output yet. Only when every account is cooling down does a lease fail:
  429 when one is rate-limited, else 503 (login expired), with the soonest end of a
  cool-down as Retry-After.

State per account (one clock: ``until``, compared to ``trio.current_time()``)::

    healthy --rate-limited--> rate_limited --until passes--> (available; still counted)
    healthy --login expired--> login_expired --until passes--> (available; still counted)
    any --a good turn--> healthy (the doubling starts over)

With no accounts configured the group holds one implicit account (the login of the
environment), never cools it down (each request meets the upstream's answer itself, as
before accounts existed) and reports exactly its pool's statistics and readiness.
"""

from __future__ import annotations

import enum
import logging
import math
import time
from collections.abc import AsyncIterator, Collection, Hashable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import attrs
import trio

from ._errors import BridgeError, LoginExpired, UnavailableError, UpstreamRateLimited
from ._pool import Lease, WorkerPool
from ._worker import Binding

__all__ = ["ACCOUNT_TROUBLE", "Account", "AccountGroup", "AccountState"]

log = logging.getLogger("clibridge")

#: errors that say something about the account rather than the request: its login is
#: rate-limited or no longer valid
ACCOUNT_TROUBLE: tuple[type[BridgeError], ...] = (UpstreamRateLimited, LoginExpired)

#: a cool-down doubles with each failure in a row, at most this many times (x16)
_MAX_DOUBLINGS = 4


class AccountState(enum.Enum):
    HEALTHY = "healthy"
    RATE_LIMITED = "rate_limited"
    LOGIN_EXPIRED = "login_expired"


#: the state an account trouble puts an account in
_TROUBLE_STATE: dict[type[BridgeError], AccountState] = {
    UpstreamRateLimited: AccountState.RATE_LIMITED,
    LoginExpired: AccountState.LOGIN_EXPIRED,
}


@attrs.define(eq=False)
class Account:
    """One login of a backend and the pool that runs in its spawn home."""

    name: str
    pool: WorkerPool
    state: AccountState = AccountState.HEALTHY
    #: end of the cool-down (trio clock); meaningless while healthy
    until: float = 0.0
    #: what the upstream said, for /readyz, /v1/stats and the error of the last resort
    why: str = ""
    #: failures in a row without a good turn between (the cool-down doubles with each)
    failures: int = 0
    #: how often it was cooled down, ever
    cooldowns: int = 0

    def available(self, now: float) -> bool:
        return self.state is AccountState.HEALTHY or now >= self.until

    def describe(self, now: float) -> dict[str, Any]:
        """The account's state as /readyz and /v1/stats show it (never a token)."""
        cooling = not self.available(now)
        ready, reason = self.pool.readiness()
        out: dict[str, Any] = {
            "name": self.name,
            "state": self.state.value,
            "available": not cooling,
            "ready": ready and not cooling,
            "pool": reason,
            "cooldowns": self.cooldowns,
        }
        if self.state is not AccountState.HEALTHY:
            left = max(0.0, self.until - now)
            out["cooling_down_for"] = round(left, 1)
            out["until"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + left))
            out["why"] = self.why
        return out


class AccountGroup:
    """The accounts of one backend behind the pool interface (module doc)."""

    def __init__(self, name: str, accounts: Sequence[Account], *, implicit: bool = False) -> None:
        if not accounts:
            raise ValueError("an account group needs at least one account")
        if implicit and len(accounts) != 1:
            raise ValueError("an implicit account group has exactly one account")
        self.name = name
        self.accounts = tuple(accounts)
        #: one account nobody configured: no cool-downs, the pool's own statistics
        self.implicit = implicit
        self.config = accounts[0].pool.config

    @classmethod
    def of(cls, pool: WorkerPool) -> AccountGroup:
        """The implicit group of one pool (no accounts configured)."""
        return cls(pool.name, [Account("default", pool)], implicit=True)

    @property
    def reroutes(self) -> bool:
        """A request turned away by one account may run again on another."""
        return not self.implicit

    # ------------------------------------------------------------------ life

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run every account's pool; started when all of them are."""
        async with trio.open_nursery() as nursery:
            for account in self.accounts:
                await nursery.start(account.pool.run)
            task_status.started()

    def begin_drain(self) -> None:
        for account in self.accounts:
            account.pool.begin_drain()

    async def wait_idle(self) -> None:
        for account in self.accounts:
            await account.pool.wait_idle()

    # ------------------------------------------------------------------ routing

    @asynccontextmanager
    async def lease(
        self,
        binding: Binding,
        *,
        reuse_finished: bool = False,
        avoid: Collection[Account] = (),
    ) -> AsyncIterator[Lease]:
        """A lease from the least busy available account not in ``avoid``; raises the
        error of the last resort (:meth:`unavailable`) when there is none."""
        account = self._choose(avoid)
        async with account.pool.lease(binding, reuse_finished=reuse_finished) as lease:
            with self._watching(account):
                yield lease

    @asynccontextmanager
    async def resume(self, key: Hashable) -> AsyncIterator[Lease | None]:
        """Take up the lease parked under ``key`` on the account that holds it (None when
        there is none any more)."""
        account = next((a for a in self.accounts if a.pool.holds_parked(key)), None)
        if account is None:
            yield None
            return
        async with account.pool.resume(key) as lease:
            if lease is None:
                yield None
                return
            with self._watching(account):
                yield lease

    def parked(self) -> list[object]:
        """What the parked leases hold, of the accounts not cooling down."""
        now = trio.current_time()
        return [held for a in self.accounts if a.available(now) for held in a.pool.parked()]

    def account_of(self, lease: Lease) -> Account:
        return next(a for a in self.accounts if a.pool is lease.pool)

    def _choose(self, avoid: Collection[Account]) -> Account:
        if self.implicit:
            return self.accounts[0]
        now = trio.current_time()
        candidates = [
            (not a.pool.readiness()[0], a.pool.usage.near_limit(), a.pool.busy_share(), n, a)
            for n, a in enumerate(self.accounts)
            if a.available(now) and a not in avoid
        ]
        if not candidates:
            raise self.unavailable()
        return min(candidates, key=lambda c: c[:4])[4]

    # ------------------------------------------------------------------ cool-downs

    @contextmanager
    def _watching(self, account: Account) -> Iterator[None]:
        """Cool ``account`` down when the lease ends in account trouble; a lease that ends
        well makes it healthy."""
        try:
            yield
        except ACCOUNT_TROUBLE as exc:
            self.cool_down(account, exc)
            raise
        else:
            if account.state is not AccountState.HEALTHY or account.failures:
                if account.state is not AccountState.HEALTHY:
                    log.info(
                        "%s account %s: a turn went through again: healthy",
                        self.name,
                        account.name,
                    )
                account.state = AccountState.HEALTHY
                account.failures = 0
                account.why = ""

    def cool_down(self, account: Account, exc: BridgeError) -> None:
        """Cool ``account`` down for ``exc`` (module doc); nothing for the implicit one."""
        if self.implicit:
            return
        state = next(s for kind, s in _TROUBLE_STATE.items() if isinstance(exc, kind))
        now = trio.current_time()
        if state is AccountState.RATE_LIMITED:
            base = max(exc.retry_after or 0.0, self.config.rate_limit_cooldown)
        else:
            base = self.config.login_recheck
        if not account.available(now):
            # another turn on the account met the same answer meanwhile: the same failure
            delay = base * 2 ** min(max(account.failures - 1, 0), _MAX_DOUBLINGS)
            account.until = max(account.until, now + delay)
            return
        account.failures += 1
        account.cooldowns += 1
        delay = base * 2 ** min(account.failures - 1, _MAX_DOUBLINGS)
        account.state = state
        account.until = now + delay
        account.why = exc.message
        others = [a.name for a in self.accounts if a is not account and a.available(now)]
        log.warning(
            "%s account %s: %s; cooling down for %g s (%s)",
            self.name,
            account.name,
            "rate-limited" if state is AccountState.RATE_LIMITED else "login expired",
            delay,
            f"requests go to {', '.join(others)}"
            if others
            else "no other account is available now",
        )

    def unavailable(self) -> BridgeError:
        """The error of the last resort: every account is cooling down."""
        now = trio.current_time()
        cooling = [a for a in self.accounts if not a.available(now)]
        soonest = max(1, math.ceil(min((a.until for a in cooling), default=now) - now))
        desc = "; ".join(
            f"{a.name}: {a.state.value.replace('_', ' ')} for {max(0.0, a.until - now):.0f} s "
            f"more ({a.why})"
            for a in cooling
        )
        if any(a.state is AccountState.RATE_LIMITED for a in cooling):
            return UpstreamRateLimited(
                f"every {self.name} account is rate-limited or logged out; retry in "
                f"{soonest} s ({desc})",
                retry_after=soonest,
            )
        if cooling:
            return LoginExpired(
                f"the login of every {self.name} account has expired ({desc})",
                retry_after=soonest,
            )
        return UnavailableError(f"no {self.name} account can take the request", retry_after=1)

    # ------------------------------------------------------------------ reporting

    def account_states(self) -> list[dict[str, Any]]:
        """Each configured account's state (empty for the implicit one)."""
        if self.implicit:
            return []
        now = trio.current_time()
        return [a.describe(now) for a in self.accounts]

    def readiness(self) -> tuple[bool, str]:
        if self.implicit:
            return self.accounts[0].pool.readiness()
        now = trio.current_time()
        states = [a.describe(now) for a in self.accounts]
        ready = any(s["ready"] for s in states)
        parts = []
        for s in states:
            if not s["available"]:
                parts.append(
                    f"{s['name']} {s['state'].replace('_', ' ')} for {s['cooling_down_for']:g} s"
                )
            else:
                parts.append(f"{s['name']} ({s['pool']})")
        return ready, f"{self.name} accounts: " + ", ".join(parts)

    def statistics_dict(self) -> dict[str, Any]:
        """The pool statistics summed over the accounts (the keys of one pool's), plus
        ``accounts``: each one's state and its own pool's statistics."""
        if self.implicit:
            return self.accounts[0].pool.statistics_dict()
        pools = [a.pool.statistics_dict() for a in self.accounts]
        out: dict[str, Any] = {}
        for key, value in pools[0].items():
            if isinstance(value, bool):
                out[key] = any(p[key] for p in pools)
            elif isinstance(value, int):
                out[key] = sum(p[key] for p in pools)
        out["name"] = self.name
        out["ready"], out["reason"] = self.readiness()
        out["workers"] = [
            {**w, "account": a.name}
            for a, p in zip(self.accounts, pools, strict=True)
            for w in p["workers"]
        ]
        out["accounts"] = [
            {**a.describe(trio.current_time()), "stats": p}
            for a, p in zip(self.accounts, pools, strict=True)
        ]
        return out
