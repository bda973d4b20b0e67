"""Scale, seed and the figures the chaos and fuzz tests report.

``CLIBRIDGE_CHAOS_SCALE`` (default 1) multiplies the request counts (and the number of
idle connections): ``CLIBRIDGE_CHAOS_SCALE=10`` is a manual soak of ~15 minutes.
``CLIBRIDGE_CHAOS_SEED`` fixes the random choices (default: a fixed seed, so a CI failure
replays); ``CLIBRIDGE_CHAOS_REPORT=path.json`` also writes the figures to that file.

Tests put their figures in :data:`FIGURES`; ``conftest.py`` prints them at the end of
the run (``pytest_terminal_summary``), whether the tests passed or not.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

SCALE = float(os.environ.get("CLIBRIDGE_CHAOS_SCALE", "1"))
SEED = int(os.environ.get("CLIBRIDGE_CHAOS_SEED", "15"))
REPORT = os.environ.get("CLIBRIDGE_CHAOS_REPORT")

#: section -> figures, in the order the tests ran
FIGURES: dict[str, dict[str, Any]] = {}


def scaled(n: int) -> int:
    return max(1, round(n * SCALE))


def record(section: str, **figures: Any) -> None:
    FIGURES.setdefault(section, {}).update(figures)


def render() -> str:
    lines = [f"chaos / fuzz figures (scale {SCALE:g}, seed {SEED})"]
    for section, figures in FIGURES.items():
        lines.append(f"  {section}:")
        for key, value in figures.items():
            shown = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
            lines.append(f"    {key}: {shown}")
    return "\n".join(lines)


def write_report() -> None:
    if REPORT and FIGURES:
        payload = {
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "scale": SCALE,
            "seed": SEED,
            "load_average": os.getloadavg(),
            "cpus": os.cpu_count(),
            "figures": FIGURES,
        }
        Path(REPORT).write_text(json.dumps(payload, indent=2) + "\n")
