"""Configuration loading: precedence, names, coercion, errors that name setting and source."""

from __future__ import annotations

import tomllib
from pathlib import Path

import attrs
import pytest

from clibridge._config import Config
from clibridge._config_load import ConfigError, dump_toml, load_config, settings


def test_defaults() -> None:
    assert load_config({}, {}, None) == Config()


def test_precedence_defaults_file_env_flags(tmp_path: Path) -> None:
    file = tmp_path / "c.toml"
    file.write_text(
        'backend = "fake"\n[server]\nport = 1111\nkeepalive_interval = 5\nmax_messages = 10\n'
        '[claude.pool]\nworkers = 7\n[models]\nfast = "claude:claude-haiku-4-5"\n'
    )
    env = {"CLIBRIDGE_PORT": "2222", "CLIBRIDGE_SERVER__MAX_MESSAGES": "20"}
    config = load_config({"server.port": 3333, "models": ["deep=codex:gpt-5@high"]}, env, file)
    assert config.backend == "fake"  # file
    assert config.server.keepalive_interval == 5.0  # file, int -> float
    assert config.server.max_messages == 20  # env beats file
    assert config.server.port == 3333  # flag beats env
    assert config.claude.pool.workers == 7
    assert config.models == {"fast": "claude:claude-haiku-4-5", "deep": "codex:gpt-5@high"}
    # CLIBRIDGE_CONFIG names the file when no --config is given
    assert load_config({}, {"CLIBRIDGE_CONFIG": str(file)}, None).server.port == 1111


def test_shared_pool_flags_and_specific_ones() -> None:
    config = load_config(
        {"pool.workers": 3, "claude.pool.workers": 5, "enable_cli_tools": True},
        {"CLIBRIDGE_SPARES": "0", "CLIBRIDGE_CODEX_SPARES": "2"},
        None,
    )
    assert (config.claude.pool.workers, config.codex.pool.workers) == (5, 3)
    assert (config.claude.pool.spares, config.codex.pool.spares) == (0, 2)
    assert config.claude.enable_cli_tools and config.codex.enable_cli_tools
    # a specific env var does not beat a shared flag: flags win as a source
    config = load_config({"pool.workers": 3}, {"CLIBRIDGE_CLAUDE_WORKERS": "9"}, None)
    assert config.claude.pool.workers == 3


def test_env_text_values() -> None:
    env = {
        "CLIBRIDGE_CLAUDE_COMMAND": "clibridge-fake-claude --scenario 'a b'",
        "CLIBRIDGE_USE_REAL_HOME": "yes",
        "CLIBRIDGE_CLAUDE__POOL__QUEUE_TIMEOUT": "2.5",
        "CLIBRIDGE_STATE_DIR": "/tmp/x",
        "CLIBRIDGE_MODELS": "a=claude:x, b=codex:y",
        "CLIBRIDGE_FAKE_SCENARIO": "not a setting, ignored",
    }
    config = load_config({}, env, None)
    assert config.claude.command == ("clibridge-fake-claude", "--scenario", "a b")
    assert config.codex.use_real_home is True
    assert config.claude.pool.queue_timeout == 2.5
    assert config.state_dir == Path("/tmp/x")
    assert config.models == {"a": "claude:x", "b": "codex:y"}


@pytest.mark.parametrize(
    ("flags", "env", "toml", "message"),
    [
        (
            {},
            {"CLIBRIDGE_PORT": "eighty"},
            "",
            "server.port = 'eighty' (from env CLIBRIDGE_PORT): expected an integer",
        ),
        ({"server.port": 70000}, {}, "", "(from flag --port): a port is between 0 and 65535"),
        ({}, {}, "[claude.pool]\nworkers = 0\n", "claude.pool.workers = 0 (from file"),
        ({}, {}, "[server]\nprot = 1\n", "unknown setting 'server.prot'"),
        ({}, {}, "[server\n", "is not valid TOML"),
        ({}, {}, 'backend = "gpt"\n', "expected one of 'auto', 'claude', 'codex', 'fake', 'both'"),
        (
            {},
            {"CLIBRIDGE_WORKERS": "-1"},
            "",
            "(from env CLIBRIDGE_WORKERS): 'workers' must be > 0",
        ),
        ({}, {"CLIBRIDGE_ENABLE_CLI_TOOLS": "maybe"}, "", "expected a boolean"),
        ({"log_level": "loud"}, {}, "", "expected one of debug, info"),
        ({"models": ["nonsense"]}, {}, "", "models = ['nonsense'] (from flag --model)"),
        ({"models": ["x=gpt:y"]}, {}, "", "models.x: expected 'claude:<model id>'"),
        ({}, {"CLIBRIDGE_AUTH_TOKEN": " "}, "", "the auth token must not be empty"),
    ],
)
def test_errors_name_the_setting_and_source(
    tmp_path: Path, flags: dict[str, object], env: dict[str, str], toml: str, message: str
) -> None:
    file = None
    if toml:
        file = tmp_path / "c.toml"
        file.write_text(toml)
    with pytest.raises(ConfigError) as caught:
        load_config(flags, env, file)
    assert message in str(caught.value)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config({}, {}, Path("/nonexistent/clibridge.toml"))


def test_auth_token_sources(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    assert load_config({}, {"CLIBRIDGE_API_KEY": "k1"}, None).server.auth_token == "k1"
    assert (
        load_config(
            {}, {"CLIBRIDGE_API_KEY": "k1", "CLIBRIDGE_AUTH_TOKEN": "k2"}, None
        ).server.auth_token
        == "k2"
    )
    config = load_config(
        {"server.auth_token_file": str(token_file)}, {"CLIBRIDGE_API_KEY": "k1"}, None
    )
    assert config.server.auth_token == "from-file"
    assert (
        load_config({}, {"CLIBRIDGE_AUTH_TOKEN_FILE": str(token_file)}, None).server.auth_token
        == "from-file"
    )
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        load_config({"server.auth_token_file": str(tmp_path / "empty")}, {}, None)
    with pytest.raises(ConfigError, match="cannot read the auth token file"):
        load_config({"server.auth_token_file": str(tmp_path / "missing")}, {}, None)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "example.com"])
def test_non_loopback_without_token_refuses(host: str) -> None:
    with pytest.raises(ConfigError, match="without an auth token"):
        load_config({"server.host": host}, {}, None)
    assert (
        load_config({"server.host": host, "server.auth_token": "t"}, {}, None).server.host == host
    )


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_needs_no_token(host: str) -> None:
    assert load_config({"server.host": host}, {}, None).server.auth_token is None


def test_every_config_leaf_is_a_documented_setting() -> None:
    def leaves(cls: type, prefix: str = "") -> list[str]:
        out: list[str] = []
        for field in attrs.fields(cls):
            if (
                attrs.has(field.type)
                if isinstance(field.type, type)
                else field.name in ("server", "claude", "codex", "pool")
            ):
                sub = {
                    "server": "ServerConfig",
                    "claude": "ClaudeConfig",
                    "codex": "CodexConfig",
                    "pool": "PoolConfig",
                }[field.name]
                import clibridge._config as c

                out += leaves(getattr(c, sub), f"{prefix}{field.name}.")
            else:
                out.append(prefix + field.name)
        return out

    documented = {s.key: s for s in settings()}
    for key in leaves(Config):
        assert key in documented, key
        assert documented[key].help, f"{key} has no help text"


def test_dump_round_trips_and_redacts(tmp_path: Path) -> None:
    config = load_config(
        {"server.auth_token": "s3cret", "models": ["a=claude:x"], "claude.command": "fake --x"},
        {},
        None,
    )
    text = dump_toml(config)
    assert "s3cret" not in text and "<redacted>" in text
    tomllib.loads(text)
    file = tmp_path / "c.toml"
    file.write_text(dump_toml(config, redact=False))
    assert load_config({}, {}, file) == config


def test_pass_env_takes_names_not_a_comma_list() -> None:
    """Regression: ``--claude-pass-env A,B`` became one variable named "A,B", so neither
    reached the CLI and the real claude answered "Not logged in"."""
    with pytest.raises(ConfigError, match="is not an environment variable name"):
        load_config({"claude.pass_env": ("ANTHROPIC_API_KEY,ANTHROPIC_BASE_URL",)}, {}, None)
    env = {"CLIBRIDGE_CLAUDE_PASS_ENV": "ANTHROPIC_API_KEY ANTHROPIC_BASE_URL"}
    config = load_config({}, env, None)
    assert config.claude.pass_env == ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL")
