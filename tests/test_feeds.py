"""RSS parsing of the real fixtures, the XML screen, and conditional fetches from the local stand-in."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, date, datetime
from functools import cache

import pytest

from notifier.arxiv.rss import FEED_ITEM_CAP, ParsedFeed, fetch_feed, parse_feed, split_authors
from notifier.errors import FeedError, FeedHTTPError, FeedParseError
from tests.arxiv_server import BIG, BOMB, HTML_PAGE, MALFORMED, SMALL, fixtures_dir, stand_in_with_gate

FIXTURES = fixtures_dir()


@cache
def parsed(name: str, key: str) -> ParsedFeed:
    return parse_feed((FIXTURES / name).read_bytes(), key)


@pytest.mark.parametrize(
    ("name", "key", "counts"),
    [
        (f"rss-{BIG}-2025-06-03.DERIVED.xml", BIG, {"new": 658, "cross": 176, "replace": 547, "replace-cross": 125}),
        (f"rss-{SMALL}-2025-06-03.DERIVED.xml", SMALL, {"new": 53, "cross": 21, "replace": 24, "replace-cross": 10}),
        (f"rss-{BIG}-2025-06-04.DERIVED.xml", BIG, {"new": 381, "cross": 101, "replace": 307, "replace-cross": 62}),
        (f"rss-{SMALL}-2025-06-04.DERIVED.xml", SMALL, {"new": 36, "cross": 13, "replace": 6, "replace-cross": 4}),
        (
            "rdf-math-2012-09-12-legacy-rss1.0-lanl-mirror.xml",
            "math",
            {"new": 56, "replace": 45, "cross": 15, "replace-cross": 10},
        ),
    ],
)
def test_fixture_counts_match_their_provenance(name, key, counts):
    feed = parsed(name, key)
    assert Counter(p.announce_type for p in feed.papers) == counts
    assert feed.item_count == sum(counts.values()) == len(feed.papers)
    assert not feed.capped


def test_current_feed_fields():
    feed = parsed(f"rss-{SMALL}-2025-06-03.DERIVED.xml", SMALL)
    assert feed.pub_date == date(2025, 6, 3)
    assert feed.last_build_date == datetime(2025, 6, 3, 4, 13, tzinfo=UTC)
    paper = feed.papers[0]
    assert (paper.arxiv_id, paper.version, paper.announce_type) == ("2506.00003", 1, "new")
    assert paper.title == "Probing Audio-Generation Capabilities of Text-Based Language Models"
    assert paper.abstract.startswith("How does textual representation of audio relate")
    assert paper.authors[-1] == "Sean O'Brien" and len(paper.authors) == 6
    assert paper.announced == date(2025, 6, 3)
    assert paper.categories == ()  # the fixtures carry no <category>


def test_entities_are_decoded_exactly_once():
    papers = {p.arxiv_id: p for p in parsed(f"rss-{BIG}-2025-06-03.DERIVED.xml", BIG).papers}
    assert "Taiwan patent Q&A dataset" in papers["2506.00527"].abstract  # &amp;amp; on the wire
    assert "(<300M parameters)" in papers["2506.00200"].abstract
    assert "&amp;" not in "".join(p.title + p.abstract for p in papers.values())


def test_affiliations_with_commas_stay_with_their_author():
    papers = {p.arxiv_id: p for p in parsed(f"rss-{BIG}-2025-06-03.DERIVED.xml", BIG).papers}
    assert papers["2506.01396"].authors[-1] == (
        "Antti Honkela (Department of Computer Science, University of Helsinki, Finland)"
    )


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("A. One, B. Two and C. Three", ("A. One", "B. Two", "C. Three")),
        ("A. One, B. Two, and C. Three", ("A. One", "B. Two", "C. Three")),
        ("Solo Author", ("Solo Author",)),
        ("X (Lab of A and B), Y", ("X (Lab of A and B)", "Y")),
        ("", ()),
    ],
)
def test_split_authors(text, names):
    assert split_authors(text) == names


def test_versions_across_days_and_duplicates():
    day1 = {p.arxiv_id: p for p in parsed(f"rss-{BIG}-2025-06-03.DERIVED.xml", BIG).papers}
    day2 = {p.arxiv_id: p for p in parsed(f"rss-{BIG}-2025-06-04.DERIVED.xml", BIG).papers}
    assert (day1["2506.00859"].version, day1["2506.00859"].announce_type) == (1, "new")
    assert (day2["2506.00859"].version, day2["2506.00859"].announce_type) == (2, "replace")


def _item(guid: str, title: str) -> str:
    return (
        f"<item><title>{title}</title><description>arXiv:{guid} Announce Type: replace \nAbstract: text</description>"
        f'<guid isPermaLink="false">oai:arXiv.org:{guid}</guid><pubDate>Tue, 03 Jun 2025 00:00:00 -0400</pubDate>'
        "<dc:creator>A. Author and B. Author</dc:creator>"
        "<category>math.AG</category><category>math.NT</category></item>"
    )


def test_duplicates_keep_the_highest_version_and_old_style_ids_parse():
    body = (
        "<?xml version='1.0' encoding='UTF-8'?><rss version=\"2.0\" xmlns:dc=\"http://purl.org/dc/elements/1.1/\">"
        "<channel><title>math</title><pubDate>Tue, 03 Jun 2025 00:00:00 -0400</pubDate>"
        + _item("math/0601001v2", "Old v2")
        + _item("math/0601001v3", "Old v3")
        + _item("math/0601001v1", "Old v1")
        + "</channel></rss>"
    ).encode()
    feed = parse_feed(body, "math")
    assert feed.item_count == 3
    (paper,) = feed.papers
    assert (paper.arxiv_id, paper.version, paper.title) == ("math/0601001", 3, "Old v3")
    assert paper.announce_type == "replace"  # from the description when arxiv:announce_type is absent
    assert paper.categories == ("math.AG", "math.NT")
    assert paper.authors == ("A. Author", "B. Author")


@pytest.mark.slow
def test_capped_feed_is_flagged():
    items = "".join(_item(f"2506.{i:05d}v1", f"T{i}") for i in range(FEED_ITEM_CAP))
    body = (
        '<?xml version=\'1.0\'?><rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/"><channel>'
        f"<title>t</title>{items}</channel></rss>"
    ).encode()
    assert parse_feed(body, "cs.LG").capped


def test_empty_holiday_feed_is_valid():
    feed = parsed("rss-physics-2025-12-31-empty-holiday.RECONSTRUCTED.xml", "physics")
    assert (feed.papers, feed.item_count, feed.pub_date) == ([], 0, date(2025, 12, 31))


def test_legacy_rdf_fields():
    feed = parsed("rdf-math-2012-09-12-legacy-rss1.0-lanl-mirror.xml", "math")
    first = feed.papers[0]
    assert first.title == "On the first time that an Ito process hits a barrier"
    assert first.authors == ("Gerardo Hernandez-del-Valle",)
    assert first.categories == ("math.PR",)
    assert "<p>" not in first.abstract and first.abstract.startswith("This work deals")
    assert feed.pub_date == date(2012, 9, 12)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (BOMB, "DTD or entities"),
        (HTML_PAGE, "HTML page instead of a feed \\(503 Service Temporarily Unavailable\\)"),
        (b"<html><body>Oops</body></html>", "HTML page"),
        (MALFORMED, "malformed XML"),
        (b"", "empty body"),
        (b"<?xml version='1.0'?><note>hi</note>", "root element <note> is not"),
        (b"<?xml version='1.0'?><!DOCTYPE rss SYSTEM 'http://evil/x.dtd'><rss/>", "DTD"),
    ],
)
def test_untrusted_bodies_are_refused(body, message):
    started = time.monotonic()
    with pytest.raises(FeedParseError, match=message):
        parse_feed(body, "cs.LG")
    assert time.monotonic() - started < 1  # the bomb is never expanded


@pytest.fixture
async def gate_and_server():
    async with stand_in_with_gate(request_timeout=2.0) as pair:
        yield pair


async def test_conditional_get_and_day_rollover(gate_and_server):
    gate, server = gate_and_server
    first = await fetch_feed(gate, server.rss_base_url, ["eess.AS", "cs.SD"], None)
    assert (first.status, first.feed_key, first.item_count, first.pub_date) == (
        "ok",
        "cs.SD+eess.AS",
        108,
        date(2025, 6, 3),
    )
    assert first.etag
    again = await fetch_feed(gate, server.rss_base_url, ["eess.AS", "cs.SD"], first.etag)
    assert (again.status, again.papers, again.etag) == ("not_modified", [], first.etag)
    assert server.requests[-1].headers["If-None-Match"] == first.etag
    server.set_day("2025-06-04")
    later = await fetch_feed(gate, server.rss_base_url, ["cs.SD", "eess.AS"], first.etag)
    assert (later.status, later.item_count, later.pub_date) == ("ok", 59, date(2025, 6, 4))
    assert later.etag != first.etag
    server.set_day("2025-12-31")
    holiday = await fetch_feed(gate, server.rss_base_url, ["physics"], None)
    assert (holiday.status, holiday.item_count, holiday.pub_date) == ("ok", 0, date(2025, 12, 31))
    assert holiday.etag == server.requests[-1].headers.get("If-None-Match", holiday.etag)


@pytest.mark.slow
async def test_one_category_conditional_get_is_its_share_of_the_combined_feed(gate_and_server):
    gate, server = gate_and_server
    whole = await fetch_feed(gate, server.rss_base_url, BIG.split("+"), None)
    union: dict[tuple[str, int], str] = {}
    for category in BIG.split("+"):
        result = await fetch_feed(gate, server.rss_base_url, [category], None)
        assert (result.feed_key, result.pub_date) == (category, date(2025, 6, 3))
        assert 0 < result.item_count < whole.item_count
        again = await fetch_feed(gate, server.rss_base_url, [category], result.etag)
        assert again.status == "not_modified", "each category has its own ETag"
        for paper in result.papers:
            key = (paper.arxiv_id, paper.version)
            if union.get(key) not in ("new", "replace"):
                union[key] = paper.announce_type
    # The shares add up to the combined feed, each item announced with its own type in one of them.
    assert union == {(p.arxiv_id, p.version): p.announce_type for p in whole.papers}


async def test_holiday_day_serves_the_real_empty_feed_byte_for_byte(gate_and_server):
    _, server = gate_and_server
    real = (FIXTURES / "rss-physics-2025-12-31-empty-holiday.RECONSTRUCTED.xml").read_bytes()
    assert server.empty_feed("2025-12-31", "physics") == real


async def test_unknown_category_set_is_an_http_error(gate_and_server):
    gate, server = gate_and_server
    with pytest.raises(FeedHTTPError) as caught:
        await fetch_feed(gate, server.rss_base_url, ["q-bio.XX"], None)
    assert caught.value.status == 404


@pytest.mark.parametrize(
    ("mode", "error", "message"),
    [
        ("bomb", FeedParseError, "DTD or entities"),
        ("malformed", FeedParseError, "malformed XML"),
        ("html", FeedParseError, "HTML page"),
        ("huge", FeedParseError, "byte limit"),
        ("reset", FeedError, "connection to arXiv failed"),
        ("stall", FeedError, "did not answer"),
    ],
)
async def test_hostile_answers_fail_clearly_and_the_next_fetch_recovers(gate_and_server, mode, error, message):
    gate, server = gate_and_server
    gate.timeout = 0.5
    server.fail_next("/rss", mode, count=2)
    started = time.monotonic()
    with pytest.raises(error, match=message):
        await fetch_feed(gate, server.rss_base_url, SMALL.split("+"), None)
    assert time.monotonic() - started < 3
    server._faults.clear()
    recovered = await fetch_feed(gate, server.rss_base_url, SMALL.split("+"), None)
    assert recovered.item_count == 108


async def test_injected_empty_answer_is_zero_papers(gate_and_server):
    gate, server = gate_and_server
    server.fail_next("/rss", "empty")
    result = await fetch_feed(gate, server.rss_base_url, ["cs.SD", "eess.AS"], None)
    assert (result.status, result.papers, result.item_count) == ("ok", [], 0)


@pytest.mark.slow
async def test_big_combined_feed_over_http(gate_and_server):
    gate, server = gate_and_server
    result = await fetch_feed(gate, server.rss_base_url, BIG.split("+"), None)
    assert (result.item_count, len(result.papers), result.capped) == (1506, 1506, False)


LEGACY = FIXTURES / "rdf-math-2012-09-12-legacy-rss1.0-lanl-mirror.xml"


def legacy_feed_with_a_padded_title(padding: int) -> bytes:
    """The legacy fixture with ``padding`` spaces inside its first title, as a hostile mirror could send it."""
    body = LEGACY.read_bytes()
    return body.replace(b"On the first time that", b"On the first time" + b" " * padding + b"that", 1)


@pytest.mark.parametrize("padding", [88_000, 1_000_000], ids=["88KB", "1MB"])
def test_a_huge_legacy_title_still_gives_the_paper(padding):
    feed = parse_feed(legacy_feed_with_a_padded_title(padding), "math")
    first = feed.papers[0]
    assert (first.arxiv_id, first.version, first.categories) == ("1209.2411", 1, ("math.PR",))
    assert first.title == "On the first time that an Ito process hits a barrier"
    assert len(feed.papers) == len(parsed(LEGACY.name, "math").papers)


def test_reading_a_legacy_title_grows_linearly_with_its_length():
    def seconds(padding: int) -> float:
        body = legacy_feed_with_a_padded_title(padding)
        runs = []
        for _ in range(3):
            started = time.perf_counter()
            parse_feed(body, "math")
            runs.append(time.perf_counter() - started)
        return min(runs)

    # Ten times the title costs ten times the title's share at most; a quadratic reading costs a hundred times.
    assert seconds(200_000) < 20 * seconds(20_000)


def test_a_legacy_title_keeps_an_earlier_arxiv_mention_in_the_title():
    body = LEGACY.read_bytes().replace(
        b"On the first time that", b"Comment on (arXiv:1101.0001v2 [math.CA]): the first time that", 1
    )
    first = parse_feed(body, "math").papers[0]
    assert first.arxiv_id == "1209.2411"
    assert first.title == "Comment on (arXiv:1101.0001v2 [math.CA]): the first time that an Ito process hits a barrier"
