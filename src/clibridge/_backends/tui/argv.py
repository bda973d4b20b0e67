"""The argv of the interactive claude in a TUI worker's pane."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = ["build_pane_argv"]


def build_pane_argv(
    command: Sequence[str],
    *,
    session_id: str,
    system_prompt_file: Path,
    debug_file: Path,
    model: str | None = None,
    enable_cli_tools: bool = False,
    mcp_config: str | None = None,
) -> list[str]:
    """The interactive claude of one pane (no ``-p``: that is what makes it the TUI).

    ``--session-id`` names the first transcript; ``--system-prompt-file`` carries a
    system prompt of any size (the interactive CLI takes it only at start, so panes are
    keyed by it); ``--debug-file`` is where the CLI logs the upstream errors it retries,
    which the transcript does not show.
    """
    argv = [
        *command,
        "--session-id",
        session_id,
        "--system-prompt-file",
        str(system_prompt_file),
        "--debug-file",
        str(debug_file),
    ]
    if model:
        argv += ["--model", model]
    if not enable_cli_tools:
        argv += ["--tools", ""]
    if mcp_config is not None:
        # the client's tools, served by clibridge's loopback MCP server (mcp.py); allowed
        # up front, else the CLI asks permission on screen for every call
        argv += ["--mcp-config", mcp_config, "--strict-mcp-config", "--allowedTools", "mcp__client"]
    return argv
