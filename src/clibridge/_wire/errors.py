"""Each dialect's error envelope and status for every error of :mod:`clibridge._errors`.

OpenAI (Chat Completions and Responses)::

    {"error": {"message": "...", "type": "invalid_request_error", "param": "$.messages[0]", "code": null}}

Anthropic Messages::

    {"type": "error", "error": {"type": "overloaded_error", "message": "..."}}

The error tree gives each error an :class:`~clibridge._errors.ErrorKind` and a status;
this module maps the kind onto each API's ``type`` strings and adjusts the status where
an API has its own convention (upstream overload is 529 for Anthropic, 503 for OpenAI,
whose clients do not know 529).
"""

from __future__ import annotations

from typing import Any, Literal, TypeAlias

from .._errors import (
    AuthError,
    BootError,
    BridgeError,
    CapacityError,
    CliCrashed,
    ErrorKind,
    Forbidden,
    LoginExpired,
    MethodNotAllowed,
    MisdirectedRequest,
    ModelNotFound,
    NotFound,
    OutputInvalid,
    ProtocolError,
    RequestTooLarge,
    TurnTimeout,
    UnavailableError,
    UnsupportedFeature,
    UnsupportedMediaType,
    UpstreamOverloaded,
    UpstreamRateLimited,
)

Dialect: TypeAlias = Literal["openai_chat", "openai_responses", "anthropic_messages"]

_OPENAI_TYPES: dict[ErrorKind, str] = {
    ErrorKind.INVALID_REQUEST: "invalid_request_error",
    ErrorKind.AUTHENTICATION: "authentication_error",
    ErrorKind.PERMISSION: "permission_error",
    # OpenAI reports unknown models and URLs as invalid requests (code says which)
    ErrorKind.NOT_FOUND: "invalid_request_error",
    ErrorKind.RATE_LIMIT: "rate_limit_error",
    ErrorKind.API_ERROR: "server_error",
    ErrorKind.OVERLOADED: "server_error",
    ErrorKind.UNAVAILABLE: "server_error",
    ErrorKind.TIMEOUT: "timeout_error",
}

# The types the Anthropic API documents (and its SDK's ErrorObject union knows, except
# request_too_large, which the API sends for 413 but the SDK models by status only).
_ANTHROPIC_TYPES: dict[ErrorKind, str] = {
    ErrorKind.INVALID_REQUEST: "invalid_request_error",
    ErrorKind.AUTHENTICATION: "authentication_error",
    ErrorKind.PERMISSION: "permission_error",
    ErrorKind.NOT_FOUND: "not_found_error",
    ErrorKind.RATE_LIMIT: "rate_limit_error",
    ErrorKind.API_ERROR: "api_error",
    ErrorKind.OVERLOADED: "overloaded_error",
    ErrorKind.UNAVAILABLE: "api_error",
    ErrorKind.TIMEOUT: "timeout_error",
}

# Most specific class first: the first isinstance match names the OpenAI `code`.
_OPENAI_CODES: tuple[tuple[type[BridgeError], str], ...] = (
    (ModelNotFound, "model_not_found"),
    (RequestTooLarge, "request_too_large"),
    (UnsupportedMediaType, "unsupported_media_type"),
    (UnsupportedFeature, "unsupported_feature"),
    (AuthError, "invalid_api_key"),
    (MisdirectedRequest, "misdirected_request"),
    (Forbidden, "forbidden_origin"),
    (NotFound, "not_found"),
    (MethodNotAllowed, "method_not_allowed"),
    (CapacityError, "rate_limit_exceeded"),
    (UpstreamRateLimited, "rate_limit_exceeded"),
    (LoginExpired, "login_expired"),
    (UpstreamOverloaded, "overloaded"),
    (CliCrashed, "cli_crashed"),
    (ProtocolError, "protocol_error"),
    (OutputInvalid, "invalid_output"),
    (BootError, "unavailable"),
    (UnavailableError, "unavailable"),
    (TurnTimeout, "timeout"),
)


def openai_code(error: BridgeError) -> str | None:
    """The OpenAI ``code`` for ``error`` (None for a plain invalid request, like OpenAI)."""
    for cls, code in _OPENAI_CODES:
        if isinstance(error, cls):
            return code
    if error.kind is ErrorKind.API_ERROR:
        return "upstream_error"
    return None


def openai_type(error: BridgeError) -> str:
    """The OpenAI error ``type`` string for ``error``."""
    return _OPENAI_TYPES[error.kind]


def anthropic_type(error: BridgeError) -> str:
    """The Anthropic error ``type`` string for ``error``."""
    if isinstance(error, RequestTooLarge):
        return "request_too_large"
    return _ANTHROPIC_TYPES[error.kind]


def error_body(dialect: Dialect, error: BridgeError) -> dict[str, Any]:
    """The JSON error envelope ``dialect``'s clients expect for ``error``."""
    if dialect == "anthropic_messages":
        return {"type": "error", "error": {"type": anthropic_type(error), "message": error.message}}
    return {
        "error": {
            "message": error.message,
            "type": openai_type(error),
            "param": error.param,
            "code": openai_code(error),
        }
    }


def error_status(dialect: Dialect, error: BridgeError) -> int:
    """The HTTP status for ``error`` in ``dialect`` (529 stays 529 only for Anthropic)."""
    if error.status == 529 and dialect != "anthropic_messages":
        return 503
    return error.status


def dialect_for_path(path: str) -> Dialect:
    """Which API family a request path belongs to (for error shapes on any path)."""
    path = path.split("?", 1)[0]
    if path.startswith("/v1/"):
        path = path[3:]
    if path == "/messages" or path.startswith("/messages/"):
        return "anthropic_messages"
    if path == "/responses" or path.startswith("/responses/"):
        return "openai_responses"
    return "openai_chat"
