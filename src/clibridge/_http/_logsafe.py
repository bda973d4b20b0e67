"""Log lines a request cannot forge.

A request path is percent-decoded before anyone logs it: ``/v1/x%0AINFO%20...`` would
write a second, forged log line, ``%00`` a NUL byte, a lone surrogate a logging error.
:class:`EscapeControls` rewrites every record of the loggers that log request data
(``clibridge.http``, the request lines of ``clibridge.requests``, and Hypercorn's access
and error logs) into one line with C0 / C1 control characters, DEL and lone surrogates
escaped as ``\\xNN`` / ``\\uNNNN``.
Tracebacks (``exc_info``) are left alone: they are many lines by nature and the logging
formatter writes them after the message.
"""

from __future__ import annotations

import logging
import re

#: the loggers whose records may carry request data
REQUEST_LOGGERS = ("clibridge.http", "clibridge.requests", "hypercorn.access", "hypercorn.error")

_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _escape_one(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """``text`` with control characters and lone surrogates escaped (one safe line)."""
    return _UNSAFE.sub(_escape_one, text)


class EscapeControls(logging.Filter):
    """A logging filter that makes each record's message one line of safe text."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: the handler reports it as usual
            return True
        escaped = escape_controls(message)
        if escaped != message:
            record.msg, record.args = escaped, None
        return True


def install(names: tuple[str, ...] = REQUEST_LOGGERS) -> None:
    """Put :class:`EscapeControls` on the request loggers (idempotent)."""
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, EscapeControls) for f in logger.filters):
            logger.addFilter(EscapeControls())
