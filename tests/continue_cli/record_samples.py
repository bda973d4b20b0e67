"""Record the Continue CLI's real traffic to clibridge: tests/testing/samples/continue/.

Runs every case of :mod:`tests.continue_cli.cases` (the pinned ``cn`` against an in-process
clibridge on the fake claude, a recording proxy in front of it) and writes ``<case>.jsonl``
(one line per HTTP exchange, as :mod:`clibridge.testing.recording_proxy` writes it) and
``summary.json`` (``cn``'s exit status, run time, output and network attempts per case, the
requests' paths and flags, the claude pool's ``/v1/stats`` afterwards)::

    ./scripts/install-continue.sh
    .venv/bin/python -m tests.continue_cli.record_samples \\
        --work-dir /tmp/clibridge-continue --out tests/testing/samples/continue

``cn``'s system prompt names its working directory, so record with the work directory
outside the repository: the script refuses to write samples that name the checkout.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import trio

from tests._real_clients import not_written, record_samples

from .cases import run_matrix, summary
from .harness import REPO_ROOT, find_continue


def _record(work: Path, staging: Path) -> tuple[list[str], dict[str, Any]]:
    install = find_continue()
    matrix = trio.run(run_matrix, install, work, staging)
    failed = {
        name: result.describe()
        for name, result in matrix.results.items()
        if result.run.returncode != 0 or result.run.unexpected_network
    }
    errors = not_written(failed, matrix.clean_error)
    return errors, {} if errors else summary(matrix)


def main(argv: list[str] | None = None) -> int:
    return record_samples(
        argv,
        __doc__,
        problem=lambda: find_continue().problem,
        record=_record,
        private=lambda work: (str(REPO_ROOT),),
    )


if __name__ == "__main__":
    sys.exit(main())
