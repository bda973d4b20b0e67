"""Named keys at the HTTP edge: who may call, 429 envelopes, live revoke, quota release."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from clibridge._http._keyring import KeyRing
from clibridge._http._record import RequestRecord
from clibridge._keys import KeyStore, Quotas

from .conftest import RunningServer, Script, Sleep, hello, open_server
from .helpers import DIALECTS, PATHS, assert_error_shape, body_for


def _add(state: Path, name: str, quotas: Quotas | None = None, *, admin: bool = False) -> str:
    store = KeyStore.open(state)
    try:
        return store.add(name, quotas or Quotas(), admin=admin)
    finally:
        store.close()


def _revoke(state: Path, name: str) -> None:
    store = KeyStore.open(state)
    try:
        store.revoke(name)
    finally:
        store.close()


@asynccontextmanager
async def keyed_server(state: Path, **server: Any) -> AsyncIterator[RunningServer]:
    async with open_server(keys=KeyRing(state, poll_interval=0.02), **server) as running:
        yield running


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_named_keys_and_the_auth_token_both_work(tmp_path: Path) -> None:
    alice = _add(tmp_path, "alice")
    async with (
        keyed_server(tmp_path, auth_token="s3cret") as server,
        httpx.AsyncClient(base_url=server.base_url) as client,
    ):
        for dialect in DIALECTS:
            for headers in (bearer(alice), {"x-api-key": alice}, bearer("s3cret")):
                r = await client.post(PATHS[dialect], json=body_for(dialect), headers=headers)
                assert r.status_code == 200, r.text
            r = await client.post(PATHS[dialect], json=body_for(dialect), headers=bearer("cb-x"))
            assert r.status_code == 401
            assert_error_shape(dialect, r.json())


async def test_any_named_key_turns_auth_on_live(tmp_path: Path) -> None:
    async with (
        keyed_server(tmp_path) as server,
        httpx.AsyncClient(base_url=server.base_url) as client,
    ):
        body = body_for("openai_chat")
        assert (await client.post(PATHS["openai_chat"], json=body)).status_code == 200
        key = _add(tmp_path, "first")
        with trio.fail_after(10):
            # Why polling: the server follows the file on its own clock
            while (await client.post(PATHS["openai_chat"], json=body)).status_code != 401:  # noqa: ASYNC110
                await trio.sleep(0.02)
        assert (await client.get("/v1/models")).status_code == 401
        assert (await client.get("/healthz")).status_code == 200
        r = await client.post(PATHS["openai_chat"], json=body, headers=bearer(key))
        assert r.status_code == 200, r.text


async def test_revoke_takes_effect_without_a_restart(tmp_path: Path) -> None:
    key = _add(tmp_path, "temp")
    _add(tmp_path, "other")
    async with (
        keyed_server(tmp_path) as server,
        httpx.AsyncClient(base_url=server.base_url, headers=bearer(key)) as client,
    ):
        body = body_for("anthropic_messages")
        assert (await client.post(PATHS["anthropic_messages"], json=body)).status_code == 200
        _revoke(tmp_path, "temp")
        r = await answered(client, PATHS["anthropic_messages"], body, 401, meanwhile=200)
        assert assert_error_shape("anthropic_messages", r.json())["type"] == "authentication_error"


async def answered(
    client: httpx.AsyncClient, path: str, body: Any, status: int, *, meanwhile: int
) -> httpx.Response:
    """POST until the server answers ``status`` (a running server syncs the keys file
    twice a second); every earlier answer must be ``meanwhile``."""
    with trio.fail_after(10):
        while True:
            r = await client.post(path, json=body)
            if r.status_code == status:
                return r
            assert r.status_code == meanwhile
            await trio.sleep(0.02)


async def test_set_quotas_takes_effect_without_a_restart(tmp_path: Path) -> None:
    """``clibridge keys set`` on a running server: the same key, the new quota."""
    key = _add(tmp_path, "capped", Quotas(rpm=1))
    async with (
        keyed_server(tmp_path) as server,
        httpx.AsyncClient(base_url=server.base_url, headers=bearer(key)) as client,
    ):
        body = body_for("openai_chat")
        assert (await client.post(PATHS["openai_chat"], json=body)).status_code == 200
        assert (await client.post(PATHS["openai_chat"], json=body)).status_code == 429
        store = KeyStore.open(tmp_path)
        try:
            store.set_quotas("capped", {"rpm": None})
        finally:
            store.close()
        await answered(client, PATHS["openai_chat"], body, 200, meanwhile=429)
        for _ in range(3):  # unlimited now
            assert (await client.post(PATHS["openai_chat"], json=body)).status_code == 200


async def test_auth_failures_are_logged_without_the_secret(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key = _add(tmp_path, "alice")
    wrong = key[:-6] + "abcdef"
    async with (
        keyed_server(tmp_path) as server,
        httpx.AsyncClient(base_url=server.base_url) as client,
    ):
        with caplog.at_level(logging.INFO, logger="clibridge"):
            r = await client.get("/v1/models", headers=bearer(wrong))
            assert r.status_code == 401
            r = await client.get("/v1/models")
            assert r.status_code == 401
    failures = [rec.getMessage() for rec in caplog.records if "auth failed" in rec.getMessage()]
    assert len(failures) == 2, failures
    assert "unknown or revoked key" in failures[0] and "no key" in failures[1]
    for text in [rec.getMessage() for rec in caplog.records]:
        assert wrong[3:12] not in text and key[3:12] not in text


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_quota_429_in_the_dialect_envelope(tmp_path: Path, dialect: str) -> None:
    key = _add(tmp_path, "capped", Quotas(rpm=2))
    path = PATHS[dialect]  # type: ignore[index]
    async with (
        keyed_server(tmp_path) as server,
        httpx.AsyncClient(base_url=server.base_url, headers=bearer(key)) as client,
    ):
        body = body_for(dialect)  # type: ignore[arg-type]
        for _ in range(2):
            assert (await client.post(path, json=body)).status_code == 200
        r = await client.post(path, json=body)
        assert r.status_code == 429
        assert 1 <= int(r.headers["Retry-After"]) <= 60
        error = assert_error_shape(dialect, r.json())  # type: ignore[arg-type]
        assert error["type"] == "rate_limit_error"
        assert "'capped'" in error["message"] and "rpm quota is 2" in error["message"]
        # other endpoints do not count against the quota
        assert (await client.get("/v1/models")).status_code == 200


async def test_concurrency_comes_back_when_a_stream_is_cut(tmp_path: Path) -> None:
    key = _add(tmp_path, "one", Quotas(concurrency=1))
    async with keyed_server(tmp_path) as server:
        server.service.default = Script(steps=[*hello()[:2], Sleep(30), *hello()[2:]])
        async with httpx.AsyncClient(base_url=server.base_url, headers=bearer(key)) as client:
            body = body_for("openai_chat", stream=True)
            async with client.stream("POST", PATHS["openai_chat"], json=body) as streaming:
                assert streaming.status_code == 200
                r = await client.post(PATHS["openai_chat"], json=body)
                assert r.status_code == 429 and "concurrency quota is 1" in r.text
            # the stream's client went away: the unit comes back once its turn has ended
            ring = server.app.keys
            with trio.fail_after(10):
                while ring.in_flight("one"):  # noqa: ASYNC110 - the release has no event
                    await trio.sleep(0.01)
            server.service.default = Script()
            r = await client.post(PATHS["openai_chat"], json=body_for("openai_chat"))
            assert r.status_code == 200, r.text
            bad = await client.post(PATHS["openai_chat"], json={"model": 3})
            assert bad.status_code == 400
            assert ring.in_flight("one") == 0


async def test_a_required_ring_refuses_everyone_without_keys(tmp_path: Path) -> None:
    """Off loopback, revoking the last named key must not open the server."""
    async with (
        open_server(keys=KeyRing(tmp_path, required=True)) as server,
        httpx.AsyncClient(base_url=server.base_url) as client,
    ):
        r = await client.post(PATHS["openai_chat"], json=body_for("openai_chat"))
        assert r.status_code == 401
        assert (await client.get("/metrics")).status_code == 401
        assert (await client.get("/healthz")).status_code == 200


async def test_records_name_the_key(tmp_path: Path) -> None:
    """The contract with the request ledger: ``g.clibridge_key`` becomes the record's key."""
    alice = _add(tmp_path, "alice", Quotas(rpm=1))
    records: list[RequestRecord] = []
    async with (
        keyed_server(tmp_path, auth_token="s3cret") as server,
        httpx.AsyncClient(base_url=server.base_url) as client,
    ):
        server.app.request_observers.append(records.append)
        body = body_for("openai_responses")
        for key in (alice, "s3cret", alice):
            await client.post(PATHS["openai_responses"], json=body, headers=bearer(key))
        await client.post(PATHS["openai_responses"], json=body)
        with trio.fail_after(5):
            while len(records) < 3:  # noqa: ASYNC110 - observers run after the response
                await trio.sleep(0.01)
    assert [(r.key, r.status, r.error_type) for r in records] == [
        ("alice", 200, None),
        ("default", 200, None),
        ("alice", 429, "quota_exceeded"),
    ]  # the 401 is not an admitted request: no record
    async with (
        keyed_server(tmp_path / "none") as server,
        httpx.AsyncClient(base_url=server.base_url) as client,
    ):
        server.app.request_observers.append(records.append)
        await client.post(PATHS["anthropic_messages"], json=body_for("anthropic_messages"))
        with trio.fail_after(5):
            while len(records) < 4:  # noqa: ASYNC110
                await trio.sleep(0.01)
    assert len(records) == 4
    assert (records[3].endpoint, records[3].key) == ("/v1/messages", None)
