"""Shared fixtures. Real-CLI fixtures live in clibridge.testing.realcli (pytest plugin)."""

from __future__ import annotations
