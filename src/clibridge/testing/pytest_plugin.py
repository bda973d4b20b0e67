"""pytest fixtures for the model stub and the real CLIs.

Enable with ``pytest_plugins = ["clibridge.testing.pytest_plugin"]`` in a ``conftest.py``
(needs pytest-trio in ``trio_mode``).

Fixtures:

- ``model_stub``: a running :class:`~clibridge.testing.model_stub.ModelStub` (trio fixture).
- ``real_clis`` (session): where the pinned binaries are (:func:`find_real_clis`).
- ``real_claude`` / ``real_codex``: a :class:`ClaudeSetup` / :class:`CodexSetup` pointed at
  ``model_stub``, with a fresh home under ``tmp_path``.

A test that needs a binary that is not installed is skipped with a reason naming
``scripts/install-real-clis.sh``, except when the ``CI`` environment variable is set: then it
fails, so a CI job without the CLIs can never pass by skipping everything.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from .model_stub import ModelStub
from .realcli import ClaudeSetup, CodexSetup, RealClis, claude_setup, codex_setup, find_real_clis


def require_real_cli(clis: RealClis, name: str) -> None:
    """Skip (or, under ``CI``, fail) the running test when CLI ``name`` is not available."""
    reason = clis.missing(name)
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"real {name} CLI missing in CI: {reason}", pytrace=False)
    pytest.skip(f"real {name} CLI missing: {reason}")


@pytest.fixture
async def model_stub(nursery: trio.Nursery) -> ModelStub:
    """A model stub serving on 127.0.0.1 for the duration of the test."""
    stub = ModelStub()
    await nursery.start(stub.run)
    return stub


@pytest.fixture(scope="session")
def real_clis() -> RealClis:
    """The pinned real CLIs as installed (never starts them)."""
    return find_real_clis()


# Why separate sync fixtures: a skip raised inside a fixture that depends on a trio fixture
# reaches pytest wrapped in an exception group, and the skip reason is lost.
@pytest.fixture
def claude_binary(real_clis: RealClis) -> Path:
    """The pinned claude executable; skips (fails under ``CI``) when it is missing."""
    require_real_cli(real_clis, "claude")
    assert real_clis.claude is not None
    return real_clis.claude


@pytest.fixture
def codex_clis(real_clis: RealClis) -> RealClis:
    """``real_clis``, after skipping (failing under ``CI``) when codex is missing."""
    require_real_cli(real_clis, "codex")
    return real_clis


@pytest.fixture
def real_claude(claude_binary: Path, model_stub: ModelStub, tmp_path: Path) -> ClaudeSetup:
    """The real claude set up against ``model_stub`` in a fresh HOME."""
    return claude_setup(claude_binary, model_stub.base_url, tmp_path / "claude-home")


@pytest.fixture
def real_codex(codex_clis: RealClis, model_stub: ModelStub, tmp_path: Path) -> CodexSetup:
    """The real codex set up against ``model_stub`` in a fresh CODEX_HOME."""
    return codex_setup(codex_clis, model_stub.base_url, tmp_path / "codex-home")
