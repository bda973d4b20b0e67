"""The repository names no place outside itself: what it needs is copied into it."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: where the project's notes and recorded transcripts came from, outside the repository
OUTSIDE = ("../shared", "/work/shared", "/work/main")


def test_no_tracked_file_names_a_path_outside_the_repository() -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.split(b"\0")
    found = []
    for name in filter(None, listed):
        path = REPO / name.decode()
        if path == Path(__file__).resolve() or path.is_symlink() or not path.is_file():
            continue
        if path.suffix == ".gz":
            continue
        text = path.read_bytes().decode("utf-8", "replace")
        found += [f"{name.decode()}: {outside}" for outside in OUTSIDE if outside in text]
    assert not found, found
