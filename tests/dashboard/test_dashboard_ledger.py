"""The dashboard's usage series on the real ledger (SQLite), and its ``model`` filter."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from clibridge._http.dashboard import usage_series
from clibridge._ledger import Ledger, ledger_path

from ..unit.test_ledger import make_record

HOUR = 3600.0


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    running = Ledger(ledger_path(tmp_path / "state"))
    running.start()
    yield running
    running.close()


def test_usage_series_from_the_ledger(ledger: Ledger) -> None:
    now = time.time()
    this_hour = now // HOUR * HOUR
    ledger.record(make_record("1", key="alice", started=this_hour + 1))
    ledger.record(make_record("2", key=None, started=this_hour - HOUR + 1, cli_model="gpt-5"))
    ledger.record(make_record("3", key="alice", started=this_hour - 2 * HOUR + 1))
    ledger.record(make_record("old", key="alice", started=now - 3 * 24 * HOUR))
    ledger.record(make_record("models", endpoint="/v1/models", cli_model=None, model_asked=None))
    assert ledger.flush()
    tokens = 11 + 7 + 100 + 5  # one record's total
    assert [r["requests"] for r in ledger.usage(24 * HOUR, "hour", model="gpt-5")] == [1]
    series = usage_series(ledger, now)
    by_model = {s["name"]: s["points"] for s in series["by_model"]}
    assert list(by_model) == ["claude-sonnet-4-5", "gpt-5"]
    assert [p["requests"] for p in by_model["claude-sonnet-4-5"][-3:]] == [1, 0, 1]
    assert [p["tokens"] for p in by_model["gpt-5"][-3:]] == [0, tokens, 0]
    by_key = {s["name"]: s["points"] for s in series["by_key"]}
    assert list(by_key) == ["alice", "(no key)"]
    assert [p["requests"] for p in by_key["(no key)"][-3:]] == [0, 1, 0]
    for points in (*by_model.values(), *by_key.values()):
        assert len(points) == 24 and points[-1]["t"] == this_hour
        assert sum(p["requests"] for p in points) <= 2  # the 3-day-old one is out
