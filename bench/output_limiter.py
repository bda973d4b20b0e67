"""What stop strings and ``max_tokens`` cost per text delta (:mod:`clibridge._output`).

Method
------
One process, no IO. 90,000 characters of English prose cut into 5-character
``TextDelta``s (18,000 deltas, finer than either CLI streams) are fed through one
:class:`~clibridge._output.OutputLimiter` per setting; none of the stop strings occurs,
so every delta goes through the whole check. Best of ``--repeat`` runs, per delta.

Run: ``.venv/bin/python bench/output_limiter.py [--repeat N]``
"""

from __future__ import annotations

import argparse
import time

from clibridge._events import TextDelta
from clibridge._output import OutputLimiter

TEXT = "The quick brown fox jumps over the lazy dog. " * 2000
SETTINGS: list[tuple[str, tuple[str, ...], int | None]] = [
    ("nothing to enforce", (), None),
    ("max_tokens only", (), 10**9),
    ("4 stop strings", ("STOP", "END OF ANSWER", "\n\n", "###"), None),
    ("4 stop strings + max_tokens", ("STOP", "END OF ANSWER", "\n\n", "###"), 10**9),
]


def per_delta(stops: tuple[str, ...], max_tokens: int | None, repeat: int) -> float:
    deltas = [TextDelta(TEXT[i : i + 5]) for i in range(0, len(TEXT), 5)]
    best = float("inf")
    for _ in range(repeat):
        limiter = OutputLimiter(stops, max_tokens)
        start = time.perf_counter()
        for delta in deltas:
            limiter.feed(delta)
        best = min(best, time.perf_counter() - start)
        assert not limiter.done
    return best / len(deltas)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    for name, stops, max_tokens in SETTINGS:
        print(f"{name:30} {per_delta(stops, max_tokens, args.repeat) * 1e6:6.2f} us per delta")


if __name__ == "__main__":
    main()
