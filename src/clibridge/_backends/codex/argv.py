"""The argv of a codex ``app-server`` worker: the ``-c`` overrides that make it a plain model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

#: ``-c`` overrides for every app-server clibridge runs: no project docs, no update check
BASE_OVERRIDES: Final = (
    "project_doc_max_bytes=0",
    "check_for_update_on_startup=false",
    'sandbox_mode="read-only"',
    'approval_policy="never"',
)
#: ``-c`` overrides that take the CLI's own tools and their developer messages away
#: (each one checked against codex 0.169.0 at the model stub)
NO_CLI_TOOLS_OVERRIDES: Final = (
    "features.shell_tool=false",
    "features.unified_exec=false",
    "features.shell_snapshot=false",
    "features.view_image=false",
    "features.multi_agent=false",
    "features.goals=false",
    "features.apps=false",
    "features.plugins=false",
    "features.hooks=false",
    "features.image_generation=false",
    "features.skill_search=false",
    "features.tool_suggest=false",
    "features.memories=false",
    'web_search="disabled"',
    "tools.experimental_request_user_input={enabled=false}",
    "skills.bundled.enabled=false",
    "include_permissions_instructions=false",
    "include_environment_context=false",
    "include_apps_instructions=false",
    "include_collaboration_mode_instructions=false",
)


def build_argv(
    command: Sequence[str],
    *,
    enable_cli_tools: bool = False,
    overrides: Sequence[str] = (),
) -> tuple[str, ...]:
    """``codex app-server -c ...``; the operator's ``overrides`` come last and win."""
    argv = [*command, "app-server"]
    chosen = [*BASE_OVERRIDES, *(() if enable_cli_tools else NO_CLI_TOOLS_OVERRIDES), *overrides]
    for item in chosen:
        argv += ["-c", item]
    return tuple(argv)
