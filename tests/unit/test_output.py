"""Stop strings and output-token limits on the neutral event stream (clibridge._output).

Regression (issue 14): ``stop`` / ``stop_sequences`` and ``max_tokens`` were parsed and
ignored: with ``"stop": ["fake"]`` the whole reply came back.
"""

from __future__ import annotations

import itertools
import tracemalloc

from hypothesis import given, settings
from hypothesis import strategies as st

from clibridge._events import (
    Event,
    Finished,
    FinishReason,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    TurnStarted,
    Usage,
)
from clibridge._output import CHARS_PER_TOKEN, OutputLimiter, StopCutter, _StopStart, cut_whole

DONE = Finished(FinishReason.END_TURN, Usage(input_tokens=5, output_tokens=9))


def run(events: list[Event], stops: list[str], max_tokens: int | None = None) -> list[Event]:
    limiter = OutputLimiter(stops, max_tokens)
    out: list[Event] = []
    for event in events:
        out += limiter.feed(event)
        if limiter.done:
            break
    return out


def text_of(events: list[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def chunked(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts} | {0, len(text)})
    return [text[a:b] for a, b in itertools.pairwise(points)]


# small alphabets make stop strings occur, overlap and straddle chunks often
_TEXT = st.text(alphabet="abc\u00e9\U0001f600", max_size=40)
_STOPS = st.lists(st.text(alphabet="abc\u00e9\U0001f600", max_size=4), max_size=4)


@st.composite
def text_and_stops(draw: st.DrawFn) -> tuple[str, list[str]]:
    """A text and stop strings, many of them pieces of the text (so they overlap in it)."""
    text = draw(_TEXT)
    stops = draw(_STOPS)
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        a = draw(st.integers(min_value=0, max_value=len(text)))
        b = draw(st.integers(min_value=a, max_value=min(len(text), a + 6)))
        stops.append(text[a:b])
    return text, draw(st.permutations(stops))


@settings(max_examples=1000, deadline=None)
@given(case=text_and_stops(), cuts=st.lists(st.integers(min_value=0, max_value=60)))
def test_any_chunking_cuts_as_the_whole_text(case: tuple[str, list[str]], cuts: list[int]) -> None:
    """Any chunking of any text with any stop list gives the whole text's cut."""
    text, stops = case
    want_text, want_stop = cut_whole(text, stops)
    cutter = StopCutter(stops)
    emitted = []
    for chunk in chunked(text, cuts):
        piece = cutter.feed(chunk)
        emitted.append(piece)
        # never anything past the cut, at any moment
        assert want_text.startswith("".join(emitted))
        if cutter.hit is not None:
            break
    if cutter.hit is None:
        emitted.append(cutter.flush())
    assert "".join(emitted) == want_text
    assert cutter.hit == want_stop


@settings(max_examples=300, deadline=None)
@given(case=text_and_stops(), cuts=st.lists(st.integers(min_value=0, max_value=60)))
def test_limiter_reports_the_stop(case: tuple[str, list[str]], cuts: list[int]) -> None:
    text, stops = case
    events: list[Event] = [TurnStarted("m"), *(TextDelta(c) for c in chunked(text, cuts)), DONE]
    out = run(events, stops)
    want_text, want_stop = cut_whole(text, stops)
    assert text_of(out) == want_text
    finish = out[-1]
    assert isinstance(finish, Finished)
    if want_stop is None:
        assert finish == DONE
    else:
        assert finish.reason is FinishReason.STOP_SEQUENCE
        assert finish.stop_sequence == want_stop


def longest_start(text: str, stop: str) -> int:
    """The length of the longest proper prefix of ``stop`` that ``text`` ends with."""
    return max(k for k in range(min(len(stop) - 1, len(text)) + 1) if text.endswith(stop[:k]))


@settings(max_examples=500, deadline=None)
@given(
    text=st.text(alphabet="ab", max_size=60),
    stop=st.text(alphabet="ab", min_size=1, max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=70)),
)
def test_stop_start_tracks_the_longest_start_at_the_end(
    text: str, stop: str, cuts: list[int]
) -> None:
    """Two letters make stop strings with many borders (``abab``, ``aaa``): every way the
    KMP fallback can go."""
    start = _StopStart(stop)
    seen = ""
    for chunk in chunked(text, cuts):
        start.feed(chunk)
        seen += chunk
        assert start.matched == longest_start(seen, stop)


def test_a_long_stop_string_costs_memory_linear_in_its_length() -> None:
    """Regression (the chaos fuzz run's intermittent 504 after turn_timeout, 1-2 per run
    since issue 14): the cutter kept every proper prefix of every stop string, len**2 / 2
    characters. The fuzz's 100,000-character ``stop`` then took ~15 s and ~5 GB on the
    event loop, and turns in flight meanwhile overran their turn_timeout. Measured in
    bytes allocated (deterministic), at a size the old code survives (~400 MB)."""
    n = 20_000
    stop = "A" * n
    tracemalloc.start()
    try:
        cutter = StopCutter([stop, "B" * n])
        # the worst case for what is held: every character could still begin the stop
        emitted = [cutter.feed("A" * 100) for _ in range(n // 100 - 1)]
        emitted.append(cutter.feed("A" * 99))
        assert "".join(emitted) == ""
        assert cutter.feed("AAAA tail") == ""
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert cutter.hit == stop
    assert peak < 100 * n, f"{peak} bytes for a stop string of {n} characters"


def test_earliest_start_wins_over_an_earlier_completion() -> None:
    """'c' completes first, but 'abcd' starts earlier: the whole text cuts before 'abcd'."""
    cutter = StopCutter(["abcd", "c"])
    assert cutter.feed("xabc") == "x"
    assert cutter.hit is None
    assert cutter.feed("d tail") == ""
    assert cutter.hit == "abcd"


def test_a_prefix_that_does_not_complete_is_released() -> None:
    cutter = StopCutter(["END"])
    assert cutter.feed("the EN") == "the "
    assert cutter.feed("ding") == "ENding"
    assert cutter.feed("E") == ""
    assert cutter.flush() == "E"


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(max_size=80),
    limit=st.integers(min_value=1, max_value=25),
    cuts=st.lists(st.integers(min_value=0, max_value=90)),
)
def test_max_tokens_cuts_at_the_estimate(text: str, limit: int, cuts: list[int]) -> None:
    events: list[Event] = [*(TextDelta(c) for c in chunked(text, cuts)), DONE]
    out = run(events, [], limit)
    room = limit * CHARS_PER_TOKEN
    assert text_of(out) == text[:room]
    finish = out[-1]
    assert isinstance(finish, Finished)
    if len(text) > room:
        assert finish.reason is FinishReason.MAX_TOKENS
        assert finish.usage == Usage(output_tokens=limit)
    else:
        # exactly at the limit with nothing more: the turn ended by itself
        assert finish == DONE


def test_stop_before_the_limit_wins() -> None:
    out = run([TextDelta("aaaa STOP bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"), DONE], ["STOP"], 5)
    assert text_of(out) == "aaaa "
    assert out[-1] == Finished(FinishReason.STOP_SEQUENCE, Usage(output_tokens=2), "STOP")


def test_thinking_and_tool_calls_pass_and_count() -> None:
    events: list[Event] = [
        ThinkingDelta("thinking is not counted " * 10),
        TextDelta("abcd"),
        ToolCallStart(0, "t1", "f"),
        ToolCallDelta(0, '{"x": 1}'),
        ToolCallEnd(0, '{"x": 1}'),
        ToolCallStart(1, "t2", "f"),
        ToolCallEnd(1, "{}"),
        DONE,
    ]
    out = run(events, [], 3)
    # 4 chars of text + 8 of arguments spend 3 tokens: the turn ends after the first call
    assert out[1:-1] == events[1:5]
    assert out[-1] == Finished(FinishReason.MAX_TOKENS, Usage(output_tokens=3))


def test_held_text_is_released_before_a_tool_call() -> None:
    events: list[Event] = [TextDelta("call ST"), ToolCallStart(0, "t", "f"), ToolCallEnd(0, "{}")]
    out = run([*events, DONE], ["STOP"])
    assert out == [TextDelta("call "), TextDelta("ST"), *events[1:], DONE]


def test_nothing_to_enforce_passes_everything() -> None:
    events: list[Event] = [TurnStarted("m"), TextDelta("hello"), DONE]
    assert run(events, [""]) == events


def test_a_held_tail_may_hold_a_shorter_stop() -> None:
    """Found by the property test: 'ba' was held for 'baa' and released whole at the end."""
    out = run([TextDelta("ba"), DONE], ["baa", "a"])
    assert text_of(out) == "b"
    # the turn had ended: the CLI's usage is known and reported
    assert out[-1] == Finished(FinishReason.STOP_SEQUENCE, DONE.usage, "a")
