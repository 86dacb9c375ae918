"""What both stores share: the row dataclasses, the delivery states, the schema, and the store's SQL.

Only this module, :mod:`notifier.store.sqlite` (SQLite) and :mod:`notifier.store.postgres` (PostgreSQL) speak SQL.
:class:`SqlStore` implements the store interface once, in SQL that both databases run; a subclass supplies the
dialect, what really differs between them:

- how connections and transactions are opened, and which driver errors become :class:`StoreError`;
- how values travel: SQLite keeps times and days as ISO text, PostgreSQL as ``timestamptz`` and ``date``;
- placeholders (queries here are written with sqlite3's ``?`` and ``:name``; PostgreSQL translates them), lists of
  values in a statement, insert-or-ignore, and ordering text by code point;
- claiming deliveries, leading, and what start-up recovers: SQLite serves one daemon, PostgreSQL several.

The store remembers papers and the feeds they were announced in, each feed's polling state, each subscriber's
cursor, and the outbox: every delivery of a digest to one (subscriber, channel, recipient), with the papers it
carries.

Delivery states::

    pending --claim--> sending --ok--> sent
       ^                 |---temporary failure--> retry --(due)--> sending
       |                 '---permanent failure--> failed --(notifier retry)--> pending
       '-- a 'sending' row whose sender died: back to pending at start-up (SQLite), or claimed again once its
           lease has expired (PostgreSQL, where several daemons share the outbox)

A sender *claims* a batch of due deliveries: they become ``sending`` with its name (``lease_owner``) and a lease
(``lease_until``), and no other sender takes them until the lease expires.

Papers are reserved for a delivery in the same transaction that writes it, so a paper is never put into two
digests for the same recipient; it counts as delivered once its delivery is ``sent``. A cancelled delivery reserves
nothing, and cancelling a removed subscriber's deliveries moves its cursor back to where they started, so the
subscriber, restored, gets those papers again. Email recipients are compared by
:func:`~notifier.addresses.address_key` (reservations, unsubscriptions), so ``Ann@Lab.example`` is ``ann@lab.example``.

An outcome the database cannot take (a full disk, a lost connection) is kept in memory and written in the same
transaction as the next claim, which fails while it cannot be written: a message a channel took is not sent again
because its outcome could not be recorded.

A subscriber whose digest could not be planned (see :mod:`notifier.outbox.planner`) has a row in ``plan_failures``, with
the reason and a fingerprint of its definition, until a digest of it is planned.

The subscribers of the config in use are marked ``active`` (:meth:`SqlStore.register_subscribers`, in one
transaction whatever their number). Claims and cancellations join on that mark, so no statement binds a list of
subscriber names: only active subscribers' deliveries are claimed, and those of subscribers no longer active are
cancelled.

What deduplication needs is kept for good: every delivery's id, state and Message-ID, and the papers each recipient
was sent (``delivery_papers``). What only sending needs is pruned after a retention period
(:meth:`SqlStore.prune`): the rendered payloads of deliveries in a final state, and the feed items and papers no
digest will read again. The space they took is reused by what is written next, so the database stops growing with
each day's digests.

Driver errors become :class:`StoreError` in one place, :meth:`SqlStore._error`, naming the database and, when the
dialect recognises it, the problem (the database or the disk is full).
"""

from __future__ import annotations

import json
import logging
import secrets
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from notifier.addresses import address_key
from notifier.errors import StoreError
from notifier.models import DELIVERY_STATES, DeliveryState, Outgoing, Paper

log = logging.getLogger(__name__)

# 2: deliveries.lease_owner, deliveries.lease_until
# 3: plan_failures; email recipients of reservations and unsubscriptions kept as address keys
# 4: subscribers.active; indexes of unsent deliveries by age and of feed items by paper
SCHEMA_VERSION = 4
FULL = "the database is full or the disk is out of space"  # how a dialect names a full database or disk

# The tables of both stores. The types that differ are named by the dialect: {time} (a moment), {day} (a date),
# {flag} and {false} (a boolean and its default), {blob} (bytes).
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS papers (
    arxiv_id TEXT PRIMARY KEY, version INTEGER NOT NULL, title TEXT NOT NULL, abstract TEXT NOT NULL,
    authors TEXT NOT NULL, categories TEXT NOT NULL, comment TEXT, journal_ref TEXT,
    first_seen {time} NOT NULL, updated {time} NOT NULL, enriched_at {time});
CREATE TABLE IF NOT EXISTS feed_items (
    feed_key TEXT NOT NULL, arxiv_id TEXT NOT NULL, version INTEGER NOT NULL, announce_type TEXT NOT NULL,
    announced {day}, seen_at {time} NOT NULL, backfilled {flag} NOT NULL DEFAULT {false},
    PRIMARY KEY (feed_key, arxiv_id, version));
CREATE INDEX IF NOT EXISTS feed_items_by_time ON feed_items (feed_key, seen_at);
CREATE INDEX IF NOT EXISTS feed_items_by_paper ON feed_items (arxiv_id);
CREATE TABLE IF NOT EXISTS feeds (
    feed_key TEXT PRIMARY KEY, etag TEXT, last_polled {time}, last_ok {time}, last_status TEXT, last_error TEXT,
    last_announced {day}, last_items_hash TEXT, item_count INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS backfills (
    feed_key TEXT NOT NULL, day {day} NOT NULL, window_start {time} NOT NULL, window_end {time} NOT NULL,
    reason TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT, requested_at {time} NOT NULL, attempted_at {time}, added INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (feed_key, day));
CREATE TABLE IF NOT EXISTS subscribers (
    name TEXT PRIMARY KEY, created_at {time} NOT NULL, cursor {time}, last_digest_at {time},
    active {flag} NOT NULL DEFAULT {false});
CREATE TABLE IF NOT EXISTS unsubscribed (
    subscriber TEXT NOT NULL, address TEXT NOT NULL, at {time} NOT NULL, PRIMARY KEY (subscriber, address));
CREATE TABLE IF NOT EXISTS digests (
    id TEXT PRIMARY KEY, subscriber TEXT NOT NULL, kind TEXT NOT NULL, period_start {time} NOT NULL,
    period_end {time} NOT NULL, created_at {time} NOT NULL, paper_count INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS deliveries (
    id TEXT PRIMARY KEY, digest_id TEXT NOT NULL REFERENCES digests (id), subscriber TEXT NOT NULL,
    channel TEXT NOT NULL, recipient TEXT NOT NULL, message_id TEXT NOT NULL, state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at {time}, last_error TEXT, part INTEGER NOT NULL DEFAULT 0,
    payload {blob} NOT NULL, created_at {time} NOT NULL, updated_at {time} NOT NULL, sent_at {time},
    lease_owner TEXT, lease_until {time});
CREATE INDEX IF NOT EXISTS deliveries_by_state ON deliveries (state, next_attempt_at);
CREATE INDEX IF NOT EXISTS deliveries_by_age ON deliveries (created_at, id)
    WHERE state IN ('pending', 'retry', 'sending');
CREATE TABLE IF NOT EXISTS delivery_papers (
    delivery_id TEXT NOT NULL REFERENCES deliveries (id), subscriber TEXT NOT NULL, channel TEXT NOT NULL,
    recipient TEXT NOT NULL, arxiv_id TEXT NOT NULL, version INTEGER NOT NULL,
    PRIMARY KEY (delivery_id, arxiv_id));
CREATE INDEX IF NOT EXISTS delivery_papers_by_recipient ON delivery_papers (subscriber, channel, recipient, arxiv_id);
CREATE TABLE IF NOT EXISTS plan_failures (
    subscriber TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, reason TEXT NOT NULL, first_failed {time} NOT NULL,
    last_failed {time} NOT NULL, attempts INTEGER NOT NULL DEFAULT 1);
"""

# Not sent yet, nor given up: the rows of the index deliveries_by_age (a query names this very term to use it).
_UNSENT = "state IN ('pending', 'retry', 'sending')"
# Of a subscriber of the config in use (see register_subscribers).
_ACTIVE = "EXISTS (SELECT 1 FROM subscribers s WHERE s.name = deliveries.subscriber AND s.active)"
# What is due for sending: pending, a retry whose time has come, or a send whose lease has expired (or that has none),
# of an active subscriber.
_DUE = f"""{_UNSENT} AND (state = 'pending' OR (state = 'retry' AND next_attempt_at <= :now)
           OR (state = 'sending' AND (lease_until IS NULL OR lease_until <= :now))) AND {_ACTIVE}"""
# A payload pruned after the retention period (see prune): a rendered message is never empty.
PRUNED = b""
# How many rows one statement of prune changes: each batch is a transaction of its own, short for other writers.
_PRUNE_BATCH = 5000
# A delivery's columns as a sender needs them (see _outgoing).
OUTGOING_COLUMNS = "id, subscriber, channel, recipient, message_id, payload, part"
# Claiming a delivery for a sender: the SET of the UPDATE; the dialect chooses the rows.
CLAIM = """UPDATE deliveries SET state = 'sending', lease_owner = :owner, lease_until = :until,
             attempts = attempts + 1, updated_at = :now"""

Params = Sequence[object] | Mapping[str, object]


class ResultRow(Protocol):
    """A row of a result, read by column name (``sqlite3.Row`` and psycopg's dict rows both are)."""

    def __getitem__(self, key: str, /) -> Any: ...


@dataclass(frozen=True, slots=True)
class FeedState:
    feed_key: str
    etag: str | None
    last_polled: datetime | None
    last_ok: datetime | None
    last_status: str | None
    last_error: str | None
    last_announced: date | None
    last_items_hash: str | None
    item_count: int


@dataclass(frozen=True, slots=True)
class BackfillRow:
    """One announcement day of one feed to recover from the API: submissions in (window_start, window_end]."""

    feed_key: str
    day: date
    window_start: datetime
    window_end: datetime
    reason: str  # "missed" (downtime) | "capped" (the feed hit its item cap)
    state: str  # pending | done | expired (older than the backfill horizon before it succeeded)
    attempts: int
    last_error: str | None
    attempted_at: datetime | None
    added: int


@dataclass(frozen=True, slots=True)
class SubscriberState:
    name: str
    created_at: datetime
    cursor: datetime | None
    last_digest_at: datetime | None


@dataclass(frozen=True, slots=True)
class PlanFailure:
    """A subscriber whose digest could not be planned: why, since when, and for which definition of it."""

    subscriber: str
    fingerprint: str  # of the subscriber's definition when it failed (see notifier.outbox.planner.fingerprint)
    reason: str
    first_failed: datetime
    last_failed: datetime
    attempts: int


@dataclass(frozen=True, slots=True)
class NewDelivery:
    """A rendered message for one recipient, with the papers it carries: (arxiv_id, version)."""

    delivery_id: str
    channel: str
    recipient: str
    message_id: str
    payload: bytes
    papers: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class NewDigest:
    """A planned digest: written with its deliveries (pending) and the subscriber's new cursor, atomically."""

    digest_id: str
    subscriber: str
    kind: str
    period_start: datetime
    period_end: datetime
    now: datetime
    deliveries: tuple[NewDelivery, ...]
    cursor: datetime


@dataclass(frozen=True, slots=True)
class PruneReport:
    """What one :meth:`SqlStore.prune` dropped."""

    payloads: int = 0  # rendered messages of deliveries sent, failed or cancelled before the cut-off
    feed_items: int = 0
    papers: int = 0


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    id: str
    subscriber: str
    channel: str
    recipient: str
    state: DeliveryState
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    created_at: datetime
    paper_count: int


ConnT = TypeVar("ConnT")
T = TypeVar("T")
# An outcome not yet written: the delivery's new state, when, and the columns to set with it.
Outcome = tuple[str, datetime, dict[str, object]]


def recipient_key(channel: str, recipient: str) -> str:
    """How a recipient is compared and reserved: an email address by its key, anything else as it is."""
    return address_key(recipient) if channel == "email" else recipient


class SqlStore(ABC, Generic[ConnT]):
    """The store interface in SQL both databases run, over a dialect's connection type ``ConnT``.

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

    def __init__(self) -> None:
        self._unrecorded: dict[str, Outcome] = {}  # delivery id -> its outcome the database could not take yet

    # -- the dialect ------------------------------------------------------------------------------------------

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

        Each claimed row is updated with :data:`CLAIM` and returned with :data:`OUTGOING_COLUMNS`, oldest first.
        ``params`` holds what both need: ``now``, ``owner``, ``until``, ``limit`` and the subscribers' names.
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

    # -- shared plumbing ----------------------------------------------------------------------------------------

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

    def _upgrade(self, db: ConnT) -> None:
        """Bring the data of a database made by an older version up to :data:`SCHEMA_VERSION`, in transaction
        ``db``, once its tables exist; a database already there is not written to at all."""
        rows = self._fetch(db, "SELECT value FROM meta WHERE key = 'schema_version'", ())
        version = int(rows[0]["value"]) if rows else 0
        if version > SCHEMA_VERSION:
            raise StoreError(f"the database {self.where} has schema version {version}, newer than this program's")
        if version == SCHEMA_VERSION:
            return
        if version < 3:
            self._key_email_recipients(db)
        if version < 4:  # the subscribers known so far count as active until the config in use says otherwise
            self._exec(db, "UPDATE subscribers SET active = ?", (True,))
        self._exec(
            db,
            """INSERT INTO meta VALUES ('schema_version', ?)
               ON CONFLICT (key) DO UPDATE SET value = excluded.value""",
            (str(SCHEMA_VERSION),),
        )
        log.info("store: schema of %s at version %d (was %d)", self.where, SCHEMA_VERSION, version)

    def _key_email_recipients(self, db: ConnT) -> None:
        """Version 3: email recipients of reservations and unsubscriptions become address keys."""
        rows = self._fetch(db, "SELECT DISTINCT recipient FROM delivery_papers WHERE channel = 'email'", ())
        for row in rows:
            if (key := address_key(row["recipient"])) != row["recipient"]:
                self._exec(
                    db,
                    "UPDATE delivery_papers SET recipient = ? WHERE channel = 'email' AND recipient = ?",
                    (key, row["recipient"]),
                )
        for row in self._fetch(db, "SELECT subscriber, address, at FROM unsubscribed", ()):
            if (key := address_key(row["address"])) != row["address"]:
                self._exec(
                    db, self._insert_ignore("unsubscribed VALUES (?, ?, ?)"), (row["subscriber"], key, row["at"])
                )
                self._exec(
                    db,
                    "DELETE FROM unsubscribed WHERE subscriber = ? AND address = ?",
                    (row["subscriber"], row["address"]),
                )

    # -- papers and feeds -------------------------------------------------------------------------------------

    def ingest(self, feed_key: str, papers: Iterable[Paper], seen_at: datetime) -> int:
        """Remember ``papers`` as announced in ``feed_key``; returns how many feed items were new to us."""
        added = 0
        with self.transaction() as db:
            for paper in papers:
                self._exec(
                    db,
                    """INSERT INTO papers VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)
                       ON CONFLICT (arxiv_id) DO UPDATE SET
                         version = excluded.version, title = excluded.title, abstract = excluded.abstract,
                         authors = excluded.authors,
                         categories = CASE WHEN excluded.categories = '[]' THEN papers.categories
                                           ELSE excluded.categories END,
                         comment = COALESCE(excluded.comment, papers.comment),
                         journal_ref = COALESCE(excluded.journal_ref, papers.journal_ref), updated = excluded.updated
                       WHERE excluded.version >= papers.version""",
                    (
                        paper.arxiv_id,
                        paper.version,
                        paper.title,
                        paper.abstract,
                        json.dumps(paper.authors),
                        json.dumps(paper.categories),
                        paper.comment,
                        paper.journal_ref,
                        seen_at,
                        seen_at,
                    ),
                )
                added += self._exec(
                    db,
                    self._insert_ignore("feed_items VALUES (?, ?, ?, ?, ?, ?, ?)"),
                    (
                        feed_key,
                        paper.arxiv_id,
                        paper.version,
                        paper.announce_type,
                        paper.announced,
                        seen_at,
                        paper.backfilled,
                    ),
                )
        return added

    def enrich(
        self, arxiv_id: str, now: datetime, *, comment: str | None, journal_ref: str | None, categories: Sequence[str]
    ) -> None:
        """Add what the API knows and the feed does not: comment, journal reference, all categories."""
        cats = json.dumps(list(categories))
        with self.transaction() as db:
            self._exec(
                db,
                """UPDATE papers SET comment = COALESCE(:comment, comment),
                     journal_ref = COALESCE(:journal_ref, journal_ref),
                     categories = CASE WHEN :cats = '[]' THEN categories ELSE :cats END,
                     enriched_at = :now
                   WHERE arxiv_id = :id""",
                {"comment": comment, "journal_ref": journal_ref, "cats": cats, "now": now, "id": arxiv_id},
            )

    def not_enriched(self, arxiv_ids: Iterable[str]) -> list[str]:
        found: list[str] = []
        for chunk in self._chunks(sorted(set(arxiv_ids))):
            among, params = self._in("arxiv_id", "id", chunk)
            rows = self._query(
                f"SELECT arxiv_id FROM papers WHERE enriched_at IS NULL AND {among} ORDER BY arxiv_id", params
            )
            found.extend(row["arxiv_id"] for row in rows)
        return found

    def candidates(self, feed_key: str, after: datetime, until: datetime) -> list[Paper]:
        """Feed items of ``feed_key`` first seen in (after, until], as papers with the item's version and type.

        A category (``cs.LG``) is one indexed range of its items. A category set (``cs.AI+cs.LG``) is the union of
        its categories' items, and of any stored under the set's own key (as feeds were before they were polled
        per category), each paper version once, where it was first seen, with the type a combined feed gives it:
        ``new`` (``replace``) when any of its categories announced it so, as the paper's primary category is one of
        them, else ``cross`` (``replace-cross``). Versions stay apart: a window holding a paper's first version
        and its replacement holds both, as one feed's items do.
        """
        keys = list(dict.fromkeys([feed_key, *feed_key.split("+")]))
        among, params = self._in("f.feed_key", "key", keys)
        rows = self._query(
            f"""SELECT f.arxiv_id, f.version, f.announce_type, f.announced, f.backfilled,
                       p.title, p.abstract, p.authors, p.categories, p.comment, p.journal_ref
                FROM feed_items f JOIN papers p USING (arxiv_id)
                WHERE {among} AND f.seen_at > :after AND f.seen_at <= :until
                ORDER BY f.announced NULLS FIRST, f.seen_at, f.arxiv_id{self._BY_CODE_POINT}, f.version""",
            {**params, "after": after, "until": until},
        )
        if len(keys) > 1:
            rows = _one_per_version(rows)
        return [
            Paper(
                arxiv_id=row["arxiv_id"],
                version=row["version"],
                title=row["title"],
                abstract=row["abstract"],
                authors=tuple(json.loads(row["authors"])),
                categories=tuple(json.loads(row["categories"])),
                announce_type=row["announce_type"],
                announced=self._day(row["announced"]),
                comment=row["comment"],
                journal_ref=row["journal_ref"],
                backfilled=bool(row["backfilled"]),
            )
            for row in rows
        ]

    def paper_count(self) -> int:
        return int(self._query("SELECT count(*) AS n FROM papers")[0]["n"])

    def feed_state(self, feed_key: str) -> FeedState | None:
        rows = self._query("SELECT * FROM feeds WHERE feed_key = ?", (feed_key,))
        return self._feed_state(rows[0]) if rows else None

    def feed_states(self) -> list[FeedState]:
        rows = self._query(f"SELECT * FROM feeds ORDER BY feed_key{self._BY_CODE_POINT}")
        return [self._feed_state(row) for row in rows]

    def _feed_state(self, row: ResultRow) -> FeedState:
        return FeedState(
            feed_key=row["feed_key"],
            etag=row["etag"],
            last_polled=self._time(row["last_polled"]),
            last_ok=self._time(row["last_ok"]),
            last_status=row["last_status"],
            last_error=row["last_error"],
            last_announced=self._day(row["last_announced"]),
            last_items_hash=row["last_items_hash"],
            item_count=row["item_count"],
        )

    def record_poll(
        self,
        feed_key: str,
        *,
        at: datetime,
        status: str,
        error: str | None = None,
        etag: str | None = None,
        announced: date | None = None,
        items_hash: str | None = None,
        item_count: int | None = None,
    ) -> None:
        """Record one poll: ``status`` is ok, not_modified, repeat, empty or error; errors keep the last good state."""
        with self.transaction() as db:
            self._exec(db, self._insert_ignore("feeds (feed_key) VALUES (?)"), (feed_key,))
            self._exec(
                db,
                """UPDATE feeds SET last_polled = :at, last_status = :status, last_error = :error,
                     last_ok = CASE WHEN :ok THEN :at ELSE last_ok END,
                     etag = COALESCE(:etag, etag),
                     last_announced = COALESCE(:announced, last_announced),
                     last_items_hash = COALESCE(:items_hash, last_items_hash),
                     item_count = COALESCE(:item_count, item_count)
                   WHERE feed_key = :feed_key""",
                {
                    "at": at,
                    "status": status,
                    "error": error,
                    "ok": status != "error",
                    "etag": etag,
                    "announced": announced,
                    "items_hash": items_hash,
                    "item_count": item_count,
                    "feed_key": feed_key,
                },
            )

    # -- backfills ---------------------------------------------------------------------------------------------

    def request_backfill(
        self, feed_key: str, day: date, window: tuple[datetime, datetime], reason: str, now: datetime
    ) -> bool:
        """Remember that ``day`` of ``feed_key`` must be recovered; False when it was requested before."""
        with self.transaction() as db:
            return (
                self._exec(
                    db,
                    self._insert_ignore(
                        """backfills (feed_key, day, window_start, window_end, reason, requested_at)
                           VALUES (?, ?, ?, ?, ?, ?)"""
                    ),
                    (feed_key, day, window[0], window[1], reason, now),
                )
                > 0
            )

    def backfills(self, feed_key: str | None = None, states: Sequence[str] = ("pending", "done")) -> list[BackfillRow]:
        """Backfill windows (of one feed, or all), oldest day first."""
        among, params = self._in("state", "state", states)
        rows = self._query(
            f"""SELECT * FROM backfills WHERE (CAST(:feed AS TEXT) IS NULL OR feed_key = :feed) AND {among}
                ORDER BY day, feed_key{self._BY_CODE_POINT}""",
            {"feed": feed_key, **params},
        )
        return [
            BackfillRow(
                feed_key=row["feed_key"],
                day=_present(self._day(row["day"])),
                window_start=_present(self._time(row["window_start"])),
                window_end=_present(self._time(row["window_end"])),
                reason=row["reason"],
                state=row["state"],
                attempts=row["attempts"],
                last_error=row["last_error"],
                attempted_at=self._time(row["attempted_at"]),
                added=row["added"],
            )
            for row in rows
        ]

    def record_backfill(
        self,
        feed_key: str,
        day: date,
        now: datetime,
        *,
        added: int = 0,
        error: str | None = None,
        give_up: bool = False,
    ) -> None:
        """Record one attempt: ``done`` when ``error`` is None, ``expired`` on ``give_up``, else still pending."""
        state = "expired" if give_up else "done" if error is None else "pending"
        with self.transaction() as db:
            self._exec(
                db,
                """UPDATE backfills SET attempts = attempts + ?, attempted_at = ?, last_error = ?, state = ?,
                     added = added + ? WHERE feed_key = ? AND day = ?""",
                (0 if give_up else 1, now, error, state, added, feed_key, day),
            )

    # -- subscribers --------------------------------------------------------------------------------------------

    def register_subscribers(self, names: Iterable[str], now: datetime) -> None:
        """The subscribers of the config in use: each is registered (at ``now``, unless it was before) and marked
        active, and every other subscriber is marked inactive, in one transaction.

        The names go to the database once, into a temporary table (:meth:`_given_names`); the statements join on
        it, and only rows whose mark changes are written, so 100,000 names take a fraction of a second.
        """
        with self.transaction() as db:
            self._given_names(db, list(dict.fromkeys(names)))
            self._exec(
                db,
                self._insert_ignore("subscribers (name, created_at, active) SELECT name, :now, :yes FROM given_names"),
                {"now": now, "yes": True},
            )
            given = "EXISTS (SELECT 1 FROM given_names g WHERE g.name = subscribers.name)"
            self._exec(db, f"UPDATE subscribers SET active = :no WHERE active AND NOT {given}", {"no": False})
            self._exec(db, f"UPDATE subscribers SET active = :yes WHERE NOT active AND {given}", {"yes": True})

    def subscriber_state(self, name: str) -> SubscriberState | None:
        rows = self._query("SELECT * FROM subscribers WHERE name = ?", (name,))
        return self._subscriber_state(rows[0]) if rows else None

    def subscriber_states(self) -> dict[str, SubscriberState]:
        """Every registered subscriber's state, in one query (the planner asks about all of them each tick)."""
        return {row["name"]: self._subscriber_state(row) for row in self._query("SELECT * FROM subscribers", ())}

    def _subscriber_state(self, row: ResultRow) -> SubscriberState:
        return SubscriberState(
            row["name"],
            _present(self._time(row["created_at"])),
            self._time(row["cursor"]),
            self._time(row["last_digest_at"]),
        )

    def rename_subscriber(self, old: str, new: str) -> int:
        """Move a subscriber's history to a new name, so a rename does not resend old papers."""
        with self.transaction() as db:
            if self._fetch(db, "SELECT 1 FROM digests WHERE subscriber = ?", (new,)):
                raise StoreError(f"a subscriber named {new!r} already has history; cannot rename {old!r} onto it")
            if not self._fetch(db, "SELECT 1 FROM subscribers WHERE name = ?", (old,)):
                raise StoreError(f"no subscriber named {old!r} in the store")
            self._exec(db, "DELETE FROM subscribers WHERE name = ?", (new,))  # registered but never sent to
            self._exec(db, "DELETE FROM plan_failures WHERE subscriber IN (?, ?)", (old, new))  # tried afresh
            moved = self._exec(db, "UPDATE subscribers SET name = ? WHERE name = ?", (new, old))
            for table in ("digests", "deliveries", "delivery_papers", "unsubscribed"):
                self._exec(db, f"UPDATE {table} SET subscriber = ? WHERE subscriber = ?", (new, old))
        return moved

    def unsubscribe(self, subscriber: str, address: str, now: datetime) -> None:
        """Send ``address`` (however it is written) no more of ``subscriber``'s digests; cancel those unsent."""
        key = address_key(address)
        with self.transaction() as db:
            self._exec(db, self._insert_ignore("unsubscribed VALUES (?, ?, ?)"), (subscriber, key, now))
            unsent = self._fetch(
                db,
                """SELECT id, recipient FROM deliveries WHERE subscriber = ? AND channel = 'email'
                     AND state IN ('pending', 'retry', 'failed')""",
                (subscriber,),
            )
            self._exec_many(
                db,
                """UPDATE deliveries SET state = 'cancelled', last_error = 'unsubscribed', updated_at = ?
                   WHERE id = ?""",
                [(now, row["id"]) for row in unsent if address_key(row["recipient"]) == key],
            )

    def unsubscribed(self, subscriber: str) -> set[str]:
        """The address keys (:func:`~notifier.addresses.address_key`) unsubscribed from ``subscriber``."""
        rows = self._query("SELECT address FROM unsubscribed WHERE subscriber = ?", (subscriber,))
        return {address_key(row["address"]) for row in rows}

    # -- the outbox -------------------------------------------------------------------------------------------

    def reserved_versions(self, subscriber: str, channel: str, recipient: str) -> dict[str, int]:
        """arxiv_id -> highest version already sent or on its way to this recipient (an email address however
        it is written); a cancelled delivery reserves nothing."""
        rows = self._query(
            """SELECT dp.arxiv_id, max(dp.version) AS version
               FROM delivery_papers dp JOIN deliveries d ON d.id = dp.delivery_id
               WHERE dp.subscriber = ? AND dp.channel = ? AND dp.recipient = ? AND d.state != 'cancelled'
               GROUP BY dp.arxiv_id""",
            (subscriber, channel, recipient_key(channel, recipient)),
        )
        return {row["arxiv_id"]: int(row["version"]) for row in rows}

    def record_digests(self, digests: Sequence[NewDigest]) -> None:
        """Write digests, their deliveries (pending) and papers, and move their subscribers' cursors, all in one
        transaction: all of them are recorded, or none."""
        with self.transaction() as db:
            self._exec_many(
                db,
                "INSERT INTO digests VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        d.digest_id,
                        d.subscriber,
                        d.kind,
                        d.period_start,
                        d.period_end,
                        d.now,
                        len({paper for delivery in d.deliveries for paper in delivery.papers}),
                    )
                    for d in digests
                    if d.deliveries
                ],
            )
            self._exec_many(
                db,
                """INSERT INTO deliveries (id, digest_id, subscriber, channel, recipient, message_id, state,
                     payload, created_at, updated_at, next_attempt_at)
                   VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?)""",
                [
                    (
                        delivery.delivery_id,
                        d.digest_id,
                        d.subscriber,
                        delivery.channel,
                        delivery.recipient,
                        delivery.message_id,
                        delivery.payload,
                        d.now,
                        d.now,
                        d.now,
                    )
                    for d in digests
                    for delivery in d.deliveries
                ],
            )
            self._exec_many(
                db,
                self._insert_ignore("delivery_papers VALUES (?, ?, ?, ?, ?, ?)"),
                [
                    (
                        delivery.delivery_id,
                        d.subscriber,
                        delivery.channel,
                        recipient_key(delivery.channel, delivery.recipient),
                        arxiv_id,
                        version,
                    )
                    for d in digests
                    for delivery in d.deliveries
                    for arxiv_id, version in delivery.papers
                ],
            )
            self._exec_many(
                db,
                "UPDATE subscribers SET cursor = ?, last_digest_at = ? WHERE name = ?",
                [(d.cursor, d.now, d.subscriber) for d in digests],
            )

    def claim_due(self, now: datetime, *, owner: str, lease: timedelta, limit: int) -> list[Outgoing]:
        """Claim up to ``limit`` due deliveries of active subscribers for ``owner``, oldest first: they become
        ``sending`` under a lease.

        Due means pending, a retry whose time has come, or a send whose lease has expired (its sender died). The
        oldest unsent deliveries are read in order from an index of those alone, so a claim costs the same with
        100 or 100,000 in the outbox.
        """
        pick = f"FROM {self._UNSENT_BY_AGE} WHERE {_DUE} ORDER BY created_at, id{self._BY_CODE_POINT} LIMIT :limit"
        with self.transaction() as db:
            written = self._write_outcomes(db)
            rows = self._claim(db, pick, {"now": now, "owner": owner, "until": now + lease, "limit": limit})
        self._written(written)
        return [_outgoing(row) for row in rows]

    def release(self, delivery_ids: Iterable[str], *, owner: str, now: datetime) -> int:
        """Hand claimed deliveries that were not attempted back to ``pending`` (a sender stopping)."""
        among, params = self._in("id", "id", list(delivery_ids))
        with self.transaction() as db:
            return self._exec(
                db,
                f"""UPDATE deliveries SET state = 'pending', lease_owner = NULL, lease_until = NULL,
                      attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END, updated_at = :now
                    WHERE {among} AND state = 'sending' AND lease_owner = :owner""",
                {**params, "now": now, "owner": owner},
            )

    def _set_state(self, delivery_id: str, state: str, now: datetime, **columns: object) -> None:
        """Record an outcome of a send. One the database cannot take now is kept, not raised: it is written with
        the next claim, and until then that claim fails, so the delivery is not sent again meanwhile."""
        _old_state, _old_now, earlier = self._unrecorded.pop(delivery_id, ("", now, {}))
        self._unrecorded[delivery_id] = (state, now, {**earlier, **columns})
        try:
            with self.transaction() as db:
                written = self._write_outcomes(db)
        except StoreError as exc:
            log.error(
                "cannot record that delivery %s is %s; kept until the database takes it, and nothing is claimed "
                "until then: %s",
                delivery_id,
                state,
                exc,
            )
            return
        self._written(written)

    def _write_outcomes(self, db: ConnT) -> int:
        """Write, in transaction ``db``, the outcomes the database could not take before; how many there were."""
        for delivery_id, (state, now, columns) in self._unrecorded.items():
            assignments = "".join(f", {name} = ?" for name in columns)
            self._exec(
                db,
                f"UPDATE deliveries SET state = ?, updated_at = ?{assignments} WHERE id = ?",
                (state, now, *columns.values(), delivery_id),
            )
        return len(self._unrecorded)

    def _written(self, count: int) -> None:
        """The transaction that wrote the kept outcomes committed: forget them."""
        if count:
            self._unrecorded.clear()
        if count > 1:
            log.info("store: recorded %d delivery outcomes the database could not take before", count)

    def _close_outcomes(self) -> None:
        """At close: write the outcomes still kept, or say which deliveries will be sent again."""
        if not self._unrecorded:
            return
        try:
            with self.transaction() as db:
                self._written(self._write_outcomes(db))
        except StoreError as exc:
            log.error(
                "%d deliveries were sent but their outcome could not be recorded; they will be sent again: %s",
                len(self._unrecorded),
                exc,
            )
            self._unrecorded.clear()

    def mark_part(self, delivery_id: str, part: int, now: datetime) -> None:
        self._set_state(delivery_id, "sending", now, part=part)

    def mark_sent(self, delivery_id: str, now: datetime) -> None:
        self._set_state(delivery_id, "sent", now, sent_at=now, last_error=None, next_attempt_at=None)

    def mark_retry(self, delivery_id: str, now: datetime, next_attempt_at: datetime, error: str) -> None:
        self._set_state(delivery_id, "retry", now, next_attempt_at=next_attempt_at, last_error=error)

    def mark_failed(self, delivery_id: str, now: datetime, error: str) -> None:
        self._set_state(delivery_id, "failed", now, last_error=error, next_attempt_at=None)

    def attempts(self, delivery_id: str) -> tuple[int, datetime]:
        row = self._query("SELECT attempts, created_at FROM deliveries WHERE id = ?", (delivery_id,))[0]
        return int(row["attempts"]), _present(self._time(row["created_at"]))

    def cancel_removed(self, now: datetime) -> int:
        """Cancel unsent deliveries of subscribers no longer active, that is no longer in the config (and forget
        their plan failures); how many were cancelled.

        The papers of those deliveries are not lost: a cancelled delivery reserves nothing, and the subscriber's
        cursor moves back to the start of the earliest digest cancelled, so a subscriber restored to the config
        gets them in its next digest. Papers each recipient already had stay reserved.
        """
        removed = f"{_UNSENT} AND NOT {_ACTIVE}"
        with self.transaction() as db:
            starts = self._fetch(
                db,
                f"""SELECT subscriber, min(period_start) AS start FROM digests
                    WHERE id IN (SELECT digest_id FROM deliveries WHERE {removed})
                    GROUP BY subscriber""",
                (),
            )
            self._exec_many(
                db,
                """UPDATE subscribers SET cursor = :start
                   WHERE name = :name AND (cursor IS NULL OR cursor > :start)""",
                [{"name": row["subscriber"], "start": self._time(row["start"])} for row in starts],
            )
            self._exec(
                db,
                """DELETE FROM plan_failures WHERE NOT EXISTS
                     (SELECT 1 FROM subscribers s WHERE s.name = plan_failures.subscriber AND s.active)""",
                (),
            )
            return self._exec(
                db,
                f"""UPDATE deliveries SET state = 'cancelled', last_error = 'subscriber removed from the config',
                      updated_at = :now
                    WHERE {removed}""",
                {"now": now},
            )

    def retry_failed(self, now: datetime, subscriber: str | None = None) -> int:
        """Queue failed deliveries (all, or ``subscriber``'s) again, and retries at once; how many. A delivery
        whose payload was pruned (see :meth:`prune`) has nothing left to send and stays failed."""
        with self.transaction() as db:
            return self._exec(
                db,
                """UPDATE deliveries SET state = 'pending', next_attempt_at = :now, updated_at = :now
                   WHERE state IN ('failed', 'retry') AND (CAST(:name AS TEXT) IS NULL OR subscriber = :name)
                     AND length(payload) > 0""",
                {"now": now, "name": subscriber},
            )

    def prune(self, now: datetime, retention: timedelta) -> PruneReport:
        """Drop what nothing needs after ``retention``; what deduplication needs stays for good.

        - The payloads of deliveries sent, failed or cancelled before ``now - retention`` become empty
          (:data:`PRUNED`); the rows stay, with their ids, states and Message-IDs, and so do the papers each
          recipient was sent, so nothing is sent twice. A failed delivery pruned so can no longer be retried.
        - Feed items first seen before the cut-off, and before every active subscriber's cursor (a subscriber
          with none yet reads from ``retention`` before it was registered), except each feed's newest item, which
          says when the feed last brought anything.
        - Papers no feed item names any more.

        Each batch of :data:`_PRUNE_BATCH` rows is a transaction of its own, so the daemon's other writes are never
        held up for long. SQLite reuses the pages freed for the next writes (the file keeps its size, but stops
        growing); PostgreSQL's autovacuum does the same for its tables.
        """
        cutoff = now - retention
        payloads = self._prune_batches(
            """UPDATE deliveries SET payload = :pruned WHERE id IN (SELECT id FROM deliveries
                 WHERE state IN ('sent', 'failed', 'cancelled') AND updated_at < :cutoff AND length(payload) > 0
                 LIMIT :batch)""",
            {"pruned": PRUNED, "cutoff": cutoff},
        )
        (oldest,) = self._query(
            """SELECT min(cursor) AS cursor, min(CASE WHEN cursor IS NULL THEN created_at END) AS created
               FROM subscribers WHERE active"""
        )
        items_cutoff = cutoff
        if (cursor := self._time(oldest["cursor"])) is not None:
            items_cutoff = min(items_cutoff, cursor)
        if (created := self._time(oldest["created"])) is not None:
            items_cutoff = min(items_cutoff, created - retention)
        feed_items = self._prune_batches(
            """DELETE FROM feed_items WHERE (feed_key, arxiv_id, version) IN (SELECT feed_key, arxiv_id, version
                 FROM feed_items f WHERE seen_at < :cutoff
                   AND seen_at < (SELECT max(seen_at) FROM feed_items g WHERE g.feed_key = f.feed_key)
                 LIMIT :batch)""",
            {"cutoff": items_cutoff},
        )
        papers = self._prune_batches(
            """DELETE FROM papers WHERE arxiv_id IN (SELECT arxiv_id FROM papers p WHERE updated < :cutoff
                 AND NOT EXISTS (SELECT 1 FROM feed_items f WHERE f.arxiv_id = p.arxiv_id) LIMIT :batch)""",
            {"cutoff": items_cutoff},
        )
        return PruneReport(payloads, feed_items, papers)

    def _prune_batches(self, sql: str, params: Mapping[str, object]) -> int:
        """Run ``sql`` (which changes at most ``:batch`` rows) in transactions of its own until it changes none."""
        total = 0
        while True:
            with self.transaction() as db:
                changed = self._exec(db, sql, {**params, "batch": _PRUNE_BATCH})
            total += changed
            if changed < _PRUNE_BATCH:
                return total

    def deliveries(self, states: Sequence[DeliveryState] = DELIVERY_STATES, limit: int = 200) -> list[DeliveryRow]:
        among, params = self._in("state", "state", states)
        rows = self._query(
            f"""SELECT d.*, (SELECT count(*) FROM delivery_papers p WHERE p.delivery_id = d.id) AS paper_count
                FROM deliveries d WHERE {among} ORDER BY created_at DESC LIMIT :limit""",
            {**params, "limit": limit},
        )
        return [
            DeliveryRow(
                id=row["id"],
                subscriber=row["subscriber"],
                channel=row["channel"],
                recipient=row["recipient"],
                state=row["state"],
                attempts=row["attempts"],
                next_attempt_at=self._time(row["next_attempt_at"]),
                last_error=row["last_error"],
                created_at=self._time(row["created_at"]) or datetime.now(UTC),
                paper_count=int(row["paper_count"]),
            )
            for row in rows
        ]

    def delivery_counts(self) -> dict[DeliveryState, int]:
        rows = self._query("SELECT state, count(*) AS n FROM deliveries GROUP BY state")
        return {row["state"]: int(row["n"]) for row in rows}

    # -- digests that could not be planned ------------------------------------------------------------------

    def record_plan_failures(self, failures: Iterable[tuple[str, str, str]], now: datetime) -> None:
        """Remember that the digests of these (subscriber, fingerprint, reason) could not be planned at ``now``."""
        with self.transaction() as db:
            self._exec_many(
                db,
                """INSERT INTO plan_failures VALUES (?, ?, ?, ?, ?, 1)
                   ON CONFLICT (subscriber) DO UPDATE SET fingerprint = excluded.fingerprint,
                     reason = excluded.reason, last_failed = excluded.last_failed,
                     attempts = plan_failures.attempts + 1""",
                [(name, fingerprint, reason, now, now) for name, fingerprint, reason in failures],
            )

    def clear_plan_failure(self, subscriber: str) -> None:
        """A digest of ``subscriber`` was planned: it is failing no more."""
        with self.transaction() as db:
            self._exec(db, "DELETE FROM plan_failures WHERE subscriber = ?", (subscriber,))

    def plan_failures(self) -> dict[str, PlanFailure]:
        """Subscriber -> why its digest could not be planned, for those failing now, by name."""
        rows = self._query(f"SELECT * FROM plan_failures ORDER BY subscriber{self._BY_CODE_POINT}")
        return {
            row["subscriber"]: PlanFailure(
                subscriber=row["subscriber"],
                fingerprint=row["fingerprint"],
                reason=row["reason"],
                first_failed=_present(self._time(row["first_failed"])),
                last_failed=_present(self._time(row["last_failed"])),
                attempts=int(row["attempts"]),
            )
            for row in rows
        }

    # -- service ----------------------------------------------------------------------------------------------

    def ping(self) -> None:
        """A trivial query: raises :class:`StoreError` when the database cannot be reached or read."""
        self._query("SELECT count(*) FROM meta")

    def secret(self, key: str) -> str:
        """A random secret kept in ``meta`` under ``key``: made on first use, the same ever after."""
        with self.transaction() as db:
            self._exec(db, self._insert_ignore("meta VALUES (?, ?)"), (key, secrets.token_urlsafe(32)))
            row = self._fetch(db, "SELECT value FROM meta WHERE key = ?", (key,))[0]
        return str(row["value"])

    def last_new_items(self) -> dict[str, datetime]:
        """feed_key -> when a poll last brought new items from arXiv (backfilled items not counted)."""
        rows = self._query("SELECT feed_key, max(seen_at) AS at FROM feed_items WHERE NOT backfilled GROUP BY feed_key")
        return {row["feed_key"]: _present(self._time(row["at"])) for row in rows}


_OWN_TYPE = {"cross": "new", "replace-cross": "replace"}  # what a cross-list is in its primary category's feed


def _one_per_version(rows: Sequence[ResultRow]) -> list[ResultRow]:
    """One row per (paper, version), in the order first seen; a row announcing it as its own type wins."""
    kept: dict[tuple[str, int], ResultRow] = {}
    for row in rows:
        key = (row["arxiv_id"], row["version"])
        first = kept.get(key)
        if first is None:
            kept[key] = row
        elif _OWN_TYPE.get(first["announce_type"]) == row["announce_type"]:
            kept[key] = row  # keeps the place of the first
    return list(kept.values())


def _present(value: T | None) -> T:
    """The value of a NOT NULL column: never None, though the type read from a row cannot say so."""
    assert value is not None
    return value


def _outgoing(row: ResultRow) -> Outgoing:
    return Outgoing(
        delivery_id=row["id"],
        subscriber=row["subscriber"],
        channel=row["channel"],
        recipient=row["recipient"],
        message_id=row["message_id"],
        payload=bytes(row["payload"]),
        part=row["part"],
    )
