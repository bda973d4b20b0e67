"""Shared test set-up: the model stub and real-CLI fixtures come from the bundled plugin.

Other fixtures live in the test modules that use them.

Under ``CI`` a skipped test is a failed one: everything a test needs (the pinned CLIs,
OpenClaw, LiteLLM, tmux, chromium, curl) is installed by the README's test command, so a
skip there can only hide a missing install or a broken check.
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

pytest_plugins = ["clibridge.testing.pytest_plugin"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped under CI (everything is installed there): {reason}"
