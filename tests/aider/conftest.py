"""Fixtures for the tests that run the real Aider client against clibridge.

``aider_install`` finds the pinned install (:func:`tests.aider.harness.find_aider`). When it
is missing the tests skip with a reason naming ``scripts/install-aider.sh``, except when the
``CI`` environment variable is set: then they fail, so CI can never pass by skipping them
(the policy of the ``realcli`` fixtures in ``clibridge.testing.pytest_plugin``).
"""

from __future__ import annotations

import pytest

from tests._real_clients import require_install

from .harness import AiderInstall, find_aider


@pytest.fixture(scope="session")
def aider_install() -> AiderInstall:
    """The pinned Aider; skips (fails under ``CI``) when it is missing."""
    install = find_aider()
    require_install("Aider", install.problem)
    return install
