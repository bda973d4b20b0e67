"""The dialect codecs of :mod:`clibridge._wire`, as the HTTP layer sees them.

Each dialect module (``openai_chat``, ``openai_responses``, ``anthropic_messages``) has
the same shape; :func:`codec_for` picks one by dialect name and types it by the
:class:`Codec` protocol, so the routes are written once for all three.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol, cast

from .._errors import BridgeError
from .._events import Completion, Event, Request
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
    StreamEncoder: StreamEncoderFactory

    def decode_request(self, body: object) -> Request: ...

    def encode_completion(
        self, completion: Completion, request: Request, *, response_id: str, created: int
    ) -> dict[str, Any]: ...

    def new_response_id(self) -> str: ...


_CODECS: dict[str, Codec] = {}


def codec_for(dialect: Dialect) -> Codec:
    """The wire module of ``dialect`` (imported on first use)."""
    codec = _CODECS.get(dialect)
    if codec is None:
        codec = cast(Codec, importlib.import_module(f"clibridge._wire.{dialect}"))
        _CODECS[dialect] = codec
    return codec
