"""The state dir and the spawn homes in it are readable by this user only."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from clibridge._backends.claude.home import prepare_claude_home
from clibridge._backends.codex.home import prepare_codex_home
from clibridge._config import ClaudeConfig, CodexConfig
from clibridge._state_dir import private_dir, secure_state_dir


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    """The umask most users have: what made the bug visible."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def tree_modes(root: Path) -> dict[str, int]:
    out = {".": mode(root)}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            out[str(path.relative_to(root))] = mode(path)
    return out


def test_fresh_state_dir_and_spawn_homes_are_private(tmp_path: Path) -> None:
    """Regression (issue 15, item 7): the state dir, ``claude/`` and the claude spawn home
    were created 0755 (only the codex home was 0700). Now every directory clibridge
    creates -- missing parents of the state dir included -- is 0700, every file it
    writes 0600."""
    state = tmp_path / "missing-parent" / "state"
    assert secure_state_dir(state) == 0
    prepare_claude_home(ClaudeConfig(), state, environ={"PATH": "/bin"})
    prepare_codex_home(CodexConfig(), state, environ={"PATH": "/bin"})
    modes = tree_modes(state)
    for name in (
        ".",
        "claude",
        "claude/home",
        "claude/home/.claude",
        "claude/work",
        "codex",
        "codex/home",
        "codex/user",
        "codex/work",
    ):
        assert modes.pop(name) == 0o700, name
    assert modes == {
        "claude/home/.claude.json": 0o600,
        "claude/home/.claude/settings.json": 0o600,
    }
    assert mode(tmp_path / "missing-parent") == 0o700


def test_loose_tree_from_an_earlier_version_is_tightened_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression (issue 15, item 7): a state dir made 0755 by an earlier clibridge, with
    transcripts a CLI wrote 0644, is fixed at start-up and the log says so. Owner bits
    stay (an executable stays executable); symlinks are not followed out of the tree."""
    state = tmp_path / "state"
    projects = state / "claude" / "home" / ".claude" / "projects" / "p"
    projects.mkdir(parents=True, mode=0o755)
    for d in (state, state / "claude", state / "claude" / "home", projects.parent, projects):
        d.chmod(0o755)
    transcript = projects / "session.jsonl"
    transcript.write_text("{}\n")
    transcript.chmod(0o644)
    (state / "codex" / "home").mkdir(parents=True)
    auth = state / "codex" / "home" / "auth.json"
    auth.write_text("{}")
    auth.chmod(0o640)
    tool = state / "codex" / "home" / "tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    outside = tmp_path / "outside.txt"
    outside.write_text("not ours")
    outside.chmod(0o644)
    (state / "link").symlink_to(outside)

    with caplog.at_level(logging.WARNING, logger="clibridge._state_dir"):
        changed = secure_state_dir(state)

    modes = tree_modes(state)
    assert all(m & 0o077 == 0 for name, m in modes.items() if name != "link"), modes
    assert modes["claude/home/.claude/projects/p/session.jsonl"] == 0o600
    assert modes["codex/home/auth.json"] == 0o600
    assert modes["codex/home/tool"] == 0o700
    assert modes["claude/home/.claude/projects"] == 0o700
    assert mode(outside) == 0o644
    assert changed == 11
    (record,) = caplog.records
    message = record.getMessage()
    assert f"state dir {state}: took group/other access away from 11 path(s)" in message
    assert "(8 directories, 3 files)" in message
    assert ": . 0755 -> 0700, " in message

    caplog.clear()
    assert secure_state_dir(state) == 0
    assert not caplog.records


def test_login_path_fixes_the_dirs_it_walks_through(tmp_path: Path) -> None:
    """``clibridge login codex`` (which runs before any server start) makes the state
    dir and the codex home private too, even when they existed 0755."""
    state = tmp_path / "state"
    (state / "codex" / "home").mkdir(parents=True)
    for d in (state, state / "codex", state / "codex" / "home"):
        d.chmod(0o755)
    home = prepare_codex_home(CodexConfig(), state, environ={"PATH": "/bin"})
    assert home.codex_home == state / "codex" / "home"
    for d in (state, state / "codex", state / "codex" / "home", state / "codex" / "user"):
        assert mode(d) == 0o700, d


def test_private_dir_refuses_a_path_outside_the_state_dir(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is not in the subpath"):
        private_dir(tmp_path / "elsewhere", under=tmp_path / "state")
