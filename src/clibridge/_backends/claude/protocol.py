"""The stdin lines of the claude stream-json protocol: control requests and user messages.

One JSON object per line; what comes back on stdout is :mod:`.parser`'s business.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from .tools import CLIENT_MCP_SERVER

__all__ = [
    "clear_line",
    "control_error_line",
    "control_request_line",
    "initialize_line",
    "interrupt_line",
    "mcp_response_line",
    "mcp_set_servers_line",
    "mcp_status_line",
    "set_model_line",
    "user_line",
]


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
