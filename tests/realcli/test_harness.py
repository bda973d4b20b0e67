"""The real-CLI harness itself: finding binaries, the skip-or-fail rule, the setups."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clibridge.testing.model_stub import STUB_API_KEY
from clibridge.testing.pytest_plugin import require_real_cli
from clibridge.testing.realcli import (
    INSTALL_HINT,
    REALCLI_DIR_ENV,
    RealClis,
    claude_setup,
    codex_setup,
    find_real_clis,
)


def fake_install(root: Path, claude_version: str = "2.1.197") -> Path:
    """A directory shaped like an install of the pinned CLIs, with stand-in executables."""
    modules = root / "node_modules"
    (modules / ".bin").mkdir(parents=True)
    for package, version in (
        ("@anthropic-ai/claude-code", claude_version),
        ("@openai/codex", "0.169.0"),
    ):
        (modules / package).mkdir(parents=True)
        (modules / package / "package.json").write_text(json.dumps({"version": version}))
    native = modules / "@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex"
    native.parent.mkdir(parents=True)
    for exe in (modules / ".bin/claude", modules / ".bin/codex", native):
        exe.write_text("#!/bin/sh\n")
        exe.chmod(0o755)
    return root


def test_find_real_clis_in_an_install_dir(tmp_path: Path) -> None:
    root = fake_install(tmp_path / "install")
    clis = find_real_clis({REALCLI_DIR_ENV: str(root)})
    assert clis.problems == {}
    assert clis.claude == root / "node_modules/.bin/claude"
    assert clis.codex_native is not None
    assert clis.codex_native.name == "codex"
    assert "vendor" in clis.codex_native.parts


def test_missing_and_wrong_version_name_the_install_script(tmp_path: Path) -> None:
    clis = find_real_clis({REALCLI_DIR_ENV: str(tmp_path / "nothing")})
    assert (clis.claude, clis.codex) == (None, None)
    assert INSTALL_HINT in (clis.missing("claude") or "")
    root = fake_install(tmp_path / "old", claude_version="2.0.0")
    reason = find_real_clis({REALCLI_DIR_ENV: str(root)}).missing("claude")
    assert reason is not None
    assert "2.0.0" in reason
    assert "scripts/install-real-clis.sh" in reason


def test_missing_cli_skips_locally_and_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    clis = RealClis(None, None, None, None, problems={"claude": "not installed"})
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        require_real_cli(clis, "claude")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="missing in CI"):
        require_real_cli(clis, "claude")
    require_real_cli(clis, "codex")  # present: no effect


def test_claude_setup_isolates_home_and_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLAUDECODE", "1")
    monkeypatch.setenv("ANTHROPIC_AUTH_TOKEN", "leak")
    setup = claude_setup(tmp_path / "claude", "http://127.0.0.1:9", tmp_path / "home")
    assert "CLAUDECODE" not in setup.env
    assert "ANTHROPIC_AUTH_TOKEN" not in setup.env
    assert setup.env["HOME"] == str(setup.home)
    assert setup.env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:9"
    assert setup.env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"
    seeds = json.loads((setup.home / ".claude.json").read_text())
    assert seeds["hasCompletedOnboarding"] is True
    assert seeds["projects"][str(setup.cwd)]["hasTrustDialogAccepted"] is True
    assert seeds["customApiKeyResponses"]["approved"] == [STUB_API_KEY[-20:]]
    argv = setup.stream_json_argv("--verbose")
    assert argv[:2] == [str(tmp_path / "claude"), "-p"]
    assert argv[argv.index("--tools") + 1] == ""


def test_codex_setup_prefers_the_native_binary(tmp_path: Path) -> None:
    clis = find_real_clis({REALCLI_DIR_ENV: str(fake_install(tmp_path / "install"))})
    setup = codex_setup(
        clis,
        "http://127.0.0.1:9",
        tmp_path / "codex-home",
        provider_options={"request_max_retries": 0},
        extra_config={"approval_policy": "never"},
    )
    argv = setup.app_server_argv()
    assert argv[0] == str(clis.codex_native)
    assert argv[1] == "app-server"
    assert (
        'model_providers.stub={name="stub",base_url="http://127.0.0.1:9/v1",'
        'wire_api="responses",env_key="STUB_KEY",request_max_retries=0}'
    ) in argv
    assert 'approval_policy="never"' in argv
    assert setup.env["CODEX_HOME"] == str(setup.home)
    assert setup.env["STUB_KEY"]
    launcher = codex_setup(clis, "http://127.0.0.1:9", tmp_path / "h2", native=False)
    assert launcher.argv_prefix == (str(clis.codex),)
