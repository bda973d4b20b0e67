"""No web page may drive the server: JSON content types, the Host check, Origin and CORS.

Regression (issue 15, item 2): a ``Content-Type: text/plain`` (or form-urlencoded) POST
with ``Origin: http://evil.example`` ran a turn -- a plain HTML form sends that, with no
CORS preflight -- and ``Host: attacker.example:PORT`` was accepted, so after DNS rebinding
a page could read the answers. Any site the user visited could spend the subscription.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from clibridge._config import ServerConfig
from clibridge._config_load import ConfigError, load_config
from clibridge._http._guard import Guard, host_name, is_json_content_type, normalize_origin
from clibridge._wire.errors import Dialect

from .conftest import RunningServer, open_server
from .helpers import DIALECTS, PATHS, assert_error_shape, body_for, parse_sse, streamed_text

EVIL = "http://evil.example"
TRUSTED = "http://localhost:5173"
#: every JSON endpoint and the dialect of its errors
JSON_PATHS: dict[str, Dialect] = {
    **{path: dialect for dialect, path in PATHS.items()},
    "/v1/messages/count_tokens": "anthropic_messages",
}


# --------------------------------------------------------------------------- content types


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        None,
        "application/jsonx",
        "text/json",
    ],
)
async def test_json_endpoints_refuse_other_content_types(
    server: RunningServer, content_type: str | None
) -> None:
    """Regression (issue 15): a text/plain or form POST -- what an HTML form or a
    preflight-free fetch sends -- ran a turn."""
    headers = {"Content-Type": content_type} if content_type else {}
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        for path, dialect in JSON_PATHS.items():
            raw = json.dumps(body_for(dialect)).encode()
            r = await client.post(path, content=raw, headers=headers)
            assert r.status_code == 415, (path, content_type, r.text)
            error = assert_error_shape(dialect, r.json())
            assert "Content-Type: application/json" in error["message"]
            if dialect != "anthropic_messages":
                assert error["code"] == "unsupported_media_type"
    assert server.service.records == []


async def test_json_content_types_with_parameters_and_suffixes_work(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        for content_type in (
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/vnd.clibridge+json",
        ):
            raw = json.dumps(body_for("openai_chat")).encode()
            r = await client.post(
                PATHS["openai_chat"], content=raw, headers={"Content-Type": content_type}
            )
            assert r.status_code == 200, (content_type, r.text)


def test_is_json_content_type() -> None:
    assert is_json_content_type("application/json")
    assert is_json_content_type("application/problem+json; charset=utf-8")
    assert not is_json_content_type("application/json-seq")
    assert not is_json_content_type("text/plain")
    assert not is_json_content_type("")
    assert not is_json_content_type(None)


# --------------------------------------------------------------------------- Host


@pytest.mark.parametrize(
    "host", ["evil.example", "attacker.example:7483", "localhost.evil.example", "127.0.0.1.nip.io"]
)
async def test_a_foreign_host_header_is_refused(server: RunningServer, host: str) -> None:
    """Regression (issue 15): ``Host: attacker.example:PORT`` was accepted (DNS rebinding)."""
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        for dialect in DIALECTS:
            r = await client.post(PATHS[dialect], json=body_for(dialect), headers={"Host": host})
            assert r.status_code == 421, r.text
            error = assert_error_shape(dialect, r.json())
            assert "server.allowed_hosts" in error["message"]
        for path in ("/v1/models", "/v1/stats"):
            r = await client.get(path, headers={"Host": host})
            assert r.status_code == 421
            assert assert_error_shape("openai_chat", r.json())["code"] == "misdirected_request"
        # probes stay readable: a load balancer may send any Host
        for path in ("/healthz", "/readyz"):
            assert (await client.get(path, headers={"Host": host})).status_code == 200
    assert server.service.records == []


async def test_loopback_names_and_the_bind_address_are_accepted(server: RunningServer) -> None:
    port = server.base_url.rsplit(":", 1)[1]
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        for host in (
            f"127.0.0.1:{port}",
            "127.0.0.1",
            f"localhost:{port}",
            "LOCALHOST.",
            f"[::1]:{port}",
            "127.0.0.2",
        ):
            r = await client.post(
                PATHS["openai_chat"], json=body_for("openai_chat"), headers={"Host": host}
            )
            assert r.status_code == 200, (host, r.text)


async def test_allowed_hosts_adds_names() -> None:
    async with (
        open_server(allowed_hosts=("clibridge.lan", "Proxy.Example.COM")) as server,
        httpx.AsyncClient(base_url=server.base_url) as client,
    ):
        for host, status in (
            ("clibridge.lan:7483", 200),
            ("proxy.example.com", 200),
            ("evil.example", 421),
        ):
            r = await client.get("/v1/models", headers={"Host": host})
            assert r.status_code == status, host
    async with (
        open_server(allowed_hosts=("*",)) as server,
        httpx.AsyncClient(base_url=server.base_url) as client,
    ):
        assert (await client.get("/v1/models", headers={"Host": "any.example"})).status_code == 200


def test_the_host_policy() -> None:
    loopback = Guard.from_config(ServerConfig())
    assert loopback.host_allowed("localhost:1") and loopback.host_allowed("[::1]")
    assert loopback.host_allowed(None) and loopback.host_allowed("")  # HTTP/1.0
    assert not loopback.host_allowed("192.168.1.5:7483")
    assert not loopback.host_allowed("evil.example")
    wildcard = Guard.from_config(ServerConfig(host="0.0.0.0", auth_token="t"))
    assert wildcard.host_allowed("192.168.1.5:7483") and wildcard.host_allowed("[fe80::1]:1")
    assert not wildcard.host_allowed("myhost.lan")
    named = Guard.from_config(ServerConfig(host="myhost.lan", auth_token="t"))
    assert named.host_allowed("MyHost.lan:7483") and not named.host_allowed("10.0.0.1")
    specific = Guard.from_config(ServerConfig(host="192.168.1.5", auth_token="t"))
    assert specific.host_allowed("192.168.1.5:80") and not specific.host_allowed("10.0.0.1")
    assert host_name("[::1]:7483") == "::1" and host_name("Example.COM.:80") == "example.com"


# --------------------------------------------------------------------------- Origin


@pytest.mark.parametrize("origin", [EVIL, "null", TRUSTED, "http://127.0.0.1:1"])
async def test_a_request_with_a_foreign_origin_is_refused(
    server: RunningServer, origin: str
) -> None:
    """Regression (issue 15): a POST with ``Origin: http://evil.example`` ran a turn."""
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        for dialect in DIALECTS:
            for content_type in ("application/json", "text/plain"):
                r = await client.post(
                    PATHS[dialect],
                    content=json.dumps(body_for(dialect, stream=True)).encode(),
                    headers={"Origin": origin, "Content-Type": content_type},
                )
                assert r.status_code == 403, r.text
                assert "access-control-allow-origin" not in r.headers
                error = assert_error_shape(dialect, r.json())
                assert "server.cors_origins" in error["message"]
                assert error["type"] == "permission_error"
        r = await client.get("/v1/models", headers={"Origin": origin})
        assert r.status_code == 403
        # a preflight from it is refused too, so the browser never sends the request
        r = await client.options(
            PATHS["openai_chat"],
            headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
        )
        assert r.status_code == 403
        assert "access-control-allow-origin" not in r.headers
        # probes answer, without CORS headers (a page cannot read them)
        r = await client.get("/healthz", headers={"Origin": origin})
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    assert server.service.records == []


async def test_requests_without_origin_are_unchanged(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        for dialect in DIALECTS:
            r = await client.post(PATHS[dialect], json=body_for(dialect))
            assert r.status_code == 200
            assert "access-control-allow-origin" not in r.headers
            assert "vary" not in r.headers
        # OPTIONS that is not a preflight is still a 405 in the API's shape
        r = await client.options(PATHS["openai_chat"])
        assert r.status_code == 405 and r.headers["Allow"] == "POST"


async def test_cors_for_an_allowed_origin() -> None:
    """A trusted browser / Electron client: preflight, then streaming and errors readable."""
    async with (
        open_server(cors_origins=("HTTP://LOCALHOST:5173/", "app://my-app")) as server,
        httpx.AsyncClient(base_url=server.base_url) as client,
    ):
        r = await client.options(
            PATHS["anthropic_messages"],
            headers={
                "Origin": TRUSTED,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type, x-api-key,anthropic-version, "
                "x-stainless-os, bad header",
                "Access-Control-Request-Private-Network": "true",
            },
        )
        assert r.status_code == 204, r.text
        assert r.headers["Access-Control-Allow-Origin"] == TRUSTED
        assert r.headers["Access-Control-Allow-Methods"] == "GET, POST"
        assert r.headers["Access-Control-Allow-Headers"] == (
            "content-type, x-api-key, anthropic-version, x-stainless-os"
        )
        assert r.headers["Access-Control-Allow-Private-Network"] == "true"
        assert int(r.headers["Access-Control-Max-Age"]) > 0
        assert "Origin" in r.headers["Vary"]
        for dialect in DIALECTS:
            r = await client.post(
                PATHS[dialect], json=body_for(dialect, stream=True), headers={"Origin": TRUSTED}
            )
            assert r.status_code == 200
            assert r.headers["Access-Control-Allow-Origin"] == TRUSTED
            assert "X-Request-Id" in r.headers["Access-Control-Expose-Headers"]
            assert r.headers["Vary"] == "Origin"
            assert streamed_text(dialect, parse_sse(r.content)) == "Hello, world"
        # an error is readable too (the browser needs the CORS header to show it)
        r = await client.post(
            PATHS["openai_chat"], json={"model": 1}, headers={"Origin": "app://my-app"}
        )
        assert r.status_code == 400
        assert r.headers["Access-Control-Allow-Origin"] == "app://my-app"
        # other origins are still refused, and requests without Origin still work
        r = await client.post(
            PATHS["openai_chat"], json=body_for("openai_chat"), headers={"Origin": EVIL}
        )
        assert r.status_code == 403 and "access-control-allow-origin" not in r.headers
        r = await client.post(PATHS["openai_chat"], json=body_for("openai_chat"))
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
        assert r.headers["Vary"] == "Origin"


async def test_a_preflight_needs_no_token_but_the_request_does() -> None:
    async with (
        open_server(cors_origins=(TRUSTED,), auth_token="s3cret") as server,
        httpx.AsyncClient(base_url=server.base_url) as client,
    ):
        r = await client.options(
            PATHS["openai_chat"],
            headers={"Origin": TRUSTED, "Access-Control-Request-Method": "POST"},
        )
        assert r.status_code == 204
        r = await client.post(
            PATHS["openai_chat"], json=body_for("openai_chat"), headers={"Origin": TRUSTED}
        )
        assert r.status_code == 401
        assert r.headers["Access-Control-Allow-Origin"] == TRUSTED
        r = await client.post(
            PATHS["openai_chat"],
            json=body_for("openai_chat"),
            headers={"Origin": TRUSTED, "Authorization": "Bearer s3cret"},
        )
        assert r.status_code == 200


def test_origin_normalisation() -> None:
    assert normalize_origin("HTTP://LocalHost:80/") == "http://localhost"
    assert normalize_origin("https://a.example:443") == "https://a.example"
    assert normalize_origin("https://a.example:8443") == "https://a.example:8443"
    assert normalize_origin("null") == "null"


# --------------------------------------------------------------------------- settings


def test_the_settings_as_flags_env_and_toml(tmp_path: Any) -> None:
    config = load_config(
        {"server.cors_origins": ("http://localhost:5173", "app://x")},
        {"CLIBRIDGE_ALLOWED_HOST": "a.lan b.lan"},
        None,
    )
    assert config.server.cors_origins == ("http://localhost:5173", "app://x")
    assert config.server.allowed_hosts == ("a.lan", "b.lan")
    toml = tmp_path / "c.toml"
    toml.write_text('[server]\ncors_origins = ["null"]\nallowed_hosts = ["*"]\n')
    config = load_config({}, {}, toml)
    assert config.server.cors_origins == ("null",) and config.server.allowed_hosts == ("*",)
    config = load_config({"server.cors_origins": ("file://",)}, {}, None)  # Electron
    assert Guard.from_config(config.server).origin_allowed("file://")
    with pytest.raises(ConfigError, match=r"server.cors_origins .*flag --cors-origin.*origin"):
        load_config({"server.cors_origins": ("localhost:5173",)}, {}, None)
    with pytest.raises(ConfigError, match=r"server.allowed_hosts .*not a host name"):
        load_config({}, {"CLIBRIDGE_ALLOWED_HOST": "http://a.lan"}, None)
