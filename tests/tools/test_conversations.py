"""Pure tests: canonical form, fingerprints, plans, tool checks and MCP replies."""

from __future__ import annotations

import pytest

from clibridge._backends import claude
from clibridge._conversations import (
    ONE_SHOT_STREAK,
    STREAK_SETUPS,
    Continue,
    Conversation,
    Item,
    OneShotWatch,
    ToolResume,
    align,
    best_match,
    canonical_id,
    conversation_key,
    items,
    new_call_id,
    plan,
    setup_digest,
)
from clibridge._errors import UnsupportedFeature
from clibridge._events import (
    Message,
    Request,
    TextPart,
    ThinkingPart,
    ToolCallPart,
    ToolChoice,
    ToolResultPart,
    ToolSpec,
)


def user(*texts: str) -> Message:
    return Message("user", tuple(TextPart(t) for t in texts))


def convo(call_id: str, args: str, text: str = "hi") -> list[Message]:
    return [
        Message("user", (TextPart(text),)),
        Message("assistant", (ThinkingPart("hmm"), ToolCallPart(call_id, "f", args))),
    ]


def digests(messages: list[Message]) -> list[str]:
    return [i.digest for i in items(messages)]


def test_rewriting_and_reserialising_keep_the_items() -> None:
    """OpenClaw replays call_1 as call1; clients re-encode JSON and trim text."""
    cid = new_call_id()
    assert canonical_id(cid) == cid
    a = digests(convo(cid, '{"a": 1, "b": [1, 2]}'))
    b = digests(convo("CALL_" + cid[4:].upper(), '{"b":[1,2],"a":1}', " hi\n"))
    assert a == b
    assert digests(convo(cid, "{}", "bye")) != digests(convo(cid, "{}"))


def test_responses_api_call_ids_wrapped_by_openclaw_still_match() -> None:
    """Regression: OpenClaw (openai-responses) sends our id back as
    call_<ours>_fc_<16 hex>_<10 hex>; normalize_id alone could not match it."""
    ours = "calla413163d5b8d8edc273f9734"
    assert canonical_id(f"call_{ours}_fc_1850090dbb71a236_4df5d13e13") == ours
    assert canonical_id("call_1") == "call1"  # a foreign id keeps its alphanumerics
    assert digests(convo(ours, "{}")) == digests(
        convo(f"call_{ours}_fc_1850090dbb71a236_4df5d13e13", "{}")
    )


def test_plans() -> None:
    mid = Conversation("k", "s", (), (("calla", "toolu_1"), ("callb", "toolu_2")))
    results = Message("user", (ToolResultPart("call_B", "2"), ToolResultPart("callA", "1")))
    step = plan(mid, [results])
    assert isinstance(step, ToolResume) and set(step.results) == {"toolu_1", "toolu_2"}
    assert plan(mid, [Message("user", (ToolResultPart("calla", "1"),))]) is None  # one missing
    done = Conversation("k", "s", (), ())
    assert isinstance(plan(done, [user("next")]), Continue)
    assert plan(done, [Message("assistant", (TextPart("x"),))]) is None
    assert plan(done, []) is None


def test_context_after_tool_results_goes_to_the_last_result() -> None:
    """Regression: OpenClaw sends its internal context message after the tool results;
    plan() accepted only tool results, so no tool round trip ever resumed."""
    mid = Conversation("k", "s", (), (("calla", "toolu_1"), ("callb", "toolu_2")))
    results = Message("user", (ToolResultPart("callb", "2"), ToolResultPart("calla", "1")))
    step = plan(mid, [results, user("<<<CTX>>> now 12:00")])
    assert isinstance(step, ToolResume)
    assert step.results["toolu_1"].content == "1"
    assert step.results["toolu_2"].content == "2\n\n<<<CTX>>> now 12:00"
    # results after the context, or a call by the client: not faithful
    late = Message("user", (TextPart("ctx"), ToolResultPart("calla", "1")))
    assert plan(mid, [late, Message("user", (ToolResultPart("callb", "2"),))]) is None


def test_alignment_drops_trailing_context_but_nothing_else() -> None:
    cid = new_call_id()
    call = Message("assistant", (ToolCallPart(cid, "read", "{}"),))
    result = Message("user", (ToolResultPart(cid, "file"),))
    held = items([user("do it"), user("<<<CTX 1>>>"), call])
    # request 2: the client replays without its first context, adds a new one
    request = items([user("do it"), call, result, user("<<<CTX 2>>>")])
    assert align(held, request) == (2, 1)
    # the user's own message is never dropped
    assert align(held, items([user("other"), call, result])) is None
    # the first item of a user turn is not droppable, in one message or two
    assert [i.droppable for i in items([user("a", "b"), call, result, user("c")])] == [
        False,
        True,
        False,
        False,
        True,
    ]
    # the model's own turn must be there
    assert align(held, items([user("do it"), result])) is None


def test_alignment_allows_for_a_reminder_trimmed_off_the_last_user_message() -> None:
    """Regression: Aider's chat turns never continued the parked worker. Aider appends its
    edit-format rules to the newest user message and replays it without them."""
    rules = "\n\n# *SEARCH/REPLACE block* Rules:\n..."
    examples = [user("example"), Message("assistant", (TextPart("example answer"),))]
    answer = Message("assistant", (TextPart("Nice to meet you, Ada."),))
    held = items([*examples, user("My name is Ada." + rules), answer])
    request = items([*examples, user("My name is Ada."), answer, user("Name?" + rules)])
    assert align(held, request) == (4, 0)
    # the held text goes on at a line break, not inside a word or a line
    for cut in ("My name is Ad", "My name"):
        assert align(held, items([*examples, user(cut), answer, user("Name?")])) is None
    # only the last user message of the held conversation: an earlier one must be equal
    earlier = items([user("example" + rules), *examples[1:], user("My name is Ada."), answer])
    assert align(earlier, request) is None
    # a longer text is not a trimmed one
    longer = items([*examples, user("My name is Ada." + rules + "\nmore"), answer, user("x")])
    assert align(held, longer) is None


def test_the_conversation_that_aligns_furthest_is_the_match() -> None:
    setup = setup_digest("setup")
    short = tuple(items([user("a"), Message("assistant", (TextPart("b"),))]))
    longer = (*short, *items([user("c"), Message("assistant", (TextPart("d"),))], 2))
    parked = [
        Conversation(conversation_key(setup, held), setup, held, ()) for held in (short, longer)
    ]
    messages = [
        user("a"),
        Message("assistant", (TextPart("b"),)),
        user("c"),
        Message("assistant", (TextPart("d"),)),
        user("e"),
    ]
    match = best_match(parked, setup, messages, items(messages))
    assert match is not None and match.conversation.held == longer
    assert match.new == (user("e"),) and isinstance(match.plan, Continue)
    assert best_match(parked, setup_digest("other"), messages, items(messages)) is None
    assert isinstance(short[0], Item)


def test_check_tools() -> None:
    good = ToolSpec("get_weather", "", {"type": "object", "properties": {}})
    req = Request("m", (Message("user", (TextPart("x"),)),), tools=(good,))
    assert claude.check_tools(req) is req
    assert (
        claude.check_tools(
            Request("m", req.messages, tools=(good,), tool_choice=ToolChoice("none"))
        ).tools
        == ()
    )
    for choice in (ToolChoice("required"), ToolChoice("tool", "get_weather")):
        with pytest.raises(UnsupportedFeature, match="tool_choice"):
            claude.check_tools(Request("m", req.messages, tools=(good,), tool_choice=choice))
    bad = [
        ToolSpec("has space", "", good.input_schema),
        ToolSpec("x" * 52, "", good.input_schema),
        ToolSpec("arr", "", {"type": "array"}),
    ]
    for tool in bad:
        with pytest.raises(UnsupportedFeature, match=tool.name[:10]) as info:
            claude.check_tools(Request("m", req.messages, tools=(good, tool)))
        assert info.value.param == "$.tools[1]"
    with pytest.raises(UnsupportedFeature, match="twice"):
        claude.check_tools(Request("m", req.messages, tools=(good, good)))


def test_mcp_replies() -> None:
    tool = ToolSpec("f", "does f", {"type": "object"})
    key = claude.tools_key([tool])
    assert claude.tools_from_key(key) == (tool,)
    listed = claude.mcp_reply({"method": "tools/list", "id": 1, "jsonrpc": "2.0"}, [tool])
    assert listed == {
        "jsonrpc": "2.0",
        "id": 1,
        "result": {
            "tools": [{"name": "f", "description": "does f", "inputSchema": {"type": "object"}}]
        },
    }
    # notifications are answered too (the CLI stalls otherwise), without an id
    assert claude.mcp_reply({"method": "notifications/cancelled"}, []) == {
        "jsonrpc": "2.0",
        "result": {},
    }
    assert claude.mcp_reply({"method": "tools/call", "id": 3}, []) is None
    unknown = claude.mcp_reply({"method": "resources/list", "id": 4}, [])
    assert unknown is not None and unknown["error"]["code"] == -32601
    call = {
        "method": "tools/call",
        "id": 5,
        "params": {"_meta": {"claudecode/toolUseId": "toolu_9"}},
    }
    assert claude.tool_use_id(call) == "toolu_9"
    assert claude.mcp_tool_result(call, "bad", is_error=True)["result"]["isError"] is True


def test_a_one_shot_client_stops_parking_and_history_resumes_it() -> None:
    """ONE_SHOT_STREAK new conversations in a row: finished turns of that setup are not
    parked; the first request with history (of that setup only) parks again."""
    table = OneShotWatch()
    history = [user("hi"), Message("assistant", (TextPart("hello"),)), user("more")]
    reuses = []
    for i in range(ONE_SHOT_STREAK):
        assert table.parks_finished("a")
        table.note_request("a", [user(f"new {i}")])
        reuses.append(table.reuses_finished("a"))
    # the second new conversation in a row already takes the previous one's worker
    assert reuses == [False] + [True] * (ONE_SHOT_STREAK - 1)
    assert not table.parks_finished("a")
    table.note_request("b", [user("new")])
    assert table.parks_finished("b") and not table.parks_finished("a")
    table.note_request("a", history)
    assert table.parks_finished("a") and not table.reuses_finished("a")


def test_one_shot_streaks_are_remembered_for_a_bounded_number_of_setups() -> None:
    table = OneShotWatch()
    for _ in range(ONE_SHOT_STREAK):
        table.note_request("first", [user("new")])
    for i in range(STREAK_SETUPS):
        table.note_request(f"setup {i}", [user("new")])
    assert table.parks_finished("first")  # forgotten: parks again
    assert len(table._new_in_a_row) == STREAK_SETUPS
