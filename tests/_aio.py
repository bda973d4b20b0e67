"""Async helpers shared by the tests."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import TypeVar

T = TypeVar("T")


def agen(iterator: AsyncIterator[T]) -> AsyncGenerator[T, None]:
    """``iterator`` as the async generator it is, for ``contextlib.aclosing``.

    Async generator functions are annotated ``-> AsyncIterator[...]`` (in clibridge and in
    httpx alike), a type without ``aclose()``; this checks that the object is a generator.
    """
    assert isinstance(iterator, AsyncGenerator), f"not an async generator: {iterator!r}"
    return iterator
