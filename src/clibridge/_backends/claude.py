"""The claude stream-json protocol, pure: argv, stdin lines, and the modules it is split into.

Theory of operation
-------------------
A claude worker runs ``claude -p --input-format stream-json --output-format stream-json
--verbose --include-partial-messages --no-session-persistence ...`` (:func:`build_argv`).
We write one JSON object per line to its stdin (the ``*_line`` encoders below) and it
writes one JSON object per line to stdout. The rest of the protocol lives in sibling
modules; the names the worker, tests and bench use are re-exported here (``__all__``):

* :mod:`.claude_parser` -- stdout bytes in, typed records out (h11 shape:
  :meth:`ClaudeParser.receive_data` / :meth:`ClaudeParser.next_event` until
  :data:`NEED_DATA`);
* :mod:`.claude_turn` -- one turn's records in, neutral events out
  (:class:`TurnTranslator`), failing fast on upstream trouble per :class:`RetryPolicy`;
* :mod:`.claude_tools` -- client tools: :func:`check_tools`, :func:`tools_key`, and the
  replies of the SDK MCP server that hosts them (:func:`mcp_reply`);
* :mod:`.claude_render` -- a conversation as the content of ONE ``user`` line
  (:func:`render_user_content`).

The IO around all this (spawn, handshake, pumping, teardown) is
:mod:`.claude_worker`'s.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from .claude_parser import (
    NEED_DATA,
    ApiRetry,
    AssistantMessage,
    ClaudeParser,
    ControlRequest,
    ControlResponse,
    GarbageLine,
    NeedData,
    OtherMessage,
    Record,
    Result,
    StreamEvent,
    SystemInit,
    UserEcho,
    parse_line,
)
from .claude_render import CONTINUE_REQUEST, HISTORY_PREAMBLE, Block, render_user_content
from .claude_tools import (
    CLIENT_MCP_SERVER,
    CLIENT_TOOL_PREFIX,
    check_tools,
    mcp_reply,
    mcp_tool_result,
    tool_use_id,
    tools_from_key,
    tools_key,
)
from .claude_turn import RetryPolicy, TurnTranslator

__all__ = [
    "CONTINUE_REQUEST",
    "HISTORY_PREAMBLE",
    "NEED_DATA",
    "ApiRetry",
    "AssistantMessage",
    "Block",
    "ClaudeParser",
    "ControlRequest",
    "ControlResponse",
    "GarbageLine",
    "NeedData",
    "OtherMessage",
    "Record",
    "Result",
    "RetryPolicy",
    "StreamEvent",
    "SystemInit",
    "TurnTranslator",
    "UserEcho",
    "build_argv",
    "check_tools",
    "clear_line",
    "control_error_line",
    "control_request_line",
    "initialize_line",
    "interrupt_line",
    "mcp_reply",
    "mcp_response_line",
    "mcp_set_servers_line",
    "mcp_status_line",
    "mcp_tool_result",
    "parse_line",
    "render_user_content",
    "set_model_line",
    "tool_use_id",
    "tools_from_key",
    "tools_key",
    "user_line",
]

# --------------------------------------------------------------------------- argv


def build_argv(
    command: Sequence[str],
    *,
    model: str | None = None,
    enable_cli_tools: bool = False,
    client_tools: Sequence[str] = (),
    host_client_tools: bool = False,
) -> list[str]:
    """The argv of one stream-json worker.

    ``client_tools`` (tool names) or ``host_client_tools`` switches on the SDK MCP server on
    stdio that hosts the client's tools; initialize must then list it (``sdk_mcp=True`` in
    :func:`initialize_line`). ``host_client_tools`` allows every tool of that server
    (``--allowedTools mcp__client``, observed to work with 2.1.197): the tool set itself is
    then whatever the host answers to ``tools/list``. The CLI asks that right after boot and
    never again by itself, so a spare spawned before any request answers it with no tools
    and publishes the request's tools at bind (:func:`mcp_set_servers_line`).
    With ``enable_cli_tools`` off the CLI's own tools are disabled.
    """
    argv = [
        *command,
        "-p",
        "--input-format",
        "stream-json",
        "--output-format",
        "stream-json",
        "--verbose",
        "--include-partial-messages",
        "--no-session-persistence",
    ]
    if model:
        argv += ["--model", model]
    if not enable_cli_tools:
        argv += ["--tools", ""]
    if client_tools or host_client_tools:
        mcp = {"mcpServers": {CLIENT_MCP_SERVER: {"type": "sdk", "name": CLIENT_MCP_SERVER}}}
        argv += ["--mcp-config", json.dumps(mcp, separators=(",", ":")), "--strict-mcp-config"]
        if host_client_tools:
            argv += ["--allowedTools", f"mcp__{CLIENT_MCP_SERVER}"]
        else:
            argv += ["--allowedTools", *(CLIENT_TOOL_PREFIX + name for name in client_tools)]
    return argv


# --------------------------------------------------------------------------- stdin lines


def _line(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def control_request_line(request_id: str, request: Mapping[str, Any]) -> bytes:
    return _line({"type": "control_request", "request_id": request_id, "request": request})


def mcp_status_line(request_id: str) -> bytes:
    """The readiness ping: answered once the CLI has booted."""
    return control_request_line(request_id, {"subtype": "mcp_status"})


def initialize_line(request_id: str, system_prompt: str | None, *, sdk_mcp: bool = False) -> bytes:
    """``initialize``; ``system_prompt`` replaces the CLI's default (None keeps it)."""
    request: dict[str, Any] = {"subtype": "initialize"}
    if system_prompt is not None:
        request["systemPrompt"] = system_prompt
    if sdk_mcp:
        request["sdkMcpServers"] = [CLIENT_MCP_SERVER]
    return control_request_line(request_id, request)


def mcp_set_servers_line(request_id: str, *, with_client: bool) -> bytes:
    """``mcp_set_servers``: the dynamic MCP servers, with or without our SDK server.

    Removing the ``client`` server and adding it again makes the CLI connect to it anew and
    ask ``tools/list`` again (observed with 2.1.197; ``mcp_reconnect`` refuses SDK servers):
    how a worker spawned before any request learns the request's tools.
    """
    servers: dict[str, Any] = {}
    if with_client:
        servers[CLIENT_MCP_SERVER] = {"type": "sdk", "name": CLIENT_MCP_SERVER}
    return control_request_line(request_id, {"subtype": "mcp_set_servers", "servers": servers})


def set_model_line(request_id: str, model: str) -> bytes:
    return control_request_line(request_id, {"subtype": "set_model", "model": model})


def interrupt_line(request_id: str) -> bytes:
    return control_request_line(request_id, {"subtype": "interrupt"})


def user_line(content: str | Sequence[Mapping[str, Any]]) -> bytes:
    """One user turn; ``content`` is a string or a list of Anthropic content blocks."""
    return _line(
        {
            "type": "user",
            "message": {"role": "user", "content": content},
            "parent_tool_use_id": None,
            "session_id": "",
        }
    )


def clear_line() -> bytes:
    """``/clear`` as a user message: resets the conversation, keeps the system prompt."""
    return user_line("/clear")


def mcp_response_line(request_id: str, jsonrpc_reply: Mapping[str, Any]) -> bytes:
    """Answer the CLI's ``mcp_message`` control request with a JSON-RPC reply."""
    return _line(
        {
            "type": "control_response",
            "response": {
                "subtype": "success",
                "request_id": request_id,
                "response": {"mcp_response": jsonrpc_reply},
            },
        }
    )


def control_error_line(request_id: str, message: str) -> bytes:
    """Refuse a control request the CLI sent us (so it does not wait forever)."""
    return _line(
        {
            "type": "control_response",
            "response": {"subtype": "error", "request_id": request_id, "error": message},
        }
    )
