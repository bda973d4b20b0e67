"""The state dir: where the spawn homes live, readable by this user only.

Theory of operation
-------------------
Everything clibridge keeps lives under one state dir (``--state-dir``, default
``platformdirs.user_state_dir("clibridge")``): the claude and codex spawn homes with the
codex login (``codex/home/auth.json``), the CLIs' settings and their transcripts
(``claude/home/.claude/projects/``, ``codex/home/sessions/``). Other users of the machine
must not read any of it, so:

* :func:`private_dir` creates every directory clibridge makes -- the state dir itself,
  any missing parent, and each one on the way to a spawn home -- with mode 0700, and
  tightens one that exists with group or other access;
* :func:`secure_state_dir`, at every server start, walks the whole state dir and takes
  group and other access away from every directory (0700) and file (0600; an owner's
  execute bit stays) that has it: trees made by clibridge versions that created them 0755,
  or by a CLI run with a looser umask. What it changed is logged as a warning. Symlinks
  are not followed;
* the files clibridge writes are created 0600, and the CLIs run with umask 077
  (:data:`clibridge._process.CHILD_UMASK`), so what they write is 0600 / 0700 too.

``use_real_home`` directories (the operator's own ``~/.claude``, ``~/.codex``) are never
touched.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import platformdirs

log = logging.getLogger(__name__)

#: the mode of every directory clibridge creates
PRIVATE_DIR_MODE = 0o700
#: the mode of every file clibridge writes
PRIVATE_FILE_MODE = 0o600
#: permission bits nobody but the owner may have under the state dir
_GROUP_OTHER = 0o077
#: how many tightened paths the start-up warning names (the count is always complete)
_EXAMPLES = 5


def default_state_dir() -> Path:
    return Path(platformdirs.user_state_dir("clibridge"))


#: (path, old mode, new mode, is a directory)
_Change = tuple[Path, int, int, bool]


def _tighten(path: Path, st: os.stat_result, changed: list[_Change]) -> None:
    mode = stat.S_IMODE(st.st_mode)
    if not mode & _GROUP_OTHER:
        return
    new = mode & ~_GROUP_OTHER
    try:
        os.chmod(path, new)
    except OSError as exc:
        log.warning("cannot take group/other access away from %s: %s", path, exc)
        return
    changed.append((path, mode, new, stat.S_ISDIR(st.st_mode)))


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _report(root: Path, changed: list[_Change]) -> None:
    if not changed:
        return
    dirs = sum(1 for *_, is_dir in changed if is_dir)
    examples = ", ".join(
        f"{_relative(path, root)} {old:04o} -> {new:04o}"
        for path, old, new, _ in changed[:_EXAMPLES]
    )
    log.warning(
        "state dir %s: took group/other access away from %d path(s) (%d directories, "
        "%d files) that other users could reach, left by an earlier clibridge or a CLI: %s%s",
        root,
        len(changed),
        dirs,
        len(changed) - dirs,
        examples,
        ", ..." if len(changed) > _EXAMPLES else "",
    )


def _make_private(path: Path, under: Path, changed: list[_Change]) -> None:
    relative = path.relative_to(under)
    missing = [p for p in (under, *under.parents) if not p.exists()]
    for parent in reversed(missing[1:]):
        parent.mkdir(mode=PRIVATE_DIR_MODE, exist_ok=True)
    current = under
    for part in ("", *relative.parts):
        current = current / part if part else current
        current.mkdir(mode=PRIVATE_DIR_MODE, exist_ok=True)
        _tighten(current, current.stat(), changed)


def private_dir(path: Path, *, under: Path) -> Path:
    """Create ``path`` and every missing directory up to it with mode 0700, and make
    ``under`` and each directory from it to ``path`` 0700 if it has group/other access
    (logged). ``under`` is the state dir; its own missing parents are created 0700 too,
    its existing ones are left as they are. Returns ``path``."""
    changed: list[_Change] = []
    _make_private(path, under, changed)
    _report(under, changed)
    return path


def secure_state_dir(root: Path) -> int:
    """Create ``root`` 0700 if missing, and take group/other access away from it and
    everything under it (see the module doc). Blocking file IO: call it once at start-up.
    Returns how many paths were changed (logged as one warning)."""
    changed: list[_Change] = []
    _make_private(root, root, changed)
    pending = [root]
    while pending:
        directory = pending.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError as exc:
            log.warning("cannot read %s to check its permissions: %s", directory, exc)
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue  # gone meanwhile
            if stat.S_ISLNK(st.st_mode):
                continue  # chmod would follow it out of the state dir
            path = Path(entry.path)
            _tighten(path, st, changed)
            if stat.S_ISDIR(st.st_mode):
                pending.append(path)
    _report(root, changed)
    return len(changed)
