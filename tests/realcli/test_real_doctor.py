"""``clibridge doctor`` against the pinned real CLIs: their ``--version`` and login status
commands (``claude auth status``, ``codex login status``) read as doctor expects, logged in
and not, without a model call (no stub is even running)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clibridge._backends import BACKENDS
from clibridge._config import ClaudeConfig, CodexConfig, Config
from clibridge._doctor import Finding, check_backend
from clibridge.testing.realcli import RealClis

pytestmark = pytest.mark.realcli


def _findings(name: str, command: Path, tmp_path: Path, **env: str) -> dict[str, Finding]:
    state = tmp_path / "state"
    for sub in ("claude/home", "codex/home", "codex/user"):
        (state / sub).mkdir(parents=True, mode=0o700, exist_ok=True)
    config = Config(
        backend=name,  # type: ignore[arg-type]
        state_dir=state,
        claude=ClaudeConfig(command=(str(command),)),
        codex=CodexConfig(command=(str(command),)),
    )
    environ = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path / "home"), **env}
    found = check_backend(BACKENDS[name], (str(command),), config, state, environ)
    return {f.check: f for f in found}


def test_real_claude(claude_binary: Path, tmp_path: Path) -> None:
    found = _findings("claude", claude_binary, tmp_path)
    assert found["claude CLI"].status == "ok"
    assert "2.1.197 (the tested version)" in found["claude CLI"].detail
    assert found["claude login"].status == "warn"
    assert '"loggedIn": false' in found["claude login"].detail
    found = _findings("claude", claude_binary, tmp_path, CLAUDE_CODE_OAUTH_TOKEN="sk-ant-oat01-x")
    assert found["claude login"].status == "ok", found["claude login"]
    assert "`claude auth status`: logged in" in found["claude login"].detail


def test_real_codex(codex_clis: RealClis, tmp_path: Path) -> None:
    assert codex_clis.codex is not None
    found = _findings("codex", codex_clis.codex, tmp_path)
    assert found["codex CLI"].status == "ok"
    assert "0.169.0 (the tested version)" in found["codex CLI"].detail
    assert found["codex login"].status == "warn"
    assert "Not logged in" in found["codex login"].detail
    # an API-key login file as `codex login --with-api-key` writes it
    auth = tmp_path / "state" / "codex" / "home" / "auth.json"
    auth.write_text(json.dumps({"OPENAI_API_KEY": "sk-test", "auth_mode": "apikey"}))
    found = _findings("codex", codex_clis.codex, tmp_path)
    assert found["codex login"].status == "ok", found["codex login"]
