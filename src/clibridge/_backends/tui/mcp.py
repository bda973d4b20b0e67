"""The loopback MCP server that hands a request's client tools to a TUI pane.

Theory of operation
-------------------
Each TUI worker runs one :class:`McpHost`: an HTTP/1.1 server (h11) on 127.0.0.1, port
chosen by the OS, speaking MCP's streamable-HTTP transport in its simplest form (one
JSON-RPC request per POST, answered with one ``application/json`` body; notifications
get 202). The pane's claude is started with ``--mcp-config`` naming it as server
``client`` with an ``Authorization: Bearer <secret>`` header; the secret is new for every
pane start and a request without it gets 401, so another local process cannot call or
list the tools.

``tools/list`` answers the tools the host holds now (the binding's; the CLI asks once,
at start, so a pane is restarted when the tool set changes). ``tools/call`` is *parked*:
a :class:`PendingCall` goes to :attr:`McpHost.calls` and the HTTP answer waits until the
worker calls :meth:`PendingCall.answer` with the client's result (the turn is parked
meanwhile, as in stream-json mode) -- or the connection goes away.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
from collections.abc import Mapping
from typing import Any

import attrs
import h11
import trio

from ..._events import ToolSpec

__all__ = ["McpHost", "PendingCall", "mcp_config"]

log = logging.getLogger(__name__)

SERVER_NAME = "client"
_MAX_BODY = 16 * 1024 * 1024


@attrs.define(eq=False)
class PendingCall:
    """A ``tools/call`` the CLI waits on."""

    #: the model's tool_use id (``_meta["claudecode/toolUseId"]``)
    id: str
    name: str
    arguments: Mapping[str, Any]
    _done: trio.Event = attrs.field(factory=trio.Event)
    _result: Mapping[str, Any] | None = None

    def answer(self, text: str, *, is_error: bool = False) -> None:
        self._result = {"content": [{"type": "text", "text": text}], "isError": is_error}
        self._done.set()

    async def wait(self) -> Mapping[str, Any]:
        await self._done.wait()
        assert self._result is not None
        return self._result


def mcp_config(port: int, secret: str) -> str:
    """The ``--mcp-config`` JSON naming this host."""
    server = {
        "type": "http",
        "url": f"http://127.0.0.1:{port}/mcp",
        "headers": {"Authorization": f"Bearer {secret}"},
    }
    return json.dumps({"mcpServers": {SERVER_NAME: server}}, separators=(",", ":"))


class McpHost:
    def __init__(self) -> None:
        self.port = 0
        self.secret = secrets.token_hex(16)
        self.tools: tuple[ToolSpec, ...] = ()
        send, receive = trio.open_memory_channel[PendingCall](math.inf)
        self._send = send
        #: tools/call requests, in the order they arrive
        self.calls: trio.MemoryReceiveChannel[PendingCall] = receive

    def new_secret(self) -> str:
        self.secret = secrets.token_hex(16)
        return self.secret

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self._connection, listeners)

    async def _connection(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request: h11.Request | None = None
                body = bytearray()
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        data = await stream.receive_some(65536)
                        conn.receive_data(data)
                        if not data and conn.their_state is not h11.DONE:
                            return
                        continue
                    if isinstance(event, h11.Request):
                        request = event
                    elif isinstance(event, h11.Data):
                        body += event.data
                        if len(body) > _MAX_BODY:
                            return
                    elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                        break
                if request is None:
                    return
                status, reply = await self._handle(request, bytes(body))
                headers = [
                    ("content-type", "application/json"),
                    ("content-length", str(len(reply))),
                ]
                await stream.send_all(conn.send(h11.Response(status_code=status, headers=headers)))
                await stream.send_all(
                    conn.send(h11.Data(data=reply)) + conn.send(h11.EndOfMessage())
                )
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (h11.ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
            return
        finally:
            await stream.aclose()

    async def _handle(self, request: h11.Request, body: bytes) -> tuple[int, bytes]:
        headers = {k.decode().lower(): v.decode() for k, v in request.headers}
        if request.method != b"POST":
            return 405, b"{}"
        if not secrets.compare_digest(headers.get("authorization", ""), f"Bearer {self.secret}"):
            return 401, b'{"error":"unauthorized"}'
        try:
            message = json.loads(body)
        except ValueError:
            return 400, b"{}"
        if not isinstance(message, dict) or "id" not in message:
            return 202, b""
        method = message.get("method")
        raw_params = message.get("params")
        params: dict[str, Any] = raw_params if isinstance(raw_params, dict) else {}
        result: Mapping[str, Any]
        if method == "initialize":
            result = {
                "protocolVersion": params.get("protocolVersion", "2025-06-18"),
                "capabilities": {"tools": {}},
                "serverInfo": {"name": SERVER_NAME, "version": "1"},
            }
        elif method == "tools/list":
            result = {
                "tools": [
                    {"name": t.name, "description": t.description, "inputSchema": t.input_schema}
                    for t in self.tools
                ]
            }
        elif method == "tools/call":
            raw_meta = params.get("_meta")
            meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
            arguments = params.get("arguments")
            call = PendingCall(
                id=str(meta.get("claudecode/toolUseId") or f"mcp-{message['id']}"),
                name=str(params.get("name", "")),
                arguments=arguments if isinstance(arguments, dict) else {},
            )
            self._send.send_nowait(call)
            result = await call.wait()
        else:
            result = {}
        reply = {"jsonrpc": "2.0", "id": message["id"], "result": result}
        return 200, json.dumps(reply).encode()
