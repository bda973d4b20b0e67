"""Pure wire translation between the three HTTP dialects and the neutral model.

One module per dialect — :mod:`.openai_chat`, :mod:`.openai_responses`,
:mod:`.anthropic_messages` — each with the same surface::

    decode_request(body) -> Request           # raises RequestError / UnsupportedFeature
    StreamEncoder(request, *, response_id, created, include_usage=False)
        .start() / .feed(event) / .fail(error) -> list[bytes]   # SSE frames
    encode_completion(completion, request, *, response_id, created) -> dict
    new_response_id() -> str

plus :mod:`.sse` (framing) and :mod:`.errors` (each dialect's error envelope and status).
Nothing here does IO or imports trio, quart or hypercorn: dicts and bytes in and out.
"""

from __future__ import annotations

from . import anthropic_messages, errors, openai_chat, openai_responses, sse
from .errors import Dialect, dialect_for_path, error_body, error_status

__all__ = [
    "Dialect",
    "anthropic_messages",
    "dialect_for_path",
    "error_body",
    "error_status",
    "errors",
    "openai_chat",
    "openai_responses",
    "sse",
]
