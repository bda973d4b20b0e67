"""The ledger on its own: schema, queries, retention, a full queue, the file's mode, the
``inspect`` / ``usage`` commands, capture identities, and the request log line."""

from __future__ import annotations

import json
import logging
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from clibridge._capture import PendingCapture, capture, chain
from clibridge._cli import main
from clibridge._events import Message, TextPart, ThinkingPart, ToolCallPart, ToolResultPart
from clibridge._http._record import RequestRecord
from clibridge._ledger import RECORD_COLUMNS, Ledger, LedgerError, ledger_path, parse_duration
from clibridge._ledger import USAGE_BY as ledger_usage_by
from clibridge._ledger_cli import USAGE_BY
from clibridge._logging import (
    REQUEST_ID,
    JsonFormatter,
    TextFormatter,
    install_request_id,
    log_request,
    setup_logging,
)

DAY = 86400.0


def make_record(request_id: str = "req_1", **changes: object) -> RequestRecord:
    record = RequestRecord(
        request_id=request_id,
        started=time.time(),
        key=None,
        dialect="openai_chat",
        endpoint="/v1/chat/completions",
        model_asked="sonnet",
        backend="claude",
        cli_model="claude-sonnet-4-5",
        worker_id="2",
        pid=4242,
        queue_wait_s=0.001,
        ttfc_s=0.25,
        duration_s=0.5,
        input_tokens=11,
        output_tokens=7,
        cache_read_tokens=100,
        cache_write_tokens=5,
        status=200,
        error_type=None,
        stream=True,
        tool_calls=1,
        continued=True,
    )
    return attrs.evolve(record, **changes)  # type: ignore[arg-type]


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    running = Ledger(ledger_path(tmp_path / "state"))
    running.start()
    yield running
    running.close()


def test_the_table_has_a_column_per_record_field(ledger: Ledger) -> None:
    conn = sqlite3.connect(ledger.path)
    names = [row[1] for row in conn.execute("PRAGMA table_info(requests)")]
    mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    conn.close()
    assert names == ["id", *(f.name for f in attrs.fields(RequestRecord))]
    assert tuple(names[1:]) == RECORD_COLUMNS
    assert mode == "wal"


def test_a_record_reads_back_as_written(ledger: Ledger) -> None:
    record = make_record()
    ledger.record(record)
    assert ledger.flush()
    row = ledger.get("req_1")
    assert row is not None
    assert row.pop("capture") is None
    assert row == attrs.asdict(record)
    assert ledger.recent(5) == [attrs.asdict(record)]
    assert ledger.get("nope") is None
    assert ledger.statistics().written == 1


def test_recent_is_newest_first_and_filters_errors(ledger: Ledger) -> None:
    ledger.record(make_record("a"))
    ledger.record(make_record("b", status=429, error_type="queue_full"))
    ledger.record(make_record("c", status=200, error_type="client_gone"))
    ledger.record(make_record("d"))
    assert ledger.flush()
    assert [r["request_id"] for r in ledger.recent(3)] == ["d", "c", "b"]
    assert [r["request_id"] for r in ledger.recent(10, errors_only=True)] == ["c", "b"]
    # a client may reuse its id: get() finds the latest
    ledger.record(make_record("a", status=500))
    assert ledger.flush()
    latest = ledger.get("a")
    assert latest is not None and latest["status"] == 500


def test_usage_groups_and_scopes(ledger: Ledger) -> None:
    now = time.time()
    ledger.record(make_record("1", key="alice", started=now - 10))
    ledger.record(
        make_record(
            "2",
            key="alice",
            started=now - 20,
            cli_model="gpt-5",
            status=502,
            input_tokens=None,
            output_tokens=None,
            cache_read_tokens=None,
            cache_write_tokens=None,
        )
    )
    ledger.record(make_record("3", key="bob", started=now - 30))
    ledger.record(make_record("old", key="bob", started=now - 3 * DAY))
    ledger.record(make_record("models", endpoint="/v1/models", cli_model=None, model_asked=None))
    assert ledger.flush()
    by_model = ledger.usage(DAY, "model")
    assert [(r["model"], r["requests"], r["errors"]) for r in by_model] == [
        ("claude-sonnet-4-5", 2, 0),
        ("gpt-5", 1, 1),
    ]
    assert by_model[0]["input_tokens"] == 22
    assert by_model[0]["total_tokens"] == 2 * (11 + 7 + 100 + 5)
    by_key = {r["key"]: r["requests"] for r in ledger.usage(7 * DAY, "key")}
    assert by_key == {"alice": 2, "bob": 2}
    assert [r["requests"] for r in ledger.usage(DAY, "key", key="bob")] == [1]
    days = ledger.usage(7 * DAY, "day")
    assert sum(int(str(r["requests"])) for r in days) == 4
    assert all(len(str(r["day"])) == 10 for r in days)
    assert str(ledger.usage(DAY, "hour")[0]["hour"]).endswith(":00Z")
    with pytest.raises(ValueError, match="by must be one of"):
        ledger.usage(DAY, "color")


def test_retention_deletes_old_rows_at_start(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    first = Ledger(path, retention_days=0)  # 0: keep for ever
    first.start()
    first.record(make_record("ancient", started=time.time() - 400 * DAY))
    first.record(make_record("old", started=time.time() - 40 * DAY))
    first.record(make_record("new"))
    first.close()
    kept = Ledger(path, retention_days=0)
    kept.start()
    kept.close()
    assert {r["request_id"] for r in kept.recent(10)} == {"ancient", "old", "new"}
    pruned = Ledger(path, retention_days=30)
    pruned.start()
    pruned.close()
    assert [r["request_id"] for r in pruned.recent(10)] == ["new"]


def test_a_full_queue_drops_instead_of_blocking(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite3", queue_size=2)  # not started: nothing drains it
    for n in range(5):
        ledger.record(make_record(str(n)))
    assert attrs.astuple(ledger.statistics()) == (0, 3, 2)


def test_the_file_is_private(ledger: Ledger) -> None:
    assert stat.S_IMODE(ledger.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(ledger.path.parent.stat().st_mode) == 0o700


def test_reading_a_missing_ledger_does_not_create_it(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "none.sqlite3")
    with pytest.raises(FileNotFoundError, match="no request ledger"):
        ledger.recent(1)
    assert not ledger.path.exists()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("7d", 7 * DAY),
        ("12h", 43200.0),
        ("30m", 1800.0),
        ("90s", 90.0),
        ("1w", 7 * DAY),
        ("45", 45.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "-1d", "0", "d", "nanh"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


# --------------------------------------------------------------------------- commands


def test_inspect_and_usage_commands(
    tmp_path: Path, ledger: Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger.record(make_record("req_ok", key="alice"))
    ledger.record(
        make_record(
            "req_bad",
            status=504,
            error_type="turn_timeout",
            input_tokens=None,
            output_tokens=None,
            cache_read_tokens=None,
            cache_write_tokens=None,
        )
    )
    assert ledger.flush()
    state = ["--state-dir", str(tmp_path / "state")]

    assert main(["inspect", "--last", "5", *state], {}) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["time", "request", "id", "status"]
    assert "req_ok" in table[1] and "claude#2+" in table[1] and "100/5" in table[1]
    assert "req_bad" in table[2] and "turn_timeout" in table[2]

    assert main(["inspect", "--last", "5", "--errors", *state], {}) == 0
    out = capsys.readouterr().out
    assert "req_bad" in out and "req_ok" not in out

    assert main(["inspect", "req_ok", *state], {}) == 0
    out = capsys.readouterr().out
    assert "cli_model           claude-sonnet-4-5" in out
    assert "no captured exchange" in out

    assert main(["inspect", "req_ok", "--json", *state], {}) == 0
    assert json.loads(capsys.readouterr().out)["pid"] == 4242

    assert main(["usage", "--by", "key", *state], {}) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "key",
        "requests",
        "errors",
        "input",
        "output",
        "cache",
        "read",
        "cache",
        "write",
        "total",
    ]
    assert lines[1].split()[:3] == ["alice", "1", "0"]
    assert lines[-1].split()[:3] == ["total", "2", "1"]

    assert main(["inspect", "missing", *state], {}) == 1
    assert main(["inspect", *state], {}) == 2
    assert main(["usage", "--since", "soon", *state], {}) == 2
    assert main(["usage", "--state-dir", str(tmp_path / "elsewhere")], {}) == 1
    assert "no request ledger" in capsys.readouterr().err


def test_inspect_shows_the_captured_exchange(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = Ledger(ledger_path(tmp_path), capture_mode="full")
    ledger.start()
    ledger.record(make_record("req_c"))
    ledger.capture(
        PendingCapture(
            "req_c",
            time.time(),
            None,
            "m",
            "be brief",
            (
                Message("user", (TextPart("weather?"),)),
                Message("assistant", (ToolCallPart("call_1", "lookup", '{"q":1}'),)),
                Message("user", (ToolResultPart("call_1", "sunny"),)),
            ),
            Message("assistant", (TextPart("It is sunny."),)),
        )
    )
    ledger.close()
    assert main(["inspect", "req_c", "--state-dir", str(tmp_path)], {}) == 0
    out = capsys.readouterr().out
    assert "--- system" in out and "be brief" in out
    assert '[tool call call_1] lookup({"q":1})' in out
    assert "[tool result call_1] sunny" in out
    assert "--- assistant (answer)" in out and "It is sunny." in out


# --------------------------------------------------------------------------- capture identities


def test_message_identity_ignores_what_clients_change_when_replaying() -> None:
    sent = (
        Message("user", (TextPart("hi"),)),
        Message(
            "assistant",
            (
                ThinkingPart("hmm"),
                TextPart("Hello "),
                TextPart("there"),
                ToolCallPart("call_x", "f", '{"b": 1, "a": 2}'),
            ),
        ),
    )
    replayed = (
        Message("user", (TextPart(" hi\n"),)),
        Message(
            "assistant", (TextPart("Hello there"), ToolCallPart("call-x", "f", '{"a":2,"b":1}'))
        ),
    )
    assert [m.id for m in chain("sys", sent, "full")] == [
        m.id for m in chain("sys", replayed, "full")
    ]
    changed = (sent[0], Message("assistant", (TextPart("Hello there!"),)))
    assert chain("sys", sent, "full")[-1].id != chain("sys", changed, "full")[-1].id
    # the same message after another history is another message
    assert chain("", sent, "full")[-1].id != chain("sys", sent, "full")[-1].id


def test_capture_chains_the_answer_and_keeps_text_only_in_full() -> None:
    messages = (Message("user", (TextPart("hi"),)),)
    answer = Message("assistant", (TextPart("hello"),))
    full = capture(
        request_id="r",
        started=0.0,
        key=None,
        model="m",
        system="",
        messages=messages,
        answer=answer,
        mode="full",
    )
    meta = capture(
        request_id="r",
        started=0.0,
        key=None,
        model="m",
        system="",
        messages=messages,
        answer=answer,
        mode="metadata",
    )
    assert full.answer is not None and full.answer.prev_id == full.chain[-1].id
    assert not full.continues
    assert json.loads(str(full.chain[0].content)) == [{"type": "text", "text": "hi"}]
    assert meta.answer is not None and meta.answer.content is None
    assert meta.answer.id == full.answer.id


# --------------------------------------------------------------------------- logging


def test_the_request_line_and_the_request_id_on_every_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    install_request_id()
    caplog.set_level(logging.INFO)
    token = REQUEST_ID.set("req_ctx")
    try:
        logging.getLogger("clibridge.http").info("inside the request")
    finally:
        REQUEST_ID.reset(token)
    logging.getLogger("clibridge.http").info("outside")
    log_request(make_record("req_line"))
    inside, outside, line = caplog.records
    assert vars(inside)["request_id"] == "req_ctx"
    assert vars(outside)["request_id"] is None
    assert vars(line)["request_id"] == "req_line"
    assert line.getMessage() == (
        "/v1/chat/completions 200 model=claude-sonnet-4-5 tokens=11/7 500ms"
    )
    assert TextFormatter().format(line).endswith("tokens=11/7 500ms [req_line]")
    payload = json.loads(JsonFormatter().format(line))
    assert payload["request_id"] == "req_line" and payload["level"] == "info"
    assert payload["request"]["output_tokens"] == 7
    assert json.loads(JsonFormatter().format(outside)).keys() == {
        "time",
        "level",
        "logger",
        "message",
    }


def test_setup_logging_json(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging("info", "json")
        log_request(make_record("req_j", error_type="client_gone", status=499))
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    line = json.loads(capsys.readouterr().err)
    assert line["message"].startswith("/v1/chat/completions 499 client_gone")
    assert line["request_id"] == "req_j" and line["logger"] == "clibridge.requests"


def test_the_command_line_does_not_import_the_ledger_until_it_is_used() -> None:
    """``clibridge --help`` / ``config`` must not pay for sqlite3 and the HTTP stack."""
    code = (
        "import sys, clibridge._cli as c; c.build_parser(); "
        "print(sorted(m for m in ('quart', 'sqlite3', 'clibridge._ledger') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert ledger_usage_by == USAGE_BY


def test_the_writer_survives_rows_it_cannot_store(
    ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression (chaos fuzz): a model name with a lone surrogate raised
    UnicodeEncodeError in the writer thread, which died; every later row was lost."""
    ledger.capture_mode = "full"
    ledger.record(make_record("surrogate", model_asked="\ud800x", endpoint="/v1/\udc80"))
    ledger.capture(
        PendingCapture(
            "surrogate",
            time.time(),
            None,
            "\ud800x",
            "",
            (Message("user", (TextPart("lone \ud83d half"),)),),
            Message("assistant", (TextPart("ok"),)),
        )
    )
    ledger.record(make_record("unstorable", pid=object()))
    ledger.record(make_record("after"))
    assert ledger.flush()
    assert ledger.get("after") is not None
    assert ledger.get("unstorable") is None
    row = ledger.get("surrogate")
    assert row is not None
    assert row["model_asked"] == "\\ud800x" and row["endpoint"] == "/v1/\\udc80"
    capture = row["capture"]
    assert isinstance(capture, dict)
    question, answer = capture["messages"]
    assert json.loads(str(question["content"])) == [{"type": "text", "text": "lone \ud83d half"}]
    assert answer["role"] == "assistant"
    assert ledger.statistics().dropped == 1
    assert "writing a row failed" in caplog.text


def test_a_json_line_with_lone_surrogates_still_encodes() -> None:
    install_request_id()
    record = logging.LogRecord("clibridge.requests", logging.INFO, "x", 1, "m", (), None)
    record.request = make_record(model_asked="\ud800")
    line = JsonFormatter().format(record)
    line.encode()
    assert json.loads(line)["request"]["model_asked"] == "\ud800"


def test_a_file_that_is_no_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(LedgerError, match=r"cannot open the request ledger .* --no-ledger"):
        Ledger(path).start()
