"""The seam between the HTTP front end and the supervisor.

The HTTP layer knows nothing of pools or processes: it hands a neutral
:class:`~clibridge._events.Request` to a :class:`TurnService` and encodes the events it
gets back. The supervisor implements it on top of the pools; tests may implement it with
a scripted in-memory service.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

import attrs

from ._events import Event, Request


@attrs.frozen
class ModelInfo:
    """One entry of ``/v1/models``."""

    id: str  # what clients send
    backend: str  # "claude" | "codex"
    cli_model: str  # the id handed to the CLI
    fake: bool = False  # served by the bundled fake CLI
    reasoning_effort: str | None = None  # implied by the alias (codex "-high" suffixes)
    #: tokens in and out together, and at most out per reply (None: not known)
    context_window: int | None = None
    max_output_tokens: int | None = None


@attrs.frozen
class BackendReadiness:
    ready: bool
    reason: str


@attrs.frozen
class Readiness:
    """Ready when every configured backend is; ``backends`` says each one's state."""

    ready: bool
    reason: str  # human-readable: why not, or what is serving
    fake: bool = False
    backends: Mapping[str, BackendReadiness] = attrs.field(factory=dict)
    #: per backend with configured accounts: each account's state (name, state, ...)
    accounts: Mapping[str, Sequence[Mapping[str, Any]]] = attrs.field(factory=dict)


class TurnService(Protocol):
    def turn(self, request: Request) -> AbstractAsyncContextManager[AsyncIterator[Event]]:
        """Admit ``request`` and run one turn; the iterator yields its events.

        Admission errors (unknown model, queue full, not ready) are raised on entering the
        context; turn errors are raised from the iterator. Leaving the context early
        (client gone) cancels the turn and frees its slot.
        """
        ...

    def models(self) -> Sequence[ModelInfo]: ...

    def readiness(self) -> Readiness: ...

    def statistics(self) -> Mapping[str, Any]: ...
