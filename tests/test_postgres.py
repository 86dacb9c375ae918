"""The PostgreSQL store: the same behaviour as SQLite's, and several daemons sharing one database.

The store contract runs against both stores. The scale-out test runs three daemon processes on one database,
kills one with SIGKILL mid-way, and checks that 5,000 deliveries each arrive once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import signal
import sys
import threading
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from notifier.config.settings import load_settings
from notifier.config.subscribers import load_config
from notifier.daemon import Notifier
from notifier.errors import ConfigError, StoreError
from notifier.store.rows import NewDelivery, NewDigest
from notifier.store.schema import SCHEMA_VERSION
from notifier.store.sql import SqlStore
from notifier.store.sqlite import SqliteStore
from tests.arxiv_server import ArxivStandIn
from tests.cli import cli_environment
from tests.smtp_server import SmtpServer
from tests.test_outbox import CONFIG, Clock, outbox_files, paper

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2025, 6, 3, 9, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)


def delivery(delivery_id: str, recipient: str, papers: tuple[tuple[str, int], ...]) -> NewDelivery:
    return NewDelivery(delivery_id, "email", recipient, f"<{delivery_id}@lab.example>", b"mail " + b"\x00\xff", papers)


def digest(store: SqlStore[Any], digest_id: str, deliveries: list[NewDelivery], now: datetime = T0) -> None:
    store.record_digests(
        [
            NewDigest(
                digest_id=digest_id,
                subscriber="lab",
                kind="instant",
                period_start=now - timedelta(days=1),
                period_end=now,
                now=now,
                deliveries=tuple(deliveries),
                cursor=now,
            )
        ]
    )


def active(store: SqlStore[Any]) -> set[str]:
    """The subscribers marked active in the database."""
    return {row["name"] for row in store._query("SELECT name FROM subscribers WHERE active")}


# -- the store contract, on both stores ---------------------------------------------------------------------------


def test_ingest_counts_new_items_and_candidates_are_the_window(store):
    assert store.ingest("cs.DC", [paper("2506.1", "A compiler"), paper("2506.2", "GPUs")], T0) == 2
    assert store.ingest("cs.DC", [paper("2506.1", "A compiler")], T0 + timedelta(hours=1)) == 0
    later = T0 + timedelta(hours=2)
    assert store.ingest("cs.DC", [paper("2506.1", "A compiler v2", version=2, announce_type="replace")], later) == 1
    found = store.candidates("cs.DC", T0 - timedelta(seconds=1), T0)
    assert [(p.arxiv_id, p.version, p.title) for p in found] == [("2506.1", 1, "A compiler v2"), ("2506.2", 1, "GPUs")]
    assert found[0].authors == ("Ada Lovelace", "Alan Turing") and found[0].announced == date(2025, 6, 3)
    assert [p.announce_type for p in store.candidates("cs.DC", T0, later)] == ["replace"]
    assert store.candidates("cs.LG", T0 - timedelta(days=1), later) == []
    assert store.paper_count() == 2
    assert store.last_new_items() == {"cs.DC": later}


def test_enrichment_fills_in_what_the_feed_lacks(store):
    store.ingest("cs.DC", [paper("2506.1", "A compiler"), paper("2506.2", "GPUs")], T0)
    assert store.not_enriched(["2506.2", "2506.1", "9999.9"]) == ["2506.1", "2506.2"]
    store.enrich("2506.1", T0, comment="12 pages", journal_ref=None, categories=("cs.DC", "cs.PL"))
    assert store.not_enriched(["2506.1", "2506.2"]) == ["2506.2"]
    (enriched, _) = store.candidates("cs.DC", T0 - timedelta(seconds=1), T0)
    assert enriched.comment == "12 pages" and enriched.categories == ("cs.DC", "cs.PL")


def test_feed_state_keeps_the_last_good_values_through_an_error(store):
    assert store.feed_state("cs.DC") is None
    store.record_poll("cs.DC", at=T0, status="ok", etag='"v1"', announced=date(2025, 6, 3), item_count=5)
    store.record_poll("cs.DC", at=T0 + timedelta(minutes=15), status="error", error="timeout")
    state = store.feed_state("cs.DC")
    assert state is not None
    assert (state.etag, state.last_announced, state.item_count) == ('"v1"', date(2025, 6, 3), 5)
    assert (state.last_ok, state.last_polled, state.last_error) == (T0, T0 + timedelta(minutes=15), "timeout")
    assert [s.feed_key for s in store.feed_states()] == ["cs.DC"]


def test_backfills_are_requested_once_and_recorded(store):
    window = (T0 - timedelta(days=1), T0)
    assert store.request_backfill("cs.DC", date(2025, 6, 2), window, "missed", T0)
    assert not store.request_backfill("cs.DC", date(2025, 6, 2), window, "missed", T0)
    store.record_backfill("cs.DC", date(2025, 6, 2), T0, error="503")
    (row,) = store.backfills("cs.DC", states=("pending",))
    assert (row.window_start, row.window_end, row.attempts, row.last_error) == (*window, 1, "503")
    store.record_backfill("cs.DC", date(2025, 6, 2), T0, added=7)
    assert store.backfills(states=("pending",)) == []
    (done,) = store.backfills()
    assert (done.state, done.added, done.day) == ("done", 7, date(2025, 6, 2))


def test_a_digest_reserves_its_papers_and_moves_the_cursor(store):
    store.register_subscribers(["lab"], T0 - timedelta(days=2))
    store.register_subscribers(["lab"], T0)  # registering again changes nothing
    papers = (("2506.1", 1), ("2506.2", 2))
    digest(store, "d1", [delivery("x1", "a@lab.example", papers), delivery("x2", "b@lab.example", papers[:1])])
    state = store.subscriber_state("lab")
    assert state is not None
    assert (state.created_at, state.cursor, state.last_digest_at) == (T0 - timedelta(days=2), T0, T0)
    store.register_subscribers(["new"], T0)
    assert store.subscriber_states() == {"lab": state, "new": store.subscriber_state("new")}
    assert store.reserved_versions("lab", "email", "a@lab.example") == {"2506.1": 1, "2506.2": 2}
    assert store.reserved_versions("lab", "email", "b@lab.example") == {"2506.1": 1}
    assert store.delivery_counts() == {"pending": 2}
    (row, _) = sorted(store.deliveries(), key=lambda r: r.id)
    assert (row.id, row.recipient, row.state, row.paper_count, row.created_at) == (
        "x1",
        "a@lab.example",
        "pending",
        2,
        T0,
    )


def test_a_plan_asks_only_about_the_reservations_of_the_papers_it_matched(store):
    store.register_subscribers(["lab"], T0)
    history = (*((f"2505.{i:05d}", 1) for i in range(300)), ("2506.1", 2))
    digest(store, "d1", [delivery("x1", "a@lab.example", history)])
    assert len(store.reserved_versions("lab", "email", "a@lab.example")) == 301, "every paper the recipient has had"
    among = {"2506.1", "2506.9", "2505.00007"}
    assert store.reserved_versions("lab", "email", "A@lab.example", among) == {"2506.1": 2, "2505.00007": 1}
    assert store.reserved_versions("lab", "email", "a@lab.example", set()) == {}, "nothing matched: nothing to ask"
    many = {f"2505.{i:05d}" for i in range(0, 3000, 3)}  # more ids than one statement binds in SQLite
    assert store.reserved_versions("lab", "email", "a@lab.example", many) == {i: 1 for i in many if i < "2505.00300"}


def test_claims_take_due_deliveries_once_until_their_lease_expires(store):
    store.register_subscribers(["lab"], T0)
    digest(store, "d1", [delivery(f"x{i}", f"r{i}@lab.example", (("2506.1", 1),)) for i in range(5)])
    first = store.claim_due(T0, owner="one", lease=LEASE, limit=3)
    assert [m.delivery_id for m in first] == ["x0", "x1", "x2"]
    assert first[0].payload == b"mail \x00\xff" and first[0].message_id == "<x0@lab.example>"
    assert first[0].created_at == T0, "the delivery latency counts from when the digest was written"
    second = store.claim_due(T0, owner="two", lease=LEASE, limit=10)
    assert [m.delivery_id for m in second] == ["x3", "x4"]
    assert store.claim_due(T0 + LEASE - timedelta(seconds=1), owner="two", lease=LEASE, limit=10) == []
    store.mark_sent("x0", T0)
    assert store.release(["x1", "x3"], owner="one", now=T0) == 1, "only the owner's own claims are released"
    expired = store.claim_due(T0 + LEASE, owner="three", lease=LEASE, limit=10)
    assert sorted(m.delivery_id for m in expired) == ["x1", "x2", "x3", "x4"]
    assert store.attempts("x2") == (2, T0)
    assert store.attempts("x1")[0] == 1, "a released claim does not count as an attempt"


def test_outcomes_are_recorded_and_failed_deliveries_retried(store):
    store.register_subscribers(["lab"], T0)
    digest(store, "d1", [delivery(f"x{i}", f"r{i}@lab.example", (("2506.1", 1),)) for i in range(4)])
    store.claim_due(T0, owner="one", lease=timedelta(hours=1), limit=10)
    store.mark_part("x0", 1, T0)
    store.mark_sent("x0", T0)
    store.mark_retry("x1", T0, T0 + timedelta(minutes=5), "451 try later")
    store.mark_failed("x2", T0, "550 no such user")
    assert store.delivery_counts() == {"sent": 1, "retry": 1, "failed": 1, "sending": 1}
    (retrying,) = store.deliveries(("retry",))
    assert retrying.next_attempt_at == T0 + timedelta(minutes=5)
    assert [m.delivery_id for m in store.claim_due(T0 + timedelta(minutes=5), owner="o", lease=LEASE, limit=9)] == [
        "x1"
    ]
    (failed,) = store.deliveries(("failed",))
    assert failed.last_error == "550 no such user"
    assert store.retry_failed(T0, "someone else") == 0
    assert store.retry_failed(T0, "lab") == 1
    claimed = store.claim_due(T0, owner="o", lease=LEASE, limit=9)
    assert [m.delivery_id for m in claimed] == ["x2"], "x3 is still leased"


def test_unsubscribing_cancels_unsent_mail_and_frees_its_papers(store):
    digest(store, "d1", [delivery("x1", "A@lab.example", (("2506.1", 1),))])
    store.unsubscribe("lab", "a@LAB.example", T0)
    assert store.unsubscribed("lab") == {"a@lab.example"}
    assert store.delivery_counts() == {"cancelled": 1}
    assert store.reserved_versions("lab", "email", "A@lab.example") == {}


def test_only_active_subscribers_deliveries_are_claimed_and_removed_ones_are_cancelled(store):
    store.register_subscribers(["lab", "other"], T0)
    digest(store, "d1", [delivery(f"x{i}", f"r{i}@lab.example", (("2506.1", 1),)) for i in range(3)])
    store.register_subscribers(["other"], T0)  # lab leaves the config: its deliveries wait, unclaimed
    assert active(store) == {"other"}
    assert store.claim_due(T0, owner="one", lease=LEASE, limit=10) == []
    store.register_subscribers(["other", "lab"], T0)  # and comes back before they were cancelled
    assert [m.delivery_id for m in store.claim_due(T0, owner="one", lease=LEASE, limit=1)] == ["x0"]
    store.register_subscribers(["other"], T0)
    assert store.cancel_removed(T0) == 3, "pending and claimed deliveries alike"
    assert store.delivery_counts() == {"cancelled": 3}
    assert store.subscriber_state("lab") is not None, "its history stays"


@pytest.mark.slow
def test_registering_100000_subscribers_marks_exactly_them_active(store):
    names = [f"subscriber{i:06d}" for i in range(100_000)]
    store.register_subscribers(names, T0)
    store.register_subscribers([*names[50_000:], "newcomer", "newcomer"], T0 + LEASE)
    assert active(store) == {*names[50_000:], "newcomer"}
    states = store.subscriber_states()
    assert len(states) == 100_001
    assert states["subscriber000000"].created_at == T0 and states["newcomer"].created_at == T0 + LEASE


def test_removed_subscribers_lose_their_unsent_deliveries_and_renames_keep_history(store):
    store.register_subscribers(["lab"], T0)
    digest(store, "d1", [delivery("x1", "a@lab.example", (("2506.1", 1),))])
    assert store.cancel_removed(T0) == 0
    assert store.rename_subscriber("lab", "group") == 1
    assert store.reserved_versions("group", "email", "a@lab.example") == {"2506.1": 1}
    assert active(store) == {"group"}, "a renamed subscriber stays active"
    store.register_subscribers([], T0)
    assert store.cancel_removed(T0) == 1


def test_a_failed_plan_is_recorded_counted_and_cleared(store):
    store.register_subscribers(["lab", "other"], T0)
    store.record_plan_failures([("lab", "f1", "rendering its email digest: boom")], T0)
    store.record_plan_failures([("lab", "f2", "rendering its email digest: again"), ("other", "f3", "x")], T0 + LEASE)
    failure = store.plan_failures()["lab"]
    assert (failure.fingerprint, failure.reason, failure.attempts) == ("f2", "rendering its email digest: again", 2)
    assert (failure.first_failed, failure.last_failed) == (T0, T0 + LEASE)
    store.clear_plan_failure("lab")
    assert list(store.plan_failures()) == ["other"]
    assert store.rename_subscriber("other", "renamed") == 1
    assert store.plan_failures() == {}, "a renamed subscriber is tried afresh"


def test_driver_errors_become_store_errors_naming_the_database(store):
    with store.transaction() as db:
        store._exec(db, "DROP TABLE delivery_papers", ())  # every statement that names it now fails
    with pytest.raises(StoreError, match="delivery_papers") as info:
        store.reserved_versions("lab", "email", "a@lab.example")
    assert store.where in str(info.value)
    with pytest.raises(StoreError, match="delivery_papers"):
        digest(store, "d1", [delivery("x1", "a@lab.example", (("2506.1", 1),))])
    assert store.delivery_counts() == {}, "the digest's transaction was rolled back"


def test_a_database_from_before_address_keys_has_its_recipients_keyed_when_opened(store):
    digest(store, "d1", [delivery("x1", "a@lab.example", (("2506.1", 1),))])
    with store.transaction() as db:  # as version 2 wrote them: addresses as the config spelled them
        store._exec(db, "UPDATE delivery_papers SET recipient = ' A@Lab.example'", ())
        store._exec(db, "INSERT INTO unsubscribed VALUES ('lab', ' Ann@Lab.example ', ?)", (T0,))
        store._exec(db, "INSERT INTO unsubscribed VALUES ('lab', 'ann@lab.example', ?)", (T0,))
        store._exec(db, "UPDATE meta SET value = '2' WHERE key = 'schema_version'", ())
    reopened = reopen(store)
    try:
        assert reopened.reserved_versions("lab", "email", "a@lab.example") == {"2506.1": 1}
        assert [row["address"] for row in reopened._query("SELECT address FROM unsubscribed")] == ["ann@lab.example"]
        assert reopened._query("SELECT value FROM meta WHERE key = 'schema_version'")[0]["value"] == str(SCHEMA_VERSION)
    finally:
        reopened.close()


def reopen(store: SqlStore[Any]) -> SqlStore[Any]:
    """``store`` closed, then opened again on the same database (which migrates it)."""
    store.close()
    if isinstance(store, SqliteStore):
        return SqliteStore(store.path)
    from notifier.store.postgres import PostgresStore

    return PostgresStore(store.url)


def test_a_database_from_version_3_gains_active_subscribers_when_opened(store):
    store.register_subscribers(["lab"], T0)
    digest(store, "d1", [delivery("x1", "a@lab.example", (("2506.1", 1),))])
    with store.transaction() as db:  # as version 3 left it: no mark of which subscribers are in the config
        store._exec(db, "DROP INDEX feed_items_by_paper", ())
        store._exec(db, "DROP INDEX deliveries_by_age", ())
        store._exec(db, "ALTER TABLE subscribers DROP COLUMN active", ())
        store._exec(db, "UPDATE meta SET value = '3' WHERE key = 'schema_version'", ())
    reopened = reopen(store)
    try:
        assert active(reopened) == {"lab"}, "known subscribers count as active until registered"
        assert [m.delivery_id for m in reopened.claim_due(T0, owner="o", lease=LEASE, limit=5)] == ["x1"]
        assert reopened._query("SELECT value FROM meta WHERE key = 'schema_version'")[0]["value"] == str(SCHEMA_VERSION)
    finally:
        reopened.close()


def test_a_database_from_version_7_has_its_payloads_moved_out_of_the_deliveries_when_opened(store):
    store.register_subscribers(["lab"], T0)
    digest(store, "d1", [delivery(f"x{i}", f"r{i}@lab.example", (("2506.1", 1),)) for i in range(3)])
    store.claim_due(T0, owner="one", lease=LEASE, limit=2)
    store.mark_failed("x0", T0, "550 no such user")
    store.mark_failed("x1", T0, "550 no such user")
    with store.transaction() as db:  # as version 7 left it: each delivery's payload in its own row
        store._exec(db, f"ALTER TABLE deliveries ADD COLUMN payload {store._TYPES['blob']} NOT NULL DEFAULT ''", ())
        store._exec(
            db,
            "UPDATE deliveries SET payload = (SELECT payload FROM delivery_payloads WHERE delivery_id = deliveries.id)",
            (),
        )
        store._exec(db, "UPDATE deliveries SET payload = ? WHERE id = 'x1'", (b"",))  # pruned
        store._exec(db, "DROP TABLE delivery_payloads", ())
        store._exec(db, "UPDATE meta SET value = '7' WHERE key = 'schema_version'", ())
    reopened = reopen(store)
    try:
        assert "payload" not in reopened._columns(reopened.db, "deliveries")
        (pending,) = reopened.claim_due(T0, owner="two", lease=LEASE, limit=5)
        assert (pending.delivery_id, pending.payload, pending.created_at) == ("x2", b"mail \x00\xff", T0)
        assert reopened.retry_failed(T0) == 1, "the failure whose payload was pruned stays failed"
        (retried,) = reopened.claim_due(T0, owner="two", lease=LEASE, limit=5)
        assert (retried.delivery_id, retried.payload) == ("x0", b"mail \x00\xff")
        assert reopened.prune(T0 + timedelta(days=31), timedelta(days=30)).payloads == 0, "x1's was pruned before"
        assert reopened._query("SELECT value FROM meta WHERE key = 'schema_version'")[0]["value"] == str(SCHEMA_VERSION)
    finally:
        reopened.close()


def test_service_calls(store):
    store.ping()
    assert store.secret("k") == store.secret("k") != store.secret("other")
    assert store.try_lead("poll") is True


# -- PostgreSQL only: several stores on one database ------------------------------------------------------------


@pytest.mark.slow
def test_one_store_at_a_time_leads_and_the_lead_passes_on_when_its_holder_goes(pg_url):
    from notifier.store.postgres import PostgresStore

    first, second = PostgresStore(pg_url), PostgresStore(pg_url)
    try:
        assert first.try_lead("poll") and first.try_lead("poll")
        assert not second.try_lead("poll")
        assert second.try_lead("other"), "each name is a lead of its own"
        first.close()  # the process dying closes the connection the same way
        deadline = time.monotonic() + 10  # the server lets go of the lock once that backend has exited
        while not second.try_lead("poll"):
            assert time.monotonic() < deadline, "the lead never passed on"
            time.sleep(0.05)
    finally:
        first.close()
        second.close()


@pytest.mark.slow
def test_stores_opened_together_set_up_the_schema_once(pg_url):
    from notifier.store.postgres import PostgresStore

    stores: list[PostgresStore] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            stores.append(PostgresStore(pg_url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        assert stores[0]._query("SELECT value FROM meta WHERE key = 'schema_version'") == [
            {"value": str(SCHEMA_VERSION)}
        ]
    finally:
        for opened in stores:
            opened.close()


@pytest.mark.slow
def test_concurrent_claims_never_share_a_delivery(pg_url):
    from notifier.store.postgres import PostgresStore

    setup = PostgresStore(pg_url)
    setup.register_subscribers(["lab"], T0)
    digest(setup, "d1", [delivery(f"x{i:04d}", f"r{i}@lab.example", (("2506.1", 1),)) for i in range(600)])
    claimed: dict[str, list[str]] = collections.defaultdict(list)

    def claimer(owner: str) -> None:
        mine = PostgresStore(pg_url)
        try:
            while batch := mine.claim_due(T0, owner=owner, lease=LEASE, limit=7):
                claimed[owner].extend(m.delivery_id for m in batch)
        finally:
            mine.close()

    threads = [threading.Thread(target=claimer, args=(f"owner{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [delivery_id for ids in claimed.values() for delivery_id in ids]
    assert len(every) == len(set(every)) == 600
    assert setup.delivery_counts() == {"sending": 600}
    setup.close()


@pytest.mark.slow
async def test_the_daemon_runs_its_outbox_on_postgresql(tmp_path, pg_url):
    clock = Clock()
    path = tmp_path / "subscribers.yaml"
    path.write_text(CONFIG)
    overrides = {"subscribers": str(path), "data_dir": str(tmp_path / "data"), "database_url": pg_url}
    settings = load_settings({}, overrides)
    async with Notifier(settings, load_config(path, {}), clock=clock) as app:
        app.store.ingest("cs.DC", [paper("2506.1", "A compiler for GPUs"), paper("2506.2", "Consensus")], clock())
        report = await app.cycle(force_send=True, poll=False)
        assert report.sent.sent == 4
        clock.now += timedelta(minutes=5)
        again = await app.cycle(force_send=True, poll=False)
        assert again.plan.deliveries == 0 and again.sent.sent == 0
        assert app.store.delivery_counts() == {"sent": 4}
    assert len(outbox_files(tmp_path, "email")) == 3


@pytest.mark.slow
async def test_once_beside_a_leading_daemon_only_sends(tmp_path, pg_url, monkeypatch):
    monkeypatch.setattr("notifier.daemon.LEAD_WAIT", 0.2)
    clock = Clock()
    path = tmp_path / "subscribers.yaml"
    path.write_text(CONFIG)
    settings = load_settings({}, {"subscribers": str(path), "data_dir": str(tmp_path / "data"), "database_url": pg_url})
    async with (
        Notifier(settings, load_config(path, {}), clock=clock) as leader,
        Notifier(settings, load_config(path, {}), clock=clock) as other,
    ):
        assert leader.lead()
        leader.store.ingest("cs.DC", [paper("2506.1", "A compiler")], clock())
        await leader.plan(force=True)
        report = await other.cycle(force_send=True, poll=False)
        assert report.plan.digests == 0, "planning is the leader's"
        assert report.sent.sent == 4
        assert leader.store.delivery_counts() == {"sent": 4}


def test_an_sqlite_database_from_before_leases_gains_their_columns(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute(
            """CREATE TABLE deliveries (id TEXT PRIMARY KEY, digest_id TEXT NOT NULL, subscriber TEXT NOT NULL,
               channel TEXT NOT NULL, recipient TEXT NOT NULL, message_id TEXT NOT NULL, state TEXT NOT NULL,
               attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at TEXT, last_error TEXT,
               part INTEGER NOT NULL DEFAULT 0, payload BLOB NOT NULL, created_at TEXT NOT NULL,
               updated_at TEXT NOT NULL, sent_at TEXT)"""
        )
    store = SqliteStore(path)
    try:
        store.register_subscribers(["lab"], T0)
        digest(store, "d1", [delivery("x1", "a@lab.example", (("2506.1", 1),))])
        assert [(m.delivery_id, m.payload) for m in store.claim_due(T0, owner="o", lease=LEASE, limit=5)] == [
            ("x1", b"mail \x00\xff")
        ]
        assert store._query("SELECT value FROM meta WHERE key = 'schema_version'")[0]["value"] == str(SCHEMA_VERSION)
    finally:
        store.close()


def test_database_url_is_validated_and_its_password_never_shown():
    settings = load_settings({"NOTIFIER_DATABASE_URL": "postgresql://notifier:s3cret@db.example:5432/notifier"})
    shown = str(settings.redacted())
    assert "s3cret" not in shown and "postgresql://notifier:***@db.example:5432/notifier" in shown
    query = load_settings({"NOTIFIER_DATABASE_URL": "postgres://db.example/n?user=u&password=s3cret"})
    assert "s3cret" not in str(query.redacted())
    with pytest.raises(ConfigError, match="NOTIFIER_DATABASE_URL: must be a postgresql://"):
        load_settings({"NOTIFIER_DATABASE_URL": "mysql://db.example/n"})
    with pytest.raises(ConfigError, match="NOTIFIER_LEASE_SECONDS"):
        load_settings({"NOTIFIER_LEASE_SECONDS": "0"})


# -- three daemons, one database, one killed ---------------------------------------------------------------------

SUBSCRIBERS = 50
ADDRESSES = 100


def scale_config() -> str:
    lines = ["subscribers:"]
    for s in range(SUBSCRIBERS):
        emails = ", ".join(f"s{s:02d}r{r:03d}@lab.example" for r in range(ADDRESSES))
        lines += [
            f"  - name: group{s:02d}",
            f"    email: [{emails}]",
            "    categories: [cs.SD, eess.AS]",
            '    schedule: "instant"',
            "    rules: [{name: music, query: 'ti:\"music generation\"'}]",  # one paper: small digests
        ]
    return "\n".join(lines) + "\n"


async def start_daemon(env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    with log.open("wb") as err:
        command = (sys.executable, "-m", "notifier", "run")
        return await asyncio.create_subprocess_exec(
            *command, cwd=ROOT, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=err
        )


def log_of(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


@pytest.mark.slow
async def test_three_daemons_share_one_database_and_a_kill_9_loses_and_repeats_nothing(tmp_path, pg_url):
    from notifier.store.postgres import PostgresStore

    (tmp_path / "subscribers.yaml").write_text(scale_config())
    expected = {f"s{s:02d}r{r:03d}@lab.example" for s in range(SUBSCRIBERS) for r in range(ADDRESSES)}
    began = time.monotonic()
    async with ArxivStandIn(day="2025-06-03") as arxiv:
        with SmtpServer() as smtp:
            smtp.faults.delay = 0.002
            env = cli_environment(
                tmp_path,
                arxiv,
                smtp,
                NOTIFIER_DATABASE_URL=pg_url,
                NOTIFIER_LEASE_SECONDS="5",
                NOTIFIER_BACKFILL_DAYS="0",
                NOTIFIER_SMTP_POOL_SIZE="1",
            )
            logs = [tmp_path / f"daemon{n}.log" for n in range(3)]
            daemons = [await start_daemon(env, path) for path in logs]
            try:
                deadline = time.monotonic() + 150
                while len(smtp.messages) < 1500:
                    assert time.monotonic() < deadline, f"only {len(smtp.messages)} messages arrived"
                    assert all(d.returncode is None for d in daemons), [log_of(p)[-2000:] for p in logs]
                    await asyncio.sleep(0.05)
                leader = next(n for n, path in enumerate(logs) if "feed cs.SD:" in log_of(path))
                daemons[leader].kill()  # SIGKILL, mid-cycle: no chance to hand anything back
                await daemons[leader].wait()
                killed_at = len(smtp.messages)
                while len({m.message_id for m in smtp.messages}) < len(expected):
                    assert time.monotonic() < deadline, f"{len({m.message_id for m in smtp.messages})} arrived"
                    await asyncio.sleep(0.1)
                store = PostgresStore(pg_url)
                try:
                    while store.delivery_counts() != {"sent": len(expected)}:
                        assert time.monotonic() < deadline, store.delivery_counts()
                        await asyncio.sleep(0.1)
                    digests = store._query("SELECT subscriber, count(*) AS n FROM digests GROUP BY subscriber")
                finally:
                    store.close()
                # A survivor asks for the lead at its next tick (every 10 s at most), even while it has sent all.
                while not any("took over polling and planning" in log_of(path) for path in logs):
                    assert time.monotonic() < deadline, "no survivor took the lead"
                    await asyncio.sleep(0.2)
            finally:
                for process in daemons:
                    if process.returncode is None:
                        process.send_signal(signal.SIGTERM)
                for process in daemons:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(process.wait(), 15)
            received = list(smtp.messages)
        rss = arxiv.requests_to("/rss/")
    elapsed = time.monotonic() - began

    texts = [log_of(path) for path in logs]
    assert [d.returncode for n, d in enumerate(daemons) if n != leader] == [0, 0], texts
    by_recipient: dict[str, set[str | None]] = collections.defaultdict(set)
    for message in received:
        for recipient in message.rcpt_tos:
            by_recipient[recipient].add(message.message_id)
    assert set(by_recipient) == expected, "every address got mail"
    assert all(len(ids) == 1 for ids in by_recipient.values()), "one digest per recipient"
    counts = collections.Counter(m.message_id for m in received)
    repeats = {mid: n for mid, n in counts.items() if n > 1}
    assert sum(n - 1 for n in repeats.values()) <= 1, f"at most the one send in flight when killed: {repeats}"
    assert sorted((row["subscriber"], row["n"]) for row in digests) == [
        (f"group{s:02d}", 1) for s in range(SUBSCRIBERS)
    ]
    assert sorted(r.path for r in rss) == ["/rss/cs.SD", "/rss/eess.AS"], "only the leader polls, once per category"
    assert [n for n, text in enumerate(texts) if "feed cs.SD:" in text] == [leader]
    senders = {n for n, text in enumerate(texts) if "sending " in text}
    assert senders >= {0, 1, 2} - {leader}, "the daemons that do not lead send"
    assert any("took over polling and planning" in text for text in texts), "a survivor took the lead"
    print(
        f"\n{len(received)} messages ({len(counts)} distinct, {len(repeats)} repeated) in {elapsed:.1f}s;"
        f" daemon {leader} killed after {killed_at}"
    )
