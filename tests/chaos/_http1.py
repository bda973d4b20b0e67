"""A small, lenient HTTP/1.1 client over a bare trio socket.

The fuzz and framing tests must send bytes no real client sends (bad content types, lone
surrogates escaped in JSON, broken chunking, conflicting lengths, pipelined requests) and
see exactly what came back, including whether the server closed the connection. httpx
refuses to send most of that, so this reads responses by hand: a status line, headers,
then a body framed by ``Content-Length``, by chunks, or by the end of the connection.
1xx interim responses (``100 Continue``) are skipped; a ``101`` is returned as it is.

Nothing here waits without a bound: every read runs under the caller's ``trio.fail_after``.
"""

from __future__ import annotations

import attrs
import trio

MAX_HEAD = 256 * 1024
#: the HTTP/2 client preface and an empty SETTINGS frame (h2c with prior knowledge)
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes.fromhex("000000040000000000")


class PeerClosed(Exception):
    """The server closed the connection before a whole response arrived."""

    def __init__(self, got: bytes) -> None:
        super().__init__(f"connection closed after {len(got)} bytes: {got[:200]!r}")
        self.got = got


class NotHttp1(Exception):
    """The server answered with bytes that do not start an HTTP/1.x response (h2)."""


@attrs.frozen
class Response:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return None

    @property
    def says_close(self) -> bool:
        return "close" in (self.header("connection") or "").lower()


def request(
    method: str,
    path: str,
    host: str,
    body: bytes = b"",
    *,
    content_type: str | None = "application/json",
    headers: tuple[tuple[str, str], ...] = (),
    length: bool = True,
) -> bytes:
    """The bytes of one request (``length=False``: no Content-Length header)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    if length and (body or method in ("POST", "PUT", "PATCH")):
        lines.append(f"Content-Length: {len(body)}")
    lines += [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Connection:
    """One client connection; responses are read in order (pipelining works)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = bytearray()
        self.eof = False

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        return cls(await trio.open_tcp_stream(host, port))

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def aclose(self) -> None:
        await self.stream.aclose()

    async def _fill(self) -> bool:
        """Read more; False at EOF (a reset counts as EOF)."""
        if self.eof:
            return False
        try:
            chunk = await self.stream.receive_some(65536)
        except trio.BrokenResourceError:
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buffer += chunk
        return True

    async def _line(self) -> bytes:
        while (end := self.buffer.find(b"\r\n")) < 0:
            if len(self.buffer) > MAX_HEAD or not await self._fill():
                raise PeerClosed(bytes(self.buffer))
        line = bytes(self.buffer[:end])
        del self.buffer[: end + 2]
        return line

    async def _exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            if not await self._fill():
                raise PeerClosed(bytes(self.buffer))
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

    async def read_some(self) -> bytes:
        """Whatever has arrived, waiting for at least one byte (b"" at EOF)."""
        while not self.buffer and await self._fill():
            pass
        data = bytes(self.buffer)
        self.buffer.clear()
        return data

    async def read_until(self, marker: bytes) -> bytes:
        """Raw bytes up to and including ``marker`` (for a client that hangs up mid-stream)."""
        while (at := self.buffer.find(marker)) < 0:
            if not await self._fill():
                raise PeerClosed(bytes(self.buffer))
        data = bytes(self.buffer[: at + len(marker)])
        del self.buffer[: at + len(marker)]
        return data

    async def response(self, *, head_request: bool = False) -> Response:
        """The next final response (interim 1xx responses are skipped)."""
        while True:
            while len(self.buffer) < 5 and await self._fill():
                pass
            if self.buffer and not b"HTTP/".startswith(bytes(self.buffer[:5])):
                raise NotHttp1(bytes(self.buffer[:200]))
            status_line = await self._line()
            parts = status_line.split(b" ", 2)
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
                raise AssertionError(f"not a status line: {status_line[:200]!r}")
            status = int(parts[1])
            headers = []
            while line := await self._line():
                key, _, value = line.partition(b":")
                headers.append(
                    (key.strip().lower().decode("latin-1"), value.strip().decode("latin-1"))
                )
            if 100 <= status < 200 and status != 101:
                continue
            break
        found = dict(headers)
        if head_request or status in (101, 204, 304):
            body = b""
        elif "chunked" in found.get("transfer-encoding", "").lower():
            body = await self._chunked()
        elif "content-length" in found:
            body = await self._exactly(int(found["content-length"]))
        else:  # delimited by the end of the connection
            while await self._fill():
                pass
            body = bytes(self.buffer)
            self.buffer.clear()
        return Response(status, tuple(headers), body)

    async def _chunked(self) -> bytes:
        body = bytearray()
        while True:
            size = int((await self._line()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while await self._line():  # trailers
                    pass
                return bytes(body)
            body += await self._exactly(size)
            if await self._line():
                raise AssertionError("chunk data not followed by CRLF")

    async def closed_by_peer(self, within: float) -> bool:
        """True if the server closes the connection within ``within`` seconds (anything
        it sends meanwhile is kept in the buffer)."""
        with trio.move_on_after(within):
            while await self._fill():
                pass
            return True
        return False
