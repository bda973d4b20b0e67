"""The TUI driver's pure parts against what the real interactive claude wrote.

``tests/testing/samples/tui/`` holds transcripts the pinned claude 2.1.197 wrote under tmux
against the model stub (docs/tui.md): two turns (a text reply; thinking + a two-line
text in one message), and a session after ``/clear`` with a turn and an interrupt.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from clibridge._backends.claude import RetryPolicy
from clibridge._backends.tui import (
    TranscriptTranslator,
    build_pane_argv,
    parse_debug_line,
    parse_transcript_line,
    screen_state,
)
from clibridge._backends.tui.parser import AssistantBlock, Entry, TurnEnd, UserEntry
from clibridge._errors import LoginExpired, RequestError, UpstreamOverloaded, UpstreamRateLimited
from clibridge._events import Finished, FinishReason, TextDelta, ThinkingDelta, TurnStarted, Usage

SAMPLES = Path(__file__).parents[1] / "testing" / "samples" / "tui"


def entries(name: str) -> list[Entry]:
    lines = (SAMPLES / name).read_bytes().splitlines()
    return [e for e in (parse_transcript_line(line) for line in lines) if e is not None]


def turns(name: str) -> list[list[Entry]]:
    """The sample cut into turns: each from a typed user line to the next one."""
    out: list[list[Entry]] = []
    for entry in entries(name):
        if isinstance(entry, UserEntry) and not entry.meta and not entry.interrupted:
            out.append([])
        if out:
            out[-1].append(entry)
    return out


def run(translator: TranscriptTranslator, items: list[Entry]) -> list[object]:
    events: list[object] = []
    for entry in items:
        events += translator.feed(entry)
    return events


def test_a_recorded_text_turn() -> None:
    # As recorded: the CLI wrote the session's first prompt after its reply and
    # turn_duration, so the translator must not wait for our user line
    items = entries("claude_tui_two_turns.jsonl")
    prompt = next(e for e in items if isinstance(e, UserEntry) and e.text.startswith("say hi"))
    end = next(e for e in items if isinstance(e, TurnEnd))
    assert items.index(end) < items.index(prompt)
    t = TranscriptTranslator(RetryPolicy(), "claude-sonnet-4-5")
    events = run(t, items[: items.index(end) + 1])
    assert t.done
    assert events == [
        TurnStarted("claude-sonnet-4-5"),
        TextDelta('Hi there! ünï "q"'),
        Finished(FinishReason.END_TURN, Usage(input_tokens=167, output_tokens=4)),
    ]


def test_one_message_in_two_block_lines_counts_its_usage_once() -> None:
    second = turns("claude_tui_two_turns.jsonl")[-1]
    blocks = [e for e in second if isinstance(e, AssistantBlock)]
    assert len(blocks) == 2 and blocks[0].message_id == blocks[1].message_id
    events = run(TranscriptTranslator(RetryPolicy(), "m"), second)
    assert events[1:] == [
        ThinkingDelta("let me think"),
        TextDelta("Second answer.\nWith two lines."),
        Finished(FinishReason.END_TURN, Usage(input_tokens=231, output_tokens=10)),
    ]


def test_the_clear_echo_is_not_a_turn_and_an_interrupt_is_seen() -> None:
    items = entries("claude_tui_clear_interrupt.jsonl")
    t = TranscriptTranslator(RetryPolicy(), "m")
    cut = next(i for i, e in enumerate(items) if isinstance(e, UserEntry) and "hang" in e.text)
    assert run(t, items[:cut]) == []  # the /clear echo: no turn of ours
    t = TranscriptTranslator(RetryPolicy(), "m")
    events = run(t, items[cut:])
    # the partial text the CLI keeps when interrupted is a <synthetic> message: not output
    partial = next(e for e in items[cut:] if isinstance(e, AssistantBlock))
    assert partial.synthetic and partial.block.get("text") == "Hell"
    assert events == [TurnStarted("m")]
    assert t.done and t.interrupted
    assert not any(isinstance(e, TurnEnd) for e in items[cut:])


def test_an_api_error_line_maps_by_its_status() -> None:
    line = (
        '{"type":"assistant","message":{"id":"x","model":"<synthetic>","content":[{"type":"text",'
        '"text":"API Error: 400 bad"}],"stop_reason":"stop_sequence","usage":{}},'
        '"isApiErrorMessage":true,"apiErrorStatus":400}'
    )
    entry = parse_transcript_line(line)
    t = TranscriptTranslator(RetryPolicy(), "m")
    t.feed(UserEntry("q", meta=False, interrupted=False))
    assert entry is not None
    with pytest.raises(RequestError, match="refused"):
        t.feed(entry)


def test_retries_in_the_debug_log_fail_fast() -> None:
    line = (
        '2026-11-30T20:11:07.968Z [ERROR] API error (attempt 1/11): 401 401 {"type":"error",'
        '"error":{"type":"authentication_error","message":"model stub: scripted HTTP 401"}}'
    )
    attempt = parse_debug_line(line)
    assert attempt is not None and (attempt.attempt, attempt.status) == (1, 401)
    with pytest.raises(LoginExpired):
        TranscriptTranslator(RetryPolicy(), "m").attempt(attempt)
    t = TranscriptTranslator(RetryPolicy(retry_attempts=2), "m")
    rate = parse_debug_line(line.replace("401 401", "429 429"))
    assert rate is not None
    t.attempt(rate)
    t.attempt(rate)  # the CLI logs each attempt twice: one attempt
    second = parse_debug_line(line.replace("401 401", "429 429").replace("1/11", "2/11"))
    assert second is not None
    with pytest.raises(UpstreamRateLimited) as caught:
        t.attempt(second, retry_in=2.0)
    assert caught.value.retry_after == 2.0
    # a retry loop that began before the turn (no attempt 1 seen) does not count
    late = TranscriptTranslator(RetryPolicy(), "m")
    late.attempt(second)
    late.attempt(attempt.__class__(5, 11, 401, "old"))
    over = parse_debug_line(line.replace("401 401", "529 529"))
    assert over is not None
    t = TranscriptTranslator(RetryPolicy(retry_attempts=1), "m")
    with pytest.raises(UpstreamOverloaded):
        t.attempt(over)


def test_the_screen_as_the_real_cli_draws_it() -> None:
    rule = "─" * 160
    idle = "\n".join(["● Hello", "", rule, "❯ ", rule, "  ? for shortcuts · ← for agents"])
    busy = "\n".join(
        [
            "✻ API error · Retrying in 4s · attempt 4/10",
            rule,
            "❯ ",
            rule,
            "  esc to interrupt · ← for agents",
        ]
    )
    typed = "\n".join([rule, "❯ junk line1", "  junk line2", rule, "   Esc again to clear"])
    assert screen_state(idle) == screen_state(idle)
    s = screen_state(idle)
    assert (s.prompt, s.busy, s.input, s.retry_in) == (True, False, "", None)
    s = screen_state(busy)
    assert (s.busy, s.retry_in) == (True, 4.0)
    s = screen_state(typed)
    assert (s.input, s.clear_hint) == ("junk line1\njunk line2", True)


def test_the_pane_argv() -> None:
    argv = build_pane_argv(
        ["claude"],
        session_id="u",
        system_prompt_file=Path("/s"),
        debug_file=Path("/d"),
        model="claude-sonnet-4-5",
    )
    assert "-p" not in argv
    assert argv[argv.index("--tools") + 1] == ""
    assert argv[argv.index("--system-prompt-file") + 1] == "/s"
