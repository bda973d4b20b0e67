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

from tests._procs import alive

from .conftest import BOUND, CODEX_POOL, CodexServer, open_codex_server

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


async def stream_chat(
    server: CodexServer, path: str, content: str, first_delta: trio.Event
) -> list[dict[str, Any]]:
    """A streaming request; sets ``first_delta`` when the client holds some content."""
    body: dict[str, Any] = {
        "model": MODEL,
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


async def test_crash_retries_the_turns_without_output(tmp_path: Path) -> None:
    """Regression (issue 15, item 10): one codex app-server crash failed every request on
    that process (codex multiplexes threads per process). Now each turn that had produced no
    output yet runs once more on another process and succeeds -- also a stream whose
    headers already went out; a turn that had produced output gets a 502 (or, streaming, an
    error event) saying it was not retried; the turn that crashed the process gets its 502.
    """
    # spares=0 and one process with five threads: everything runs on the one that crashes;
    # keepalive 0.3 s: the waiting stream has sent its headers before the crash
    async with open_codex_server(
        tmp_path, threads_per_worker=5, server={"keepalive_interval": 0.3}
    ) as server:
        with trio.fail_after(BOUND):
            await assert_serves(server)
            (first_pid,) = server.cli_pids()
            results: dict[str, Any] = {}
            streamed_delta = trio.Event()
            unused = trio.Event()

            async def waiting(name: str) -> None:  # no output until 4 s in
                results[name] = await chat(server, fake(reply=f"survivor {name}", first_delay=4))

            async def waiting_stream() -> None:
                results["S"] = await stream_chat(
                    server, "/v1/messages", fake(reply="survivor S", first_delay=4), unused
                )

            async def started(name: str) -> None:  # one delta at once, then nothing for 20 s
                results[name] = await chat(server, fake(reply="abc", chunk_chars=1, chunk_delay=20))

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
                crash = await chat(server, fake(crash_mid_turn=True))
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
            await assert_serves(server)


async def test_a_retried_turn_is_not_retried_twice(tmp_path: Path) -> None:
    """Issue 15, item 10: the retry happens once; a turn whose second process crashes too
    gets a 502 that says it was already retried."""
    async with open_codex_server(tmp_path) as server:
        with trio.fail_after(BOUND):
            await assert_serves(server)
            result: list[Any] = []

            async def waiting() -> None:
                result.append(await chat(server, fake(reply="never", first_delay=20)))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(waiting)
                await server.wait_stats(lambda s: s["in_flight"] == 1)
                first = await chat(server, fake(crash_mid_turn=True))
                assert first.status_code == 502, first.text
                await server.wait_stats(lambda s: s["retried"] == 1 and s["in_flight"] == 1)
                second = await chat(server, fake(crash_mid_turn=True))
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
            await assert_serves(server)


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
                response = await chat(server, fake("hi", reply="done", **{knob: True}))
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
