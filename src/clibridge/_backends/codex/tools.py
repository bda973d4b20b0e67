"""Client tools on codex: ``dynamicTools`` on ``thread/start``, ``item/tool/call`` replies."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from ..._events import (
    Request,
    ToolResultPart,
    ToolSpec,
)
from .._tools import check_tools as _check_tools

#: what the Responses API (codex's upstream) accepts as a function name


def check_tools(request: Request) -> Request:
    """Validate the request's tools for codex; ``tool_choice: none`` hides them.

    Raises :class:`UnsupportedFeature` (400) for what codex cannot honour: a forced tool
    choice (the app-server has no per-turn tool_choice) and tool definitions the upstream
    would reject, naming the tool.
    """
    return _check_tools(request, cli="codex", max_name=64)


def dynamic_tools(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    """``thread/start`` ``dynamicTools``: the client's tools under the client's own names."""
    return [
        {
            "type": "function",
            "name": tool.name,
            "description": tool.description,
            "inputSchema": tool.input_schema,
        }
        for tool in tools
    ]


def tool_call_response(result: ToolResultPart) -> dict[str, Any]:
    """The ``DynamicToolCallResponse`` answering an ``item/tool/call`` with a client result."""
    return {
        "contentItems": [{"type": "inputText", "text": result.content}],
        "success": not result.is_error,
    }


TOOL_CALL_METHOD: Final = "item/tool/call"
