"""The tables of both stores, and the one way a database made by an older version is brought up to date.

:func:`migrate` runs when a store is opened, in one transaction (under an advisory lock with PostgreSQL, so that
daemons starting together migrate once): it creates the tables a database lacks, as this version has them; runs,
in order, each :data:`STEPS` entry newer than the version ``meta.schema_version`` records (0 when none is); creates
the indexes; and records :data:`SCHEMA_VERSION`. A step adds the columns its tables lack, then changes the data.
A database already at this version is not written to at all; one made by a newer version is refused.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from notifier.addresses import address_key
from notifier.errors import StoreError
from notifier.store.dialect import ConnT, Dialect

log = logging.getLogger(__name__)

# The tables as this version makes them. The types that differ are named by the dialect (Dialect._TYPES): {time} (a
# moment), {day} (a date), {flag} and {false} (a boolean and its default), {blob} (bytes).
TABLES = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS papers (
    arxiv_id TEXT PRIMARY KEY, version INTEGER NOT NULL, title TEXT NOT NULL, abstract TEXT NOT NULL,
    authors TEXT NOT NULL, categories TEXT NOT NULL, comment TEXT, journal_ref TEXT,
    first_seen {time} NOT NULL, updated {time} NOT NULL, enriched_at {time}, affiliations TEXT);
CREATE TABLE IF NOT EXISTS feed_items (
    feed_key TEXT NOT NULL, arxiv_id TEXT NOT NULL, version INTEGER NOT NULL, announce_type TEXT NOT NULL,
    announced {day}, seen_at {time} NOT NULL, backfilled {flag} NOT NULL DEFAULT {false},
    PRIMARY KEY (feed_key, arxiv_id, version));
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
    created_at {time} NOT NULL, updated_at {time} NOT NULL, sent_at {time}, lease_owner TEXT, lease_until {time});
CREATE TABLE IF NOT EXISTS delivery_payloads (
    delivery_id TEXT PRIMARY KEY REFERENCES deliveries (id), payload {blob} NOT NULL);
CREATE TABLE IF NOT EXISTS delivery_papers (
    delivery_id TEXT NOT NULL REFERENCES deliveries (id), subscriber TEXT NOT NULL, channel TEXT NOT NULL,
    recipient TEXT NOT NULL, arxiv_id TEXT NOT NULL, version INTEGER NOT NULL,
    PRIMARY KEY (delivery_id, arxiv_id));
CREATE TABLE IF NOT EXISTS plan_failures (
    subscriber TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, reason TEXT NOT NULL, first_failed {time} NOT NULL,
    last_failed {time} NOT NULL, attempts INTEGER NOT NULL DEFAULT 1);
CREATE TABLE IF NOT EXISTS summaries (
    arxiv_id TEXT NOT NULL, version INTEGER NOT NULL, summary TEXT NOT NULL, topic TEXT NOT NULL,
    subtopic TEXT NOT NULL, keywords TEXT NOT NULL, institution TEXT, model TEXT NOT NULL,
    created_at {time} NOT NULL, PRIMARY KEY (arxiv_id, version));
CREATE TABLE IF NOT EXISTS llm_usage (
    day {day} PRIMARY KEY, asked INTEGER NOT NULL DEFAULT 0, made INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0, prompt_tokens BIGINT NOT NULL DEFAULT 0,
    completion_tokens BIGINT NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS reference_papers (
    arxiv_id TEXT PRIMARY KEY, version INTEGER NOT NULL, title TEXT NOT NULL, abstract TEXT NOT NULL,
    authors TEXT NOT NULL, categories TEXT NOT NULL, fetched_at {time} NOT NULL);
CREATE TABLE IF NOT EXISTS like_sources (source TEXT PRIMARY KEY, arxiv_ids TEXT NOT NULL, fetched_at {time} NOT NULL);
CREATE TABLE IF NOT EXISTS feedback (
    subscriber TEXT NOT NULL, arxiv_id TEXT NOT NULL, kind TEXT NOT NULL, at {time} NOT NULL,
    PRIMARY KEY (subscriber, arxiv_id));
CREATE TABLE IF NOT EXISTS embeddings (
    arxiv_id TEXT NOT NULL, version INTEGER NOT NULL, model TEXT NOT NULL, vector {blob} NOT NULL,
    created_at {time} NOT NULL, PRIMARY KEY (arxiv_id, version, model));
"""

# The indexes, made once the steps have added the columns they may name.
INDEXES = """
CREATE INDEX IF NOT EXISTS feed_items_by_time ON feed_items (feed_key, seen_at);
CREATE INDEX IF NOT EXISTS feed_items_by_paper ON feed_items (arxiv_id);
CREATE INDEX IF NOT EXISTS deliveries_by_state ON deliveries (state, next_attempt_at);
CREATE INDEX IF NOT EXISTS deliveries_by_age ON deliveries (created_at, id)
    WHERE state IN ('pending', 'retry', 'sending');
CREATE INDEX IF NOT EXISTS papers_by_first_seen ON papers (first_seen);
CREATE INDEX IF NOT EXISTS delivery_papers_by_recipient ON delivery_papers (subscriber, channel, recipient, arxiv_id);
"""

# A step's change to the data, in the migration's transaction.
Change = Callable[[Dialect[Any], Any], None]


@dataclass(frozen=True, slots=True)
class Step:
    """What brings a database to ``version`` from the one before: columns its tables lack, then a change of data."""

    version: int
    columns: tuple[tuple[str, str, str], ...] = ()  # (table, column, definition with the schema's {types})
    change: Change | None = None


def _key_email_recipients(dialect: Dialect[ConnT], db: ConnT) -> None:
    """Email recipients of reservations and unsubscriptions become address keys."""
    rows = dialect._fetch(db, "SELECT DISTINCT recipient FROM delivery_papers WHERE channel = 'email'", ())
    for row in rows:
        if (key := address_key(row["recipient"])) != row["recipient"]:
            dialect._exec(
                db,
                "UPDATE delivery_papers SET recipient = ? WHERE channel = 'email' AND recipient = ?",
                (key, row["recipient"]),
            )
    for row in dialect._fetch(db, "SELECT subscriber, address, at FROM unsubscribed", ()):
        if (key := address_key(row["address"])) != row["address"]:
            dialect._exec(
                db, dialect._insert_ignore("unsubscribed VALUES (?, ?, ?)"), (row["subscriber"], key, row["at"])
            )
            dialect._exec(
                db, "DELETE FROM unsubscribed WHERE subscriber = ? AND address = ?", (row["subscriber"], row["address"])
            )


def _move_payloads(dialect: Dialect[ConnT], db: ConnT) -> None:
    """Rendered payloads move out of ``deliveries`` into ``delivery_payloads``, so that writing a delivery's state
    no longer rewrites its message."""
    if "payload" not in dialect._columns(db, "deliveries"):
        return
    dialect._exec(db, "INSERT INTO delivery_payloads (delivery_id, payload) SELECT id, payload FROM deliveries", ())
    dialect._exec(db, "ALTER TABLE deliveries DROP COLUMN payload", ())
    log.info("store: moved the payloads of deliveries to delivery_payloads")


def _mark_known_active(dialect: Dialect[ConnT], db: ConnT) -> None:
    """The subscribers known so far count as active until the config in use says otherwise."""
    dialect._exec(db, "UPDATE subscribers SET active = ?", (True,))


STEPS = (
    Step(2, columns=(("deliveries", "lease_owner", "TEXT"), ("deliveries", "lease_until", "{time}"))),
    Step(3, change=_key_email_recipients),
    # and the indexes of unsent deliveries by age and of feed items by paper
    Step(4, columns=(("subscribers", "active", "{flag} NOT NULL DEFAULT {false}"),), change=_mark_known_active),
    # and the tables of summaries and of LLM usage
    Step(5, columns=(("papers", "affiliations", "TEXT"),)),
    # the tables of liked papers and of what each like: entry named, and the index of papers by first sighting
    Step(6),
    # the tables of readers' "more / fewer like this" feedback and of papers' embeddings
    Step(7),
    # each delivery's payload moves to the table of payloads
    Step(8, change=_move_payloads),
)
SCHEMA_VERSION = STEPS[-1].version


def _statements(script: str, dialect: Dialect[Any]) -> list[str]:
    text = script.format_map(dialect._TYPES)
    return [statement.strip() for statement in text.split(";") if statement.strip()]


def migrate(dialect: Dialect[ConnT], db: ConnT) -> None:
    """Bring the database of ``dialect`` to :data:`SCHEMA_VERSION`, in its transaction ``db``."""
    for statement in _statements(TABLES, dialect):
        dialect._exec(db, statement, ())
    rows = dialect._fetch(db, "SELECT value FROM meta WHERE key = 'schema_version'", ())
    version = int(rows[0]["value"]) if rows else 0
    if version > SCHEMA_VERSION:
        raise StoreError(f"the database {dialect.where} has schema version {version}, newer than this program's")
    for step in STEPS:
        if step.version > version:
            _apply(step, dialect, db)
    for statement in _statements(INDEXES, dialect):
        dialect._exec(db, statement, ())
    if version < SCHEMA_VERSION:
        dialect._exec(
            db,
            """INSERT INTO meta VALUES ('schema_version', ?)
               ON CONFLICT (key) DO UPDATE SET value = excluded.value""",
            (str(SCHEMA_VERSION),),
        )
        log.info("store: schema of %s at version %d (was %d)", dialect.where, SCHEMA_VERSION, version)


def _apply(step: Step, dialect: Dialect[ConnT], db: ConnT) -> None:
    present: dict[str, set[str]] = {}
    for table, column, definition in step.columns:
        if table not in present:
            present[table] = dialect._columns(db, table)
        if column not in present[table]:
            dialect._exec(db, f"ALTER TABLE {table} ADD COLUMN {column} {definition.format_map(dialect._TYPES)}", ())
            present[table].add(column)
            log.info("store: added %s.%s", table, column)
    if step.change is not None:
        step.change(dialect, db)
