"""What a database dialect supplies to the shared queries, and the plumbing every query uses.

The queries (:mod:`~notifier.store.papers`, :mod:`~notifier.store.subscribers`, :mod:`~notifier.store.deliveries`,
composed in :class:`~notifier.store.sql.SqlStore`) are written once, in SQL that both databases run, against the
abstract methods of :class:`Dialect`. :mod:`~notifier.store.sqlite` and :mod:`~notifier.store.postgres` implement
them, and so supply what really differs between the databases:

- how connections and transactions are opened, and which driver errors become :class:`StoreError`;
- how values travel: SQLite keeps times and days as ISO text, PostgreSQL as ``timestamptz`` and ``date``;
- placeholders (queries are written with sqlite3's ``?`` and ``:name``; PostgreSQL translates them), lists of
  values in a statement, insert-or-ignore, ordering text by code point, and the column types of the schema;
- claiming deliveries, leading, and what start-up recovers: SQLite serves one daemon, PostgreSQL several.

Driver errors become :class:`StoreError` in one place, :meth:`Dialect._error`, naming the database and, when the
dialect recognises it, the problem (the database or the disk is full).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import date, datetime
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from notifier.errors import StoreError

FULL = "the database is full or the disk is out of space"  # how a dialect names a full database or disk

Params = Sequence[object] | Mapping[str, object]

ConnT = TypeVar("ConnT")
T = TypeVar("T")


class ResultRow(Protocol):
    """A row of a result, read by column name (``sqlite3.Row`` and psycopg's dict rows both are)."""

    def __getitem__(self, key: str, /) -> Any: ...


def present(value: T | None) -> T:
    """The value of a NOT NULL column: never None, though the type read from a row cannot say so."""
    assert value is not None
    return value


class Dialect(ABC, Generic[ConnT]):
    """One database's way of running the shared SQL, over its connection type ``ConnT``.

    Statements that write run in :meth:`transaction`, on the connection it yields; reads outside one use
    :meth:`_query`. Parameters are Python values (datetimes, dates, booleans): the dialect binds them.
    """

    where: str  # the database, as error messages and logs name it (no password)
    # The driver's base exception: raised by a statement, it becomes a StoreError that names the database.
    _ERROR: ClassVar[type[Exception]]
    # Put after a text column in ORDER BY so that it sorts by code point, as Python does, whatever the collation.
    _BY_CODE_POINT: ClassVar[str]
    # The deliveries table, read through the index of unsent deliveries by age (deliveries_by_age), oldest first.
    _UNSENT_BY_AGE: ClassVar[str]
    # The column types the schema names (see notifier.store.schema): time, day, flag, false, blob.
    _TYPES: ClassVar[Mapping[str, str]]

    @abstractmethod
    def close(self) -> None:
        """Close the connections; idempotent."""

    @property
    @abstractmethod
    def db(self) -> ConnT:
        """The connection for reads outside a transaction; raises :class:`StoreError` once the store is closed."""

    @abstractmethod
    def transaction(self) -> AbstractContextManager[ConnT]:
        """A connection in a transaction, committed at the end of the block and rolled back on any exception."""

    @abstractmethod
    def _fetch(self, db: ConnT, sql: str, params: Params) -> Sequence[ResultRow]:
        """The rows of one statement."""

    @abstractmethod
    def _exec(self, db: ConnT, sql: str, params: Params) -> int:
        """Run one statement; how many rows it changed."""

    @abstractmethod
    def _exec_many(self, db: ConnT, sql: str, params: Iterable[Params]) -> None:
        """Run one statement once for each set of parameters."""

    @abstractmethod
    def _columns(self, db: ConnT, table: str) -> set[str]:
        """The names of ``table``'s columns (for the schema's migration steps)."""

    @staticmethod
    @abstractmethod
    def _insert_ignore(into: str) -> str:
        """``INSERT INTO {into}`` that skips a row whose key is already there (the dialects spell it differently)."""

    @staticmethod
    @abstractmethod
    def _in(column: str, name: str, values: Collection[object]) -> tuple[str, dict[str, object]]:
        """The condition that ``column`` is one of ``values``, and its parameters (named after ``name``).

        A dialect binds the list its own way: SQLite one parameter per value, PostgreSQL one array.
        """

    @staticmethod
    @abstractmethod
    def _time(value: Any) -> datetime | None:
        """A moment as read from a row (None for NULL)."""

    @staticmethod
    @abstractmethod
    def _day(value: Any) -> date | None:
        """A day as read from a row (None for NULL)."""

    def _chunks(self, values: list[str]) -> Iterator[list[str]]:
        """``values`` in lists for one statement each: all of them at once, unless the dialect caps parameters."""
        yield values

    @abstractmethod
    def _given_names(self, db: ConnT, names: Sequence[str]) -> None:
        """Fill, in transaction ``db``, the temporary table ``given_names (name)`` with ``names`` (distinct), and
        nothing else: how statements join on a set of names of any size without binding each into them."""

    @abstractmethod
    def _claim(self, db: ConnT, pick: str, params: Mapping[str, object]) -> Sequence[ResultRow]:
        """Claim, in transaction ``db``, the deliveries ``FROM ... LIMIT`` clause ``pick`` selects; their rows.

        Each claimed row is updated with :data:`~notifier.store.deliveries.CLAIM` and returned with
        :data:`~notifier.store.deliveries.OUTGOING_COLUMNS`, oldest first. ``params`` holds what both need:
        ``now``, ``owner``, ``until`` and ``limit``.
        """

    @abstractmethod
    def recover_interrupted(self, now: datetime) -> int:
        """At start: deal with deliveries left ``sending`` by a daemon that is gone; how many go back to pending."""

    @abstractmethod
    def try_lead(self, name: str) -> bool:
        """Whether this process leads ``name``: polls and plans."""

    def _problem(self, exc: Exception) -> str | None:
        """What ``exc`` means in words, when the dialect recognises it (:data:`FULL`); None otherwise."""
        return None

    def _redact(self, text: str) -> str:
        """``text`` (a driver's message) without anything secret the dialect knows of."""
        return text

    def _error(self, exc: Exception) -> StoreError:
        """The one translation of a driver error: a :class:`StoreError` naming the database, and the problem."""
        problem = self._problem(exc)
        text = self._redact(str(exc))
        if problem is not None:
            return StoreError(f"{problem}: {self.where}: {text}")
        return StoreError(f"database error in {self.where}: {text}")

    def _query(self, sql: str, params: Params = ()) -> Sequence[ResultRow]:
        try:
            return self._fetch(self.db, sql, params)
        except self._ERROR as exc:
            raise self._error(exc) from exc
