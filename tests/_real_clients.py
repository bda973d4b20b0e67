"""What the real-client test packages (``tests/openclaw``, ``tests/aider``,
``tests/continue_cli``) share: each drives a pinned third-party client against a real clibridge.

- :func:`require_install`: the install fixtures' policy (skip when the client is missing,
  fail under ``CI``);
- :func:`run_in_group`: one client process in its own process group, output in numbered log
  files, bounded by a deadline, its group killed when cancelled (:func:`kill_group`);
  :func:`reap_group` reports and kills what the group left behind; :func:`describe_output`
  is the tail of a run for assertion messages;
- :func:`case_proxy`, :func:`run_cases` and :func:`settle`: the skeleton of a matrix of cases
  on one server, a recording proxy per case, at most N client processes at once, the server's
  stats and cleanliness afterwards;
- :func:`record_samples`: the sample recorders' common part (arguments, staging, refusing
  samples that name private paths, copying them out).

What is the client's own (its command line, config files, network traps, scenarios) stays in
its package.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, asynccontextmanager, nullcontext, suppress
from functools import partial
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Self, TypeVar

import attrs
import pytest
import trio

from clibridge.testing.recording_proxy import Exchange, RecordingProxy, open_recording_proxy
from tests._procs import in_groups

if TYPE_CHECKING:
    from tests.e2e.conftest import E2EServer

C = TypeVar("C")
R = TypeVar("R")


# --------------------------------------------------------------------------- install


def require_install(client: str, problem: str | None) -> None:
    """Skip the test when ``client`` cannot run (``problem``), fail instead under ``CI``: CI
    can never pass by skipping (the policy of the ``realcli`` fixtures in
    ``clibridge.testing.pytest_plugin``)."""
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(f"{client} missing in CI: {problem}", pytrace=False)
        pytest.skip(f"{client} missing: {problem}")


# --------------------------------------------------------------------------- processes


@attrs.frozen
class RunLogs:
    """The files of one run in a client's ``logs`` directory, numbered by the runs before."""

    directory: Path
    index: int

    def path(self, suffix: str) -> Path:
        return self.directory / f"{self.index}.{suffix}"

    @property
    def stdout(self) -> Path:
        return self.path("stdout")

    @property
    def stderr(self) -> Path:
        return self.path("stderr")


def next_run_logs(logs: Path) -> RunLogs:
    """The log files of the next run in ``logs`` (created when missing)."""
    logs.mkdir(exist_ok=True)
    return RunLogs(logs, len(list(logs.glob("*.stdout"))))


@attrs.frozen
class GroupRun:
    """One finished client process (its group may have left others behind)."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float
    #: the process's pid, which names its group
    pid: int


async def kill_group(process: trio.Process) -> None:
    """trio's ``deliver_cancel``: the client and anything it started go at once."""
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


async def run_in_group(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    logs: RunLogs,
    stdin: Path | int | bytes = subprocess.DEVNULL,
    deadline: float | None = None,
    deliver_cancel: Callable[[trio.Process], Awaitable[object]] = kill_group,
) -> GroupRun:
    """Run ``argv`` in a process group of its own, its output in ``logs``' files.

    ``stdin``: a file to read, a :mod:`subprocess` constant, or bytes to feed. Bounded by
    ``deadline`` when one is given (the caller's otherwise); cancelled, ``deliver_cancel``
    stops the process and its group. What the group left behind is the caller's to check
    (:func:`reap_group`).
    """
    started = time.monotonic()
    # Why files, not capture: started with nursery.start, run_process hands back the Process
    # (its pid names the group to check afterwards) but no captured output
    with (
        _open_stdin(stdin) as stdin_file,
        logs.stdout.open("wb") as stdout,
        logs.stderr.open("wb") as stderr,
    ):
        bound: AbstractContextManager[object] = (
            nullcontext() if deadline is None else trio.fail_after(deadline)
        )
        async with trio.open_nursery() as nursery:
            with bound:
                process: trio.Process = await nursery.start(
                    partial(
                        trio.run_process,
                        list(argv),
                        env=dict(env),
                        cwd=str(cwd),
                        stdin=stdin_file,
                        stdout=stdout,
                        stderr=stderr,
                        check=False,
                        start_new_session=True,
                        deliver_cancel=deliver_cancel,
                    )
                )
                await process.wait()
    seconds = time.monotonic() - started
    assert process.returncode is not None
    return GroupRun(
        returncode=process.returncode,
        stdout=logs.stdout.read_text(errors="replace"),
        stderr=logs.stderr.read_text(errors="replace"),
        seconds=seconds,
        pid=process.pid,
    )


def _open_stdin(stdin: Path | int | bytes) -> AbstractContextManager[IO[bytes] | int | bytes]:
    return stdin.open("rb") if isinstance(stdin, Path) else nullcontext(stdin)


def reap_group(pid: int) -> frozenset[int]:
    """The processes of group ``pid`` still alive, killed since: anything a client leaves
    behind in its own group is a leak worth reporting."""
    leftovers = frozenset(in_groups({pid}))
    if leftovers:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    return leftovers


@attrs.frozen
class ClientRun:
    """One finished run of a client whose attempts to leave loopback are trapped (each
    package's run record adds its own :meth:`describe`)."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    #: what the client tried to reach besides loopback, each attempt refused (the package's
    #: trap says in which form)
    network: tuple[str, ...]
    #: processes of its group still alive after it exited (killed since)
    leftovers: frozenset[int] = frozenset()

    @classmethod
    def finished(cls, argv: Sequence[str], ran: GroupRun, network: Iterable[str]) -> Self:
        """The record of ``ran``; what its group left behind is reaped (:func:`reap_group`)."""
        return cls(
            argv=tuple(argv),
            returncode=ran.returncode,
            stdout=ran.stdout,
            stderr=ran.stderr,
            seconds=ran.seconds,
            network=tuple(network),
            leftovers=reap_group(ran.pid),
        )


def describe_output(header: str, stdout: str, stderr: str, *, stdout_tail: int = 3000) -> str:
    """For assertion messages: ``header``, then the tails of the run's output."""
    return f"{header}\n--- stdout\n{stdout[-stdout_tail:]}\n--- stderr\n{stderr[-3000:]}"


# --------------------------------------------------------------------------- matrices


@asynccontextmanager
async def case_proxy(
    base_url: str, name: str, record_dir: Path | None = None
) -> AsyncIterator[RecordingProxy]:
    """A recording proxy in front of ``base_url`` for the case ``name``; with ``record_dir``
    its exchanges are also written to ``<record_dir>/<name>.jsonl`` (afresh)."""
    record = None if record_dir is None else record_dir / f"{name}.jsonl"
    if record is not None:
        record.unlink(missing_ok=True)
    async with open_recording_proxy(base_url, record=record) as proxy:
        yield proxy


async def exchanges_of(proxy: RecordingProxy) -> tuple[Exchange, ...]:
    """Every exchange ``proxy`` relayed, once each is recorded: a client that exits at its
    last byte leaves the recording of its last exchange a moment to finish (seen in CI:
    ``cn``'s second request missing from its case)."""
    with trio.fail_after(10):
        return tuple(await proxy.settled())


async def run_cases(
    cases: Iterable[C],
    run_case: Callable[[C, trio.CapacityLimiter], Awaitable[R]],
    concurrency: int,
) -> dict[C, R]:
    """``run_case`` for every case at once; the client processes share a limiter of
    ``concurrency`` (each case holds it around its runs). Results in finishing order."""
    results: dict[C, R] = {}
    limiter = trio.CapacityLimiter(concurrency)

    async def one(case: C) -> None:
        results[case] = await run_case(case, limiter)

    async with trio.open_nursery() as nursery:
        for case in cases:
            nursery.start_soon(one, case)
    return results


async def settle(server: E2EServer) -> tuple[dict[str, Any], str | None]:
    """After a matrix: the server's pool stats once it settled, and why it is not clean
    (parked conversations aside), None when it is."""
    try:
        return await server.assert_clean(), None
    except AssertionError as exc:
        return await server.stats(), str(exc)


def describe_case(name: str, exchanges: Iterable[Exchange], run: str) -> str:
    """For assertion messages: a case's HTTP exchanges, then its run's description."""
    statuses = [(e.method, e.path, e.status, e.error) for e in exchanges]
    return f"{name}: exchanges {statuses}\n{run}"


# --------------------------------------------------------------------------- samples


def not_written(failed: Mapping[str, str], clean_error: str | None) -> list[str]:
    """Why a recorder writes no samples: each failed case's description (``failed``: name to
    description), then a line naming them and the server's problem; empty when all went well."""
    if not failed and not clean_error:
        return []
    return [*failed.values(), f"not written: failed {list(failed)}, server {clean_error}"]


def record_samples(
    argv: list[str] | None,
    doc: str,
    problem: Callable[[], str | None],
    record: Callable[[Path, Path], tuple[list[str], Mapping[str, Any]]],
    private: Callable[[Path], Iterable[str]],
) -> int:
    """A sample recorder's ``main``: ``--work-dir`` (emptied) and ``--out``.

    ``problem`` says why the client cannot run (exit 2); ``record(work, staging)`` runs the
    cases, writing their recordings into ``staging``, and returns the reasons not to write
    them (printed, exit 1) and the ``summary.json`` content. No sample may name one of
    ``private(work)`` (exit 1); then every staged file is copied to ``--out``.
    """
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    why = problem()
    if why is not None:
        print(why, file=sys.stderr)
        return 2
    work: Path = args.work_dir.resolve()
    shutil.rmtree(work, ignore_errors=True)
    staging = work / "samples"
    staging.mkdir(parents=True)
    errors, summary = record(work, staging)
    if errors:
        for error in errors:
            print(error, file=sys.stderr)
        return 1
    (staging / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    for path in sorted(staging.iterdir()):
        text = path.read_text()
        for name in private(work):
            if name in text:
                print(f"not written: {path.name} names {name}", file=sys.stderr)
                return 1
    args.out.mkdir(parents=True, exist_ok=True)
    for path in sorted(staging.iterdir()):
        shutil.copy(path, args.out / path.name)
        print(f"wrote {args.out / path.name} ({path.stat().st_size} bytes)")
    return 0
