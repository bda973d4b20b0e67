"""The JSON-RPC lines clibridge writes to ``codex app-server``, and the params of its requests."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

from ..._events import (
    ToolSpec,
)
from .tools import dynamic_tools

#: JSON-RPC error codes
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601

#: server requests that ask for an approval, and the reply that declines each
APPROVAL_DECLINES: Final[Mapping[str, Mapping[str, Any]]] = {
    "item/commandExecution/requestApproval": {"decision": "decline"},
    "item/fileChange/requestApproval": {"decision": "decline"},
    "execCommandApproval": {"decision": "denied"},
    "applyPatchApproval": {"decision": "denied"},
    "item/permissions/requestApproval": {"permissions": {}},
    "mcpServer/elicitation/request": {"action": "decline"},
}


def _line(msg: Mapping[str, Any]) -> bytes:
    return json.dumps(msg, ensure_ascii=False, separators=(",", ":")).encode()


def request_line(req_id: int, method: str, params: Mapping[str, Any]) -> bytes:
    return _line({"jsonrpc": "2.0", "id": req_id, "method": method, "params": params})


def notification_line(method: str) -> bytes:
    return _line({"jsonrpc": "2.0", "method": method})


def result_line(req_id: Any, result: Mapping[str, Any]) -> bytes:
    return _line({"jsonrpc": "2.0", "id": req_id, "result": result})


def error_line(req_id: Any, message: str, code: int = METHOD_NOT_FOUND) -> bytes:
    return _line({"jsonrpc": "2.0", "id": req_id, "error": {"code": code, "message": message}})


def initialize_params(version: str) -> dict[str, Any]:
    # experimentalApi: needed for ``environments: []`` and, later, dynamic tools
    return {
        "clientInfo": {"name": "clibridge", "title": "clibridge", "version": version},
        "capabilities": {"experimentalApi": True},
    }


def thread_start_params(
    *,
    system: str,
    model: str | None,
    cwd: str,
    enable_cli_tools: bool = False,
    tools: Sequence[ToolSpec] = (),
) -> dict[str, Any]:
    params: dict[str, Any] = {
        "ephemeral": True,
        "baseInstructions": system,
        "cwd": cwd,
        "sandbox": "read-only",
        "approvalPolicy": "never",
    }
    if model:
        params["model"] = model
    if not enable_cli_tools:
        params["environments"] = []  # no environment: nothing to run commands in
    if tools:
        params["dynamicTools"] = dynamic_tools(tools)
    return params


def turn_start_params(
    thread_id: str, items: Sequence[Mapping[str, Any]], effort: str | None
) -> dict[str, Any]:
    params: dict[str, Any] = {"threadId": thread_id, "input": list(items)}
    if effort:
        params["effort"] = effort
    return params


def interrupt_params(thread_id: str, turn_id: str) -> dict[str, Any]:
    return {"threadId": thread_id, "turnId": turn_id}
