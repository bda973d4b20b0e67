from __future__ import annotations

import pytest

from clibridge._errors import ModelNotFound
from clibridge._models import ModelTable, Route, parse_target


def test_aliases_suffixes_and_passthrough() -> None:
    table = ModelTable(["claude", "codex"])
    assert table.resolve("sonnet") == Route("claude", "claude-sonnet-4-5")
    assert table.resolve("claude-sonnet-4-5-20250929") == Route(
        "claude", "claude-sonnet-4-5-20250929"
    )
    assert table.resolve("gpt-5.5-high") == Route("codex", "gpt-5.5", "high")
    assert table.resolve("gpt-5.3-codex") == Route("codex", "gpt-5.3-codex")
    assert table.resolve("gpt-6") == Route("codex", "gpt-6")


def test_unknown_model_lists_what_is_available() -> None:
    table = ModelTable(["claude"])
    with pytest.raises(ModelNotFound, match=r"available models: .*sonnet") as info:
        table.resolve("llama3")
    assert info.value.param == "$.model"
    with pytest.raises(ModelNotFound, match="codex backend, which is not running"):
        table.resolve("gpt-5.5")
    assert all(m.backend == "claude" for m in table.listing())


def test_overrides_and_their_errors() -> None:
    table = ModelTable(["codex"], overrides={"fast": "codex:gpt-5.5@low"})
    assert table.resolve("fast") == Route("codex", "gpt-5.5", "low")
    with pytest.raises(ValueError, match=r"models\.bad"):
        parse_target("bad", "gpt-5.5")
    with pytest.raises(ValueError, match="effort"):
        parse_target("bad", "codex:gpt-5.5@turbo")


def test_fake_backends_are_marked() -> None:
    table = ModelTable(["claude"], fake_backends=["claude"])
    assert all(m.fake for m in table.listing())


def test_names_are_case_insensitive() -> None:
    """Regression (issue 14): ``Sonnet`` and ``GPT-5.5-HIGH`` were 404."""
    table = ModelTable(["claude", "codex"], overrides={"Fast": "codex:gpt-5.5@low"})
    assert table.resolve("Sonnet") == Route("claude", "claude-sonnet-4-5")
    assert table.resolve("GPT-5.5-HIGH") == Route("codex", "gpt-5.5", "high")
    assert table.resolve("FAST") == Route("codex", "gpt-5.5", "low")
    # a pass-through id reaches the CLI as the vendor spells it
    assert table.resolve("Claude-Sonnet-4-5-20250929") == Route(
        "claude", "claude-sonnet-4-5-20250929"
    )
    assert [m.id for m in table.listing() if m.id.lower() == "fast"] == ["Fast"]


def test_every_alias_has_limits() -> None:
    for info in ModelTable(["claude", "codex"]).listing():
        assert info.context_window is not None and info.max_output_tokens is not None, info.id
        assert info.max_output_tokens < info.context_window
