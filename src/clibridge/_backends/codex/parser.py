"""``codex app-server`` stdout: bytes in, JSON-RPC messages out (h11 shape)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final, TypeAlias

import attrs

from .._lines import LineBuffer


@attrs.frozen
class Response:
    """The reply to one of our requests: ``result`` or ``error`` (``{"code", "message"}``)."""

    id: Any
    result: Any = None
    error: Mapping[str, Any] | None = None

    @property
    def error_message(self) -> str:
        return str((self.error or {}).get("message", ""))


@attrs.frozen
class ServerRequest:
    """The app-server asks the client something (approvals, tool calls ...)."""

    id: Any
    method: str
    params: Mapping[str, Any]

    @property
    def thread_id(self) -> str | None:
        value = self.params.get("threadId")
        return value if isinstance(value, str) else None


@attrs.frozen
class Notification:
    method: str
    params: Mapping[str, Any]

    @property
    def thread_id(self) -> str | None:
        value = self.params.get("threadId")
        if isinstance(value, str):
            return value
        thread = self.params.get("thread")
        if isinstance(thread, Mapping) and isinstance(thread.get("id"), str):
            return str(thread["id"])
        return None


@attrs.frozen
class GarbageLine:
    """A stdout line that is not a JSON-RPC message (logged and skipped)."""

    text: str


@attrs.frozen
class NeedData:
    pass


Message_: TypeAlias = Response | ServerRequest | Notification | GarbageLine
NEED_DATA: Final = NeedData()


class AppServerParser(LineBuffer):
    """Bytes in, JSON-RPC messages out (h11 shape)."""

    def next_event(self) -> Message_ | NeedData:
        raw = self.next_line()
        return NEED_DATA if raw is None else parse_message(raw)


def parse_message(raw: bytes) -> Message_:
    try:
        msg = json.loads(raw)
    except ValueError:
        return GarbageLine(raw.decode("utf-8", "replace"))
    if not isinstance(msg, dict):
        return GarbageLine(raw.decode("utf-8", "replace"))
    method = msg.get("method")
    params = msg.get("params")
    if not isinstance(params, Mapping):
        params = {}
    if isinstance(method, str):
        if "id" in msg and msg["id"] is not None:
            return ServerRequest(msg["id"], method, params)
        return Notification(method, params)
    if "id" in msg:
        error = msg.get("error")
        return Response(msg["id"], msg.get("result"), error if isinstance(error, Mapping) else None)
    return GarbageLine(raw.decode("utf-8", "replace"))
