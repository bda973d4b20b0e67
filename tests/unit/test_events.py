"""The neutral event model's own arithmetic."""

from __future__ import annotations

from clibridge._events import Usage


def test_usages_add_field_by_field() -> None:
    a = Usage(1, 2, 3, 4, 5)
    b = Usage(10, 20, 30, 40, 50)
    assert a + b == Usage(11, 22, 33, 44, 55)
    assert sum((a, b, a), Usage()) == Usage(12, 24, 36, 48, 60)
    assert a + Usage() == a
