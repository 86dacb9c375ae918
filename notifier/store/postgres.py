"""The PostgreSQL store: the same interface as :class:`~notifier.store.sqlite.SqliteStore`, for several daemons on
one database.

Selected by ``NOTIFIER_DATABASE_URL=postgresql://...``. The queries are :class:`notifier.store.sql.SqlStore`'s;
this module is the PostgreSQL dialect. What differs from SQLite is what sharing needs:

- **Schema.** Created and migrated at open (:mod:`notifier.store.schema`), in one transaction under a session
  advisory lock, so daemons starting together migrate once.
- **Leading.** One daemon at a time polls and plans: the holder of a session advisory lock, taken on a connection
  of its own that lives as long as the daemon (:meth:`PostgresStore.try_lead`). When the holder dies, its
  connection closes, the server releases the lock, and another daemon takes it at its next tick.
- **Sending.** Every daemon sends. A batch is claimed with ``FOR UPDATE SKIP LOCKED`` and leased
  (:meth:`PostgresStore.claim_due`); a delivery whose sender died mid-send is claimed again when its lease expires.

Every psycopg error becomes a :class:`StoreError` (a full disk, SQLSTATE 53100, named as such), with the password
taken out of the driver's message.

Times are ``timestamptz`` and days ``date``; the connection's time zone is UTC, and Python sees the same types as
with SQLite. The store is synchronous (psycopg 3), like sqlite3: its queries are short, and the daemon calls it
from the event loop.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from typing import Any, ClassVar

import psycopg
from psycopg.rows import dict_row

from notifier.config.settings import redact_secrets, redact_url
from notifier.errors import StoreError
from notifier.store.deliveries import CLAIM, OUTGOING_COLUMNS
from notifier.store.dialect import FULL, Params
from notifier.store.schema import migrate
from notifier.store.sql import SqlStore

log = logging.getLogger(__name__)

Row = dict[str, Any]

# What psycopg reads specially in a query: a string literal, a cast, '%', and the placeholders '?' and ':name'.
_TOKENS = re.compile(r"'(?:[^']|'')*'|::|%|\?|:([A-Za-z_]\w*)")


@functools.lru_cache(maxsize=256)
def _psycopg(sql: str) -> str:
    """``sql`` as psycopg takes it: ``?`` becomes ``%s``, ``:name`` ``%(name)s``, and every ``%`` is doubled."""

    def swap(token: re.Match[str]) -> str:
        text = token.group()
        if text == "?":
            return "%s"
        if token.group(1):
            return f"%({token.group(1)})s"
        return text.replace("%", "%%")

    return _TOKENS.sub(swap, sql)


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for ``name``."""
    return int.from_bytes(hashlib.sha256(f"arxiv-notifier:{name}".encode()).digest()[:8], "big", signed=True)


class PostgresStore(SqlStore[psycopg.Connection[Row]]):
    """PostgreSQL-backed store. One instance owns one connection (plus the leader's); ``close()`` is idempotent."""

    _ERROR = psycopg.Error
    _TYPES: ClassVar[Mapping[str, str]] = {
        "time": "timestamptz",
        "day": "date",
        "flag": "boolean",
        "false": "false",
        "blob": "bytea",
    }
    _BY_CODE_POINT = ' COLLATE "C"'  # the database's default collation follows its locale
    _UNSENT_BY_AGE = "deliveries"  # the planner picks deliveries_by_age by itself

    def __init__(self, url: str):
        super().__init__()
        self.url = url
        self.where = redact_url(url)
        self._closed = False
        self._db: psycopg.Connection[Row] | None = None
        self._lead: psycopg.Connection[Row] | None = None
        self._lead_name: str | None = None
        db = self.db
        try:
            db.execute("SELECT pg_advisory_lock(%s)", (lock_key("schema"),))
            try:
                with db.transaction():
                    migrate(self, db)
            finally:
                db.execute("SELECT pg_advisory_unlock(%s)", (lock_key("schema"),))
        except StoreError:
            self.close()
            raise
        except psycopg.Error as exc:
            self.close()
            raise StoreError(f"cannot set up the database {self.where}: {redact_secrets(str(exc), self.url)}") from None

    def _connect(self) -> psycopg.Connection[Row]:
        try:
            db = psycopg.connect(self.url, autocommit=True, row_factory=dict_row, application_name="arxiv-notifier")
            db.execute("SET TIME ZONE 'UTC'")
        except psycopg.Error as exc:
            raise StoreError(f"cannot open the database {self.where}: {redact_secrets(str(exc), self.url)}") from None
        return db

    def _problem(self, exc: Exception) -> str | None:
        return FULL if isinstance(exc, psycopg.errors.DiskFull) else None

    def _redact(self, text: str) -> str:
        return redact_secrets(text, self.url)

    def close(self) -> None:
        if not self._closed and self._db is not None and not self._db.closed:
            self._close_outcomes()
        self._closed = True
        self.release_lead()
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def db(self) -> psycopg.Connection[Row]:
        """The connection; a broken one is replaced (the server restarted, a network blip)."""
        if self._closed:
            raise StoreError("the store is closed")
        if self._db is None or self._db.closed or self._db.broken:
            if self._db is not None:
                log.warning("store: connection to %s lost; reconnecting", self.where)
                self._db.close()
            self._db = None
            self._db = self._connect()
        return self._db

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[Row]]:
        db = self.db
        try:
            with db.transaction():
                yield db
        except psycopg.Error as exc:
            raise self._error(exc) from exc

    def _fetch(self, db: psycopg.Connection[Row], sql: str, params: Params) -> list[Row]:
        return db.execute(_psycopg(sql), params).fetchall()

    def _exec(self, db: psycopg.Connection[Row], sql: str, params: Params) -> int:
        return db.execute(_psycopg(sql), params).rowcount

    def _exec_many(self, db: psycopg.Connection[Row], sql: str, params: Iterable[Params]) -> None:
        with db.cursor() as cursor:
            cursor.executemany(_psycopg(sql), params)

    def _columns(self, db: psycopg.Connection[Row], table: str) -> set[str]:
        rows = self._fetch(
            db,
            """SELECT column_name FROM information_schema.columns
               WHERE table_schema = current_schema() AND table_name = ?""",
            (table,),
        )
        return {row["column_name"] for row in rows}

    @staticmethod
    def _insert_ignore(into: str) -> str:
        return f"INSERT INTO {into} ON CONFLICT DO NOTHING"

    @staticmethod
    def _in(column: str, name: str, values: Collection[object]) -> tuple[str, dict[str, object]]:
        return f"{column} = ANY(:{name})", {name: list(values)}

    def _given_names(self, db: psycopg.Connection[Row], names: Sequence[str]) -> None:
        """All the names in one statement, as one array; the table empties itself at the end of the transaction."""
        db.execute("CREATE TEMP TABLE IF NOT EXISTS given_names (name text PRIMARY KEY) ON COMMIT DELETE ROWS")
        db.execute("INSERT INTO given_names SELECT DISTINCT unnest(%s::text[])", (list(names),))
        db.execute("ANALYZE given_names")

    @staticmethod
    def _time(value: Any) -> datetime | None:
        moment: datetime | None = value
        return moment

    @staticmethod
    def _day(value: Any) -> date | None:
        day: date | None = value
        return day

    def _claim(self, db: psycopg.Connection[Row], pick: str, params: Mapping[str, object]) -> list[Row]:
        """One update of the rows a subquery locks, as they come back: in no order, so sorted here.

        Rows another daemon is claiming at the same moment are skipped, not waited for (``SKIP LOCKED``).
        """
        rows = self._fetch(
            db,
            f"""{CLAIM} WHERE id IN (SELECT id {pick} FOR UPDATE SKIP LOCKED)
                RETURNING {OUTGOING_COLUMNS}""",
            params,
        )
        rows.sort(key=lambda row: (row["created_at"], row["id"]))
        return rows

    def recover_interrupted(self, now: datetime) -> int:
        """Nothing to do at start: other daemons may be sending; a dead sender's claims expire with their lease."""
        return 0

    def try_lead(self, name: str) -> bool:
        """Whether this process leads ``name`` (polls and plans): holds, or now takes, its advisory lock.

        The lock lives on a connection of its own, kept open for the life of the store, so the server releases it
        when the process dies. Call it every tick: it also notices a lost connection (and with it the lead).
        """
        if self._closed:
            raise StoreError("the store is closed")
        if self._lead is not None and (self._lead.closed or self._lead.broken):
            log.warning("store: the connection holding the %s lead was lost", self._lead_name or name)
            self.release_lead()
        try:
            if self._lead is None:
                self._lead = self._connect()
            if self._lead_name == name:
                self._lead.execute("SELECT 1")  # the session, and so the lock, is still there
                return True
            row = self._lead.execute("SELECT pg_try_advisory_lock(%s) AS ok", (lock_key(f"lead:{name}"),)).fetchone()
        except psycopg.Error as exc:
            self.release_lead()
            raise self._error(exc) from exc
        if row is None or not row["ok"]:
            return False
        self._lead_name = name
        return True

    def release_lead(self) -> None:
        """Give up the lead (closing its connection releases the lock); idempotent."""
        if self._lead is not None:
            self._lead.close()
        self._lead = None
        self._lead_name = None
