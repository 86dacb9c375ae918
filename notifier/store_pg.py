"""The PostgreSQL store: the same interface as :class:`notifier.store.Store`, for several daemons on one database.

Selected by ``NOTIFIER_DATABASE_URL=postgresql://...``. What differs from SQLite is what sharing needs:

- **Schema.** Created and migrated at open, under a session advisory lock, so daemons starting together migrate
  once; ``meta.schema_version`` records the version.
- **Leading.** One daemon at a time polls and plans: the holder of a session advisory lock, taken on a connection
  of its own that lives as long as the daemon (:meth:`PostgresStore.try_lead`). When the holder dies, its
  connection closes, the server releases the lock, and another daemon takes it at its next tick.
- **Sending.** Every daemon sends. A batch is claimed with ``FOR UPDATE SKIP LOCKED`` and leased
  (:meth:`PostgresStore.claim_due`); a delivery whose sender died mid-send is claimed again when its lease expires.

Times are ``timestamptz`` and days ``date``; the connection's time zone is UTC, and Python sees the same types as
with SQLite. The store is synchronous (psycopg 3), like sqlite3: its queries are short, and the daemon calls it
from the event loop.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

from notifier.errors import StoreError
from notifier.models import Outgoing, Paper
from notifier.settings import redact_url
from notifier.store import (
    DELIVERY_STATES,
    SCHEMA_VERSION,
    BackfillRow,
    DeliveryRow,
    FeedState,
    NewDelivery,
    SubscriberState,
)

log = logging.getLogger(__name__)

Row = dict[str, Any]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS papers (
    arxiv_id text PRIMARY KEY, version integer NOT NULL, title text NOT NULL, abstract text NOT NULL,
    authors text NOT NULL, categories text NOT NULL, comment text, journal_ref text,
    first_seen timestamptz NOT NULL, updated timestamptz NOT NULL, enriched_at timestamptz);
CREATE TABLE IF NOT EXISTS feed_items (
    feed_key text NOT NULL, arxiv_id text NOT NULL, version integer NOT NULL, announce_type text NOT NULL,
    announced date, seen_at timestamptz NOT NULL, backfilled boolean NOT NULL DEFAULT false,
    PRIMARY KEY (feed_key, arxiv_id, version));
CREATE INDEX IF NOT EXISTS feed_items_by_time ON feed_items (feed_key, seen_at);
CREATE TABLE IF NOT EXISTS feeds (
    feed_key text PRIMARY KEY, etag text, last_polled timestamptz, last_ok timestamptz, last_status text,
    last_error text, last_announced date, last_items_hash text, item_count integer NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS backfills (
    feed_key text NOT NULL, day date NOT NULL, window_start timestamptz NOT NULL, window_end timestamptz NOT NULL,
    reason text NOT NULL, state text NOT NULL DEFAULT 'pending', attempts integer NOT NULL DEFAULT 0,
    last_error text, requested_at timestamptz NOT NULL, attempted_at timestamptz, added integer NOT NULL DEFAULT 0,
    PRIMARY KEY (feed_key, day));
CREATE TABLE IF NOT EXISTS subscribers (
    name text PRIMARY KEY, created_at timestamptz NOT NULL, cursor timestamptz, last_digest_at timestamptz);
CREATE TABLE IF NOT EXISTS unsubscribed (
    subscriber text NOT NULL, address text NOT NULL, at timestamptz NOT NULL, PRIMARY KEY (subscriber, address));
CREATE TABLE IF NOT EXISTS digests (
    id text PRIMARY KEY, subscriber text NOT NULL, kind text NOT NULL, period_start timestamptz NOT NULL,
    period_end timestamptz NOT NULL, created_at timestamptz NOT NULL, paper_count integer NOT NULL);
CREATE TABLE IF NOT EXISTS deliveries (
    id text PRIMARY KEY, digest_id text NOT NULL REFERENCES digests (id), subscriber text NOT NULL,
    channel text NOT NULL, recipient text NOT NULL, message_id text NOT NULL, state text NOT NULL,
    attempts integer NOT NULL DEFAULT 0, next_attempt_at timestamptz, last_error text,
    part integer NOT NULL DEFAULT 0, payload bytea NOT NULL, created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL, sent_at timestamptz, lease_owner text, lease_until timestamptz);
CREATE INDEX IF NOT EXISTS deliveries_by_state ON deliveries (state, next_attempt_at);
CREATE INDEX IF NOT EXISTS deliveries_by_age ON deliveries (created_at, id)
    WHERE state IN ('pending', 'retry', 'sending');
CREATE TABLE IF NOT EXISTS delivery_papers (
    delivery_id text NOT NULL REFERENCES deliveries (id), subscriber text NOT NULL, channel text NOT NULL,
    recipient text NOT NULL, arxiv_id text NOT NULL, version integer NOT NULL,
    PRIMARY KEY (delivery_id, arxiv_id));
CREATE INDEX IF NOT EXISTS delivery_papers_by_recipient ON delivery_papers (subscriber, channel, recipient, arxiv_id);
"""

# Later versions append (version, SQL) steps here; each runs once, in order, under the schema lock.
_MIGRATIONS: tuple[tuple[int, str], ...] = ()

# What is due for sending: pending, a retry whose time has come, or a send whose lease has expired.
_DUE = """(state = 'pending' OR (state = 'retry' AND next_attempt_at <= %(now)s)
           OR (state = 'sending' AND (lease_until IS NULL OR lease_until <= %(now)s)))"""


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for ``name``."""
    return int.from_bytes(hashlib.sha256(f"arxiv-notifier:{name}".encode()).digest()[:8], "big", signed=True)


class PostgresStore:
    """PostgreSQL-backed store. One instance owns one connection (plus the leader's); ``close()`` is idempotent."""

    def __init__(self, url: str):
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
                self._migrate(db)
            finally:
                db.execute("SELECT pg_advisory_unlock(%s)", (lock_key("schema"),))
        except psycopg.Error as exc:
            self.close()
            raise StoreError(f"cannot set up the database {self.where}: {exc}") from exc

    def _connect(self) -> psycopg.Connection[Row]:
        try:
            db = psycopg.connect(self.url, autocommit=True, row_factory=dict_row, application_name="arxiv-notifier")
            db.execute("SET TIME ZONE 'UTC'")
        except psycopg.Error as exc:
            raise StoreError(f"cannot open the database {self.where}: {exc}") from exc
        return db

    @staticmethod
    def _migrate(db: psycopg.Connection[Row]) -> None:
        with db.transaction():
            db.execute(_SCHEMA)
            row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            version = int(row["value"]) if row else 0
            if version > SCHEMA_VERSION:
                raise StoreError(f"the database has schema version {version}, newer than this program's")
            for step, sql in _MIGRATIONS:
                if step > version:
                    db.execute(sql)
                    log.info("store: migrated the schema to version %d", step)
            db.execute(
                """INSERT INTO meta VALUES ('schema_version', %s)
                   ON CONFLICT (key) DO UPDATE SET value = excluded.value""",
                (str(SCHEMA_VERSION),),
            )

    def close(self) -> None:
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
            raise StoreError(f"database error in {self.where}: {exc}") from exc

    def _query(self, sql: str, params: Sequence[object] | dict[str, object] = ()) -> list[Row]:
        try:
            return self.db.execute(sql, params).fetchall()
        except psycopg.Error as exc:
            raise StoreError(f"database error in {self.where}: {exc}") from exc

    # -- papers and feeds -------------------------------------------------------------------------------------

    def ingest(self, feed_key: str, papers: Iterable[Paper], seen_at: datetime) -> int:
        """Remember ``papers`` as announced in ``feed_key``; returns how many feed items were new to us."""
        added = 0
        with self.transaction() as db:
            for paper in papers:
                db.execute(
                    """INSERT INTO papers VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, NULL)
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
                cursor = db.execute(
                    """INSERT INTO feed_items VALUES (%s, %s, %s, %s, %s, %s, %s)
                       ON CONFLICT DO NOTHING""",
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
                added += max(cursor.rowcount, 0)
        return added

    def enrich(
        self, arxiv_id: str, now: datetime, *, comment: str | None, journal_ref: str | None, categories: Sequence[str]
    ) -> None:
        """Add what the API knows and the feed does not: comment, journal reference, all categories."""
        cats = json.dumps(list(categories))
        with self.transaction() as db:
            db.execute(
                """UPDATE papers SET comment = COALESCE(%(comment)s, comment),
                     journal_ref = COALESCE(%(journal_ref)s, journal_ref),
                     categories = CASE WHEN %(cats)s = '[]' THEN categories ELSE %(cats)s END,
                     enriched_at = %(now)s
                   WHERE arxiv_id = %(id)s""",
                {"comment": comment, "journal_ref": journal_ref, "cats": cats, "now": now, "id": arxiv_id},
            )

    def not_enriched(self, arxiv_ids: Iterable[str]) -> list[str]:
        ids = sorted(set(arxiv_ids))
        rows = self._query(
            "SELECT arxiv_id FROM papers WHERE enriched_at IS NULL AND arxiv_id = ANY(%s) ORDER BY arxiv_id",
            (ids,),
        )
        return [row["arxiv_id"] for row in rows]

    def candidates(self, feed_key: str, after: datetime, until: datetime) -> list[Paper]:
        """Feed items of ``feed_key`` first seen in (after, until], as papers with the item's version and type."""
        rows = self._query(
            """SELECT f.arxiv_id, f.version, f.announce_type, f.announced, f.backfilled,
                      p.title, p.abstract, p.authors, p.categories, p.comment, p.journal_ref
               FROM feed_items f JOIN papers p USING (arxiv_id)
               WHERE f.feed_key = %s AND f.seen_at > %s AND f.seen_at <= %s
               ORDER BY f.announced NULLS FIRST, f.seen_at, f.arxiv_id COLLATE "C", f.version""",
            (feed_key, after, until),
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
                announced=row["announced"],
                comment=row["comment"],
                journal_ref=row["journal_ref"],
                backfilled=bool(row["backfilled"]),
            )
            for row in rows
        ]

    def paper_count(self) -> int:
        return int(self._query("SELECT count(*) AS n FROM papers")[0]["n"])

    def feed_state(self, feed_key: str) -> FeedState | None:
        rows = self._query("SELECT * FROM feeds WHERE feed_key = %s", (feed_key,))
        return _feed_state(rows[0]) if rows else None

    def feed_states(self) -> list[FeedState]:
        return [_feed_state(row) for row in self._query('SELECT * FROM feeds ORDER BY feed_key COLLATE "C"')]

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
            db.execute("INSERT INTO feeds (feed_key) VALUES (%s) ON CONFLICT DO NOTHING", (feed_key,))
            db.execute(
                """UPDATE feeds SET last_polled = %(at)s, last_status = %(status)s, last_error = %(error)s,
                     last_ok = CASE WHEN %(ok)s THEN %(at)s ELSE last_ok END,
                     etag = COALESCE(%(etag)s, etag),
                     last_announced = COALESCE(%(announced)s, last_announced),
                     last_items_hash = COALESCE(%(items_hash)s, last_items_hash),
                     item_count = COALESCE(%(item_count)s, item_count)
                   WHERE feed_key = %(feed_key)s""",
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
            cursor = db.execute(
                """INSERT INTO backfills (feed_key, day, window_start, window_end, reason, requested_at)
                   VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING""",
                (feed_key, day, window[0], window[1], reason, now),
            )
            return cursor.rowcount > 0

    def backfills(self, feed_key: str | None = None, states: Sequence[str] = ("pending", "done")) -> list[BackfillRow]:
        """Backfill windows (of one feed, or all), oldest day first."""
        rows = self._query(
            """SELECT * FROM backfills WHERE (%(feed)s::text IS NULL OR feed_key = %(feed)s) AND state = ANY(%(states)s)
               ORDER BY day, feed_key COLLATE "C\"""",
            {"feed": feed_key, "states": list(states)},
        )
        return [
            BackfillRow(
                feed_key=row["feed_key"],
                day=row["day"],
                window_start=row["window_start"],
                window_end=row["window_end"],
                reason=row["reason"],
                state=row["state"],
                attempts=row["attempts"],
                last_error=row["last_error"],
                attempted_at=row["attempted_at"],
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
                """UPDATE backfills SET attempts = attempts + %s, attempted_at = %s, last_error = %s, state = %s,
                     added = added + %s WHERE feed_key = %s AND day = %s""",
                (0 if give_up else 1, now, error, state, added, feed_key, day),
            )

    # -- subscribers --------------------------------------------------------------------------------------------

    def register_subscribers(self, names: Iterable[str], now: datetime) -> None:
        with self.transaction() as db, db.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO subscribers (name, created_at) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                [(name, now) for name in names],
            )

    def subscriber_state(self, name: str) -> SubscriberState | None:
        rows = self._query("SELECT * FROM subscribers WHERE name = %s", (name,))
        if not rows:
            return None
        row = rows[0]
        return SubscriberState(row["name"], row["created_at"], row["cursor"], row["last_digest_at"])

    def rename_subscriber(self, old: str, new: str) -> int:
        """Move a subscriber's history to a new name, so a rename does not resend old papers."""
        with self.transaction() as db:
            if db.execute("SELECT 1 FROM digests WHERE subscriber = %s", (new,)).fetchone():
                raise StoreError(f"a subscriber named {new!r} already has history; cannot rename {old!r} onto it")
            if not db.execute("SELECT 1 FROM subscribers WHERE name = %s", (old,)).fetchone():
                raise StoreError(f"no subscriber named {old!r} in the store")
            db.execute("DELETE FROM subscribers WHERE name = %s", (new,))  # registered but never sent to
            moved = db.execute("UPDATE subscribers SET name = %s WHERE name = %s", (new, old)).rowcount
            for table in ("digests", "deliveries", "delivery_papers", "unsubscribed"):
                db.execute(f"UPDATE {table} SET subscriber = %s WHERE subscriber = %s", (new, old))
        return moved

    def unsubscribe(self, subscriber: str, address: str, now: datetime) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO unsubscribed VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                (subscriber, address.lower(), now),
            )
            db.execute(
                """UPDATE deliveries SET state = 'cancelled', last_error = 'unsubscribed', updated_at = %s
                   WHERE subscriber = %s AND channel = 'email' AND lower(recipient) = %s
                     AND state IN ('pending', 'retry', 'failed')""",
                (now, subscriber, address.lower()),
            )

    def unsubscribed(self, subscriber: str) -> set[str]:
        rows = self._query("SELECT address FROM unsubscribed WHERE subscriber = %s", (subscriber,))
        return {row["address"] for row in rows}

    # -- the outbox -------------------------------------------------------------------------------------------

    def reserved_versions(self, subscriber: str, channel: str, recipient: str) -> dict[str, int]:
        """arxiv_id -> highest version already sent or on its way to this recipient."""
        rows = self._query(
            """SELECT dp.arxiv_id, max(dp.version) AS version
               FROM delivery_papers dp JOIN deliveries d ON d.id = dp.delivery_id
               WHERE dp.subscriber = %s AND dp.channel = %s AND dp.recipient = %s AND d.state != 'cancelled'
               GROUP BY dp.arxiv_id""",
            (subscriber, channel, recipient),
        )
        return {row["arxiv_id"]: int(row["version"]) for row in rows}

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
        with self.transaction() as db, db.cursor() as cur:
            if deliveries:
                cur.execute(
                    "INSERT INTO digests VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    (digest_id, subscriber, kind, period_start, period_end, now, len(papers)),
                )
            cur.executemany(
                """INSERT INTO deliveries (id, digest_id, subscriber, channel, recipient, message_id, state,
                     payload, created_at, updated_at, next_attempt_at)
                   VALUES (%s, %s, %s, %s, %s, %s, 'pending', %s, %s, %s, %s)""",
                [
                    (
                        delivery.delivery_id,
                        digest_id,
                        subscriber,
                        delivery.channel,
                        delivery.recipient,
                        delivery.message_id,
                        delivery.payload,
                        now,
                        now,
                        now,
                    )
                    for delivery in deliveries
                ],
            )
            cur.executemany(
                "INSERT INTO delivery_papers VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                [
                    (delivery.delivery_id, subscriber, delivery.channel, delivery.recipient, arxiv_id, version)
                    for delivery in deliveries
                    for arxiv_id, version in delivery.papers
                ],
            )
            cur.execute(
                "UPDATE subscribers SET cursor = %s, last_digest_at = %s WHERE name = %s", (cursor, now, subscriber)
            )

    def due_deliveries(self, now: datetime, subscribers: Iterable[str] | None = None) -> list[Outgoing]:
        """Deliveries to attempt now: pending, retries whose time has come, and sends whose lease has expired."""
        rows = self._query(
            f"""SELECT id, subscriber, channel, recipient, message_id, payload, part FROM deliveries
                WHERE {_DUE} AND (%(names)s::text[] IS NULL OR subscriber = ANY(%(names)s))
                ORDER BY created_at, id COLLATE "C\"""",
            {"now": now, "names": None if subscribers is None else list(subscribers)},
        )
        return [_outgoing(row) for row in rows]

    def claim_due(
        self, now: datetime, *, owner: str, lease: timedelta, limit: int, subscribers: Iterable[str] | None = None
    ) -> list[Outgoing]:
        """Claim up to ``limit`` due deliveries for ``owner``, oldest first: they become ``sending`` under a lease.

        Rows another daemon is claiming at the same moment are skipped, not waited for (``SKIP LOCKED``).
        """
        with self.transaction() as db:
            rows = db.execute(
                f"""UPDATE deliveries SET state = 'sending', lease_owner = %(owner)s, lease_until = %(until)s,
                      attempts = attempts + 1, updated_at = %(now)s
                    WHERE id IN (
                      SELECT id FROM deliveries
                      WHERE {_DUE} AND (%(names)s::text[] IS NULL OR subscriber = ANY(%(names)s))
                      ORDER BY created_at, id COLLATE "C" LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
                    RETURNING id, subscriber, channel, recipient, message_id, payload, part, created_at""",
                {
                    "owner": owner,
                    "until": now + lease,
                    "now": now,
                    "limit": limit,
                    "names": None if subscribers is None else list(subscribers),
                },
            ).fetchall()
        rows.sort(key=lambda row: (row["created_at"], row["id"]))
        return [_outgoing(row) for row in rows]

    def release(self, delivery_ids: Iterable[str], *, owner: str, now: datetime) -> int:
        """Hand claimed deliveries that were not attempted back to ``pending`` (a sender stopping)."""
        with self.transaction() as db:
            return db.execute(
                """UPDATE deliveries SET state = 'pending', lease_owner = NULL, lease_until = NULL,
                     attempts = greatest(attempts - 1, 0), updated_at = %s
                   WHERE id = ANY(%s) AND state = 'sending' AND lease_owner = %s""",
                (now, list(delivery_ids), owner),
            ).rowcount

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
            raise StoreError(f"database error in {self.where}: {exc}") from exc
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

    def next_retry_at(self) -> datetime | None:
        rows = self._query("SELECT min(next_attempt_at) AS at FROM deliveries WHERE state = 'retry'")
        at: datetime | None = rows[0]["at"] if rows else None
        return at

    def _set_state(self, delivery_id: str, state: str, now: datetime, **columns: object) -> None:
        assignments = "".join(f", {name} = %s" for name in columns)
        with self.transaction() as db:
            db.execute(
                f"UPDATE deliveries SET state = %s, updated_at = %s{assignments} WHERE id = %s",
                (state, now, *columns.values(), delivery_id),
            )

    def mark_sending(self, delivery_id: str, now: datetime) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE deliveries SET state = 'sending', attempts = attempts + 1, updated_at = %s WHERE id = %s",
                (now, delivery_id),
            )

    def mark_part(self, delivery_id: str, part: int, now: datetime) -> None:
        self._set_state(delivery_id, "sending", now, part=part)

    def mark_sent(self, delivery_id: str, now: datetime) -> None:
        self._set_state(delivery_id, "sent", now, sent_at=now, last_error=None, next_attempt_at=None)

    def mark_retry(self, delivery_id: str, now: datetime, next_attempt_at: datetime, error: str) -> None:
        self._set_state(delivery_id, "retry", now, next_attempt_at=next_attempt_at, last_error=error)

    def mark_failed(self, delivery_id: str, now: datetime, error: str) -> None:
        self._set_state(delivery_id, "failed", now, last_error=error, next_attempt_at=None)

    def attempts(self, delivery_id: str) -> tuple[int, datetime]:
        row = self._query("SELECT attempts, created_at FROM deliveries WHERE id = %s", (delivery_id,))[0]
        return int(row["attempts"]), row["created_at"]

    def cancel_deliveries_of(self, keep: Iterable[str], now: datetime) -> int:
        """Cancel unsent deliveries of subscribers no longer in the config."""
        with self.transaction() as db:
            return db.execute(
                """UPDATE deliveries SET state = 'cancelled', last_error = 'subscriber removed from the config',
                     updated_at = %s
                   WHERE state IN ('pending', 'retry', 'sending') AND NOT (subscriber = ANY(%s))""",
                (now, sorted(set(keep))),
            ).rowcount

    def retry_failed(self, now: datetime, subscriber: str | None = None) -> int:
        with self.transaction() as db:
            return db.execute(
                """UPDATE deliveries SET state = 'pending', next_attempt_at = %(now)s, updated_at = %(now)s
                   WHERE state IN ('failed', 'retry') AND (%(name)s::text IS NULL OR subscriber = %(name)s)""",
                {"now": now, "name": subscriber},
            ).rowcount

    def deliveries(self, states: Sequence[str] = DELIVERY_STATES, limit: int = 200) -> list[DeliveryRow]:
        rows = self._query(
            """SELECT d.*, (SELECT count(*) FROM delivery_papers p WHERE p.delivery_id = d.id) AS paper_count
               FROM deliveries d WHERE state = ANY(%s) ORDER BY created_at DESC LIMIT %s""",
            (list(states), limit),
        )
        return [
            DeliveryRow(
                id=row["id"],
                subscriber=row["subscriber"],
                channel=row["channel"],
                recipient=row["recipient"],
                state=row["state"],
                attempts=row["attempts"],
                next_attempt_at=row["next_attempt_at"],
                last_error=row["last_error"],
                created_at=row["created_at"] or datetime.now(UTC),
                paper_count=int(row["paper_count"]),
            )
            for row in rows
        ]

    def delivery_counts(self) -> dict[str, int]:
        rows = self._query("SELECT state, count(*) AS n FROM deliveries GROUP BY state")
        return {row["state"]: int(row["n"]) for row in rows}

    # -- service ----------------------------------------------------------------------------------------------

    def ping(self) -> None:
        """A trivial query: raises :class:`StoreError` when the database cannot be reached."""
        self._query("SELECT count(*) FROM meta")

    def secret(self, key: str) -> str:
        """A random secret kept in ``meta`` under ``key``: made on first use, the same ever after."""
        with self.transaction() as db:
            db.execute("INSERT INTO meta VALUES (%s, %s) ON CONFLICT DO NOTHING", (key, secrets.token_urlsafe(32)))
            row = db.execute("SELECT value FROM meta WHERE key = %s", (key,)).fetchone()
        assert row is not None
        return str(row["value"])

    def last_new_items(self) -> dict[str, datetime]:
        """feed_key -> when a poll last brought new items from arXiv (backfilled items not counted)."""
        rows = self._query("SELECT feed_key, max(seen_at) AS at FROM feed_items WHERE NOT backfilled GROUP BY feed_key")
        return {row["feed_key"]: row["at"] for row in rows}


def _outgoing(row: Row) -> Outgoing:
    return Outgoing(
        delivery_id=row["id"],
        subscriber=row["subscriber"],
        channel=row["channel"],
        recipient=row["recipient"],
        message_id=row["message_id"],
        payload=bytes(row["payload"]),
        part=row["part"],
    )


def _feed_state(row: Row) -> FeedState:
    return FeedState(
        feed_key=row["feed_key"],
        etag=row["etag"],
        last_polled=row["last_polled"],
        last_ok=row["last_ok"],
        last_status=row["last_status"],
        last_error=row["last_error"],
        last_announced=row["last_announced"],
        last_items_hash=row["last_items_hash"],
        item_count=row["item_count"],
    )
