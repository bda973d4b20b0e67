"""Shared test set-up: the model stub and real-CLI fixtures come from the bundled plugin.

Other fixtures live in the test modules that use them.
"""

from __future__ import annotations

pytest_plugins = ["clibridge.testing.pytest_plugin"]
