"""``clibridge litellm-config``: the LiteLLM proxy config, pure (tests/scale runs it for real)."""

from __future__ import annotations

from pathlib import Path

import pytest

from clibridge._cli import main
from clibridge._litellm import (
    LiteLLMConfigError,
    build_config,
    callback_source,
    instance_url,
    model_names,
    to_yaml,
)
from clibridge._models import BUILTIN


def test_one_deployment_per_instance_and_model() -> None:
    config = build_config(["http://a:7483", "http://b:7483/v1/"], key="k", turn_timeout=100)
    deployments = config["model_list"]
    assert len(deployments) == 2 * len(BUILTIN)
    assert len({d["model_info"]["id"] for d in deployments}) == len(deployments)
    by_name = {(d["model_name"], d["model_info"]["clibridge_instance"]): d for d in deployments}
    claude = by_name[("sonnet", "http://b:7483")]["litellm_params"]
    assert claude["model"] == "anthropic/sonnet" and claude["api_base"] == "http://b:7483"
    codex = by_name[("gpt-5.5", "http://a:7483")]["litellm_params"]
    assert codex["model"] == "openai/gpt-5.5" and codex["api_base"] == "http://a:7483/v1"
    assert codex["api_key"] == "k"
    assert codex["timeout"] == codex["stream_timeout"] == 160.0
    router = config["router_settings"]
    assert router["retry_policy"]["RateLimitErrorRetries"] == 3
    assert router["retry_policy"]["TimeoutErrorRetries"] == 0
    assert "session_affinity" in router["optional_pre_call_checks"]
    assert "callbacks" not in config["litellm_settings"]


def test_key_from_the_environment_and_the_probe_callback() -> None:
    config = build_config(["http://a:1"], models=model_names(["claude"]), readyz_callback=True)
    assert {d["litellm_params"]["api_key"] for d in config["model_list"]} == {
        "os.environ/CLIBRIDGE_API_KEY"
    }
    assert {d["model_info"]["clibridge_backend"] for d in config["model_list"]} == {"claude"}
    assert config["litellm_settings"]["callbacks"] == ["clibridge_readyz.readyz_filter"]


@pytest.mark.parametrize(
    ("urls", "problem"),
    [
        ([], "at least one"),
        (["ftp://a:1"], "expected the URL"),
        (["http://a:1/api"], "no path"),
        (["http://a:1", "http://a:1/v1"], "named twice"),
    ],
)
def test_bad_instances(urls: list[str], problem: str) -> None:
    with pytest.raises(LiteLLMConfigError, match=problem):
        build_config(urls)


def test_yaml_is_block_style_with_quoted_strings() -> None:
    text = to_yaml(
        {"a": {"b": [{"c": "x: y", "d": 1.5}, "e"], "f": [], "g": None, "h": True}},
        header="two\nlines",
    )
    assert text == (
        "# two\n# lines\n"
        "a:\n"
        "  b:\n"
        '    - c: "x: y"\n'
        "      d: 1.5\n"
        '    - "e"\n'
        "  f: []\n"
        "  g: null\n"
        "  h: true\n"
    )


def test_command_prints_or_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["litellm-config", "--instance", "http://a:1", "--backend", "codex"], {}) == 0
    out = capsys.readouterr().out
    assert out.startswith("# LiteLLM proxy config for clibridge")
    assert '  - model_name: "gpt-5"' in out and "sonnet" not in out
    assert main(["litellm-config", "--instance", "a:1"], {}) == 2
    assert "expected the URL" in capsys.readouterr().err
    argv = ["litellm-config", "--instance", "http://a:1", "--out", str(tmp_path), "--cooldown", "3"]
    assert main(argv, {}) == 0
    written = (tmp_path / "config.yaml").read_text()
    assert "cooldown_time: 3.0" in written and "clibridge_readyz.readyz_filter" in written
    assert (tmp_path / "clibridge_readyz.py").read_text() == callback_source()
    compile(callback_source(), "clibridge_readyz.py", "exec")
    assert instance_url(" http://h:2/ ") == "http://h:2"
