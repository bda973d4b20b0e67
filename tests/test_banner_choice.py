"""The startup banner names the dashboard and says which backend serves and why."""

from __future__ import annotations

from pathlib import Path

from clibridge._config import Config
from clibridge._http import banner
from clibridge._models import ModelTable
from clibridge._supervisor import Supervisor, choose_backends


def _machine(tmp_path: Path) -> dict[str, str]:
    """A PATH with a `claude` (never run: the choice only looks it up) and no `codex`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    claude = bin_dir / "claude"
    claude.write_text("#!/bin/sh\nexit 0\n")
    claude.chmod(0o755)
    return {"PATH": str(bin_dir), "HOME": str(tmp_path / "home")}


def _banner(config: Config, notes: tuple[str, ...], *, fake: bool) -> str:
    table = ModelTable(["claude"], fake_backends=["claude"] if fake else ())
    supervisor = Supervisor({}, table, fake=fake, fake_on_purpose=config.backend == "fake")
    return banner(config, "127.0.0.1", 7483, supervisor, notes)


def test_login_detected(tmp_path: Path) -> None:
    env = {**_machine(tmp_path), "CLAUDE_CODE_OAUTH_TOKEN": "sk-ant-oat01-test"}
    config = Config(state_dir=tmp_path / "state")
    choice = choose_backends(config, env)
    assert not choice.fake and list(choice.commands) == ["claude"]
    text = _banner(config, choice.notes, fake=False)
    assert "  dashboard:           http://127.0.0.1:7483/dashboard" in text
    assert f"claude: {tmp_path}/bin/claude (login detected: CLAUDE_CODE_OAUTH_TOKEN is set)" in text
    assert "codex: not served (not installed)" in text


def test_no_login_found_serves_the_fake_and_says_so(tmp_path: Path) -> None:
    config = Config(state_dir=tmp_path / "state")
    choice = choose_backends(config, _machine(tmp_path))
    assert choice.fake
    text = _banner(config, choice.notes, fake=True)
    assert "claude: not served (installed, no login found: run `claude setup-token" in text
    assert "claude: the bundled FAKE CLI (no login found for any backend)" in text
    assert "FAKE CLI: no logged-in claude / codex was found" in text


def test_explicit_flag(tmp_path: Path) -> None:
    env = _machine(tmp_path)
    config = Config(backend="claude", state_dir=tmp_path / "state")
    choice = choose_backends(config, env)
    text = _banner(config, choice.notes, fake=False)
    assert (
        "(backend = claude, chosen explicitly; no login detected: run `claude setup-token" in text
    )
    config = Config(backend="fake", state_dir=tmp_path / "state")
    choice = choose_backends(config, env)
    text = _banner(config, choice.notes, fake=True)
    assert "codex: the bundled FAKE CLI (backend = fake, chosen explicitly)" in text
