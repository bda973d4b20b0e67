"""``clibridge doctor``: each check on a machine state the test builds.

The CLIs are the bundled fakes (they answer ``--version`` and their login status commands
as the real ones do) or small scripts that print another version; the state dir, the
port and PATH are the test's own.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import pytest

from clibridge import _doctor
from clibridge._backends import BACKENDS
from clibridge._cli import main
from clibridge._config import ClaudeConfig, CodexConfig, Config, PoolConfig, ServerConfig
from clibridge._doctor import Finding, run_doctor
from clibridge.testing import scenario

FAKE_CLAUDE = (sys.executable, "-m", "clibridge.testing.fake_claude")
FAKE_CODEX = (sys.executable, "-m", "clibridge.testing.fake_codex")
SCENARIOS = Path(scenario.__file__).parent / "scenarios"


def _script(bin_dir: Path, name: str, body: str) -> Path:
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return path


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """An environment with only the test's bin dir on PATH (no real CLI, no tmux)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    return {"PATH": str(bin_dir), "HOME": str(tmp_path / "home"), **extra}


def _config(tmp_path: Path, **kwargs: Any) -> Config:
    server = ServerConfig(port=0)
    return attrs.evolve(Config(server=server, state_dir=tmp_path / "state"), **kwargs)


def _by_check(findings: list[Finding], check: str) -> Finding:
    matches = [f for f in findings if f.check == check]
    assert len(matches) == 1, (check, findings)
    return matches[0]


def _spawn_homes(state: Path) -> None:
    for sub in ("claude/home", "codex/home", "codex/user"):
        (state / sub).mkdir(parents=True, mode=0o700, exist_ok=True)
    for path in (state, state / "claude", state / "codex"):
        path.chmod(0o700)


def test_missing_binary_blocks_an_explicit_backend_and_warns_in_auto(tmp_path: Path) -> None:
    env = _env(tmp_path)
    findings = run_doctor(_config(tmp_path, backend="claude"), env)
    missing = _by_check(findings, "claude CLI")
    assert missing.status == "fail" and "'claude' not found on PATH" in missing.detail
    assert "claude.command" in missing.fix
    assert _doctor.exit_code(findings) == 1
    # auto: not served, the fake would answer, and doctor says so
    findings = run_doctor(_config(tmp_path), env)
    assert _by_check(findings, "claude CLI").status == "warn"
    assert _by_check(findings, "codex CLI").status == "warn"
    assert "FAKE" in _by_check(findings, "backend").detail
    assert _doctor.exit_code(findings) == 0


def test_wrong_version_is_named_with_the_tested_one(tmp_path: Path) -> None:
    fake = " ".join(FAKE_CLAUDE)
    _script(
        tmp_path / "bin",
        "claude",
        f'if [ "$1" = --version ]; then echo "2.0.5 (Claude Code)"; exit 0; fi\nexec {fake} "$@"',
    )
    env = _env(tmp_path, CLAUDE_CODE_OAUTH_TOKEN="sk-ant-oat01-test")
    _spawn_homes(tmp_path / "state")
    findings = run_doctor(_config(tmp_path, backend="claude"), env)
    version = _by_check(findings, "claude CLI")
    assert version.status == "warn"
    assert "is 2.0.5; clibridge was tested with 2.1.197" in version.detail
    assert "2.1.197" in version.fix
    # the pinned one is ok
    config = _config(tmp_path, backend="claude", claude=ClaudeConfig(command=FAKE_CLAUDE))
    version = _by_check(run_doctor(config, env), "claude CLI")
    assert version.status == "ok" and "2.1.197 (the tested version)" in version.detail


def test_a_cli_whose_version_command_fails_blocks(tmp_path: Path) -> None:
    _script(tmp_path / "bin", "claude", 'echo "error: broken install" >&2; exit 3')
    findings = run_doctor(_config(tmp_path, backend="claude"), _env(tmp_path))
    broken = _by_check(findings, "claude CLI")
    assert broken.status == "fail" and "exit 3" in broken.detail
    assert "broken install" in broken.detail


@pytest.mark.parametrize("backend", ["claude", "codex"])
def test_login_from_the_clis_status_command_and_expired_through_the_fakes(
    tmp_path: Path, backend: str
) -> None:
    state = tmp_path / "state"
    _spawn_homes(state)
    (state / "codex" / "home" / "auth.json").write_text("{}")
    config = _config(
        tmp_path,
        backend=backend,
        claude=ClaudeConfig(command=FAKE_CLAUDE),
        codex=CodexConfig(command=FAKE_CODEX),
    )
    env = _env(tmp_path, CLAUDE_CODE_OAUTH_TOKEN="sk-ant-oat01-test")
    login = _by_check(run_doctor(config, env), f"{backend} login")
    assert login.status == "ok", login
    assert "logged in" in login.detail
    # the fake's model of an expired login: its upstream refuses it (401)
    expired = tmp_path / "expired.json"
    login_expired = json.loads((SCENARIOS / "claude_login_expired.json").read_text())
    expired.write_text(json.dumps({"default": login_expired}))
    env["CLIBRIDGE_FAKE_SCENARIO"] = str(expired)
    login = _by_check(run_doctor(config, env), f"{backend} login")
    assert login.status == "warn"
    assert "not logged in, or the login expired" in login.detail
    assert BACKENDS[backend].login_fix in login.fix


def test_the_status_command_is_not_run_in_a_missing_spawn_home(tmp_path: Path) -> None:
    """A CLI asked in a home that does not exist creates it (with its own modes): doctor
    must leave the machine as it found it."""
    config = _config(tmp_path, backend="claude", claude=ClaudeConfig(command=FAKE_CLAUDE))
    env = _env(tmp_path, CLAUDE_CODE_OAUTH_TOKEN="sk-ant-oat01-test")
    login = _by_check(run_doctor(config, env), "claude login")
    assert login.status == "ok" and "CLAUDE_CODE_OAUTH_TOKEN is set" in login.detail
    assert not (tmp_path / "state").exists()
    login = _by_check(run_doctor(config, _env(tmp_path)), "claude login")
    assert login.status == "warn" and "no login detected" in login.detail


def test_bad_modes_are_a_warning_and_a_foreign_owner_blocks(tmp_path: Path) -> None:
    state = tmp_path / "state"
    _spawn_homes(state)
    assert _by_check(_doctor.check_state_dir(state), "state dir").status == "ok"
    (state / "codex" / "home").chmod(0o755)
    leaky = state / "claude" / "home" / "settings.json"
    leaky.write_text("{}")
    leaky.chmod(0o644)
    found = _by_check(_doctor.check_state_dir(state), "state dir")
    assert found.status == "warn" and "2 path(s)" in found.detail
    assert "chmod -R go-rwx" in found.fix
    # doctor only reads: the modes are as they were
    assert stat.S_IMODE(leaky.stat().st_mode) == 0o644
    if os.geteuid() == 0:  # only root can give a file away to build this state
        os.chown(leaky, 65534, 65534)
        found = _by_check(_doctor.check_state_dir(state), "state dir")
        assert found.status == "fail" and "another user" in found.detail


def test_taken_port_names_the_process(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        taken = _doctor.check_port("127.0.0.1", port)
    assert taken.status == "fail"
    assert f"127.0.0.1:{port} is taken by pid {os.getpid()}" in taken.detail
    assert "--port" in taken.fix
    free = _doctor.check_port("127.0.0.1", port)
    assert free.status == "ok" and "is free" in free.detail


def test_non_loopback_bind_without_auth_blocks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {**_env(tmp_path), "CLIBRIDGE_STATE_DIR": str(tmp_path / "state")}
    code = main(["doctor", "--backend", "fake", "--host", "0.0.0.0", "--port", "0"], env)
    out = capsys.readouterr().out
    assert code == 1
    assert "FAIL  configuration  refusing to listen on '0.0.0.0' without an auth token" in out
    assert "fix: " in out
    config = _config(tmp_path, server=ServerConfig(host="0.0.0.0", auth_token="t", port=0))
    assert _doctor.check_bind(config).status == "ok"
    unsafe = attrs.evolve(config, server=ServerConfig(host="0.0.0.0"))
    assert _doctor.check_bind(unsafe).status == "fail"


def test_tmux_missing_or_old_blocks_tui(tmp_path: Path) -> None:
    env = _env(tmp_path)
    missing = _doctor.check_tmux(env)
    assert missing.status == "fail" and "not on PATH" in missing.detail
    _script(tmp_path / "bin", "tmux", 'echo "tmux 2.9a"')
    old = _doctor.check_tmux(env)
    assert old.status == "fail" and "2.9a" in old.detail and "3.0" in old.fix
    _script(tmp_path / "bin", "tmux", 'echo "tmux 3.4"')
    assert _doctor.check_tmux(env).status == "ok"
    # only checked when --tui is asked for
    config = _config(tmp_path, backend="fake")
    assert not [f for f in run_doctor(config, env) if f.check == "tmux"]
    assert [f for f in run_doctor(config, env, tui=True) if f.check == "tmux"]


def test_workers_above_the_machines_memory_warn(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        backend="claude",
        claude=ClaudeConfig(pool=PoolConfig(workers=8, spares=2)),
    )
    tight = _doctor.check_config(config, memory=1 * 2**30)
    assert tight[0].status == "warn"
    assert "10 claude worker processes" in tight[0].detail
    assert "--claude-workers" in tight[0].fix
    assert _doctor.check_config(config, memory=64 * 2**30)[0].status == "ok"
    real_home = attrs.evolve(config, claude=ClaudeConfig(use_real_home=True, enable_cli_tools=True))
    checks = {f.check: f.status for f in _doctor.check_config(real_home, memory=64 * 2**30)}
    assert checks == {"configuration": "ok", "claude home": "warn", "claude tools": "warn"}


def test_doctor_command_all_good_exits_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    _spawn_homes(state)
    env: Mapping[str, str] = {**_env(tmp_path), "CLIBRIDGE_STATE_DIR": str(state)}
    _script(tmp_path / "bin", "tmux", 'echo "tmux 3.3a"')
    code = main(["doctor", "--backend", "fake", "--port", "0", "--tui", "--show-config"], env)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "FAIL" not in out
    for check in ("configuration", "bind", "claude CLI", "codex CLI", "state dir", "port", "tmux"):
        assert f"  {check} " in out, check
    assert "the bundled FAKE claude" in out
    assert '# the configuration as loaded\nbackend = "fake"' in out
