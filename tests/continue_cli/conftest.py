"""Fixtures for the tests that run the real Continue CLI client against clibridge.

``continue_install`` finds the pinned install (:func:`tests.continue_cli.harness.
find_continue`). When it is missing the tests skip with a reason naming
``scripts/install-continue.sh``, except when the ``CI`` environment variable is set: then they
fail, so CI can never pass by skipping them (the policy of the ``realcli`` fixtures in ``clibridge.testing.pytest_plugin``).
"""

from __future__ import annotations

import pytest

from tests._real_clients import require_install

from .harness import ContinueInstall, find_continue


@pytest.fixture(scope="session")
def continue_install() -> ContinueInstall:
    """The pinned Continue CLI; skips (fails under ``CI``) when it is missing."""
    install = find_continue()
    require_install("Continue CLI", install.problem)
    return install
