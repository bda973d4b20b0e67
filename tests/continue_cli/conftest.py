"""Fixtures for the tests that run the real Continue CLI client against clibridge.

``continue_install`` finds the pinned install (:func:`tests.continue_cli.harness.
find_continue`). When it is missing the tests skip with a reason naming
``scripts/install-continue.sh``, except when the ``CI`` environment variable is set: then they
fail, so CI can never pass by skipping them (the policy of the ``realcli`` fixtures in ``clibridge.testing.pytest_plugin``).
"""

from __future__ import annotations

import os

import pytest

from .harness import ContinueInstall, find_continue


@pytest.fixture(scope="session")
def continue_install() -> ContinueInstall:
    """The pinned Continue CLI; skips (fails under ``CI``) when it is missing."""
    install = find_continue()
    if install.problem is not None:
        if os.environ.get("CI"):
            pytest.fail(f"Continue CLI missing in CI: {install.problem}", pytrace=False)
        pytest.skip(f"Continue CLI missing: {install.problem}")
    return install
