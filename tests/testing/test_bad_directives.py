"""A bad ``@fake`` directive is the client's error, never a crash; what a turn prints is capped.

Regressions (issue 15, item 8):

* a malformed ``@fake`` line crashed the fake claude worker (an uncaught exception in its
  main thread, then SIGABRT at interpreter shutdown: exit -6, and a 502 for the client);
  in the fake codex it killed the stdin reader, so the whole app-server exited;
* ``large_output`` had no bound: one request drove a fake to 1.15 GB.

Now :class:`~clibridge.testing.scenario.DirectiveError` names the line and what is wrong,
and the fakes answer it like an upstream 400 (claude: an error ``result`` with
``api_error_status`` 400; codex: a failed turn with ``codexErrorInfo: "badRequest"``) and
serve the next turn: see ``test_fake_claude.py`` / ``test_fake_codex.py`` for the processes
and ``tests/e2e/test_fake_directives.py`` for the 400 a client gets.
"""

from __future__ import annotations

import json

import pytest

from clibridge.testing.scenario import (
    BUNDLED_DIR,
    MAX_DELTAS,
    MAX_LARGE_OUTPUT,
    MAX_TOOL_CALLS,
    DirectiveError,
    Scenario,
    ScenarioBook,
    directive,
    scenario_from_dict,
)

BAD: list[tuple[str, str]] = [
    ('@fake {"chunk_char": 2}', "unknown field 'chunk_char'"),
    ("@fake {bad json}", "not valid JSON"),
    ('@fake {"reply": "a"} trailing', "`@fake {JSON object}` or `@fake:NAME`"),
    ("@fake reply=hi", "`@fake {JSON object}` or `@fake:NAME`"),
    ("@fake", "`@fake {JSON object}` or `@fake:NAME`"),
    ("@fake:no_such_scenario", "unknown fake scenario 'no_such_scenario'"),
    ('@fake {"echo": 1}', "echo must be true or false"),
    ('@fake {"chunk_chars": "2"}', "chunk_chars must be an integer"),
    ('@fake {"chunk_chars": -1}', "chunk_chars is -1; allowed at least 0"),
    ('@fake {"reply": 5}', "reply must be a string"),
    ('@fake {"first_delay": NaN}', "NaN is not JSON"),
    ('@fake {"first_delay": 1e400}', "first_delay must be a finite number"),
    ('@fake {"first_delay": -1}', "first_delay is -1; allowed 0..3600"),
    ('@fake {"large_output": 5000000}', f"large_output is 5000000; allowed 0..{MAX_LARGE_OUTPUT}"),
    ('@fake {"large_output": 1150000000}', "large_output is 1150000000"),
    ('@fake {"crash_exit_code": 300}', "crash_exit_code is 300; allowed 0..255"),
    ('@fake {"api_error": 42}', "api_error is 42; allowed 100..599"),
    ('@fake {"api_error_then": "explode"}', "api_error_then is 'explode'; one of"),
    ('@fake {"tool_calls": {"name": "x"}}', "tool_calls must be a list"),
    ('@fake {"tool_calls": [{"name": ""}]}', "tool_calls [0].name must be a non-empty string"),
    ('@fake {"tool_calls": [{"name": "mcp__x"}]}', "a full name is mcp__<server>__<tool>"),
    ('@fake {"tool_calls": [{"name": "x", "arguments": []}]}', "arguments must be an object"),
    ('@fake {"tool_calls": [{"name": "x", "args": {}}]}', 'with "name" and optionally'),
    (
        directive(tool_calls=[{"name": "x"}] * (MAX_TOOL_CALLS + 1)),
        f"at most {MAX_TOOL_CALLS}",
    ),
    (
        directive(api_error=429, api_error_then="hang", retry_delay_ms=0),
        "retry_delay_ms must be at least 10",
    ),
    (
        directive(api_error=529, api_retries=1000, retry_delay_ms=1),
        "retry_delay_ms must be at least 10",
    ),
    ('@fake {"x": ' + "[" * 100_000 + "]" * 100_000 + "}", "not valid JSON"),
]


@pytest.mark.parametrize(("line", "problem"), BAD)
def test_a_bad_directive_names_the_line_and_what_is_wrong(line: str, problem: str) -> None:
    with pytest.raises(DirectiveError) as info:
        ScenarioBook().for_turn(f"hello\n{line}\nworld")
    message = str(info.value)
    assert message.startswith("bad fake directive '@fake"), message
    assert problem in message
    assert len(message) < 800  # the line is quoted, but cut


def test_good_directives_still_apply_and_leave_the_text() -> None:
    scenario, prompt = ScenarioBook().for_turn(
        "a\n"
        + directive(reply="x", chunk_chars=2, error_notification=None, api_error=None)
        + "\n@fake:claude_thinking\n"
        + directive(tool_calls=[{"name": "mcp__s__t", "arguments": {"k": 1}}])
        + "\nb"
    )
    assert (scenario.reply, scenario.chunk_chars) == ("Thought it through.", 2)
    assert scenario.tool_calls[0].arguments == {"k": 1}
    assert prompt.split() == ["a", "b"]  # directive lines are blanked
    # the busiest legal retry loop and the largest legal filler
    ScenarioBook().for_turn(directive(large_output=MAX_LARGE_OUTPUT))
    ScenarioBook().for_turn(directive(api_error=429, api_error_then="hang", retry_delay_ms=10))
    # a word that merely starts with @fake is text, not a directive
    assert ScenarioBook().for_turn("@fakery is fine")[1] == "@fakery is fine"


def test_bad_directives_in_quoted_history_or_tool_results_are_not_read() -> None:
    """Only the newest user turn counts: a bad line a client quotes back is text."""
    quoted = "<conversation_history>\n@fake {bad\n</conversation_history>\nnow"
    assert ScenarioBook().for_turn(quoted)[0] == Scenario()
    result = '<tool_result id="1">\n@fake {"nope": 1}\n</tool_result>\nnow'
    assert ScenarioBook().for_turn(result)[0] == Scenario()


def test_bundled_scenarios_pass_the_checks() -> None:
    for path in sorted(BUNDLED_DIR.glob("*.json")):
        scenario_from_dict(json.loads(path.read_text()))


def test_no_text_streams_in_more_than_max_deltas() -> None:
    """The other half of the 1.15 GB: ``chunk_chars: 1`` over a big text was one JSON line
    per character; now the chunks grow so that no text has more than MAX_DELTAS."""
    text = "x" * MAX_LARGE_OUTPUT
    chunks = Scenario(chunk_chars=1).chunks(text)
    assert len(chunks) <= MAX_DELTAS and "".join(chunks) == text
    assert Scenario(chunk_chars=3).chunks("abcdefg") == ["abc", "def", "g"]  # small: unchanged
    assert Scenario().chunks("abc") == ["abc"]
