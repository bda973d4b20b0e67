"""``clibridge openclaw-config``: the provider block from a running server, and the merge."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from clibridge import _openclaw
from clibridge._cli import main

from .conftest import ThreadedServer


def test_base_urls_per_api_type() -> None:
    assert _openclaw.base_url_for("http://h:1/", "openai-completions") == "http://h:1/v1"
    assert _openclaw.base_url_for("http://h:1/v1", "openai-responses") == "http://h:1/v1"
    # OpenClaw's anthropic client appends /v1/messages itself
    assert _openclaw.base_url_for("http://h:1/v1", "anthropic-messages") == "http://h:1"
    with pytest.raises(_openclaw.OpenClawConfigError, match="unknown API type"):
        _openclaw.base_url_for("http://h:1", "ollama")


def test_merge_keeps_the_rest_and_an_existing_default_model() -> None:
    block = _openclaw.provider_block(
        "http://h:1", "openai-completions", "k", [{"id": "sonnet", "backend": "claude"}]
    )
    mine: dict[str, Any] = {
        "gateway": {"port": 1},
        "models": {"providers": {"other": {"baseUrl": "x"}}},
        "agents": {"defaults": {"model": {"primary": "other/m"}}},
    }
    merged = _openclaw.merge_into(mine, block)
    assert merged["gateway"] == {"port": 1}
    assert set(merged["models"]["providers"]) == {"other", "clibridge"}
    assert merged["models"]["mode"] == "merge"
    assert merged["agents"]["defaults"]["model"]["primary"] == "other/m"
    assert mine["models"]["providers"].keys() == {"other"}  # the input is not changed
    fresh = _openclaw.merge_into({}, block)
    assert fresh["agents"]["defaults"]["model"]["primary"] == "clibridge/sonnet"
    (model,) = fresh["models"]["providers"]["clibridge"]["models"]
    assert (model["contextWindow"], model["maxTokens"]) == (200_000, 32_000)


def test_printed_and_written_from_a_running_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with ThreadedServer() as server:
        assert main(["openclaw-config", "--url", server.base_url], environ={}) == 0
        printed = json.loads(capsys.readouterr().out)
        block = printed["models"]["providers"]["clibridge"]
        assert block["baseUrl"] == server.base_url + "/v1"
        assert block["api"] == "openai-completions"
        assert [m["id"] for m in block["models"]] == [m.id for m in server.service.models()]
        target = tmp_path / "openclaw.json"
        target.write_text(json.dumps({"gateway": {"mode": "local"}}))
        args = ["openclaw-config", "--url", server.base_url, "--api", "anthropic-messages"]
        assert main([*args, "--write", str(target)], environ={}) == 0
    written = json.loads(target.read_text())
    assert written["gateway"] == {"mode": "local"}
    assert written["models"]["providers"]["clibridge"]["baseUrl"] == server.base_url
    (backup,) = tmp_path.glob("openclaw.json.bak-*")
    assert json.loads(backup.read_text()) == {"gateway": {"mode": "local"}}


def test_unreachable_server_and_a_json5_file_are_clear_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["openclaw-config", "--url", "http://127.0.0.1:9"], environ={}) == 2
    assert "cannot reach clibridge" in capsys.readouterr().err
    with ThreadedServer() as server:
        target = tmp_path / "openclaw.json"
        target.write_text("{ // JSON5\n gateway: {} }")
        args = ["openclaw-config", "--url", server.base_url, "--write", str(target)]
        assert main(args, environ={}) == 2
    assert "is not plain JSON" in capsys.readouterr().err
    assert target.read_text() == "{ // JSON5\n gateway: {} }"  # untouched
