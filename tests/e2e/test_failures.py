"""Failure scenarios through HTTP, each on its own server on the fake claude.

After every scenario: the pool reports nothing in flight, every worker it lists is alive,
no other CLI process (or grandchild) exists, and a follow-up request succeeds. Leaving the
server context then proves that nothing at all survived the shutdown.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from tests._procs import alive, pgid_of

from .conftest import (
    FAST_POOL,
    MODEL,
    E2EServer,
    open_e2e_server,
    open_raw,
    read_until,
)

CHAT = "/v1/chat/completions"


def chat(text: str, *, stream: bool = False) -> dict[str, Any]:
    return {"model": MODEL, "stream": stream, "messages": [{"role": "user", "content": text}]}


async def post(server: E2EServer, path: str, body: dict[str, Any]) -> Any:
    async with server.client() as client:
        return await client.post(path, json=body)


async def finish(server: E2EServer) -> dict[str, Any]:
    stats = await server.assert_clean()
    await server.assert_serves()
    return stats


# ------------------------------------------------------------------ the CLI misbehaves


async def test_crash_mid_turn_is_502(tmp_path: Path) -> None:
    async with open_e2e_server(tmp_path) as server:
        with trio.fail_after(30):
            response = await post(server, CHAT, chat("@fake:claude_crash_mid_turn\nhi"))
            assert response.status_code == 502
            error = response.json()["error"]
            assert "exited" in error["message"] and "code 3" in error["message"]
            stats = await finish(server)
        assert stats["crashes"] >= 1


async def test_hang_hits_turn_timeout_504(tmp_path: Path) -> None:
    pool = attrs.evolve(FAST_POOL, turn_timeout=1.5)
    async with open_e2e_server(tmp_path, pool=pool) as server:
        with trio.fail_after(30):
            t0 = trio.current_time()
            response = await post(server, CHAT, chat("@fake:claude_hang_mid_turn\nhi"))
            elapsed = trio.current_time() - t0
            assert response.status_code == 504, response.text
            assert 1.4 < elapsed < 5
            stats = await finish(server)
        assert stats["timeouts"] == 1


async def test_hang_while_streaming_ends_the_stream_with_an_error(tmp_path: Path) -> None:
    pool = attrs.evolve(FAST_POOL, turn_timeout=1.5)
    async with open_e2e_server(tmp_path, pool=pool) as server:
        with trio.fail_after(30):
            response = await post(server, CHAT, chat("@fake:claude_hang_mid_turn\nhi", stream=True))
            assert response.status_code == 200  # the stream had started
            assert '"error"' in response.text
            await finish(server)


async def test_slow_boot_waits_for_the_worker(tmp_path: Path) -> None:
    async with open_e2e_server(tmp_path, scenario={"default": {"boot_delay": 1.0}}) as server:
        with trio.fail_after(30):
            t0 = trio.current_time()
            response = await post(server, CHAT, chat("hi"))
            assert response.status_code == 200
            assert trio.current_time() - t0 > 0.5  # it really waited for the boot
            await finish(server)


async def test_boot_that_never_becomes_ready(tmp_path: Path) -> None:
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


async def test_crash_loop_at_boot_is_503_with_the_cli_stderr(tmp_path: Path) -> None:
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


async def test_garbage_line_frees_the_slot(tmp_path: Path) -> None:
    async with open_e2e_server(tmp_path) as server:
        with trio.fail_after(30):
            response = await post(server, CHAT, chat('@fake {"garbage_line": true}\nhi'))
            # a non-JSON line is either skipped (200) or a protocol error (502): never a hang
            assert response.status_code in (200, 502), response.text
            if response.status_code == 200:
                content = response.json()["choices"][0]["message"]["content"]
                assert content == "Hello from the fake CLI."
            await finish(server)


async def test_worker_ignoring_sigterm_is_killed(tmp_path: Path) -> None:
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


async def test_grandchild_dies_with_its_worker(tmp_path: Path) -> None:
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


async def test_upstream_401_is_503_with_the_fix(tmp_path: Path) -> None:
    claude = {"login_hint": "claude setup-token  (then set CLAUDE_CODE_OAUTH_TOKEN)"}
    async with open_e2e_server(tmp_path, claude=claude) as server:
        with trio.fail_after(30):
            t0 = trio.current_time()
            response = await post(server, CHAT, chat("@fake:claude_login_expired\nhi"))
            assert trio.current_time() - t0 < 5  # the fake would retry forever
            assert response.status_code == 503
            assert "claude setup-token" in response.json()["error"]["message"]
            assert "retry-after" in response.headers
            anthropic = await post(
                server,
                "/v1/messages",
                {
                    "model": MODEL,
                    "max_tokens": 10,
                    "messages": [{"role": "user", "content": "@fake:claude_login_expired\nhi"}],
                },
            )
            assert anthropic.status_code == 503
            assert anthropic.json()["type"] == "error"
            assert "claude setup-token" in anthropic.json()["error"]["message"]
            await finish(server)


async def test_upstream_429_is_429_with_retry_after(tmp_path: Path) -> None:
    async with open_e2e_server(tmp_path) as server:
        with trio.fail_after(30):
            response = await post(server, CHAT, chat("@fake:claude_rate_limited\nhi"))
            assert response.status_code == 429
            assert response.json()["error"]["type"] in ("rate_limit_error", "rate_limit_exceeded")
            assert float(response.headers["retry-after"]) > 0
            await finish(server)


async def test_upstream_429_retry_after_is_the_cli_delay(tmp_path: Path) -> None:
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
async def test_upstream_529_overloaded(
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


async def test_disconnect_during_queue_wait(tmp_path: Path) -> None:
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


async def test_disconnect_during_boot(tmp_path: Path) -> None:
    async with open_e2e_server(tmp_path, scenario={"default": {"boot_delay": 1.5}}) as server:
        with trio.fail_after(30):
            stream = await open_raw(server, chat("during-boot", stream=True))
            await server.wait_stats(lambda s: s["in_flight"] == 1 and s["booting"] >= 1)
            await stream.aclose()
            await server.wait_stats(lambda s: s["in_flight"] == s["parked"])
            await finish(server)
        assert not any("during-boot" in json.dumps(line) for line in server.stdin_lines())


async def test_disconnect_during_initialize(tmp_path: Path) -> None:
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


async def test_disconnect_while_streaming_interrupts(tmp_path: Path) -> None:
    async with open_e2e_server(tmp_path) as server:
        with trio.fail_after(30):
            slow = '@fake {"reply": "' + "z" * 200 + '", "chunk_chars": 2, "chunk_delay": 0.05}\nhi'
            stream = await open_raw(server, chat(slow, stream=True))
            await read_until(stream, b'"content":"zz"')
            await stream.aclose()
            await server.wait_stats(lambda s: s["in_flight"] == s["parked"], within=10)
            await finish(server)
        subtypes = [
            line.get("request", {}).get("subtype")
            for line in server.stdin_lines()
            if isinstance(line, dict) and line.get("type") == "control_request"
        ]
        assert "interrupt" in subtypes


async def test_disconnect_while_streaming_cli_ignores_interrupt(tmp_path: Path) -> None:
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


async def test_disconnect_during_a_non_streaming_turn(tmp_path: Path) -> None:
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


async def test_worn_out_workers_are_replaced(tmp_path: Path) -> None:
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


async def test_client_that_stops_reading_is_cut(tmp_path: Path) -> None:
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
