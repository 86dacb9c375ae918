"""The SQLite store: one file in the data directory, serving one daemon.

The queries are :class:`notifier.store.sql.SqlStore`'s; this module is the SQLite dialect. It opens the file in WAL
mode with ``synchronous=NORMAL`` and runs every write in ``BEGIN IMMEDIATE``, so a transaction holds the write lock
from its first statement. In WAL mode NORMAL loses nothing when the process dies (kill -9, a crash): a committed
transaction is in the log, which the next open replays. Only a power cut or a kernel crash may undo the last
transactions, and then the store is still consistent: a digest's deliveries and its cursor go back together (it is
planned again), and a delivery whose ``sent`` was undone is sent again, as one in flight is after a crash. FULL would
add an fsync to every commit: two per message sent, which halved the sending rate (``bench/delivery.py``).

Times and days are kept as ISO text (UTC, microseconds), which sorts as it should. The schema is set up, or brought
up to date (:mod:`notifier.store.schema`), in one ``BEGIN IMMEDIATE`` transaction when the file is opened.

Every ``sqlite3`` error becomes a :class:`StoreError` in :meth:`SqliteStore.transaction` or the shared read helper.
A full disk (SQLITE_FULL, or an I/O error with the disk out of space) is named as such. SQLite ends a transaction
itself on some errors (SQLITE_FULL among them); it is rolled back only if it is still open, so the error that ended
it is the one reported.

With one daemon on the file there is nothing to share: it always leads, a claim is a plain select and update, and at
start-up the deliveries a crash left ``sending`` go back to ``pending``.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, ClassVar

from notifier.errors import StoreError
from notifier.store.deliveries import CLAIM, OUTGOING_COLUMNS
from notifier.store.dialect import FULL, Params
from notifier.store.schema import migrate
from notifier.store.sql import SqlStore

log = logging.getLogger(__name__)

# How many ids one query of not_enriched binds: SQLite before 3.32 takes at most 999 parameters in a statement.
_LIST_CHUNK = 500
# An I/O error with less than this free on the database's file system is taken for a full disk.
_NEARLY_FULL = 1 << 20


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _text(value: object) -> object:
    """A parameter as SQLite keeps it: times and days as ISO text, anything else as it is."""
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, date):
        return value.isoformat()
    return value


def _bind(params: Params) -> Params:
    """Parameters as SQLite keeps them. Most rows hold no time or day (a paper of a delivery, say): those go as they
    are, as a plan binds millions of them."""
    if isinstance(params, Mapping):
        return {name: _text(value) for name, value in params.items()}
    for value in params:
        if isinstance(value, date):  # a datetime is a date too
            return tuple(_text(value) for value in params)
    return params


# SQLite's page cache for the connection (its default is 2 MB). A plan inserts each digest's papers at scattered
# places of large indexes; with 32 MB more of them stay in memory as the file grows (bench/store.py: the 40,000th to
# 60,000th digests cost 0.78-0.81 ms of CPU each instead of 0.88-0.93).
CACHE_KIB = 32 * 1024


class SqliteStore(SqlStore[sqlite3.Connection]):
    """SQLite-backed store. One instance owns one connection; ``close()`` is idempotent."""

    _ERROR = sqlite3.Error
    _TYPES: ClassVar[Mapping[str, str]] = {
        "time": "TEXT",
        "day": "TEXT",
        "flag": "INTEGER",
        "false": "0",
        "blob": "BLOB",
    }
    _BY_CODE_POINT = ""  # SQLite's default collation, BINARY, already compares by code point
    # Without statistics SQLite would rather gather every unsent row by state and sort them, for each claim.
    _UNSENT_BY_AGE = "deliveries INDEXED BY deliveries_by_age"

    def __init__(self, path: Path):
        super().__init__()
        self.path = path
        self.where = str(path)
        self._db: sqlite3.Connection | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        except (sqlite3.Error, OSError) as exc:
            self.close()
            if self._problem(exc) is not None:
                raise self._error(exc) from exc
            raise StoreError(f"cannot open the database {path}: {exc}") from exc
        try:
            with self.transaction() as db:
                migrate(self, db)
        except StoreError:
            self.close()
            raise

    def close(self) -> None:
        if self._db is not None:
            self._close_outcomes()
            self._db.close()
            self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError("the store is closed")
        return self._db

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except BaseException as exc:
            _rollback(db)
            if isinstance(exc, sqlite3.Error):
                raise self._error(exc) from exc
            raise

    def _problem(self, exc: Exception) -> str | None:
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return FULL
        code = getattr(exc, "sqlite_errorcode", None)
        if code is None:
            return None
        primary = code & 0xFF  # an extended code carries the primary one in its low byte
        if primary == sqlite3.SQLITE_FULL or (primary == sqlite3.SQLITE_IOERR and self._disk_nearly_full()):
            return FULL
        return None

    def _disk_nearly_full(self) -> bool:
        try:
            stats = os.statvfs(self.path.parent)
        except OSError:
            return False
        return stats.f_bavail * stats.f_frsize < _NEARLY_FULL

    def _fetch(self, db: sqlite3.Connection, sql: str, params: Params) -> list[sqlite3.Row]:
        cursor = db.execute(sql, _bind(params))
        cursor.row_factory = sqlite3.Row
        return cursor.fetchall()

    def _exec(self, db: sqlite3.Connection, sql: str, params: Params) -> int:
        return db.execute(sql, _bind(params)).rowcount

    def _exec_many(self, db: sqlite3.Connection, sql: str, params: Iterable[Params]) -> None:
        db.executemany(sql, (_bind(each) for each in params))

    def _columns(self, db: sqlite3.Connection, table: str) -> set[str]:
        return {row["name"] for row in self._fetch(db, f"PRAGMA table_info({table})", ())}

    @staticmethod
    def _insert_ignore(into: str) -> str:
        return f"INSERT OR IGNORE INTO {into}"

    @staticmethod
    def _in(column: str, name: str, values: Collection[object]) -> tuple[str, dict[str, object]]:
        params = {f"{name}{i}": value for i, value in enumerate(values)}
        return f"{column} IN ({', '.join(f':{key}' for key in params)})", params

    def _chunks(self, values: list[str]) -> Iterator[list[str]]:
        for start in range(0, len(values), _LIST_CHUNK):
            yield values[start : start + _LIST_CHUNK]

    def _given_names(self, db: sqlite3.Connection, names: Sequence[str]) -> None:
        """One insert per name into a table of the connection's own (``temp``), prepared once."""
        db.execute("CREATE TEMP TABLE IF NOT EXISTS given_names (name TEXT PRIMARY KEY)")
        db.execute("DELETE FROM given_names")
        db.executemany("INSERT OR IGNORE INTO given_names VALUES (?)", ((name,) for name in names))

    @staticmethod
    def _time(value: Any) -> datetime | None:
        return datetime.fromisoformat(value) if value else None

    @staticmethod
    def _day(value: Any) -> date | None:
        return date.fromisoformat(value) if value else None

    def _claim(self, db: sqlite3.Connection, pick: str, params: Mapping[str, object]) -> list[sqlite3.Row]:
        """Select, then update what was selected: ``BEGIN IMMEDIATE`` keeps any other writer out in between."""
        rows = self._fetch(db, f"SELECT {OUTGOING_COLUMNS} {pick}", params)
        self._exec_many(db, f"{CLAIM} WHERE id = :id", [{**params, "id": row["id"]} for row in rows])
        return rows

    def recover_interrupted(self, now: datetime) -> int:
        """At start: every ``sending`` row goes back to ``pending``, as the one process that was sending is gone."""
        with self.transaction() as db:
            count = self._exec(
                db,
                """UPDATE deliveries SET state = 'pending', lease_owner = NULL, lease_until = NULL, updated_at = ?
                   WHERE state = 'sending'""",
                (now,),
            )
        if count:
            log.info("%d deliveries interrupted by a crash will be sent again", count)
        return count

    def try_lead(self, name: str) -> bool:
        """Whether this process polls and plans: always, as SQLite serves one daemon."""
        return True


def _rollback(db: sqlite3.Connection) -> None:
    """Roll back the open transaction, if SQLite has not ended it already; never masks the error being handled."""
    if not db.in_transaction:
        return
    try:
        db.execute("ROLLBACK")
    except sqlite3.Error as exc:
        log.warning("store: rollback failed: %s", exc)
