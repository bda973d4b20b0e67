"""The request ledger against the whole server: its rows say what the official SDKs were
told (tokens, status, request id), in every dialect, streaming or not, on both fake CLIs;
and a SIGKILL of ``clibridge serve`` in the middle of its writes loses no committed row."""

from __future__ import annotations

import signal
import sqlite3
import time
import uuid
from pathlib import Path

import anthropic
import attrs
import openai
import pytest
import trio

from clibridge._ledger import Ledger, ledger_path

from .conftest import BOUND, Backend, E2EServer, open_e2e_server
from .test_sdks import FAKE_MODELS, INPUT_TOKENS, OUTPUT_TOKENS, TEXT, Flavor
from .test_shutdown import serve_process

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    # Why: openai's AsyncStream breaks out of its own SSE generators at ``[DONE]`` without
    # closing them; trio reports that at GC time (as in test_sdks).
    pytest.mark.filterwarnings("ignore:Async generator:ResourceWarning"),
]


@attrs.frozen
class Seen:
    """What an SDK was told about one request."""

    request_id: str
    dialect: str
    stream: bool
    status: int
    input_tokens: int | None
    output_tokens: int | None


def _rid() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


async def _openai_requests(server: E2EServer, flavor: Flavor) -> list[Seen]:
    seen: list[Seen] = []
    async with openai.AsyncOpenAI(
        api_key="unused", base_url=server.v1, max_retries=0, timeout=30
    ) as oai:
        # the server's own id, as the SDK read it from the response
        raw = await oai.chat.completions.with_raw_response.create(
            model=flavor.model, messages=flavor.messages
        )
        completion = raw.parse()
        assert completion.choices[0].message.content == TEXT
        assert completion.usage is not None
        seen.append(
            Seen(
                raw.headers["x-request-id"],
                "openai_chat",
                False,
                raw.status_code,
                completion.usage.prompt_tokens,
                completion.usage.completion_tokens,
            )
        )
        rid = _rid()
        stream = await oai.chat.completions.create(
            model=flavor.model,
            messages=flavor.messages,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"X-Request-Id": rid},
        )
        chunks = [c async for c in stream]
        usage = chunks[-1].usage
        assert usage is not None
        seen.append(
            Seen(rid, "openai_chat", True, 200, usage.prompt_tokens, usage.completion_tokens)
        )
        rid = _rid()
        response = await oai.responses.create(
            model=flavor.model, input=flavor.prompt, extra_headers={"X-Request-Id": rid}
        )
        assert response.output_text == TEXT and response.usage is not None
        seen.append(
            Seen(
                rid,
                "openai_responses",
                False,
                200,
                response.usage.input_tokens,
                response.usage.output_tokens,
            )
        )
        rid = _rid()
        async with oai.responses.stream(
            model=flavor.model, input=flavor.prompt, extra_headers={"X-Request-Id": rid}
        ) as resp_stream:
            async for _event in resp_stream:
                pass
            final = await resp_stream.get_final_response()
        assert final.usage is not None
        seen.append(
            Seen(
                rid,
                "openai_responses",
                True,
                200,
                final.usage.input_tokens,
                final.usage.output_tokens,
            )
        )
        # an error: the SDK's exception carries the status and the request id
        rid = _rid()
        with pytest.raises(openai.NotFoundError) as caught:
            await oai.chat.completions.create(
                model="no-such-model",
                messages=flavor.messages,
                extra_headers={"X-Request-Id": rid},
            )
        assert caught.value.response.headers["x-request-id"] == rid
        seen.append(Seen(rid, "openai_chat", False, caught.value.status_code, None, None))
    return seen


async def _anthropic_requests(server: E2EServer, flavor: Flavor) -> list[Seen]:
    seen: list[Seen] = []
    async with anthropic.AsyncAnthropic(
        api_key="unused", base_url=server.base_url, max_retries=0, timeout=30
    ) as ant:
        rid = _rid()
        message = await ant.messages.create(
            model=flavor.model,
            max_tokens=100,
            messages=flavor.messages,
            extra_headers={"X-Request-Id": rid},
        )
        assert message.stop_reason == "end_turn"
        seen.append(
            Seen(
                rid,
                "anthropic_messages",
                False,
                200,
                message.usage.input_tokens,
                message.usage.output_tokens,
            )
        )
        rid = _rid()
        async with ant.messages.stream(
            model=flavor.model,
            max_tokens=100,
            messages=flavor.messages,
            extra_headers={"X-Request-Id": rid},
        ) as msg_stream:
            "".join([t async for t in msg_stream.text_stream])
            final = await msg_stream.get_final_message()
        seen.append(
            Seen(
                rid,
                "anthropic_messages",
                True,
                200,
                final.usage.input_tokens,
                final.usage.output_tokens,
            )
        )
    return seen


async def _rows(ledger: Ledger, ids: list[str]) -> dict[str, dict[str, object]]:
    """The ledger rows of ``ids`` (they are written moments after each response)."""
    rows: dict[str, dict[str, object]] = {}
    with trio.fail_after(10):
        while len(rows) < len(ids):
            for rid in ids:
                if rid not in rows and (row := ledger.get(rid)) is not None:
                    rows[rid] = row
            await trio.sleep(0.05)
    return rows


@pytest.mark.parametrize("backend", list(FAKE_MODELS))
async def test_ledger_rows_equal_what_the_sdks_received(tmp_path: Path, backend: Backend) -> None:
    flavor = Flavor.fake(FAKE_MODELS[backend])
    async with open_e2e_server(tmp_path, backend=backend) as server:
        with trio.fail_after(BOUND):
            seen = await _openai_requests(server, flavor)
            seen += await _anthropic_requests(server, flavor)
        stats = await server.assert_clean()
        ledger = Ledger(ledger_path(tmp_path / "state"))
        rows = await _rows(ledger, [s.request_id for s in seen])
    pids = {w["pid"] for w in stats["workers"]}
    for s in seen:
        row = rows[s.request_id]
        label = f"{backend} {s}"
        assert row["status"] == s.status, label
        assert (row["input_tokens"], row["output_tokens"]) == (
            s.input_tokens,
            s.output_tokens,
        ), label
        assert row["dialect"] == s.dialect and row["stream"] is s.stream, label
        assert row["model_asked"] == ("no-such-model" if s.status == 404 else flavor.model)
        if s.status != 200:
            assert row["error_type"] == "model_not_found" and row["backend"] is None, label
            continue
        assert (s.input_tokens, s.output_tokens) == (INPUT_TOKENS, OUTPUT_TOKENS), label
        assert row["error_type"] is None, label
        assert row["backend"] == backend, label
        assert row["cli_model"], label
        assert row["pid"] in pids, label
        assert row["worker_id"] is not None, label
        queue_wait, ttfc, duration = row["queue_wait_s"], row["ttfc_s"], row["duration_s"]
        assert isinstance(queue_wait, float) and isinstance(ttfc, float), label
        assert isinstance(duration, float) and 0 <= queue_wait < duration, label
        assert 0 < ttfc <= duration, label
    # every request of the test, and nothing else but the harness's /v1/stats polls
    recent = ledger.recent(100)
    assert {r["request_id"] for r in recent if r["endpoint"] != "/v1/stats"} == {
        s.request_id for s in seen
    }
    usage = ledger.usage(3600, "model")
    by_model = {u["model"]: u for u in usage}
    served = [s for s in seen if s.status == 200]
    assert sum(int(str(u["input_tokens"])) for u in usage) == INPUT_TOKENS * len(served)
    assert "no-such-model" in by_model


def _committed(path: Path) -> set[str]:
    """The request ids committed so far, read by another process's connection."""
    conn = sqlite3.connect(path, timeout=5)
    try:
        return {row[0] for row in conn.execute("SELECT request_id FROM requests")}
    finally:
        conn.close()


async def test_sigkill_during_writes_loses_no_committed_row(tmp_path: Path) -> None:
    path = ledger_path(tmp_path / "state")
    seen: set[str] = set()
    answered = 0
    async with (
        serve_process(tmp_path, "--workers", "2", "--max-queue", "64") as server,
        trio.open_nursery() as nursery,
    ):

        async def client(n: int) -> None:
            nonlocal answered
            async with openai.AsyncOpenAI(
                api_key="unused", base_url=server.base_url + "/v1", max_retries=0, timeout=10
            ) as oai:
                while True:
                    try:
                        await oai.chat.completions.create(
                            model="claude-sonnet-4-5",
                            messages=[{"role": "user", "content": f"client {n}"}],
                        )
                        answered += 1
                    except openai.APIConnectionError:
                        return  # the server is gone

        for n in range(4):
            nursery.start_soon(client, n)
        with trio.fail_after(BOUND):
            while len(seen) < 40:
                if path.exists():
                    seen = await trio.to_thread.run_sync(_committed, path)
                await trio.sleep(0.05)
        # requests keep coming: kill the server in the middle of its writes
        server.process.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        await server.process.wait()
        nursery.cancel_scope.deadline = trio.current_time() + 15
    assert time.monotonic() - killed_at < 15
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        after = {row[0] for row in conn.execute("SELECT request_id FROM requests")}
        statuses = {row[0] for row in conn.execute("SELECT DISTINCT status FROM requests")}
    finally:
        conn.close()
    assert seen <= after, f"committed rows lost: {sorted(seen - after)[:5]}"
    assert len(after) >= len(seen) >= 40
    assert statuses == {200}
    # rows are written after the answer went out: at most the 4 in flight not yet counted
    assert answered >= len(seen) - 4


async def test_a_continued_turn_is_marked_with_its_worker(tmp_path: Path) -> None:
    """The second turn of a conversation resumes the parked worker: the row says so (claude:
    its finished conversations are parked from the first one)."""
    model = FAKE_MODELS["claude"]
    async with open_e2e_server(tmp_path, backend="claude") as server:
        history: list[dict[str, str]] = [{"role": "user", "content": "first question"}]
        ids: list[str] = []
        async with server.client() as client:
            for question in ("second question", None):
                r = await client.post(
                    "/v1/chat/completions", json={"model": model, "messages": history}
                )
                assert r.status_code == 200, r.text
                ids.append(r.headers["X-Request-Id"])
                history.append(r.json()["choices"][0]["message"])
                if question is not None:
                    history.append({"role": "user", "content": question})
        stats = await server.stats()
        ledger = Ledger(ledger_path(tmp_path / "state"))
        rows = await _rows(ledger, ids)
    assert stats["resume_hits"] == 1, stats
    first, second = rows[ids[0]], rows[ids[1]]
    assert (first["continued"], second["continued"]) == (False, True)
    assert (second["backend"], second["worker_id"], second["pid"]) == (
        first["backend"],
        first["worker_id"],
        first["pid"],
    )
