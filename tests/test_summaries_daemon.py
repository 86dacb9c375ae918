"""Summarising inside the daemon: the stage's daily allowance, shared through the store, the papers it gives up for
the day, summaries stored as they are made; and due digests waiting for their summaries, never past
``NOTIFIER_LLM_GRACE``. In process, with a settable clock, the arXiv stand-in and the OpenAI-compatible stand-in."""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from notifier.config.settings import load_settings
from notifier.config.subscribers import load_config
from notifier.daemon import Notifier
from notifier.models import Paper
from notifier.summaries.stage import SummaryStage
from tests.arxiv_server import SMALL, ArxivStandIn
from tests.clock import Clock
from tests.llm_server import LlmStandIn
from tests.test_end_to_end import expected, fixture_items

LABEL = "Summary (LLM):"
POLLED = datetime(2025, 6, 3, 4, 10, tzinfo=UTC)  # just after Tuesday's announcement
DUE = datetime(2025, 6, 3, 8, 0, 30, tzinfo=UTC)  # just after the daily digests' 08:00
CONFIG = """\
defaults:
  schedule: "daily 08:00 UTC"
  categories: [cs.SD, eess.AS]
subscribers:
  - name: speech
    email: sam@lab.example
    rules:
      - {name: speech recognition, query: '"speech recognition"', summaries: true}
      - {name: music, query: music}
  - name: plain
    email: pat@lab.example
    rules:
      - {name: music, query: music}
"""
SPEECH = expected(fixture_items(SMALL, "2025-06-03"), "speech recognition")


@dataclass
class Rig:
    tmp_path: Path
    arxiv: ArxivStandIn
    llm: LlmStandIn
    clock: Clock

    def app(self, *, llm: bool = True, **settings: object) -> Notifier:
        """A Notifier on the rig's data folder; with ``llm``, the LLM stand-in is its LLM."""
        path = self.tmp_path / "subscribers.yaml"
        path.write_text(CONFIG)
        overrides: dict[str, object] = {
            "subscribers": str(path),
            "data_dir": str(self.tmp_path / "data"),
            "arxiv_rss_url": self.arxiv.rss_base_url,
            "arxiv_api_url": self.arxiv.api_url,
            "min_request_interval": 0.05,
        }
        if llm:
            overrides |= {"llm_url": self.llm.url, "llm_model": "stand-in-1"}
        return Notifier(load_settings({}, overrides | settings), load_config(path, {}), clock=self.clock)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with ArxivStandIn(day="2025-06-03") as arxiv, LlmStandIn() as llm:
        yield Rig(tmp_path, arxiv, llm, Clock(POLLED))


async def wanted(app: Notifier) -> list[Paper]:
    """Poll, then the papers every subscriber's next digest wants summarised, most-wanted first."""
    await app.poll()
    papers = app.summaries.missing(app.planner.papers_to_summarise(app.config, app.clock(), force=True))
    assert {paper.arxiv_id for paper in papers} == SPEECH
    return papers


def mail_text(tmp_path: Path, recipient: str) -> str:
    """The text part of the one mail sent to ``recipient``."""
    found = []
    for file in (tmp_path / "data" / "outbox" / "email").glob("*.eml"):
        message = email.message_from_bytes(file.read_bytes(), policy=email.policy.default)
        if message["To"] == recipient:
            body = message.get_body(preferencelist=("plain",))
            assert body is not None
            found.append(str(body.get_content()))
    (text,) = found
    return text


# -- the stage -----------------------------------------------------------------------------------------------------


async def test_the_daily_allowance_is_shared_through_the_store(rig):
    async with rig.app(llm_daily_limit=5) as app:
        papers = await wanted(app)
        other = SummaryStage(app.settings, app.store, rig.clock)  # another process on the same store
        try:
            assert app.summaries.allowance() == other.allowance() == 5
            run = await app.summaries.summarise(papers[:3], within=None)
            assert run is not None and len(run.made) == 3
            assert app.summaries.allowance() == other.allowance() == 2

            rest = other.missing(app.planner.papers_to_summarise(app.config, rig.clock(), force=True))
            assert [paper.key for paper in rest] == [paper.key for paper in papers[3:]]
            run = await other.summarise(rest, within=None)
            assert run is not None and len(run.made) == 2 and run.skipped == len(rest) - 2
            assert rig.llm.chats == 5
            assert app.summaries.allowance() == other.allowance() == 0
            usage = app.store.llm_usage(POLLED.date())
            assert (usage.asked, usage.made, usage.failed) == (5, 5, 0)
            assert usage.prompt_tokens == rig.llm.prompt_tokens

            run = await app.summaries.summarise(rest[2:], within=None)
            assert run is not None and run.made == [] and rig.llm.chats == 5, "nothing is asked over the limit"
            rig.clock.now = datetime(2025, 6, 4, 0, 0, 1, tzinfo=UTC)  # a new UTC day
            assert app.summaries.allowance() == other.allowance() == 5
        finally:
            await other.aclose()


async def test_a_paper_that_fails_is_given_up_for_the_utc_day(rig):
    async with rig.app() as app:
        papers = await wanted(app)
        rig.llm.fail_next, rig.llm.fail_mode, rig.llm.retry_after = 1, "rate_limit", 3600  # not waited for
        run = await app.summaries.summarise(papers, within=None)
        assert run is not None and len(run.made) == len(papers) - 1
        [(lost, _reason)] = run.failed
        usage = app.store.llm_usage(POLLED.date())
        assert (usage.asked, usage.made, usage.failed) == (len(papers), len(papers) - 1, 1)

        def missing() -> list[Paper]:
            return app.summaries.missing(app.planner.papers_to_summarise(app.config, rig.clock(), force=True))

        assert missing() == [], "given up for today"
        rig.clock.now = datetime(2025, 6, 3, 23, 59, tzinfo=UTC)
        assert missing() == []
        rig.clock.now = datetime(2025, 6, 4, 0, 1, tzinfo=UTC)
        assert [paper.key for paper in missing()] == [lost], "asked again the next day"
        run = await app.summaries.summarise(missing(), within=None)
        assert run is not None and [summary.key for summary in run.made] == [lost]
        assert rig.llm.chats == len(papers) + 1
        assert missing() == []


async def test_each_summary_is_stored_as_it_is_made_and_a_cancelled_run_keeps_them(rig):
    async with rig.app(llm_concurrency=1) as app:
        papers = await wanted(app)
        rig.llm.mode, rig.llm.fail_next, rig.llm.fail_mode = "stall", 2, "valid"  # two answers, then silence
        app.summaries.start(papers)
        task = app.summaries.task
        assert task is not None and app.summaries.running
        await asyncio.wait_for(rig.llm.wait_for_chats(3), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not app.summaries.running
        stored = app.store.summaries(paper.key for paper in papers)
        assert set(stored) == {papers[0].key, papers[1].key}
        assert app.store.llm_usage(POLLED.date()).made == 2
    rig.llm.mode = "valid"
    async with rig.app() as app:  # the next process asks only for the rest
        wants = app.planner.papers_to_summarise(app.config, rig.clock(), force=True)
        assert [paper.key for paper in app.summaries.missing(wants)] == [paper.key for paper in papers[2:]]


# -- due digests waiting for their summaries -----------------------------------------------------------------------


async def test_a_due_digest_waits_for_a_stalled_llm_until_the_grace_runs_out_then_goes_without(rig):
    async with rig.app(llm_grace=120) as app:
        await wanted(app)
        rig.llm.mode = "stall"
        rig.clock.now = DUE
        assert app.waiting_for_summaries() == {"speech"}
        assert app.summaries.running, "waiting started the summaries"
        report = await app.plan(force=False, wait=app.waiting_for_summaries())
        assert report.subscribers == ["plain"]
        state = app.store.subscriber_state("speech")
        assert state is not None and state.cursor is None

        rig.clock.now = DUE + timedelta(seconds=119)
        assert app.waiting_for_summaries() == {"speech"}
        assert (await app.plan(force=False, wait=app.waiting_for_summaries())).digests == 0
        rig.clock.now = DUE + timedelta(seconds=120)
        assert app.summaries.running, "the LLM still has not answered"
        assert app.waiting_for_summaries() == frozenset()
        report = await app.plan(force=False, wait=app.waiting_for_summaries())
        assert report.subscribers == ["speech"]
        await app.send()
        text = mail_text(rig.tmp_path, "sam@lab.example")
        assert LABEL not in text and all(f"arxiv.org/abs/{arxiv_id}" in text for arxiv_id in SPEECH)


async def test_a_due_digest_waits_for_summaries_being_made_and_carries_them(rig):
    async with rig.app() as app:
        await wanted(app)
        rig.clock.now = DUE
        assert app.waiting_for_summaries() == {"speech"}
        task = app.summaries.task
        assert task is not None
        run = await asyncio.wait_for(task, 30)
        assert run is not None and len(run.made) == len(SPEECH)
        assert app.waiting_for_summaries() == frozenset()
        report = await app.plan(force=False, wait=app.waiting_for_summaries())
        assert sorted(report.subscribers) == ["plain", "speech"]
        await app.send()
    assert mail_text(rig.tmp_path, "sam@lab.example").count(LABEL) == len(SPEECH)
    assert LABEL not in mail_text(rig.tmp_path, "pat@lab.example")


async def test_nothing_waits_once_the_days_allowance_is_spent(rig):
    async with rig.app(llm_daily_limit=3) as app:
        papers = await wanted(app)
        await app.summaries.summarise(papers, within=None)
        rig.clock.now = DUE
        assert app.waiting_for_summaries() == frozenset()
        assert not app.summaries.running
        report = await app.plan(force=False, wait=app.waiting_for_summaries())
        assert sorted(report.subscribers) == ["plain", "speech"]
        await app.send()
    assert mail_text(rig.tmp_path, "sam@lab.example").count(LABEL) == 3


async def test_with_no_llm_configured_nothing_waits_and_nothing_is_asked(rig):
    async with rig.app(llm=False) as app:
        await app.poll()
        rig.clock.now = DUE
        assert not app.summaries.enabled
        assert app.waiting_for_summaries() == frozenset()
        report = await app.cycle(poll=False)
        assert "summarise" not in report.seconds
        assert report.plan is not None and sorted(report.plan.subscribers) == ["plain", "speech"]
    assert rig.llm.chats == 0
    assert LABEL not in mail_text(rig.tmp_path, "sam@lab.example")


async def test_a_cycle_summarises_before_it_plans(rig):
    async with rig.app() as app:
        report = await app.cycle(force_send=True)
    assert list(report.seconds)[:4] == ["poll", "enrich", "summarise", "plan"]
    assert rig.llm.chats == len(SPEECH)
    assert mail_text(rig.tmp_path, "sam@lab.example").count(LABEL) == len(SPEECH)


async def test_summarising_ahead_makes_every_next_digests_summaries_before_it_is_due(rig):
    async with rig.app() as app:
        await wanted(app)
        assert app.waiting_for_summaries() == frozenset(), "no digest is due yet"
        app.summarise_ahead()
        task = app.summaries.task
        assert task is not None
        run = await asyncio.wait_for(task, 30)
        assert run is not None and {summary.arxiv_id for summary in run.made} == SPEECH
        rig.clock.now = DUE
        assert app.waiting_for_summaries() == frozenset(), "nothing is missing"
        report = await app.plan(force=False, wait=app.waiting_for_summaries())
        assert sorted(report.subscribers) == ["plain", "speech"]
        await app.send()
    assert rig.llm.chats == len(SPEECH)
    assert mail_text(rig.tmp_path, "sam@lab.example").count(LABEL) == len(SPEECH)


@pytest.mark.slow
async def test_once_waits_for_a_stalled_llm_no_longer_than_the_grace(rig):
    async with rig.app(llm_grace=0.3) as app:
        rig.llm.mode = "stall"
        report = await app.cycle(force_send=True)
        assert report.plan is not None and sorted(report.plan.subscribers) == ["plain", "speech"]
        assert app.store.llm_usage(POLLED.date()).made == 0
    assert rig.llm.chats > 0
    assert LABEL not in mail_text(rig.tmp_path, "sam@lab.example")
