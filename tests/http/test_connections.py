"""Open connections (issue 15, item 3): keep-alive timeout, shutdown, the connection cap.

Real Hypercorn on 127.0.0.1:0 and real sockets, so the real clock: small timeouts, every
wait bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import anthropic
import h2.config
import h2.connection
import h2.events
import h11
import httpx
import openai
import pytest
import trio
from hypercorn.config import Config as HyperConfig
from hypercorn.trio import serve as hypercorn_serve
from quart_trio import QuartTrio

from clibridge._config import ClaudeConfig, Config, PoolConfig, ServerConfig
from clibridge._events import Finished, FinishReason, TextDelta, TurnStarted
from clibridge._http import _exchange
from clibridge._http._connections import ConnectionTable, serve_connections
from clibridge._supervisor import FAKE_CLAUDE_COMMAND, BackendChoice, serve
from clibridge._wire.errors import Dialect

from .conftest import MODEL, USAGE, RunningServer, Script, Sleep, ThreadedServer, open_server
from .helpers import PATHS, body_for

Connect = Callable[[str], Awaitable["RawClient"]]

#: keep-alive timeout in these tests (seconds)
KEEP_ALIVE = 0.4
#: how long a connection must be idle before it may be replaced at the cap, in these tests
EVICT_AFTER = 0.2
FINISHED = Finished(FinishReason.END_TURN, USAGE)


# --------------------------------------------------------------------------- a raw client


class RawClient:
    """One TCP connection spoken to with h11: sends requests, reads whole responses, and
    tells when the server closes."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT)

    @classmethod
    async def connect(cls, base_url: str) -> RawClient:
        host, port = base_url.removeprefix("http://").split(":")
        return cls(await trio.open_tcp_stream(host, int(port)))

    async def request(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """Send a request and read its whole response."""
        await self.send_request(method, path, body)
        return await self.read_response()

    async def send_request(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> None:
        if self.h11.our_state is h11.DONE:
            self.h11.start_next_cycle()
        raw = json.dumps(body).encode() if body is not None else b""
        headers = [("Host", "127.0.0.1")]
        if body is not None:
            headers += [("Content-Type", "application/json"), ("Content-Length", str(len(raw)))]
        data = self.h11.send(h11.Request(method=method, target=path, headers=headers))
        data += self.h11.send(h11.Data(data=raw)) if raw else b""
        data += self.h11.send(h11.EndOfMessage())
        await self.stream.send_all(data)

    async def read_response(self) -> tuple[int, dict[str, str], bytes]:
        status, headers, body = 0, {}, bytearray()
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                self.h11.receive_data(await self.stream.receive_some(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
                headers = {k.decode(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return status, headers, bytes(body)

    async def closed_within(self, seconds: float) -> float:
        """Seconds until the server closes the connection (fails after ``seconds``)."""
        start = trio.current_time()
        with trio.fail_after(seconds):
            while await self.stream.receive_some(65536):
                pass
        return trio.current_time() - start

    async def still_open_after(self, seconds: float) -> bool:
        """Whether the server neither closed nor wrote for ``seconds``."""
        with trio.move_on_after(seconds):
            await self.stream.receive_some(65536)
            return False
        return True

    async def aclose(self) -> None:
        await self.stream.aclose()


async def until(predicate: Callable[[], bool], within: float = 2.0) -> None:
    """Poll ``predicate`` (the connection table has no change events) until it holds."""
    for _ in range(int(within / 0.01)):
        if predicate():
            return
        await trio.sleep(0.01)
    raise AssertionError(f"not within {within} s")


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """Opens :class:`RawClient` connections and closes them after the test."""
    opened: list[RawClient] = []

    async def open_one(base_url: str) -> RawClient:
        client = await RawClient.connect(base_url)
        opened.append(client)
        return client

    yield open_one
    for client in opened:
        await client.aclose()


@asynccontextmanager
async def counted_server(
    limit: int = 512, *, evict_after: float = EVICT_AFTER, **server: Any
) -> AsyncIterator[tuple[RunningServer, ConnectionTable]]:
    table = ConnectionTable(limit, evict_after=evict_after)
    server.setdefault("keep_alive_timeout", KEEP_ALIVE)
    async with open_server(connections=table, **server) as running:
        yield running, table


async def _served(client: RawClient, kind: str) -> None:
    """One request of ``kind`` on ``client``, answered 200."""
    if kind == "none":
        return
    if kind == "get":
        status, _, _ = await client.request("GET", "/healthz")
    else:
        body = body_for("openai_chat", stream=kind == "stream")
        status, _, _ = await client.request("POST", PATHS["openai_chat"], body)
    assert status == 200


# --------------------------------------------------------------------------- keep-alive


@pytest.mark.parametrize("kind", ["none", "get", "post", "stream"])
async def test_an_idle_connection_is_closed_after_keep_alive_timeout(
    kind: str, connect: Connect
) -> None:
    """Regression (issue 15): idle keep-alive connections were never closed once they
    had served a request (Hypercorn 0.18's trio worker lost its idle timer to Quart-Trio's
    cancel on ``http.disconnect``); 3,000 of them stayed open for 90 s."""
    async with counted_server() as (server, table):
        client = await connect(server.base_url)
        with trio.fail_after(5):
            await _served(client, kind)
        idle_for = await client.closed_within(KEEP_ALIVE + 2)
        assert KEEP_ALIVE * 0.8 <= idle_for <= KEEP_ALIVE + 1.0
        await until(lambda: not len(table))


async def _h2c(client: RawClient, *, request: bool) -> None:
    """Speak HTTP/2 with prior knowledge on ``client`` (as ``curl --http2-prior-knowledge``
    does): the preface and settings, then one GET /healthz if ``request``."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    stream_id = conn.get_next_available_stream_id()
    if request:
        headers = [(":method", "GET"), (":path", "/healthz"), (":scheme", "http")]
        conn.send_headers(stream_id, [*headers, (":authority", "127.0.0.1")], end_stream=True)
    await client.stream.send_all(conn.data_to_send())
    status = None
    with trio.fail_after(5):
        while True:
            for event in conn.receive_data(await client.stream.receive_some(65536)):
                if isinstance(event, h2.events.ResponseReceived):
                    status = dict(event.headers)[b":status"]
                if isinstance(event, h2.events.StreamEnded) and request:
                    assert status == b"200"
                    return
                if isinstance(event, h2.events.RemoteSettingsChanged) and not request:
                    return
            await client.stream.send_all(conn.data_to_send())


@pytest.mark.parametrize("with_request", [False, True], ids=["preface", "after-request"])
async def test_an_idle_h2c_connection_is_closed_after_keep_alive_timeout(
    with_request: bool, connect: Connect
) -> None:
    """Regression (issue 15, the HTTP/2 variant the chaos suite found): a connection that
    spoke h2c with prior knowledge and went idle stayed open past the keep-alive timeout
    (the preface is parsed as an HTTP/1.1 request that marks the connection busy, and
    HTTP/2 reports idle only when a stream closes)."""
    async with counted_server() as (server, table):
        client = await connect(server.base_url)
        await _h2c(client, request=with_request)
        idle_for = await client.closed_within(KEEP_ALIVE + 2)
        assert idle_for <= KEEP_ALIVE + 1.0
        await until(lambda: not len(table))


async def test_shutdown_closes_an_idle_h2c_connection_at_once(connect: Connect) -> None:
    """Regression (issue 15, HTTP/2 variant): one idle h2c connection made SIGTERM wait
    the whole ``drain_timeout``."""
    async with counted_server(keep_alive_timeout=30.0, drain_timeout=10.0) as (server, table):
        client = await connect(server.base_url)
        await _h2c(client, request=False)
        await until(lambda: table.statistics().idle == 1)
        server.shutdown.set()
        assert await client.closed_within(1.0) < 1.0


async def test_a_connection_in_use_is_not_closed_by_the_keep_alive_timer(connect: Connect) -> None:
    """The timer counts idle time only: a stream longer than the timeout runs to its end,
    and requests spaced shorter than it reuse one connection."""
    async with counted_server() as (server, table):
        server.service.default = Script(
            steps=[TurnStarted(MODEL), TextDelta("a"), Sleep(KEEP_ALIVE * 2), FINISHED]
        )
        client = await connect(server.base_url)
        with trio.fail_after(10):
            await _served(client, "stream")
            for _ in range(3):
                await trio.sleep(KEEP_ALIVE / 2)
                await _served(client, "get")
        assert table.statistics().accepted == 1


async def test_a_bare_quart_trio_app_gets_its_keep_alive_timeout(connect: Connect) -> None:
    """Regression (issue 15), the root cause: the fix is in the connection layer, not in
    the app's middleware. A plain Quart-Trio app without clibridge's ASGI wrapper, served
    by :func:`serve_connections`, has its idle connection closed after a request."""
    async with trio.open_nursery() as nursery:
        port = await _start_bare(nursery, _serve_connections)
        client = await connect(f"http://127.0.0.1:{port}")
        with trio.fail_after(5):
            status, _, body = await client.request("GET", "/")
        assert (status, body) == (200, b"hi")
        assert await client.closed_within(KEEP_ALIVE + 2) <= KEEP_ALIVE + 1.0
        nursery.cancel_scope.cancel()


async def test_upstream_hypercorn_serve_still_loses_the_timer(connect: Connect) -> None:
    """The upstream bug this module works around (docs/upstream/hypercorn-keep-alive.md):
    ``hypercorn.trio.serve`` with the same bare app keeps the connection open past the
    timeout. When this fails, Hypercorn fixed it and ``_Connection.protocol_send``'s
    shield may go."""
    async with trio.open_nursery() as nursery:
        port = await _start_bare(nursery, hypercorn_serve)
        client = await connect(f"http://127.0.0.1:{port}")
        with trio.fail_after(5):
            assert (await client.request("GET", "/"))[0] == 200
        assert await client.still_open_after(KEEP_ALIVE * 3)
        nursery.cancel_scope.cancel()


async def _serve_connections(app: Any, config: HyperConfig, **kwargs: Any) -> None:
    await serve_connections(app, config, ConnectionTable(16), **kwargs)


async def _start_bare(nursery: trio.Nursery, serve_fn: Any) -> int:
    """A bare Quart-Trio app served by ``serve_fn`` in the test's nursery; its port."""
    app = QuartTrio("bare")

    @app.get("/")
    async def index() -> str:
        return "hi"

    config = HyperConfig()
    config.bind = ["127.0.0.1:0"]
    config.keep_alive_timeout = KEEP_ALIVE
    config.accesslog = None
    binds: list[str] = await nursery.start(
        partial(serve_fn, app, config, shutdown_trigger=trio.sleep_forever)
    )
    return int(binds[0].rsplit(":", 1)[1])


async def test_a_connection_the_client_closed_is_released_at_once(connect: Connect) -> None:
    """Regression (issue 15): a connection the client had closed stayed in CLOSE-WAIT
    until the keep-alive timer fired (Hypercorn's task group waited for the timer)."""
    async with counted_server(keep_alive_timeout=30.0) as (server, table):
        client = await connect(server.base_url)
        with trio.fail_after(5):
            await _served(client, "get")
        assert table.statistics().open == 1
        await client.aclose()
        await until(lambda: not len(table), within=1.0)


async def test_a_last_send_that_overran_its_bound_ends_the_connection(
    connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: when the last send of a response overran ``END_SEND_BOUND`` (the event
    loop had stalled), what Hypercorn does after it -- restart the keep-alive cycle,
    resume reading -- was cancelled too, and a client that had already sent its next
    request on the connection got neither an answer nor a close, ever (the chaos fuzz
    run, 1 in 5 of its 16 s stalls). Now the connection is ended: a close, and the server
    serves the next connection as before."""
    monkeypatch.setattr(_exchange, "END_SEND_BOUND", 0.1)
    real_end_sender = _exchange._end_sender

    def stalling(scope: Any, send: Any) -> Any:
        async def stall_then_send(message: Any) -> None:
            if message.get("type") == "http.response.body" and not message.get("more_body"):
                time.sleep(0.3)  # noqa: ASYNC251 -- the event loop stalls past the bound, on purpose
            await send(message)

        return real_end_sender(scope, stall_then_send)

    monkeypatch.setattr(_exchange, "_end_sender", stalling)
    async with counted_server(keep_alive_timeout=30.0) as (server, table):
        client = await connect(server.base_url)
        await client.send_request("GET", "/healthz")
        await client.stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await client.closed_within(5.0)
        await until(lambda: not len(table), within=2.0)
        monkeypatch.setattr(_exchange, "_end_sender", real_end_sender)
        fresh = await connect(server.base_url)
        with trio.fail_after(5):
            await _served(fresh, "post")


# --------------------------------------------------------------------------- shutdown


async def test_shutdown_closes_idle_connections_at_once(connect: Connect) -> None:
    """Regression (issue 15): SIGTERM with one idle pooled connection open waited the
    whole ``drain_timeout`` (30.2 s instead of 0.4 s). At the HTTP layer: idle
    connections (fresh, and after a request) are closed at once, an in-flight request
    still finishes, and ``serve_http`` returns right after it."""
    table = ConnectionTable(16)
    async with trio.open_nursery() as nursery:
        running: list[RunningServer] = []
        started = trio.Event()
        returned: list[float] = []
        ended = trio.Event()

        async def run() -> None:
            async with open_server(
                connections=table, keep_alive_timeout=30.0, drain_timeout=10.0
            ) as server:
                running.append(server)
                started.set()
                await server.shutdown.wait()
            returned.append(trio.current_time())
            ended.set()

        nursery.start_soon(run)
        with trio.fail_after(5):
            await started.wait()
        server = running[0]
        server.service.default = Script(
            steps=[TurnStarted(MODEL), TextDelta("a"), Sleep(0.3), TextDelta("b"), FINISHED]
        )
        fresh = await connect(server.base_url)
        used = await connect(server.base_url)
        busy = await connect(server.base_url)
        with trio.fail_after(5):
            await _served(used, "get")
            await busy.send_request("POST", PATHS["openai_chat"], body_for("openai_chat"))
            await server.service.wait_until(
                lambda: bool(server.service.records) and server.service.last().sent >= 2
            )
        assert table.statistics().open == 3
        begun = trio.current_time()
        server.shutdown.set()
        assert await fresh.closed_within(0.5) < 0.5
        assert await used.closed_within(0.5) < 0.5
        with trio.fail_after(3):
            status, _, _ = await busy.read_response()
        assert status == 200
        await busy.closed_within(1)  # closed after its response
        with trio.fail_after(3):
            await ended.wait()
        assert returned[0] - begun < 1.5  # the 0.3 s turn, not drain_timeout (10 s)
    assert table.statistics().closed_at_shutdown == 2


async def test_sigterm_drain_is_not_held_by_idle_pooled_connections(
    tmp_path: Path, connect: Connect
) -> None:
    """Regression (issue 15): SIGTERM with one idle pooled connection open waited the
    whole ``drain_timeout`` (30.2 s instead of 0.4 s). Through the supervisor's
    ``serve()`` on the fake claude: an httpx client's pooled connection and a connection
    that never sent a request do not hold the drain."""
    config = Config(
        server=ServerConfig(host="127.0.0.1", port=0, drain_timeout=10.0),
        claude=ClaudeConfig(pool=PoolConfig(workers=1, spares=0, kill_grace=0.5)),
        backend="fake",
        state_dir=tmp_path / "state",
    )
    choice = BackendChoice(claude=FAKE_CLAUDE_COMMAND, codex=None, fake=True, notes=())
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    shutdown = trio.Event()
    done: list[float] = []
    ended = trio.Event()

    async def run(*, task_status: trio.TaskStatus[tuple[str, int]]) -> None:
        assert await serve(config, choice, env, shutdown=shutdown, task_status=task_status) == 0
        done.append(trio.current_time())
        ended.set()

    async with trio.open_nursery() as nursery:
        with trio.fail_after(30):
            host, port = await nursery.start(run)
        base_url = f"http://{host}:{port}"
        fresh = await connect(base_url)
        async with httpx.AsyncClient(base_url=base_url) as client:
            with trio.fail_after(20):
                response = await client.post(PATHS["openai_chat"], json=body_for("openai_chat"))
            assert response.status_code == 200
            # the client keeps the connection in its pool
            begun = trio.current_time()
            shutdown.set()
            with trio.fail_after(8):
                await ended.wait()
        await fresh.closed_within(1)
    took = done[0] - begun
    assert took < 2.0, f"the drain took {took:.2f} s with idle connections open"


# --------------------------------------------------------------------------- the cap


async def test_at_the_cap_a_new_connection_replaces_the_longest_idle_one(connect: Connect) -> None:
    """Issue 15: a cap on open connections (``server.max_connections``). A new connection
    beyond it is not refused while another has been idle a while: the one idle longest is
    closed (pooling clients reconnect), so the cap never turns a client away for others'
    idle pools."""
    async with counted_server(limit=2, keep_alive_timeout=30.0) as (server, table):
        first = await connect(server.base_url)
        with trio.fail_after(5):
            await _served(first, "get")
        # idle order is the order connections became idle: first, then second
        await until(lambda: table.statistics().idle == 1)
        second = await connect(server.base_url)  # idle, no request yet
        with trio.fail_after(5):
            await until(lambda: table.statistics().idle == 2)
        await trio.sleep(EVICT_AFTER)
        third = await connect(server.base_url)
        assert await first.closed_within(1) < 1
        with trio.fail_after(5):
            await _served(third, "post")
            await _served(second, "get")
        stats = table.statistics()
        assert (stats.open, stats.evicted, stats.refused) == (2, 1, 0)


@pytest.mark.parametrize("other", ["busy", "just_idle"])
async def test_at_the_cap_with_no_connection_to_replace_a_new_one_gets_a_503(
    other: str, connect: Connect
) -> None:
    """Issue 15: beyond the cap a new connection is refused promptly, never queued: when
    every connection is in the middle of a request, or became idle too recently to be
    closed safely (its client may be sending the next request on it right now), it gets
    a 503 in its API's error shape with Retry-After and ``Connection: close``, and is
    closed."""
    async with counted_server(limit=1, evict_after=30.0, keep_alive_timeout=30.0) as (
        server,
        table,
    ):
        holder = await connect(server.base_url)
        if other == "busy":
            server.service.default = Script(steps=[TurnStarted(MODEL), TextDelta("a"), Sleep(30)])
            await holder.send_request(
                "POST", PATHS["anthropic_messages"], body_for("anthropic_messages", stream=True)
            )
            with trio.fail_after(5):
                await server.service.wait_until(
                    lambda: bool(server.service.records) and server.service.last().sent >= 2
                )
        else:
            with trio.fail_after(5):
                await _served(holder, "get")
            await until(lambda: table.statistics().idle == 1)
        dialects: tuple[Dialect, ...] = ("anthropic_messages", "openai_chat")
        for dialect in dialects:
            refused = await connect(server.base_url)
            with trio.fail_after(3):
                status, headers, raw = await refused.request(
                    "POST", PATHS[dialect], body_for(dialect)
                )
            assert status == 503
            assert headers["retry-after"] == "1"
            assert headers["connection"] == "close"
            body = json.loads(raw)
            error = body["error"]
            assert "server.max_connections" in error["message"]
            if dialect == "anthropic_messages":
                assert body["type"] == "error" and error["type"] == "api_error"
            else:
                assert (error["type"], error["code"]) == ("server_error", "unavailable")
            await refused.closed_within(1)
        stats = table.statistics()
        assert (stats.open, stats.refused, stats.evicted) == (1, 2, 0)
        if other == "just_idle":
            with trio.fail_after(5):
                await _served(holder, "get")  # still open, still served
        await holder.aclose()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the SDK on the model name
def test_sdk_clients_that_pool_connections_work_at_the_cap() -> None:
    """Issue 15: the cap must keep loopback clients working. Three official SDK clients
    (each keeps its connection in a pool) take turns against a server capped at two
    connections, without retries: each new connection replaces one that has been idle
    a while, and a client whose pooled connection was closed opens a new one by itself."""
    table = ConnectionTable(2, evict_after=EVICT_AFTER)
    with ThreadedServer(connections=table, keep_alive_timeout=30.0) as server:
        clients: list[openai.OpenAI | anthropic.Anthropic] = [
            openai.OpenAI(api_key="unused", base_url=f"{server.base_url}/v1", max_retries=0),
            anthropic.Anthropic(api_key="unused", base_url=server.base_url, max_retries=0),
            openai.OpenAI(api_key="unused", base_url=f"{server.base_url}/v1", max_retries=0),
        ]
        try:
            for _ in range(3):
                for client in clients:
                    time.sleep(EVICT_AFTER * 1.5)  # the others' connections idle a while
                    if isinstance(client, openai.OpenAI):
                        completion = client.chat.completions.create(
                            model=MODEL, messages=[{"role": "user", "content": "hi"}]
                        )
                        assert completion.choices[0].message.content == "Hello, world"
                    else:
                        message = client.messages.create(
                            model=MODEL,
                            max_tokens=10,
                            messages=[{"role": "user", "content": "hi"}],
                        )
                        assert message.content[0].type == "text"
        finally:
            for client in clients:
                client.close()
        stats = table.statistics()
    assert stats.refused == 0
    assert stats.evicted >= 3
    assert stats.open <= 2


def test_the_cap_fits_the_open_file_limit() -> None:
    """A cap above the open-file limit is no cap (accept fails with EMFILE and new
    connections wait in the backlog): the soft limit is raised when the hard limit
    allows, else the cap is lowered."""
    code = (
        "import resource, sys\n"
        "from clibridge._http._connections import FD_RESERVE, fit_open_file_limit\n"
        "soft, hard = map(int, sys.argv[1:])\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))\n"
        "print(fit_open_file_limit(512), resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
    )

    def run(soft: int, hard: int) -> tuple[list[int], str]:
        done = subprocess.run(
            [sys.executable, "-c", code, str(soft), str(hard)],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return [int(x) for x in done.stdout.split()], done.stderr

    import resource

    _, hard_now = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard_now != resource.RLIM_INFINITY and hard_now < 1024:
        pytest.skip(f"the hard open-file limit here is {hard_now}")
    (cap, soft), _ = run(256, 1024)  # macOS starts processes with 256
    assert (cap, soft) == (512, 512 + 128)
    (cap, soft), stderr = run(256, 300)
    assert (cap, soft) == (300 - 128, 300)
    assert "does not fit the open-file limit" in stderr
