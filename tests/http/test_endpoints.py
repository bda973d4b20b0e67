"""Probes, models, count_tokens, auth, request ids, unknown paths: the non-turn surface."""

from __future__ import annotations

import httpx
import pytest

from clibridge._service import Readiness

from .conftest import MODEL, RunningServer, open_server
from .helpers import DIALECTS, PATHS, assert_error_shape, body_for


async def test_healthz_and_readyz_until_ready(server: RunningServer) -> None:
    server.service.ready = Readiness(False, "claude: booting 1 worker", fake=True)
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        r = await client.get("/readyz")
        assert r.status_code == 503
        assert r.headers["Retry-After"] == "1"
        assert r.json() == {
            "ready": False,
            "reason": "claude: booting 1 worker",
            "fake": True,
            "backends": {},
        }
        server.service.ready = Readiness(True, "claude: 1 idle", fake=True)
        r = await client.get("/readyz")
        assert r.status_code == 200
        assert r.json()["ready"] is True


async def test_models_list_and_retrieve(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        listing = (await client.get("/v1/models")).json()
        assert listing["object"] == "list"
        assert listing["has_more"] is False
        ids = [m["id"] for m in listing["data"]]
        assert ids == [MODEL, "gpt-5"]
        first = listing["data"][0]
        for key in ("object", "type", "created", "created_at", "owned_by", "display_name"):
            assert key in first
        assert first["fake"] is True and "FAKE" in first["display_name"]
        r = await client.get("/v1/models/gpt-5")
        assert r.json()["id"] == "gpt-5" and r.json()["fake"] is False
        r = await client.get("/v1/models/nope")
        assert r.status_code == 404
        assert assert_error_shape("openai_chat", r.json())["code"] == "model_not_found"
        r = await client.get("/v1/models/nope", headers={"anthropic-version": "2023-06-01"})
        assert assert_error_shape("anthropic_messages", r.json())["type"] == "not_found_error"


async def test_count_tokens_is_an_estimate_of_the_rendered_prompt(server: RunningServer) -> None:
    body = {
        "model": MODEL,
        "system": "s" * 400,
        "messages": [{"role": "user", "content": "u" * 400}],
        "tools": [{"name": "t", "description": "d", "input_schema": {"type": "object"}}],
    }
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        r = await client.post("/v1/messages/count_tokens", json=body)
        assert r.status_code == 200, r.text
        tokens = r.json()["input_tokens"]
        # 800 characters of text plus the tool definition, at ~4 characters a token
        assert 200 < tokens < 215
        assert "estimate" in r.headers["X-Clibridge-Token-Count"]
        r = await client.post("/v1/messages/count_tokens", json={"model": MODEL})
        assert r.status_code == 400
        assert_error_shape("anthropic_messages", r.json())
    assert server.service.records == []  # counting never runs a turn


async def test_auth_both_headers_and_exempt_probes() -> None:
    async with (
        open_server(auth_token="s3cret") as server,
        httpx.AsyncClient(base_url=server.base_url) as client,
    ):
        for dialect in DIALECTS:
            r = await client.post(PATHS[dialect], json=body_for(dialect))
            assert r.status_code == 401
            assert_error_shape(dialect, r.json())
            r = await client.post(
                PATHS[dialect], json=body_for(dialect), headers={"Authorization": "Bearer nope"}
            )
            assert r.status_code == 401
            assert "wrong API key" in r.text
        r = await client.post(
            PATHS["openai_chat"],
            json=body_for("openai_chat"),
            headers={"Authorization": "Bearer s3cret"},
        )
        assert r.status_code == 200, r.text
        r = await client.post(
            PATHS["anthropic_messages"],
            json=body_for("anthropic_messages"),
            headers={"x-api-key": "s3cret"},
        )
        assert r.status_code == 200, r.text
        assert (await client.get("/v1/models")).status_code == 401
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200


@pytest.mark.parametrize(
    ("given", "kept"),
    [("abc-123_x.y:z", True), ("has space", False), ("x" * 129, False), ("", False)],
)
async def test_request_id_echoed_when_sane(server: RunningServer, given: str, kept: bool) -> None:
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        for method, path in (
            ("GET", "/healthz"),
            ("GET", "/v1/nope"),
            ("POST", PATHS["openai_chat"]),
        ):
            r = await client.request(
                method, path, json=body_for("openai_chat"), headers={"X-Request-Id": given}
            )
            rid = r.headers["X-Request-Id"]
            if kept:
                assert rid == given
            else:
                assert rid.startswith("req_") and len(rid) <= 128


async def test_unknown_paths_and_methods_in_the_family_shape(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        r = await client.get("/v1/nope")
        assert r.status_code == 404
        assert assert_error_shape("openai_chat", r.json())["code"] == "not_found"
        r = await client.post("/v1/messages/batches", json={})
        assert r.status_code == 404
        assert assert_error_shape("anthropic_messages", r.json())["type"] == "not_found_error"
        r = await client.get("/v1/responses/resp_123")
        assert r.status_code == 404
        assert_error_shape("openai_responses", r.json())
        r = await client.get("/v1/messages")
        assert r.status_code == 405
        assert "POST" in r.headers["Allow"]
        assert_error_shape("anthropic_messages", r.json())
        r = await client.request("OPTIONS", "/v1/chat/completions")
        assert r.status_code == 405
        assert_error_shape("openai_chat", r.json())
        r = await client.delete("/v1/models")
        assert r.status_code == 405
        r = await client.get("/whatever", headers={"anthropic-version": "2023-06-01"})
        assert_error_shape("anthropic_messages", r.json())


async def test_stats(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        await client.post(PATHS["openai_chat"], json=body_for("openai_chat"))
        stats = (await client.get("/v1/stats")).json()
        assert stats["service"] == {"turns": 1}
        assert stats["http"] == {"open_turns": 0, "draining": False}
