"""One record per HTTP request, handed to the app's request observers when it is over.

Theory of operation
-------------------
A request that passed admission (framing, Host, Origin, the key) gets a
:class:`RequestDraft` on its :class:`~._exchange.Exchange`. The handler fills it in as it
learns things (dialect, model asked, the :class:`~._turns.TurnRun`, the error it
answered with); the exchange middleware notes the status it sent and whether the last
byte went out. When the ASGI call is over -- the response sent, the stream ended, the
client gone, the send timed out -- and the request's producers have exited, the
middleware calls :meth:`RequestDraft.finish` exactly once and hands the frozen
:class:`RequestRecord` to every observer (:func:`notify`), synchronously: an observer
must not block (the ledger's puts the record on a bounded queue).

Probes (``/healthz``, ``/readyz``), ``/metrics`` scrapes, the dashboard's page and polls
and CORS preflights are not recorded: they would drown the requests an operator asks about.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable

import attrs

from .._capture import PendingCapture
from .._conversations import assistant_message
from .._errors import BridgeError
from .._events import Request, collect
from ._turns import TurnRun, TurnState

log = logging.getLogger("clibridge.http")

#: the status of a request whose client left before any response was sent (nginx's)
CLIENT_CLOSED = 499
#: paths whose requests are not recorded
UNRECORDED_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/dashboard"})
#: nor anything under these: the dashboard's own polls would bury the requests it shows
UNRECORDED_PREFIXES = ("/dashboard/",)


def recorded(path: str) -> bool:
    """Whether a request to ``path`` gets a record (see :data:`UNRECORDED_PATHS`)."""
    return path not in UNRECORDED_PATHS and not path.startswith(UNRECORDED_PREFIXES)


@attrs.frozen
class RequestRecord:
    """What one request was and what it cost (one ledger row)."""

    request_id: str
    #: unix time the request was admitted
    started: float
    #: the name of the key it authenticated with: a named key, "default" for the single
    #: --auth-token, None when the server has no auth
    key: str | None
    #: openai_chat | openai_responses | anthropic_messages | none (not a model call)
    dialect: str
    #: the request path
    endpoint: str
    model_asked: str | None
    backend: str | None
    #: the model id the CLI ran
    cli_model: str | None
    worker_id: str | None
    pid: int | None
    queue_wait_s: float | None
    #: seconds from admission to the first content (text, thinking, tool call)
    ttfc_s: float | None
    duration_s: float
    input_tokens: int | None
    output_tokens: int | None
    cache_read_tokens: int | None
    cache_write_tokens: int | None
    #: the HTTP status sent (499: the client left before any was)
    status: int
    #: None on success; else the error's class (``queue_full``, ``cli_crashed``, ...) or
    #: how the request ended (``client_gone``, ``client_stalled``)
    error_type: str | None
    stream: bool
    tool_calls: int
    #: the turn continued a conversation parked on its worker
    continued: bool


RequestObserver = Callable[[RequestRecord], None]


def error_type_of(error: BridgeError) -> str:
    """``QueueFull`` -> ``queue_full``: a bounded name for the error class."""
    return _CAMEL.sub("_", type(error).__name__.lstrip("_")).lower()


_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


@attrs.define(eq=False)
class RequestDraft:
    """A request's record while it runs (module doc); the handler and middleware fill it."""

    request_id: str
    endpoint: str
    key: str | None
    started: float = attrs.field(factory=time.time)
    clock: float = attrs.field(factory=time.perf_counter)
    dialect: str = "none"
    model_asked: str | None = None
    stream: bool = False
    run: TurnRun | None = None
    #: the decoded request (what exchange capture stores)
    request: Request | None = None
    #: the error the response was made of
    error: BridgeError | None = None
    #: set by the middleware: the status sent, and whether the last byte of the body went
    status: int | None = None
    complete: bool = False

    def finish(self) -> RequestRecord:
        """The record, as of now."""
        duration = time.perf_counter() - self.clock
        run = self.run
        route = run.started.route if run is not None and run.started is not None else None
        usage = run.finished.usage if run is not None and run.finished is not None else None
        first = run.first_content_at if run is not None else None
        return RequestRecord(
            request_id=self.request_id,
            started=self.started,
            key=self.key,
            dialect=self.dialect,
            endpoint=self.endpoint,
            model_asked=self.model_asked,
            backend=route.backend if route is not None else None,
            cli_model=run.started.model if run is not None and run.started is not None else None,
            worker_id=str(route.worker_id) if route is not None else None,
            pid=route.pid if route is not None else None,
            queue_wait_s=route.queue_wait_s if route is not None else None,
            ttfc_s=first - self.clock if first is not None else None,
            duration_s=duration,
            input_tokens=usage.input_tokens if usage is not None else None,
            output_tokens=usage.output_tokens if usage is not None else None,
            cache_read_tokens=usage.cache_read_input_tokens if usage is not None else None,
            cache_write_tokens=usage.cache_creation_input_tokens if usage is not None else None,
            status=self.status if self.status is not None else CLIENT_CLOSED,
            error_type=self._error_type(),
            stream=self.stream,
            tool_calls=run.tool_calls if run is not None else 0,
            continued=route.continued if route is not None else False,
        )

    def _error_type(self) -> str | None:
        if self.error is not None:
            return error_type_of(self.error)
        run = self.run
        if run is not None and run.failure is not None:
            return error_type_of(run.failure)
        if run is not None and run.state is TurnState.CLIENT_STALLED:
            return "client_stalled"
        if not self.complete:
            return "client_gone"
        if run is not None and run.state is TurnState.ENDED:
            return "protocol_error"  # the events ended without a Finished
        return None

    def pending_capture(self) -> PendingCapture | None:
        """The exchange to capture: the request and, when the turn finished, its answer."""
        req = self.request
        if req is None:
            return None
        answer = None
        run = self.run
        if run is not None and run.events is not None and run.finished is not None:
            answer = assistant_message(collect(req.model, run.events))
        return PendingCapture(
            request_id=self.request_id,
            started=self.started,
            key=self.key,
            model=req.model,
            system=req.system,
            messages=req.messages,
            answer=answer,
        )


def notify(observers: Iterable[RequestObserver], record: RequestRecord) -> None:
    """Hand ``record`` to each observer; one that raises is logged, the others still run."""
    for observer in observers:
        try:
            observer(record)
        except Exception:
            log.exception("request observer %r failed (request %s)", observer, record.request_id)
