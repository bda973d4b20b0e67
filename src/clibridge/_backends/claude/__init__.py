"""The claude backend: ``claude -p`` in stream-json mode, one conversation per process.

Theory of operation
-------------------
A claude worker runs ``claude -p --input-format stream-json --output-format stream-json
--verbose --include-partial-messages --no-session-persistence ...`` (:func:`build_argv`).
We write one JSON object per line to its stdin (the ``*_line`` encoders) and it writes one
JSON object per line to stdout. The package's modules; the names the worker, tests and
bench use are re-exported here (``__all__``):

* :mod:`.argv` -- the command line (:func:`build_argv`);
* :mod:`.protocol` -- the stdin lines (control requests, user messages);
* :mod:`.parser` -- stdout bytes in, typed records out (h11 shape:
  :meth:`ClaudeParser.receive_data` / :meth:`ClaudeParser.next_event` until
  :data:`NEED_DATA`);
* :mod:`.translator` -- one turn's records in, neutral events out
  (:class:`TurnTranslator`), failing fast on upstream trouble per :class:`RetryPolicy`;
* :mod:`.tools` -- client tools: :func:`check_tools`, :func:`tools_key`, and the
  replies of the SDK MCP server that hosts them (:func:`mcp_reply`);
* :mod:`.render` -- a conversation as the content of ONE ``user`` line
  (:func:`render_user_content`);
* :mod:`.home` -- the spawn home (HOME, work dir, child environment);
* :mod:`.worker` -- :class:`~.worker.ClaudeWorker`, the IO around all this (spawn,
  handshake, pumping, teardown), the pool's worker.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Final

from .. import Backend, StatusCommand
from .argv import build_argv
from .parser import (
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
from .protocol import (
    clear_line,
    control_error_line,
    control_request_line,
    initialize_line,
    interrupt_line,
    mcp_response_line,
    mcp_set_servers_line,
    mcp_status_line,
    set_model_line,
    user_line,
)
from .render import CONTINUE_REQUEST, HISTORY_PREAMBLE, Block, render_user_content
from .tools import (
    CLIENT_MCP_SERVER,
    CLIENT_TOOL_PREFIX,
    check_tools,
    mcp_reply,
    mcp_tool_result,
    tool_use_id,
    tools_from_key,
    tools_key,
)
from .translator import RetryPolicy, TurnTranslator

if TYPE_CHECKING:
    from ..._config import AccountConfig, ClaudeConfig, Config
    from ..._janitor import Janitor
    from ..._pool import WorkerFactory

__all__ = [
    "ALIASES",
    "BACKEND",
    "CLIENT_MCP_SERVER",
    "CLIENT_TOOL_PREFIX",
    "CONTINUE_REQUEST",
    "HISTORY_PREAMBLE",
    "MODEL_PATTERN",
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

#: built-in client model names -> the CLI's model id
ALIASES: Final[Mapping[str, str]] = {
    "claude-opus-4-5": "claude-opus-4-5",
    "claude-sonnet-4-5": "claude-sonnet-4-5",
    "claude-haiku-4-5": "claude-haiku-4-5",
    "claude-opus-4-1": "claude-opus-4-1",
    "claude-sonnet-4-0": "claude-sonnet-4-0",
    "opus": "claude-opus-4-5",
    "sonnet": "claude-sonnet-4-5",
    "haiku": "claude-haiku-4-5",
}
#: other claude model ids pass through unchanged
MODEL_PATTERN: Final = re.compile(r"claude-[a-z0-9][a-z0-9.\-]*")


def _settings(config: Config) -> ClaudeConfig:
    return config.claude


def _pool_factory(
    config: Config,
    command: tuple[str, ...],
    state_dir: Path,
    janitor: Janitor | None,
    environ: Mapping[str, str],
    *,
    fake: bool,
) -> WorkerFactory:
    if config.claude.tui:  # serve --tui: interactive claude panes (the tui package)
        from ..tui import BACKEND as TUI

        return TUI.pool_factory(config, command, state_dir, janitor, environ, fake=fake)
    from .worker import make_claude_factory

    return make_claude_factory(config, command, state_dir, janitor, environ, fake=fake)


def _logged_in(config: Config, environ: Mapping[str, str], state_dir: Path) -> str | None:
    from .home import logged_in

    return logged_in(config, environ, state_dir)


def _login_status(
    config: Config, command: tuple[str, ...], state_dir: Path, environ: Mapping[str, str]
) -> StatusCommand:
    from .home import login_status

    return login_status(config, command, state_dir, environ)


def _accounts(config: Config) -> tuple[AccountConfig, ...]:
    return config.claude.accounts


def _account_environ(account: AccountConfig, environ: Mapping[str, str]) -> Mapping[str, str]:
    from .home import account_environ

    return account_environ(account, environ)


#: the registry entry (:data:`clibridge._backends.BACKENDS`)
BACKEND: Final[Backend] = Backend(
    name="claude",
    settings=_settings,
    aliases=ALIASES,
    model_pattern=MODEL_PATTERN,
    check_tools=check_tools,
    pool_factory=_pool_factory,
    logged_in=_logged_in,
    login_fix="claude setup-token, then set CLAUDE_CODE_OAUTH_TOKEN",
    fake_command=(sys.executable, "-m", "clibridge.testing.fake_claude"),
    continuation=True,
    tested_version="2.1.197",
    login_status=_login_status,
    accounts=_accounts,
    account_environ=_account_environ,
)
