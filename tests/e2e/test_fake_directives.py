"""A server on the fake CLIs answers a bad ``@fake`` directive with a 400 in the client's
dialect, naming what is wrong, and caps what a directive may make a fake print.

Regression (issue 15, item 8): a malformed ``@fake`` line crashed the fake worker (exit -6)
and the client got a 502; ``large_output`` had no bound (one request drove a fake to
1.15 GB). Both the claude fake the server falls back to when it finds no login and the
fake codex are covered; no worker may die of it (``crashes`` stays 0, the same processes
serve the next request).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from clibridge._config import Config
from clibridge._supervisor import FAKE_CODEX_COMMAND, choose_backends
from clibridge.testing.scenario import MAX_LARGE_OUTPUT

from .conftest import CODEX_MODEL, MODEL, E2EServer, open_e2e_server

#: (directive line, what the 400 must say)
BAD = [
    ('@fake {"chunk_char": 2}', "unknown field 'chunk_char'"),
    ("@fake {not json", "`@fake {JSON object}` or `@fake:NAME`"),
    ('@fake {"echo": "yes"}', "echo must be true or false"),
    ("@fake:no_such_scenario", "unknown fake scenario 'no_such_scenario'"),
    (
        '@fake {"large_output": 1150000000}',
        f"large_output is 1150000000; allowed 0..{MAX_LARGE_OUTPUT}",
    ),
]


def body(dialect: str, model: str, text: str, *, stream: bool = False) -> dict[str, Any]:
    if dialect == "/v1/responses":
        return {"model": model, "input": text, "stream": stream}
    messages = [{"role": "user", "content": text}]
    if dialect == "/v1/messages":
        return {"model": model, "max_tokens": 64, "messages": messages, "stream": stream}
    return {"model": model, "messages": messages, "stream": stream}


def error_of(dialect: str, response: Any) -> tuple[str, str]:
    """``(type, message)`` of an error response in ``dialect``'s envelope."""
    data = response.json()
    if dialect == "/v1/messages":
        assert data["type"] == "error", data
    error = data["error"]
    return error["type"], error["message"]


async def assert_refused(server: E2EServer, model: str) -> None:
    async with server.client() as client:
        for n, (line, problem) in enumerate(BAD):
            for dialect in ("/v1/chat/completions", "/v1/responses", "/v1/messages"):
                stream = n % 2 == 1  # an error before any content keeps its status
                response = await client.post(
                    dialect, json=body(dialect, model, f"{line}\nhi", stream=stream)
                )
                assert response.status_code == 400, (dialect, line, response.text)
                kind, message = error_of(dialect, response)
                assert kind == "invalid_request_error"
                assert problem in message, message
        # at the cap: served, and what streams is bounded
        ok = await client.post(
            "/v1/chat/completions",
            json=body(
                "/v1/chat/completions", model, f'@fake {{"large_output": {MAX_LARGE_OUTPUT}}}\nhi'
            ),
        )
        assert ok.status_code == 200, ok.text
        assert len(ok.json()["choices"][0]["message"]["content"]) >= MAX_LARGE_OUTPUT


async def test_fallback_fake_claude_answers_bad_directives_with_400(tmp_path: Path) -> None:
    # what `clibridge serve` picks on a machine with neither CLI logged in: the fake claude
    empty = tmp_path / "empty-path"
    empty.mkdir()
    choice = choose_backends(Config(backend="auto"), {"PATH": str(empty), "HOME": str(tmp_path)})
    assert choice.fake and list(choice.commands) == ["claude"]
    async with open_e2e_server(tmp_path, command=choice.commands["claude"]) as server:
        with trio.fail_after(90):
            # booted first: a stream whose worker is still booting starts before its error
            await server.wait_stats(lambda s: s["idle"] >= 1)
            await assert_refused(server, MODEL)
            stats = await server.assert_clean()
            assert stats["crashes"] == 0 and stats["restarts"] == 0
            await server.assert_serves()


async def test_fake_codex_answers_bad_directives_with_400(tmp_path: Path) -> None:
    async with open_e2e_server(tmp_path, codex=FAKE_CODEX_COMMAND) as server:
        server.backend = "codex"
        with trio.fail_after(90):
            before = await server.wait_stats(lambda s: s["idle"] >= 1)
            pids = {w["pid"] for w in before["workers"]}
            await assert_refused(server, CODEX_MODEL)
            stats = await server.assert_clean()
            assert stats["crashes"] == 0 and stats["restarts"] == 0
            assert pids <= {w["pid"] for w in stats["workers"]}  # the same processes serve
