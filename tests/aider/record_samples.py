"""Record Aider's real traffic to clibridge: the samples in tests/testing/samples/aider/.

Runs every case of :mod:`tests.aider.cases` (the pinned Aider against an in-process clibridge
on the fake claude, a recording proxy in front of it) and writes ``<case>.jsonl`` (one line per
HTTP exchange, as :mod:`clibridge.testing.recording_proxy` writes it) and ``summary.json``
(Aider's exit status, run time and output per case, the requests' paths and flags, the claude
pool's ``/v1/stats`` afterwards)::

    ./scripts/install-aider.sh
    .venv/bin/python -m tests.aider.record_samples \\
        --work-dir /tmp/clibridge-aider --out tests/testing/samples/aider

Aider's prompts name no paths (the file is ``hello.py``, relative), but the script refuses to
write samples that name the repository's checkout or the work directory all the same.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import trio

from tests._real_clients import not_written, record_samples

from .cases import run_matrix, summary
from .harness import REPO_ROOT, find_aider


def _record(work: Path, staging: Path) -> tuple[list[str], dict[str, Any]]:
    install = find_aider()
    matrix = trio.run(run_matrix, install, work, staging)
    failed = {
        name: result.describe()
        for name, result in matrix.results.items()
        if result.run.returncode != 0 or result.run.network
    }
    errors = not_written(failed, matrix.clean_error)
    return errors, {} if errors else summary(matrix)


def main(argv: list[str] | None = None) -> int:
    return record_samples(
        argv,
        __doc__,
        problem=lambda: find_aider().problem,
        record=_record,
        private=lambda work: (str(REPO_ROOT), str(work)),
    )


if __name__ == "__main__":
    sys.exit(main())
