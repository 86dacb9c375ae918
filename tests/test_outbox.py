"""The outbox: what is written before sending, what a crash leaves behind, and what is never sent twice."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from notifier.channels.files import FileChannel
from notifier.config.settings import load_settings
from notifier.config.subscribers import load_config
from notifier.daemon import Notifier
from notifier.models import Paper
from notifier.render.slack import decode_payload
from notifier.store.rows import NewDelivery, NewDigest
from notifier.store.sqlite import SqliteStore
from tests.clock import Clock

CONFIG = """\
subscribers:
  - name: lab
    email: [a@lab.example, b@lab.example]
    slack: "#papers"
    categories: [cs.DC]
    rules:
      - {name: compilers, query: compiler}
      - {name: gpus, query: gpu}
  - name: updates
    email: u@lab.example
    categories: [cs.DC]
    announce_types: [new, cross, replace]
    rules:
      - {name: compilers, query: compiler}
"""


def paper(arxiv_id: str, title: str, *, version: int = 1, announce_type: str = "new") -> Paper:
    return Paper(
        arxiv_id=arxiv_id,
        version=version,
        title=title,
        abstract=f"We study {title.lower()}.",
        authors=("Ada Lovelace", "Alan Turing"),
        categories=("cs.DC",),
        announce_type=announce_type,
        announced=date(2025, 6, 3),
    )


def make_app(tmp_path: Path, clock: Clock, text: str = CONFIG) -> Notifier:
    path = tmp_path / "subscribers.yaml"
    path.write_text(text)
    settings = load_settings({}, {"subscribers": str(path), "data_dir": str(tmp_path / "data")})
    return Notifier(settings, load_config(path, {}), clock=clock, recover_interrupted=True)


def outbox_files(tmp_path: Path, kind: str) -> list[Path]:
    return sorted((tmp_path / "data" / "outbox" / kind).glob("*"))


async def test_each_recipient_gets_its_own_message_listing_only_matching_papers(tmp_path):
    clock = Clock()
    async with make_app(tmp_path, clock) as app:
        app.store.ingest("cs.DC", [paper("2506.1", "A compiler for GPUs"), paper("2506.2", "Consensus")], clock())
        report = await app.cycle(force_send=True, poll=False)
    assert report.sent.sent == 4  # lab: 2 addresses + 1 Slack channel; updates: 1 address
    mails = outbox_files(tmp_path, "email")
    assert len(mails) == 3
    for mail in mails:
        text = mail.read_bytes()
        assert b"2506.1" in text
        assert b"2506.2" not in text
        assert text.count(b"\nTo: ") == 1
    (post,) = outbox_files(tmp_path, "slack")
    assert "2506.1" in post.read_text()


async def test_a_second_cycle_sends_nothing_and_a_new_paper_is_sent_alone(tmp_path):
    clock = Clock()
    async with make_app(tmp_path, clock) as app:
        app.store.ingest("cs.DC", [paper("2506.1", "A compiler")], clock())
        first = await app.cycle(force_send=True, poll=False)
        clock.now += timedelta(minutes=5)
        again = await app.cycle(force_send=True, poll=False)
        clock.now += timedelta(days=1)
        app.store.ingest("cs.DC", [paper("2506.1", "A compiler"), paper("2506.3", "Another compiler")], clock())
        clock.now += timedelta(minutes=1)
        third = await app.cycle(force_send=True, poll=False)
    assert first.sent.sent == 4
    assert again.plan.deliveries == 0 and again.sent.sent == 0
    assert third.plan.papers == 2  # lab's digest and updates' digest each carry the one new paper
    newest = max(outbox_files(tmp_path, "email"), key=lambda p: p.stat().st_mtime_ns).read_text()
    assert "2506.3" in newest and "2506.1" not in newest


async def test_a_replacement_goes_only_to_subscribers_who_asked_for_updates(tmp_path):
    clock = Clock()
    async with make_app(tmp_path, clock) as app:
        app.store.ingest("cs.DC", [paper("2506.1", "A compiler")], clock())
        await app.cycle(force_send=True, poll=False)
        clock.now += timedelta(days=1)
        app.store.ingest("cs.DC", [paper("2506.1", "A compiler", version=2, announce_type="replace")], clock())
        clock.now += timedelta(minutes=1)
        report = await app.cycle(force_send=True, poll=False)
        assert report.plan.subscribers == ["updates"]
        assert app.store.reserved_versions("updates", "email", "u@lab.example") == {"2506.1": 2}
        assert app.store.reserved_versions("lab", "email", "a@lab.example") == {"2506.1": 1}


async def test_a_send_interrupted_by_a_crash_is_sent_again_with_the_same_message_id(tmp_path):
    clock = Clock()
    async with make_app(tmp_path, clock) as app:
        app.store.ingest("cs.DC", [paper("2506.1", "A compiler")], clock())
        await app.plan(force=True)
        (first,) = app.store.claim_due(clock(), owner="crashing", lease=timedelta(hours=1), limit=1)
        # the process dies here, before the channel answers
    async with make_app(tmp_path, clock) as app:
        report = await app.send()
        assert report.sent == 4
        assert app.store.delivery_counts() == {"sent": 4}
        assert app.store.attempts(first.delivery_id)[0] == 2, "the interrupted attempt, then the one that sent it"
    resent = FileChannel(tmp_path / "data" / "outbox", first.channel).path_for(first)  # named by its Message-ID
    assert resent.read_bytes() == first.payload


async def test_removing_a_subscriber_cancels_its_unsent_deliveries(tmp_path):
    clock = Clock()
    async with make_app(tmp_path, clock) as app:
        app.store.ingest("cs.DC", [paper("2506.1", "A compiler")], clock())
        await app.plan(force=True)
    without_updates = CONFIG.split("  - name: updates", maxsplit=1)[0]
    async with make_app(tmp_path, clock, without_updates) as app:
        report = await app.send()
        assert report.sent == 3
        assert app.store.delivery_counts() == {"sent": 3, "cancelled": 1}


async def test_a_subscriber_removed_for_a_cycle_and_restored_gets_the_papers_of_its_cancelled_digest(tmp_path):
    clock = Clock()
    async with make_app(tmp_path, clock) as app:
        app.store.ingest("cs.DC", [paper("2506.1", "A compiler")], clock())
        await app.plan(force=True)
    clock.now += timedelta(minutes=10)
    without_updates = CONFIG.split("  - name: updates", maxsplit=1)[0]
    async with make_app(tmp_path, clock, without_updates) as app:
        await app.send()
        assert app.store.delivery_counts() == {"sent": 3, "cancelled": 1}
    clock.now += timedelta(minutes=10)
    async with make_app(tmp_path, clock) as app:
        report = await app.cycle(force_send=True, poll=False)
        assert report.plan.subscribers == ["updates"], "lab has had the paper; updates gets it again"
        assert report.sent.sent == 1
        assert app.store.reserved_versions("updates", "email", "u@lab.example") == {"2506.1": 1}
    newest = max(outbox_files(tmp_path, "email"), key=lambda p: p.stat().st_mtime_ns).read_text()
    assert "To: u@lab.example" in newest and "2506.1" in newest


async def test_an_address_written_differently_is_the_same_recipient_and_gets_nothing_twice(tmp_path):
    clock = Clock()
    async with make_app(tmp_path, clock) as app:
        app.store.ingest("cs.DC", [paper("2506.1", "A compiler")], clock())
        await app.plan(force=True)
        claimed = app.store.claim_due(clock(), owner="test", lease=timedelta(hours=1), limit=10)
        (to_a,) = [m for m in claimed if m.recipient == "a@lab.example"]
        app.store.mark_sent(to_a.delivery_id, clock())  # a@ has it; the rest is cancelled when lab goes
        app.store.release([m.delivery_id for m in claimed if m is not to_a], owner="test", now=clock())
    clock.now += timedelta(minutes=10)
    only_updates = "subscribers:\n  - name: updates" + CONFIG.split("  - name: updates", 1)[1]
    async with make_app(tmp_path, clock, only_updates) as app:
        await app.send()
    clock.now += timedelta(minutes=10)
    async with make_app(tmp_path, clock, CONFIG.replace("a@lab.example", "A@Lab.example")) as app:
        report = await app.cycle(force_send=True, poll=False)
        assert app.store.reserved_versions("lab", "email", " A@LAB.example") == {"2506.1": 1}
        sent = sorted(row.recipient for row in app.store.deliveries() if row.state == "sent")
    assert report.plan.subscribers == ["lab"]
    assert sent == ["#papers", "a@lab.example", "b@lab.example", "u@lab.example"], "A@ is a@: nothing twice"
    assert report.sent.sent == 2


async def test_slack_payload_is_stored_as_block_kit_json(tmp_path):
    clock = Clock()
    async with make_app(tmp_path, clock) as app:
        app.store.ingest("cs.DC", [paper("2506.1", "A compiler <!channel>")], clock())
        await app.plan(force=True)
        claimed = app.store.claim_due(clock(), owner="test", lease=timedelta(hours=1), limit=10)
        slack = [m for m in claimed if m.channel == "slack"]
    (message,) = slack
    parts = decode_payload(message.payload)
    assert parts and all(part.blocks for part in parts)
    assert "<!channel>" not in message.payload.decode()


SCHEDULED = """\
subscribers:
  - name: weekly
    email: w@lab.example
    categories: [cs.DC]
    schedule: "weekly mon 09:00 Europe/Berlin"
    rules: [{name: compilers, query: compiler}]
  - name: daily
    email: d@lab.example
    categories: [cs.DC]
    schedule: "daily 08:00 UTC"
    send_empty: true
    rules: [{name: compilers, query: compiler}]
"""


async def test_schedules_decide_when_a_digest_is_due_and_a_missed_one_is_sent_once(tmp_path):
    clock = Clock()  # Tue 3 Jun 2025 09:00 UTC
    async with make_app(tmp_path, clock, SCHEDULED) as app:
        app.store.ingest("cs.DC", [paper("2506.1", "A compiler")], clock())
        assert (await app.plan(force=False)).digests == 0, "nothing is due right after subscribing"
        clock.now = datetime(2025, 6, 4, 8, 0, 1, tzinfo=UTC)
        assert (await app.plan(force=False)).subscribers == ["daily"]
        # The daemon is down from Wednesday to the following Tuesday: Monday's weekly digest is sent once.
        clock.now = datetime(2025, 6, 10, 12, 0, tzinfo=UTC)
        report = await app.plan(force=False)
        assert report.subscribers == ["weekly"]
        clock.now += timedelta(minutes=1)
        assert "weekly" not in (await app.plan(force=False)).subscribers


async def test_send_empty_says_why_and_is_skipped_when_we_cannot_tell(tmp_path):
    clock = Clock()
    async with make_app(tmp_path, clock, SCHEDULED) as app:
        clock.now = datetime(2025, 6, 7, 9, 0, tzinfo=UTC)  # a Saturday: arXiv does not announce
        app.store.record_poll("cs.DC", at=clock(), status="empty", announced=date(2025, 6, 6))
        reasons = {"cs.DC": app.poller.empty_reason("cs.DC", clock())}
        assert reasons["cs.DC"] is not None and "did not announce" in reasons["cs.DC"]
        report = app.planner.plan(app.config, clock(), empty_reasons=reasons)
        assert report.subscribers == ["daily"]
        clock.now = datetime(2025, 6, 9, 9, 0, tzinfo=UTC)  # Monday's announcement has not been fetched
        assert app.poller.empty_reason("cs.DC", clock()) is None
        report = await app.plan(force=False)
        assert report.digests == 0, "no 'no papers today' mail when we simply could not fetch"
        await app.send()
    (mail,) = outbox_files(tmp_path, "email")
    assert "did not announce" in mail.read_text()


async def test_a_failed_delivery_is_listed_and_sent_again_by_retry(tmp_path):
    clock = Clock()
    async with make_app(tmp_path, clock) as app:
        app.store.ingest("cs.DC", [paper("2506.1", "A compiler")], clock())
        await app.plan(force=True)
        (first,) = app.store.claim_due(clock(), owner="test", lease=timedelta(hours=1), limit=1)
        app.store.mark_failed(first.delivery_id, clock(), "550 no such user")
        await app.send()
        assert app.store.delivery_counts() == {"sent": 3, "failed": 1}
        (failed,) = app.store.deliveries(("failed",))
        assert failed.last_error == "550 no such user"
        assert app.store.retry_failed(clock(), "lab") + app.store.retry_failed(clock(), "updates") == 1
        report = await app.send()
        assert report.sent == 1
        assert app.store.delivery_counts() == {"sent": 4}


async def test_the_delivery_latency_counts_from_when_the_digest_was_written(tmp_path):
    clock = Clock()
    async with make_app(tmp_path, clock) as app:
        app.store.ingest("cs.DC", [paper("2506.1", "A compiler")], clock())
        await app.plan(force=True)
        clock.now += timedelta(minutes=3)
        assert (await app.send()).sent == 4
        assert app.metrics.registry.get_sample_value("notifier_delivery_latency_seconds_count") == 4
        assert app.metrics.registry.get_sample_value("notifier_delivery_latency_seconds_sum") == 4 * 180.0


def test_claiming_and_recording_a_sent_delivery_write_its_state_not_its_message(tmp_path):
    """A claim is a transaction, and so is recording the sends that finished together; what each writes to SQLite's
    log is a few pages of the deliveries' rows and indexes, whatever the messages' size."""
    store = SqliteStore(tmp_path / "notifier.sqlite3")
    try:
        now = datetime(2025, 6, 3, 9, 0, tzinfo=UTC)
        store.register_subscribers(["lab"], now)
        mail = b"m" * 200_000  # 49 pages of 4 KB
        deliveries = tuple(
            NewDelivery(f"x{i}", "email", f"r{i}@lab.example", f"<x{i}@lab.example>", mail, (("2506.1", 1),))
            for i in range(3)
        )
        store.record_digests([NewDigest("d1", "lab", "daily", now, now, now, deliveries, now)])

        def pages_logged() -> int:
            """The pages written to the log since it was last emptied; empties it again."""
            pages = int(store.db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1])
            store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return pages

        pages_logged()
        claimed = store.claim_due(now, owner="o", lease=timedelta(minutes=1), limit=3)
        assert [m.payload for m in claimed] == [mail] * 3
        assert pages_logged() <= 5, "claiming three messages"
        store.mark_sent("x0", now)
        assert pages_logged() <= 5, "recording one sent"
        later = now + timedelta(seconds=1)
        store.mark_all_sent([("x1", now), ("x2", later)])
        assert pages_logged() <= 5, "recording two sent together"
        rows = store.db.execute("SELECT id, sent_at FROM deliveries WHERE state = 'sent'").fetchall()
        sent = {delivery_id: datetime.fromisoformat(at) for delivery_id, at in rows}
        assert sent == {"x0": now, "x1": now, "x2": later}, "each with the time it was sent"
    finally:
        store.close()
