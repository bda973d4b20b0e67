"""Stop sequences and output-token limits, applied once to the neutral event stream.

Theory of operation
-------------------
Neither CLI takes ``stop`` or ``max_tokens``: the bridge enforces both on the events a
turn produces, before any dialect encodes them, so every dialect and every backend gets
the same behaviour. :class:`OutputLimiter` is a pure state machine: feed it the turn's
events in order, pass on what it returns, and stop pulling events once :attr:`done` is
set. The caller then leaves the turn early, which interrupts the CLI exactly as a client
disconnect does; the last event returned is the :class:`~clibridge._events.Finished` the
client gets.

Stop strings (:class:`StopCutter`). The text is one stream across its deltas. The cut is
where the *whole* text would be cut: at the earliest index where any stop string starts
(at one index the shortest stop wins), the stop string itself not included. While the
end of the text seen so far could still be the start of a stop string, that tail is held
back, so no text past a stop string is ever emitted, whatever the chunking. Any
non-text event (thinking, a tool call, the end) ends the text run: what is held is
released then (it can no longer complete a stop). This runs on the event loop and a client
chooses the stop strings: the work and memory grow linearly with the text and the stop
strings, never with the square of a stop string's length (:class:`_StopStart`).

Output tokens (:class:`TokenBudget`). Neither CLI reports output tokens while a reply
streams (claude reports usage per model message, codex per turn), so the running count is
an estimate: :data:`CHARS_PER_TOKEN` characters of visible output (text and tool-call
arguments) per token. Text is cut at exactly ``max_tokens * CHARS_PER_TOKEN``
characters; a tool call is never cut in the middle (its arguments would not be JSON), a
turn whose calls use up the budget ends after the call. Thinking the CLI does on its own
is not counted. The reported ``output_tokens`` of a cut turn is the same estimate (the
CLI's own count never arrives: the turn was interrupted); input tokens are reported as 0.
"""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator, AsyncIterator, Sequence

from ._events import (
    Event,
    Finished,
    FinishReason,
    TextDelta,
    ThinkingDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
)

#: the estimate of characters per output token (English prose and code average ~4 with the
#: models' tokenizers; see docs/api-fidelity.md for how exact the cut is)
CHARS_PER_TOKEN = 4


def estimate_tokens(chars: int) -> int:
    """The estimated token count of ``chars`` characters of output."""
    return math.ceil(chars / CHARS_PER_TOKEN)


def cut_whole(text: str, stops: Sequence[str]) -> tuple[str, str | None]:
    """``text`` cut before its first stop string, and that string (None: no stop in it).

    The reference the streaming :class:`StopCutter` agrees with: the earliest index where a
    stop string starts wins; at one index, the shortest stop string.
    """
    best: tuple[int, int, str] | None = None
    for stop in stops:
        if not stop:
            continue
        at = text.find(stop)
        if at >= 0 and (best is None or (at, len(stop)) < best[:2]):
            best = (at, len(stop), stop)
    if best is None:
        return text, None
    return text[: best[0]], best[2]


class StopCutter:
    """Cuts a text stream before its first stop string, whatever the chunking."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(dict.fromkeys(s for s in stops if s))
        #: per stop string, how much of the end of the text run begins it
        self._starts = [_StopStart(stop) for stop in self.stops]
        #: the stop string that ended the text (None while none has)
        self.hit: str | None = None
        self._held = ""

    def feed(self, text: str) -> str:
        """The part of ``text`` (with what was held) that is safe to emit now."""
        if self.hit is not None or not self.stops:
            return "" if self.hit is not None else text
        buf = self._held + text
        before, stop = cut_whole(buf, self.stops)
        for start in self._starts:
            start.feed(text)
        # the first index whose rest of ``buf`` is a proper prefix of a stop string (what
        # is held is such a rest, so no start reaches back before ``buf``)
        pending = len(buf) - max(start.matched for start in self._starts)
        if stop is not None and pending >= len(before):
            self.hit = stop
            self._held = ""
            return before
        # a stop may still start at ``pending``; with a complete one further on, wait too:
        # the earlier start wins if it completes
        self._held = buf[pending:]
        return buf[:pending]

    def flush(self) -> str:
        """The text run ended: what was held back, cut before a stop it holds.

        A held tail that could have become a longer stop string may hold a complete
        shorter one further on (``"ba"`` with stops ``"baa"`` and ``"a"``).
        """
        held, self._held = self._held, ""
        for start in self._starts:
            start.matched = 0
        before, stop = cut_whole(held, self.stops)
        if stop is not None:
            self.hit = stop
        return before


class _StopStart:
    """How much of the end of a text stream begins ``stop``: the longest proper prefix of
    ``stop`` the text ends with, kept up to date as text is fed (Knuth-Morris-Pratt).

    Regression (the chaos fuzz run's intermittent 504): the cutter kept every proper prefix
    of every stop string, ``len(stop) ** 2 / 2`` characters. A fuzzed 100,000-character
    stop string took ~15 s and ~5 GB to set up, on the event loop: every turn in flight
    meanwhile overran its ``turn_timeout``. Here the work is linear in the text fed,
    whatever the stop string's length: the KMP border table is built only as far as a
    match has got, and the text between starts is skipped with ``str.find``.
    """

    __slots__ = ("_borders", "matched", "stop")

    def __init__(self, stop: str) -> None:
        self.stop = stop
        #: the length of the longest proper prefix of ``stop`` the text fed ends with
        self.matched = 0
        #: ``_borders[i]``: the length of the longest proper border of ``stop[: i + 1]``
        self._borders = [0]

    def feed(self, text: str) -> None:
        stop, matched, at = self.stop, self.matched, 0
        while at < len(text):
            if matched == 0:
                at = text.find(stop[0], at)
                if at < 0:
                    break
                matched = 1
            else:
                char = text[at]
                while matched and stop[matched] != char:
                    matched = self._border(matched - 1)
                if stop[matched] == char:
                    matched += 1
            at += 1
            if matched == len(stop):
                # a whole stop string ends here (the cutter finds it); a shorter one goes on
                matched = self._border(matched - 1)
        self.matched = matched

    def _border(self, i: int) -> int:
        """``_borders[i]``, extending the table to ``i`` (never past the longest match)."""
        borders, stop = self._borders, self.stop
        while len(borders) <= i:
            j = len(borders)
            k = borders[j - 1]
            while k and stop[j] != stop[k]:
                k = borders[k - 1]
            borders.append(k + 1 if stop[j] == stop[k] else k)
        return borders[i]


class TokenBudget:
    """Counts estimated output tokens against a limit (None: no limit)."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.chars = 0

    @property
    def tokens(self) -> int:
        return estimate_tokens(self.chars)

    @property
    def spent(self) -> bool:
        """Nothing more may be emitted."""
        return self.limit is not None and self.chars >= self.limit * CHARS_PER_TOKEN

    def take(self, text: str) -> str:
        """The part of ``text`` that fits; counts it."""
        if self.limit is None:
            self.chars += len(text)
            return text
        room = max(0, self.limit * CHARS_PER_TOKEN - self.chars)
        kept = text[:room]
        self.chars += len(kept)
        return kept

    def count(self, chars: int) -> None:
        """Count output that is never cut (tool-call arguments)."""
        self.chars += chars


class OutputLimiter:
    """Applies a request's stop strings and ``max_tokens`` to its turn's events."""

    def __init__(self, stops: Sequence[str], max_tokens: int | None) -> None:
        self._cutter = StopCutter(stops)
        self._budget = TokenBudget(max_tokens)
        #: the turn must end: the caller stops pulling events and leaves the turn
        self.done = False

    @property
    def active(self) -> bool:
        """Whether there is anything to enforce at all."""
        return bool(self._cutter.stops) or self._budget.limit is not None

    def feed(self, event: Event) -> list[Event]:
        """The events to pass on for ``event`` (the last is Finished once :attr:`done`)."""
        if self.done:
            return []
        if isinstance(event, TextDelta):
            if self._budget.spent:
                return self._finish(FinishReason.MAX_TOKENS)
            return self._text(self._cutter.feed(event.text))
        if isinstance(event, Finished):
            out = self._text(self._cutter.flush())
            if self.done:
                # cut in the held tail of a turn that had ended: its real usage is known
                last = out[-1]
                assert isinstance(last, Finished)
                out[-1] = Finished(last.reason, event.usage, last.stop_sequence)
                return out
            self.done = True
            return [*out, event]
        # any other event ends the text run
        out = self._text(self._cutter.flush())
        if self.done:
            return out
        if isinstance(event, ToolCallEnd):
            self._budget.count(len(event.arguments))
            out.append(event)
            if self._budget.spent:
                out += self._finish(FinishReason.MAX_TOKENS)
            return out
        if self._budget.spent and isinstance(event, ToolCallStart | ThinkingDelta):
            # more output is coming; a call under way (its deltas) is let complete
            return out + self._finish(FinishReason.MAX_TOKENS)
        out.append(event)
        return out

    def _text(self, text: str) -> list[Event]:
        """Events for ``text`` the cutter let through, ending the turn on a stop it hit."""
        kept = self._budget.take(text)
        out: list[Event] = [TextDelta(kept)] if kept else []
        if len(kept) < len(text):
            out += self._finish(FinishReason.MAX_TOKENS)
        elif self._cutter.hit is not None:
            out += self._finish(FinishReason.STOP_SEQUENCE, self._cutter.hit)
        return out

    def _finish(self, reason: FinishReason, stop: str | None = None) -> list[Event]:
        self.done = True
        usage = Usage(output_tokens=self._budget.tokens)
        return [Finished(reason, usage, stop_sequence=stop)]


async def limit_output(
    events: AsyncIterator[Event], stops: Sequence[str], max_tokens: int | None
) -> AsyncGenerator[Event, None]:
    """``events`` with ``stops`` and ``max_tokens`` applied; returns early (without pulling
    more) once the turn must end, so the caller's leaving the turn interrupts the CLI."""
    limiter = OutputLimiter(stops, max_tokens)
    if not limiter.active:
        async for event in events:
            yield event
        return
    async for event in events:
        for out in limiter.feed(event):
            yield out
        if limiter.done:
            return
