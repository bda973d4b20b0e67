"""The codex backend: ``codex app-server`` (JSON-RPC on stdio), many threads per process.

Theory of operation
-------------------
``codex app-server`` speaks newline-delimited JSON-RPC 2.0 on stdio (its replies carry no
``"jsonrpc"`` field). One process serves many *threads*; clibridge opens one ephemeral
thread per request (``thread/start``), optionally appends the earlier conversation to it
(``thread/inject_items``, raw Responses items: the model sees real user / assistant
messages, checked at the model stub), and runs one turn (``turn/start``) with the last
user message as input. Notifications then stream, each naming its ``threadId``::

    turn/started  item/started  item/agentMessage/delta*  item/reasoning/*Delta*
    item/completed  thread/tokenUsage/updated  error*  turn/completed

The IO layer (:mod:`.worker`) feeds stdout bytes into an
:class:`AppServerParser` (h11 shape: ``receive_data`` / ``next_event`` until
:class:`NeedData`) and routes each message: responses to their waiter by id, server
requests to a policy (approvals declined, anything else answered with a JSON-RPC error),
notifications to the :class:`TurnTranslator` of their thread, which turns them into
neutral events and raises the mapped :mod:`clibridge._errors` error when the turn fails.

Client tools become ``dynamicTools`` on ``thread/start`` under the client's own names
(:func:`check_tools` refuses what codex cannot honour: a forced ``tool_choice``, names or
schemas the upstream rejects). A model call arrives as the server request
``item/tool/call``; :meth:`TurnTranslator.tool_call` makes it a whole tool call,
:meth:`~TurnTranslator.pause` ends the response there (``Finished(TOOL_USE)``) and
:meth:`~TurnTranslator.resume` starts the continuation's response; the client's result
goes back as a ``DynamicToolCallResponse`` (:func:`tool_call_response`). In a replayed
history the calls and results are ``function_call`` / ``function_call_output`` items; a
conversation that ends with tool results starts its turn with an empty input (observed
with codex 0.169.0 at the stub: the model's input then ends with the outputs).

A model API, not a remote shell: :func:`build_argv` switches the CLI's own tools off
(observed with codex 0.169.0 at the model stub: the upstream request then carries no
``tools`` at all), drops the built-in developer messages (permissions, environment,
skills, apps, collaboration mode) and the project docs. The request's system prompt goes
as ``baseInstructions`` (it replaces codex's own prompt and becomes the one developer
message; an empty system prompt gives none). Reasoning effort goes with ``turn/start``.

Errors: codex retries upstream trouble itself and reports every attempt as an ``error``
notification with ``willRetry: true`` before a failed ``turn/completed``. A 401 / an
``unauthorized`` or ``usageLimitExceeded`` error cannot get better by retrying, so the
translator raises at the first such notification instead of waiting through the retries.

The package's modules (their public names are re-exported here, ``__all__``): :mod:`.argv`
(:func:`build_argv`), :mod:`.protocol` (JSON-RPC lines and request params), :mod:`.tools`
(client tools), :mod:`.render` (a request as history items + turn input), :mod:`.parser`
(stdout -> messages), :mod:`.translator` (notifications -> neutral events, error mapping),
:mod:`.home` (the spawn home: CODEX_HOME, HOME, work dir, environment) and :mod:`.worker`
(:class:`~.worker.CodexWorker`, the pool's worker).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

from .. import Backend, LoginCommand, StatusCommand
from .argv import (
    BASE_OVERRIDES,
    NO_CLI_TOOLS_OVERRIDES,
    build_argv,
)
from .parser import (
    NEED_DATA,
    AppServerParser,
    GarbageLine,
    Message_,
    NeedData,
    Notification,
    Response,
    ServerRequest,
    parse_message,
)
from .protocol import (
    APPROVAL_DECLINES,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    error_line,
    initialize_params,
    interrupt_params,
    notification_line,
    request_line,
    result_line,
    thread_start_params,
    turn_start_params,
)
from .render import (
    RenderedInput,
    render_input,
    render_transcript,
)
from .tools import (
    TOOL_CALL_METHOD,
    check_tools,
    dynamic_tools,
    tool_call_response,
)
from .translator import (
    TurnTranslator,
    is_hopeless,
    map_error,
    retry_delay,
    usage_from,
)

if TYPE_CHECKING:
    from ..._config import AccountConfig, CodexConfig, Config
    from ..._janitor import Janitor
    from ..._pool import WorkerFactory

__all__ = [
    "ALIASES",
    "APPROVAL_DECLINES",
    "BACKEND",
    "BASE_OVERRIDES",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "MODEL_PATTERN",
    "NEED_DATA",
    "NO_CLI_TOOLS_OVERRIDES",
    "TOOL_CALL_METHOD",
    "AppServerParser",
    "GarbageLine",
    "Message_",
    "NeedData",
    "Notification",
    "RenderedInput",
    "Response",
    "ServerRequest",
    "TurnTranslator",
    "build_argv",
    "check_tools",
    "dynamic_tools",
    "error_line",
    "initialize_params",
    "interrupt_params",
    "is_hopeless",
    "map_error",
    "notification_line",
    "parse_message",
    "render_input",
    "render_transcript",
    "request_line",
    "result_line",
    "retry_delay",
    "thread_start_params",
    "tool_call_response",
    "turn_start_params",
    "usage_from",
]

#: built-in client model names -> the CLI's model id
ALIASES: Final[Mapping[str, str]] = {
    "gpt-5.5": "gpt-5.5",
    "gpt-5.3-codex": "gpt-5.3-codex",
    "gpt-5-codex": "gpt-5-codex",
    "gpt-5": "gpt-5",
}
#: other OpenAI model ids pass through unchanged
MODEL_PATTERN: Final = re.compile(r"(gpt-[a-z0-9][a-z0-9.\-]*|o[0-9][a-z0-9.\-]*)")


def _settings(config: Config) -> CodexConfig:
    return config.codex


def _threads_per_worker(config: Config) -> int:
    return config.codex.threads_per_worker


def _pool_factory(
    config: Config,
    command: tuple[str, ...],
    state_dir: Path,
    janitor: Janitor | None,
    environ: Mapping[str, str],
    *,
    fake: bool,
) -> WorkerFactory:
    from .worker import make_codex_factory

    return make_codex_factory(config, command, state_dir, janitor, environ, fake=fake)


def _logged_in(config: Config, environ: Mapping[str, str], state_dir: Path) -> str | None:
    from .home import logged_in

    return logged_in(config, environ, state_dir)


def _login(
    config: Config, state_dir: Path, environ: Mapping[str, str], cli_args: Sequence[str]
) -> LoginCommand:
    from .home import login_command

    return login_command(config, state_dir, environ, cli_args)


def _login_status(
    config: Config, command: tuple[str, ...], state_dir: Path, environ: Mapping[str, str]
) -> StatusCommand:
    from .home import login_status

    return login_status(config, command, state_dir, environ)


def _accounts(config: Config) -> tuple[AccountConfig, ...]:
    return config.codex.accounts


#: the registry entry (:data:`clibridge._backends.BACKENDS`)
BACKEND: Final[Backend] = Backend(
    name="codex",
    settings=_settings,
    aliases=ALIASES,
    model_pattern=MODEL_PATTERN,
    check_tools=check_tools,
    pool_factory=_pool_factory,
    logged_in=_logged_in,
    login_fix="clibridge login codex",
    fake_command=(sys.executable, "-m", "clibridge.testing.fake_codex"),
    effort_suffix=True,
    continuation=True,
    threads_per_worker=_threads_per_worker,
    login=_login,
    tested_version="0.169.0",
    login_status=_login_status,
    # an account's login is the auth.json in its own CODEX_HOME: nothing to add to the env
    accounts=_accounts,
)
