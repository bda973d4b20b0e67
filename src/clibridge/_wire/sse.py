"""Server-sent event framing (pure).

One function turns a payload into the bytes of one SSE frame; the HTTP layer writes the
bytes. JSON is compact, keeps key order (clients and golden tests read it in order) and
keeps non-ASCII text as UTF-8 rather than ``\\u`` escapes (smaller, and what the
upstream APIs send).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

#: an SSE comment line; clients ignore it, proxies and idle timers see traffic
KEEPALIVE = b": keepalive\n\n"

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False)


def dumps(data: Mapping[str, Any]) -> str:
    """Compact JSON text in the house format (key order kept, UTF-8 text)."""
    return _encoder.encode(data)


def frame(data: Mapping[str, Any] | str, *, event: str | None = None) -> bytes:
    """One SSE frame: an optional ``event:`` line, one ``data:`` line, a blank line.

    ``data`` is a JSON object, or a raw string such as ``[DONE]``. Compact JSON never
    contains a newline (they are escaped inside strings), so one ``data:`` line suffices.
    """
    if isinstance(data, str):
        # a raw payload may span lines; each needs its own data: field
        text = data.replace("\r\n", "\n").replace("\n", "\ndata: ")
    else:
        text = _encoder.encode(data)
    if event is None:
        return f"data: {text}\n\n".encode()
    return f"event: {event}\ndata: {text}\n\n".encode()
