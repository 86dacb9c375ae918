"""Export API: Atom parsing of the recorded answers, id_list enrichment and category listings via the stand-in."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import aiohttp
import pytest

from notifier.arxiv.api import enrich, fetch_listing, fetch_metadata, parse_atom, repair_mojibake
from notifier.errors import FeedHTTPError, FeedParseError
from notifier.models import Paper
from tests.arxiv_server import BOMB, fixtures_dir, stand_in_with_gate

FIXTURES = fixtures_dir()


def cassette(name: str) -> tuple[int, bytes]:
    data = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    return data["status_code"], data["body"].encode()


def test_current_search_answer():
    page = parse_atom((FIXTURES / "api-atom-2026-04-12-search_testing-10entries.body.xml").read_bytes())
    assert (page.total_results, page.start_index, page.items_per_page, len(page.entries)) == (214881, 0, 10, 10)
    first = page.entries[0]
    assert (first.arxiv_id, first.version) == ("2202.12139", 1)
    assert first.categories == ("cs.SE", "cs.LG") and first.primary_category == "cs.SE"
    assert first.doi == "10.1109/ICSTW55395.2022.00035"
    assert first.comment == "Artificial Intelligence in Software Testing 2022 workshop @ ICST 2022"
    assert first.journal_ref is not None and first.journal_ref.startswith("Artificial Intelligence in Software")
    assert first.published == datetime(2022, 2, 24, 15, 5, 19, tzinfo=UTC)
    names = [a for e in page.entries for a in e.authors]
    assert "Aurora Ramírez" in names and "José Raúl Romero" in names  # repaired mojibake


def test_34_authors_with_mojibake_repaired():
    (entry,) = parse_atom(cassette("api-atom-2026-04-12-id_1707.08567-34authors-mojibake.cassette.json")[1]).entries
    assert entry.arxiv_id == "1707.08567" and len(entry.authors) == 34
    assert "Dirk Wübben" in entry.authors
    assert entry.categories[0] == "cs.IT"


def with_affiliations(body: str, places: dict[str, str]) -> bytes:
    """``body`` with ``arxiv:affiliation`` elements after the named authors' names, as the API writes them."""
    for name, elements in places.items():
        body = body.replace(f"<name>{name}</name>", f"<name>{name}</name>\n      {elements}", 1)
    return body.encode()


def test_affiliations_are_each_authors_in_author_order_once_as_display_text():
    body = (FIXTURES / "api-atom-2026-04-12-search_testing-10entries.body.xml").read_text(encoding="utf-8")
    page = parse_atom(
        with_affiliations(
            body,
            {
                "Mohit Kumar Ahuja": "<arxiv:affiliation>Simula Research Laboratory</arxiv:affiliation>",
                "Arnaud Gotlieb": "<arxiv:affiliation>  Simula Research\n        Laboratory </arxiv:affiliation>\n"
                "      <arxiv:affiliation>Universit&#233; de Rennes &amp; Inria</arxiv:affiliation>",
                "Helge Spieker": '<arxiv:affiliation xmlns:arxiv="http://arxiv.org/schemas/atom">'
                "University of Oslo</arxiv:affiliation>\n      <arxiv:affiliation>UniversitÃ© de Rennes &amp; Inria"
                "</arxiv:affiliation>\n      <arxiv:affiliation> </arxiv:affiliation>",
            },
        )
    )
    first, *others = page.entries
    assert first.authors == ("Mohit Kumar Ahuja", "Arnaud Gotlieb", "Helge Spieker")
    assert first.affiliations == ("Simula Research Laboratory", "Université de Rennes & Inria", "University of Oslo")
    assert all(entry.affiliations == () for entry in others), "authors without any have none"


def test_recorded_answers_name_no_affiliations():
    (entry,) = parse_atom(cassette("api-atom-2026-04-12-id_1707.08567-34authors-mojibake.cassette.json")[1]).entries
    assert entry.affiliations == ()
    legacy = parse_atom((FIXTURES / "api-atom-legacy-2016-10-09-search_au_del_maestro-10entries.xml").read_bytes())
    assert all(e.affiliations == () for e in legacy.entries)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Dirk WÃ¼bben", "Dirk Wübben"),
        ("Dirk Wübben", "Dirk Wübben"),  # already right: untouched
        ("Ã alone", "Ã alone"),  # not a UTF-8 sequence: untouched
        ("WÃ¼bben and 東京", "WÃ¼bben and 東京"),  # does not round-trip through Latin-1: untouched
        ("plain", "plain"),
    ],
)
def test_repair_mojibake_only_when_it_round_trips(text, expected):
    assert repair_mojibake(text) == expected


def test_legacy_entries_with_comment_journal_ref_doi_and_folded_title():
    (entry,) = parse_atom(
        (FIXTURES / "api-atom-legacy-2016-10-09-checkerboard-doi-jref-foldedtitle.xml").read_bytes()
    ).entries
    assert entry.arxiv_id == "cond-mat/0603029" and entry.version == 1
    assert entry.title == "From stripe to checkerboard order on the square lattice in the presence of quenched disorder"
    assert entry.abstract.startswith("We discuss the effects of quenched disorder")
    assert entry.categories == ("cond-mat.str-el", "cond-mat.supr-con")
    assert (entry.doi, entry.journal_ref) == ("10.1103/PhysRevB.74.024520", "Phys. Rev. B 74, 024520 (2006)")
    assert entry.comment == "10 pages, 11 figures; added reference"
    page = parse_atom((FIXTURES / "api-atom-legacy-2016-10-09-search_au_del_maestro-10entries.xml").read_bytes())
    assert (page.total_results, len(page.entries)) == (31, 10)
    assert all("\n" not in e.title and not e.abstract.startswith(" ") for e in page.entries)


def test_error_entry_raises_with_arxivs_words():
    status, body = cassette("api-atom-2026-04-12-id_abc-http400-error.cassette.json")
    with pytest.raises(FeedHTTPError, match="incorrect id format for abc") as caught:
        parse_atom(body, status=status)
    assert caught.value.status == 400


def test_zero_results():
    page = parse_atom(cassette("api-atom-2026-04-12-id_0000.0000-zero-results.cassette.json")[1])
    assert (page.total_results, page.entries) == (0, [])


def test_hostile_atom_is_refused():
    with pytest.raises(FeedParseError, match="DTD"):
        parse_atom(BOMB)
    with pytest.raises(FeedParseError, match="expected an Atom feed"):
        parse_atom((FIXTURES / "rss-physics-2025-12-31-empty-holiday.RECONSTRUCTED.xml").read_bytes())


def test_enrich_adds_what_the_feed_lacks():
    paper = Paper(arxiv_id="2202.12139", version=1, title="t", abstract="a", authors=("x",))
    (entry,) = parse_atom((FIXTURES / "api-atom-2026-04-12-search_testing-10entries.body.xml").read_bytes()).entries[:1]
    enriched = enrich(paper, entry)
    assert enriched.comment == entry.comment and enriched.journal_ref == entry.journal_ref
    assert enriched.categories == ("cs.SE", "cs.LG") and enriched.title == "t"


@pytest.fixture
async def api():
    async with stand_in_with_gate(request_timeout=5.0) as pair:
        yield pair


async def test_metadata_in_batches_of_100(api):
    gate, server = api
    ids = [p.arxiv_id for p in list(server.api_papers().values())[:150]]
    found = await fetch_metadata(gate, server.api_url, [*ids, ids[0] + "v1", "2506.99999"])
    assert set(found) == set(ids)
    lookups = [r.query["id_list"].split(",") for r in server.requests]
    assert [len(batch) for batch in lookups] == [100, 51]
    gaps = [b.at - a.at for a, b in zip(server.requests, server.requests[1:], strict=False)]
    assert min(gaps) >= 0.05 - 0.01


async def test_metadata_recorded_answers(api):
    gate, server = api
    found = await fetch_metadata(gate, server.api_url, ["1707.08567"])
    assert "Dirk Wübben" in found["1707.08567"].authors
    assert await fetch_metadata(gate, server.api_url, ["0000.0000"]) == {}
    with pytest.raises(FeedHTTPError, match="incorrect id format for abc") as caught:
        await fetch_metadata(gate, server.api_url, ["abc"])
    assert caught.value.status == 400
    assert await fetch_metadata(gate, server.api_url, []) == {}


async def test_the_stand_in_serves_the_affiliations_it_is_given(api):
    gate, server = api
    first, second, third = list(server.api_papers())[:3]
    authors = server.api_papers()[first].authors
    assert len(authors) >= 2
    server.set_affiliations(first, [["Inria", "ENS Paris"], "Inria", []])
    async with (  # as a test drives the stand-in run as a process
        aiohttp.ClientSession() as session,
        session.post(f"{server.url}/_control/affiliations", params={"id": second}, json=["MIT CSAIL"]) as response,
    ):
        assert response.status == 200
    found = await fetch_metadata(gate, server.api_url, [first, second, third])
    assert found[first].affiliations == ("Inria", "ENS Paris")
    assert len(found[first].authors) == len(authors), "the authors are as before"
    assert found[second].affiliations == ("MIT CSAIL",)
    assert found[third].affiliations == ()


async def test_listing_pages_and_marks_backfilled(api):
    gate, server = api
    start = datetime(2025, 5, 30, 0, 0, tzinfo=UTC)
    end = datetime(2025, 6, 2, 18, 0, tzinfo=UTC)
    papers = await fetch_listing(gate, server.api_url, "cs.SD", start, end, page_size=25)
    expected = [p for p in server.api_papers().values() if "cs.SD" in p.categories and start <= p.published <= end]
    assert len(papers) == len(expected) > 25
    assert len(server.requests) == -(-len(expected) // 25)
    assert all(p.backfilled and p.version == 1 for p in papers)
    by_id = {p.arxiv_id: p for p in expected}
    for paper in papers:
        assert paper.announce_type == ("new" if by_id[paper.arxiv_id].categories[0] == "cs.SD" else "cross")
    assert {p.announce_type for p in papers} == {"new", "cross"}
    query = server.requests[0].query
    assert query["search_query"] == "cat:cs.SD AND submittedDate:[202505300000 TO 202506021800]"
    assert query["sortBy"] == "submittedDate"


async def test_listing_respects_max_results_and_needs_aware_datetimes(api):
    gate, server = api
    start, end = datetime(2025, 5, 1, tzinfo=UTC), datetime(2025, 6, 4, tzinfo=UTC)
    papers = await fetch_listing(gate, server.api_url, "cs", start, end, page_size=40, max_results=100)
    assert len(papers) == 100 and len(server.requests) == 3
    with pytest.raises(ValueError, match="aware"):
        await fetch_listing(gate, server.api_url, "cs", datetime(2025, 5, 1), end)


async def test_api_answers_retry_after_429(api):
    gate, server = api
    server.fail_next("/api", "429", retry_after=0.3)
    found = await fetch_metadata(gate, server.api_url, ["1707.08567"])
    assert found and server.requests[1].at - server.requests[0].at >= 0.3 - 0.01
    assert date(2017, 7, 27) == found["1707.08567"].published.date()  # type: ignore[union-attr]
