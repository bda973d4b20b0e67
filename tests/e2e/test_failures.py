"""Failure scenarios through HTTP, each on its own server on a fake CLI.

The behaviours both backends share run on each fake (parametrized by backend, what differs
is data in :data:`FAKES`); ``test_claude_*`` and ``test_codex_*`` are about one backend's
own machinery (claude: the process pool's boot, kill and reaping paths and its knobs;
codex: one app-server process multiplexing threads -- crash retries, server requests, error
notifications).

After every scenario: the pool reports nothing in flight, every worker it lists is alive,
no other CLI process (or grandchild) exists, and a follow-up request succeeds. Leaving the
server context then proves that nothing at all survived the shutdown.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from tests._procs import alive, pgid_of

from .conftest import (
    BACKENDS,
    BOUND,
    FAST_POOL,
    MODEL,
    Backend,
    E2EServer,
    open_e2e_server,
    open_raw,
    read_until,
)

CHAT = "/v1/chat/completions"
CODEX = "gpt-5.5"


def chat(text: str, *, stream: bool = False, model: str = MODEL) -> dict[str, Any]:
    return {"model": model, "stream": stream, "messages": [{"role": "user", "content": text}]}


async def post(server: E2EServer, path: str, body: dict[str, Any]) -> Any:
    async with server.client() as client:
        return await client.post(path, json=body)


async def finish(server: E2EServer) -> dict[str, Any]:
    stats = await server.assert_clean()
    await server.assert_serves()
    return stats


# ------------------------------------------------------------------ on either fake

#: what the claude interrupt names: it has no target, it stops the turn in progress
IN_PROGRESS = "the turn in progress"


@attrs.frozen
class Fake:
    """What differs between the fake CLIs in the failure tests both backends share."""

    backend: Backend
    #: the model the requests ask for
    model: str
    #: ``open_e2e_server`` arguments for the login test, and what a 401 tells the operator
    login_setup: Mapping[str, Any]
    login_fix: str
    #: the turn each interrupt the server sent the fake names
    interrupts: Callable[[E2EServer], list[str]]
    #: the one turn the fake was asked to run
    the_turn: Callable[[E2EServer], str]
    #: most conversations a settled pool may hold parked (codex parks none)
    max_parked: int
    #: a turn timeout interrupts the turn (codex: its process serves other threads on) rather
    #: than just ending the worker (claude)
    interrupts_on_timeout: bool

    def chat(self, text: str, *, stream: bool = False) -> dict[str, Any]:
        return chat(text, stream=stream, model=self.model)


def claude_interrupts(server: E2EServer) -> list[str]:
    return [
        IN_PROGRESS
        for line in server.stdin_lines()
        if isinstance(line, dict)
        and line.get("type") == "control_request"
        and line.get("request", {}).get("subtype") == "interrupt"
    ]


def codex_interrupts(server: E2EServer) -> list[str]:
    return [str(i["params"]["threadId"]) for i in server.sent("turn/interrupt")]


def codex_turn(server: E2EServer) -> str:
    (start,) = server.sent("turn/start")
    return str(start["params"]["threadId"])


FAKES = [
    Fake(
        "claude",
        MODEL,
        {"claude": {"login_hint": "claude setup-token  (then set CLAUDE_CODE_OAUTH_TOKEN)"}},
        "claude setup-token",
        claude_interrupts,
        lambda _: IN_PROGRESS,
        max_parked=FAST_POOL.workers,
        interrupts_on_timeout=False,
    ),
    Fake(
        "codex",
        CODEX,
        {},
        "clibridge login codex",
        codex_interrupts,
        codex_turn,
        max_parked=0,
        interrupts_on_timeout=True,
    ),
]


@pytest.fixture(params=FAKES, ids=lambda f: f.backend)
def cli(request: pytest.FixtureRequest) -> Fake:
    fake_cli: Fake = request.param
    return fake_cli


async def settle(server: E2EServer, cli: Fake) -> dict[str, Any]:
    """Full capacity back, nothing parked beyond what the backend may park, and served."""
    stats = await server.assert_clean()
    assert stats["parked"] <= cli.max_parked, stats
    await server.assert_serves()
    return stats


HANG = '@fake {"hang_mid_turn": true, "chunk_chars": 4}\nhi'
LOGIN_EXPIRED = (  # the CLI would retry forever
    '@fake {"api_error": 401, "api_retries": 1000000, "retry_delay_ms": 200,'
    ' "api_error_then": "hang"}\nhi'
)


async def test_hang_times_out_with_504(tmp_path: Path, cli: Fake) -> None:
    pool = attrs.evolve(BACKENDS[cli.backend].pool, turn_timeout=1.5)
    async with open_e2e_server(tmp_path, backend=cli.backend, pool=pool) as server:
        with trio.fail_after(30):
            t0 = trio.current_time()
            response = await post(server, CHAT, cli.chat(HANG))
            elapsed = trio.current_time() - t0
            assert response.status_code == 504, response.text
            assert "turn_timeout" in response.json()["error"]["message"]
            assert 1.4 < elapsed < 5
            stats = await settle(server, cli)
        assert stats["timeouts"] == 1
        assert bool(cli.interrupts(server)) is cli.interrupts_on_timeout, cli.interrupts(server)


async def test_hang_while_streaming_ends_the_stream_with_an_error(
    tmp_path: Path, cli: Fake
) -> None:
    pool = attrs.evolve(BACKENDS[cli.backend].pool, turn_timeout=1.5)
    async with open_e2e_server(tmp_path, backend=cli.backend, pool=pool) as server:
        with trio.fail_after(30):
            response = await post(server, CHAT, cli.chat(HANG, stream=True))
            assert response.status_code == 200  # the stream had started
            assert '"error"' in response.text
            await settle(server, cli)


async def test_upstream_401_is_503_with_the_fix(tmp_path: Path, cli: Fake) -> None:
    async with open_e2e_server(tmp_path, backend=cli.backend, **cli.login_setup) as server:
        with trio.fail_after(30):
            t0 = trio.current_time()
            response = await post(server, CHAT, cli.chat(LOGIN_EXPIRED))
            assert trio.current_time() - t0 < 5  # the fake would retry forever
            assert response.status_code == 503, response.text
            assert cli.login_fix in response.json()["error"]["message"]
            assert "retry-after" in response.headers
            anthropic = await post(
                server, "/v1/messages", {**cli.chat(LOGIN_EXPIRED), "max_tokens": 10}
            )
            assert anthropic.status_code == 503
            assert anthropic.json()["type"] == "error"
            assert cli.login_fix in anthropic.json()["error"]["message"]
            streamed = await post(server, CHAT, cli.chat(LOGIN_EXPIRED, stream=True))
            # the error comes before any byte of the stream: a plain HTTP error
            assert streamed.status_code == 503 and cli.login_fix in streamed.text
            await settle(server, cli)


async def test_upstream_429_is_429_with_retry_after(tmp_path: Path, cli: Fake) -> None:
    async with open_e2e_server(tmp_path, backend=cli.backend) as server:
        with trio.fail_after(30):
            limited = '@fake {"api_error": 429, "api_retries": 2, "retry_delay_ms": 50}\nhi'
            response = await post(server, CHAT, cli.chat(limited))
            assert response.status_code == 429, response.text
            assert response.json()["error"]["type"] in ("rate_limit_error", "rate_limit_exceeded")
            assert float(response.headers["retry-after"]) > 0
            await settle(server, cli)


async def test_disconnect_while_streaming_interrupts(tmp_path: Path, cli: Fake) -> None:
    async with open_e2e_server(tmp_path, backend=cli.backend) as server:
        with trio.fail_after(30):
            slow = '@fake {"reply": "' + "z" * 200 + '", "chunk_chars": 2, "chunk_delay": 0.05}\nhi'
            stream = await open_raw(server, cli.chat(slow, stream=True))
            got = await read_until(stream, b'"content":"zz"')
            assert got.startswith(b"HTTP/1.1 200")
            await stream.aclose()
            await server.wait_stats(lambda s: s["in_flight"] == s["parked"], within=10)
            await server.assert_clean()
            # exactly one interrupt, naming the turn that was streaming
            assert cli.interrupts(server) == [cli.the_turn(server)]
            await settle(server, cli)


# ------------------------------------------------------------------ the CLI misbehaves


async def test_claude_crash_mid_turn_is_502(tmp_path: Path) -> None:
    async with open_e2e_server(tmp_path) as server:
        with trio.fail_after(30):
            response = await post(server, CHAT, chat("@fake:claude_crash_mid_turn\nhi"))
            assert response.status_code == 502
            error = response.json()["error"]
            assert "exited" in error["message"] and "code 3" in error["message"]
            stats = await finish(server)
        assert stats["crashes"] >= 1


async def test_claude_slow_boot_waits_for_the_worker(tmp_path: Path) -> None:
    async with open_e2e_server(tmp_path, scenario={"default": {"boot_delay": 1.0}}) as server:
        with trio.fail_after(30):
            t0 = trio.current_time()
            response = await post(server, CHAT, chat("hi"))
            assert response.status_code == 200
            assert trio.current_time() - t0 > 0.5  # it really waited for the boot
            await finish(server)


async def test_claude_boot_that_never_becomes_ready(tmp_path: Path) -> None:
    """A CLI that hangs at boot: readiness never comes, the request fails with a clear
    error instead of hanging, /readyz says why, and every hung process is killed."""
    pool = attrs.evolve(FAST_POOL, ready_timeout=0.5, queue_timeout=3.0, spares=1, workers=1)
    scenario = {"default": {"hang_at_boot": True}}
    async with open_e2e_server(tmp_path, scenario=scenario, pool=pool) as server:
        with trio.fail_after(30):
            response = await post(server, CHAT, chat("hi"))
            assert response.status_code in (429, 503), response.text
            assert "retry-after" in response.headers
            assert "ready" in response.json()["error"]["message"]
            stats = await server.wait_stats(lambda s: s["boot_failures"] >= 1)
            assert stats["in_flight"] == stats["parked"]
            async with server.client() as client:
                ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert "readiness ping" in ready.json()["reason"]
            # only the workers booting right now may be alive
            booting = {w["pid"] for w in (await server.stats())["workers"]}
            assert all(not alive(p) for p in server.cli_pids() - booting)


async def test_claude_crash_loop_at_boot_is_503_with_the_cli_stderr(tmp_path: Path) -> None:
    pool = attrs.evolve(FAST_POOL, crash_loop_threshold=3)
    scenario = {"default": {"crash_at_boot": True}}
    async with open_e2e_server(tmp_path, scenario=scenario, pool=pool) as server:
        with trio.fail_after(30):
            await server.wait_stats(lambda s: s["boot_failures"] >= 3)
            t0 = trio.current_time()
            response = await post(server, CHAT, chat("hi"))
            assert trio.current_time() - t0 < 1  # fails fast, no queue wait
            assert response.status_code == 503
            assert "retry-after" in response.headers
            # the tail of the CLI's stderr reaches the operator
            assert "fake claude crashed at boot" in response.json()["error"]["message"]
            async with server.client() as client:
                ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert "crash-looping" in ready.json()["reason"]
            stats = await server.stats()
            assert stats["in_flight"] == 0
            # every crashed boot is reaped; at most the one booting now is alive
            assert sum(alive(p) for p in server.cli_pids()) <= 1


async def test_claude_garbage_line_frees_the_slot(tmp_path: Path) -> None:
    async with open_e2e_server(tmp_path) as server:
        with trio.fail_after(30):
            response = await post(server, CHAT, chat('@fake {"garbage_line": true}\nhi'))
            # a non-JSON line is either skipped (200) or a protocol error (502): never a hang
            assert response.status_code in (200, 502), response.text
            if response.status_code == 200:
                content = response.json()["choices"][0]["message"]["content"]
                assert content == "Hello from the fake CLI."
            await finish(server)


async def test_claude_worker_ignoring_sigterm_is_killed(tmp_path: Path) -> None:
    pool = attrs.evolve(FAST_POOL, turn_timeout=1.0, kill_grace=0.5)
    scenario = {"default": {"ignore_sigterm": True}}
    async with open_e2e_server(tmp_path, scenario=scenario, pool=pool) as server:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                responses: list[Any] = []

                async def request() -> None:
                    responses.append(
                        await post(server, CHAT, chat("@fake:claude_hang_mid_turn\nhi"))
                    )

                nursery.start_soon(request)
                stats = await server.wait_stats(
                    lambda s: any(w["state"] == "busy" for w in s["workers"])
                )
                victim = next(w["pid"] for w in stats["workers"] if w["state"] == "busy")
            assert responses[0].status_code == 504
            await finish(server)
            # the worker that served the hung turn is gone although it ignored SIGTERM
            assert not alive(victim)


async def test_claude_grandchild_dies_with_its_worker(tmp_path: Path) -> None:
    scenario = {"default": {"spawn_grandchild": True}}
    async with open_e2e_server(tmp_path, scenario=scenario) as server:
        with trio.fail_after(30):
            stats = await server.wait_stats(lambda s: s["idle"] >= 1)
            workers = {w["pid"] for w in stats["workers"]}
            while len(server.grandchild_pids()) < len(workers):  # noqa: ASYNC110
                await trio.sleep(0.02)  # the fake records its grandchild right after boot
            groups = {g: pgid_of(g) for g in server.grandchild_pids()}
            assert set(groups.values()) == workers  # one grandchild in each worker's group
            response = await post(server, CHAT, chat("@fake:claude_crash_mid_turn\nhi"))
            assert response.status_code == 502
            await finish(server)
            now = {w["pid"] for w in (await server.stats())["workers"]}
            crashed = workers - now
            assert len(crashed) == 1
            orphans = [g for g, group in groups.items() if group in crashed]
            assert orphans and not any(alive(g) for g in orphans)


# ------------------------------------------------------------------ upstream trouble


async def test_claude_upstream_429_retry_after_is_the_cli_delay(tmp_path: Path) -> None:
    """``retry_attempts=1``: clibridge gives up at the CLI's first retry and passes its
    announced delay on as Retry-After, instead of waiting it out."""
    async with open_e2e_server(tmp_path, claude={"retry_attempts": 1}) as server:
        with trio.fail_after(30):
            directive = {"api_error": 429, "api_retries": 5, "retry_delay_ms": 2500}
            t0 = trio.current_time()
            response = await post(server, CHAT, chat(f"@fake {json.dumps(directive)}\nhi"))
            assert trio.current_time() - t0 < 2  # did not sit through the CLI's back-off
            assert response.status_code == 429
            assert 2.5 <= float(response.headers["retry-after"]) <= 4
            await finish(server)


@pytest.mark.parametrize(("path", "expected"), [(CHAT, (503, 529)), ("/v1/messages", (529,))])
async def test_claude_upstream_529_overloaded(
    tmp_path: Path, path: str, expected: tuple[int, ...]
) -> None:
    body = chat("@fake:claude_overloaded\nhi")
    if path == "/v1/messages":
        body["max_tokens"] = 10
    async with open_e2e_server(tmp_path) as server:
        with trio.fail_after(30):
            response = await post(server, path, body)
            assert response.status_code in expected, response.text
            assert "overload" in response.text.lower()
            await finish(server)


# ------------------------------------------------------------------ the client goes away


async def test_claude_disconnect_during_queue_wait(tmp_path: Path) -> None:
    pool = attrs.evolve(FAST_POOL, workers=1, spares=0)
    async with open_e2e_server(tmp_path, pool=pool) as server:
        with trio.fail_after(30):
            slow = '@fake {"chunk_chars": 2, "chunk_delay": 0.05}\nhi'
            busy = await open_raw(server, chat(slow, stream=True))
            await read_until(busy, b"data:")
            waiting = await open_raw(server, chat("queued", stream=True))
            await server.wait_stats(lambda s: s["queued"] == 1)
            await waiting.aclose()
            await server.wait_stats(lambda s: s["queued"] == 0)
            await read_until(busy, b"[DONE]")
            await busy.aclose()
            stats = await finish(server)
        # the abandoned request never reached a worker
        assert not any("queued" in json.dumps(line) for line in server.stdin_lines())
        assert stats["in_flight"] == stats["parked"]


async def test_claude_disconnect_during_boot(tmp_path: Path) -> None:
    async with open_e2e_server(tmp_path, scenario={"default": {"boot_delay": 1.5}}) as server:
        with trio.fail_after(30):
            stream = await open_raw(server, chat("during-boot", stream=True))
            await server.wait_stats(lambda s: s["in_flight"] == 1 and s["booting"] >= 1)
            await stream.aclose()
            await server.wait_stats(lambda s: s["in_flight"] == s["parked"])
            await finish(server)
        assert not any("during-boot" in json.dumps(line) for line in server.stdin_lines())


async def test_claude_disconnect_during_initialize(tmp_path: Path) -> None:
    """The client leaves while the worker is being bound (``initialize`` in flight): the
    half-bound worker is retired, its process group killed, and capacity comes back."""
    scenario = {"default": {"initialize_delay": 1.0}}
    async with open_e2e_server(tmp_path, scenario=scenario) as server:
        with trio.fail_after(30):
            stream = await open_raw(server, chat("during-initialize", stream=True))
            while not any(  # noqa: ASYNC110 - the recording file has no event to wait on
                isinstance(line, dict) and line.get("request", {}).get("subtype") == "initialize"
                for line in server.stdin_lines()
            ):
                await trio.sleep(0.01)
            await stream.aclose()
            await server.wait_stats(lambda s: s["in_flight"] == 0)
            await finish(server)
        assert not any("during-initialize" in json.dumps(line) for line in server.stdin_lines())


async def test_claude_disconnect_while_streaming_cli_ignores_interrupt(tmp_path: Path) -> None:
    """The CLI does not acknowledge the interrupt: it is killed after the grace period."""
    pool = attrs.evolve(FAST_POOL, interrupt_grace=0.5)
    async with open_e2e_server(tmp_path, pool=pool) as server:
        with trio.fail_after(30):
            slow = (
                '@fake {"reply": "' + "z" * 400 + '", "chunk_chars": 2, "chunk_delay": 0.05,'
                ' "ignore_interrupt": true}\nhi'
            )
            stream = await open_raw(server, chat(slow, stream=True))
            await read_until(stream, b'"content":"zz"')
            victim = next(
                w["pid"] for w in (await server.stats())["workers"] if w["state"] == "busy"
            )
            await stream.aclose()
            await server.wait_stats(lambda s: s["in_flight"] == s["parked"], within=10)
            await finish(server)
            assert not alive(victim)


async def test_claude_disconnect_during_a_non_streaming_turn(tmp_path: Path) -> None:
    async with open_e2e_server(tmp_path) as server:
        with trio.fail_after(30):
            slow = '@fake {"reply": "' + "q" * 100 + '", "chunk_chars": 2, "chunk_delay": 0.05}\nhi'
            stream = await open_raw(server, chat(slow))
            # "busy" starts at checkout, before initialize: wait for the turn itself
            while not any(  # noqa: ASYNC110 - the recording file has no event to wait on
                isinstance(line, dict)
                and line.get("type") == "user"
                and "q" * 100 in json.dumps(line)
                for line in server.stdin_lines()
            ):
                await trio.sleep(0.01)
            await stream.aclose()
            await server.wait_stats(lambda s: s["in_flight"] == s["parked"], within=10)
            await finish(server)
        subtypes = [
            line.get("request", {}).get("subtype")
            for line in server.stdin_lines()
            if isinstance(line, dict) and line.get("type") == "control_request"
        ]
        assert "interrupt" in subtypes


async def test_claude_worn_out_workers_are_replaced(tmp_path: Path) -> None:
    """``max_turns`` retires a worker after its turns; its successor serves on, no leak."""
    pool = attrs.evolve(FAST_POOL, workers=1, spares=1, max_turns=2)
    async with open_e2e_server(tmp_path, pool=pool) as server:
        with trio.fail_after(30):
            for i in range(5):
                await server.assert_serves(f"conversation {i}")
            stats = await server.assert_clean()
        assert max(w["id"] for w in stats["workers"]) >= 3
        assert all(w["turns"] <= 2 for w in stats["workers"])
        assert len(server.cli_pids()) >= 3


async def test_claude_client_that_stops_reading_is_cut(tmp_path: Path) -> None:
    """A client that never reads its stream is cut after ``send_timeout``; the slot frees."""
    async with open_e2e_server(tmp_path, server={"send_timeout": 1.0}) as server:
        with trio.fail_after(30):
            host, port = server.base_url.removeprefix("http://").split(":")
            sock = trio.socket.socket()
            # a tiny receive window: the server's writes block after a few KB
            sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, 4096)
            await sock.connect((host, int(port)))
            stream = trio.SocketStream(sock)
            big = '@fake {"large_output": 4000000, "chunk_chars": 4000}\nhi'
            raw = json.dumps(chat(big, stream=True)).encode()
            await stream.send_all(
                f"POST {CHAT} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(raw)}\r\n\r\n".encode()
                + raw
            )
            await server.wait_stats(lambda s: any(w["state"] == "busy" for w in s["workers"]))
            t0 = trio.current_time()
            await server.wait_stats(lambda s: s["in_flight"] == s["parked"], within=20)
            assert trio.current_time() - t0 < 10
            # what was buffered arrives, then the connection ends without the stream's end
            received = bytearray()
            while chunk := await stream.receive_some(1 << 20):
                received += chunk
            assert b"data: [DONE]" not in received
            assert 0 < len(received) < 4_000_000
            await stream.aclose()
            await finish(server)


# ------------------------------------------------------------------ codex only


def fake(text: str = "hi", **fields: Any) -> str:
    return f"@fake {json.dumps(fields)}\n{text}"


async def codex_chat(server: E2EServer, content: str, **extra: Any) -> Any:
    body = {"model": CODEX, "messages": [{"role": "user", "content": content}], **extra}
    async with server.client() as client:
        return await client.post("/v1/chat/completions", json=body)


async def codex_serves(server: E2EServer) -> None:
    response = await codex_chat(server, fake(reply="still here"))
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "still here"


async def stream_chat(
    server: E2EServer, path: str, content: str, first_delta: trio.Event
) -> list[dict[str, Any]]:
    """A streaming request; sets ``first_delta`` when the client holds some content."""
    body: dict[str, Any] = {
        "model": CODEX,
        "stream": True,
        "messages": [{"role": "user", "content": content}],
    }
    if path == "/v1/messages":
        body["max_tokens"] = 64
    frames: list[dict[str, Any]] = []
    async with server.client() as client, client.stream("POST", path, json=body) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            frame = json.loads(line.removeprefix("data: "))
            frames.append(frame)
            if text_of(frame):
                first_delta.set()
    return frames


def text_of(frame: dict[str, Any]) -> str:
    """The content text one stream frame carries (chat completions or Anthropic)."""
    if frame.get("type") == "content_block_delta":
        return str(frame["delta"].get("text", ""))
    choices = frame.get("choices") or [{}]
    return str((choices[0].get("delta") or {}).get("content") or "")


async def test_codex_crash_retries_the_turns_without_output(tmp_path: Path) -> None:
    """Regression (issue 15, item 10): one codex app-server crash failed every request on
    that process (codex multiplexes threads per process). Now each turn that had produced no
    output yet runs once more on another process and succeeds -- also a stream whose
    headers already went out; a turn that had produced output gets a 502 (or, streaming, an
    error event) saying it was not retried; the turn that crashed the process gets its 502.
    """
    # spares=0 and one process with five threads: everything runs on the one that crashes;
    # keepalive 0.3 s: the waiting stream has sent its headers before the crash
    async with open_e2e_server(
        tmp_path,
        backend="codex",
        codex_settings={"threads_per_worker": 5},
        server={"keepalive_interval": 0.3},
    ) as server:
        with trio.fail_after(BOUND):
            await codex_serves(server)
            (first_pid,) = server.cli_pids()
            results: dict[str, Any] = {}
            streamed_delta = trio.Event()
            unused = trio.Event()

            async def waiting(name: str) -> None:  # no output until 4 s in
                results[name] = await codex_chat(
                    server, fake(reply=f"survivor {name}", first_delay=4)
                )

            async def waiting_stream() -> None:
                results["S"] = await stream_chat(
                    server, "/v1/messages", fake(reply="survivor S", first_delay=4), unused
                )

            async def started(name: str) -> None:  # one delta at once, then nothing for 20 s
                results[name] = await codex_chat(
                    server, fake(reply="abc", chunk_chars=1, chunk_delay=20)
                )

            async def started_stream() -> None:
                results["T"] = await stream_chat(
                    server,
                    "/v1/chat/completions",
                    fake(reply="abc", chunk_chars=1, chunk_delay=20),
                    streamed_delta,
                )

            async with trio.open_nursery() as nursery:
                nursery.start_soon(waiting, "A")
                nursery.start_soon(waiting_stream)
                nursery.start_soon(started, "C")
                await server.wait_stats(lambda s: s["in_flight"] == 3)
                nursery.start_soon(started_stream)
                await streamed_delta.wait()  # C started before T: it has its delta too
                await trio.sleep(0.2)
                crash = await codex_chat(server, fake(crash_mid_turn=True))
            assert crash.status_code == 502, crash.text
            assert "codex CLI exited" in crash.json()["error"]["message"]

            # no output yet: retried on the new process, answered in full
            assert results["A"].status_code == 200, results["A"].text
            assert results["A"].json()["choices"][0]["message"]["content"] == "survivor A"
            frames = results["S"]
            kinds = [f["type"] for f in frames]
            assert kinds.count("message_start") == 1 and kinds[-1] == "message_stop", kinds
            assert "".join(text_of(f) for f in frames) == "survivor S"
            # output already produced: a clear error, not retried
            error = results["C"].json()["error"]
            assert results["C"].status_code == 502, error
            assert "codex CLI exited" in error["message"]
            assert "had already produced output, so it was not retried" in error["message"]
            frames = results["T"]
            assert "".join(text_of(f) for f in frames) == "a"
            assert "not retried" in frames[-1]["error"]["message"]

            stats = await server.assert_full_capacity()
            assert stats["retried"] == 2
            assert not alive(first_pid)
            assert len(server.cli_pids()) == 2  # the crashed process and its replacement
            await codex_serves(server)


async def test_codex_a_retried_turn_is_not_retried_twice(tmp_path: Path) -> None:
    """Issue 15, item 10: the retry happens once; a turn whose second process crashes too
    gets a 502 that says it was already retried."""
    async with open_e2e_server(tmp_path, backend="codex") as server:
        with trio.fail_after(BOUND):
            await codex_serves(server)
            result: list[Any] = []

            async def waiting() -> None:
                result.append(await codex_chat(server, fake(reply="never", first_delay=20)))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(waiting)
                await server.wait_stats(lambda s: s["in_flight"] == 1)
                first = await codex_chat(server, fake(crash_mid_turn=True))
                assert first.status_code == 502, first.text
                await server.wait_stats(lambda s: s["retried"] == 1 and s["in_flight"] == 1)
                second = await codex_chat(server, fake(crash_mid_turn=True))
                assert second.status_code == 502, second.text
            (response,) = result
            assert response.status_code == 502, response.text
            message = response.json()["error"]["message"]
            assert "codex CLI exited" in message
            assert "it had already been retried once on another worker" in message
            stats = await server.assert_full_capacity(workers=0)
            assert stats["retried"] == 1
            pids = server.cli_pids()
            assert len(pids) == 2 and not any(alive(p) for p in pids)  # both crashed
            await codex_serves(server)


async def test_codex_server_requests_are_answered_and_the_turn_completes(tmp_path: Path) -> None:
    async with open_e2e_server(tmp_path, backend="codex") as server:
        with trio.fail_after(BOUND):
            for knob in ("approval_request", "unknown_server_request"):
                response = await codex_chat(server, fake("hi", reply="done", **{knob: True}))
                assert response.status_code == 200, response.text
                choice = response.json()["choices"][0]
                assert (choice["message"]["content"], choice["finish_reason"]) == ("done", "stop")
            await server.assert_full_capacity()
    answers = [
        f["stdin"]
        for f in server.facts()
        if isinstance(f.get("stdin"), dict) and "method" not in f["stdin"]
    ]
    assert answers[0]["result"] == {"decision": "decline"}
    assert answers[1]["error"]["code"] == -32601


async def test_codex_error_notifications_set_retry_after(tmp_path: Path) -> None:
    """A 429 says when to come back in whole seconds; an error notification's own hint
    ("try again in 20s") becomes Retry-After."""
    async with open_e2e_server(tmp_path, backend="codex") as server:
        with trio.fail_after(BOUND):
            limited = await codex_chat(server, fake(api_error=429))
            assert limited.status_code == 429, limited.text
            assert int(limited.headers["Retry-After"]) >= 1

            hinted = await codex_chat(
                server,
                fake(error_notification="rateLimitExceeded: Rate limit reached; try again in 20s"),
            )
            assert hinted.status_code == 429 and hinted.headers["Retry-After"] == "20"
            await server.assert_full_capacity()
            await codex_serves(server)
