"""The recording proxy in front of the whole server on the fake claude (no OpenClaw needed)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import httpx
import trio

from clibridge.testing.recording_proxy import open_recording_proxy
from clibridge.testing.scenario import directive
from tests.e2e.conftest import MODEL, open_e2e_server, read_until


def _chat(text: str, *, stream: bool) -> dict[str, object]:
    return {"model": MODEL, "stream": stream, "messages": [{"role": "user", "content": text}]}


async def test_records_json_and_sse_and_passes_them_through(tmp_path: Path) -> None:
    record = tmp_path / "traffic.jsonl"
    async with (
        open_e2e_server(tmp_path / "server") as server,
        open_recording_proxy(server.base_url, record=record) as proxy,
        httpx.AsyncClient(base_url=proxy.base_url, timeout=30) as client,
    ):
        streamed = await client.post(
            "/v1/chat/completions",
            json=_chat(f"hi\n{directive(reply='streamed through', chunk_chars=3)}", stream=True),
            headers={"authorization": "Bearer sk-secret", "x-api-key": "sk-other-secret"},
        )
        plain = await client.post(
            "/v1/messages?beta=true",
            json={"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": "x"}]},
        )
        missing = await client.get("/v1/no-such-route")
        await server.assert_clean()
    assert streamed.status_code == 200 and plain.status_code == 200
    assert streamed.headers["content-type"].startswith("text/event-stream")
    assert streamed.text.endswith("data: [DONE]\n\n")
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    assert [(x["seq"], x["method"], x["path"]) for x in lines] == [
        (1, "POST", "/v1/chat/completions"),
        (2, "POST", "/v1/messages?beta=true"),
        (3, "GET", "/v1/no-such-route"),
    ]
    sse, message, not_found = lines
    # the request body as sent, the SSE stream byte for byte as the client got it
    assert sse["request"] == _chat(
        f"hi\n{directive(reply='streamed through', chunk_chars=3)}", stream=True
    )
    assert sse["response"] is None and sse["response_text"] == streamed.text
    assert sse["status"] == 200 and sse["error"] is None
    assert message["response"] == plain.json()
    assert not_found["status"] == missing.status_code == 404
    # secrets never reach the record
    raw = record.read_text()
    assert "sk-secret" not in raw and "sk-other-secret" not in raw
    assert "authorization" not in sse["headers"] and "x-api-key" not in sse["headers"]
    assert [x.seq for x in proxy.exchanges] == [1, 2, 3]


async def test_client_hanging_up_mid_stream_is_recorded_and_reaches_the_server(
    tmp_path: Path,
) -> None:
    async with (
        open_e2e_server(tmp_path / "server") as server,
        open_recording_proxy(server.base_url, max_response_bytes=64) as proxy,
    ):
        body = json.dumps(
            _chat(f"{directive(reply='x' * 200, chunk_chars=1, chunk_delay=0.05)}\nhi", stream=True)
        ).encode()
        stream = await trio.open_tcp_stream("127.0.0.1", int(proxy.base_url.rsplit(":", 1)[1]))
        await stream.send_all(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await read_until(stream, b'"content":"x"')
        await stream.aclose()
        with trio.fail_after(10):
            await proxy.wait_for_exchanges(1)
        # the server saw the hang-up too: its worker comes back
        await server.assert_clean()
    (exchange,) = proxy.exchanges
    assert exchange.error == "client disconnected"
    assert exchange.response_text is not None
    assert exchange.response_text.startswith("<") and "dropped (limit 64)" in exchange.response_text


async def test_unreachable_upstream_is_a_502(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    async with (
        open_recording_proxy(f"http://127.0.0.1:{port}", record=tmp_path / "r.jsonl") as proxy,
        httpx.AsyncClient(base_url=proxy.base_url) as client,
    ):
        response = await client.post("/v1/chat/completions", json=_chat("hi", stream=False))
    assert response.status_code == 502
    (line,) = (tmp_path / "r.jsonl").read_text().splitlines()
    recorded = json.loads(line)
    assert recorded["status"] == 502 and recorded["error"].startswith("upstream unreachable")


async def test_settled_returns_every_exchange_a_client_got_its_answer_to(tmp_path: Path) -> None:
    """``settled()`` waits for the recording of every request the proxy read: a client that
    exits at its last byte must not lose its last exchange (``cn`` in CI)."""
    async with (
        open_e2e_server(tmp_path / "server") as server,
        open_recording_proxy(server.base_url) as proxy,
        httpx.AsyncClient(base_url=proxy.base_url, timeout=30) as client,
    ):
        for i in range(3):
            reply = await client.post(
                "/v1/chat/completions", json=_chat(f"turn {i}", stream=i % 2 == 0)
            )
            assert reply.status_code == 200
        with trio.fail_after(10):
            settled = await proxy.settled()
        assert [x.seq for x in settled] == [1, 2, 3]
        assert all(x.status == 200 and x.error is None for x in settled)
