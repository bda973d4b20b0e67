"""The one error tree of clibridge.

Every error a client can see is one of these; each knows its HTTP status, an API error
kind (mapped to each dialect's envelope by the wire layer) and, where it makes sense, a
``retry_after`` in seconds. Lower-layer errors (OSError, trio, JSON) are converted to
these at layer boundaries only.

    BridgeError
    ├── InternalError                 500  api_error         a bug in clibridge (names the request id)
    ├── RequestError                  400  invalid_request   the client sent something wrong
    │   ├── UnsupportedFeature        400  invalid_request   valid, but cannot be honoured
    │   ├── RequestTooLarge           413  invalid_request   body / prompt / message count
    │   ├── UnsupportedMediaType      415  invalid_request   a JSON endpoint got no JSON content type
    │   └── ModelNotFound             404  not_found         unknown model name
    ├── AuthError                     401  authentication    missing or wrong clibridge key
    ├── Forbidden                     403  permission        an Origin not in server.cors_origins
    │   └── MisdirectedRequest        421  permission        a Host header not naming this server
    ├── NotFound                      404  not_found         unknown path
    ├── MethodNotAllowed              405  invalid_request
    ├── CapacityError                 429  rate_limit        clibridge's own backpressure
    │   ├── QueueFull                 429  rate_limit        queue full or queue_timeout
    │   └── QuotaExceeded             429  rate_limit        a named key's quota (concurrency, rpm, tokens)
    ├── UnavailableError              503  unavailable       not ready / draining / crash loop
    ├── UpstreamError                 502  api_error         the CLI or its upstream failed
    │   ├── LoginExpired              503  authentication    CLI login invalid: run ...
    │   ├── UpstreamRateLimited       429  rate_limit        upstream 429, CLI's retry delay
    │   ├── UpstreamOverloaded        529  overloaded        upstream 529 / 503
    │   ├── CliCrashed                502  api_error         the CLI process died mid-request
    │   ├── ProtocolError             502  api_error         the CLI said something we can't parse
    │   ├── ToolsUnavailable          502  api_error         the CLI did not take the request's tools
    │   └── OutputInvalid             502  api_error         reply not valid for response_format, twice
    ├── BootError                     503  unavailable       a worker failed to start / get ready
    └── TurnTimeout                   504  timeout           wallclock or idle-stream timeout

A :class:`CliCrashed` or :class:`ToolsUnavailable` raised before the turn produced any
output is a failure of the worker, not of the request: the supervisor runs the turn once
more on another worker, and a client sees the error only when that is not possible.
"""

from __future__ import annotations

import enum


class ErrorKind(enum.Enum):
    """API error categories; each dialect maps these onto its own ``type`` strings."""

    INVALID_REQUEST = "invalid_request"
    AUTHENTICATION = "authentication"
    PERMISSION = "permission"
    NOT_FOUND = "not_found"
    RATE_LIMIT = "rate_limit"
    API_ERROR = "api_error"
    OVERLOADED = "overloaded"
    UNAVAILABLE = "unavailable"
    TIMEOUT = "timeout"


class BridgeError(Exception):
    """Base of every error a client may see."""

    status: int = 500
    kind: ErrorKind = ErrorKind.API_ERROR

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        retry_after: float | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        #: the JSON path of the offending field (``$.messages[2].content``), when known
        self.param = param
        #: seconds a client should wait before retrying, when known
        self.retry_after = retry_after
        #: operator-facing detail (e.g. the CLI's stderr tail); logged, not sent to clients
        self.detail = detail

    def __str__(self) -> str:
        return self.message


class InternalError(BridgeError):
    """An unexpected exception in clibridge itself, as the client sees it (500)."""

    status = 500


class RequestError(BridgeError):
    status = 400
    kind = ErrorKind.INVALID_REQUEST


class UnsupportedFeature(RequestError):
    pass


class RequestTooLarge(RequestError):
    status = 413


class UnsupportedMediaType(RequestError):
    status = 415


class ModelNotFound(RequestError):
    status = 404
    kind = ErrorKind.NOT_FOUND


class AuthError(BridgeError):
    status = 401
    kind = ErrorKind.AUTHENTICATION


class Forbidden(BridgeError):
    """A browser page (a foreign ``Origin``) may not use this server."""

    status = 403
    kind = ErrorKind.PERMISSION


class MisdirectedRequest(Forbidden):
    """The ``Host`` header names another server (DNS rebinding, or a name not allowed)."""

    status = 421


class NotFound(BridgeError):
    status = 404
    kind = ErrorKind.NOT_FOUND


class MethodNotAllowed(BridgeError):
    status = 405
    kind = ErrorKind.INVALID_REQUEST


class CapacityError(BridgeError):
    status = 429
    kind = ErrorKind.RATE_LIMIT


class QueueFull(CapacityError):
    pass


class QuotaExceeded(CapacityError):
    """A named key is over one of its quotas (:mod:`clibridge._keys`)."""


class UnavailableError(BridgeError):
    status = 503
    kind = ErrorKind.UNAVAILABLE


class UpstreamError(BridgeError):
    status = 502
    kind = ErrorKind.API_ERROR


class LoginExpired(UpstreamError):
    status = 503
    kind = ErrorKind.AUTHENTICATION


class UpstreamRateLimited(UpstreamError):
    status = 429
    kind = ErrorKind.RATE_LIMIT


class UpstreamOverloaded(UpstreamError):
    status = 529
    kind = ErrorKind.OVERLOADED


class CliCrashed(UpstreamError):
    pass


class ProtocolError(UpstreamError):
    pass


class ToolsUnavailable(UpstreamError):
    """The CLI's tool list for a turn is not the request's tool set (retry on another worker)."""


class OutputInvalid(UpstreamError):
    """The model's reply did not match the requested response format, also after a retry."""


class BootError(BridgeError):
    status = 503
    kind = ErrorKind.UNAVAILABLE


class TurnTimeout(BridgeError):
    status = 504
    kind = ErrorKind.TIMEOUT
