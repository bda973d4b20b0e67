"""The dialect codecs of :mod:`clibridge._wire`, as the HTTP layer sees them.

Each dialect module (``openai_chat``, ``openai_responses``, ``anthropic_messages``) has
the same shape, the :class:`Codec` protocol; :data:`CODECS` maps the dialect names to the
modules (mypy checks each module against the protocol), so the routes are written once
for all three.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Protocol

from .._errors import BridgeError
from .._events import Completion, Event, Request
from .._wire import anthropic_messages, openai_chat, openai_responses
from .._wire.errors import Dialect


class StreamEncoder(Protocol):
    def start(self) -> list[bytes]: ...

    def feed(self, event: Event) -> list[bytes]: ...

    def fail(self, error: BridgeError) -> list[bytes]: ...

    @property
    def finished(self) -> bool: ...


class StreamEncoderFactory(Protocol):
    def __call__(
        self, request: Request, *, response_id: str, created: int, include_usage: bool = False
    ) -> StreamEncoder: ...


class Codec(Protocol):
    @property
    def StreamEncoder(self) -> StreamEncoderFactory: ...

    def decode_request(self, body: object) -> Request: ...

    def encode_completion(
        self, completion: Completion, request: Request, *, response_id: str, created: int
    ) -> dict[str, Any]: ...

    def new_response_id(self) -> str: ...


CODECS: Final[Mapping[Dialect, Codec]] = {
    "openai_chat": openai_chat,
    "openai_responses": openai_responses,
    "anthropic_messages": anthropic_messages,
}


def codec_for(dialect: Dialect) -> Codec:
    """The wire module of ``dialect``."""
    return CODECS[dialect]
