"""Which papers the planner asks summaries for, in which order, and how a planned digest carries them: a real SQLite
store holding a captured day of cs.SD and eess.AS, ingested category by category as the poller does."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from notifier.arxiv.rss import parse_feed
from notifier.config.settings import Settings, load_settings
from notifier.config.subscribers import Config, Subscriber, load_config
from notifier.demo.stand_in import category_feed
from notifier.models import Paper, Summary
from notifier.outbox.planner import Planner
from notifier.outbox.wants import SummaryWants
from notifier.render.renderer import Renderer
from notifier.store.sqlite import SqliteStore
from tests.arxiv_server import SMALL, fixtures_dir
from tests.clock import Clock
from tests.test_end_to_end import expected, fixture_items

LABEL = "Summary (LLM):"
DAY = "2025-06-03"
CATEGORIES = tuple(SMALL.split("+"))  # cs.SD, eess.AS
LLM = {"llm_url": "http://127.0.0.1:9/v1", "llm_model": "stand-in-1"}  # never asked: the planner does no I/O

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
      - {name: speech recognition, query: '"speech recognition"'}
"""
ORDERING = """\
defaults:
  categories: [cs.SD, eess.AS]
  summaries: true
subscribers:
  - name: early
    email: e@lab.example
    schedule: "daily 07:00 UTC"
    rules: [{name: music, query: music}]
  - name: late
    email: l@lab.example
    schedule: "daily 08:00 UTC"
    rules:
      - {name: speech recognition, query: '"speech recognition"'}
      - {name: diffusion, query: diffusion}
  - name: twice
    email: t@lab.example
    schedule: "daily 08:00 UTC"
    rules: [{name: speech recognition, query: '"speech recognition"'}]
"""


class Setup:
    """A planner over a store in ``folder``, the config ``text``, and a clock at Tue 3 Jun 2025 09:00 UTC."""

    def __init__(self, folder: Path, text: str, *, llm: bool = True) -> None:
        folder.mkdir()
        path = folder / "subscribers.yaml"
        path.write_text(text)
        self.clock = Clock()
        self.settings: Settings = load_settings(
            {}, {"subscribers": str(path), "data_dir": str(folder / "data"), **(LLM if llm else {})}
        )
        self.config: Config = load_config(path, {})
        self.store = SqliteStore(folder / "notifier.sqlite3")
        self.store.register_subscribers((s.name for s in self.config.subscribers), self.clock())
        self.planner = Planner(self.store, Renderer(self.settings.templates), self.settings)

    def subscriber(self, name: str) -> Subscriber:
        return next(s for s in self.config.subscribers if s.name == name)

    def ingest(self, *categories: str) -> None:
        """The day's items of ``categories`` (all by default), seen now."""
        body = (fixtures_dir() / f"rss-{SMALL}-{DAY}.DERIVED.xml").read_bytes()
        for category in categories or CATEGORIES:
            papers = parse_feed(category_feed(body, CATEGORIES, category), category).papers
            self.store.ingest(category, papers, self.clock())

    def wants(self, *, force: bool = False, only: str | None = None) -> SummaryWants:
        subscriber = self.subscriber(only) if only else None
        return self.planner.papers_to_summarise(self.config, self.clock(), force=force, only=subscriber)

    def summarise(self, ids: Iterable[str]) -> list[Summary]:
        """Store a summary of each paper of ``ids`` (its stored version), as the summarising stage would."""
        wanted = set(ids)
        since = self.clock() - timedelta(days=7)
        versions = {p.arxiv_id: p.version for c in CATEGORIES for p in self.store.candidates(c, since, self.clock())}
        made = [
            Summary(
                arxiv_id=arxiv_id,
                version=versions[arxiv_id],
                summary=f"Short summary of {arxiv_id}.",
                topic="speech",
                subtopic="recognition",
                keywords=("asr",),
                model="stand-in-1",
            )
            for arxiv_id in sorted(wanted)
        ]
        self.store.save_summaries(made, self.clock())
        return made


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., Setup]]:
    """``make(text, llm=True)``: a :class:`Setup` in a folder of its own; its store is closed at teardown."""
    made: list[Setup] = []

    def setup(text: str = CONFIG, *, llm: bool = True) -> Setup:
        made.append(Setup(tmp_path / str(len(made)), text, llm=llm))
        return made[-1]

    yield setup
    for each in made:
        each.store.close()


@pytest.fixture
def setup(make: Callable[..., Setup]) -> Setup:
    return make()


def ids(wants: SummaryWants) -> set[str]:
    return {arxiv_id for arxiv_id, _version in wants.papers}


def day_papers(keyword: str, types: Iterable[str] = ("new", "cross")) -> set[str]:
    """The day's papers of both categories that mention ``keyword``, of the announce types ``types``."""
    return expected(fixture_items(SMALL, DAY), keyword, types)


def plain_text(payload: bytes) -> str:
    message = email.message_from_bytes(payload, policy=email.policy.default)
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())


# -- what is wanted ------------------------------------------------------------------------------------------------


def test_only_the_papers_of_rich_rules_are_wanted(setup):
    setup.ingest()
    wants = setup.wants(force=True)
    speech, music = day_papers("speech recognition"), day_papers("music")
    assert speech and music - speech
    assert ids(wants) == speech, "music is not a rich rule, and plain asks for no summaries"
    assert all(names == {"speech"} for names in wants.wanted_by.values())
    assert set(wants.due_at) == {"speech"}


def test_with_no_llm_configured_nothing_is_wanted(make):
    setup = make(llm=False)
    setup.ingest()
    assert len(setup.wants(force=True)) == 0
    assert len(setup.wants(force=True, only="speech")) == 0
    planned = setup.planner.preview(setup.config, setup.subscriber("speech"), setup.clock())
    assert planned.papers > 0 and (planned.rich, planned.summarised) == (0, 0)


def test_announce_types_are_filtered_as_the_digest_does(make):
    setup = make(CONFIG.replace("email: sam@lab.example", "email: sam@lab.example\n    announce_types: [new]"))
    setup.ingest()
    new_only = day_papers("speech recognition", ("new",))
    assert new_only and new_only < day_papers("speech recognition")
    assert ids(setup.wants(force=True)) == new_only
    planned = setup.planner.preview(setup.config, setup.subscriber("speech"), setup.clock())
    assert planned.rich == len(new_only)


def test_papers_a_recipient_already_had_are_not_wanted(setup):
    setup.ingest("cs.SD")
    first = setup.planner.plan(setup.config, setup.clock(), force=True)
    assert "speech" in first.subscribers
    had = set(setup.store.reserved_versions("speech", "email", "sam@lab.example"))
    setup.clock.now += timedelta(hours=1)
    setup.ingest("eess.AS")  # eess.AS is read an hour later: its cross-lists from cs.SD come again
    wants = setup.wants(force=True)
    again = day_papers("speech recognition") & had
    assert again, "papers of both categories matched the rule in cs.SD's digest"
    assert not ids(wants) & had
    assert ids(wants) == day_papers("speech recognition") - had


# -- in which order ------------------------------------------------------------------------------------------------


@pytest.fixture
def ordering(make: Callable[..., Setup]) -> Setup:
    made = make(ORDERING)
    made.ingest()
    return made


def test_the_most_wanted_come_first_then_those_of_the_digest_due_first(ordering):
    speech, music, diffusion = (day_papers(k) for k in ("speech recognition", "music", "diffusion"))
    assert music & diffusion and not speech & (music | diffusion)
    wants = ordering.wants(force=True)
    order = [paper.arxiv_id for paper in wants.ordered()]
    tiers = [
        music & diffusion,  # early (07:00) and late (08:00)
        speech,  # late and twice (08:00)
        music - diffusion,  # early alone (07:00)
        diffusion - music,  # late alone (08:00)
    ]
    assert len(order) == len(set(order)) == sum(map(len, tiers))
    start = 0
    for tier in tiers:
        assert set(order[start : start + len(tier)]) == tier
        start += len(tier)
    assert wants.due_at == {
        "early": datetime(2025, 6, 4, 7, 0, tzinfo=UTC),
        "late": datetime(2025, 6, 4, 8, 0, tzinfo=UTC),
        "twice": datetime(2025, 6, 4, 8, 0, tzinfo=UTC),
    }


def test_papers_left_out_are_left_out_of_the_order(ordering):
    wants = ordering.wants(force=True)
    first = wants.ordered()[0].key
    assert first not in {paper.key for paper in wants.ordered(leaving_out=[first])}
    assert len(wants.ordered(leaving_out=[first])) == len(wants) - 1
    assert wants.subscribers_waiting_for([first]) == wants.wanted_by[first]


def test_only_gives_one_subscribers_papers_due_or_not(ordering):
    wants = ordering.wants(only="early")
    assert ids(wants) == day_papers("music")
    assert all(names == {"early"} for names in wants.wanted_by.values())


def test_force_gives_the_papers_of_subscribers_not_yet_due(ordering):
    assert len(ordering.wants()) == 0, "no digest is due right after subscribing"
    assert ids(ordering.wants(force=True)) == day_papers("music") | day_papers("speech recognition") | day_papers(
        "diffusion"
    )
    ordering.clock.now = datetime(2025, 6, 4, 7, 30, tzinfo=UTC)  # early's digest is due, the others' are not
    wants = ordering.wants()
    assert ids(wants) == day_papers("music")
    assert set(wants.due_at) == {"early"}


# -- what the plan carries -----------------------------------------------------------------------------------------


def test_a_planned_digest_carries_the_stored_summaries_of_its_rich_papers(setup):
    setup.ingest()
    speech = sorted(day_papers("speech recognition"))
    made = setup.summarise(speech[:3])
    music_only = sorted(day_papers("music") - set(speech))
    setup.summarise(music_only[:1])  # stored, but music is not a rich rule: shown as a one-line entry

    planned = setup.planner.preview(setup.config, setup.subscriber("speech"), setup.clock())
    assert (planned.rich, planned.summarised) == (len(speech), 3)
    plain = setup.planner.preview(setup.config, setup.subscriber("plain"), setup.clock())
    assert (plain.rich, plain.summarised) == (0, 0)

    report = setup.planner.plan(setup.config, setup.clock(), force=True)
    assert sorted(report.subscribers) == ["plain", "speech"]
    claimed = setup.store.claim_due(setup.clock(), owner="test", lease=timedelta(hours=1), limit=10)
    texts = {message.recipient: plain_text(message.payload) for message in claimed}
    assert texts["sam@lab.example"].count(LABEL) == 3
    for summary in made:
        assert f"{LABEL} {summary.summary}" in texts["sam@lab.example"]
    assert f"Short summary of {music_only[0]}." not in texts["sam@lab.example"]
    assert LABEL not in texts["pat@lab.example"], "plain's rule asks for no summaries"


def test_waiting_subscribers_are_left_unplanned_with_their_cursor_and_the_next_plan_plans_them(setup):
    setup.ingest()
    report = setup.planner.plan(setup.config, setup.clock(), force=True, wait=frozenset({"speech"}))
    assert report.subscribers == ["plain"]
    state = setup.store.subscriber_state("speech")
    assert state is not None and state.cursor is None and state.last_digest_at is None
    assert setup.store.reserved_versions("speech", "email", "sam@lab.example") == {}
    assert ids(setup.wants(force=True)) == day_papers("speech recognition"), "still wanted"

    setup.clock.now += timedelta(minutes=2)
    again = setup.planner.plan(setup.config, setup.clock(), force=True)
    assert again.subscribers == ["speech"]
    assert set(setup.store.reserved_versions("speech", "email", "sam@lab.example")) >= day_papers("speech recognition")
    state = setup.store.subscriber_state("speech")
    assert state is not None and state.cursor == setup.clock()


def test_the_papers_of_a_recipient_who_unsubscribed_are_not_wanted(make):
    setup = make(CONFIG.replace("email: sam@lab.example", "email: [sam@lab.example, sue@lab.example]"))
    setup.ingest()
    setup.store.unsubscribe("speech", "Sam@Lab.example", setup.clock())
    assert ids(setup.wants(force=True)) == day_papers("speech recognition"), "sue still reads them"
    setup.store.unsubscribe("speech", "sue@lab.example", setup.clock())
    assert len(setup.wants(force=True)) == 0, "no one will read them"
    assert len(setup.wants(only="speech")) == 0
    planned = setup.planner.preview(setup.config, setup.subscriber("speech"), setup.clock())
    assert not planned.record.deliveries and planned.rich == 0


def test_a_replaced_paper_wants_a_summary_of_its_new_version(make):
    setup = make(CONFIG.replace("email: sam@lab.example", "email: sam@lab.example\n    announce_types: [new, replace]"))

    def announce(version: int, announce_type: str) -> Paper:
        paper = Paper(
            arxiv_id="2506.99999",
            version=version,
            title=f"Speech recognition for everyone, take {version}",
            abstract="We study speech recognition.",
            authors=("Ada Lovelace",),
            categories=("cs.SD",),
            announce_type=announce_type,
            announced=setup.clock().date(),
        )
        setup.store.ingest("cs.SD", [paper], setup.clock())
        return paper

    first = announce(1, "new")
    assert set(setup.wants(force=True).papers) == {first.key}
    setup.summarise([first.arxiv_id])
    assert "speech" in setup.planner.plan(setup.config, setup.clock(), force=True).subscribers

    setup.clock.now += timedelta(days=1)
    second = announce(2, "replace")
    assert set(setup.wants(force=True).papers) == {second.key}, "the summary of version 1 is not version 2's"
    planned = setup.planner.preview(setup.config, setup.subscriber("speech"), setup.clock())
    assert (planned.rich, planned.summarised) == (1, 0)
