"""Planning many subscribers: each paper is read once per category and matched once, every subscriber sees only
its own categories' papers, and a long plan hands the event loop back and stops on request without losing or
repeating a digest."""

from __future__ import annotations

import asyncio
import logging
from datetime import date
from pathlib import Path

import pytest

from notifier import daemon, progress
from notifier.config.settings import load_settings
from notifier.config.subscribers import load_config
from notifier.daemon import Notifier
from notifier.matching.rules import MatchBatch
from notifier.models import Match, Paper
from notifier.outbox.planner import WRITE_BATCH
from tests.clock import Clock

SUBSCRIBERS = 40


def paper(arxiv_id: str, title: str, category: str, announce_type: str = "new") -> Paper:
    return Paper(
        arxiv_id=arxiv_id,
        version=1,
        title=title,
        abstract=f"We study {title.lower()}.",
        authors=("Ada Lovelace",),
        categories=(category,),
        announce_type=announce_type,
        announced=date(2025, 6, 3),
    )


def config_text(count: int, announce_types: str = "[new]") -> str:
    lines = ["subscribers:"]
    for n in range(count):
        lines += [
            f"  - name: reader{n}",
            f"    email: reader{n}@lab.example",
            f"    categories: [{'cs.DC' if n % 2 else 'cs.LG'}]",
            f"    announce_types: {announce_types}",
            "    rules:",
            "      - {name: compilers, query: compiler}",
        ]
    return "\n".join(lines) + "\n"


def make_app(tmp_path: Path, text: str, clock: Clock) -> Notifier:
    path = tmp_path / "subscribers.yaml"
    path.write_text(text)
    settings = load_settings({}, {"subscribers": str(path), "data_dir": str(tmp_path / "data")})
    return Notifier(settings, load_config(path, {}), clock=clock, recover_interrupted=True)


def ingest_day(app: Notifier, clock: Clock) -> None:
    app.store.ingest("cs.DC", [paper("2506.1", "A compiler for clusters", "cs.DC")], clock())
    app.store.ingest("cs.LG", [paper("2506.2", "A compiler for models", "cs.LG")], clock())
    # listed in both: new in its primary category, a cross-list in the other
    app.store.ingest("cs.LG", [paper("2506.3", "A compiler for both", "cs.LG")], clock())
    app.store.ingest("cs.DC", [paper("2506.3", "A compiler for both", "cs.LG", "cross")], clock())


def papers_per_recipient(app: Notifier) -> dict[str, list[str]]:
    rows = app.store.db.execute(
        "SELECT d.recipient, p.arxiv_id FROM deliveries d JOIN delivery_papers p ON p.delivery_id = d.id"
    ).fetchall()
    found: dict[str, list[str]] = {}
    for recipient, arxiv_id in rows:
        found.setdefault(recipient, []).append(arxiv_id)
    return {recipient: sorted(ids) for recipient, ids in found.items()}


async def test_each_subscriber_gets_the_papers_of_its_own_categories_only(tmp_path):
    clock = Clock()
    async with make_app(tmp_path, config_text(4), clock) as app:
        ingest_day(app, clock)
        report = await app.plan(force=True)
        assert report.digests == 4
        got = papers_per_recipient(app)
    assert got["reader0@lab.example"] == ["2506.2", "2506.3"]  # cs.LG
    assert got["reader1@lab.example"] == ["2506.1"]  # cs.DC: 2506.3 is only a cross-list there
    assert got["reader2@lab.example"] == ["2506.2", "2506.3"]


async def test_a_cross_list_reaches_who_asks_for_cross_lists(tmp_path):
    text = config_text(2, announce_types="[new, cross]")
    clock = Clock()
    async with make_app(tmp_path, text, clock) as app:
        ingest_day(app, clock)
        await app.plan(force=True)
        assert papers_per_recipient(app)["reader1@lab.example"] == ["2506.1", "2506.3"]


async def test_a_long_plan_hands_the_loop_back_and_stops_on_request_losing_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(daemon, "PLAN_SLICE", 0.0)  # hand the loop back after every digest
    clock = Clock()
    async with make_app(tmp_path, config_text(SUBSCRIBERS), clock) as app:
        ingest_day(app, clock)
        stop = asyncio.Event()
        turns = 0

        async def other_work() -> None:
            nonlocal turns
            while True:
                turns += 1
                if turns == 10:
                    stop.set()
                await asyncio.sleep(0)

        beside = asyncio.create_task(other_work())
        first = await app.plan(force=True, stop=stop)
        beside.cancel()
        assert turns >= 10, "the plan let other work run while it planned"
        assert 0 < first.digests < SUBSCRIBERS, "the plan stopped once asked to"
        planned = set(first.subscribers)
        assert planned == {row[0] for row in app.store.db.execute("SELECT subscriber FROM digests")}

        clock.now = clock.now.replace(minute=5)
        second = await app.plan(force=True)
        assert planned.isdisjoint(second.subscribers), "no digest is planned twice"
        assert len(planned) + len(second.subscribers) == SUBSCRIBERS, "the rest waited for the next plan"


@pytest.mark.parametrize("count", [1, 250])
async def test_digests_are_written_in_batches_whatever_their_number(tmp_path, count):
    clock = Clock()
    async with make_app(tmp_path, config_text(count), clock) as app:
        ingest_day(app, clock)
        report = await app.plan(force=True)
        assert report.digests == count
        assert app.store.db.execute("SELECT count(*) FROM digests").fetchone()[0] == count
        assert app.store.db.execute("SELECT count(*) FROM subscribers WHERE cursor IS NULL").fetchone()[0] == 0


async def test_papers_stored_under_a_category_set_before_an_upgrade_still_reach_its_subscribers(tmp_path):
    text = config_text(2).replace("categories: [cs.DC]", "categories: [cs.DC, cs.LG]")
    clock = Clock()
    async with make_app(tmp_path, text, clock) as app:
        # polled as one feed of both categories, as before feeds were polled one category at a time
        app.store.ingest("cs.DC+cs.LG", [paper("2506.7", "A compiler from the old feed", "cs.DC")], clock())
        app.store.record_poll("cs.DC+cs.LG", at=clock(), status="ok", items_hash="x", item_count=1)
        app.store.ingest("cs.LG", [paper("2506.2", "A compiler for models", "cs.LG")], clock())
        await app.plan(force=True)
        got = papers_per_recipient(app)
    assert got["reader1@lab.example"] == ["2506.2", "2506.7"]
    assert got["reader0@lab.example"] == ["2506.2"]


async def test_digests_are_sent_while_the_plan_writes_the_next_and_every_one_is_sent(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(daemon, "PLAN_SLICE", 0.0)  # hand the loop back after every digest
    monkeypatch.setattr(progress, "QUIET_UNDER", 0.0)  # "planning done" is logged however short the plan
    caplog.set_level(logging.INFO, logger="notifier")
    count = 4 * WRITE_BATCH + 50  # the first batch is written long before the plan ends
    clock = Clock()
    async with make_app(tmp_path, config_text(count), clock) as app:
        ingest_day(app, clock)
        report = await app.cycle(force_send=True, poll=False)
        assert report.plan is not None and report.plan.digests == count
        assert report.sent.sent == count, "every digest is sent, the last batch too"
        assert app.store.delivery_counts() == {"sent": count}
    lines = [record.getMessage() for record in caplog.records]
    planned = [i for i, line in enumerate(lines) if line.startswith("planning done")]
    sent = [i for i, line in enumerate(lines) if line.startswith("sent ")]
    assert planned and sent, lines[-20:]
    assert sent[0] < planned[0], "the first batch went out while later digests were being planned"


async def test_a_subscriber_has_the_hits_of_its_own_rules_looked_up_and_no_others(tmp_path, monkeypatch):
    """Subscribers who share a cursor are matched together, but each one's hits are looked up for its own rules only:
    looking them up for the whole group for each of its subscribers grows with the square of their number."""
    looked_up: list[str] = []
    matches = MatchBatch.matches

    def counted(self: MatchBatch, key: str, *args: object, **kwargs: object) -> list[Match]:
        looked_up.append(key)
        return matches(self, key, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(MatchBatch, "matches", counted)
    clock = Clock()
    async with make_app(tmp_path, config_text(SUBSCRIBERS), clock) as app:
        ingest_day(app, clock)
        report = await app.plan(force=True)
    assert report.digests == SUBSCRIBERS
    assert sorted(looked_up) == sorted(f"reader{n}/0" for n in range(SUBSCRIBERS)), "once per subscriber's rule"
