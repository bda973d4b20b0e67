"""Failure paths through HTTP on the fake codex (one worker, four threads).

After each: full capacity comes back and no codex process is left but the pool's worker
(:meth:`CodexServer.assert_full_capacity`; leaving the server checks that none is left).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import trio

from .conftest import BOUND, CODEX_POOL, CodexServer, alive, open_codex_server

MODEL = "gpt-5.5"


def fake(text: str = "hi", **fields: Any) -> str:
    return f"@fake {json.dumps(fields)}\n{text}"


async def chat(server: CodexServer, content: str, **extra: Any) -> Any:
    body = {"model": MODEL, "messages": [{"role": "user", "content": content}], **extra}
    async with server.client() as client:
        return await client.post("/v1/chat/completions", json=body)


async def assert_serves(server: CodexServer) -> None:
    response = await chat(server, fake(reply="still here"))
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "still here"


async def test_crash_with_requests_in_flight(tmp_path: Path) -> None:
    # spares=0: with a spare the pool would spread the leases over two processes
    async with open_codex_server(tmp_path) as server:
        with trio.fail_after(BOUND):
            await assert_serves(server)
            (first_pid,) = server.cli_pids()
            statuses: list[int] = []

            async def slow() -> None:
                response = await chat(server, fake(first_delay=20))
                statuses.append(response.status_code)
                assert "codex CLI exited" in response.json()["error"]["message"]

            async with trio.open_nursery() as nursery:
                for _ in range(2):
                    nursery.start_soon(slow)
                await server.wait_stats(lambda s: s["in_flight"] == 2)
                crash = await chat(server, fake(crash_mid_turn=True))
                assert crash.status_code == 502, crash.text
            assert statuses == [502, 502]
            # no spares: the replacement boots for the next request
            stats = await server.assert_full_capacity(workers=0)
            assert stats["crashes"] == 1
            assert not alive(first_pid)
            await assert_serves(server)
            await server.assert_full_capacity()


async def test_hang_times_out_with_504(tmp_path: Path) -> None:
    pool = attrs.evolve(CODEX_POOL, turn_timeout=1.5)
    async with open_codex_server(tmp_path, pool=pool) as server:
        with trio.fail_after(BOUND):
            response = await chat(server, fake(hang_mid_turn=True))
            assert response.status_code == 504, response.text
            assert "turn_timeout" in response.json()["error"]["message"]
            await server.assert_full_capacity()
            assert server.sent("turn/interrupt"), "the hung turn was not interrupted"
            await assert_serves(server)


async def test_server_requests_are_answered_and_the_turn_completes(tmp_path: Path) -> None:
    async with open_codex_server(tmp_path) as server:
        with trio.fail_after(BOUND):
            for knob in ("approval_request", "unknown_server_request"):
                response = await chat(server, fake(reply="done", **{knob: True}))
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


async def test_error_notifications_map_to_http_errors(tmp_path: Path) -> None:
    async with open_codex_server(tmp_path) as server:
        with trio.fail_after(BOUND):
            login = await chat(server, fake(api_error=401))
            assert login.status_code == 503, login.text
            assert "clibridge login codex" in login.json()["error"]["message"]

            limited = await chat(server, fake(api_error=429))
            assert limited.status_code == 429, limited.text
            assert int(limited.headers["Retry-After"]) >= 1

            hinted = await chat(
                server,
                fake(error_notification="rateLimitExceeded: Rate limit reached; try again in 20s"),
            )
            assert hinted.status_code == 429 and hinted.headers["Retry-After"] == "20"

            streamed = await chat(server, fake(api_error=401), stream=True)
            # the error comes before any byte of the stream: a plain HTTP error
            assert streamed.status_code == 503 and "clibridge login codex" in streamed.text
            await server.assert_full_capacity()
            await assert_serves(server)


async def test_client_disconnect_interrupts_the_turn(tmp_path: Path) -> None:
    async with open_codex_server(tmp_path) as server:
        with trio.fail_after(BOUND):
            body = {
                "model": MODEL,
                "stream": True,
                "messages": [{"role": "user", "content": fake(chunk_chars=1, chunk_delay=0.2)}],
            }
            # a bare TCP stream: the test hangs up exactly when it wants
            host, port = server.base_url.removeprefix("http://").split(":")
            raw = json.dumps(body).encode()
            async with await trio.open_tcp_stream(host, int(port)) as stream:
                await stream.send_all(
                    f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(raw)}\r\n\r\n".encode()
                    + raw
                )
                got = b""
                while b'"content"' not in got:
                    chunk = await stream.receive_some(65536)
                    assert chunk, got
                    got += chunk
                assert got.startswith(b"HTTP/1.1 200")
            await server.assert_full_capacity()
            (interrupt,) = server.sent("turn/interrupt")
            (start,) = server.sent("turn/start")
            assert interrupt["params"]["threadId"] == start["params"]["threadId"]
            await assert_serves(server)
