"""The environment of a CLI child: an allow-list shared by every backend.

Theory of operation
-------------------
The child environment is built from an allow-list (:data:`ALLOWED_ENV` and the configured
``pass_env``), never from the inbound environment wholesale: clibridge's own
``CLIBRIDGE_*`` settings (which hold its API keys) never reach a CLI, and neither does
anything a backend's spawn home lists as denied (API keys that would switch the billing,
base URLs that would switch the upstream) unless the operator names it in ``pass_env`` on
purpose. ``CLAUDE_CODE_OAUTH_TOKEN`` is on the list for claude's spawn home (see
:mod:`clibridge._backends.claude.home`); codex's leaves it out.

Locale: only ``LANG``, ``LANGUAGE``, ``LC_ALL`` and ``LC_CTYPE`` pass. ``LC_*`` is an open
namespace -- Debian's and Ubuntu's ssh pass ``LC_*`` from client to server by default
(``SendEnv`` / ``AcceptEnv``), so people tunnel arbitrary values through it, and terminals
set ``LC_TERMINAL`` -- and of it the CLIs read (claude 2.1.197, codex
0.169.0, checked in their binaries) ``LC_ALL`` and ``LC_CTYPE`` (text encoding, also of
the commands a tool-enabled claude runs), ``LC_TIME`` (how the claude UI formats dates)
and ``LC_TERMINAL`` (iTerm2 key hints in the claude UI); codex reads only ``LANG`` and
``LANGUAGE``. Encoding matters to a headless worker; date formats and terminal hints are
for a screen it does not have, and a worker should behave the same on every machine.
Name others in ``pass_env`` to pass them.

Each backend's spawn home (``<backend>/home.py``) builds its child environment from
:func:`allow_listed_env` and adds its own variables (HOME, CODEX_HOME, switches).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

__all__ = ["ALLOWED_ENV", "allow_listed_env", "with_fake_knobs"]

#: variables copied from the server's environment when set
ALLOWED_ENV: Final = (
    "PATH",
    # locale: what the CLIs use (see the module doc); not LC_* wholesale
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "TERM",
    "TZ",
    "TMPDIR",
    "USER",
    "LOGNAME",
    "SHELL",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "NODE_EXTRA_CA_CERTS",
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "NO_PROXY",
    "https_proxy",
    "http_proxy",
    "no_proxy",
    # the subscription login for spawn homes (``claude setup-token``)
    "CLAUDE_CODE_OAUTH_TOKEN",
)


def allow_listed_env(
    source: Mapping[str, str], allowed: Iterable[str], pass_env: Iterable[str]
) -> dict[str, str]:
    """The variables of ``source`` a CLI child may see: ``allowed`` and the operator's
    ``pass_env``; never ``CLIBRIDGE_*``. Anything else -- the ``DENIED_ENV`` API keys and
    base URLs, other ``LC_*`` variables -- reaches a child only when named in ``pass_env``."""
    allowed = frozenset(allowed)
    passed = frozenset(pass_env)
    return {
        name: value
        for name, value in source.items()
        if not name.startswith("CLIBRIDGE_") and (name in allowed or name in passed)
    }


def with_fake_knobs(env: Mapping[str, str], source: Mapping[str, str]) -> dict[str, str]:
    """``env`` plus the ``CLIBRIDGE_FAKE_*`` variables of ``source``: the fake CLIs' own
    knobs are the one CLIBRIDGE_* exception (users script the fakes with them)."""
    return {**env, **{k: v for k, v in source.items() if k.startswith("CLIBRIDGE_FAKE_")}}
