"""Client tools for claude, pure: checks, the tool-set key, and the SDK MCP server's replies.

A client's tools reach claude through an SDK MCP server on stdio named ``client``
(:data:`CLIENT_MCP_SERVER`; the model sees ``mcp__client__NAME``): the CLI sends us
``mcp_message`` control requests and we answer ``initialize`` / ``tools/list`` ourselves
(:func:`mcp_reply`), while a ``tools/call`` becomes a tool call of the response and is answered
with the client's result (:func:`mcp_tool_result`). :func:`check_tools` refuses, with a 400
naming the tool, what claude cannot honour; :func:`tools_key` is the hashable form of a tool
set that a worker's binding remembers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

from ..._events import Request, ToolSpec
from .._tools import check_tools as _check_tools

#: the SDK MCP server name client tools are exposed under; the model sees ``mcp__client__X``
CLIENT_MCP_SERVER: Final = "client"
CLIENT_TOOL_PREFIX: Final = f"mcp__{CLIENT_MCP_SERVER}__"

#: the Anthropic API's tool name limit (64) minus the ``mcp__client__`` prefix
MAX_TOOL_NAME: Final = 64 - len(CLIENT_TOOL_PREFIX)
MCP_PROTOCOL_VERSION: Final = "2025-11-25"


def tools_key(tools: Sequence[ToolSpec]) -> tuple[str, ...]:
    """A canonical, hashable form of a tool set (``Binding.tools_key``); see :func:`tools_from_key`."""
    return tuple(
        json.dumps([t.name, t.description, t.input_schema], sort_keys=True, separators=(",", ":"))
        for t in sorted(tools, key=lambda t: t.name)
    )


def tools_from_key(key: object) -> tuple[ToolSpec, ...]:
    """The tool set a :func:`tools_key` stands for (anything else: no tools)."""
    if not isinstance(key, tuple):
        return ()
    tools = []
    for text in key:
        try:
            name, description, schema = json.loads(text)
        except (TypeError, ValueError):
            continue
        tools.append(ToolSpec(str(name), str(description), dict(schema)))
    return tuple(tools)


def check_tools(request: Request) -> Request:
    """Validate the request's tools for claude; ``tool_choice: none`` hides them.

    Raises :class:`UnsupportedFeature` (400) for what claude cannot honour: a forced tool
    choice (``required`` / a named tool; claude code has no such switch) and tool
    definitions the CLI or its upstream would reject, naming the tool.
    """
    return _check_tools(request, cli="claude", max_name=MAX_TOOL_NAME)


def mcp_reply(message: Mapping[str, Any], tools: Sequence[ToolSpec]) -> dict[str, Any] | None:
    """Our JSON-RPC reply to an MCP message the CLI sent, except ``tools/call`` (None).

    Notifications get an empty result too: the CLI waits for a control_response to every
    ``mcp_message``, notifications included (observed), or it stalls.
    """
    method = message.get("method")
    result: dict[str, Any]
    if method == "tools/call":
        return None
    if method == "initialize":
        result = {
            "protocolVersion": (message.get("params") or {}).get("protocolVersion")
            or MCP_PROTOCOL_VERSION,
            "capabilities": {"tools": {}},
            "serverInfo": {"name": CLIENT_MCP_SERVER, "version": "1"},
        }
    elif method == "tools/list":
        result = {
            "tools": [
                {"name": t.name, "description": t.description, "inputSchema": t.input_schema}
                for t in tools
            ]
        }
    elif method == "ping" or not isinstance(method, str) or method.startswith("notifications/"):
        result = {}
    else:
        reply: dict[str, Any] = {
            "jsonrpc": "2.0",
            "error": {"code": -32601, "message": f"method {method!r} not supported"},
        }
        if "id" in message:
            reply["id"] = message["id"]
        return reply
    reply = {"jsonrpc": "2.0", "result": result}
    if "id" in message:
        reply["id"] = message["id"]
    return reply


def mcp_tool_result(message: Mapping[str, Any], content: str, *, is_error: bool) -> dict[str, Any]:
    """The JSON-RPC reply to a ``tools/call`` carrying the client's result."""
    result: dict[str, Any] = {"content": [{"type": "text", "text": content}]}
    if is_error:
        result["isError"] = True
    return {"jsonrpc": "2.0", "id": message.get("id"), "result": result}


def tool_use_id(message: Mapping[str, Any]) -> str:
    """The ``tool_use`` id a ``tools/call`` answers (``_meta["claudecode/toolUseId"]``)."""
    params = message.get("params") or {}
    meta = params.get("_meta") or {} if isinstance(params, Mapping) else {}
    return str(meta.get("claudecode/toolUseId", "")) if isinstance(meta, Mapping) else ""
