"""The Quart-Trio app: routes, auth, limits, error envelopes, streaming.

Every response, error or not, carries ``X-Request-Id``; every 429 / 503 / 529 carries
``Retry-After``. Every error is a :class:`~clibridge._errors.BridgeError` answered in the
envelope of the API family the path belongs to (:func:`dialect_of`); an exception nobody
expected is logged with the request id and answered as a 500-class error in the same
envelope, never as Quart's HTML page.

Routes::

    POST /v1/chat/completions        OpenAI Chat Completions (stream or not)
    POST /v1/responses               OpenAI Responses
    POST /v1/messages                Anthropic Messages
    POST /v1/messages/count_tokens   Anthropic token count (an estimate: ~4 chars a token)
    GET  /v1/models, /v1/models/<id> one shape both the OpenAI and Anthropic SDKs read
    GET  /v1/stats                   the service's statistics (an admin key when auth is on)
    GET  /v1/usage                   token usage from the request ledger (a key sees its own)
    GET  /dashboard[/state|/requests/<id>]  the operator's live page (:mod:`.dashboard`)
    GET  /metrics                    Prometheus metrics (an admin key when auth is on)
    GET  /healthz                    liveness (never needs auth)
    GET  /readyz                     readiness: 200, or 503 with the reason (no auth either,
                                     so load balancers can probe it)

Sampling knobs the CLIs cannot take (temperature, top_p, ...) are accepted and ignored by
the wire layer; features that cannot be honoured get a 400 there.

Every admitted request ends as one :class:`~._record.RequestRecord` handed to
``app.request_observers`` (the request log line; the ledger once attached).
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import math
import re
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

import attrs
import cattrs
import trio
from quart import Response, g, request
from quart.json.provider import DefaultJSONProvider
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.exceptions import MethodNotAllowed as WerkzeugMethodNotAllowed

from .. import _ledger
from .._config import ServerConfig
from .._errors import (
    AuthError,
    BridgeError,
    ErrorKind,
    Forbidden,
    InternalError,
    MethodNotAllowed,
    ModelNotFound,
    NotFound,
    ProtocolError,
    RequestError,
    RequestTooLarge,
    UnavailableError,
)
from .._events import (
    ImagePart,
    Request,
    TextPart,
    ThinkingPart,
    ToolCallPart,
    ToolResultPart,
    TurnStarted,
)
from .._events import collect as collect_events
from .._keys import DEFAULT_KEY_NAME, KeyRecord
from .._logging import REQUEST_ID, install_request_id, log_request
from .._service import ModelInfo, Readiness, TurnService
from .._wire.errors import Dialect, error_body, error_status
from .._wire.sse import KEEPALIVE
from . import _logsafe, dashboard
from ._codecs import codec_for
from ._exchange import EXCHANGE_KEY, Exchange, ExchangeMiddleware
from ._guard import (
    OPEN_PATHS,
    Guard,
    check_framing,
    check_json_content_type,
    dialect_of,
    is_preflight,
)
from ._keyring import KeyRing
from ._metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from ._metrics import TURN_PATHS, Metrics
from ._record import RequestDraft, RequestObserver, notify, recorded
from ._turns import (
    DrainState,
    TurnRun,
    as_bridge_error,
    retry_after_header,
    sse_body,
)

if TYPE_CHECKING:
    from .._ledger import Ledger

log = logging.getLogger("clibridge.http")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
#: count_tokens: characters per token, and what one image is counted as
CHARS_PER_TOKEN = 4
IMAGE_TOKENS = 1600

#: how long a request that is refused with ``Connection: close`` may take to arrive whole
_SETTLE_TIMEOUT = 1.0

#: the longest model name a request record keeps
_MODEL_CHARS = 200

_json_converter = cattrs.Converter()
_NOTHING = object()


def dumps(data: object) -> str:
    """Compact JSON that keeps key order and non-ASCII text (attrs records allowed)."""
    return json.dumps(
        data, ensure_ascii=False, separators=(",", ":"), default=_json_converter.unstructure
    )


class BridgeJSONProvider(DefaultJSONProvider):
    """Quart's JSON, but in key order, UTF-8 and able to write attrs records."""

    sort_keys = False
    ensure_ascii = False
    compact = True

    @staticmethod
    def default(o: Any) -> Any:
        if attrs.has(type(o)):
            return _json_converter.unstructure(o)
        return DefaultJSONProvider.default(o)


class BridgeApp(QuartTrio):
    """The clibridge app: a QuartTrio app that knows its service and its drain state."""

    json_provider_class = BridgeJSONProvider

    service: TurnService
    server_config: ServerConfig
    #: the Host / Origin policy (:mod:`._guard`)
    guard: Guard
    drain: DrainState
    #: set by the supervisor when the server shuts down: open streams finish with a final
    #: error event within ``drain_timeout`` instead of being cut
    draining: trio.Event
    #: unix time the app was made (the ``created`` of every model)
    created: int
    #: the named keys and their quotas
    keys: KeyRing
    #: called once per admitted request when it is over, synchronously (:mod:`._record`)
    request_observers: list[RequestObserver]
    #: GET /metrics (None: ``server.metrics`` is off)
    metrics: Metrics | None
    #: the request ledger (:func:`attach_ledger`), None when there is none
    ledger: Ledger | None


# --------------------------------------------------------------------------- helpers


def request_id() -> str:
    """This request's id: the client's ``X-Request-Id`` when sane, else a new one."""
    rid: str | None = g.get("request_id")
    if rid is None:
        given = request.headers.get("X-Request-Id", "")
        rid = given if _REQUEST_ID.fullmatch(given) else f"req_{uuid.uuid4().hex}"
        g.request_id = rid
        # every log line of this request names it (the tasks it starts inherit this)
        REQUEST_ID.set(rid)
    return rid


def _draft() -> RequestDraft | None:
    """This request's record, when it is recorded (see :mod:`._record`)."""
    exchange = request.scope.get(EXCHANGE_KEY)
    return exchange.draft if isinstance(exchange, Exchange) else None


def _end_request(app: BridgeApp, exchange: Exchange) -> None:
    """The exchange middleware's end of a request: hand its record to the observers (and
    its exchange to the ledger when it captures)."""
    draft = exchange.draft
    if draft is None:
        return
    notify(app.request_observers, draft.finish())
    ledger = app.ledger
    if ledger is not None and ledger.capture_mode != "off":
        pending = draft.pending_capture()
        if pending is not None:
            ledger.capture(pending)


def attach_ledger(app: BridgeApp, ledger: Ledger) -> None:
    """Record every request of ``app`` in ``ledger`` (and serve it as ``app.ledger``)."""
    app.ledger = ledger
    app.request_observers.append(ledger.record)


def json_response(
    data: object, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        dumps(data), status=status, headers=dict(headers or {}), content_type="application/json"
    )


def error_response(error: BridgeError, dialect: Dialect | None = None) -> Response:
    """``error`` in the envelope of ``dialect`` (the request path's by default)."""
    if dialect is None:
        dialect = dialect_of(request.path, request.headers)
    status = error_status(dialect, error)
    headers: dict[str, str] = {}
    if status in (429, 503, 529):
        headers["Retry-After"] = retry_after_header(error)
    if isinstance(error, RequestTooLarge) and status == 413:
        # the unread rest of the body would be parsed as the next request: a hang
        headers["Connection"] = "close"
    if isinstance(error, MethodNotAllowed) and g.get("allowed_methods"):
        headers["Allow"] = ", ".join(sorted(g.allowed_methods))
    draft = _draft()
    if draft is not None:
        draft.error = error
    if status >= 500:
        log.warning(
            "request %s %s %s -> %d %s%s",
            request_id(),
            request.method,
            request.path,
            status,
            error.message,
            f" ({error.detail})" if error.detail else "",
        )
    return json_response(error_body(dialect, error), status, headers)


class _HttpError(BridgeError):
    """A protocol-level error werkzeug raised (408, 411, 415, ...), with its own status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status
        self.kind = ErrorKind.INVALID_REQUEST if status < 500 else ErrorKind.API_ERROR


def _from_http_exception(exc: HTTPException) -> BridgeError:
    code = exc.code or 500
    if isinstance(exc, RequestEntityTooLarge):
        limit = request.max_content_length
        return RequestTooLarge(
            f"the request body is larger than the {limit} bytes this server accepts "
            "(server.max_body_bytes)",
            param="$",
        )
    if code == 404:
        return NotFound(
            f"no such endpoint: {request.method} {request.path} (see GET /v1/models, "
            "POST /v1/chat/completions, /v1/responses, /v1/messages)"
        )
    if code == 405:
        if isinstance(exc, WerkzeugMethodNotAllowed) and exc.valid_methods:
            g.allowed_methods = list(exc.valid_methods)
        return MethodNotAllowed(f"{request.method} is not allowed on {request.path}")
    return _HttpError(exc.description or exc.name, code)


def _body_unread() -> bool:
    """Whether the request declared a body the app has not read (it must not be parsed
    as the next request on the connection)."""
    if g.get("body_read"):
        return False
    return bool(request.content_length) or "Transfer-Encoding" in request.headers


async def _settle_before_close() -> None:
    """Let Hypercorn finish reading this request before a ``Connection: close`` answer.

    With a request pipelined behind this one, h11 raises as soon as the answer says
    ``close`` while Hypercorn's reader is still between this request's last event and
    its pause, and Hypercorn then drops the connection before the answer's body is
    written. Reading the body and yielding once lets the reader reach its pause first.
    """
    # only a body already on its way matters; a client that sends none is answered soon
    with trio.move_on_after(_SETTLE_TIMEOUT), contextlib.suppress(HTTPException):
        await request.get_data(cache=False)
    g.body_read = True
    await trio.lowlevel.checkpoint()


async def _read_json() -> dict[str, Any]:
    """The request body as a JSON object; 400 / 413 / 415 in the dialect's shape otherwise."""
    check_json_content_type(request.headers.get("Content-Type"))
    raw = await request.get_data(cache=False)
    g.body_read = True
    if not raw.strip():
        raise RequestError("the request body is empty; send a JSON object", param="$")
    try:
        body = json.loads(raw)
    except UnicodeDecodeError:
        raise RequestError("the request body is not UTF-8 text", param="$") from None
    except json.JSONDecodeError as exc:
        raise RequestError(
            f"the request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            param="$",
        ) from None
    except RecursionError:
        raise RequestError("the request body is nested too deeply", param="$") from None
    except ValueError as exc:
        # e.g. an integer literal longer than Python's int_max_str_digits (4,300 digits)
        raise RequestError(f"the request body is not acceptable JSON: {exc}", param="$") from None
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object", param="$")
    return body


#: the paths whose requests count against a named key's quotas (they run turns)
QUOTA_PATHS = TURN_PATHS


def _presented_key() -> str | None:
    given = request.headers.get("x-api-key")
    if given is None:
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            given = credentials.strip()
    return given


def _refuse(reason: str, message: str) -> AuthError:
    # the presented key is never logged, not even a part of it
    log.warning(
        "auth failed (request %s %s %s from %s): %s",
        request_id(),
        request.method,
        request.path,
        request.remote_addr,
        reason,
    )
    return AuthError(message)


def _authenticate(token: str | None, keys: KeyRing) -> KeyRecord | None:
    """Who the request is: sets ``g.clibridge_key`` (the key's name, ``default`` for the
    auth token, None without auth) and ``g.clibridge_admin``; raises :class:`AuthError`
    when auth is on (a token or any named key) and the request has no valid key.
    Returns the named key's record (its quotas apply), else None."""
    g.clibridge_key = None
    g.clibridge_admin = True
    if (token is None and not keys.active) or request.path in OPEN_PATHS:
        return None
    given = _presented_key()
    if given is None:
        raise _refuse(
            "no key",
            "missing API key: send a clibridge key as 'Authorization: Bearer <key>' or "
            "'x-api-key: <key>'",
        )
    if token is not None and hmac.compare_digest(given.encode(), token.encode()):
        g.clibridge_key = DEFAULT_KEY_NAME
        return None
    record = keys.authenticate(given)
    if record is None:
        raise _refuse(
            "unknown or revoked key",
            "wrong API key: it is not the clibridge auth token nor a named key "
            "(see clibridge keys list)",
        )
    g.clibridge_key = record.name
    g.clibridge_admin = record.admin
    return record


def prompt_chars(req: Request) -> int:
    """Characters of the prompt as a CLI sees it: system, messages and tool definitions."""
    total = len(req.system)
    for message in req.messages:
        for part in message.parts:
            if isinstance(part, TextPart | ThinkingPart):
                total += len(part.text)
            elif isinstance(part, ToolCallPart):
                total += len(part.name) + len(part.arguments)
            elif isinstance(part, ToolResultPart):
                total += len(part.content)
    for tool in req.tools:
        total += len(tool.name) + len(tool.description) + len(dumps(tool.input_schema))
    return total


def estimate_tokens(req: Request) -> int:
    """An honest estimate of the input tokens: ~4 characters a token, images at 1600.

    Not the model's tokenizer (the CLIs do not expose one): good for budgeting, off by
    ±20 % on ordinary English, more on code and other languages.
    """
    images = sum(isinstance(p, ImagePart) for m in req.messages for p in m.parts)
    return max(1, math.ceil(prompt_chars(req) / CHARS_PER_TOKEN)) + images * IMAGE_TOKENS


def _check_limits(req: Request, config: ServerConfig) -> None:
    if len(req.messages) > config.max_messages:
        raise RequestTooLarge(
            f"the request has {len(req.messages)} messages; this server accepts at most "
            f"{config.max_messages} (server.max_messages)",
            param="$.messages",
        )
    chars = prompt_chars(req)
    if chars > config.max_prompt_chars:
        raise RequestTooLarge(
            f"the prompt is {chars} characters; this server accepts at most "
            f"{config.max_prompt_chars} (server.max_prompt_chars)",
            param="$.messages",
        )


def _readiness_body(readiness: Readiness, backend: str | None, *, draining: bool) -> dict[str, Any]:
    """``/readyz``: ready when every served backend is (``?backend=NAME``: that one)."""
    states = {
        name: {"ready": state.ready, "reason": state.reason}
        for name, state in readiness.backends.items()
    }
    ready, reason = readiness.ready, readiness.reason
    if backend is not None:
        state = readiness.backends.get(backend)
        if state is None:
            raise RequestError(
                f"backend: {backend!r} is not served here (served: {', '.join(states) or 'none'})",
                param="backend",
            )
        ready, reason = state.ready, state.reason
        states = {backend: states[backend]}
    if draining:
        ready, reason = False, "draining: the server is shutting down"
    body = {"ready": ready, "reason": reason, "fake": readiness.fake, "backends": states}
    accounts = {name: a for name, a in readiness.accounts.items() if name in states}
    if accounts:  # per backend with configured accounts: each account's state
        body["accounts"] = accounts
    return body


def _model_json(info: ModelInfo, created: int) -> dict[str, Any]:
    """One model in a shape both SDKs read: OpenAI's Model and Anthropic's ModelInfo."""
    via = f"{info.backend} CLI" + (", FAKE" if info.fake else "")
    return {
        "id": info.id,
        "object": "model",
        "type": "model",
        "created": created,
        "created_at": datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "owned_by": f"clibridge-{info.backend}",
        "display_name": f"{info.id} (via {via})",
        "backend": info.backend,
        "cli_model": info.cli_model,
        "fake": info.fake,
        # OpenAI-compatible servers' names, and the Anthropic Models API's
        "context_window": info.context_window,
        "max_output_tokens": info.max_output_tokens,
        "max_input_tokens": info.context_window,
        "max_tokens": info.max_output_tokens,
    }


# --------------------------------------------------------------------------- the app


def create_app(
    service: TurnService, config: ServerConfig, *, keys: KeyRing | None = None
) -> BridgeApp:
    """The HTTP front end for ``service``; serve it with :func:`~._http.server.serve_http`.

    ``keys`` are the named keys (none without it: only ``config.auth_token``, if set)."""
    app = BridgeApp("clibridge")
    app.service = service
    app.keys = keys = keys or KeyRing(None)
    app.server_config = config
    app.guard = guard = Guard.from_config(config)
    _logsafe.install()
    grace = max(config.drain_timeout - 1.0, config.drain_timeout * 0.8)
    app.drain = DrainState(grace=grace)
    app.draining = app.drain.draining
    app.created = int(time.time())
    app.config.update(
        MAX_CONTENT_LENGTH=config.max_body_bytes,
        # streams set their own (None); this bounds sending a plain JSON answer
        RESPONSE_TIMEOUT=max(60.0, config.send_timeout),
        # a client has this long to upload its body
        BODY_TIMEOUT=max(60.0, config.send_timeout),
        # OPTIONS is a CORS preflight (answered in _admit) or a 405 in the API's shape
        PROVIDE_AUTOMATIC_OPTIONS=False,
    )
    dashboard.install(app)
    install_request_id()
    app.request_observers = [log_request, keys.observe]
    app.ledger = None
    app.metrics = Metrics(service) if config.metrics else None
    if app.metrics is not None:
        app.request_observers.append(app.metrics.observe)
    app.asgi_app = ExchangeMiddleware(app.asgi_app, partial(_end_request, app))  # type: ignore[method-assign,arg-type,assignment]

    @app.before_serving
    async def _start_drain_watch() -> None:
        app.nursery.start_soon(app.drain.watch)
        # the keys are loaded before the first request is admitted
        await app.nursery.start(keys.run)

    @app.before_request
    async def _admit() -> Response | None:
        """Framing, Host, Origin (see :mod:`._guard`), CORS preflights, then the token."""
        request_id()
        headers = request.headers
        try:
            check_framing(headers)
        except BridgeError:
            g.close_connection = True
            await _settle_before_close()
            raise
        if request.path not in OPEN_PATHS:
            guard.check_host(headers.get("Host"))
            guard.check_origin(headers.get("Origin"))
        if is_preflight(request.method, headers):
            origin = headers["Origin"]
            guard.check_origin(origin)
            return Response(b"", status=204, headers=guard.preflight_headers(origin, headers))
        key = _authenticate(config.auth_token, keys)
        exchange: Exchange = request.scope[EXCHANGE_KEY]  # type: ignore[literal-required]
        if recorded(request.path):
            exchange.draft = RequestDraft(
                request_id(),
                request.path,
                g.clibridge_key,
                dialect=dialect_of(request.path, headers),
            )
        if key is not None and request.path in QUOTA_PATHS and request.method == "POST":
            # after the draft: a request refused by a quota is recorded (and counted)
            admission = keys.admit(key)
            # released as the last body chunk goes out, not by a request observer: those
            # run after the response, and a client that sends its next request at once
            # (concurrency 1) must not find this one still counted
            exchange.on_end.append(admission.release)
        return None

    @app.after_request
    async def _stamp(response: Response) -> Response:
        response.headers["X-Request-Id"] = request_id()
        draft = _draft()
        if draft is not None:
            # the key as admission finally settled it
            draft.key = g.get("clibridge_key")
        if response.status_code in (429, 503, 529) and "Retry-After" not in response.headers:
            response.headers["Retry-After"] = "1"
        if guard.origins:
            response.headers.update(guard.cors_headers(request.headers.get("Origin")))
            if "Vary" not in response.headers:
                response.headers["Vary"] = "Origin"
        if g.get("close_connection") or (response.status_code >= 400 and _body_unread()):
            response.headers["Connection"] = "close"
        return response

    @app.errorhandler(BridgeError)
    async def _bridge_error(error: BridgeError) -> Response:
        return error_response(error)

    @app.errorhandler(HTTPException)
    async def _http_error(error: HTTPException) -> Response:
        return error_response(_from_http_exception(error))

    @app.errorhandler(Exception)
    async def _unexpected(error: Exception) -> Response:
        bridge = as_bridge_error(error, request_id())
        if bridge is None or isinstance(bridge, InternalError):
            log.error(
                "unexpected error (request %s %s %s)",
                request_id(),
                request.method,
                request.path,
                exc_info=error,
            )
            bridge = bridge or InternalError(
                f"internal error in clibridge (request {request_id()}); the server log has the details"
            )
        return error_response(bridge)

    # ----------------------------------------------------------------- probes

    @app.get("/healthz")
    async def healthz() -> Response:
        return json_response({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> Response:
        body = _readiness_body(
            service.readiness(), request.args.get("backend"), draining=app.draining.is_set()
        )
        ready = body["ready"]
        return json_response(body, 200 if ready else 503, {} if ready else {"Retry-After": "1"})

    @app.get("/v1/stats")
    async def stats() -> Response:
        # worker pids, accounts and subscription windows: the operator's, not every key's
        if not g.clibridge_admin:
            raise Forbidden(
                "GET /v1/stats needs an admin key (clibridge keys add NAME --admin) or the "
                "auth token"
            )
        return json_response(
            {
                "service": dict(service.statistics()),
                "http": {"open_turns": len(app.drain.live), "draining": app.draining.is_set()},
            }
        )

    @app.get("/metrics")
    async def metrics() -> Response:
        if app.metrics is None:
            raise NotFound("metrics are off on this server (server.metrics = false)")
        if not g.clibridge_admin:
            raise Forbidden(
                "GET /metrics needs an admin key (clibridge keys add NAME --admin) or the "
                "auth token"
            )
        app.metrics.refresh_models()
        # rendering reads counters and the pools' statistics: no IO, a few ms at most
        return Response(app.metrics.render(), status=200, content_type=METRICS_CONTENT_TYPE)

    # ----------------------------------------------------------------- models

    @app.get("/v1/usage")
    async def usage() -> Response:
        """Token usage from the ledger; a key sees its own, the admin all (or ``?key=``)."""
        ledger = app.ledger
        if ledger is None:
            raise UnavailableError("this server keeps no request ledger")
        args = request.args
        try:
            since = _ledger.parse_duration(args.get("since", "7d"))
        except ValueError as exc:
            raise RequestError(str(exc), param="since") from None
        by = args.get("by", "model")
        if by not in _ledger.USAGE_BY:
            raise RequestError(
                f"by must be one of {', '.join(_ledger.USAGE_BY)}, not {by!r}", param="by"
            )
        admin = bool(g.get("clibridge_admin"))
        own: str | None = g.get("clibridge_key")
        if admin:
            scope = args.get("key")
        elif own is None:
            raise Forbidden("usage is kept per named key; this request carries none")
        else:
            scope = own
        rows = await trio.to_thread.run_sync(ledger.usage, since, by, scope)
        return json_response(
            {"object": "list", "since_s": since, "by": by, "key": scope, "data": rows}
        )

    @app.get("/v1/models")
    async def list_models() -> Response:
        data = [_model_json(m, app.created) for m in service.models()]
        return json_response(
            {
                "object": "list",
                "data": data,
                "has_more": False,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }
        )

    @app.get("/v1/models/<path:model_id>")
    async def get_model(model_id: str) -> Response:
        for info in service.models():
            if info.id.casefold() == model_id.casefold():
                return json_response(_model_json(info, app.created))
        raise ModelNotFound(
            f"the model {model_id!r} does not exist (see GET /v1/models)", param="model"
        )

    # ----------------------------------------------------------------- turns

    @app.post("/v1/messages/count_tokens")
    async def count_tokens() -> Response:
        body = await _read_json()
        # count_tokens takes a Messages body without max_tokens / stream
        body.setdefault("max_tokens", 1)
        body.pop("stream", None)
        req = codec_for("anthropic_messages").decode_request(body)
        return json_response(
            {"input_tokens": estimate_tokens(req)},
            headers={
                "X-Clibridge-Token-Count": f"estimate: ~{CHARS_PER_TOKEN} characters per token"
            },
        )

    async def run_turn(dialect: Dialect) -> Response:
        body = await _read_json()
        draft = _draft()
        if draft is not None:
            # from the body as given: a request refused as invalid is recorded with them too
            model = body.get("model")
            draft.model_asked = model[:_MODEL_CHARS] if isinstance(model, str) else None
            draft.stream = body.get("stream") is True
        codec = codec_for(dialect)
        req = codec.decode_request(body)
        if draft is not None:
            draft.request = req
        _check_limits(req, config)
        if app.draining.is_set():
            raise UnavailableError(
                "clibridge is shutting down; retry on another instance", retry_after=1
            )
        exchange: Exchange = request.scope[EXCHANGE_KEY]  # type: ignore[literal-required]
        run = TurnRun(
            service,
            req,
            exchange=exchange,
            drain=app.drain,
            send_timeout=config.send_timeout,
            request_id=request_id(),
            keep_events=app.ledger is not None and app.ledger.capture_mode != "off",
        )
        if draft is not None:
            draft.run = run
        response_id = codec.new_response_id()
        created = int(time.time())
        handed_off = False
        try:
            try:
                await exchange.nursery.start(run.run)
            except BaseException as exc:
                bridge = as_bridge_error(exc, request_id())
                if bridge is None or isinstance(bridge, InternalError):
                    raise
                raise bridge from None
            if not req.stream:
                events = await run.collect()
                try:
                    completion = collect_events(req.model, events)
                except ValueError:
                    raise ProtocolError(
                        "the turn ended without finishing; the CLI may have crashed"
                    ) from None
                return json_response(
                    codec.encode_completion(
                        completion, req, response_id=response_id, created=created
                    )
                )
            first = await run.first_items(config.keepalive_interval)
            # nothing written yet: an error that comes before any content gets its status
            lead = next((i for i in first if not isinstance(i, TurnStarted)), _NOTHING)
            if isinstance(lead, BridgeError):
                raise lead
            if lead is None:
                raise ProtocolError("the turn ended without finishing; the CLI may have crashed")
            include_usage = _include_usage(body)
            encoder = codec.StreamEncoder(
                req, response_id=response_id, created=created, include_usage=include_usage
            )
            body_iter = sse_body(
                run,
                encoder,
                first,
                keepalive_interval=config.keepalive_interval,
                keepalive=KEEPALIVE,
            )
            response = Response(
                body_iter,
                status=200,
                content_type="text/event-stream; charset=utf-8",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
            response.timeout = None  # Quart would end the stream after RESPONSE_TIMEOUT
            handed_off = True
            return response
        finally:
            if not handed_off:
                run.abandon()

    @app.post("/v1/chat/completions")
    async def chat_completions() -> Response:
        return await run_turn("openai_chat")

    @app.post("/v1/responses")
    async def responses() -> Response:
        return await run_turn("openai_responses")

    @app.post("/v1/messages")
    async def messages() -> Response:
        return await run_turn("anthropic_messages")

    return app


def _include_usage(body: Mapping[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True
