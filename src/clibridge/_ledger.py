"""The request ledger: one SQLite row per request, and the captured exchanges.

Theory of operation
-------------------
The ledger is a SQLite database under the state dir (``ledger.sqlite3``, mode 0600) in
WAL mode. Nothing on the event loop touches it: :meth:`Ledger.record` (a request
observer, :mod:`clibridge._http._record`) and :meth:`Ledger.capture` only put an item on a
bounded queue, and never wait -- when the queue is full the item is dropped and counted
(``statistics().dropped``) rather than slowing a request down. One writer thread takes
what is queued, writes a batch in one transaction and commits it: woken by a first row,
it waits :data:`BATCH_WINDOW` and takes all that came meanwhile (up to :data:`BATCH_SIZE`), so a
busy server commits many rows at a time and an idle one each row within 50 ms.

Durability: WAL with ``synchronous=NORMAL`` keeps every committed transaction when the
server process dies, SIGKILL included (the write-ahead log is in the OS's hands at commit;
only a power cut may lose the last ones). Rows still in the queue at that moment are lost;
nothing committed is, and the file stays consistent.

Readers (:meth:`recent`, :meth:`get`, :meth:`usage`, the ``inspect`` and ``usage``
commands, ``GET /v1/usage``) open their own connections: WAL lets them read while the
writer writes, from any thread, with or without a server running.

Retention: rows older than ``retention_days`` (and conversations not seen for as long)
are deleted when the writer starts and then hourly.

Capture (``--capture``, :mod:`clibridge._capture`): ``metadata`` stores each exchange's
conversation and message identities, ``full`` the messages themselves too. The hashing
and the conversation lookup run in the writer thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final, Literal

import attrs
import trio

from ._capture import CaptureMode, Exchange, PendingCapture, capture
from ._http._logsafe import escape_controls
from ._http._record import RequestRecord
from ._state_dir import PRIVATE_FILE_MODE, private_dir

log = logging.getLogger("clibridge.ledger")

#: the ledger's file name under the state dir
FILE_NAME = "ledger.sqlite3"
#: the schema version (``PRAGMA user_version``)
SCHEMA_VERSION = 1
#: records waiting for the writer at most; beyond, new ones are dropped and counted
QUEUE_SIZE = 10_000
#: the most rows one transaction writes
BATCH_SIZE = 500
#: after the first row of a batch, how long the writer gathers more before it commits
#: (seconds): one commit for all the requests of that moment, not one per request
BATCH_WINDOW = 0.05
#: how often old rows are deleted (seconds)
PRUNE_INTERVAL = 3600.0
#: a dropped record is logged at most this often (seconds)
_DROP_LOG_INTERVAL = 10.0

#: the endpoints whose requests :meth:`Ledger.usage` counts (model calls)
MODEL_ENDPOINTS: Final = ("/v1/chat/completions", "/v1/responses", "/v1/messages")

UsageBy = Literal["model", "key", "day", "hour"]
USAGE_BY: Final = ("model", "key", "day", "hour")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY,
    request_id TEXT NOT NULL,
    started REAL NOT NULL,
    key TEXT,
    dialect TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    model_asked TEXT,
    backend TEXT,
    cli_model TEXT,
    worker_id TEXT,
    pid INTEGER,
    queue_wait_s REAL,
    ttfc_s REAL,
    duration_s REAL NOT NULL,
    input_tokens INTEGER,
    output_tokens INTEGER,
    cache_read_tokens INTEGER,
    cache_write_tokens INTEGER,
    status INTEGER NOT NULL,
    error_type TEXT,
    stream INTEGER NOT NULL,
    tool_calls INTEGER NOT NULL,
    continued INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS requests_started ON requests (started);
CREATE INDEX IF NOT EXISTS requests_request_id ON requests (request_id);
CREATE INDEX IF NOT EXISTS requests_key_started ON requests (key, started);

CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    started REAL NOT NULL,
    last_seen REAL NOT NULL,
    key TEXT,
    model TEXT,
    requests INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS conversations_last_seen ON conversations (last_seen);

CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL,
    prev_id TEXT NOT NULL,
    role TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    content TEXT,
    first_seen REAL NOT NULL,
    request_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_conversation ON messages (conversation_id);

CREATE TABLE IF NOT EXISTS exchanges (
    request_id TEXT NOT NULL,
    started REAL NOT NULL,
    conversation_id TEXT NOT NULL,
    last_message_id TEXT,
    answer_id TEXT
);
CREATE INDEX IF NOT EXISTS exchanges_request_id ON exchanges (request_id);
CREATE INDEX IF NOT EXISTS exchanges_conversation ON exchanges (conversation_id);
"""

#: the columns of ``requests`` a record fills, in :class:`RequestRecord` order
RECORD_COLUMNS: Final = tuple(f.name for f in attrs.fields(RequestRecord))
_BOOL_COLUMNS = frozenset({"stream", "continued"})
_INSERT_REQUEST = (
    f"INSERT INTO requests ({', '.join(RECORD_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in RECORD_COLUMNS)})"
)


def ledger_path(state_dir: Path) -> Path:
    return state_dir / FILE_NAME


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}


def parse_duration(text: str) -> float:
    """``"7d"``, ``"12h"``, ``"30m"``, ``"90s"``, ``"1w"`` or plain seconds, in seconds."""
    text = text.strip().lower()
    unit = _UNITS.get(text[-1:]) if text else None
    number = text[:-1] if unit is not None else text
    try:
        value = float(number) * (unit or 1.0)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a duration: write 7d, 12h, 30m, 90s, 1w or a number of seconds"
        ) from None
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{text!r} is not a duration: it must be more than 0")
    return value


@attrs.frozen
class LedgerStatistics:
    #: records and captures written
    written: int
    #: dropped because the queue was full, or lost to a failed write
    dropped: int
    #: waiting for the writer
    queued: int


class _Barrier:
    """A queue item the writer answers once everything before it is committed."""

    def __init__(self) -> None:
        self.done = threading.Event()


_STOP: Final = object()


class LedgerError(Exception):
    """The ledger file cannot be opened or created (the message says what to do)."""


def connect(path: Path, *, timeout: float = 5.0) -> sqlite3.Connection:
    """A connection to the ledger at ``path`` (rows as :class:`sqlite3.Row`)."""
    conn = sqlite3.connect(path, timeout=timeout, check_same_thread=False, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
    return conn


def _create_private(path: Path) -> None:
    private_dir(path.parent, under=path.parent)
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, PRIVATE_FILE_MODE)
    os.close(fd)


def open_schema(path: Path) -> sqlite3.Connection:
    """Create the database (0600) and its tables if missing; the writer's connection."""
    _create_private(path)
    conn = connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise RuntimeError(
            f"{path}: the ledger has schema version {version}, newer than this clibridge "
            f"({SCHEMA_VERSION}); upgrade clibridge or move the file away"
        )
    conn.executescript(_SCHEMA)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    return conn


class Ledger:
    """The request ledger at ``path`` (module doc). Sync methods are thread-safe."""

    def __init__(
        self,
        path: Path,
        *,
        retention_days: float = 30.0,
        capture_mode: CaptureMode = "off",
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        self.path = path
        self.retention_days = retention_days
        self.capture_mode: CaptureMode = capture_mode
        self._queue: queue.Queue[object] = queue.Queue(queue_size)
        self._thread: threading.Thread | None = None
        self._written = 0
        self._dropped = 0
        self._last_drop_log = 0.0
        self._last_prune = 0.0
        #: set by flush() and close(): the writer stops gathering and commits now
        self._hurry = threading.Event()

    # ------------------------------------------------------------------ life cycle

    def start(self) -> None:
        """Create the database if needed, prune it, and start the writer thread.

        Raises :class:`LedgerError` when the file cannot be opened (not a database, no
        permission, a newer schema)."""
        try:
            conn = open_schema(self.path)
        except (OSError, sqlite3.Error, RuntimeError) as exc:
            raise LedgerError(
                f"cannot open the request ledger {self.path}: {exc}; move the file away "
                "(a new one is created) or start with --no-ledger"
            ) from exc
        self._prune(conn)
        self._thread = threading.Thread(
            target=self._write_loop, args=(conn,), name="clibridge-ledger", daemon=True
        )
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the writer (blocks up to ``timeout``)."""
        thread = self._thread
        if thread is None:
            return
        try:
            self._queue.put(_STOP, timeout=timeout)
            self._hurry.set()
        except queue.Full:
            log.warning("ledger: the writer is stuck; %d records not written", self._queue.qsize())
            return
        thread.join(timeout)
        self._thread = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the writer (unless started), report started, and close the ledger when
        cancelled."""
        if self._thread is None:
            await trio.to_thread.run_sync(self.start)
        try:
            task_status.started()
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self.close)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is committed (tests, ``close``)."""
        if self._thread is None:
            return True
        barrier = _Barrier()
        try:
            self._queue.put(barrier, timeout=timeout)
            self._hurry.set()
        except queue.Full:
            return False
        return barrier.done.wait(timeout)

    def statistics(self) -> LedgerStatistics:
        return LedgerStatistics(self._written, self._dropped, self._queue.qsize())

    # ------------------------------------------------------------------ feeding (never blocks)

    def record(self, record: RequestRecord) -> None:
        """A request observer: queue ``record`` for the writer."""
        self._offer(record)

    def capture(self, pending: PendingCapture) -> None:
        """Queue one exchange for capture (ignored when capture is off)."""
        if self.capture_mode != "off":
            self._offer(pending)

    def _offer(self, item: object) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self._dropped += 1
            now = time.monotonic()
            if now - self._last_drop_log > _DROP_LOG_INTERVAL:
                self._last_drop_log = now
                log.warning(
                    "ledger: the writer is behind; dropped a record (%d so far)", self._dropped
                )

    # ------------------------------------------------------------------ the writer thread

    def _write_loop(self, conn: sqlite3.Connection) -> None:
        try:
            while True:
                batch = [self._queue.get()]
                if not _ends_batch(batch[0]):
                    # let the rows of this moment gather; woken once, not once per row
                    # (a wake-up per row fought the event loop's thread for the GIL)
                    self._hurry.wait(BATCH_WINDOW)
                self._hurry.clear()
                while len(batch) < BATCH_SIZE and not _ends_batch(batch[-1]):
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                stop = self._write_batch(conn, batch)
                if stop:
                    return
                if time.monotonic() - self._last_prune > PRUNE_INTERVAL:
                    self._prune(conn)
        finally:
            conn.close()

    def _write_batch(self, conn: sqlite3.Connection, batch: Sequence[object]) -> bool:
        rows = [item for item in batch if isinstance(item, RequestRecord | PendingCapture)]
        if rows and not self._commit(conn, rows):
            # one bad item must not cost the others: write them one by one
            for item in rows:
                if not self._commit(conn, [item], report=True):
                    self._dropped += 1
        stop = False
        for done in batch:
            if isinstance(done, _Barrier):
                done.done.set()
            elif done is _STOP:
                stop = True
        return stop

    def _commit(
        self,
        conn: sqlite3.Connection,
        items: Sequence[RequestRecord | PendingCapture],
        *,
        report: bool = False,
    ) -> bool:
        """Write ``items`` in one transaction; False (rolled back) when that failed."""
        try:
            conn.execute("BEGIN IMMEDIATE")
            for item in items:
                if isinstance(item, RequestRecord):
                    conn.execute(_INSERT_REQUEST, _row_values(item))
                else:
                    self._store_capture(conn, item)
            conn.execute("COMMIT")
        except Exception:
            # the writer must outlive any one row (a full disk, a bug): never die here
            if report:
                log.exception("ledger: writing a row failed; it is lost")
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            return False
        self._written += len(items)
        return True

    def _store_capture(self, conn: sqlite3.Connection, pending: PendingCapture) -> None:
        exchange = capture(
            request_id=pending.request_id,
            started=pending.started,
            key=pending.key,
            model=pending.model,
            system=pending.system,
            messages=pending.messages,
            answer=pending.answer,
            mode=self.capture_mode,
        )
        conversation = _find_conversation(conn, exchange)
        if conversation is None:
            conversation = "conv_" + uuid.uuid4().hex
            conn.execute(
                "INSERT INTO conversations (id, started, last_seen, key, model, requests) "
                "VALUES (?, ?, ?, ?, ?, 1)",
                (
                    conversation,
                    exchange.started,
                    exchange.started,
                    exchange.key,
                    _storable(exchange.model),
                ),
            )
        else:
            conn.execute(
                "UPDATE conversations SET last_seen = max(last_seen, ?), requests = requests + 1 "
                "WHERE id = ?",
                (exchange.started, conversation),
            )
        rows = [*exchange.chain, *([exchange.answer] if exchange.answer is not None else [])]
        conn.executemany(
            "INSERT INTO messages (id, conversation_id, prev_id, role, content_hash, content, "
            "first_seen, request_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET content = excluded.content "
            "WHERE messages.content IS NULL AND excluded.content IS NOT NULL",
            [
                (
                    row.id,
                    conversation,
                    row.prev_id,
                    row.role,
                    row.content_hash,
                    row.content,
                    exchange.started,
                    exchange.request_id,
                )
                for row in rows
            ],
        )
        conn.execute(
            "INSERT INTO exchanges (request_id, started, conversation_id, last_message_id, "
            "answer_id) VALUES (?, ?, ?, ?, ?)",
            (
                exchange.request_id,
                exchange.started,
                conversation,
                exchange.chain[-1].id if exchange.chain else None,
                exchange.answer.id if exchange.answer is not None else None,
            ),
        )

    def _prune(self, conn: sqlite3.Connection) -> None:
        self._last_prune = time.monotonic()
        if self.retention_days <= 0:
            return
        cutoff = time.time() - self.retention_days * 86400
        try:
            conn.execute("BEGIN IMMEDIATE")
            gone = conn.execute("DELETE FROM requests WHERE started < ?", (cutoff,)).rowcount
            conn.execute("DELETE FROM exchanges WHERE started < ?", (cutoff,))
            conn.execute("DELETE FROM conversations WHERE last_seen < ?", (cutoff,))
            conn.execute(
                "DELETE FROM messages WHERE conversation_id NOT IN (SELECT id FROM conversations)"
            )
            conn.execute("COMMIT")
        except sqlite3.Error:
            log.exception("ledger: deleting old rows failed")
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            return
        if gone:
            log.info("ledger: deleted %d requests older than %g days", gone, self.retention_days)

    # ------------------------------------------------------------------ queries

    @contextlib.contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        if not self.path.exists():
            raise FileNotFoundError(
                f"no request ledger at {self.path} (the server creates it when it starts)"
            )
        conn = connect(self.path)
        try:
            conn.execute("PRAGMA query_only = 1")
            yield conn
        finally:
            conn.close()

    def recent(self, limit: int, errors_only: bool = False) -> list[dict[str, object]]:
        """The latest ``limit`` requests, newest first (only failed ones with ``errors_only``:
        a status of 400 or more, or an error type)."""
        where = "WHERE status >= 400 OR error_type IS NOT NULL" if errors_only else ""
        with self._reader() as conn:
            rows = conn.execute(
                f"SELECT * FROM requests {where} ORDER BY id DESC LIMIT ?", (max(0, limit),)
            ).fetchall()
        return [_request_dict(row) for row in rows]

    def get(self, request_id: str) -> dict[str, object] | None:
        """The request ``request_id`` (the latest, should a client reuse an id), with its
        captured exchange under ``"capture"`` (None when there is none)."""
        with self._reader() as conn:
            row = conn.execute(
                "SELECT * FROM requests WHERE request_id = ? ORDER BY id DESC LIMIT 1",
                (request_id,),
            ).fetchone()
            if row is None:
                return None
            out = _request_dict(row)
            out["capture"] = _exchange_of(conn, request_id)
        return out

    def usage(self, since_s: float, by: str, key: str | None = None) -> list[dict[str, object]]:
        """Usage of the model endpoints (:data:`MODEL_ENDPOINTS`) over the last ``since_s``
        seconds, grouped ``by`` model | key | day | hour (days and hours in UTC), biggest
        first for model and key, in time order otherwise.

        Each row: the group (under the name ``by``: ``{"model": ...}``), ``requests``,
        ``errors``, ``input_tokens``, ``output_tokens``, ``cache_read_tokens``,
        ``cache_write_tokens``, ``total_tokens`` (input + cache + output),
        ``duration_s`` (summed). ``key``: only that key's requests.
        """
        if by not in USAGE_BY:
            raise ValueError(f"by must be one of {', '.join(USAGE_BY)}, not {by!r}")
        group = {
            "model": "COALESCE(cli_model, model_asked)",
            "key": "key",
            "day": "strftime('%Y-%m-%d', started, 'unixepoch')",
            "hour": "strftime('%Y-%m-%dT%H:00Z', started, 'unixepoch')",
        }[by]
        order = "total_tokens DESC, requests DESC" if by in ("model", "key") else "grp"
        where = f"started >= ? AND endpoint IN ({', '.join('?' for _ in MODEL_ENDPOINTS)})"
        params: list[Any] = [time.time() - since_s, *MODEL_ENDPOINTS]
        if key is not None:
            where += " AND key = ?"
            params.append(key)
        sql = f"""
            SELECT {group} AS grp, COUNT(*) AS requests,
                SUM(status >= 400 OR error_type IS NOT NULL) AS errors,
                TOTAL(input_tokens) AS input_tokens, TOTAL(output_tokens) AS output_tokens,
                TOTAL(cache_read_tokens) AS cache_read_tokens,
                TOTAL(cache_write_tokens) AS cache_write_tokens,
                TOTAL(input_tokens) + TOTAL(output_tokens) + TOTAL(cache_read_tokens)
                    + TOTAL(cache_write_tokens) AS total_tokens,
                TOTAL(duration_s) AS duration_s
            FROM requests WHERE {where} GROUP BY grp ORDER BY {order}
        """
        with self._reader() as conn:
            rows = conn.execute(sql, params).fetchall()
        out: list[dict[str, object]] = []
        for row in rows:
            item: dict[str, object] = {by: row["grp"]}
            item["requests"] = row["requests"]
            item["errors"] = row["errors"]
            for name in (
                "input_tokens",
                "output_tokens",
                "cache_read_tokens",
                "cache_write_tokens",
                "total_tokens",
            ):
                item[name] = int(row[name])
            item["duration_s"] = round(float(row["duration_s"]), 3)
            out.append(item)
        return out

    def conversation(self, conversation_id: str) -> list[dict[str, object]]:
        """The messages of a captured conversation, oldest first."""
        with self._reader() as conn:
            rows = conn.execute(
                "SELECT id, prev_id, role, content_hash, content, first_seen, request_id "
                "FROM messages WHERE conversation_id = ? ORDER BY first_seen, rowid",
                (conversation_id,),
            ).fetchall()
        return [dict(row) for row in rows]


def _row_values(record: RequestRecord) -> tuple[object, ...]:
    """The record's column values; text a client chose (a model name, a path) may hold
    lone surrogates, which SQLite cannot store: they are written escaped."""
    return tuple(_storable(v) if isinstance(v, str) else v for v in attrs.astuple(record))


def _storable(text: str) -> str:
    return text if text.isascii() else escape_controls(text)


def _ends_batch(item: object) -> bool:
    """A flush or the stop is not kept waiting for the batch window."""
    return item is _STOP or isinstance(item, _Barrier)


def _request_dict(row: sqlite3.Row) -> dict[str, object]:
    out: dict[str, object] = {}
    for name in RECORD_COLUMNS:
        value = row[name]
        out[name] = bool(value) if name in _BOOL_COLUMNS else value
    return out


def _exchange_of(conn: sqlite3.Connection, request_id: str) -> dict[str, object] | None:
    """The captured exchange of ``request_id``: its conversation and the messages of its
    chain (system prompt and history, then the answer)."""
    row = conn.execute(
        "SELECT * FROM exchanges WHERE request_id = ? ORDER BY rowid DESC LIMIT 1", (request_id,)
    ).fetchone()
    if row is None:
        return None
    chain: list[dict[str, object]] = []
    ident = row["answer_id"] or row["last_message_id"]
    seen: set[str] = set()
    while ident and ident not in seen:
        seen.add(ident)
        message = conn.execute(
            "SELECT id, prev_id, role, content_hash, content FROM messages WHERE id = ?",
            (ident,),
        ).fetchone()
        if message is None:
            break
        chain.append(dict(message))
        ident = message["prev_id"]
    chain.reverse()
    return {
        "conversation_id": row["conversation_id"],
        "answer_id": row["answer_id"],
        "messages": chain,
    }


def _find_conversation(conn: sqlite3.Connection, exchange: Exchange) -> str | None:
    """The conversation the exchange continues: that of the deepest stored message of its
    chain, system prompt aside (:mod:`clibridge._capture`); None for a first turn."""
    if not exchange.continues:
        return None
    for row in reversed(exchange.chain):
        if row.role == "system":
            break
        found = conn.execute(
            "SELECT conversation_id FROM messages WHERE id = ?", (row.id,)
        ).fetchone()
        if found is not None:
            return str(found[0])
    return None
