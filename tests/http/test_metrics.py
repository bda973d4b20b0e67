"""GET /metrics: Prometheus text that parses, counters that move, bounded labels, auth
(and the admin rule /v1/stats shares with it)."""

from __future__ import annotations

import random
import string
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from clibridge._http._keyring import KeyRing
from clibridge._keys import KeyStore, Quotas

from .conftest import MODEL, RunningServer, open_server
from .helpers import DIALECTS, PATHS, assert_error_shape, body_for


def samples(text: str) -> list[Sample]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(text: str, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    return sum(
        s.value
        for s in samples(text)
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


async def scrape(client: httpx.AsyncClient, **headers: str) -> str:
    r = await client.get("/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return r.text


async def test_requests_counted_by_dialect_model_status(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        before = await scrape(client)
        assert value(before, "clibridge_requests_total") == 0
        for dialect in DIALECTS:
            for stream in (False, True):
                r = await client.post(PATHS[dialect], json=body_for(dialect, stream=stream))
                assert r.status_code == 200, r.text
        r = await client.post(PATHS["openai_chat"], json={"model": MODEL, "messages": "x"})
        assert r.status_code == 400
        await client.get("/v1/models")  # not a turn: not counted
        text = await scrape(client)
    for dialect in DIALECTS:
        assert value(text, "clibridge_requests_total", dialect=dialect, status="200") == 2
        assert (
            value(text, "clibridge_request_duration_seconds_count", dialect=dialect, stream="true")
            == 1
        )
    assert value(text, "clibridge_requests_total", status="400", dialect="openai_chat") == 1
    assert value(text, "clibridge_requests_total", model=MODEL) == 7
    assert value(text, "clibridge_requests_total") == 7
    assert value(text, "clibridge_tokens_total", kind="output") > 0
    assert value(text, "clibridge_time_to_first_content_seconds_count") == 6


async def test_model_label_stays_bounded(server: RunningServer) -> None:
    rng = random.Random(12)
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        for i in range(60):
            model = "".join(rng.choices(string.ascii_letters + string.digits + "-_./:", k=24))
            dialect = DIALECTS[i % 3]
            await client.post(PATHS[dialect], json=body_for(dialect, model=model))
        await client.post(PATHS["openai_chat"], json=body_for("openai_chat"))
        text = await scrape(client)
    listed = {m.id for m in server.service.models()}
    models = {s.labels["model"] for s in samples(text) if "model" in s.labels}
    assert models <= listed | {"other", "none"}, models
    series = {
        (s.name, tuple(sorted(s.labels.items())))
        for s in samples(text)
        if s.name == "clibridge_requests_total"
    }
    assert len(series) <= 3 * 3 * 2  # dialects x {known, other, ...} x statuses seen
    assert value(text, "clibridge_requests_total") == 61
    assert "req_" not in text  # no request ids anywhere


def user_and_admin(state: Path, quotas: Quotas | None = None) -> tuple[str, str]:
    """A user key (with ``quotas``) and an admin key in ``state``'s keys file."""
    store = KeyStore.open(state)
    try:
        return store.add("user", quotas or Quotas()), store.add("ops", Quotas(), admin=True)
    finally:
        store.close()


async def test_metrics_need_an_admin_key_when_auth_is_on(tmp_path: Path) -> None:
    user, admin = user_and_admin(tmp_path, Quotas(rpm=1))
    async with (
        open_server(keys=KeyRing(tmp_path), auth_token="s3cret") as server,
        httpx.AsyncClient(base_url=server.base_url) as client,
    ):
        assert (await client.get("/metrics")).status_code == 401
        r = await client.get("/metrics", headers={"Authorization": f"Bearer {user}"})
        assert r.status_code == 403
        assert "admin key" in assert_error_shape("openai_chat", r.json())["message"]
        await scrape(client, Authorization="Bearer s3cret")
        headers = {"Authorization": f"Bearer {user}"}
        body = body_for("anthropic_messages")
        assert (
            await client.post(PATHS["anthropic_messages"], json=body, headers=headers)
        ).status_code == 200
        assert (
            await client.post(PATHS["anthropic_messages"], json=body, headers=headers)
        ).status_code == 429
        text = await scrape(client, **{"x-api-key": admin})
    assert value(text, "clibridge_rate_limited_total", cause="key_quota") == 1
    assert value(text, "clibridge_requests_total", status="429") == 1
    assert "s3cret" not in text and user not in text


async def test_stats_need_an_admin_key_when_auth_is_on(tmp_path: Path) -> None:
    """/v1/stats shows worker pids and accounts: like /metrics, the operator's only."""
    user, admin = user_and_admin(tmp_path)
    async with (
        open_server(keys=KeyRing(tmp_path), auth_token="s3cret") as server,
        httpx.AsyncClient(base_url=server.base_url) as client,
    ):
        assert (await client.get("/v1/stats")).status_code == 401
        r = await client.get("/v1/stats", headers={"Authorization": f"Bearer {user}"})
        assert r.status_code == 403
        error = assert_error_shape("openai_chat", r.json())
        assert "GET /v1/stats needs an admin key" in error["message"]
        assert "service" not in r.text
        for headers in ({"Authorization": "Bearer s3cret"}, {"x-api-key": admin}):
            r = await client.get("/v1/stats", headers=headers)
            assert r.status_code == 200, r.text
            assert "service" in r.json() and "http" in r.json()


async def test_metrics_can_be_turned_off() -> None:
    async with (
        open_server(metrics=False) as server,
        httpx.AsyncClient(base_url=server.base_url) as client,
    ):
        r = await client.get("/metrics")
        assert r.status_code == 404
        r = await client.post(PATHS["openai_chat"], json=body_for("openai_chat"))
        assert r.status_code == 200
