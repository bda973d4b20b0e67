"""The chaos workload: scripted requests over every dialect and both fake backends.

A request is a :class:`Spec`: a dialect (Chat Completions, Responses, Messages), a backend
(picked by model name: ``claude-sonnet-4-5`` -> fake claude, ``gpt-5`` -> fake codex),
streaming or not, and a :class:`Behaviour` -- what the fake CLI does in that turn (an
``@fake`` line in the user text) or what the client does (hang up). Each behaviour says
which outcomes are right; :func:`judge` compares, and the run keeps an :class:`Outcome`
per request. Requests that should succeed carry a unique reply text and the client checks
that exactly that text arrived.

Outcomes are never "the server answered something": a crash must not look like a success
(a 200 stream that ends normally), a success must carry its text, an error must have the
dialect's error envelope, and nothing may take longer than :data:`REQUEST_BOUND`.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import aclosing
from typing import Any, Literal

import attrs
import httpx
import trio

from ._http1 import Connection, PeerClosed, request

Dialect = Literal["chat", "responses", "messages"]
Backend = Literal["claude", "codex"]

DIALECTS: tuple[Dialect, ...] = ("chat", "responses", "messages")
BACKENDS: tuple[Backend, ...] = ("claude", "codex")
PATHS: dict[Dialect, str] = {
    "chat": "/v1/chat/completions",
    "responses": "/v1/responses",
    "messages": "/v1/messages",
}
MODELS: dict[Backend, str] = {"claude": "claude-sonnet-4-5", "codex": "gpt-5"}

#: the server settings the workload is written for (see :func:`server_args`)
WORKERS = 3
#: a codex app-server runs this many turns (threads) at once: the codex pool has
#: ``WORKERS * CODEX_THREADS`` slots
CODEX_THREADS = 2
MAX_QUEUE = 6
QUEUE_TIMEOUT = 10.0
TURN_TIMEOUT = 6.0
IDLE_TIMEOUT = 2.0
INTERRUPT_GRACE = 0.5
DRAIN_TIMEOUT = 8.0
#: no request may take longer than this, whatever it does (queue + turn + teardown)
REQUEST_BOUND = QUEUE_TIMEOUT + TURN_TIMEOUT + 10.0


def server_args(*extra: str) -> tuple[str, ...]:
    """``clibridge serve`` flags for the chaos server: small pools, short timeouts."""
    return (
        "--workers", str(WORKERS),
        "--spares", "1",
        "--max-queue", str(MAX_QUEUE),
        "--queue-timeout", str(QUEUE_TIMEOUT),
        "--turn-timeout", str(TURN_TIMEOUT),
        "--stream-idle-timeout", str(IDLE_TIMEOUT),
        "--interrupt-grace", str(INTERRUPT_GRACE),
        "--kill-grace", "0.5",
        "--restart-backoff-initial", "0.05",
        "--restart-backoff-max", "0.5",
        # scripted crashes come in runs by chance; a crash loop would turn them into 503s
        "--crash-loop-threshold", "1000",
        "--codex-threads-per-worker", str(CODEX_THREADS),
        "--send-timeout", "5",
        "--drain-timeout", str(DRAIN_TIMEOUT),
        "--log-level", "warning",
        *extra,
    )  # fmt: skip


# --------------------------------------------------------------------------- behaviours

Hangup = Literal["after_first_data", "after_send"]


@attrs.frozen
class Behaviour:
    name: str
    #: ``@fake`` fields for the turn; ``{"reply": TOKEN}`` is added when ``checks_text``
    fields: dict[str, Any] = attrs.field(factory=dict)
    #: a raw directive line instead of ``fields`` (malformed directives)
    raw_directive: str | None = None
    #: statuses that are right; for a stream, 200 + an error event is right too when
    #: the behaviour is a failure (the stream may have started before the failure)
    expect: frozenset[int] = frozenset({200})
    #: the reply text must arrive exactly (and a 200 must end normally)
    checks_text: bool = False
    #: the client hangs up instead of reading the answer
    hangup: Hangup | None = None
    #: forces streaming on or off (hang-ups need one or the other)
    stream: bool | None = None
    #: a success may also be a 502 (a garbage line may be a protocol error)
    may_fail: bool = False
    #: 4 MiB outputs: rare, expensive
    weight: float = 1.0

    @property
    def failure(self) -> bool:
        return 200 not in self.expect


_SLOW = {"chunk_chars": 3, "chunk_delay": 0.01}
_LONG_STREAM = {"reply": "z" * 300, "chunk_chars": 2, "chunk_delay": 0.02}

BEHAVIOURS: tuple[Behaviour, ...] = (
    Behaviour("ok", checks_text=True, weight=40),
    Behaviour("slow_stream", dict(_SLOW), checks_text=True, weight=8),
    Behaviour("thinking", {"thinking": "Let me think about it."}, checks_text=True, weight=4),
    Behaviour("stderr_noise", {"stderr": "warning: \x1b[31mnoise\x1b[0m"}, checks_text=True, weight=4),
    Behaviour("large_output", {"large_output": 512 * 1024, "chunk_chars": 8192}, checks_text=True, weight=4),
    Behaviour("huge_output", {"large_output": 4 * 1024 * 1024}, checks_text=True, weight=0.5),
    Behaviour("garbage_line", {"garbage_line": True}, checks_text=True, may_fail=True, weight=4),
    Behaviour("crash", {"crash_mid_turn": True}, expect=frozenset({502}), weight=3),
    Behaviour("hang", {"hang_mid_turn": True}, expect=frozenset({504}), weight=2),
    Behaviour("upstream_401", {"api_error": 401}, expect=frozenset({503}), weight=4),
    Behaviour("upstream_429", {"api_error": 429}, expect=frozenset({429}), weight=4),
    Behaviour("upstream_529", {"api_error": 529}, expect=frozenset({503, 529}), weight=4),
    Behaviour("hangup_streaming", dict(_LONG_STREAM), hangup="after_first_data", stream=True, weight=5),
    Behaviour("hangup_waiting", {"first_delay": 0.5}, hangup="after_send", stream=False, weight=4),
    Behaviour(
        "hangup_ignoring_interrupt",
        {**_LONG_STREAM, "ignore_interrupt": True},
        hangup="after_first_data",
        stream=True,
        weight=2,
    ),
    # issue 15 item 8: a bad or oversized directive is a 400 on the fakes, never a crash
    Behaviour("malformed_directive", expect=frozenset({400}), raw_directive="", weight=2),
)  # fmt: skip
BY_NAME = {b.name: b for b in BEHAVIOURS}
_MALFORMED = (
    "@fake {not json}",
    '@fake {"no_such_field": true}',
    '@fake {"chunk_chars": "many"}',
    # one byte over the fakes' cap (4 MiB): bounded even where the cap is missing
    '@fake {"large_output": 4194305}',
)


@attrs.frozen
class Spec:
    n: int
    dialect: Dialect
    backend: Backend
    stream: bool
    behaviour: Behaviour

    @property
    def token(self) -> str:
        return f"reply-{self.n}-{self.behaviour.name}"

    @property
    def path(self) -> str:
        return PATHS[self.dialect]

    def directive(self) -> str:
        b = self.behaviour
        if b.raw_directive is not None:
            return _MALFORMED[self.n % len(_MALFORMED)]
        fields = dict(b.fields)
        if b.checks_text or "reply" not in fields:
            fields.setdefault("reply", self.token)
        return "@fake " + json.dumps(fields)

    def expected_text(self) -> str:
        size = int(self.behaviour.fields.get("large_output", 0))
        return self.token + ("0123456789abcdef" * (size // 16 + 1))[:size]

    def body(self) -> dict[str, Any]:
        # every request is a conversation of its own: the text is unique
        return body_for(
            self.dialect, MODELS[self.backend], f"{self.directive()}\nchaos {self.n}", self.stream
        )


def body_for(dialect: Dialect, model: str, text: str, stream: bool) -> dict[str, Any]:
    if dialect == "chat":
        body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": text}]}
    elif dialect == "responses":
        body = {"model": model, "input": text}
    else:
        # Messages requires max_tokens, and clibridge honours it (cut at ~4 characters per
        # token): above the largest output a behaviour asks for (huge_output, 4 MiB)
        body = {
            "model": model,
            "max_tokens": 2_000_000,
            "messages": [{"role": "user", "content": text}],
        }
    body["stream"] = stream
    return body


def combos() -> Iterator[tuple[Dialect, Backend, bool]]:
    for dialect in DIALECTS:
        for backend in BACKENDS:
            for stream in (False, True):
                yield dialect, backend, stream


def coverage_specs(start: int = 0) -> list[Spec]:
    """Every behaviour on every dialect x backend x streaming combination it allows."""
    out: list[Spec] = []
    for behaviour in BEHAVIOURS:
        for dialect, backend, stream in combos():
            if behaviour.stream is not None and stream != behaviour.stream:
                continue
            out.append(Spec(start + len(out), dialect, backend, stream, behaviour))
    return out


def random_specs(count: int, rng: random.Random, start: int = 0) -> list[Spec]:
    """``count`` requests drawn by the behaviours' weights, combos uniformly."""
    weights = [b.weight for b in BEHAVIOURS]
    out = []
    for n in range(start, start + count):
        (behaviour,) = rng.choices(BEHAVIOURS, weights)
        dialect, backend = rng.choice(DIALECTS), rng.choice(BACKENDS)
        stream = behaviour.stream if behaviour.stream is not None else rng.random() < 0.5
        out.append(Spec(n, dialect, backend, stream, behaviour))
    return out


# --------------------------------------------------------------------------- outcomes

Kind = Literal[
    "completed",  # 200 and the full answer
    "error_status",  # an error status with the dialect's envelope
    "error_event",  # a 200 stream that ended with an error event
    "shed",  # 429 from clibridge's own queue (allowed for any request)
    "hung_up",  # the client hung up on purpose
    "hang",  # nothing ended within REQUEST_BOUND
    "no_response",  # the connection failed (only expected when the server was killed)
]


@attrs.frozen
class Outcome:
    spec: Spec
    kind: Kind
    status: int | None
    seconds: float
    #: why the outcome is wrong for the behaviour (None: it is right)
    problem: str | None = None
    #: a benign codex request failed by another thread's crash on its app-server
    collateral: bool = False
    note: str = ""


def sse_frames(raw: str) -> list[tuple[str | None, str]]:
    frames: list[tuple[str | None, str]] = []
    for block in raw.replace("\r\n", "\n").split("\n\n"):
        event: str | None = None
        data: list[str] = []
        for line in block.split("\n"):
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        if data:
            frames.append((event, "\n".join(data)))
    return frames


@attrs.frozen
class StreamSummary:
    text: str
    error: str | None  # the message of an error event
    finished: bool  # the dialect's normal end arrived


def summarize_stream(dialect: Dialect, raw: str) -> StreamSummary:
    """Text, error and normal end of a stream. Errors: Chat Completions sends an
    ``{"error": ...}`` chunk then ``[DONE]``; Responses ``response.failed``; Messages an
    ``error`` event."""
    text: list[str] = []
    error: str | None = None
    finished = False
    for _event, data in sse_frames(raw):
        if data == "[DONE]":
            finished = finished or dialect == "chat"
            continue
        try:
            obj = json.loads(data)
        except ValueError:
            error = error or f"undecodable frame {data[:80]!r}"
            continue
        if not isinstance(obj, dict):
            continue
        kind = obj.get("type")
        failure = obj.get("error") if kind in (None, "error") else None
        if kind == "response.failed":
            failure = (obj.get("response") or {}).get("error") or "response.failed"
        if failure:
            error = error or str(failure.get("message") if isinstance(failure, dict) else failure)
        if dialect == "chat":
            for choice in obj.get("choices") or []:
                text.append((choice.get("delta") or {}).get("content") or "")
        elif dialect == "responses":
            if kind == "response.output_text.delta":
                text.append(obj["delta"])
            finished = finished or kind == "response.completed"
        else:
            if kind == "content_block_delta" and obj["delta"].get("type") == "text_delta":
                text.append(obj["delta"]["text"])
            finished = finished or kind == "message_stop"
    return StreamSummary("".join(text), error, finished and error is None)


def reply_text(dialect: Dialect, payload: Any) -> str:
    if dialect == "chat":
        return str(payload["choices"][0]["message"]["content"] or "")
    if dialect == "responses":
        return "".join(
            part.get("text", "")
            for item in payload["output"]
            if item.get("type") == "message"
            for part in item["content"]
            if part.get("type") == "output_text"
        )
    return "".join(b.get("text", "") for b in payload["content"] if b.get("type") == "text")


def error_envelope(dialect: Dialect, payload: Any) -> str | None:
    """The error message if ``payload`` is the dialect's error envelope, else None."""
    if not isinstance(payload, dict):
        return None
    if dialect == "messages" and payload.get("type") != "error":
        return None
    error = payload.get("error")
    if not isinstance(error, dict) or not isinstance(error.get("message"), str):
        return None
    if not isinstance(error.get("type"), str):
        return None
    return str(error["message"])


def _is_admission_429(message: str) -> bool:
    return "retry later" in message and ("slots are busy" in message or "waited" in message)


def _is_codex_collateral(spec: Spec, status: int | None, message: str) -> bool:
    return spec.backend == "codex" and (status in (200, 502)) and "codex CLI exited" in message


def judge(spec: Spec, status: int, headers: httpx.Headers, body: str, seconds: float) -> Outcome:
    """The outcome of a request whose answer (status, body) arrived in full."""
    b = spec.behaviour

    def out(kind: Kind, problem: str | None = None, **kw: Any) -> Outcome:
        return Outcome(spec, kind, status, seconds, problem, **kw)

    if status == 200 and spec.stream:
        summary = summarize_stream(spec.dialect, body)
        if summary.error is not None:
            if b.failure or b.may_fail:
                return out("error_event", note=summary.error[:120])
            if _is_codex_collateral(spec, 200, summary.error):
                return out("error_event", collateral=True, note=summary.error[:120])
            return out("error_event", f"unexpected error event: {summary.error[:200]}")
        if not summary.finished:
            return out("completed", "the stream ended without its final event")
        if b.failure:
            return out("completed", "a failure behaviour ended as a normal stream")
        if b.checks_text and summary.text != spec.expected_text():
            return out(
                "completed", f"wrong text: {summary.text[:80]!r}... ({len(summary.text)} chars)"
            )
        return out("completed")
    try:
        payload = json.loads(body)
    except ValueError:
        return out("error_status", f"status {status} with a body that is not JSON: {body[:200]!r}")
    if status == 200:
        if b.failure:
            return out("completed", "a failure behaviour answered 200")
        text = reply_text(spec.dialect, payload)
        if b.checks_text and text != spec.expected_text():
            return out("completed", f"wrong text: {text[:80]!r}... ({len(text)} chars)")
        return out("completed")
    message = error_envelope(spec.dialect, payload)
    if message is None:
        return out("error_status", f"status {status} without the error envelope: {body[:200]!r}")
    note = f"{status} {message[:120]}"
    if status == 429 and _is_admission_429(message):
        if not headers.get("retry-after"):
            return out("shed", "a 429 without Retry-After", note=note)
        return out("shed", note=note)
    if status in b.expect or (b.may_fail and status == 502):
        if status == 429 and not headers.get("retry-after"):
            return out("error_status", "a 429 without Retry-After", note=note)
        return out("error_status", note=note)
    if _is_codex_collateral(spec, status, message):
        return out("error_status", collateral=True, note=note)
    return out(
        "error_status", f"status {status}, expected {sorted(b.expect)}: {message[:200]}", note=note
    )


# --------------------------------------------------------------------------- running


async def run_spec(base_url: str, client: httpx.AsyncClient, spec: Spec) -> Outcome:
    """Send ``spec`` and judge what comes back, within :data:`REQUEST_BOUND`."""
    t0 = trio.current_time()
    parts: list[str] = []
    status: int | None = None
    try:
        with trio.fail_after(REQUEST_BOUND):
            if spec.behaviour.hangup is not None:
                return await _hang_up(base_url, spec, t0)
            async with client.stream("POST", spec.path, json=spec.body()) as response:
                status = response.status_code
                if spec.stream and response.status_code == 200:
                    async with aclosing(response.aiter_text()) as chunks:  # type: ignore[type-var]
                        async for chunk in chunks:
                            parts.append(chunk)
                    body = "".join(parts)
                else:
                    body = (await response.aread()).decode(errors="replace")
            return judge(
                spec, response.status_code, response.headers, body, trio.current_time() - t0
            )
    except trio.TooSlowError:
        # what had arrived says where it stuck: in the queue, before the head, mid-stream
        got = "".join(parts)
        return Outcome(
            spec,
            "hang",
            status,
            trio.current_time() - t0,
            f"no end within {REQUEST_BOUND} s (head: {status}, {len(got)} bytes of body, "
            f"ending {got[-160:]!r})",
        )
    except (httpx.HTTPError, OSError) as exc:
        return Outcome(
            spec, "no_response", status, trio.current_time() - t0, f"{type(exc).__name__}: {exc}"
        )


async def _hang_up(base_url: str, spec: Spec, t0: float) -> Outcome:
    host, port = base_url.removeprefix("http://").split(":")
    conn = await Connection.open(host, int(port))
    status: int | None = None
    try:
        raw = json.dumps(spec.body()).encode()
        await conn.send(request("POST", spec.path, f"{host}:{port}", raw))
        if spec.behaviour.hangup == "after_send":
            await trio.sleep(0.1)
        else:
            head = await conn.read_until(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            if status == 200:
                await conn.read_until(b"data:")
    except PeerClosed as exc:
        return Outcome(spec, "no_response", status, trio.current_time() - t0, str(exc))
    finally:
        await conn.aclose()
    problem = None if status in (None, 200, 429) else f"status {status} before the hang-up"
    return Outcome(spec, "hung_up", status, trio.current_time() - t0, problem)


async def run_load(
    base_url: str,
    specs: Sequence[Spec],
    *,
    concurrency: int,
    stop: trio.Event | None = None,
    on_outcome: Any = None,
) -> list[Outcome]:
    """Run ``specs`` from ``concurrency`` clients (each its own connection pool) until
    all ran or ``stop`` is set. Returns the outcomes in completion order."""
    outcomes: list[Outcome] = []
    queue: Iterator[Spec] = iter(specs)

    async def client_task() -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(
            base_url=base_url, timeout=REQUEST_BOUND, limits=limits, trust_env=False
        ) as client:
            for spec in queue:
                if stop is not None and stop.is_set():
                    return
                outcome = await run_spec(base_url, client, spec)
                outcomes.append(outcome)
                if on_outcome is not None:
                    on_outcome(outcome)

    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(client_task)
    return outcomes


# --------------------------------------------------------------------------- figures


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def tally(outcomes: Iterable[Outcome]) -> dict[str, Any]:
    """Counts for the report: statuses, kinds, behaviours, latency, problems."""
    outcomes = list(outcomes)
    seconds = [o.seconds for o in outcomes]
    return {
        "requests": len(outcomes),
        "statuses": dict(sorted(Counter(str(o.status) for o in outcomes).items())),
        "kinds": dict(sorted(Counter(o.kind for o in outcomes).items())),
        "behaviours": dict(sorted(Counter(o.spec.behaviour.name for o in outcomes).items())),
        "combos": len({(o.spec.dialect, o.spec.backend, o.spec.stream) for o in outcomes}),
        "status_500": sum(o.status == 500 for o in outcomes),
        "hangs": sum(o.kind == "hang" for o in outcomes),
        "codex_collateral": sum(o.collateral for o in outcomes),
        "codex_collateral_streaming": sum(o.collateral and o.spec.stream for o in outcomes),
        "seconds_p50": round(percentile(seconds, 0.5), 3),
        "seconds_p99": round(percentile(seconds, 0.99), 3),
        "seconds_max": round(max(seconds, default=0.0), 3),
    }


def problems(outcomes: Iterable[Outcome]) -> list[str]:
    return [
        f"#{o.spec.n} {o.spec.behaviour.name} {o.spec.dialect}/{o.spec.backend}"
        f"{'/stream' if o.spec.stream else ''}: {o.problem}"
        for o in outcomes
        if o.problem is not None
    ]
