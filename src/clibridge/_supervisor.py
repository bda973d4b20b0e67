"""The root of the process: one nursery that owns the janitor, the pools and the HTTP server.

Theory of operation
-------------------
``run(config)`` is what ``clibridge serve`` calls. It picks the backends (a logged-in CLI,
or the bundled fake CLI, loudly), starts the janitor, starts one :class:`WorkerPool` per
backend and the HTTP server in one root nursery, and waits for SIGTERM / SIGINT. Then it
drains: the pools stop admitting (new requests get 503), the HTTP server stops accepting
and open streams are told to finish; in-flight turns get ``drain_timeout`` to finish before
everything is cancelled, which kills every worker's process group. Exit code 0.

:class:`Supervisor` is the :class:`~clibridge._service.TurnService` the HTTP layer talks to:
it resolves the model name through the models table, leases a worker from the right pool
with the request's binding (system prompt, tool set, CLI model) and hands back the
worker's event stream.

One retry: a turn whose worker failed it before it produced any output -- the claude CLI
did not take the request's tools, or the CLI process died (a codex app-server serves many
requests, so one crash fails them all) -- runs once more on another worker with the whole
history, on the same pool permit (:meth:`~clibridge._pool.Lease.move_to_another_worker`).
"Output" is any event but ``TurnStarted``; the retry's own ``TurnStarted`` is not repeated
to the client. A turn that had produced output, or that fails again, gets the error, whose
message says why it was not retried.

Accounts: each backend is an :class:`~clibridge._accounts.AccountGroup` (one pool per
configured login, or one implicit account). A turn turned away by its account (rate-limited,
login expired) before it produced any output runs again, with the whole history, on another
account of the backend; the group has cooled the first one down. A continued conversation
stays on its account; when that account is cooling down, the follow-up starts fresh on
another one.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import json
import logging
import os
import shutil
import signal
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Collection, Mapping, Sequence
from contextlib import aclosing, asynccontextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ._accounts import ACCOUNT_TROUBLE, Account, AccountGroup
from ._backends import BACKENDS, FAKE_FALLBACK, Backend, account_state_dir, backend
from ._config import Config
from ._conversations import (
    Conversation,
    Match,
    OneShotWatch,
    ToolResume,
    assistant_message,
    best_match,
    canonical_id,
    conversation_key,
    items,
    new_call_id,
    setup_digest,
)
from ._errors import BridgeError, CliCrashed, OutputInvalid, ToolsUnavailable
from ._events import (
    Completion,
    Event,
    Finished,
    FinishReason,
    Message,
    OutputFormat,
    Request,
    Route,
    TextDelta,
    TextPart,
    ToolCallStart,
    TurnStarted,
    collect,
)
from ._formats import FormatMismatch, retry_prompt, with_instruction
from ._formats import check as check_format
from ._models import ModelTable
from ._output import limit_output
from ._pool import Lease, WorkerPool
from ._service import BackendReadiness, ModelInfo, Readiness
from ._worker import Binding

if TYPE_CHECKING:
    from ._janitor import Janitor

log = logging.getLogger("clibridge")

#: the bundled fake CLIs (the tests' names for :attr:`Backend.fake_command
#: <clibridge._backends.Backend.fake_command>`)
FAKE_CLAUDE_COMMAND = backend("claude").fake_command
FAKE_CODEX_COMMAND = backend("codex").fake_command

#: failures of the worker rather than of the request: a turn that produced no output yet
#: runs once more on another worker (see :meth:`Supervisor._retrying`)
RETRY_ON_ANOTHER_WORKER: tuple[type[BridgeError], ...] = (ToolsUnavailable, CliCrashed)


def tools_key(request: Request) -> tuple[str, ...]:
    """A canonical, hashable form of the request's tool set (for worker reuse)."""
    return tuple(
        json.dumps([t.name, t.description, t.input_schema], sort_keys=True, separators=(",", ":"))
        for t in sorted(request.tools, key=lambda t: t.name)
    )


class Supervisor:
    """Routes neutral requests to the pools. Implements ``TurnService``."""

    def __init__(
        self,
        pools: Mapping[str, WorkerPool | AccountGroup],
        table: ModelTable,
        *,
        fake: bool = False,
        fake_on_purpose: bool = False,
        janitor: Janitor | None = None,
    ) -> None:
        #: one account group per backend (a bare pool is the group of its implicit account)
        self.pools: dict[str, AccountGroup] = {
            name: p if isinstance(p, AccountGroup) else AccountGroup.of(p)
            for name, p in pools.items()
        }
        #: each group's backend name (a group's own name may differ: a bare pool's)
        self._backend_of = {group: name for name, group in self.pools.items()}
        #: its state shows in readiness() while it is being restarted
        self.janitor = janitor
        self.table = table
        self.fake = fake
        #: the fake serves because ``backend = "fake"`` asked for it, not for want of a login
        self.fake_on_purpose = fake_on_purpose
        #: per continuable backend; the parked conversations themselves live in its pool
        self._one_shot = {name: OneShotWatch() for name in self.pools if _continuable(name)}
        #: continuation outcomes per backend: "hits", and misses by reason
        self._resumes: dict[str, collections.Counter[str]] = {
            name: collections.Counter() for name in self.pools
        }

    @asynccontextmanager
    async def turn(self, request: Request) -> AsyncIterator[AsyncIterator[Event]]:
        """Run ``request``'s turn as the client asked for it: stop strings and
        ``max_tokens`` cut the event stream (:mod:`clibridge._output`; leaving the turn
        early interrupts the CLI), a JSON ``output_format`` is checked and retried once
        (:meth:`_formatted`). Admission errors are raised on entering."""
        fmt = request.output_format
        if fmt is not None:
            request = attrs.evolve(request, system=with_instruction(request.system, fmt))
        async with contextlib.AsyncExitStack() as stack:
            events = await stack.enter_async_context(self._routed(request))
            out: AsyncGenerator[Event, None] = limit_output(
                events, request.stop, request.max_tokens
            )
            if fmt is not None:
                out = self._formatted(stack, out, request, fmt)
            try:
                yield out
            finally:
                await out.aclose()

    async def _formatted(
        self,
        stack: contextlib.AsyncExitStack,
        first: AsyncIterator[Event],
        request: Request,
        fmt: OutputFormat,
    ) -> AsyncGenerator[Event, None]:
        """The turn's events once its reply matches ``fmt``; else one more turn of the same
        conversation (the invalid reply, then what was wrong with it), else OutputInvalid.

        The reply's text is held back until it is checked (a streaming client sees
        keepalives meanwhile) and then sent in one piece; a turn that ends otherwise than
        with text (tool calls, max_tokens, a stop string) passes unchecked.
        """
        held: list[Event] = []
        async with aclosing(first):  # type: ignore[type-var]
            async for event in first:
                if isinstance(event, TurnStarted):
                    yield event
                else:
                    held.append(event)
        verdict = _judged(request.model, held, fmt)
        if not isinstance(verdict, _Mismatch):
            for event in verdict:
                yield event
            return
        completion = verdict.completion
        log.info(
            "the reply does not match the response format (%s); asking once more",
            verdict.problem,
        )
        # leave the first turn: its worker parks holding the conversation, and the retry
        # continues it there when it can (claude), else on a fresh worker with the history
        await stack.aclose()
        retry = attrs.evolve(
            request,
            messages=(
                *request.messages,
                assistant_message(completion),
                Message("user", (TextPart(retry_prompt(verdict.problem, fmt)),)),
            ),
        )
        events = await stack.enter_async_context(self._routed(retry))
        again: list[Event] = []
        async with aclosing(limit_output(events, retry.stop, retry.max_tokens)) as second:
            async for event in second:
                if not isinstance(event, TurnStarted):
                    again.append(event)
        if again and isinstance(again[-1], Finished):
            # both turns were paid for
            finish = again[-1]
            again[-1] = attrs.evolve(finish, usage=finish.usage + completion.finish.usage)
        verdict = _judged(request.model, again, fmt)
        if isinstance(verdict, _Mismatch):
            raise OutputInvalid(
                f"the model's reply did not match the requested response format, also when "
                f"asked once more: {verdict.problem}"
            )
        for event in verdict:
            yield event

    @asynccontextmanager
    async def _routed(self, request: Request) -> AsyncIterator[AsyncIterator[Event]]:
        """Route ``request``: resume the parked worker it continues, else lease a fresh one.

        A turn that ends parks its worker under the fingerprint of the conversation it now
        holds (:mod:`clibridge._conversations`): mid-turn after tool calls (``reusable``
        False: a reclaim retires it), at a turn boundary otherwise. A request whose
        messages extend a parked fingerprint resumes that worker with only the new
        messages / tool results; when the worker is gone (park_ttl, pressure, restart) or
        the new messages cannot be given to it faithfully, a fresh worker gets the whole
        history.
        """
        route = self.table.resolve(request.model)
        group = self.pools[route.backend]
        request = attrs.evolve(
            request,
            model=route.cli_model,
            reasoning_effort=request.reasoning_effort or route.reasoning_effort,  # type: ignore[arg-type]
        )
        served_by = BACKENDS.get(route.backend)
        if served_by is not None:
            request = served_by.check_tools(request)
        elif request.tool_choice.mode == "none":
            request = attrs.evolve(request, tools=())
        binding = Binding(
            system=request.system, tools_key=tools_key(request), model=route.cli_model
        )
        watch = self._one_shot.get(route.backend)
        tracker = _Tracker(binding, request)
        output = _Output()
        events: AsyncGenerator[Event, None]
        if watch is None:
            events = self._fresh(group, binding, request, tracker, None, output)
        else:
            watch.note_request(tracker.setup, request.messages)
            parked_now = [c for c in group.parked() if isinstance(c, Conversation)]
            match = best_match(parked_now, tracker.setup, request.messages, tracker.items)
            if match is not None:
                events = self._resumed(group, match, binding, request, tracker, watch, output)
            else:
                self._count_miss(route.backend, request, "not_parked")
                events = self._fresh(group, binding, request, tracker, watch, output)
        try:
            yield events
        finally:
            await events.aclose()

    def _count_miss(self, backend: str, request: Request, miss: str) -> None:
        if not any(m.role == "assistant" for m in request.messages):
            return  # a new conversation: nothing to continue
        counts = self._resumes[backend]
        counts["misses"] += 1
        counts["miss:" + miss] += 1
        log.info(
            "%s: continuation miss (%s): %s; a fresh worker gets the whole history",
            backend,
            miss,
            _MISS_REASONS[miss],
        )

    async def _resumed(
        self,
        group: AccountGroup,
        match: Match,
        binding: Binding,
        request: Request,
        tracker: _Tracker,
        watch: OneShotWatch,
        output: _Output,
    ) -> AsyncGenerator[Event, None]:
        """The turn on the worker that holds the conversation ``match`` continues; else (it
        is gone, cannot take the new messages, or its account turned the turn away before
        any output) the whole history on a fresh worker."""
        parked = match.conversation
        step = match.plan
        tried: set[Account] = set()
        account: Account | None = None
        asked = trio.current_time()
        try:
            async with group.resume(parked.key) as lease:
                if lease is not None and step is not None:
                    worker = lease.worker
                    self._resumes[self._backend_of[group]]["hits"] += 1
                    log.info(
                        "%s worker %d: resumed a parked conversation (%s, %d new messages, "
                        "%d dropped context)",
                        group.name,
                        worker.id,
                        "tool results" if isinstance(step, ToolResume) else "next turn",
                        len(match.new),
                        match.dropped,
                    )
                    if isinstance(step, ToolResume):
                        source = worker.turn(request, tool_results=step.results)
                    else:
                        source = worker.turn(request, messages=step.messages)
                    account = group.account_of(lease)
                    served = self._served(
                        group,
                        lease,
                        binding,
                        request,
                        tracker,
                        watch,
                        output,
                        source,
                        queue_wait=trio.current_time() - asked,
                        continued=True,
                    )
                    async with aclosing(served):
                        async for event in served:
                            yield event
                    return
                miss = "gone" if lease is None else "cannot_continue"
                if lease is not None and not lease.worker.drop_paused_calls(
                    cli for _, cli in parked.pending
                ):
                    # the paused turn ends only with its process
                    lease.retire_on_release = parked.mid_turn
        except ACCOUNT_TROUBLE as exc:
            # the group cooled the account down as the lease ended
            if account is None or output.produced or not group.reroutes:
                raise
            tried.add(account)
            miss = "account_trouble"
            log.warning(
                "%s account %s: %s; the continued turn had produced no output: "
                "the whole history goes to another account",
                group.name,
                account.name,
                exc,
            )
        self._count_miss(self._backend_of[group], request, miss)
        fresh = self._fresh(group, binding, request, tracker, watch, output, avoid=tried)
        async with aclosing(fresh):
            async for event in fresh:
                yield event

    async def _fresh(
        self,
        group: AccountGroup,
        binding: Binding,
        request: Request,
        tracker: _Tracker,
        watch: OneShotWatch | None,
        output: _Output,
        *,
        avoid: Collection[Account] = (),
    ) -> AsyncGenerator[Event, None]:
        """The turn on a freshly leased worker (the whole history), retried once on another
        worker (:meth:`_retrying`), and on another account when its account turned it away
        before any output."""
        reuse = watch is not None and watch.reuses_finished(tracker.setup)
        tried = set(avoid)
        while True:
            account: Account | None = None
            asked = trio.current_time()
            try:
                async with group.lease(binding, reuse_finished=reuse, avoid=tried) as lease:
                    account = group.account_of(lease)
                    served = self._served(
                        group,
                        lease,
                        binding,
                        request,
                        tracker,
                        watch,
                        output,
                        lease.worker.turn(request),
                        queue_wait=trio.current_time() - asked,
                        continued=False,
                    )
                    async with aclosing(served):
                        async for event in served:
                            yield event
                return
            except ACCOUNT_TROUBLE as exc:
                if account is None or output.produced or not group.reroutes:
                    raise  # no account could take it (group.lease), or it is too late
                tried.add(account)
                log.warning(
                    "%s account %s: %s; the turn had produced no output: running it again "
                    "on another account",
                    group.name,
                    account.name,
                    exc,
                )

    async def _served(
        self,
        group: AccountGroup,
        lease: Lease,
        binding: Binding,
        request: Request,
        tracker: _Tracker,
        watch: OneShotWatch | None,
        output: _Output,
        source: AsyncIterator[Event],
        *,
        queue_wait: float,
        continued: bool,
    ) -> AsyncGenerator[Event, None]:
        """``source``'s events as the client gets them (:meth:`_retrying`, counted by
        ``output``); at the end, on every path, the response is settled (park or drop)."""
        events = output.relay(
            self._retrying(
                group,
                lease,
                binding,
                request,
                tracker,
                source,
                queue_wait=queue_wait,
                continued=continued,
            )
        )
        try:
            async with aclosing(events):
                async for event in events:
                    yield event
        finally:
            tracker.settle(lease, watch)

    async def _retrying(
        self,
        pool: AccountGroup,
        lease: Lease,
        binding: Binding,
        request: Request,
        tracker: _Tracker,
        source: AsyncIterator[Event],
        *,
        queue_wait: float,
        continued: bool,
    ) -> AsyncGenerator[Event, None]:
        """``source``'s events; on a worker failure before any output, the whole request once
        more on another worker (see the module doc).

        The ``TurnStarted`` the client gets carries the :class:`Route` of the worker that
        started the turn (a retry's worker is not announced again).

        Regression (issue 15, item 10): a codex app-server crash failed every request on
        that process, also those whose turn had not produced anything yet.
        """
        announced = produced = False
        for attempt in (1, 2):
            events = tracker.events(source)
            try:
                async with aclosing(events):
                    async for event in events:
                        if isinstance(event, TurnStarted):
                            if announced:
                                continue  # the client was told once already
                            announced = True
                            worker = lease.worker
                            route = Route(pool.name, worker.id, worker.pid, queue_wait, continued)
                            event = attrs.evolve(event, route=route)
                        else:
                            produced = True
                        yield event
                return
            except RETRY_ON_ANOTHER_WORKER as exc:
                if produced or attempt == 2:
                    final = _not_retried(exc, produced=produced)
                    if final is exc:
                        raise
                    raise final from exc
                log.warning(
                    "%s worker %d: %s; the turn had produced no output: running it again on "
                    "another worker",
                    pool.name,
                    lease.worker.id,
                    exc,
                )
            await lease.move_to_another_worker(binding)
            source = lease.worker.turn(request)

    def models(self) -> Sequence[ModelInfo]:
        return self.table.listing()

    def readiness(self) -> Readiness:
        """Ready when every served backend is: a client routed to a backend that is not
        (crash loop, not booted, every account cooling down) gets 503s, so a load balancer
        must know (regression, issue 14: ``ready: true`` while claude crash-looped and codex
        served)."""
        states = {name: BackendReadiness(*pool.readiness()) for name, pool in self.pools.items()}
        accounts = {
            name: group.account_states() for name, group in self.pools.items() if not group.implicit
        }
        ready = bool(states) and all(state.ready for state in states.values())
        reason = "; ".join(state.reason for state in states.values()) or "no backend configured"
        if self.fake:
            why = (
                "backend = fake, chosen on purpose"
                if self.fake_on_purpose
                else f"no logged-in {'/'.join(_default_backends())} found"
            )
            reason = f"FAKE CLI ({why}): " + reason
        # a janitor being restarted does not stop serving, only the hard-kill safety net
        note = self.janitor.readiness_note() if self.janitor is not None else None
        if note is not None:
            reason = f"{reason}; {note}"
        return Readiness(
            ready=ready, reason=reason, fake=self.fake, backends=states, accounts=accounts
        )

    def statistics(self) -> Mapping[str, Any]:
        out: dict[str, Any] = {}
        for name, pool in self.pools.items():
            stats = out[name] = pool.statistics_dict()
            counts = self._resumes[name]
            stats["resume_hits"] = counts["hits"]
            stats["resume_misses"] = counts["misses"]
            stats["resume_miss_reasons"] = {
                key.removeprefix("miss:"): n
                for key, n in sorted(counts.items())
                if key.startswith("miss:")
            }
            watch = self._one_shot.get(name)
            stats["one_shot_releases"] = watch.one_shot_releases if watch is not None else 0
        return out

    def begin_drain(self) -> None:
        for pool in self.pools.values():
            pool.begin_drain()

    async def wait_idle(self) -> None:
        for pool in self.pools.values():
            await pool.wait_idle()


@attrs.frozen
class _Mismatch:
    """A finished text reply that does not match the response format, and why."""

    completion: Completion
    problem: str


def _judged(model: str, events: list[Event], fmt: OutputFormat) -> list[Event] | _Mismatch:
    """What a reply's events become under ``fmt``: passed on as they are when the turn did
    not end with a text answer (tool calls, max_tokens, a stop string, an error), the text
    normalized when it matches (:func:`clibridge._formats.check`), else the mismatch."""
    finish = events[-1] if events and isinstance(events[-1], Finished) else None
    if finish is None or finish.reason is not FinishReason.END_TURN:
        return events
    completion = collect(model, events)
    if completion.tool_calls:
        return events
    try:
        return _with_text(events, check_format(completion.text, fmt))
    except FormatMismatch as exc:
        return _Mismatch(completion, str(exc))


def _with_text(events: Sequence[Event], text: str) -> list[Event]:
    """``events`` with their text replaced by ``text``, in one delta where the text began."""
    out: list[Event] = []
    placed = False
    for event in events:
        if isinstance(event, TextDelta):
            if not placed:
                out.append(TextDelta(text))
                placed = True
            continue
        if isinstance(event, Finished) and not placed:
            out.append(TextDelta(text))
            placed = True
        out.append(event)
    return out


def _not_retried(exc: BridgeError, *, produced: bool) -> BridgeError:
    """The error a client gets for a worker failure that was not (or no more) retried."""
    if not isinstance(exc, CliCrashed):
        return exc
    why = (
        "the response had already produced output, so it was not retried; send the request again"
        if produced
        else "it had already been retried once on another worker"
    )
    return CliCrashed(f"{exc.message}; {why}", detail=exc.detail)


#: why a request with history did not continue a parked worker (logged, and counted in
#: /v1/stats ``resume_miss_reasons``)
_MISS_REASONS = {
    "not_parked": "no parked conversation of this setup is continued by it (never parked, "
    "expired after park_ttl, reclaimed, or the client changed earlier messages)",
    "gone": "its parked worker was reclaimed or died meanwhile",
    "cannot_continue": "the new messages cannot be given to the parked worker faithfully "
    "(an assistant message from the client, or tool results that do not answer its calls); "
    "the parked worker was let go",
    "account_trouble": "the account holding it turned the turn away (rate-limited or "
    "logged out) before any output",
}


@attrs.define
class _Output:
    """What the client of one response has been sent, across the attempts that serve it
    (another worker, another account): ``TurnStarted`` goes out once."""

    announced: bool = False
    #: any event but TurnStarted was sent: too late to run the turn anywhere else
    produced: bool = False

    async def relay(self, source: AsyncGenerator[Event, None]) -> AsyncGenerator[Event, None]:
        async with aclosing(source):
            async for event in source:
                if isinstance(event, TurnStarted):
                    if self.announced:
                        continue
                    self.announced = True
                else:
                    self.produced = True
                yield event


def _continuable(name: str) -> bool:
    """Whether the workers of pool ``name`` keep a conversation between requests
    (``turn(messages=..., tool_results=...)``, ``paused``): :attr:`Backend.continuation
    <clibridge._backends.Backend.continuation>`; pools of no registered backend (tests) do not."""
    served_by = BACKENDS.get(name)
    return served_by is not None and served_by.continuation


def _default_backends() -> list[str]:
    return [name for name, b in BACKENDS.items() if b.default]


class _Tracker:
    """Watches one response's events: gives tool calls client ids, and parks at the end."""

    def __init__(self, binding: Binding, request: Request) -> None:
        self._binding = binding
        self._request = request
        self.setup = setup_digest(binding)
        self.items = items(request.messages)
        self._parked: Conversation | None = None

    async def events(self, source: AsyncIterator[Event]) -> AsyncGenerator[Event, None]:
        seen: list[Event] = []
        cli_ids: dict[int, str] = {}
        async with aclosing(source):  # type: ignore[type-var]
            async for event in source:
                if isinstance(event, ToolCallStart):
                    cli_ids[event.index] = event.id
                    event = attrs.evolve(event, id=new_call_id())
                seen.append(event)
                if isinstance(event, Finished):
                    self._on_finished(seen, cli_ids)
                yield event

    def _on_finished(self, seen: list[Event], cli_ids: Mapping[int, str]) -> None:
        completion = collect(self._request.model, seen)
        if completion.finish.reason is FinishReason.CANCELLED:
            return
        # the conversation the worker now holds, as the client will replay it
        held = (
            *self.items,
            *items([assistant_message(completion)], len(self._request.messages)),
        )
        pending: tuple[tuple[str, str], ...] = ()
        if completion.finish.reason is FinishReason.TOOL_USE:
            pending = tuple(
                (canonical_id(call.id), cli_ids[i]) for i, call in enumerate(completion.tool_calls)
            )
        key = conversation_key(self.setup, held)
        self._parked = Conversation(key, self.setup, held, pending)

    def settle(self, lease: Lease, watch: OneShotWatch | None) -> None:
        """At the end of the response: park the lease's worker if the turn ended where a
        next request can take it up (``watch`` is None for a backend without continuation); else end
        the pause the turn left, so nothing waits in a worker that no request can reach."""
        parked = self._parked
        worker = lease.worker
        if parked is None or not worker.healthy:
            return  # no finished turn (a cancelled one is interrupted), or a broken worker
        if watch is not None and self._park(lease, watch, parked):
            return
        calls = tuple(cli for _, cli in parked.pending)
        if (
            parked.mid_turn
            and worker.holds_paused_calls(calls)
            and not worker.drop_paused_calls(calls)
        ):
            lease.retire_on_release = True  # the paused turn ends only with its process

    def _park(self, lease: Lease, watch: OneShotWatch, parked: Conversation) -> bool:
        worker = lease.worker
        on_reclaim = None
        if parked.mid_turn:
            calls = tuple(cli for _, cli in parked.pending)
            if not worker.holds_paused_calls(calls):
                return False  # e.g. a tool_use stop the worker did not pause on
            # a worker that serves other conversations (codex threads) is not retired when
            # the pause is reclaimed: only the paused thread ends
            reusable = not worker.continues_finished_turns
            if reusable:
                on_reclaim = partial(worker.drop_paused_calls, calls)
        elif worker.continues_finished_turns and not worker.paused:
            if not watch.parks_finished(self.setup):
                watch.one_shot_releases += 1
                return True  # a one-shot client: released, and cleared in the background
            reusable = True
        else:
            return False
        lease.park(parked.key, reusable=reusable, holding=parked, on_reclaim=on_reclaim)
        return True


# ---------------------------------------------------------------------- backend choice


@attrs.frozen(init=False)
class BackendChoice:
    """What to serve: the command of each chosen backend, in registry order."""

    commands: Mapping[str, tuple[str, ...]]
    fake: bool
    notes: tuple[str, ...]  # what was detected, for the banner and the log

    def __init__(
        self,
        commands: Mapping[str, tuple[str, ...] | None] | None = None,
        *,
        fake: bool,
        notes: Sequence[str] = (),
        **by_name: tuple[str, ...] | None,
    ) -> None:
        """``commands`` and/or one keyword per backend (``claude=..., codex=None``); a
        None command is not served."""
        given = {**(commands or {}), **by_name}
        unknown = sorted(set(given) - set(BACKENDS))
        if unknown:
            raise TypeError(f"BackendChoice: no backend {', '.join(unknown)}")
        chosen: dict[str, tuple[str, ...]] = {}
        for name in BACKENDS:
            command = given.get(name)
            if command is not None:
                chosen[name] = command
        self.__attrs_init__(chosen, fake, tuple(notes))


def _account_logins(
    b: Backend, config: Config, environ: Mapping[str, str], home: Path
) -> list[tuple[str, str | None]] | None:
    """Why each configured account of ``b`` looks logged in (None: not); None without
    accounts. A claude account whose token cannot be read stops the start."""
    accounts = b.accounts(config)
    if not accounts:
        return None
    out: list[tuple[str, str | None]] = []
    for account in accounts:
        try:
            env = b.account_environ(account, environ)
        except ValueError as exc:
            raise SystemExit(f"clibridge: error: {exc}") from None
        out.append((account.name, b.logged_in(config, env, account_state_dir(home, account.name))))
    return out


def _find(command: tuple[str, ...], environ: Mapping[str, str]) -> tuple[str, ...] | None:
    binary = shutil.which(command[0], path=environ.get("PATH"))
    return (binary, *command[1:]) if binary else None


def choose_backends(config: Config, environ: Mapping[str, str]) -> BackendChoice:
    """Pick what to serve.

    ``auto`` serves every CLI that is installed and logged in, and the bundled fake claude
    when there is none. ``claude`` / ``codex`` / ``both`` serve what they name even without a
    detected login (the first request then reports the login state). ``fake`` serves the
    bundled fake claude and fake codex.
    """
    mode = config.backend
    home = state_dir(config)
    if mode == "fake":
        fakes = {name: BACKENDS[name].fake_command for name in _default_backends()}
        for name in fakes:
            _account_logins(BACKENDS[name], config, environ, home)  # refuse a missing token
        return BackendChoice(
            fakes,
            fake=True,
            notes=[
                f"{name}: the bundled FAKE CLI (backend = fake, chosen explicitly)"
                for name in fakes
            ],
        )
    notes: list[str] = []
    chosen: dict[str, tuple[str, ...]] = {}
    for name, b in BACKENDS.items():
        wanted = mode == name or (mode == "both" and b.default)
        if not (wanted or (mode == "auto" and b.default)):
            continue
        command = b.settings(config).command
        found = _find(command, environ)
        logins = _account_logins(b, config, environ, home)
        if logins is None:
            why = b.logged_in(config, environ, home)
        else:
            logged = [f"{account} ({why})" for account, why in logins if why]
            missing = [account for account, why in logins if not why]
            why = None
            if logged:
                why = "accounts " + ", ".join(logged)
                if missing:
                    why += f"; no login detected for {', '.join(missing)}: run `{b.login_fix}`"
        if wanted:
            if not found:
                raise SystemExit(
                    f"clibridge: error: --backend {mode}: {command[0]!r} not found on PATH "
                    f"(set {name}.command)"
                )
            chosen[name] = found
            login = f"login: {why}" if why else f"no login detected: run `{b.login_fix}`"
            notes.append(f"{name}: {found[0]} (backend = {mode}, chosen explicitly; {login})")
        elif found and why:
            chosen[name] = found
            notes.append(f"{name}: {found[0]} (login detected: {why})")
        else:
            notes.append(
                f"{name}: not served ("
                + (f"installed, no login found: run `{b.login_fix}`" if found else "not installed")
                + ")"
            )
    if mode == "auto" and not chosen:
        fallback = {FAKE_FALLBACK: BACKENDS[FAKE_FALLBACK].fake_command}
        notes.append(f"{FAKE_FALLBACK}: the bundled FAKE CLI (no login found for any backend)")
        return BackendChoice(fallback, fake=True, notes=notes)
    return BackendChoice(chosen, fake=False, notes=notes)


def state_dir(config: Config) -> Path:
    if config.state_dir is not None:
        return config.state_dir
    import platformdirs

    return Path(platformdirs.user_state_dir("clibridge"))


# ---------------------------------------------------------------------- the process


def run(config: Config, environ: Mapping[str, str] | None = None) -> int:
    """Serve until SIGTERM / SIGINT; return the exit code (0 after a graceful drain)."""
    env = dict(os.environ if environ is None else environ)
    choice = choose_backends(config, env)
    try:
        return trio.run(partial(serve, config, choice, env, settle_heap=True))
    except KeyboardInterrupt:
        return _stopped_hard()
    except BaseExceptionGroup as group:
        if _only(group, KeyboardInterrupt):
            return _stopped_hard()
        if not _only(group, OSError):
            raise
        # the usual one: the port is taken. Say so plainly, no traceback.
        where = f"{config.server.host}:{config.server.port}"
        for exc in _leaves(group):
            print(f"clibridge: error: cannot serve on {where}: {exc}", file=sys.stderr)
        return 2


def _settle_heap() -> None:
    """Collect once, then move everything start-up allocated out of the collector's reach.

    Why: a full (generation 2) collection walks every object in the process -- ~70,000
    after start-up: modules, classes, the app -- and took 76-148 ms on this machine, at a
    moment the collector picks, i.e. inside some request. Frozen, those objects are never
    walked again; a full collection then measured 6 ms (bench/sequential.py; figures in
    docs/benchmarks.md). What start-up allocated lives as long as the process anyway.
    """
    gc.collect()
    gc.freeze()


def _stopped_hard() -> int:
    # a second SIGTERM / SIGINT during the drain: stopped at once (workers were torn down)
    print("clibridge: stopped before the drain finished", file=sys.stderr)
    return 130


def _only(group: BaseExceptionGroup[BaseException], kind: type[BaseException]) -> bool:
    return all(isinstance(exc, kind) for exc in _leaves(group))


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


async def serve(
    config: Config,
    choice: BackendChoice,
    environ: Mapping[str, str],
    *,
    shutdown: trio.Event | None = None,
    settle_heap: bool = False,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> int:
    """The root nursery. ``shutdown`` (or SIGTERM/SIGINT) starts the drain.

    ``settle_heap`` (the server process, not a test that serves in its own process): once
    listening, collect and freeze what start-up left on the heap (:func:`_settle_heap`).
    """
    from ._config_load import is_loopback
    from ._http._keyring import KeyRing
    from ._http.app import attach_ledger, create_app
    from ._http.server import banner, serve_http
    from ._janitor import Janitor
    from ._ledger import Ledger, LedgerError, ledger_path
    from ._state_dir import secure_state_dir

    if shutdown is None:
        shutdown = trio.Event()
    home = state_dir(config)
    secure_state_dir(home)
    with Janitor.start(environ=environ) as janitor:
        pools: dict[str, AccountGroup] = {}
        for name, command in choice.commands.items():
            pools[name] = _account_group(name, config, command, home, janitor, environ, choice)
        table = ModelTable(
            pools,
            overrides=config.models,
            fake_backends=list(pools) if choice.fake else (),
        )
        service = Supervisor(
            pools,
            table,
            fake=choice.fake,
            fake_on_purpose=config.backend == "fake",
            janitor=janitor,
        )
        # off loopback a key is needed even once the last named key is revoked
        keys = KeyRing(home, required=not is_loopback(config.server.host))
        app = create_app(service, config.server, keys=keys)
        ledger = None
        if config.server.ledger:
            ledger = Ledger(
                ledger_path(home),
                retention_days=config.server.ledger_retention_days,
                capture_mode=config.server.capture,
            )
            try:
                await trio.to_thread.run_sync(ledger.start)
            except LedgerError as exc:
                raise SystemExit(f"clibridge: error: {exc}") from None
            attach_ledger(app, ledger)
        async with trio.open_nursery() as root:
            if ledger is not None:
                await root.start(ledger.run)
            await root.start(janitor.run)
            for pool in pools.values():
                await root.start(pool.run)
            root.start_soon(_on_signal, shutdown)
            http_done = trio.Event()

            async def run_http(*, task_status: trio.TaskStatus[tuple[str, int]]) -> None:
                try:
                    await serve_http(
                        app, config.server, shutdown_trigger=shutdown.wait, task_status=task_status
                    )
                finally:
                    http_done.set()

            host, port = await root.start(run_http)
            named_keys = len(app.keys.names())
            print(
                banner(config, host, port, service, choice.notes, named_keys=named_keys),
                file=sys.stderr,
                flush=True,
            )
            if settle_heap:
                _settle_heap()
            task_status.started((host, port))
            await shutdown.wait()
            log.info(
                "shutting down: draining in-flight requests (up to %g s)",
                config.server.drain_timeout,
            )
            service.begin_drain()
            draining = getattr(app, "draining", None)
            if isinstance(draining, trio.Event):
                draining.set()
            with trio.move_on_after(config.server.drain_timeout):
                await service.wait_idle()
                await http_done.wait()
            root.cancel_scope.cancel()
    log.info("stopped")
    return 0


def _account_group(
    name: str,
    config: Config,
    command: tuple[str, ...],
    home: Path,
    janitor: Janitor,
    environ: Mapping[str, str],
    choice: BackendChoice,
) -> AccountGroup:
    """Backend ``name``'s pools: one per configured account, each in its own spawn home
    with its own login, or the one pool of the implicit account (blocking setup)."""
    served_by = backend(name)
    settings = served_by.settings(config)
    threads = served_by.threads_per_worker(config)
    accounts = served_by.accounts(config)
    if not accounts:
        factory = served_by.pool_factory(config, command, home, janitor, environ, fake=choice.fake)
        return AccountGroup.of(WorkerPool(name, settings.pool, factory, threads_per_worker=threads))
    members = []
    for account in accounts:
        factory = served_by.pool_factory(
            config,
            command,
            account_state_dir(home, account.name),
            janitor,
            served_by.account_environ(account, environ),
            fake=choice.fake,
        )
        pool = WorkerPool(
            f"{name}/{account.name}", settings.pool, factory, threads_per_worker=threads
        )
        members.append(Account(account.name, pool))
    log.info("%s: %d accounts: %s", name, len(members), ", ".join(a.name for a in members))
    return AccountGroup(name, members)


async def _on_signal(shutdown: trio.Event) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            if shutdown.is_set():
                log.warning("second signal %s: stopping now", signal.Signals(signum).name)
                raise KeyboardInterrupt
            log.info("received %s", signal.Signals(signum).name)
            shutdown.set()
