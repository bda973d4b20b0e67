"""Directives (``@fake`` for the fake CLIs, ``@stub`` for the model stub) apply to the newest
user turn only: never to a history clibridge replays inside the newest user message, never to
tool results, and to every user message after the last assistant or tool message.

Regression: a ``@stub`` tool directive from an earlier turn was read again from the history
that ``_backends/claude/render.py`` quotes into the newest user message when a conversation
cannot continue on a parked worker; the model called the tool again, the client answered, the
next fallback replay called it again... (~190 workers spawned in 2 minutes).
"""

from __future__ import annotations

from collections import deque
from typing import Any

import pytest

from clibridge._backends import codex
from clibridge._backends.claude.render import (
    HISTORY_CLOSE,
    LATEST_HEADER,
    TOOL_RESULTS_HEADER,
    render_user_content,
)
from clibridge._events import Message, Request, TextPart, ToolCallPart, ToolResultPart
from clibridge.testing import model_stub
from clibridge.testing.model_stub import DEFAULT_TEXT, Reply, StubToolCall, choose_reply
from clibridge.testing.scenario import (
    DEFAULT_REPLY,
    QUOTED_HISTORY_ENDS,
    FakeToolCall,
    ScenarioBook,
    directive,
    directive_text,
)

TOOL = [{"name": "get_weather", "arguments": {"city": "Tokyo"}}]
STUB_TOOL = model_stub.directive(tool_calls=[{"name": "get_weather", "input": {"city": "Tokyo"}}])


def user(*parts: Any) -> Message:
    return Message("user", tuple(TextPart(p) if isinstance(p, str) else p for p in parts))


def assistant(*parts: Any) -> Message:
    return Message("assistant", tuple(TextPart(p) if isinstance(p, str) else p for p in parts))


def text_of(content: str | list[dict[str, Any]]) -> str:
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in content)


def tool_round(first_user: str) -> list[Message]:
    """A conversation after one tool call: question, the call, its result."""
    return [
        user(first_user),
        assistant(ToolCallPart("call_1", "get_weather", '{"city": "Tokyo"}')),
        user(ToolResultPart("call_1", "sunny in Tokyo")),
    ]


def anthropic(*messages: dict[str, Any]) -> dict[str, Any]:
    return {"model": "m", "max_tokens": 10, "stream": True, "messages": list(messages)}


# --------------------------------------------------------------------------- the rule


def test_directive_text_cuts_quoted_history_and_rendered_tool_results() -> None:
    text = (
        "preamble\n<conversation_history>\n@fake:old\n</conversation_history>\n\n"
        'Latest user message:\n<tool_result id="c" name="f">@fake:in_result\n</tool_result>\n'
        "@fake:new\nquestion"
    )
    assert directive_text(text) == "\n\nLatest user message:\n\n@fake:new\nquestion"
    # the last closing tag counts: a history quoted inside a quoted history stays quoted
    nested = "<conversation_history>a </conversation_history> b</conversation_history>\n@fake:x"
    assert directive_text(nested) == "\n@fake:x"
    assert directive_text("plain\n@fake:x") == "plain\n@fake:x"


def test_the_renderers_close_their_history_with_a_known_end_marker() -> None:
    """The contract the scanners rely on: both replay renderers end the quote with one of
    ``QUOTED_HISTORY_ENDS`` and put the newest turn after it."""
    assert HISTORY_CLOSE in QUOTED_HISTORY_ENDS
    rendered = text_of(render_user_content([*tool_round("q"), assistant("a"), user("NEW")]))
    assert rendered.rsplit(HISTORY_CLOSE, 1)[1] == f"\n\n{LATEST_HEADER}\nNEW"
    request = Request(model="m", messages=(user("q"), assistant("a"), user("NEW")))
    head = codex.render_transcript(request)[0]["text"]
    assert any(head.rstrip().endswith(end) for end in QUOTED_HISTORY_ENDS)


def test_replay_frames_the_history_as_past_context_and_the_new_request_last() -> None:
    """The model must not take an earlier request for a new one: the preamble says the
    quoted turns already happened, ONE history element holds every earlier turn, and after
    it comes only the labelled newest turn."""
    messages = [
        user("Book a table for two."),
        assistant(ToolCallPart("c1", "book", '{"people": 2}')),
        user(ToolResultPart("c1", "booked")),
        assistant("Done: booked."),
        user("Now what time is it?"),
    ]
    text = text_of(render_user_content(messages))
    preamble, rest = text.split("<conversation_history>\n", 1)
    assert "already happened" in preamble and "Respond only to what follows" in preamble
    quoted, new = rest.rsplit(HISTORY_CLOSE, 1)
    assert "Book a table" in quoted and "booked" in quoted and "<tool_call" in quoted
    assert new == f"\n\n{LATEST_HEADER}\nNow what time is it?"
    assert text.count(HISTORY_CLOSE) == 1
    # a round that ends with tool results says so, instead of calling them a user message
    text = text_of(render_user_content(messages[:3]))
    assert text.rsplit(HISTORY_CLOSE, 1)[1] == (
        f'\n\n{TOOL_RESULTS_HEADER}\n<tool_result id="c1" name="book">booked</tool_result>'
    )


# --------------------------------------------------------------------------- the fakes


def test_fake_ignores_a_tool_directive_in_a_replayed_claude_history() -> None:
    """Regression (the replay loop): the fallback replay of a tool round quotes the first
    user message, tool directive included; the fake must not call the tool again."""
    replay = text_of(render_user_content(tool_round(directive(tool_calls=TOOL) + "\nweather?")))
    scenario, prompt = ScenarioBook().for_turn(replay)
    assert scenario.tool_calls == ()
    assert scenario.reply == DEFAULT_REPLY
    assert "@fake" not in prompt  # directive lines leave the echoed prompt everywhere


def test_fake_applies_a_directive_of_the_newest_turn_after_a_replayed_history() -> None:
    messages = [
        user(directive(tool_calls=TOOL, reply="old") + "\nweather?"),
        assistant("It is sunny."),
        user(directive(reply="new") + "\nand tomorrow?"),
        user("<context>openclaw's own context message</context>"),
    ]
    scenario, _ = ScenarioBook().for_turn(text_of(render_user_content(messages)))
    assert (scenario.reply, scenario.tool_calls) == ("new", ())


def test_fake_ignores_directives_in_tool_results() -> None:
    """A tool result is not a user turn, even when it echoes a directive back."""
    messages = [
        user("weather?"),
        assistant(ToolCallPart("c1", "get_weather", "{}")),
        user(ToolResultPart("c1", directive(tool_calls=TOOL))),
    ]
    rendered = text_of(render_user_content(messages))
    assert TOOL_RESULTS_HEADER in rendered
    scenario, _ = ScenarioBook().for_turn(rendered)
    assert scenario.tool_calls == ()


def test_fake_codex_ignores_a_tool_directive_in_the_transcript_fallback() -> None:
    """Regression, codex side: ``render_transcript`` (an app-server without inject_items)
    quotes the history in the turn input as ``<conversation_so_far>``."""
    request = Request(
        model="m",
        messages=(
            user(directive(tool_calls=TOOL) + "\nweather?"),
            assistant("It is sunny."),
            user("and tomorrow?"),
        ),
    )
    items = codex.render_transcript(request)
    text = "\n".join(str(i.get("text", "")) for i in items if i.get("type") == "text")
    assert "@fake" in text  # the quote is faithful ...
    scenario, _ = ScenarioBook().for_turn(text)
    assert scenario.tool_calls == ()  # ... and inert
    request = Request(
        model="m",
        messages=(user("q"), assistant("a"), user(directive(tool_calls=TOOL) + "\nnow")),
    )
    text = "\n".join(str(i.get("text", "")) for i in codex.render_transcript(request))
    assert ScenarioBook().for_turn(text)[0].tool_calls == (
        FakeToolCall("get_weather", {"city": "Tokyo"}),
    )


# --------------------------------------------------------------------------- the model stub


def test_stub_ignores_a_tool_directive_in_a_replayed_claude_history() -> None:
    """Regression (the replay loop, as it happened): the real claude on a fresh worker sends
    ONE user message holding the rendered history; the ``@stub`` tool directive of the first
    turn inside it must not fire again."""
    replay = render_user_content(tool_round(STUB_TOOL + "\nweather?"))
    body = anthropic({"role": "user", "content": replay})
    reply, text = choose_reply(body, deque(), Reply())
    assert reply.tool_calls == ()
    assert text == DEFAULT_TEXT
    # a directive in the newest turn after the history still applies
    messages = [*tool_round(STUB_TOOL + "\nweather?"), assistant("ok"), user("@stub:echo\nmore")]
    body = anthropic({"role": "user", "content": render_user_content(messages)})
    assert choose_reply(body, deque(), Reply())[0].echo


def test_stub_newest_turn_is_every_user_message_after_the_last_assistant() -> None:
    """OpenClaw sends its own context message after the user's: both are the newest turn."""
    body = anthropic(
        {"role": "user", "content": model_stub.directive(text="old")},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": model_stub.directive(text="new")},
        {"role": "user", "content": [{"type": "text", "text": "<context>x</context>"}]},
    )
    assert choose_reply(body, deque(), Reply())[1] == "new"


@pytest.mark.parametrize("with_text", [False, True], ids=["result", "result+text"])
def test_stub_anthropic_tool_result_message_ends_the_turn(with_text: bool) -> None:
    """A user message carrying ``tool_result`` blocks is a tool message: not scanned."""
    results: list[dict[str, Any]] = [
        {"type": "tool_result", "tool_use_id": "t1", "content": STUB_TOOL}
    ]
    if with_text:
        results.append({"type": "text", "text": STUB_TOOL})
    body = anthropic(
        {"role": "user", "content": STUB_TOOL},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f"}]},
        {"role": "user", "content": results},
    )
    reply, text = choose_reply(body, deque(), Reply())
    assert (reply.tool_calls, text) == ((), DEFAULT_TEXT)


def test_stub_responses_items_end_the_turn_and_developer_messages_are_skipped() -> None:
    def responses(*items: dict[str, Any]) -> dict[str, Any]:
        return {"model": "m", "stream": True, "input": list(items)}

    def msg(role: str, text: str) -> dict[str, Any]:
        return {"type": "message", "role": role, "content": [{"type": "input_text", "text": text}]}

    call = {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"}
    output = {"type": "function_call_output", "call_id": "c1", "output": STUB_TOOL}
    # codex after a tool call: the input ends with the output, the directive is behind it
    body = responses(msg("developer", "sys"), msg("user", STUB_TOOL), call, output)
    assert choose_reply(body, deque(), Reply())[0].tool_calls == ()
    # a developer message after the user's does not end the user turn
    body = responses(msg("user", STUB_TOOL), msg("developer", "late instructions"))
    assert choose_reply(body, deque(), Reply())[0].tool_calls == (
        StubToolCall("get_weather", {"city": "Tokyo"}),
    )
    # EasyInputMessage items (no "type") are messages too
    body = responses(
        {"role": "assistant", "content": "a"}, {"role": "user", "content": "@stub:echo"}
    )
    assert choose_reply(body, deque(), Reply())[0].echo


def test_stub_transcript_fallback_quote_is_not_scanned() -> None:
    request = Request(
        model="m",
        messages=(user(STUB_TOOL + "\nweather?"), assistant("sunny"), user("and tomorrow?")),
    )
    content = [
        {"type": "input_text", "text": str(i["text"])}
        for i in codex.render_transcript(request)
        if i.get("type") == "text"
    ]
    body = {"model": "m", "input": [{"type": "message", "role": "user", "content": content}]}
    assert choose_reply(body, deque(), Reply())[0].tool_calls == ()
