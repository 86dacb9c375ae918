"""The SQLite store (one file in the data directory), and what both stores share: row dataclasses, delivery states.

Only this module and :mod:`notifier.store_pg` (the PostgreSQL store behind the same interface) speak SQL.

It remembers papers and the feeds they were announced in, each feed's polling state, each subscriber's cursor,
and the outbox: every delivery of a digest to one (subscriber, channel, recipient), with the papers it carries.

Delivery states::

    pending --claim--> sending --ok--> sent
       ^                 |---temporary failure--> retry --(due)--> sending
       |                 '---permanent failure--> failed --(notifier retry)--> pending
       '-- a 'sending' row whose sender died: back to pending at start-up (SQLite), or claimed again once its
           lease has expired (PostgreSQL, where several daemons share the outbox)

A sender *claims* a batch of due deliveries: they become ``sending`` with its name (``lease_owner``) and a lease
(``lease_until``), and no other sender takes them until the lease expires.

Papers are reserved for a delivery in the same transaction that writes it, so a paper is never put into two
digests for the same recipient; it counts as delivered once its delivery is ``sent``.
"""

from __future__ import annotations

import json
import logging
import secrets
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from notifier.errors import StoreError
from notifier.models import Outgoing, Paper

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2  # 2: deliveries.lease_owner, deliveries.lease_until
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS papers (
    arxiv_id TEXT PRIMARY KEY, version INTEGER NOT NULL, title TEXT NOT NULL, abstract TEXT NOT NULL,
    authors TEXT NOT NULL, categories TEXT NOT NULL, comment TEXT, journal_ref TEXT,
    first_seen TEXT NOT NULL, updated TEXT NOT NULL, enriched_at TEXT);
CREATE TABLE IF NOT EXISTS feed_items (
    feed_key TEXT NOT NULL, arxiv_id TEXT NOT NULL, version INTEGER NOT NULL, announce_type TEXT NOT NULL,
    announced TEXT, seen_at TEXT NOT NULL, backfilled INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (feed_key, arxiv_id, version));
CREATE INDEX IF NOT EXISTS feed_items_by_time ON feed_items (feed_key, seen_at);
CREATE TABLE IF NOT EXISTS feeds (
    feed_key TEXT PRIMARY KEY, etag TEXT, last_polled TEXT, last_ok TEXT, last_status TEXT, last_error TEXT,
    last_announced TEXT, last_items_hash TEXT, item_count INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS backfills (
    feed_key TEXT NOT NULL, day TEXT NOT NULL, window_start TEXT NOT NULL, window_end TEXT NOT NULL,
    reason TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT, requested_at TEXT NOT NULL, attempted_at TEXT, added INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (feed_key, day));
CREATE TABLE IF NOT EXISTS subscribers (
    name TEXT PRIMARY KEY, created_at TEXT NOT NULL, cursor TEXT, last_digest_at TEXT);
CREATE TABLE IF NOT EXISTS unsubscribed (
    subscriber TEXT NOT NULL, address TEXT NOT NULL, at TEXT NOT NULL, PRIMARY KEY (subscriber, address));
CREATE TABLE IF NOT EXISTS digests (
    id TEXT PRIMARY KEY, subscriber TEXT NOT NULL, kind TEXT NOT NULL, period_start TEXT NOT NULL,
    period_end TEXT NOT NULL, created_at TEXT NOT NULL, paper_count INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS deliveries (
    id TEXT PRIMARY KEY, digest_id TEXT NOT NULL REFERENCES digests (id), subscriber TEXT NOT NULL,
    channel TEXT NOT NULL, recipient TEXT NOT NULL, message_id TEXT NOT NULL, state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at TEXT, last_error TEXT, part INTEGER NOT NULL DEFAULT 0,
    payload BLOB NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL, sent_at TEXT, lease_owner TEXT,
    lease_until TEXT);
CREATE INDEX IF NOT EXISTS deliveries_by_state ON deliveries (state, next_attempt_at);
CREATE TABLE IF NOT EXISTS delivery_papers (
    delivery_id TEXT NOT NULL REFERENCES deliveries (id), subscriber TEXT NOT NULL, channel TEXT NOT NULL,
    recipient TEXT NOT NULL, arxiv_id TEXT NOT NULL, version INTEGER NOT NULL,
    PRIMARY KEY (delivery_id, arxiv_id));
CREATE INDEX IF NOT EXISTS delivery_papers_by_recipient ON delivery_papers (subscriber, channel, recipient, arxiv_id);
"""

DELIVERY_STATES = ("pending", "sending", "sent", "retry", "failed", "cancelled")
# What is due for sending: pending, a retry whose time has come, or a send whose lease has expired (or that has none).
_DUE = """(state = 'pending' OR (state = 'retry' AND next_attempt_at <= :now)
           OR (state = 'sending' AND (lease_until IS NULL OR lease_until <= :now)))"""
# Columns added after version 1, each with its definition: added with ALTER TABLE to a database that lacks them.
_ADDED_COLUMNS = {"deliveries": {"lease_owner": "TEXT", "lease_until": "TEXT"}}


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


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
class NewDelivery:
    """A rendered message for one recipient, with the papers it carries: (arxiv_id, version)."""

    delivery_id: str
    channel: str
    recipient: str
    message_id: str
    payload: bytes
    papers: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    id: str
    subscriber: str
    channel: str
    recipient: str
    state: str
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    created_at: datetime
    paper_count: int


class Store:
    """SQLite-backed store. One instance owns one connection; ``close()`` is idempotent."""

    def __init__(self, path: Path):
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db: sqlite3.Connection | None = sqlite3.connect(path, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
            self._migrate(self._db)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open the database {path}: {exc}") from exc

    @staticmethod
    def _migrate(db: sqlite3.Connection) -> None:
        """Bring a database made by an older version up to :data:`SCHEMA_VERSION`."""
        db.execute("BEGIN IMMEDIATE")
        try:
            for table, columns in _ADDED_COLUMNS.items():
                present = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
                for name, definition in columns.items():
                    if name not in present:
                        db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {definition}")
                        log.info("store: added %s.%s", table, name)
            db.execute(
                """INSERT INTO meta VALUES ('schema_version', ?)
                   ON CONFLICT (key) DO UPDATE SET value = excluded.value""",
                (str(SCHEMA_VERSION),),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        if self._db is not None:
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
        except sqlite3.Error as exc:
            db.execute("ROLLBACK")
            raise StoreError(f"database error in {self.path}: {exc}") from exc
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _query(self, sql: str, params: Sequence[object] | dict[str, object] = ()) -> list[sqlite3.Row]:
        try:
            cursor = self.db.execute(sql, params)
            cursor.row_factory = sqlite3.Row
            return cursor.fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"database error in {self.path}: {exc}") from exc

    # -- papers and feeds -------------------------------------------------------------------------------------

    def ingest(self, feed_key: str, papers: Iterable[Paper], seen_at: datetime) -> int:
        """Remember ``papers`` as announced in ``feed_key``; returns how many feed items were new to us."""
        now = _iso(seen_at)
        added = 0
        with self.transaction() as db:
            for paper in papers:
                db.execute(
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
                        now,
                        now,
                    ),
                )
                cursor = db.execute(
                    "INSERT OR IGNORE INTO feed_items VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        feed_key,
                        paper.arxiv_id,
                        paper.version,
                        paper.announce_type,
                        paper.announced.isoformat() if paper.announced else None,
                        now,
                        int(paper.backfilled),
                    ),
                )
                added += cursor.rowcount
        return added

    def enrich(
        self, arxiv_id: str, now: datetime, *, comment: str | None, journal_ref: str | None, categories: Sequence[str]
    ) -> None:
        """Add what the API knows and the feed does not: comment, journal reference, all categories."""
        cats = json.dumps(list(categories))
        with self.transaction() as db:
            db.execute(
                """UPDATE papers SET comment = COALESCE(?, comment), journal_ref = COALESCE(?, journal_ref),
                   categories = CASE WHEN ? = '[]' THEN categories ELSE ? END, enriched_at = ? WHERE arxiv_id = ?""",
                (comment, journal_ref, cats, cats, _iso(now), arxiv_id),
            )

    def not_enriched(self, arxiv_ids: Iterable[str]) -> list[str]:
        ids = sorted(set(arxiv_ids))
        found: list[str] = []
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._query(
                f"SELECT arxiv_id FROM papers WHERE enriched_at IS NULL AND arxiv_id IN ({marks})", chunk
            )
            found.extend(row[0] for row in rows)
        return found

    def candidates(self, feed_key: str, after: datetime, until: datetime) -> list[Paper]:
        """Feed items of ``feed_key`` first seen in (after, until], as papers with the item's version and type."""
        rows = self._query(
            """SELECT f.arxiv_id, f.version, f.announce_type, f.announced, f.backfilled,
                      p.title, p.abstract, p.authors, p.categories, p.comment, p.journal_ref
               FROM feed_items f JOIN papers p USING (arxiv_id)
               WHERE f.feed_key = ? AND f.seen_at > ? AND f.seen_at <= ?
               ORDER BY f.announced, f.seen_at, f.arxiv_id, f.version""",
            (feed_key, _iso(after), _iso(until)),
        )
        return [
            Paper(
                arxiv_id=row["arxiv_id"],
                version=row["version"],
                title=row["title"],
                abstract=row["abstract"],
                authors=tuple(json.loads(row["authors"])),
                categories=tuple(json.loads(row["categories"])),
                announce_type=row["announce_type"],
                announced=date.fromisoformat(row["announced"]) if row["announced"] else None,
                comment=row["comment"],
                journal_ref=row["journal_ref"],
                backfilled=bool(row["backfilled"]),
            )
            for row in rows
        ]

    def paper_count(self) -> int:
        return int(self._query("SELECT count(*) FROM papers")[0][0])

    def feed_state(self, feed_key: str) -> FeedState | None:
        rows = self._query("SELECT * FROM feeds WHERE feed_key = ?", (feed_key,))
        return _feed_state(rows[0]) if rows else None

    def feed_states(self) -> list[FeedState]:
        return [_feed_state(row) for row in self._query("SELECT * FROM feeds ORDER BY feed_key")]

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
        ok = status != "error"
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO feeds (feed_key) VALUES (?)", (feed_key,))
            db.execute(
                """UPDATE feeds SET last_polled = ?, last_status = ?, last_error = ?,
                     last_ok = CASE WHEN ? THEN ? ELSE last_ok END,
                     etag = COALESCE(?, etag),
                     last_announced = COALESCE(?, last_announced),
                     last_items_hash = COALESCE(?, last_items_hash),
                     item_count = COALESCE(?, item_count)
                   WHERE feed_key = ?""",
                (
                    _iso(at),
                    status,
                    error,
                    ok,
                    _iso(at),
                    etag,
                    announced.isoformat() if announced else None,
                    items_hash,
                    item_count,
                    feed_key,
                ),
            )

    # -- backfills ---------------------------------------------------------------------------------------------

    def request_backfill(
        self, feed_key: str, day: date, window: tuple[datetime, datetime], reason: str, now: datetime
    ) -> bool:
        """Remember that ``day`` of ``feed_key`` must be recovered; False when it was requested before."""
        with self.transaction() as db:
            cursor = db.execute(
                """INSERT OR IGNORE INTO backfills (feed_key, day, window_start, window_end, reason, requested_at)
                   VALUES (?, ?, ?, ?, ?, ?)""",
                (feed_key, day.isoformat(), _iso(window[0]), _iso(window[1]), reason, _iso(now)),
            )
            return cursor.rowcount > 0

    def backfills(self, feed_key: str | None = None, states: Sequence[str] = ("pending", "done")) -> list[BackfillRow]:
        """Backfill windows (of one feed, or all), oldest day first."""
        marks = ",".join("?" * len(states))
        rows = self._query(
            f"""SELECT * FROM backfills WHERE (? IS NULL OR feed_key = ?) AND state IN ({marks})
                ORDER BY day, feed_key""",
            (feed_key, feed_key, *states),
        )
        return [
            BackfillRow(
                feed_key=row["feed_key"],
                day=date.fromisoformat(row["day"]),
                window_start=datetime.fromisoformat(row["window_start"]),
                window_end=datetime.fromisoformat(row["window_end"]),
                reason=row["reason"],
                state=row["state"],
                attempts=row["attempts"],
                last_error=row["last_error"],
                attempted_at=_time(row["attempted_at"]),
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
            db.execute(
                """UPDATE backfills SET attempts = attempts + ?, attempted_at = ?, last_error = ?, state = ?,
                     added = added + ? WHERE feed_key = ? AND day = ?""",
                (0 if give_up else 1, _iso(now), error, state, added, feed_key, day.isoformat()),
            )

    # -- subscribers --------------------------------------------------------------------------------------------

    def register_subscribers(self, names: Iterable[str], now: datetime) -> None:
        with self.transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO subscribers (name, created_at) VALUES (?, ?)", [(n, _iso(now)) for n in names]
            )

    def subscriber_state(self, name: str) -> SubscriberState | None:
        rows = self._query("SELECT * FROM subscribers WHERE name = ?", (name,))
        if not rows:
            return None
        row = rows[0]
        created = _time(row["created_at"])
        assert created is not None
        return SubscriberState(row["name"], created, _time(row["cursor"]), _time(row["last_digest_at"]))

    def rename_subscriber(self, old: str, new: str) -> int:
        """Move a subscriber's history to a new name, so a rename does not resend old papers."""
        with self.transaction() as db:
            if db.execute("SELECT 1 FROM digests WHERE subscriber = ?", (new,)).fetchone():
                raise StoreError(f"a subscriber named {new!r} already has history; cannot rename {old!r} onto it")
            if not db.execute("SELECT 1 FROM subscribers WHERE name = ?", (old,)).fetchone():
                raise StoreError(f"no subscriber named {old!r} in the store")
            db.execute("DELETE FROM subscribers WHERE name = ?", (new,))  # registered but never sent to
            moved = db.execute("UPDATE subscribers SET name = ? WHERE name = ?", (new, old)).rowcount
            for table in ("digests", "deliveries", "delivery_papers", "unsubscribed"):
                db.execute(f"UPDATE {table} SET subscriber = ? WHERE subscriber = ?", (new, old))
        return moved

    def unsubscribe(self, subscriber: str, address: str, now: datetime) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO unsubscribed VALUES (?, ?, ?)", (subscriber, address.lower(), _iso(now)))
            db.execute(
                """UPDATE deliveries SET state = 'cancelled', last_error = 'unsubscribed', updated_at = ?
                   WHERE subscriber = ? AND channel = 'email' AND lower(recipient) = ?
                     AND state IN ('pending', 'retry', 'failed')""",
                (_iso(now), subscriber, address.lower()),
            )

    def unsubscribed(self, subscriber: str) -> set[str]:
        rows = self._query("SELECT address FROM unsubscribed WHERE subscriber = ?", (subscriber,))
        return {row[0] for row in rows}

    # -- the outbox -------------------------------------------------------------------------------------------

    def reserved_versions(self, subscriber: str, channel: str, recipient: str) -> dict[str, int]:
        """arxiv_id -> highest version already sent or on its way to this recipient."""
        rows = self._query(
            """SELECT dp.arxiv_id, max(dp.version) FROM delivery_papers dp JOIN deliveries d ON d.id = dp.delivery_id
               WHERE dp.subscriber = ? AND dp.channel = ? AND dp.recipient = ? AND d.state != 'cancelled'
               GROUP BY dp.arxiv_id""",
            (subscriber, channel, recipient),
        )
        return {row[0]: int(row[1]) for row in rows}

    def record_digest(
        self,
        *,
        digest_id: str,
        subscriber: str,
        kind: str,
        period_start: datetime,
        period_end: datetime,
        now: datetime,
        deliveries: Sequence[NewDelivery],
        cursor: datetime,
    ) -> None:
        """Write a digest, its deliveries (pending) and their papers, and move the subscriber's cursor: atomically."""
        papers = {paper for delivery in deliveries for paper in delivery.papers}
        with self.transaction() as db:
            if deliveries:
                db.execute(
                    "INSERT INTO digests VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (digest_id, subscriber, kind, _iso(period_start), _iso(period_end), _iso(now), len(papers)),
                )
            for delivery in deliveries:
                db.execute(
                    """INSERT INTO deliveries (id, digest_id, subscriber, channel, recipient, message_id, state,
                         payload, created_at, updated_at, next_attempt_at)
                       VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?)""",
                    (
                        delivery.delivery_id,
                        digest_id,
                        subscriber,
                        delivery.channel,
                        delivery.recipient,
                        delivery.message_id,
                        delivery.payload,
                        _iso(now),
                        _iso(now),
                        _iso(now),
                    ),
                )
                db.executemany(
                    "INSERT OR IGNORE INTO delivery_papers VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        (delivery.delivery_id, subscriber, delivery.channel, delivery.recipient, arxiv_id, version)
                        for arxiv_id, version in delivery.papers
                    ],
                )
            db.execute(
                "UPDATE subscribers SET cursor = ?, last_digest_at = ? WHERE name = ?",
                (_iso(cursor), _iso(now), subscriber),
            )

    def due_deliveries(self, now: datetime, subscribers: Iterable[str] | None = None) -> list[Outgoing]:
        """Deliveries to attempt now: pending, retries whose time has come, and sends whose lease has expired."""
        rows = self._query(
            f"""SELECT id, subscriber, channel, recipient, message_id, payload, part FROM deliveries
                WHERE {_DUE} ORDER BY created_at, id""",
            {"now": _iso(now)},
        )
        allowed = None if subscribers is None else set(subscribers)
        return [_outgoing(row) for row in rows if allowed is None or row["subscriber"] in allowed]

    def claim_due(
        self, now: datetime, *, owner: str, lease: timedelta, limit: int, subscribers: Iterable[str] | None = None
    ) -> list[Outgoing]:
        """Claim up to ``limit`` due deliveries for ``owner``, oldest first: they become ``sending`` under a lease.

        Due means pending, a retry whose time has come, or a send whose lease has expired (its sender died).
        """
        names = None if subscribers is None else sorted(set(subscribers))
        if names == []:
            return []
        only = "" if names is None else f"AND subscriber IN ({','.join(f':name{i}' for i in range(len(names)))})"
        with self.transaction() as db:
            cursor = db.execute(
                f"""SELECT id, subscriber, channel, recipient, message_id, payload, part FROM deliveries
                    WHERE {_DUE} {only} ORDER BY created_at, id LIMIT :limit""",
                {"now": _iso(now), "limit": limit, **{f"name{i}": name for i, name in enumerate(names or ())}},
            )
            cursor.row_factory = sqlite3.Row
            rows = cursor.fetchall()
            db.executemany(
                """UPDATE deliveries SET state = 'sending', lease_owner = ?, lease_until = ?, attempts = attempts + 1,
                     updated_at = ? WHERE id = ?""",
                [(owner, _iso(now + lease), _iso(now), row["id"]) for row in rows],
            )
        return [_outgoing(row) for row in rows]

    def release(self, delivery_ids: Iterable[str], *, owner: str, now: datetime) -> int:
        """Hand claimed deliveries that were not attempted back to ``pending`` (a sender stopping)."""
        with self.transaction() as db:
            return db.executemany(
                """UPDATE deliveries SET state = 'pending', lease_owner = NULL, lease_until = NULL,
                     attempts = max(attempts - 1, 0), updated_at = ?
                   WHERE id = ? AND state = 'sending' AND lease_owner = ?""",
                [(_iso(now), delivery_id, owner) for delivery_id in delivery_ids],
            ).rowcount

    def recover_interrupted(self, now: datetime) -> int:
        """At start: every ``sending`` row goes back to ``pending``, as the one process that was sending is gone."""
        with self.transaction() as db:
            count = db.execute(
                """UPDATE deliveries SET state = 'pending', lease_owner = NULL, lease_until = NULL, updated_at = ?
                   WHERE state = 'sending'""",
                (_iso(now),),
            ).rowcount
        if count:
            log.info("%d deliveries interrupted by a crash will be sent again", count)
        return count

    def try_lead(self, name: str) -> bool:
        """Whether this process polls and plans: always, as SQLite serves one daemon."""
        return True

    def release_lead(self) -> None:
        """Nothing to release: SQLite serves one daemon."""

    def next_retry_at(self) -> datetime | None:
        rows = self._query("SELECT min(next_attempt_at) FROM deliveries WHERE state = 'retry'")
        return _time(rows[0][0]) if rows else None

    def _set_state(self, delivery_id: str, state: str, now: datetime, **columns: object) -> None:
        assignments = "".join(f", {name} = ?" for name in columns)
        with self.transaction() as db:
            db.execute(
                f"UPDATE deliveries SET state = ?, updated_at = ?{assignments} WHERE id = ?",
                (state, _iso(now), *columns.values(), delivery_id),
            )

    def mark_sending(self, delivery_id: str, now: datetime) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE deliveries SET state = 'sending', attempts = attempts + 1, updated_at = ? WHERE id = ?",
                (_iso(now), delivery_id),
            )

    def mark_part(self, delivery_id: str, part: int, now: datetime) -> None:
        self._set_state(delivery_id, "sending", now, part=part)

    def mark_sent(self, delivery_id: str, now: datetime) -> None:
        self._set_state(delivery_id, "sent", now, sent_at=_iso(now), last_error=None, next_attempt_at=None)

    def mark_retry(self, delivery_id: str, now: datetime, next_attempt_at: datetime, error: str) -> None:
        self._set_state(delivery_id, "retry", now, next_attempt_at=_iso(next_attempt_at), last_error=error)

    def mark_failed(self, delivery_id: str, now: datetime, error: str) -> None:
        self._set_state(delivery_id, "failed", now, last_error=error, next_attempt_at=None)

    def attempts(self, delivery_id: str) -> tuple[int, datetime]:
        row = self._query("SELECT attempts, created_at FROM deliveries WHERE id = ?", (delivery_id,))[0]
        created = _time(row[1])
        assert created is not None
        return int(row[0]), created

    def cancel_deliveries_of(self, keep: Iterable[str], now: datetime) -> int:
        """Cancel unsent deliveries of subscribers no longer in the config."""
        names = sorted(set(keep))
        marks = ",".join("?" * len(names)) or "''"
        with self.transaction() as db:
            return db.execute(
                f"""UPDATE deliveries SET state = 'cancelled', last_error = 'subscriber removed from the config',
                    updated_at = ? WHERE state IN ('pending', 'retry', 'sending') AND subscriber NOT IN ({marks})""",
                (_iso(now), *names),
            ).rowcount

    def retry_failed(self, now: datetime, subscriber: str | None = None) -> int:
        with self.transaction() as db:
            return db.execute(
                """UPDATE deliveries SET state = 'pending', next_attempt_at = ?, updated_at = ?
                   WHERE state IN ('failed', 'retry') AND (? IS NULL OR subscriber = ?)""",
                (_iso(now), _iso(now), subscriber, subscriber),
            ).rowcount

    def deliveries(self, states: Sequence[str] = DELIVERY_STATES, limit: int = 200) -> list[DeliveryRow]:
        marks = ",".join("?" * len(states))
        rows = self._query(
            f"""SELECT d.*, (SELECT count(*) FROM delivery_papers p WHERE p.delivery_id = d.id) AS paper_count
                FROM deliveries d WHERE state IN ({marks}) ORDER BY created_at DESC LIMIT ?""",
            (*states, limit),
        )
        return [
            DeliveryRow(
                id=row["id"],
                subscriber=row["subscriber"],
                channel=row["channel"],
                recipient=row["recipient"],
                state=row["state"],
                attempts=row["attempts"],
                next_attempt_at=_time(row["next_attempt_at"]),
                last_error=row["last_error"],
                created_at=_time(row["created_at"]) or datetime.now(UTC),
                paper_count=row["paper_count"],
            )
            for row in rows
        ]

    def delivery_counts(self) -> dict[str, int]:
        rows = self._query("SELECT state, count(*) FROM deliveries GROUP BY state")
        return {row[0]: int(row[1]) for row in rows}

    # -- service ----------------------------------------------------------------------------------------------

    def ping(self) -> None:
        """A trivial query: raises :class:`StoreError` when the database cannot be read."""
        self._query("SELECT count(*) FROM meta")

    def secret(self, key: str) -> str:
        """A random secret kept in ``meta`` under ``key``: made on first use, the same ever after."""
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", (key, secrets.token_urlsafe(32)))
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return str(row[0])

    def last_new_items(self) -> dict[str, datetime]:
        """feed_key -> when a poll last brought new items from arXiv (backfilled items not counted)."""
        rows = self._query("SELECT feed_key, max(seen_at) FROM feed_items WHERE backfilled = 0 GROUP BY feed_key")
        return {row[0]: datetime.fromisoformat(row[1]) for row in rows}


def _outgoing(row: sqlite3.Row) -> Outgoing:
    return Outgoing(
        delivery_id=row["id"],
        subscriber=row["subscriber"],
        channel=row["channel"],
        recipient=row["recipient"],
        message_id=row["message_id"],
        payload=bytes(row["payload"]),
        part=row["part"],
    )


def _feed_state(row: sqlite3.Row) -> FeedState:
    return FeedState(
        feed_key=row["feed_key"],
        etag=row["etag"],
        last_polled=_time(row["last_polled"]),
        last_ok=_time(row["last_ok"]),
        last_status=row["last_status"],
        last_error=row["last_error"],
        last_announced=date.fromisoformat(row["last_announced"]) if row["last_announced"] else None,
        last_items_hash=row["last_items_hash"],
        item_count=row["item_count"],
    )
