"""The child environment is an allow-list: keys and base URLs reach a CLI only on purpose."""

from __future__ import annotations

from pathlib import Path

from clibridge._backends.claude import home as claude_home
from clibridge._backends.codex import home as codex_home
from clibridge._config import ClaudeConfig, CodexConfig

INBOUND = {
    "PATH": "/usr/bin",
    "LC_ALL": "C.UTF-8",
    "ANTHROPIC_API_KEY": "sk-ant",
    "ANTHROPIC_BASE_URL": "http://elsewhere",
    "OPENAI_API_KEY": "sk-oai",
    "CODEX_HOME": "/root/.codex",
    "CLAUDECODE": "1",
    "CLIBRIDGE_AUTH_TOKEN": "secret",
    "CLIBRIDGE_FAKE_SCENARIO": "/x.json",
    "AWS_SECRET_ACCESS_KEY": "aws",
}


def test_denied_names_are_never_on_an_allow_list() -> None:
    assert not set(claude_home.ALLOWED_ENV) & set(claude_home.DENIED_ENV)
    assert not set(codex_home._ALLOWED) & set(codex_home.DENIED_ENV)


def test_claude_child_env() -> None:
    env = claude_home.child_env(ClaudeConfig(), Path("/spawn"), INBOUND)
    assert env["PATH"] == "/usr/bin"
    assert env["LC_ALL"] == "C.UTF-8"
    assert env["HOME"] == "/spawn"
    assert env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"
    for name in (*claude_home.DENIED_ENV, "OPENAI_API_KEY", "AWS_SECRET_ACCESS_KEY"):
        assert name not in env
    assert not [n for n in env if n.startswith("CLIBRIDGE_")]
    on_purpose = claude_home.child_env(
        ClaudeConfig(pass_env=("ANTHROPIC_API_KEY", "CLIBRIDGE_AUTH_TOKEN")), Path("/s"), INBOUND
    )
    assert on_purpose["ANTHROPIC_API_KEY"] == "sk-ant"
    assert "CLIBRIDGE_AUTH_TOKEN" not in on_purpose  # never, even when named


def test_codex_child_env() -> None:
    env = codex_home.child_env(CodexConfig(), Path("/ch"), Path("/u"), INBOUND)
    assert (env["HOME"], env["CODEX_HOME"]) == ("/u", "/ch")
    for name in (*codex_home.DENIED_ENV[:-1], "ANTHROPIC_API_KEY", "CLAUDECODE"):
        assert name not in env
    assert not [n for n in env if n.startswith("CLIBRIDGE_")]


def test_only_the_locale_variables_the_clis_use_pass() -> None:
    """Regression (issue 15, item 9): every ``LC_*`` variable reached the CLIs -- an open
    namespace that ssh forwards and people tunnel values through. Only LANG, LANGUAGE,
    LC_ALL and LC_CTYPE pass now; others only when named in ``pass_env``."""
    inbound = {
        "PATH": "/usr/bin",
        "LANG": "de_DE.UTF-8",
        "LANGUAGE": "de",
        "LC_ALL": "C.UTF-8",
        "LC_CTYPE": "en_US.UTF-8",
        "LC_TIME": "de_DE.UTF-8",
        "LC_TERMINAL": "iTerm2",
        "LC_MY_TOKEN": "tunnelled-through-ssh",
    }
    passed = {"LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE"}
    claude = claude_home.child_env(ClaudeConfig(), Path("/spawn"), inbound)
    codex = codex_home.child_env(CodexConfig(), Path("/ch"), Path("/u"), inbound)
    for env in (claude, codex):
        assert {n for n in env if n.startswith(("LC_", "LANG"))} == passed
        assert all(env[n] == inbound[n] for n in passed)
    on_purpose = claude_home.child_env(ClaudeConfig(pass_env=("LC_TIME",)), Path("/s"), inbound)
    assert on_purpose["LC_TIME"] == "de_DE.UTF-8"
    assert "LC_MY_TOKEN" not in on_purpose
