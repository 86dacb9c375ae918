"""Fetching the papers subscribers like from the arXiv stand-in: ids in shared batches, an author's newest papers, a
BibTeX entry by its arXiv DOI or its exact title, cached in the store and asked again only weekly, and an API that
fails leaves what was cached in use."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from notifier.arxiv.api import fetch_author, find_title, normalise_title
from notifier.arxiv.gate import PoliteGate
from notifier.arxiv.likes import REFRESH_AFTER, liked_papers, liked_papers_of, refresh_likes
from notifier.config.schedule import Schedule
from notifier.config.subscribers import BibReference, Likes, Subscriber
from notifier.store.sqlite import SqliteStore
from tests.arxiv_server import ArxivStandIn, stand_in_with_gate

T0 = datetime(2025, 6, 10, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
NONE = Likes()


@dataclass
class Rig:
    server: ArxivStandIn
    gate: PoliteGate
    store: SqliteStore

    async def refresh(self, *subscribers: Subscriber, now: datetime = T0):
        return await refresh_likes(self.store, self.gate, self.server.api_url, subscribers, now)

    def api_requests(self) -> int:
        return len(self.server.requests_to("/api"))


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with stand_in_with_gate(request_timeout=5) as (gate, server):
        store = SqliteStore(tmp_path / "notifier.sqlite3")
        try:
            yield Rig(server, gate, store)
        finally:
            store.close()


def subscriber(name: str, likes: Likes = NONE, dislikes: Likes = NONE) -> Subscriber:
    return Subscriber(
        name=name,
        emails=(f"{name}@lab.example",),
        slack=(),
        categories=("cs.SD",),
        schedule=Schedule("daily"),
        announce_types=frozenset({"new"}),
        rules=(),
        send_empty=False,
        line=1,
        likes=likes,
        dislikes=dislikes,
    )


def bib(key: str, *, title: str | None = None, doi: str | None = None, line: int = 1) -> BibReference:
    return BibReference(key=key, doi=doi, title=title, where=f"lab.bib:{line}")


def ids_of(papers) -> list[str]:
    return [p.arxiv_id for p in papers]


def likes_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "notifier.arxiv.likes" and r.levelno >= logging.WARNING]


WATANABE_NEWEST = ["2506.00422", "2506.01611", "2506.01845", "2506.00338", "2506.00722"]


# -- the API's searches -----------------------------------------------------------------------------------------


async def test_an_authors_papers_come_newest_first_in_one_request(rig):
    entries = await fetch_author(rig.gate, rig.server.api_url, "Shinji  Watanabe")

    assert [e.arxiv_id for e in entries][:5] == WATANABE_NEWEST
    assert len(entries) == 8 and all("Shinji Watanabe" in e.authors for e in entries)
    (asked,) = rig.server.requests_to("/api")
    assert asked.query["search_query"] == 'au:"Shinji Watanabe"'
    assert (asked.query["sortBy"], asked.query["sortOrder"], asked.query["max_results"]) == (
        "submittedDate",
        "descending",
        "100",
    )


async def test_a_title_is_found_whatever_its_case_accents_markup_and_punctuation(rig):
    found = await find_title(rig.gate, rig.server.api_url, "{T}ext to {S}peech synthesis in the w\\'{i}ld.")
    assert found is not None and (found.arxiv_id, found.title) == ("2409.08711", "Text-To-Speech Synthesis In The Wild")
    assert rig.server.requests_to("/api")[0].query["search_query"] == 'ti:"text to speech synthesis in the wild"'


async def test_a_paper_whose_title_only_contains_the_one_sought_is_not_taken_for_it(rig):
    assert await find_title(rig.gate, rig.server.api_url, "Speech Synthesis in the Wild") is None
    assert rig.server.search("ti", "speech synthesis in the wild"), "arXiv did offer a candidate"
    assert await find_title(rig.gate, rig.server.api_url, "A paper nobody wrote") is None


def test_normalised_titles_ignore_case_accents_bibtex_braces_latex_and_punctuation():
    assert normalise_title('{GPU}s Re-visited: \\"{U}ber naïve $\\mathcal{O}(n)$ caches!') == (
        "gpus re visited uber naive o n caches"
    )
    assert normalise_title("  ") == ""


# -- refreshing the likes ---------------------------------------------------------------------------------------


async def test_500_liked_papers_of_two_subscribers_cost_5_requests(rig):
    catalogue = sorted(rig.server.api_papers())[:500]
    ann = subscriber("ann", Likes(arxiv_ids=tuple(catalogue[:300])))
    bob = subscriber("bob", dislikes=Likes(arxiv_ids=tuple(catalogue[200:])))

    report = await rig.refresh(ann, bob)

    batches = [r.query["id_list"].split(",") for r in rig.server.requests_to("/api")]
    assert [len(batch) for batch in batches] == [100] * 5
    assert sorted(i for batch in batches for i in batch) == catalogue, "each paper asked for once"
    assert (report.sources, report.refreshed, report.requests, report.papers, report.failed) == (500, 500, 5, 500, 0)
    assert ids_of(liked_papers(rig.store, ann.likes)) == catalogue[:300]
    assert ids_of(liked_papers(rig.store, bob.dislikes)) == catalogue[200:]
    first = liked_papers(rig.store, ann.likes)[0]
    served = rig.server.api_papers()[first.arxiv_id]
    assert (first.title, list(first.authors), first.version) == (served.title, served.authors, served.version)


async def test_the_likes_of_many_subscribers_are_read_together_as_each_alone(rig):
    ann = subscriber("ann", Likes(arxiv_ids=("2506.01611", "2401.99999"), authors=("Shinji Watanabe",)))
    bob = subscriber("bob", Likes(references=(bib("tts", title="Text-to-Speech Synthesis in the Wild"),)))
    cem = subscriber("cem", Likes(arxiv_ids=("2506.00019",)))
    await rig.refresh(ann, bob)

    together = liked_papers_of(rig.store, {s.name: s.likes for s in (ann, bob, cem)})

    assert together == {s.name: liked_papers(rig.store, s.likes) for s in (ann, bob, cem)}
    assert ids_of(together["ann"])[:2] == ["2506.01611", "2506.00422"], "each paper once, in the entries' order"
    assert len(together["ann"]) == 8 and ids_of(together["bob"]) == ["2409.08711"]
    assert together["cem"] == [], "never refreshed: nothing yet"


async def test_an_author_likes_their_newest_papers(rig):
    ann = subscriber("ann", Likes(authors=("Shinji Watanabe",)))
    await rig.refresh(ann)

    assert ids_of(liked_papers(rig.store, ann.likes))[:5] == WATANABE_NEWEST
    ids, fetched = rig.store.like_source("au:Shinji Watanabe")
    assert len(ids) == 8 and fetched == T0
    assert rig.api_requests() == 1, "the search answer describes the papers: no id_list after it"


async def test_bibtex_entries_resolve_by_arxiv_doi_in_the_id_batch_and_by_title(rig):
    references = (
        bib("watanabe25", doi="10.48550/arXiv.2506.00422", line=3),
        bib("tts", title="{T}ext-to-{S}peech Synthesis in the Wild", doi="10.1109/ICASSP.2025.1", line=9),
    )
    ann = subscriber("ann", Likes(arxiv_ids=("2506.01611",), references=references))

    report = await rig.refresh(ann)

    asked = [r.query for r in rig.server.requests_to("/api")]
    assert [q.get("id_list") for q in asked] == ["2506.01611,2506.00422", None]
    assert asked[1]["search_query"] == 'ti:"text to speech synthesis in the wild"'
    assert report.requests == 2
    assert ids_of(liked_papers(rig.store, ann.likes)) == ["2506.01611", "2506.00422", "2409.08711"]


async def test_titles_are_searched_ten_to_a_request(rig):
    titles = [p.title for p in sorted(rig.server.api_papers().values(), key=lambda p: p.arxiv_id)[:25]]
    references = tuple(bib(f"ref{n}", title=title.upper(), line=n) for n, title in enumerate(titles))
    ann = subscriber("ann", Likes(references=references))

    report = await rig.refresh(ann)

    searches = [r.query["search_query"] for r in rig.server.requests_to("/api")]
    assert [search.count(" OR ") + 1 for search in searches] == [10, 10, 5]
    assert report.requests == 3 and [p.title for p in liked_papers(rig.store, ann.likes)] == titles


async def test_a_title_crowded_out_of_a_shared_answer_is_asked_about_alone(rig):
    crowded = "Language Models"  # in the titles of some 200 papers, and the title of none
    rare = "IllumiCraft: Unified Geometry and Illumination Diffusion for Controllable Video Generation"
    ann = subscriber("ann", Likes(references=(bib("lm", title=crowded, line=1), bib("ic", title=rare, line=7))))

    report = await rig.refresh(ann)

    searches = [r.query["search_query"] for r in rig.server.requests_to("/api")]
    assert searches[0] == f'ti:"language models" OR ti:"{normalise_title(rare)}"'
    assert sorted(searches[1:]) == [
        'ti:"illumicraft unified geometry and illumination diffusion for controllable video generation"',
        'ti:"language models"',
    ]
    assert report.requests == 3
    assert [p.title for p in liked_papers(rig.store, ann.likes)] == [rare]


async def test_what_matched_nothing_is_logged_once_with_where_it_was_written(rig, caplog):
    caplog.set_level(logging.INFO)
    ann = subscriber(
        "ann",
        Likes(
            arxiv_ids=("2506.00422", "2401.99999"),
            authors=("Nobody Atall",),
            references=(
                bib("nope", title="Speech Synthesis in the Wild", line=12),
                bib("journal", doi="10.1145/3600006.3613139", line=20),
            ),
        ),
    )
    await rig.refresh(ann)

    assert sorted(likes_warnings(caplog)) == [
        "likes: lab.bib:12: no arXiv paper titled 'Speech Synthesis in the Wild'",
        "likes: lab.bib:20: journal has no arXiv id, arXiv DOI or title to look up",
        "likes: subscriber ann: like 2401.99999: no such arXiv paper",
        'likes: subscriber ann: like au:"Nobody Atall": no arXiv paper by them',
    ]
    assert ids_of(liked_papers(rig.store, ann.likes)) == ["2506.00422"]
    caplog.clear()
    await rig.refresh(ann, now=T0 + 8 * DAY)
    assert likes_warnings(caplog) == [], "asked again a week later, and still nothing: not logged again"


async def test_likes_are_asked_for_again_only_after_a_week(rig):
    ann = subscriber("ann", Likes(arxiv_ids=("2506.00422",), authors=("Shinji Watanabe",)))
    await rig.refresh(ann)
    assert rig.api_requests() == 2

    report = await rig.refresh(ann, now=T0 + 6 * DAY)
    assert rig.api_requests() == 2 and report.refreshed == 0
    assert report.sources == 2

    bob = subscriber("bob", Likes(arxiv_ids=("2506.00422", "2506.01611")))
    await rig.refresh(ann, bob, now=T0 + 6 * DAY)
    assert rig.server.requests_to("/api")[-1].query["id_list"] == "2506.01611", "only what is new is asked for"

    report = await rig.refresh(ann, bob, now=T0 + 8 * DAY)
    assert rig.api_requests() == 5 and (report.refreshed, report.requests) == (2, 2), "what ann named, 8 days on"
    assert [rig.store.like_source(s)[1] for s in ("au:Shinji Watanabe", "id:2506.00422", "id:2506.01611")] == [
        T0 + 8 * DAY,
        T0 + 8 * DAY,
        T0 + 6 * DAY,
    ]
    assert REFRESH_AFTER == 7 * DAY


async def test_a_failing_api_keeps_the_cached_likes_in_use(rig, caplog):
    ann = subscriber("ann", Likes(arxiv_ids=("2506.01611",), authors=("Shinji Watanabe",)))
    await rig.refresh(ann)
    before = liked_papers(rig.store, ann.likes)
    caplog.set_level(logging.INFO)
    rig.server.fail_next("/api", "500", count=2 * rig.gate.max_attempts)  # two requests, each tried to the end

    report = await rig.refresh(ann, now=T0 + 8 * DAY)

    assert (report.failed, report.refreshed, report.requests) == (2, 0, 2)
    failures = likes_warnings(caplog)
    assert len(failures) == 2, "one line per failed request"
    assert failures[0].startswith("likes: arXiv API lookup of id_list of 1 liked papers failed; the cached answer")
    assert 'the papers of au:"Shinji Watanabe"' in failures[1]
    assert liked_papers(rig.store, ann.likes) == before
    assert rig.store.like_source("au:Shinji Watanabe") is not None
    assert rig.store.like_source("au:Shinji Watanabe")[1] == T0, "still stale: asked again next time"

    report = await rig.refresh(ann, now=T0 + 8 * DAY)
    assert (report.failed, report.refreshed) == (0, 2)


async def test_a_failing_api_on_the_first_refresh_leaves_no_likes_yet_and_raises_nothing(rig):
    ann = subscriber("ann", Likes(arxiv_ids=("2506.01611",), references=(bib("tts", title="On-device Streaming"),)))
    rig.server.fail_next("/api", "500", count=2 * rig.gate.max_attempts)

    report = await rig.refresh(ann)

    assert report.failed == 2 and liked_papers(rig.store, ann.likes) == []
    assert rig.store.like_source("id:2506.01611") is None
