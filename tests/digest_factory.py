"""Realistic digests for tests, built from the real arXiv fixture papers in ``../shared/fixtures/arxiv``.

Hits are found by a plain case-insensitive search for each rule's terms, so these digests do not depend on the
matching engine. A few synthetic hostile papers (markup, line breaks, Slack mentions, double-escaped entities)
can be mixed in to test escaping.

    papers = load_papers()                              # 108 real cs.SD+eess.AS papers of Tue 3 Jun 2025
    digest = build_digest(papers, {"speech enhancement": ['"speech enhancement"']})
    golden_digest(), weekly_digest(), large_digest(300), empty_digest("nothing matched your rules")

Rich digests carry LLM summaries. :func:`fake_summary` writes one from the paper itself (its abstract's first
sentences, words of its title as keywords), deterministic and plausible, as the summarizer would store it:

    rich_weekly_digest(), large_rich_weekly_digest(), with_summaries(digest, ...), hostile_summary(paper)

Ranked digests carry similarities. :func:`fake_similarity` scores a paper against a few real papers of the next day
that play the subscriber's own ("liked") papers, by the words they share; the scores are test data, not a model's:

    similar_digest(), with_similarities(digest, rules=...), liked_papers()
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from functools import cache
from pathlib import Path

from notifier.arxiv.display import clean_display
from notifier.models import Digest, DigestSection, Field, Hit, Match, Paper, Similarity, Summary

SHARED = Path(__file__).resolve().parents[2] / "shared"
FIXTURES = SHARED / "fixtures" / "arxiv"
SD_0603 = FIXTURES / "rss-cs.SD+eess.AS-2025-06-03.DERIVED.xml"
SD_0604 = FIXTURES / "rss-cs.SD+eess.AS-2025-06-04.DERIVED.xml"
BIG_0603 = FIXTURES / "rss-cs.CL+cs.CV+cs.MM+cs.LG+cs.SI-2025-06-03.DERIVED.xml"
BIG_0604 = FIXTURES / "rss-cs.CL+cs.CV+cs.MM+cs.LG+cs.SI-2025-06-04.DERIVED.xml"

EASTERN = timezone(timedelta(hours=-4))  # EDT, the zone of arXiv's announcement days in June
_NS = {"arxiv": "http://arxiv.org/schemas/atom", "dc": "http://purl.org/dc/elements/1.1/"}
_DESCRIPTION = re.compile(
    r"arXiv:(?P<id>\S+?)v(?P<version>\d+) Announce Type: (?P<type>\S+)\s*Abstract:(?P<abs>.*)", re.S
)

# rule name -> terms as written in the query; the query is the terms joined with OR.
Rules = Mapping[str, Sequence[str]]

GOLDEN_RULES: dict[str, list[str]] = {
    "speech enhancement": ['"speech enhancement"'],
    "voice conversion": ['"voice conversion"', 'ti:"zero-shot"'],
    "music": ["music"],
    "safety": ['"<script>"', '"<!channel>"', '"@here"'],
}


@cache
def load_papers(path: Path = SD_0603) -> tuple[Paper, ...]:
    """The papers of one DERIVED RSS fixture, as the feed stage would produce them (display text)."""
    root = ET.parse(path).getroot()
    papers = []
    for item in root.iter("item"):
        found = _DESCRIPTION.match(item.findtext("description") or "")
        if found is None:
            continue
        creators = clean_display(item.findtext("dc:creator", namespaces=_NS))
        announced = parsedate_to_datetime(item.findtext("pubDate") or "").date()
        papers.append(
            Paper(
                arxiv_id=found["id"],
                version=int(found["version"]),
                title=clean_display(item.findtext("title")),
                abstract=clean_display(found["abs"]),
                authors=tuple(a.strip() for a in creators.split(",") if a.strip()),
                announce_type=item.findtext("arxiv:announce_type", namespaces=_NS) or "new",
                announced=announced,
            )
        )
    return tuple(papers)


def _bare(term: str) -> tuple[set[Field] | None, str]:
    fields = {"ti": {Field.TITLE}, "abs": {Field.ABSTRACT}, "au": {Field.AUTHORS}, "co": {Field.COMMENT}}
    prefix, sep, rest = term.partition(":")
    scope = fields.get(prefix) if sep else None
    text = rest if scope else term
    return scope, text.strip('"')


def find_hits(paper: Paper, terms: Iterable[str]) -> tuple[Hit, ...]:
    """Every case-insensitive occurrence of each term (``ti:``/``abs:``/``au:``/``co:`` limit the field)."""
    hits: list[Hit] = []
    for term in terms:
        scope, needle = _bare(term)
        pattern = re.compile(re.escape(needle), re.IGNORECASE)
        texts: list[tuple[Field, int, str]] = [
            (Field.TITLE, 0, paper.title),
            (Field.ABSTRACT, 0, paper.abstract),
            (Field.COMMENT, 0, paper.comment or ""),
        ]
        texts += [(Field.AUTHORS, i, name) for i, name in enumerate(paper.authors)]
        texts += [(Field.CATEGORIES, i, cat) for i, cat in enumerate(paper.categories)]
        for field, index, text in texts:
            if scope is None or field in scope:
                hits += [Hit(term, field, m.start(), m.end(), index) for m in pattern.finditer(text)]
    return tuple(hits)


def build_digest(
    papers: Iterable[Paper],
    rules: Rules,
    *,
    subscriber: str = "Ada Lovelace",
    period_end: datetime = datetime(2025, 6, 3, 20, 0, tzinfo=EASTERN),
    days: int = 1,
    kind: str = "daily",
    limit: int | None = None,
    config_path: str = "subscribers.yaml",
) -> Digest:
    """One section per rule with the papers whose text contains one of its terms (at most ``limit`` each)."""
    papers = tuple(papers)
    sections = []
    for rule, terms in rules.items():
        matches = [Match(p, rule, hits) for p in papers if (hits := find_hits(p, terms))]
        sections.append(DigestSection(rule, " OR ".join(terms), tuple(matches[:limit])))
    return Digest(
        subscriber=subscriber,
        period_start=period_end - timedelta(days=days),
        period_end=period_end,
        sections=tuple(sections),
        kind=kind,
        config_path=config_path,
    )


def hostile_papers(day: date = date(2025, 6, 3)) -> tuple[Paper, ...]:
    """Synthetic papers whose text tries to break out of its place in a message."""
    return (
        Paper(
            arxiv_id="2506.99901",
            version=2,
            title="<script>alert(1)</script> Speech Enhancement\r\nBcc: victim@example.org",
            abstract="We test <b>markup</b> &amp;amp; entities. " * 3 + "A speech enhancement model. " * 30,
            authors=("Mallory <mallory@example.org>", *(f"Author {i}" for i in range(1, 34))),
            categories=("cs.SD", "eess.AS", "cs.CR"),
            announce_type="replace-cross",
            announced=day,
            comment="Accepted at <i>Interspeech</i> 2025; code at https://example.org/" + "x" * 120,
            journal_ref="J. Audio Eng. Soc. 73 (2025) 1-12",
            backfilled=True,
        ),
        Paper(
            arxiv_id="2506.99902",
            version=1,
            title="Ping <!channel> and @here: *bold* _italic_ ~strike~ `code` & Tom &amp;amp; Jerry <3",
            abstract=(
                "Hello <!channel> <!here> @here <@U123ABC> <https://evil.example|click me> and a "
                "long token " + "Supercalifragilistic" * 8 + " in a paper about music. "
                "Entities: &amp;amp; &lt;script&gt; *not bold* _not italic_."
            ),
            authors=("Eve <!everyone>", "*Star* Author"),
            categories=("cs.SD",),
            announced=day,
        ),
    )


def golden_digest() -> Digest:
    """The fixed digest of the golden files: real papers of Tue 3 Jun 2025, some enriched, plus hostile ones."""
    papers = list(load_papers(SD_0603))
    # Metadata that API enrichment adds (illustrative values, the fixtures do not carry them).
    papers[0] = replace(papers[0], categories=("cs.SD", "cs.AI", "eess.AS"), comment="Accepted at Interspeech 2025")
    return build_digest(hostile_papers() + tuple(papers), GOLDEN_RULES, limit=4)


def weekly_digest() -> Digest:
    """Two real announcement days (Tue 3 and Wed 4 Jun 2025) as a weekly digest."""
    papers = load_papers(SD_0603) + load_papers(SD_0604)
    rules = {"speech enhancement": ['"speech enhancement"'], "voice conversion": ['"voice conversion"']}
    end = datetime(2025, 6, 8, 20, 0, tzinfo=EASTERN)
    return build_digest(papers, rules, kind="weekly", period_end=end, days=6)


LARGE_RULES: dict[str, list[str]] = {
    "language models": ['"language model"'],
    "diffusion": ["diffusion"],
    "reinforcement learning": ['"reinforcement learning"'],
    "benchmarks": ["benchmark"],
    "learning": ["learning"],
}


def large_digest(count: int = 300) -> Digest:
    """``count`` distinct real papers of the big 3 Jun 2025 feed, under broad rules that overlap."""
    chosen = [p for p in load_papers(BIG_0603) if any(find_hits(p, terms) for terms in LARGE_RULES.values())]
    assert len(chosen) >= count, len(chosen)
    return build_digest(chosen[:count], LARGE_RULES)


def empty_digest(reason: str = "arXiv did not announce on Wed 31 Dec (holiday)") -> Digest:
    end = datetime(2025, 12, 31, 20, 0, tzinfo=EASTERN)
    return replace(build_digest((), GOLDEN_RULES, period_end=end), empty_reason=reason)


# Rich digests: LLM summaries


_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_TOPICS = {"cs.SD": "audio", "eess.AS": "speech", "cs.CL": "nlp", "cs.CV": "vision", "cs.LG": "machine learning"}
_SUBTOPICS = ("speech enhancement", "voice conversion", "music", "speech recognition", "language model", "diffusion")
_STOPWORDS = frozenset("about across based between through towards toward using their these those without".split())


def fake_summary(paper: Paper, institution: str | None = None, chars: int = 420) -> Summary:
    """A summary of ``paper`` as the summarizer would store it, made from the paper itself: its abstract's first
    last sentences (at most about ``chars`` characters), a topic from its primary category, a subtopic from its title,
    and up to four long words of its title as keywords."""
    sentences = _SENTENCE.split(paper.abstract)
    text = sentences[-1]
    for sentence in reversed(sentences[:-1]):
        if len(text) + 1 + len(sentence) > chars:
            break
        text = sentence + " " + text
    title = paper.title.lower()
    words = [w.strip(":,.;()") for w in title.split()]
    keywords = tuple(dict.fromkeys(w for w in words if len(w) >= 7 and w not in _STOPWORDS))[:4]
    return Summary(
        arxiv_id=paper.arxiv_id,
        version=paper.version,
        summary=text[:chars],
        topic=_TOPICS.get(paper.primary_category or "", "audio"),
        subtopic=next((s for s in _SUBTOPICS if s in title or s in paper.abstract.lower()), "others"),
        keywords=keywords,
        institution=institution,
        model="fake-llm-1",
    )


def hostile_summary(paper: Paper) -> Summary:
    """A summary whose every field tries to break out of its place: markup, Slack mentions, links, line breaks."""
    return Summary(
        arxiv_id=paper.arxiv_id,
        version=paper.version,
        summary="<script>alert(1)</script><img src=x onerror=alert(2)> <!channel> @here <@U123>\r\nBcc: x@example.org",
        topic="<b>x</b>",
        subtopic="*bold* _it_ `code`",
        keywords=('<a href="javascript:alert(3)">k</a>', "<https://evil.example|click>"),
        institution="<i>Evil</i> University\r\nSubject: hi",
        model="fake-llm-1",
    )


def with_summaries(
    digest: Digest,
    rich: Iterable[str],
    *,
    without: Iterable[str] = (),
    institutions: Mapping[str, str] | None = None,
) -> Digest:
    """``digest`` with the rules ``rich`` marked rich and a :func:`fake_summary` for each of their papers, but for
    the papers ``without`` (by arXiv id: not made in time); ``institutions`` gives some papers an institution."""
    rich, without, institutions = set(rich), set(without), institutions or {}
    sections = tuple(replace(section, rich=section.rule in rich) for section in digest.sections)
    summaries = {
        (m.paper.arxiv_id, m.paper.version): fake_summary(m.paper, institutions.get(m.paper.arxiv_id))
        for section in sections
        if section.rich
        for m in section.matches
        if m.paper.arxiv_id not in without
    }
    return replace(digest, sections=sections, summaries=summaries)


def _with_categories(paper: Paper, feed: tuple[str, str]) -> Paper:
    """``paper`` with a primary category of its feed (the fixtures' items carry none), chosen by its id."""
    first, second = feed if int(paper.arxiv_id[-1]) % 2 == 0 else feed[::-1]
    return replace(paper, categories=(first, second))


RICH_RULES: dict[str, list[str]] = {
    "speech enhancement": ['"speech enhancement"', '"denoising"'],
    "music": ["music"],
    "voice conversion": ['"voice conversion"'],
}


def rich_weekly_digest() -> Digest:
    """A weekly digest in the shape of the one people read today: three announcement days of real papers (the
    first half of 3 Jun's cs.SD+eess.AS papers moved to Mon 2 Jun), per-day category and rule counts, the rule
    "speech enhancement" rich with summaries (two papers without one, one with an institution), the others one line
    per paper."""
    first = load_papers(SD_0603)
    moved = tuple(replace(p, announced=date(2025, 6, 2)) if i < 54 else p for i, p in enumerate(first))
    papers = tuple(_with_categories(p, ("cs.SD", "eess.AS")) for p in moved + load_papers(SD_0604))
    end = datetime(2025, 6, 8, 20, 0, tzinfo=EASTERN)
    digest = build_digest(papers, RICH_RULES, kind="weekly", period_end=end, days=7)
    rich = [m.paper.arxiv_id for m in digest.sections[0].matches]
    return with_summaries(
        digest,
        ["speech enhancement"],
        without=(rich[1], rich[-1]),
        institutions={rich[0]: "University of Edinburgh, Centre for Speech Technology Research"},
    )


def large_rich_weekly_digest(rich_papers: int = 70) -> Digest:
    """A large weekly digest of the big 3 and 4 Jun 2025 feeds spread over five days: the rule "language models"
    rich, with summaries for its first ``rich_papers`` papers, and "reinforcement learning" one line per paper."""
    days = [date(2025, 6, d) for d in (2, 3, 4, 5, 6)]
    papers = tuple(
        _with_categories(replace(p, announced=days[i % 5]), ("cs.CL", "cs.LG"))
        for i, p in enumerate(load_papers(BIG_0603) + load_papers(BIG_0604))
    )
    rules = {"language models": ['"language model"'], "reinforcement learning": ['"reinforcement learning"']}
    end = datetime(2025, 6, 8, 20, 0, tzinfo=EASTERN)
    digest = build_digest(papers, rules, kind="weekly", period_end=end, days=7)
    rich = digest.sections[0]
    digest = replace(digest, sections=(replace(rich, matches=rich.matches[:rich_papers]), *digest.sections[1:]))
    return with_summaries(digest, ["language models"])


# Ranked digests: similarity to the subscriber's papers

# Papers of Wed 4 Jun 2025 that the subscriber of a ranked digest likes (speech emotion, recognition, lyrics).
LIKED_IDS = ("2506.02059", "2506.02088", "2506.02178", "2506.02339", "2506.02742")
_WORD = re.compile(r"[a-z][a-z-]{3,}")


def liked_papers() -> tuple[Paper, ...]:
    by_id = {paper.arxiv_id: paper for paper in load_papers(SD_0604)}
    return tuple(by_id[arxiv_id] for arxiv_id in LIKED_IDS)


def _words(paper: Paper) -> frozenset[str]:
    return frozenset(_WORD.findall(f"{paper.title} {paper.abstract}".lower())) - _STOPWORDS


def fake_similarity(paper: Paper, liked: Sequence[Paper] | None = None) -> Similarity:
    """How much ``paper`` looks like the nearest of ``liked`` (by default :func:`liked_papers`): the cosine of their
    sets of words, rounded to two decimals; deterministic and plausible, not what the ranking stage computes."""
    words = _words(paper)

    def cosine(other: Paper) -> float:
        theirs = _words(other)
        return len(words & theirs) / ((len(words) * len(theirs)) ** 0.5 or 1.0)

    nearest = max(liked if liked is not None else liked_papers(), key=cosine)
    return Similarity(round(cosine(nearest), 2), nearest.arxiv_id, nearest.title)


def with_similarities(digest: Digest, rules: Iterable[str] | None = None) -> Digest:
    """``digest`` with a :func:`fake_similarity` on every match of ``rules`` (by default all), each of those
    sections ordered by score, best first, as a subscriber who sorts by relevance gets them."""
    chosen = None if rules is None else set(rules)
    sections = []
    for section in digest.sections:
        if chosen is None or section.rule in chosen:
            ranked = [replace(m, similarity=fake_similarity(m.paper)) for m in section.matches]
            ranked.sort(key=lambda m: -m.similarity.score if m.similarity else 0.0)
            section = replace(section, matches=tuple(ranked))
        sections.append(section)
    return replace(digest, sections=tuple(sections))


SIMILAR_RULE = "like my work"


def similar_digest(top: int = 4) -> Digest:
    """The daily digest of a subscriber with a similar-only rule (its ``top`` papers most like the liked ones among
    all of Tue 3 Jun 2025, no query), a rule that ranks keyword matches ("speech enhancement" with ``similar``) and
    a keyword rule ("music")."""
    papers = load_papers(SD_0603)
    base = build_digest(papers, {"speech enhancement": ['"speech enhancement"'], "music": ["music"]}, limit=4)
    scored = sorted((Match(p, SIMILAR_RULE, (), fake_similarity(p)) for p in papers), key=_by_score)
    similar = DigestSection(SIMILAR_RULE, "", tuple(scored[:top]))
    return with_similarities(replace(base, sections=(similar, *base.sections)), ["speech enhancement"])


def _by_score(match: Match) -> tuple[float, str]:
    return (-match.similarity.score if match.similarity else 0.0, match.paper.arxiv_id)
