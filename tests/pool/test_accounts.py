"""Several accounts of one backend, on scripted in-process workers under a MockClock:
routing to the least busy account, cool-downs on a rate limit or an expired login, the
turn that runs again on another account, and the error when no account is left.

Each account has its own pool and its own :class:`Plan`, so a test makes one account's
upstream refuse (``Plan.fails_with``) while the others serve.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import trio
import trio.testing

from clibridge._accounts import Account, AccountGroup
from clibridge._config import PoolConfig
from clibridge._errors import LoginExpired, UpstreamRateLimited
from clibridge._events import Event, Finished, Message, Request, TextDelta, TextPart, TurnStarted
from clibridge._models import ModelTable
from clibridge._pool import WorkerPool
from clibridge._supervisor import Supervisor
from clibridge._usage import UsageWindow
from clibridge.testing.scripted import Plan, ScriptedWorker

MODEL = "claude-sonnet-4-5"
CONFIG = PoolConfig(workers=2, spares=1, rate_limit_cooldown=60.0, login_recheck=30.0)


class Harness:
    def __init__(
        self,
        names: tuple[str, ...] = ("a", "b", "c"),
        implicit: bool = False,
        worker: type[ScriptedWorker] = ScriptedWorker,
    ) -> None:
        self.worker = worker
        self.plans = {name: Plan(boot_delay=1.0, turn_delay=0.5) for name in names}
        self.log: list[tuple[float, str, str]] = []
        accounts = [
            Account(name, WorkerPool(f"claude/{name}", CONFIG, self._factory(name)))
            for name in names
        ]
        if implicit:
            (account,) = accounts
            self.group = AccountGroup.of(account.pool)
        else:
            self.group = AccountGroup("claude", accounts)
        self.supervisor = Supervisor({"claude": self.group}, ModelTable(["claude"]))

    def _factory(self, name: str) -> Callable[[int], ScriptedWorker]:
        def make(worker_id: int) -> ScriptedWorker:
            return self.worker(worker_id, self.plans[name], _Tagged(name, self.log))

        return make

    def turns(self) -> list[str]:
        """The account of every turn, in order (a refused one too)."""
        return [name for _, what, name in self.log if what == "turn"]

    def refused(self) -> list[str]:
        return [name for _, what, name in self.log if what == "refused"]

    def account(self, name: str) -> dict[str, object]:
        stats = self.supervisor.statistics()["claude"]
        return next(a for a in stats["accounts"] if a["name"] == name)

    async def ask(
        self, seen: list[Event] | None = None, history: tuple[Message, ...] = ()
    ) -> list[Event]:
        seen = [] if seen is None else seen
        request = Request(model=MODEL, messages=(*history, Message("user", (TextPart("hi"),))))
        async with self.supervisor.turn(request) as events:
            async for event in events:
                seen.append(event)
        return seen


class _Tagged(list[tuple[float, str, int]]):
    """A worker's log that files each entry under its account's name."""

    def __init__(self, name: str, into: list[tuple[float, str, str]]) -> None:
        super().__init__()
        self._name = name
        self._into = into

    def append(self, entry: tuple[float, str, int]) -> None:
        self._into.append((entry[0], entry[1], self._name))


@pytest.fixture
async def h(nursery: trio.Nursery) -> Harness:
    harness = Harness()
    await nursery.start(harness.group.run)
    await trio.sleep(1.1)  # every account's spare has booted
    return harness


async def test_new_turns_go_to_the_least_busy_account(
    h: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(h.ask)
            await trio.sleep(0.01)  # each admitted before the next: the busy shares differ
    assert sorted(h.turns()) == ["a", "b", "c"]
    # all idle again: the first account in the configured order
    await h.ask()
    assert h.turns()[-1] == "a"


async def test_new_turns_move_away_from_an_account_close_to_its_limit(
    h: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    """Issue 16: before its limit is hit. "a" reported a window at 85% (warning at 80%):
    new turns go to "b" and "c" though "a" is first and idle; once every account is close,
    the least busy one serves again, and a window that was reset counts no more."""
    meter = h.group.accounts[0].pool.usage
    meter.update(UsageWindow("five_hour", used_percent=85.0, resets_at=time.time() + 3600))
    for _ in range(2):
        await h.ask()
    assert h.turns() == ["b", "b"]
    for account in h.group.accounts[1:]:
        account.pool.usage.update(UsageWindow("five_hour", used_percent=90.0))
    await h.ask()
    assert h.turns()[-1] == "a"  # all close: the configured order among the idle ones
    meter.update(UsageWindow("five_hour", used_percent=85.0, resets_at=time.time() - 1))
    for account in h.group.accounts[1:]:
        account.pool.usage.update(UsageWindow("five_hour", used_percent=10.0))
    await h.ask()
    assert h.turns()[-1] == "a"  # its window reset: no longer close


async def test_a_rate_limited_account_cools_down_and_the_turn_runs_on_another(
    h: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    h.plans["a"].fails_with = UpstreamRateLimited("429 from upstream", retry_after=90)
    events = await h.ask()
    # the client saw one whole answer; account a refused first, b served
    assert [type(e) for e in events] == [TurnStarted, TextDelta, Finished]
    assert h.turns() == ["a", "b"] and h.refused() == ["a"]
    a = h.account("a")
    assert a["state"] == "rate_limited" and a["available"] is False
    assert a["cooling_down_for"] == pytest.approx(90, abs=1)  # the delay the CLI announced
    assert "429 from upstream" in str(a["why"])
    # while it cools down, nothing goes to a
    for _ in range(3):
        await h.ask()
    assert "a" not in h.turns()[2:]
    # after the cool-down a takes turns again; a good one makes it healthy
    h.plans["a"].fails_with = None
    await trio.sleep(91)
    await h.ask()
    assert h.turns()[-1] == "a"
    assert h.account("a")["state"] == "healthy"


async def test_a_short_announced_delay_still_rests_rate_limit_cooldown(
    h: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    """claude announces only its own backoff between retries (a second or so), not when
    the limit resets: the account rests ``rate_limit_cooldown`` at least."""
    h.plans["a"].fails_with = UpstreamRateLimited("429", retry_after=0.5)
    await h.ask()
    assert h.account("a")["cooling_down_for"] == pytest.approx(60, abs=1)


async def test_an_expired_login_is_tried_again_later_with_a_doubling_delay(
    h: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    h.plans["a"].fails_with = LoginExpired("the claude login has expired: run claude setup-token")
    await h.ask()
    assert h.account("a")["state"] == "login_expired"
    assert h.account("a")["cooling_down_for"] == pytest.approx(30, abs=1)  # login_recheck
    await trio.sleep(31)
    await h.ask()  # a is tried again (first in order), still logged out: b serves
    assert h.refused() == ["a", "a"]
    assert h.account("a")["cooling_down_for"] == pytest.approx(60, abs=1)  # doubled
    h.plans["a"].fails_with = None  # the operator fixed the login
    await trio.sleep(61)
    await h.ask()
    assert h.turns()[-1] == "a" and h.account("a")["state"] == "healthy"


async def test_when_every_account_refuses_the_client_gets_the_soonest_retry_after(
    h: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    h.plans["a"].fails_with = UpstreamRateLimited("429", retry_after=300)
    h.plans["b"].fails_with = LoginExpired("401")
    h.plans["c"].fails_with = UpstreamRateLimited("429", retry_after=120)
    with pytest.raises(UpstreamRateLimited) as caught:
        await h.ask()
    assert h.refused() == ["a", "b", "c"]  # each account once, then the last resort
    # b's login is re-checked first (30 s): that is the soonest any account may serve
    assert caught.value.retry_after == 30
    assert "every claude account" in caught.value.message
    # a request meanwhile gets the same answer at once, without touching a worker
    with pytest.raises(UpstreamRateLimited):
        await h.ask()
    assert len(h.turns()) == 3
    ready = h.supervisor.readiness()
    assert not ready.ready and "rate limited" in ready.reason
    assert [a["state"] for a in ready.accounts["claude"]] == [
        "rate_limited",
        "login_expired",
        "rate_limited",
    ]
    await trio.sleep(10)
    stats = h.supervisor.statistics()["claude"]
    assert stats["in_flight"] == 0 and stats["queued"] == 0


async def test_every_login_expired_is_a_503_naming_the_accounts(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    h = Harness(("a", "b"))
    await nursery.start(h.group.run)
    for plan in h.plans.values():
        plan.fails_with = LoginExpired("the login has expired")
    with pytest.raises(LoginExpired) as caught:
        await h.ask()
    assert caught.value.status == 503 and "a: login expired" in caught.value.message


async def test_a_refusal_after_output_is_not_run_again_but_cools_the_account(
    h: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    seen: list[Event] = []
    h.plans["a"].fails_with = UpstreamRateLimited("429", retry_after=10)
    h.plans["a"].fails_after_text = True
    with pytest.raises(UpstreamRateLimited):
        await h.ask(seen)
    assert [type(e) for e in seen] == [TurnStarted, TextDelta]
    assert h.turns() == ["a"] and h.account("a")["state"] == "rate_limited"


async def test_without_accounts_nothing_cools_down(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """No accounts configured: the one implicit account is today's pool. Each request meets
    the upstream's answer itself, the statistics are the pool's own."""
    h = Harness(("default",), implicit=True)
    await nursery.start(h.group.run)
    await trio.sleep(1.1)
    h.plans["default"].fails_with = UpstreamRateLimited("429", retry_after=60)
    for _ in range(2):
        with pytest.raises(UpstreamRateLimited, match=r"^429$"):
            await h.ask()
    assert h.refused() == ["default", "default"]
    h.plans["default"].fails_with = None
    await h.ask(history=HISTORY)  # a miss, counted under the backend's name
    stats = h.supervisor.statistics()["claude"]
    assert stats["resume_miss_reasons"] == {"not_parked": 1}
    assert "accounts" not in stats and stats["name"] == "claude/default"
    assert h.supervisor.readiness().accounts == {}


class ParkingWorker(ScriptedWorker):
    """Keeps its conversation after a finished turn, as a claude worker does."""

    continues_finished_turns = True


#: the conversation after one turn of :meth:`Harness.ask`, as the client replays it
HISTORY = (Message("user", (TextPart("hi"),)), Message("assistant", (TextPart("hi"),)))


@pytest.fixture
async def parking(nursery: trio.Nursery) -> Harness:
    harness = Harness(("a", "b"), worker=ParkingWorker)
    await nursery.start(harness.group.run)
    await trio.sleep(1.1)
    return harness


async def test_a_conversation_continues_on_its_account(
    parking: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    h = parking
    await h.ask()
    assert h.turns() == ["a"] and len(h.group.parked()) == 1
    # b is idle, a holds the parked conversation: the follow-up still goes to a
    await h.ask(history=HISTORY)
    assert h.turns() == ["a", "a"]
    assert h.supervisor.statistics()["claude"]["resume_hits"] == 1


async def test_a_resumed_turn_its_account_refuses_runs_fresh_on_another_account(
    parking: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    h = parking
    await h.ask()
    h.plans["a"].fails_with = UpstreamRateLimited("429", retry_after=100)
    events = await h.ask(history=HISTORY)
    assert [type(e) for e in events] == [TurnStarted, TextDelta, Finished]
    assert h.turns() == ["a", "a", "b"] and h.refused() == ["a"]
    stats = h.supervisor.statistics()["claude"]
    assert stats["resume_hits"] == 1
    assert stats["resume_miss_reasons"] == {"account_trouble": 1}
    assert h.account("a")["state"] == "rate_limited"
    # the conversation now lives on b: the next follow-up resumes there
    await h.ask(history=(*HISTORY, Message("user", (TextPart("hi"),)), HISTORY[1]))
    assert h.turns()[-1] == "b"
    assert h.supervisor.statistics()["claude"]["resume_hits"] == 2


async def test_a_conversation_parked_on_a_cooling_account_starts_fresh_elsewhere(
    parking: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    h = parking
    await h.ask()
    a = h.group.accounts[0]
    h.group.cool_down(a, LoginExpired("the login has expired"))
    assert h.group.parked() == []  # a's conversation is not offered while a rests
    await h.ask(history=HISTORY)
    assert h.turns() == ["a", "b"]
    assert h.supervisor.statistics()["claude"]["resume_miss_reasons"] == {"not_parked": 1}
