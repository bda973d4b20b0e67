"""Raw HTTP/1.1 framing cases: bytes no ordinary client sends, over a bare socket.

A :class:`Probe` is what a case sends -- byte strings, pauses (floats, in seconds),
``HALF_CLOSE`` (shut the write side, as a client that is done sending) -- and what is
allowed back: the statuses of the responses in order, whether the server must close the
connection afterwards, and whether some other bytes (an HTTP/2 preface answer) may come
instead of an HTTP/1.1 response. :func:`run_probe` plays it within a time bound and
reports what happened; the caller decides.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence

import attrs
import trio

from ._http1 import Connection, NotHttp1, PeerClosed, Response

HALF_CLOSE = "half-close"
Step = bytes | float | str

#: after the last byte sent, how long a probe waits for the answers (and the close)
WAIT = 5.0


@attrs.frozen
class Probe:
    name: str
    steps: Sequence[Step]
    #: the statuses allowed for each response, in order; fewer responses than this is a
    #: problem unless the server closed after a response that says ``connection: close``
    expect: Sequence[frozenset[int]]
    #: the server must close the connection after the last expected response
    must_close: bool = False
    #: the server may answer with something that is not HTTP/1.1 (h2c prior knowledge)
    other_protocol_ok: bool = False
    #: the requests are HEAD requests (their responses have no body)
    head: bool = False
    #: a response with a body that is not the API's JSON error is fine (Hypercorn's own
    #: 400 for unparsable requests has an empty body)
    note: str = ""


@attrs.frozen
class Outcome:
    probe: Probe
    responses: tuple[Response, ...]
    closed: bool
    seconds: float
    unparsed: bytes = b""
    problem: str | None = None


def statuses(*codes: int) -> frozenset[int]:
    return frozenset(codes)


async def run_probe(host: str, port: int, probe: Probe) -> Outcome:
    conn = await Connection.open(host, port)
    responses: list[Response] = []
    closed = False
    unparsed = b""
    t0 = trio.current_time()
    try:
        with trio.move_on_after(WAIT + sum(s for s in probe.steps if isinstance(s, float)) + 5):
            for step in probe.steps:
                if isinstance(step, float):
                    await trio.sleep(step)
                elif step == HALF_CLOSE:
                    conn.stream.socket.shutdown(socket.SHUT_WR)
                elif isinstance(step, bytes):
                    try:
                        await conn.send(step)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        break  # the server closed early; what it said is still readable
            with trio.move_on_after(WAIT):
                while len(responses) < len(probe.expect):
                    try:
                        responses.append(await conn.response(head_request=probe.head))
                    except PeerClosed:
                        closed = True
                        break
                    except NotHttp1 as exc:
                        unparsed = exc.args[0]
                        break
                if not closed and probe.must_close:
                    closed = await conn.closed_by_peer(WAIT)
        seconds = trio.current_time() - t0
    finally:
        await conn.aclose()
    outcome = Outcome(probe, tuple(responses), closed or conn.eof, seconds, unparsed)
    return attrs.evolve(outcome, problem=_problem(outcome))


def _problem(outcome: Outcome) -> str | None:
    probe = outcome.probe
    for i, response in enumerate(outcome.responses):
        if response.status not in probe.expect[i]:
            return f"response {i}: {response.status}, expected {sorted(probe.expect[i])}"
    if outcome.unparsed:
        return None if probe.other_protocol_ok else f"not HTTP/1.1: {outcome.unparsed[:80]!r}"
    if len(outcome.responses) < len(probe.expect):
        last = outcome.responses[-1] if outcome.responses else None
        if not (outcome.closed and last is not None and last.says_close):
            return (
                f"{len(outcome.responses)} of {len(probe.expect)} responses "
                f"({'closed' if outcome.closed else 'still open'})"
            )
    if probe.must_close and not outcome.closed:
        return "the connection was not closed"
    return None
