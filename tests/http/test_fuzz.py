"""Hypothesis: malformed bodies on every endpoint never give a 5xx or a hang."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clibridge._wire.errors import Dialect

from .conftest import ThreadedServer
from .helpers import assert_error_shape

ENDPOINTS: dict[str, Dialect] = {
    "/v1/chat/completions": "openai_chat",
    "/v1/responses": "openai_responses",
    "/v1/messages": "anthropic_messages",
    "/v1/messages/count_tokens": "anthropic_messages",
}

json_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
KEYS = [
    "model",
    "messages",
    "input",
    "stream",
    "max_tokens",
    "system",
    "tools",
    "tool_choice",
    "stream_options",
    "n",
    "role",
    "content",
    "type",
    "text",
    "instructions",
    "temperature",
]
# objects shaped like requests: known keys with arbitrary values, nested message-like things
message_like = st.dictionaries(
    st.sampled_from(["role", "content", "type", "text", "tool_calls", "tool_call_id"]),
    json_values,
    max_size=4,
)
request_like = st.dictionaries(
    st.sampled_from(KEYS),
    json_values
    | st.lists(message_like, max_size=3)
    | st.sampled_from(["claude-sonnet-4-5", "user", True]),
    max_size=6,
)
bodies = (
    st.binary(max_size=64)
    | json_values.map(lambda v: json.dumps(v).encode())
    | request_like.map(lambda v: json.dumps(v).encode())
)


@pytest.fixture(scope="module")
def client(threaded_server: ThreadedServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=threaded_server.base_url, timeout=10) as c:
        yield c


@pytest.mark.parametrize("path", list(ENDPOINTS))
@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=bodies)
def test_malformed_bodies_never_5xx(client: httpx.Client, path: str, body: bytes) -> None:
    r = client.post(path, content=body, headers={"Content-Type": "application/json"})
    assert r.status_code < 500, (body, r.status_code, r.text)
    if r.status_code >= 400:
        payload: Any = r.json()
        assert_error_shape(ENDPOINTS[path], payload)
