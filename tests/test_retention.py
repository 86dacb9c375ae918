"""Retention: rendered payloads and old papers go after NOTIFIER_RETENTION_DAYS; what deduplication needs stays.

The store contract runs on both stores; the daemon test runs ``once`` twice a month apart; the size test writes a
month of daily digests into SQLite and watches the file grow by what is kept for good only.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from random import Random
from typing import Any

import pytest

from notifier.config.settings import load_settings
from notifier.config.subscribers import load_config
from notifier.daemon import Notifier
from notifier.store.payloads import unpack
from notifier.store.rows import NewDelivery, NewDigest
from notifier.store.sql import PRUNED, SqlStore
from notifier.store.sqlite import SqliteStore
from tests.test_outbox import Clock, make_app, outbox_files, paper

T0 = datetime(2025, 6, 3, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
MONTH = timedelta(days=30)
PAYLOAD = 20_000


def digest(
    digest_id: str, now: datetime, deliveries: list[tuple[str, str, str]], size: int = 40, subscriber: str = "lab"
) -> NewDigest:
    """A digest at ``now``: (delivery id, recipient, arxiv id) each, with a payload of ``size`` random bytes (which the
    store cannot compress: what the file keeps of them is their size)."""
    return NewDigest(
        digest_id=digest_id,
        subscriber=subscriber,
        kind="daily",
        period_start=now - DAY,
        period_end=now,
        now=now,
        deliveries=tuple(
            NewDelivery(
                delivery_id,
                "email",
                recipient,
                f"<{delivery_id}@lab.example>",
                Random(delivery_id).randbytes(size),
                ((arxiv, 1),),
            )
            for delivery_id, recipient, arxiv in deliveries
        ),
        cursor=now,
    )


def payloads(store: SqlStore[Any]) -> dict[str, bytes]:
    rows = store._query("SELECT delivery_id, payload FROM delivery_payloads")
    return {row["delivery_id"]: unpack(bytes(row["payload"])) for row in rows}


def test_finished_payloads_older_than_the_retention_go_and_what_deduplication_needs_stays(store):
    store.register_subscribers(["lab"], T0 - MONTH)
    store.record_digests(
        [
            digest(
                "d1", T0 - MONTH - DAY, [("sent", "a@lab.example", "2505.1"), ("failed", "b@lab.example", "2505.1")]
            ),
            digest("d2", T0 - MONTH - DAY, [("waiting", "c@lab.example", "2505.1")]),
            digest("d3", T0 - DAY, [("recent", "a@lab.example", "2506.1")]),
        ]
    )
    store.mark_sent("sent", T0 - MONTH - DAY)
    store.mark_failed("failed", T0 - MONTH - DAY, "550 no such user")
    store.mark_sent("recent", T0 - DAY)

    report = store.prune(T0, MONTH)

    assert report.payloads == 2
    kept = payloads(store)
    assert kept["sent"] == kept["failed"] == PRUNED
    assert kept["waiting"] and kept["recent"], "unsent and recent payloads stay"
    assert store._query("SELECT message_id FROM deliveries WHERE id = 'sent'")[0]["message_id"] == "<sent@lab.example>"
    assert store.reserved_versions("lab", "email", "A@lab.example") == {"2505.1": 1, "2506.1": 1}
    assert store.reserved_versions("lab", "email", "b@lab.example") == {"2505.1": 1}
    assert store.retry_failed(T0) == 0, "a pruned failure has nothing left to send"
    assert store.delivery_counts() == {"sent": 2, "failed": 1, "pending": 1}
    assert store.prune(T0, MONTH).payloads == 0, "pruning again finds nothing"


def test_old_feed_items_and_papers_go_unless_a_cursor_still_reads_them(store):
    store.ingest("cs.DC", [paper("2504.1", "Old"), paper("2504.2", "Old too")], T0 - 2 * MONTH)
    store.ingest("cs.DC", [paper("2505.1", "Read by a late cursor")], T0 - MONTH - 2 * DAY)
    store.ingest("cs.LG", [paper("2504.3", "Newest of its feed")], T0 - 2 * MONTH)
    store.ingest("cs.DC", [paper("2506.1", "Recent")], T0 - DAY)
    store.register_subscribers(["late", "gone"], T0 - 3 * MONTH)
    store.record_digests([digest("d1", T0 - MONTH - 3 * DAY, [], subscriber="late")])  # its next reads from here
    store.record_digests([digest("d2", T0 - 3 * MONTH, [], subscriber="gone")])
    store.register_subscribers(["late"], T0)  # the cursor of a subscriber no longer in the config counts not

    report = store.prune(T0, MONTH)

    assert (report.feed_items, report.papers) == (2, 2)
    remaining = {row["arxiv_id"] for row in store._query("SELECT arxiv_id FROM feed_items")}
    assert remaining == {"2505.1", "2504.3", "2506.1"}
    assert store.paper_count() == 3
    assert set(store.last_new_items()) == {"cs.DC", "cs.LG"}
    assert [p.arxiv_id for p in store.candidates("cs.DC", T0 - MONTH - 3 * DAY, T0)] == ["2505.1", "2506.1"]


def test_a_subscriber_without_a_cursor_keeps_the_items_it_will_read(store):
    store.ingest("cs.DC", [paper("2505.1", "A")], T0 - MONTH - 2 * DAY)
    store.ingest("cs.DC", [paper("2505.2", "B")], T0 - MONTH - DAY)
    store.register_subscribers(["new"], T0 - 2 * DAY)  # its first digest reads from a little before it came
    assert store.prune(T0, MONTH).feed_items == 0
    store.record_digests([digest("d1", T0, [], subscriber="new")])
    assert store.prune(T0, MONTH).feed_items == 1, "all but the feed's newest item"


async def test_once_prunes_at_the_end_of_its_cycle_and_says_what(tmp_path, caplog):
    clock = Clock()
    async with make_app(tmp_path, clock) as app:
        app.store.ingest("cs.DC", [paper("2506.1", "A compiler")], clock())
        first = await app.cycle(force_send=True, poll=False)
    assert first.sent.sent == 4
    clock.now += MONTH + DAY
    caplog.set_level(logging.INFO, logger="notifier.daemon")
    async with make_app(tmp_path, clock) as app:
        app.store.ingest("cs.DC", [paper("2506.1", "A compiler")], clock())  # announced again: not sent again
        second = await app.cycle(force_send=True, poll=False)
        assert set(payloads(app.store).values()) == {PRUNED}
        assert app.store.delivery_counts() == {"sent": 4}
    assert second.sent.sent == 0
    assert len(outbox_files(tmp_path, "email")) == 3
    assert "pruned what is older than 30 days: 4 payloads of finished deliveries" in caplog.text


async def test_retention_0_keeps_everything(tmp_path):
    clock = Clock()
    path = tmp_path / "subscribers.yaml"
    async with make_app(tmp_path, clock) as app:
        app.store.ingest("cs.DC", [paper("2506.1", "A compiler")], clock())
        await app.cycle(force_send=True, poll=False)
    clock.now += 12 * MONTH
    settings = load_settings(
        {"NOTIFIER_RETENTION_DAYS": "0"}, {"subscribers": str(path), "data_dir": str(tmp_path / "data")}
    )
    assert settings.retention_days == 0
    async with Notifier(settings, load_config(path, {}), clock=clock) as app:
        await app.cycle(force_send=True, poll=False)
        assert PRUNED not in payloads(app.store).values()


@pytest.mark.slow
def test_pruned_payloads_make_room_for_the_next_days_in_the_sqlite_file(tmp_path):
    """100 deliveries of 20 KB a day for 30 days, kept 7 days: after the first week the file grows each day by
    what is kept for good (the delivery rows, the papers each recipient had, and the room a pruned row leaves in
    its page, about 4 KB a delivery), a fraction of the payloads."""
    path = tmp_path / "notifier.sqlite3"
    store = SqliteStore(path)
    sizes: list[int] = []
    try:
        store.register_subscribers(["lab"], T0)
        for day in range(30):
            now = T0 + day * DAY
            store.ingest("cs.DC", [paper(f"25{day:02d}.{n}", "Paper") for n in range(50)], now)
            deliveries = [(f"x{day}-{n}", f"r{n}@lab.example", f"25{day:02d}.{n % 50}") for n in range(100)]
            store.record_digests([digest(f"d{day}", now, deliveries, size=PAYLOAD)])
            with store.transaction() as db:  # as the sender records them, in one statement
                store._exec(db, "UPDATE deliveries SET state = 'sent', updated_at = ? WHERE state = 'pending'", (now,))
            store.prune(now, 7 * DAY)
            store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            sizes.append(path.stat().st_size)
    finally:
        store.close()
    daily = 100 * PAYLOAD
    assert sizes[6] - sizes[0] > 5 * daily, "the first week's payloads are all kept"
    assert (sizes[-1] - sizes[9]) / 20 < daily / 4, sizes
