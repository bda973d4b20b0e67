"""Fixtures for the tests that run the real OpenClaw client against clibridge.

``openclaw_install`` finds the pinned install (:func:`tests.openclaw.harness.find_openclaw`).
When it is missing the tests skip with a reason naming ``scripts/install-openclaw.sh``, except
when the ``CI`` environment variable is set: then they fail, so CI can never pass by skipping
them (the policy of the ``realcli`` fixtures in ``clibridge.testing.pytest_plugin``).
"""

from __future__ import annotations

import pytest

from tests._real_clients import require_install

from .harness import OpenClawInstall, find_openclaw


@pytest.fixture(scope="session")
def openclaw_install() -> OpenClawInstall:
    """The pinned OpenClaw and its Node; skips (fails under ``CI``) when they are missing."""
    install = find_openclaw()
    require_install("OpenClaw", install.problem)
    return install
