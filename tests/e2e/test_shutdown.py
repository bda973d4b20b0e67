"""``clibridge serve`` as a real subprocess: graceful SIGTERM drain, and SIGKILL with the
janitor cleaning up after it. Every CLI process is known by pid from the fake's record."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

from tests._procs import alive, children_of, cmdline, read_record, wait_gone

from .conftest import MODEL

_LISTENING = re.compile(rb"clibridge is listening on (http://[\d.]+:\d+)")


@attrs.define
class ServeProcess:
    process: trio.Process
    base_url: str
    record: Path
    stderr: bytearray

    def cli_pids(self) -> set[int]:
        pids = set()
        for fact in read_record(self.record):
            if "argv" in fact and "pid" in fact:
                pids.add(int(fact["pid"]))
            if "grandchild_pid" in fact:
                pids.add(int(fact["grandchild_pid"]))
        return pids

    def janitor(self) -> int:
        (pid,) = [p for p in children_of(self.process.pid) if "clibridge._janitor" in cmdline(p)]
        return pid

    async def stats(self) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=self.base_url) as client:
            response = await client.get("/v1/stats")
        stats: dict[str, Any] = response.json()["service"]["claude"]
        return stats


@asynccontextmanager
async def serve_process(
    tmp: Path, *args: str, scenario: dict[str, Any] | None = None
) -> AsyncIterator[ServeProcess]:
    record = tmp / "record.jsonl"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp),
        "CLIBRIDGE_FAKE_RECORD": str(record),
    }
    if scenario is not None:
        (tmp / "scenario.json").write_text(json.dumps(scenario))
        env["CLIBRIDGE_FAKE_SCENARIO"] = str(tmp / "scenario.json")
    argv = [sys.executable, "-m", "clibridge", "serve", "--backend", "fake", "--port", "0"]
    argv += ["--state-dir", str(tmp / "state"), "--workers", "2", "--spares", "1", *args]
    process = await trio.lowlevel.open_process(
        argv, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env, start_new_session=True
    )
    stderr = bytearray()
    try:
        async with trio.open_nursery() as nursery:
            assert process.stderr is not None
            found = trio.Event()

            async def pump() -> None:
                assert process.stderr is not None
                async for chunk in process.stderr:
                    stderr.extend(chunk)
                    if _LISTENING.search(stderr):
                        found.set()

            nursery.start_soon(pump)
            with trio.fail_after(30):
                while not found.is_set():
                    if process.poll() is not None:
                        raise AssertionError(f"serve exited early: {stderr.decode()}")
                    with trio.move_on_after(0.1):
                        await found.wait()
            match = _LISTENING.search(stderr)
            assert match is not None
            yield ServeProcess(process, match.group(1).decode(), record, stderr)
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            if process.poll() is None:
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
            await process.wait()


CHAT_BODY = {
    "model": MODEL,
    "stream": True,
    "stream_options": {"include_usage": True},
    "messages": [
        {
            "role": "user",
            "content": '@fake {"reply": "' + "ab" * 15 + '", "chunk_chars": 2, "chunk_delay": 0.1}',
        }
    ],
}


async def test_sigterm_drains_the_stream_and_exits_zero(tmp_path: Path) -> None:
    async with serve_process(tmp_path, "--drain-timeout", "10") as server:
        with trio.fail_after(40):
            janitor = server.janitor()
            lines: list[str] = []
            async with (
                httpx.AsyncClient(base_url=server.base_url, timeout=30) as client,
                client.stream("POST", "/v1/chat/completions", json=CHAT_BODY) as response,
            ):
                assert response.status_code == 200
                async for line in response.aiter_lines():
                    if not line:
                        continue
                    lines.append(line)
                    if len(lines) == 2:  # role chunk + first delta: the turn runs
                        server.process.send_signal(signal.SIGTERM)
            code = await server.process.wait()
            assert code == 0, server.stderr.decode()
            # the in-flight stream finished: all of it, a finish reason, usage, [DONE]
            assert lines[-1] == "data: [DONE]"
            chunks = [json.loads(line[len("data: ") :]) for line in lines[:-1]]
            text = "".join(
                c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]
            )
            assert text == "ab" * 15
            assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
            assert chunks[-1]["usage"]["completion_tokens"] > 0
            pids = server.cli_pids()
            assert pids
            await wait_gone(pids | {janitor}, within=5)


async def test_sigterm_with_a_short_drain_still_ends_the_stream(tmp_path: Path) -> None:
    """A turn longer than ``drain_timeout``: the stream still ends with a final event
    (not a cut-off chunked body) and the process exits 0."""
    body = json.loads(json.dumps(CHAT_BODY))
    body["messages"][0]["content"] = (
        '@fake {"reply": "' + "ab" * 100 + '", "chunk_chars": 2, "chunk_delay": 0.1}'
    )
    async with serve_process(tmp_path, "--drain-timeout", "0.5") as server:
        with trio.fail_after(40):
            janitor = server.janitor()
            lines: list[str] = []
            async with (
                httpx.AsyncClient(base_url=server.base_url, timeout=30) as client,
                client.stream("POST", "/v1/chat/completions", json=body) as response,
            ):
                async for line in response.aiter_lines():
                    if not line:
                        continue
                    lines.append(line)
                    if len(lines) == 2:
                        server.process.send_signal(signal.SIGTERM)
            assert await server.process.wait() == 0
            assert lines[-1] == "data: [DONE]", lines[-3:]
            final = json.loads(lines[-2][len("data: ") :])
            assert final.get("error") or final.get("usage") or final["choices"][0]["finish_reason"]
            await wait_gone(server.cli_pids() | {janitor}, within=5)


async def test_sigkill_leaves_no_process(tmp_path: Path) -> None:
    scenario = {"default": {"spawn_grandchild": True}}
    async with serve_process(tmp_path, "--spares", "2", scenario=scenario) as server:
        with trio.fail_after(40):
            janitor = server.janitor()
            # both workers busy with a turn when the server dies
            async with (
                httpx.AsyncClient(base_url=server.base_url, timeout=30) as client,
                trio.open_nursery() as nursery,
            ):
                for _ in range(2):
                    nursery.start_soon(_stream_until_killed, client, server)
                while True:
                    # both turns running, and every fake has recorded itself and its grandchild
                    stats = await server.stats()
                    facts = read_record(server.record)
                    spawned = {int(f["pid"]) for f in facts if "argv" in f}
                    grandchildren = {
                        int(f["grandchild_pid"]) for f in facts if "grandchild_pid" in f
                    }
                    workers = {w["pid"] for w in stats["workers"]}
                    busy = sum(w["state"] == "busy" for w in stats["workers"])
                    if busy == 2 and workers <= spawned and len(grandchildren) == len(spawned):
                        break
                    await trio.sleep(0.05)
                assert len(grandchildren) >= 2
                assert all(alive(p) for p in workers | grandchildren)
                os.kill(server.process.pid, signal.SIGKILL)
                await server.process.wait()
            # the janitor saw the pipe close and killed every worker group
            await wait_gone(server.cli_pids() | {janitor}, within=5)


async def _stream_until_killed(client: httpx.AsyncClient, server: ServeProcess) -> None:
    body = json.loads(json.dumps(CHAT_BODY))
    body["messages"][0]["content"] = (
        '@fake {"reply": "' + "ab" * 200 + '", "chunk_chars": 2, "chunk_delay": 0.1}'
    )
    with suppress(httpx.HTTPError):
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            async for _line in response.aiter_lines():
                pass
