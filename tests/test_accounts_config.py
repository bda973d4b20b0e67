"""Accounts in the configuration: the TOML tables, flags and env, the errors, `clibridge
config` never printing a token, each account's spawn home and login, and
`clibridge login codex --account NAME`."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest

from clibridge._backends import account_state_dir, backend
from clibridge._cli import main
from clibridge._config import AccountConfig
from clibridge._config_load import ConfigError, dump_toml, load_config
from clibridge._supervisor import choose_backends

SECRET = "sk-ant-oat01-VERY-SECRET"

TOML = f"""
[[claude.accounts]]
name = "work"
token = "{SECRET}"

[[claude.accounts]]
name = "home"
token_env = "HOME_CLAUDE_TOKEN"

[[claude.accounts]]
name = "spare"
token_file = "~/claude-token"

[[codex.accounts]]
name = "team"
"""


def test_accounts_from_toml(tmp_path: Path) -> None:
    file = tmp_path / "c.toml"
    file.write_text(TOML)
    config = load_config({}, {}, file)
    assert [a.name for a in config.claude.accounts] == ["work", "home", "spare"]
    work, home, spare = config.claude.accounts
    assert work.token == SECRET and home.token_env == "HOME_CLAUDE_TOKEN"
    assert spare.token_file == Path("~/claude-token").expanduser()
    assert config.codex.accounts == (AccountConfig("team"),)
    assert SECRET not in repr(config)


def test_accounts_from_flags_and_env() -> None:
    config = load_config(
        {"claude.accounts": ("a=TOKEN_A", "b=TOKEN_B")},
        {"CLIBRIDGE_CODEX_ACCOUNT": "x y"},
        None,
    )
    assert config.claude.accounts == (
        AccountConfig("a", token_env="TOKEN_A"),
        AccountConfig("b", token_env="TOKEN_B"),
    )
    assert [a.name for a in config.codex.accounts] == ["x", "y"]


def test_clibridge_config_prints_accounts_without_their_tokens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "c.toml"
    file.write_text(TOML)
    assert main(["config", "--config", str(file)], {}) == 0
    out = capsys.readouterr().out
    assert SECRET not in out
    dumped = tomllib.loads(out)
    assert dumped["claude"]["accounts"][0] == {"name": "work", "token": "<redacted>"}
    assert dumped["claude"]["accounts"][1] == {"name": "home", "token_env": "HOME_CLAUDE_TOKEN"}
    assert dumped["codex"]["accounts"] == [{"name": "team"}]
    # what the dump says reads back (the redacted token aside)
    config = load_config({}, {}, file)
    assert "<redacted>" in dump_toml(config) and SECRET in dump_toml(config, redact=False)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[[claude.accounts]]\nname = "a"\n', "exactly one of token, token_env"),
        (
            '[[claude.accounts]]\nname = "a"\ntoken = "t"\ntoken_env = "E"\n',
            "got token and token_env",
        ),
        ('[[codex.accounts]]\nname = "a"\ntoken = "t"\n', "clibridge login codex --account a"),
        ('[[claude.accounts]]\nname = "a/b"\ntoken = "t"\n', "'a/b' is not an account name"),
        ('[[claude.accounts]]\ntoken = "t"\n', "account [0] has no name"),
        ('[[claude.accounts]]\nname = "a"\ntokn = "t"\n', "unknown field 'tokn'"),
        (
            '[[claude.accounts]]\nname = "a"\ntoken = "t"\n[[claude.accounts]]\nname = "a"\n'
            'token = "u"\n',
            "'a' is used twice",
        ),
        ('[[claude.accounts]]\nname = "a"\ntoken_env = "NO-NAME"\n', "not an environment"),
        (
            '[claude]\nuse_real_home = true\n[[claude.accounts]]\nname = "a"\ntoken = "t"\n',
            "do not go together",
        ),
    ],
)
def test_account_errors_name_the_account_and_never_the_token(
    tmp_path: Path, toml: str, message: str
) -> None:
    file = tmp_path / "c.toml"
    file.write_text(toml)
    with pytest.raises(ConfigError, match="accounts") as caught:
        load_config({}, {}, file)
    assert message in str(caught.value)
    assert '"t"' not in str(caught.value) and "'t'" not in str(caught.value)


def test_each_account_gets_its_token_and_its_own_state_dir(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("file-token\n")
    file = tmp_path / "c.toml"
    file.write_text(
        f'[[claude.accounts]]\nname = "a"\ntoken_env = "A_TOKEN"\n'
        f'[[claude.accounts]]\nname = "b"\ntoken_file = "{token_file}"\n'
    )
    config = load_config({}, {}, file)
    claude = backend("claude")
    environ = {"A_TOKEN": "env-token", "CLAUDE_CODE_OAUTH_TOKEN": "the-default-login"}
    a, b = config.claude.accounts
    assert claude.account_environ(a, environ)["CLAUDE_CODE_OAUTH_TOKEN"] == "env-token"
    assert claude.account_environ(b, environ)["CLAUDE_CODE_OAUTH_TOKEN"] == "file-token"
    with pytest.raises(ValueError, match="A_TOKEN is not set") as caught:
        claude.account_environ(a, {})
    # a missing token stops the start with a message, not a traceback
    with pytest.raises(SystemExit, match="A_TOKEN is not set"):
        choose_backends(load_config({"backend": "fake"}, {}, file), {})
    assert account_state_dir(tmp_path, "a") == tmp_path / "accounts" / "a"
    assert "env-token" not in str(caught.value)


def test_codex_accounts_are_logged_in_each_in_its_own_codex_home(tmp_path: Path) -> None:
    state = tmp_path / "state"
    file = tmp_path / "c.toml"
    file.write_text('[[codex.accounts]]\nname = "one"\n[[codex.accounts]]\nname = "two"\n')
    fake_codex = tmp_path / "codex"
    fake_codex.write_text("#!/bin/sh\n")
    fake_codex.chmod(0o755)
    config = load_config(
        {"backend": "codex", "state_dir": state, "codex.command": (str(fake_codex),)}, {}, file
    )
    auth = state / "accounts" / "one" / "codex" / "home" / "auth.json"
    auth.parent.mkdir(parents=True)
    auth.write_text("{}")
    choice = choose_backends(config, {"PATH": os.environ.get("PATH", "")})
    (note,) = choice.notes
    assert "accounts one (" in note and "no login detected for two" in note


def test_login_codex_account_runs_the_cli_login_in_the_accounts_codex_home(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "codex"
    script.write_text('#!/bin/sh\necho "ARGS $* HOME=$CODEX_HOME"\n')
    script.chmod(0o755)
    file = tmp_path / "c.toml"
    file.write_text('[[codex.accounts]]\nname = "team"\n')
    env = {
        "PATH": os.environ.get("PATH", ""),
        "CLIBRIDGE_CODEX_COMMAND": str(script),
        "CLIBRIDGE_STATE_DIR": str(tmp_path / "state"),
        "CLIBRIDGE_CONFIG": str(file),
    }
    assert main(["login", "codex", "--account", "team", "--device-auth"], env) == 0
    home = tmp_path / "state" / "accounts" / "team" / "codex" / "home"
    assert capfd.readouterr().out == f"ARGS login --device-auth HOME={home}\n"
    # our options may come after the backend's own
    assert main(["login", "codex", "--device-auth", "--account=team"], env) == 0
    assert capfd.readouterr().out == f"ARGS login --device-auth HOME={home}\n"
    # an account the configuration does not name: refused, nothing runs
    assert main(["login", "codex", "--account", "tema"], env) == 2
    captured = capfd.readouterr()
    assert captured.out == "" and "no codex account 'tema'" in captured.err
    assert "configured: team" in captured.err
