"""Pure tests: canonical form, fingerprints, plans, tool checks and MCP replies."""

from __future__ import annotations

import pytest

from clibridge._backends import claude
from clibridge._conversations import (
    Continue,
    Conversation,
    ToolResume,
    fingerprints,
    new_call_id,
    normalize_id,
    plan,
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


def convo(call_id: str, args: str, text: str = "hi") -> list[Message]:
    return [
        Message("user", (TextPart(text),)),
        Message("assistant", (ThinkingPart("hmm"), ToolCallPart(call_id, "f", args))),
    ]


def test_rewriting_and_reserialising_keep_the_fingerprint() -> None:
    """OpenClaw replays call_1 as call1; clients re-encode JSON and trim text."""
    cid = new_call_id()
    assert normalize_id(cid) == cid
    a = fingerprints("setup", convo(cid, '{"a": 1, "b": [1, 2]}'))
    b = fingerprints("setup", convo("CALL_" + cid[4:].upper(), '{"b":[1,2],"a":1}', " hi\n"))
    assert a == b
    assert (
        fingerprints("other", convo(cid, "{}"))[-1] != fingerprints("setup", convo(cid, "{}"))[-1]
    )
    assert (
        fingerprints("setup", convo(cid, "{}", "bye"))[-1]
        != fingerprints("setup", convo(cid, "{}"))[-1]
    )


def test_plans() -> None:
    mid = Conversation("k", (("calla", "toolu_1"), ("callb", "toolu_2")), 0.0)
    results = Message("user", (ToolResultPart("call_B", "2"), ToolResultPart("callA", "1")))
    step = plan(mid, [results])
    assert isinstance(step, ToolResume) and set(step.results) == {"toolu_1", "toolu_2"}
    assert plan(mid, [Message("user", (ToolResultPart("calla", "1"),))]) is None  # one missing
    assert plan(mid, [results, Message("user", (TextPart("and?"),))]) is None
    done = Conversation("k", (), 0.0)
    assert isinstance(plan(done, [Message("user", (TextPart("next"),))]), Continue)
    assert plan(done, [Message("assistant", (TextPart("x"),))]) is None
    assert plan(done, []) is None


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
