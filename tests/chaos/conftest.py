"""Chaos and fuzz tests (marker ``chaos``): print their figures at the end of the run."""

from __future__ import annotations

from typing import Any

from ._figures import FIGURES, render, write_report


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if FIGURES:
        terminalreporter.write_sep("=", "chaos / fuzz figures")
        terminalreporter.write_line(render())
        write_report()
