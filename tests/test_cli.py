"""The command line: serve / config / version, help that documents every setting."""

from __future__ import annotations

import argparse
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import clibridge
from clibridge import _supervisor
from clibridge._cli import build_parser, main
from clibridge._config import Config
from clibridge._config_load import settings


def _help(command: str) -> str:
    parser = build_parser()
    sub = next(
        a
        for a in parser._actions
        if isinstance(a, argparse._SubParsersAction) and a.dest == "command"
    )
    subparser: argparse.ArgumentParser = sub.choices[command]
    return subparser.format_help()


@pytest.mark.parametrize("command", ["serve", "config"])
def test_help_documents_every_setting(command: str) -> None:
    text = " ".join(_help(command).split())
    for setting in settings():
        assert setting.flag in text, setting.key
        assert setting.env[0] in text, setting.key
    for flag in (
        "--host",
        "--port",
        "--backend",
        "--workers",
        "--spares",
        "--max-queue",
        "--queue-timeout",
        "--turn-timeout",
        "--enable-cli-tools",
        "--use-real-home",
        "--state-dir",
        "--log-level",
        "--auth-token-file",
        "--config",
    ):
        assert flag in text
    if command == "serve":
        assert "--tui" in text and "docs/tui.md" in text


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version"], {}) == 0
    assert capsys.readouterr().out.strip() == f"clibridge {clibridge.__version__}"


def test_config_prints_the_effective_toml_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["config", "--port", "9999", "--workers", "3"], {"CLIBRIDGE_API_KEY": "s3cret"}) == 0
    )
    out = capsys.readouterr().out
    assert "s3cret" not in out
    data = tomllib.loads(out)
    assert data["server"]["port"] == 9999
    assert data["server"]["auth_token"] == "<redacted>"
    assert data["claude"]["pool"]["workers"] == data["codex"]["pool"]["workers"] == 3


def test_bad_setting_exits_2_with_a_clear_message(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--claude-workers", "0"], {}) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "clibridge: error: claude.pool.workers = '0' (from flag --claude-workers)"
    )


def test_tui_turns_on_claude_tui_and_is_refused_off_loopback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[Config] = []

    def run(config: Config) -> int:
        seen.append(config)
        return 0

    monkeypatch.setattr(_supervisor, "run", run)
    assert main(["serve", "--tui", "--backend", "fake"], {}) == 0
    assert seen[0].claude.tui
    token = {"CLIBRIDGE_API_KEY": "k" * 32}
    assert main(["serve", "--tui", "--host", "0.0.0.0"], token) == 2
    assert "refusing --tui on '0.0.0.0'" in capsys.readouterr().err
    assert main(["serve", "--tui", "--host", "0.0.0.0", "--claude-tui-trusted-network"], token) == 0


def test_tui_ls_without_a_running_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["tui", "ls", "--state-dir", str(tmp_path)], {}) == 1
    assert "no TUI workers" in capsys.readouterr().err
    assert main(["tui", "attach", "--state-dir", str(tmp_path)], {}) == 2


def test_serve_hands_the_config_to_the_supervisor(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Config] = []

    def run(config: Config) -> int:
        seen.append(config)
        return 7

    monkeypatch.setattr(_supervisor, "run", run)
    assert (
        main(["serve", "--backend", "fake", "--port", "0"], {"CLIBRIDGE_LOG_LEVEL": "warning"}) == 7
    )
    assert seen[0].backend == "fake" and seen[0].server.port == 0 and seen[0].log_level == "warning"


def test_python_m_clibridge_has_no_traceback_on_bad_input() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "clibridge", "serve", "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "without an auth token" in proc.stderr
