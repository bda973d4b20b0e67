"""Logging: the request id on every line of a request, one line per request, text or JSON.

Theory of operation
-------------------
:data:`REQUEST_ID` is a context variable the HTTP app sets as soon as it knows a request's
id. Trio hands a task's context to the tasks it starts, so every line logged while
serving that request -- by the handler, the turn's producer task, the supervisor and
worker code it calls -- can name it. :func:`install_request_id` puts it on every
:class:`logging.LogRecord` (as ``record.request_id``, None outside a request) through the
record factory, so each handler and formatter sees it, pytest's ``caplog`` included.

:func:`log_request` is a request observer (:mod:`clibridge._http._record`): at the end of
each request it logs one INFO line on ``clibridge.requests`` -- status, model, tokens,
milliseconds, request id -- and hands the whole record to the JSON formatter as
``record.request``.

:func:`setup_logging` configures the root logger for ``clibridge serve``: ``text``
(``12:00:01 INFO    clibridge.http: ... [req_...]``) or ``json`` (one object a line:
``time``, ``level``, ``logger``, ``message``, ``request_id``, and for request lines the
record's fields under ``request``).
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import attrs

if TYPE_CHECKING:
    from ._http._record import RequestRecord

#: the id of the request the current task serves
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "clibridge_request_id", default=None
)

request_log = logging.getLogger("clibridge.requests")

LogFormat = Literal["text", "json"]

_installed = False


def install_request_id() -> None:
    """Put :data:`REQUEST_ID` on every log record as ``request_id`` (idempotent)."""
    global _installed
    if _installed:
        return
    _installed = True
    make_record = logging.getLogRecordFactory()

    def with_request_id(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        record.request_id = REQUEST_ID.get()
        return record

    logging.setLogRecordFactory(with_request_id)


def log_request(record: RequestRecord) -> None:
    """A request observer: one INFO line for the request that just ended."""
    if not request_log.isEnabledFor(logging.INFO):
        return
    model = record.cli_model or record.model_asked or "-"
    tokens = (
        f"{record.input_tokens}/{record.output_tokens}" if record.input_tokens is not None else "-"
    )
    error = f" {record.error_type}" if record.error_type else ""
    # the observer may run after the request's own context is gone
    token = REQUEST_ID.set(record.request_id)
    try:
        request_log.info(
            "%s %d%s model=%s tokens=%s %dms",
            record.endpoint,
            record.status,
            error,
            model,
            tokens,
            round(record.duration_s * 1000),
            extra={"request": record},
        )
    finally:
        REQUEST_ID.reset(token)


class TextFormatter(logging.Formatter):
    """``time level logger: message [request id]``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        rid = getattr(record, "request_id", None)
        if rid is None:
            return line
        head, sep, tail = line.partition("\n")  # a traceback follows the first line
        return f"{head} [{rid}]{sep}{tail}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line (module doc)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None)
        if rid is not None:
            out["request_id"] = rid
        request = getattr(record, "request", None)
        if request is not None and attrs.has(type(request)):
            out["request"] = attrs.asdict(request)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        line = json.dumps(out, ensure_ascii=False, separators=(",", ":"))
        try:
            line.encode()
        except UnicodeEncodeError:  # lone surrogates a client sent (a model name)
            line = json.dumps(out, separators=(",", ":"))
        return line


def setup_logging(level: str, fmt: LogFormat = "text") -> None:
    """Configure the root logger for ``clibridge serve`` (stderr, ``fmt``)."""
    install_request_id()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
