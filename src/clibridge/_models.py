"""The models table: what clients may ask for, and which backend / CLI model serves it.

Clients send whatever their tool defaults to (``gpt-5.5``, ``claude-sonnet-4-5``,
``sonnet``...). The table maps such names to a backend and the id handed to the CLI, plus
a reasoning effort implied by a suffix (``gpt-5.5-high``). Names not in the table but shaped
like a backend's model ids (``claude-*`` for claude; ``gpt-*``, ``o<digit>*`` for codex) pass
through unchanged, so a new upstream model works before clibridge knows about it. The names
and patterns are each backend's (:attr:`~clibridge._backends.Backend.aliases`,
:attr:`~clibridge._backends.Backend.model_pattern`); two backends may share them (the same
CLI driven two ways), the first running one serves them. Operators
add or override entries with ``[models]`` in the config file (``alias = "backend:cli-id"``,
optionally ``"codex:gpt-5.5@high"``).

Names are matched case-insensitively (``Sonnet``, ``GPT-5.5-HIGH``), as the upstream APIs
do; a name that passes through reaches the CLI in lower case. :data:`LIMITS` gives each
known CLI model's context window and output limit for ``/v1/models``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import attrs

from ._backends import BACKENDS
from ._errors import ModelNotFound, RequestError
from ._service import ModelInfo

EFFORTS = ("minimal", "low", "medium", "high", "xhigh")

#: (alias, backend, cli model id): every backend's aliases, in registry order
BUILTIN: tuple[tuple[str, str, str], ...] = tuple(
    (alias, b.name, cli_model) for b in BACKENDS.values() for alias, cli_model in b.aliases.items()
)

#: names shaped like a backend's model ids pass through to it unchanged
_PASSTHROUGH = tuple((b.name, b.model_pattern) for b in BACKENDS.values())


@attrs.frozen
class ModelLimits:
    """What a model takes in (``context_window``, input and output together) and writes
    at most in one reply (``max_output_tokens``), in tokens."""

    context_window: int
    max_output_tokens: int


#: the limits of the CLI model ids the aliases name, as the vendors publish them for their
#: APIs -- Anthropic: "Models overview" (docs.anthropic.com/en/docs/about-claude/models);
#: OpenAI: the model pages (platform.openai.com/docs/models/<id>); both read 2026-11. A
#: CLI may use less of the window than its API allows (the CLIs manage their context
#: themselves); an id not listed here has no limits in ``/v1/models``.
LIMITS: dict[str, ModelLimits] = {
    "claude-opus-4-5": ModelLimits(200_000, 64_000),
    "claude-sonnet-4-5": ModelLimits(200_000, 64_000),
    "claude-haiku-4-5": ModelLimits(200_000, 64_000),
    "claude-opus-4-1": ModelLimits(200_000, 32_000),
    "claude-sonnet-4-0": ModelLimits(200_000, 64_000),
    "gpt-5.5": ModelLimits(1_050_000, 128_000),
    "gpt-5.3-codex": ModelLimits(400_000, 128_000),
    "gpt-5-codex": ModelLimits(400_000, 128_000),
    "gpt-5": ModelLimits(400_000, 128_000),
}


@attrs.frozen
class Route:
    backend: str
    cli_model: str
    reasoning_effort: str | None = None


def parse_target(alias: str, target: str) -> Route:
    """``"codex:gpt-5.5@high"`` -> Route; raises ValueError naming the alias."""
    backend, sep, rest = target.partition(":")
    if not sep or backend not in BACKENDS or not rest:
        expected = " or ".join(
            f"'{b.name}:<model id>{'[@effort]' if b.effort_suffix else ''}'"
            for b in BACKENDS.values()
        )
        raise ValueError(f"models.{alias}: expected {expected}, got {target!r}")
    model, _, effort = rest.partition("@")
    if effort and effort not in EFFORTS:
        raise ValueError(f"models.{alias}: effort must be one of {', '.join(EFFORTS)}")
    return Route(backend, model, effort or None)


def _effort_suffix(name: str) -> bool:
    b = BACKENDS.get(name)
    return b is not None and b.effort_suffix


class ModelTable:
    """Resolves client model names for the backends that are running."""

    def __init__(
        self,
        backends: Iterable[str],
        *,
        overrides: Mapping[str, str] | None = None,
        fake_backends: Iterable[str] = (),
        default_model: str | None = None,
    ) -> None:
        self.backends = frozenset(backends)
        self.fake_backends = frozenset(fake_backends)
        entries: dict[str, Route] = {}
        for alias, backend, cli_model in BUILTIN:
            # two backends with the same alias (the same CLI driven two ways): the first
            # running one serves it
            held = entries.get(alias)
            if held is None or (held.backend not in self.backends and backend in self.backends):
                entries[alias] = Route(backend, cli_model)
        for alias, target in (overrides or {}).items():
            entries[alias] = parse_target(alias, target)
        self._entries = entries
        #: the entries by case-folded name (what lookups use)
        self._folded = {alias.casefold(): route for alias, route in entries.items()}
        self.default_model = default_model

    def resolve(self, name: str) -> Route:
        if not isinstance(name, str) or not name:
            raise RequestError("model is required", param="$.model")
        route = self._lookup(name)
        if route is None:
            raise ModelNotFound(
                f"model {name!r} is not available here; available models: "
                + ", ".join(info.id for info in self.listing()),
                param="$.model",
            )
        if route.backend not in self.backends:
            raise ModelNotFound(
                f"model {name!r} is served by the {route.backend} backend, which is not running "
                f"(running: {', '.join(sorted(self.backends)) or 'none'})",
                param="$.model",
            )
        return route

    def _lookup(self, name: str) -> Route | None:
        name = name.casefold()
        if name in self._folded:
            return self._folded[name]
        base, _, suffix = name.rpartition("-")
        if base and suffix in EFFORTS:
            inner = self._lookup(base)
            if inner is not None and _effort_suffix(inner.backend):
                return attrs.evolve(inner, reasoning_effort=suffix)
        matches = [backend for backend, pattern in _PASSTHROUGH if pattern.fullmatch(name)]
        if not matches:
            return None
        # the first running backend whose ids look so, else the first (to name it in the 404)
        return Route(next((b for b in matches if b in self.backends), matches[0]), name)

    def listing(self) -> list[ModelInfo]:
        """The entries of running backends, in table order (for ``/v1/models``)."""
        return [
            ModelInfo(
                id=alias,
                backend=route.backend,
                cli_model=route.cli_model,
                fake=route.backend in self.fake_backends,
                reasoning_effort=route.reasoning_effort,
                context_window=limits.context_window if limits else None,
                max_output_tokens=limits.max_output_tokens if limits else None,
            )
            for alias, route in self._entries.items()
            if route.backend in self.backends
            for limits in [LIMITS.get(route.cli_model)]
        ]
