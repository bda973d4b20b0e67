"""The argv of a claude stream-json worker."""

from __future__ import annotations

import json
from collections.abc import Sequence

from .tools import CLIENT_MCP_SERVER, CLIENT_TOOL_PREFIX

__all__ = ["build_argv"]


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
