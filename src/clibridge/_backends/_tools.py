"""Checks of a request's client tools that every backend shares (pure).

Both CLIs host the client's tools natively and neither can force a call, so the rules are
the same; only the longest tool name differs (claude prefixes ``mcp__client__``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

import attrs

from .._errors import UnsupportedFeature
from .._events import Request

_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]+")


def check_tools(request: Request, *, cli: str, max_name: int) -> Request:
    """The request as ``cli`` can honour it, or :class:`UnsupportedFeature` naming the field.

    ``tool_choice`` none hides the tools; required / a named tool cannot be forced by the
    CLI (400). Names beyond ``max_name`` characters or outside ``[A-Za-z0-9_-]``, duplicate
    names, and schemas that are not JSON Schema objects are refused with ``$.tools[i]``.
    """
    if not request.tools:
        return request
    choice = request.tool_choice
    if choice.mode == "none":
        return attrs.evolve(request, tools=())
    if choice.mode in ("required", "tool"):
        what = "required" if choice.mode == "required" else f"the named tool {choice.name!r}"
        raise UnsupportedFeature(
            f"tool_choice {what} cannot be honoured by the {cli} backend (the {cli} CLI "
            "cannot force a tool call); send tool_choice auto or none",
            param="$.tool_choice",
        )
    seen: set[str] = set()
    for i, tool in enumerate(request.tools):
        param = f"$.tools[{i}]"
        if not _TOOL_NAME.fullmatch(tool.name) or len(tool.name) > max_name:
            raise UnsupportedFeature(
                f"tool {tool.name!r}: {cli} accepts tool names of 1 to {max_name} "
                "letters, digits, '_' or '-'; rename the tool",
                param=param,
            )
        if tool.name in seen:
            raise UnsupportedFeature(f"tool {tool.name!r} is defined twice", param=param)
        seen.add(tool.name)
        schema = tool.input_schema
        if not isinstance(schema, Mapping) or schema.get("type") != "object":
            raise UnsupportedFeature(
                f"tool {tool.name!r}: its parameters schema must be a JSON Schema object with "
                f'"type": "object" ({cli} rejects anything else)',
                param=param,
            )
        try:
            json.dumps(schema)
        except (TypeError, ValueError) as exc:
            raise UnsupportedFeature(
                f"tool {tool.name!r}: its schema is not JSON: {exc}", param=param
            ) from exc
    return request
