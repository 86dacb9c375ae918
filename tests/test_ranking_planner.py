"""Ranked planning in-process: a real SQLite store holding two captured days of cs.SD and eess.AS, the liked papers
stored as the lookup on arXiv stores them, and digests planned by the planner with a clock. The liked papers are the
first day's new papers on speech recognition; the second day's papers are ranked by how much they look like them."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from notifier.arxiv.likes import id_source
from notifier.arxiv.rss import parse_feed
from notifier.config.settings import Settings, load_settings
from notifier.config.subscribers import Config, Subscriber, load_config
from notifier.demo.stand_in import category_feed
from notifier.models import Digest, DigestSection, Match, Paper
from notifier.outbox.planner import Planner
from notifier.render.renderer import Renderer
from notifier.store.sqlite import SqliteStore
from tests.arxiv_server import SMALL, fixtures_dir
from tests.clock import Clock
from tests.test_end_to_end import contains, fixture_items

FIRST, SECOND = "2025-06-03", "2025-06-04"
CATEGORIES = tuple(SMALL.split("+"))  # cs.SD, eess.AS
ABOUT_ASR = [i for i in fixture_items(SMALL, FIRST) if contains(i.text, "speech recognition")]
LIKED = sorted(i.arxiv_id for i in ABOUT_ASR if i.announce_type == "new")
LIKE = f"like: [{', '.join(f'{arxiv_id!r}' for arxiv_id in LIKED)}]"
SIMILAR = "most like ours"
TOP_FIVE = f"      - {{name: {SIMILAR}, similar: {{top: 5}}}}\n"


def config(*subscribers: str) -> str:
    return "defaults:\n  categories: [cs.SD, eess.AS]\nsubscribers:\n" + "".join(subscribers)


def subscriber(name: str, rules: str, *, extra: str = "") -> str:
    """One subscriber of ``LIKE`` (when ``extra`` says nothing else) mailed at ``name@lab.example``."""
    return f"  - name: {name}\n    email: {name}@lab.example\n{extra}    rules:\n{rules}"


class Recording(Renderer):
    """The real renderer, remembering each digest it renders for email, by subscriber."""

    def __init__(self, templates: Path) -> None:
        super().__init__(templates)
        self.digests: dict[str, list[Digest]] = {}

    def email_message(self, digest: Digest, **kwargs: object) -> bytes:  # type: ignore[override]
        self.digests.setdefault(digest.subscriber, []).append(digest)
        return super().email_message(digest, **kwargs)  # type: ignore[arg-type]


class Setup:
    """A planner over a store in ``folder`` holding the first day's papers (seen Tue 3 Jun 2025 09:00 UTC) and the
    config ``text``, its subscribers registered on Wed 4 Jun at 10:00, so that their first digest holds the second
    day's papers alone."""

    def __init__(self, folder: Path, text: str) -> None:
        folder.mkdir()
        self.path = folder / "subscribers.yaml"
        self.path.write_text(text)
        self.clock = Clock()
        self.settings: Settings = load_settings({}, {"subscribers": str(self.path), "data_dir": str(folder / "data")})
        self.config: Config = load_config(self.path, {})
        self.store = SqliteStore(folder / "notifier.sqlite3")
        self.renderer = Recording(self.settings.templates)
        self.planner = Planner(self.store, self.renderer, self.settings)
        self.ingest(FIRST)
        self.clock.now = datetime(2025, 6, 4, 10, 0, tzinfo=UTC)
        self.store.register_subscribers((s.name for s in self.config.subscribers), self.clock())

    def edit(self, text: str) -> None:
        """Replace the config by ``text``, as a hand edit and a reload do."""
        self.path.write_text(text)
        self.config = load_config(self.path, {})

    def subscriber(self, name: str) -> Subscriber:
        return next(s for s in self.config.subscribers if s.name == name)

    def ingest(self, day: str, *categories: str) -> None:
        """The items of ``day`` in ``categories`` (all by default), seen now."""
        body = (fixtures_dir() / f"rss-{SMALL}-{day}.DERIVED.xml").read_bytes()
        for category in categories or CATEGORIES:
            papers = parse_feed(category_feed(body, CATEGORIES, category), category).papers
            self.store.ingest(category, papers, self.clock())

    def like(self, ids: Iterable[str], day: str = FIRST) -> None:
        """Store the papers ``ids`` of ``day`` and what their ``id:`` sources resolved to, as the lookup does."""
        wanted = set(ids)
        body = (fixtures_dir() / f"rss-{SMALL}-{day}.DERIVED.xml").read_bytes()
        found = {
            p.arxiv_id: replace(p, announce_type="new", announced=None, backfilled=False)
            for category in CATEGORIES
            for p in parse_feed(category_feed(body, CATEGORIES, category), category).papers
            if p.arxiv_id in wanted
        }
        assert set(found) == wanted
        self.store.save_reference_papers(list(found.values()), self.clock())
        self.store.save_like_sources({id_source(i): (i,) for i in sorted(wanted)}, self.clock())

    def plan(self) -> None:
        report = self.planner.plan(self.config, self.clock(), force=True)
        assert not report.failed

    def section(self, name: str, rule: str, digest: int = -1) -> DigestSection:
        """Section ``rule`` of ``name``'s digest (by default its latest)."""
        return next(s for s in self.renderer.digests[name][digest].sections if s.rule == rule)

    def scores(self, name: str, papers: Sequence[Paper]) -> list[float]:
        """What ``name``'s profile of today scores ``papers``."""
        profile = self.planner.rankings.profile(self.subscriber(name), self.clock())
        assert profile is not None
        return [float(v) for v in profile.scores(papers).values]

    def seen(self, since: datetime) -> list[Paper]:
        """The papers of both categories first seen at ``since`` or later, each once, new or cross-listed."""
        papers = {
            p.arxiv_id: p
            for category in CATEGORIES
            for p in self.store.candidates(category, since - timedelta(seconds=1), self.clock())
            if p.announce_type in ("new", "cross")
        }
        return list(papers.values())


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[[str], Setup]]:
    made: list[Setup] = []

    def setup(text: str) -> Setup:
        made.append(Setup(tmp_path / str(len(made)), text))
        return made[-1]

    yield setup
    for each in made:
        each.store.close()


def ids(matches: Iterable[Match]) -> list[str]:
    return [match.paper.arxiv_id for match in matches]


def score_of(match: Match) -> float:
    assert match.similarity is not None, match.paper.arxiv_id
    return match.similarity.score


def ranked_scores(section: DigestSection) -> list[float]:
    return [score_of(match) for match in section.matches]


def assert_best_first(section: DigestSection) -> None:
    scores = ranked_scores(section)
    assert scores == sorted(scores, reverse=True), "best first"
    assert {m.similarity.liked_id for m in section.matches if m.similarity} <= set(LIKED)


def test_the_fixture_days_have_papers_to_like_and_to_rank():
    assert len(LIKED) >= 5
    assert not set(LIKED) & {i.arxiv_id for i in fixture_items(SMALL, SECOND)}, "the liked papers are the day before's"


# -- a similar-only rule -----------------------------------------------------------------------------------------


def test_a_similar_only_rule_holds_its_top_papers_best_first_each_naming_a_liked_one(make):
    setup = make(config(subscriber("lab", TOP_FIVE, extra=f"    {LIKE}\n")))
    setup.like(LIKED)
    start = setup.clock()
    setup.ingest(SECOND)
    setup.plan()
    section = setup.section("lab", SIMILAR)
    assert len(section.matches) == 5
    assert_best_first(section)
    assert all(m.similarity and m.similarity.liked_title for m in section.matches)
    day = setup.seen(start)
    shown = set(ids(section.matches))
    rest = [p for p in day if p.arxiv_id not in shown]
    assert len(rest) > 30, "the day has many more papers than the section shows"
    assert max(setup.scores("lab", rest)) <= min(ranked_scores(section)), "no paper left out scores higher"
    about_asr = {p.arxiv_id for p in day if contains(f"{p.title} {p.abstract}", "speech recognition")}
    assert len(shown & about_asr) >= 2, "papers like the liked ones: on speech recognition"


def test_a_paper_already_sent_is_left_out_and_the_next_best_takes_its_place(make):
    setup = make(config(subscriber("lab", TOP_FIVE, extra=f"    {LIKE}\n")))
    setup.like(LIKED)
    setup.ingest(SECOND, "cs.SD")
    setup.plan()
    first = setup.section("lab", SIMILAR)
    had = set(setup.store.reserved_versions("lab", "email", "lab@lab.example"))
    assert set(ids(first.matches)) == had and len(had) == 5
    setup.clock.now += timedelta(hours=1)
    start = setup.clock()
    setup.ingest(SECOND, "eess.AS")  # read an hour later: its cross-lists from cs.SD come again
    setup.clock.now += timedelta(minutes=1)
    setup.plan()
    second = setup.section("lab", SIMILAR)
    assert len(second.matches) == 5
    assert_best_first(second)
    assert not set(ids(second.matches)) & had
    again = [p for p in setup.seen(start) if p.arxiv_id in had]
    assert again and max(setup.scores("lab", again)) > min(ranked_scores(second)), (
        "a paper sent before would have been shown: the next best took its place"
    )
    left = [p for p in setup.seen(start) if p.arxiv_id not in had | set(ids(second.matches))]
    assert max(setup.scores("lab", left)) <= min(ranked_scores(second))


# -- min_score, and a query that also ranks ----------------------------------------------------------------------

THRESHOLD = 0.05  # a typical paper scores 0, the liked ones 1: the second day's best score about 0.2


def test_min_score_keeps_the_papers_at_or_above_it_among_the_querys_matches(make):
    rules = (
        "      - {name: models, query: model}\n"
        f"      - {{name: models like ours, query: model, similar: {{top: null, min_score: {THRESHOLD}}}}}\n"
        f"      - {{name: {SIMILAR}, similar: {{top: null, min_score: {THRESHOLD}}}}}\n"
    )
    setup = make(config(subscriber("lab", rules, extra=f"    {LIKE}\n")))
    setup.like(LIKED)
    start = setup.clock()
    setup.ingest(SECOND)
    setup.plan()
    models = setup.section("lab", "models")
    ranked = setup.section("lab", "models like ours")
    similar = setup.section("lab", SIMILAR)
    assert all(m.similarity is None for m in models.matches), "a plain rule of a subscriber that does not sort"
    assert_best_first(ranked)
    assert_best_first(similar)
    assert all(score >= THRESHOLD for score in ranked_scores(ranked) + ranked_scores(similar))
    assert 0 < len(ranked.matches) < len(models.matches)
    assert set(ids(ranked.matches)) < set(ids(models.matches)), "a subset of the query's matches"
    assert set(ids(ranked.matches)) == set(ids(models.matches)) & set(ids(similar.matches))
    day = setup.seen(start)
    below = [p for p in day if p.arxiv_id not in set(ids(similar.matches))]
    assert below and max(setup.scores("lab", below)) < THRESHOLD, "every paper at or above it is kept"


# -- sort: relevance ---------------------------------------------------------------------------------------------


def test_sort_relevance_orders_a_plain_querys_matches_by_score(make):
    rule = "      - {name: models, query: model}\n"
    text = config(
        subscriber("ranked", rule, extra=f"    {LIKE}\n    sort: relevance\n"),
        subscriber("announced", rule, extra=f"    {LIKE}\n"),
        subscriber("plain", rule),
    )
    setup = make(text)
    setup.like(LIKED)
    setup.ingest(SECOND)
    setup.plan()
    ranked = setup.section("ranked", "models")
    announced = setup.section("announced", "models")
    plain = setup.section("plain", "models")
    assert_best_first(ranked)
    assert len(ranked.matches) > 5
    assert sorted(ids(ranked.matches)) == sorted(ids(announced.matches))
    assert ids(ranked.matches) != ids(announced.matches), "ranked, not in announcement order"
    assert ids(announced.matches) == ids(plain.matches) == sorted(ids(plain.matches)), "in announcement order"
    assert all(m.similarity is None for m in announced.matches + plain.matches)


# -- liked papers not known yet ----------------------------------------------------------------------------------


def test_a_subscriber_whose_liked_papers_are_unknown_is_planned_unranked_until_they_are_stored(make, caplog):
    music_rule = "      - {name: music, query: music}\n"
    setup = make(
        config(subscriber("lab", TOP_FIVE + music_rule, extra=f"    {LIKE}\n"), subscriber("plain", music_rule))
    )
    setup.ingest(SECOND, "cs.SD")
    with caplog.at_level(logging.WARNING, logger="notifier"):
        setup.plan()
        setup.clock.now += timedelta(minutes=30)
        setup.plan()
    assert setup.section("lab", SIMILAR, 0).matches == ()
    music = setup.section("lab", "music", 0)
    assert music.matches and music == setup.section("plain", "music", 0), "keyword sections as usual"
    warned = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 1, [r.getMessage() for r in warned]
    assert "lab's liked papers" in warned[0].getMessage()
    setup.like(LIKED)
    setup.clock.now += timedelta(minutes=30)
    setup.ingest(SECOND, "eess.AS")
    setup.clock.now += timedelta(minutes=1)
    setup.plan()
    ranked = setup.section("lab", SIMILAR)
    assert len(ranked.matches) == 5
    assert_best_first(ranked)


# -- dislikes ----------------------------------------------------------------------------------------------------


def test_a_disliked_papers_near_duplicates_score_lower(make):
    every = f"      - {{name: {SIMILAR}, similar: {{top: null}}}}\n"
    liker = subscriber("likes", every, extra=f"    {LIKE}\n")
    setup = make(config(liker))
    setup.like(LIKED)
    start = setup.clock()
    setup.ingest(SECOND)
    day = setup.seen(start)
    scores = setup.scores("likes", day)
    disliked = day[max(range(len(day)), key=scores.__getitem__)]  # the paper most like the liked ones
    setup.edit(
        config(liker, subscriber("dislikes", every, extra=f"    {LIKE}\n    dislike: [{disliked.arxiv_id!r}]\n"))
    )
    setup.like([disliked.arxiv_id], SECOND)
    setup.plan()
    liking = {m.paper.arxiv_id: score_of(m) for m in setup.section("likes", SIMILAR).matches}
    disliking = {m.paper.arxiv_id: score_of(m) for m in setup.section("dislikes", SIMILAR).matches}
    assert set(liking) == set(disliking) == {p.arxiv_id for p in day}
    corpus = setup.planner.rankings.corpus(setup.clock())
    assert corpus is not None
    cosines = corpus.profile([disliked], trained=False).scores(day).values
    near = [p.arxiv_id for p, cosine in zip(day, cosines, strict=True) if cosine >= 0.2]
    assert disliked.arxiv_id in near and len(near) >= 2, "the disliked paper and a paper much like it"
    for arxiv_id in near:
        assert disliking[arxiv_id] < liking[arxiv_id], arxiv_id
    assert ids(setup.section("dislikes", SIMILAR).matches)[0] != disliked.arxiv_id
