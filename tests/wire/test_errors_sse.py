"""Error envelopes and statuses per dialect, SSE framing, dialect routing."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest
from anthropic.types.shared import ErrorResponse

from clibridge import _errors as e
from clibridge._wire import errors, sse

ALL_ERRORS: list[e.BridgeError] = [
    e.RequestError("bad", param="$.x"),
    e.UnsupportedFeature("nope", param="$.n"),
    e.RequestTooLarge("big"),
    e.ModelNotFound("no model"),
    e.AuthError("who"),
    e.NotFound("where"),
    e.MethodNotAllowed("how"),
    e.CapacityError("busy"),
    e.QueueFull("full", retry_after=2),
    e.UnavailableError("not ready"),
    e.UpstreamError("upstream"),
    e.LoginExpired("run claude login"),
    e.UpstreamRateLimited("slow down", retry_after=30),
    e.UpstreamOverloaded("overloaded"),
    e.CliCrashed("crashed"),
    e.ProtocolError("garbled"),
    e.BootError("no boot"),
    e.TurnTimeout("too slow"),
]


@pytest.mark.parametrize("error", ALL_ERRORS, ids=lambda x: type(x).__name__)
def test_every_error_has_both_envelopes(error: e.BridgeError) -> None:
    for dialect in ("openai_chat", "openai_responses"):
        envelope = errors.error_body(dialect, error)
        assert list(envelope) == ["error"]
        assert list(envelope["error"]) == ["message", "type", "param", "code"]
        assert envelope["error"]["message"] == error.message
        assert envelope["error"]["param"] == error.param
        assert 400 <= errors.error_status(dialect, error) < 600
    body = errors.error_body("anthropic_messages", error)
    assert body == {
        "type": "error",
        "error": {"type": errors.anthropic_type(error), "message": error.message},
    }
    if not isinstance(
        error, e.RequestTooLarge
    ):  # request_too_large: in the API docs, not the SDK union
        ErrorResponse.model_validate(body)


@pytest.mark.parametrize(
    ("error", "openai", "anthropic"),
    [
        (e.RequestError("x"), (400, "invalid_request_error", None), (400, "invalid_request_error")),
        (
            e.UnsupportedFeature("x"),
            (400, "invalid_request_error", "unsupported_feature"),
            (400, "invalid_request_error"),
        ),
        (
            e.RequestTooLarge("x"),
            (413, "invalid_request_error", "request_too_large"),
            (413, "request_too_large"),
        ),
        (
            e.ModelNotFound("x"),
            (404, "invalid_request_error", "model_not_found"),
            (404, "not_found_error"),
        ),
        (
            e.AuthError("x"),
            (401, "authentication_error", "invalid_api_key"),
            (401, "authentication_error"),
        ),
        (
            e.QueueFull("x"),
            (429, "rate_limit_error", "rate_limit_exceeded"),
            (429, "rate_limit_error"),
        ),
        (
            e.UpstreamRateLimited("x"),
            (429, "rate_limit_error", "rate_limit_exceeded"),
            (429, "rate_limit_error"),
        ),
        (
            e.LoginExpired("x"),
            (503, "authentication_error", "login_expired"),
            (503, "authentication_error"),
        ),
        (e.UpstreamOverloaded("x"), (503, "server_error", "overloaded"), (529, "overloaded_error")),
        (e.CliCrashed("x"), (502, "server_error", "cli_crashed"), (502, "api_error")),
        (e.UnavailableError("x"), (503, "server_error", "unavailable"), (503, "api_error")),
        (e.TurnTimeout("x"), (504, "timeout_error", "timeout"), (504, "timeout_error")),
    ],
)
def test_mapping(error: e.BridgeError, openai: tuple[Any, ...], anthropic: tuple[Any, ...]) -> None:
    body = errors.error_body("openai_chat", error)["error"]
    assert (errors.error_status("openai_chat", error), body["type"], body["code"]) == openai
    a_body = errors.error_body("anthropic_messages", error)["error"]
    assert (errors.error_status("anthropic_messages", error), a_body["type"]) == anthropic


@pytest.mark.parametrize(
    ("path", "dialect"),
    [
        ("/v1/messages", "anthropic_messages"),
        ("/v1/messages/count_tokens", "anthropic_messages"),
        ("/v1/responses", "openai_responses"),
        ("/v1/responses/resp_1?x=1", "openai_responses"),
        ("/v1/chat/completions", "openai_chat"),
        ("/v1/models", "openai_chat"),
        ("/nope", "openai_chat"),
        ("/v1/messagesX", "openai_chat"),
    ],
)
def test_dialect_for_path(path: str, dialect: str) -> None:
    assert errors.dialect_for_path(path) == dialect


def test_frames() -> None:
    assert sse.KEEPALIVE == b": keepalive\n\n"
    assert sse.frame({"b": 1, "a": "é\n"}) == 'data: {"b":1,"a":"é\\n"}\n\n'.encode()
    assert sse.frame({"type": "ping"}, event="ping") == b'event: ping\ndata: {"type":"ping"}\n\n'
    assert sse.frame("[DONE]") == b"data: [DONE]\n\n"
    assert sse.frame("a\nb") == b"data: a\ndata: b\n\n"


def test_error_type_lists_match_the_anthropic_sdk() -> None:
    """Every Anthropic type we send (bar request_too_large) is one the SDK's union accepts."""
    sent = {errors.anthropic_type(err) for err in ALL_ERRORS} - {"request_too_large"}
    adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(ErrorResponse)
    for kind in sent:
        adapter.validate_python({"type": "error", "error": {"type": kind, "message": "m"}})
