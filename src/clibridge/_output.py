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
released then (it can no longer complete a stop).

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
        #: per stop string, its proper prefixes by length (1 .. len - 1)
        self._prefixes = [[stop[:k] for k in range(1, len(stop))] for stop in self.stops]
        #: the last characters of those prefixes
        self._prefix_ends = {c for stop in self.stops for c in stop[:-1]}
        #: the stop string that ended the text (None while none has)
        self.hit: str | None = None
        self._held = ""

    def feed(self, text: str) -> str:
        """The part of ``text`` (with what was held) that is safe to emit now."""
        if self.hit is not None or not self.stops:
            return "" if self.hit is not None else text
        buf = self._held + text
        before, stop = cut_whole(buf, self.stops)
        pending = self._pending_from(buf)
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
        before, stop = cut_whole(held, self.stops)
        if stop is not None:
            self.hit = stop
        return before

    def _pending_from(self, buf: str) -> int:
        """The first index whose rest of ``buf`` is a proper prefix of a stop string."""
        if not buf or buf[-1] not in self._prefix_ends:
            return len(buf)  # the common case: no stop string begins at the end
        tail = 0  # the longest end of ``buf`` that begins a stop string
        for prefixes in self._prefixes:
            for k in range(min(len(prefixes), len(buf)), tail, -1):
                if buf.endswith(prefixes[k - 1]):
                    tail = k
                    break
        return len(buf) - tail


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
