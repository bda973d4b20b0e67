"""Named API keys with quotas, stored hashed in a SQLite file under the state dir.

Theory of operation
-------------------
``clibridge keys add NAME`` makes a key: ``cb-`` and 43 characters of
:func:`secrets.token_urlsafe` (256 random bits), printed once and never stored. The file
(``keys.sqlite3`` in the state dir, mode 0600) keeps only its SHA-256 digest: with that
much entropy a plain fast hash is enough (nobody brute-forces 2**256), and the server can
look a presented key up by its digest. The digest comparison is constant-time all the same
(:func:`hmac.compare_digest`).

Each key has optional quotas -- concurrent requests, requests per minute, tokens per UTC
day -- and may be an *admin* key (``/metrics``, everyone's usage). ``keys set`` changes
a key's quotas in place (the key stays the same). ``keys revoke`` deletes the row; the
key's token counts stay (``daily_usage``) so re-adding the name does not reset today's
count.

This module is synchronous file IO, used by the ``keys`` command and, from a worker
thread, by the server's :class:`~clibridge._http._keyring.KeyRing`, which notices changes
by the file's stat, then ``PRAGMA data_version`` (it moves when *another* connection
commits), and reloads.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from pathlib import Path

import attrs

from ._state_dir import PRIVATE_FILE_MODE, private_dir

#: the file under the state dir
KEYS_FILE = "keys.sqlite3"
#: every key starts with this (so a leaked one is recognisable in a secret scanner)
KEY_PREFIX = "cb-"
#: the name the single ``--auth-token`` goes by (in logs, records and usage)
DEFAULT_KEY_NAME = "default"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
#: how many characters of a key ``keys list`` shows to tell keys apart
_SHOWN = len(KEY_PREFIX) + 4

_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    name TEXT PRIMARY KEY,
    digest BLOB NOT NULL UNIQUE,
    shown TEXT NOT NULL,
    created REAL NOT NULL,
    admin INTEGER NOT NULL DEFAULT 0,
    concurrency INTEGER,
    rpm INTEGER,
    daily_tokens INTEGER
);
CREATE TABLE IF NOT EXISTS daily_usage (
    name TEXT NOT NULL,
    day TEXT NOT NULL,
    tokens INTEGER NOT NULL,
    PRIMARY KEY (name, day)
);
"""


class KeysError(Exception):
    """A ``keys`` command that cannot be done (bad name, name taken, no such key)."""


@attrs.frozen
class Quotas:
    """Limits of one key; None is unlimited."""

    concurrency: int | None = None
    rpm: int | None = None
    daily_tokens: int | None = None

    def __attrs_post_init__(self) -> None:
        for field, value in attrs.asdict(self).items():
            if value is not None and value < 1:
                raise KeysError(f"--{field.replace('_', '-')} must be at least 1, not {value}")


@attrs.frozen
class KeyRecord:
    """One named key as stored (never the key itself)."""

    name: str
    digest: bytes = attrs.field(repr=False)
    #: the first characters of the key, to tell keys apart in ``keys list``
    shown: str
    created: float
    admin: bool
    quotas: Quotas


def digest_of(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


def find_key(keys: Mapping[bytes, KeyRecord], presented: str) -> KeyRecord | None:
    """The record ``presented`` is the key of, or None."""
    digest = digest_of(presented)
    record = keys.get(digest)
    # the dict lookup compares digests, not keys; the final check is constant-time anyway
    if record is not None and hmac.compare_digest(record.digest, digest):
        return record
    return None


def today() -> str:
    """The UTC day daily quotas count in (``2026-11-30``)."""
    return datetime.now(UTC).strftime("%Y-%m-%d")


def seconds_to_midnight(now: float | None = None) -> float:
    """Seconds until the next UTC day starts (when daily quotas reset)."""
    now = time.time() if now is None else now
    return 86400.0 - (now % 86400.0)


def keys_path(state_dir: Path) -> Path:
    return state_dir / KEYS_FILE


class KeyStore:
    """The keys file. Open with :meth:`open`; one connection, used from one thread at a time."""

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self.path = path
        self._db = connection

    @classmethod
    def open(cls, state_dir: Path) -> KeyStore:
        """Open (creating it 0600, and the state dir 0700, if needed) the keys file."""
        private_dir(state_dir, under=state_dir)
        path = keys_path(state_dir)
        if not path.exists():
            # created by us, readable by nobody else before the first byte is written
            fd = os.open(path, os.O_CREAT | os.O_WRONLY, PRIVATE_FILE_MODE)
            os.close(fd)
        os.chmod(path, PRIVATE_FILE_MODE)
        # the server's KeyRing runs each call in a worker thread (one at a time)
        db = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=False)
        try:
            db.executescript(_SCHEMA)
        except BaseException:
            db.close()
            raise
        return cls(path, db)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # ------------------------------------------------------------------ the commands

    def add(self, name: str, quotas: Quotas, *, admin: bool = False) -> str:
        """Store a new key named ``name``; returns the key (the only time it exists)."""
        if not _NAME.fullmatch(name):
            raise KeysError(
                f"{name!r} is not a key name: use 1-64 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        if name == DEFAULT_KEY_NAME:
            raise KeysError(f"{name!r} is the name of the single --auth-token; choose another")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM keys WHERE name = ?", (name,)).fetchone():
                raise KeysError(
                    f"a key named {name!r} exists; revoke it first (clibridge keys revoke {name})"
                )
            db.execute(
                "INSERT INTO keys (name, digest, shown, created, admin, concurrency, rpm, "
                "daily_tokens) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    name,
                    digest_of(key),
                    key[:_SHOWN],
                    time.time(),
                    int(admin),
                    quotas.concurrency,
                    quotas.rpm,
                    quotas.daily_tokens,
                ),
            )
        return key

    def set_quotas(self, name: str, changes: Mapping[str, int | None]) -> Quotas:
        """Change some of ``name``'s quotas (by field name; None: unlimited), keep the
        others; returns the key's quotas now."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT concurrency, rpm, daily_tokens FROM keys WHERE name = ?", (name,)
            ).fetchone()
            if row is None:
                raise KeysError(f"no key named {name!r} (see clibridge keys list)")
            quotas = attrs.evolve(Quotas(*row), **changes)
            db.execute(
                "UPDATE keys SET concurrency = ?, rpm = ?, daily_tokens = ? WHERE name = ?",
                (quotas.concurrency, quotas.rpm, quotas.daily_tokens, name),
            )
        return quotas

    def revoke(self, name: str) -> None:
        with self._transaction() as db:
            if not db.execute("DELETE FROM keys WHERE name = ?", (name,)).rowcount:
                raise KeysError(f"no key named {name!r} (see clibridge keys list)")

    def records(self) -> list[KeyRecord]:
        rows = self._db.execute(
            "SELECT name, digest, shown, created, admin, concurrency, rpm, daily_tokens "
            "FROM keys ORDER BY name"
        ).fetchall()
        return [
            KeyRecord(
                name=name,
                digest=bytes(digest),
                shown=shown,
                created=created,
                admin=bool(admin),
                quotas=Quotas(concurrency, rpm, daily_tokens),
            )
            for name, digest, shown, created, admin, concurrency, rpm, daily_tokens in rows
        ]

    # ------------------------------------------------------------------ the server's side

    def data_version(self) -> int:
        """Moves when another connection commits (SQLite's ``PRAGMA data_version``)."""
        row = self._db.execute("PRAGMA data_version").fetchone()
        return int(row[0])

    def tokens_on(self, day: str) -> dict[str, int]:
        """Tokens counted on ``day``, by key name."""
        rows = self._db.execute(
            "SELECT name, tokens FROM daily_usage WHERE day = ?", (day,)
        ).fetchall()
        return {name: int(tokens) for name, tokens in rows}

    def add_tokens(self, day: str, tokens: Mapping[str, int]) -> None:
        """Add ``tokens`` (by key name) to ``day``'s counts, in one transaction."""
        if not tokens:
            return
        with self._transaction() as db:
            db.executemany(
                "INSERT INTO daily_usage (name, day, tokens) VALUES (?, ?, ?) "
                "ON CONFLICT (name, day) DO UPDATE SET tokens = tokens + excluded.tokens",
                [(name, day, n) for name, n in tokens.items()],
            )


def has_keys(state_dir: Path) -> bool:
    """Whether ``state_dir`` holds at least one named key (read only; no file: none)."""
    path = keys_path(state_dir)
    if not path.exists():
        return False
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)) as db:
            return db.execute("SELECT 1 FROM keys LIMIT 1").fetchone() is not None
    except sqlite3.Error:
        return False
