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

import argparse
import json
import shutil
import sys
from pathlib import Path

import trio

from .cases import run_matrix, summary
from .harness import REPO_ROOT, find_continue


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    install = find_continue()
    if install.problem is not None:
        print(install.problem, file=sys.stderr)
        return 2
    work: Path = args.work_dir.resolve()
    shutil.rmtree(work, ignore_errors=True)
    staging = work / "samples"
    staging.mkdir(parents=True)
    matrix = trio.run(run_matrix, install, work, staging)
    failed = [
        n for n, r in matrix.results.items() if r.run.returncode != 0 or r.run.unexpected_network
    ]
    if failed or matrix.clean_error:
        for name in failed:
            print(matrix.results[name].describe(), file=sys.stderr)
        print(f"not written: failed {failed}, server {matrix.clean_error}", file=sys.stderr)
        return 1
    (staging / "summary.json").write_text(json.dumps(summary(matrix), indent=2) + "\n")
    for path in sorted(staging.iterdir()):
        text = path.read_text()
        for private in (str(REPO_ROOT),):
            if private in text:
                print(f"not written: {path.name} names {private}", file=sys.stderr)
                return 1
    args.out.mkdir(parents=True, exist_ok=True)
    for path in sorted(staging.iterdir()):
        shutil.copy(path, args.out / path.name)
        print(f"wrote {args.out / path.name} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
