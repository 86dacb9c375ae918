"""What a digest shows of a paper, whatever the channel: highlighted spans, shortened text and labels.

Everything here is pure and works on the display text of :class:`~notifier.models.Paper` and the
:class:`~notifier.models.Hit` spans that matching reported into it.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date

from notifier.models import Digest, DigestSection, FeedbackUrls, Field, Hit, Match, Paper, Similarity, Summary

ELLIPSIS = "…"
MAX_AUTHORS = 6
LIKED_TITLE_CHARS = 200
# What a section header says instead of, or after, its query when its papers are ranked by similarity.
SIMILAR_ONLY = "most like your papers"
RANKED = "ranked by similarity to your papers"

_FIELD_PREFIX = re.compile(r"^(?:ti|abs|au|cat|co|all):", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]")  # control characters and line breaks
_SPACES = re.compile(r"\s+")
_SURROGATE = re.compile("[\ud800-\udfff]")
_ARXIV_ID = re.compile(r"\d{4}\.\d{4,5}|[a-z][a-z-]*(?:\.[A-Z]{2})?/\d{7}")  # new style, or old (math/0601001)

FIELD_LABELS = {
    Field.TITLE: "title",
    Field.ABSTRACT: "abstract",
    Field.AUTHORS: "authors",
    Field.CATEGORIES: "categories",
    Field.COMMENT: "comment",
}


@dataclass(frozen=True, slots=True)
class Segment:
    """A run of display text, highlighted when a query term matched it."""

    text: str
    hit: bool = False


Segments = tuple[Segment, ...]


def valid_unicode(text: str) -> str:
    """``text`` with each lone surrogate (which no encoding can carry; YAML escapes can make one) as U+FFFD."""
    try:
        text.encode("utf-8")  # much faster than searching, and only a surrogate makes it fail
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)
    return text


def utf8(text: str) -> tuple[str, bytes]:
    """``text`` as :func:`valid_unicode` makes it, and in UTF-8 (encoded once when it holds no lone surrogate)."""
    try:
        return text, text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: rare, so looked for only then
        text = valid_unicode(text)
        return text, text.encode("utf-8")


def one_line(text: str) -> str:
    """``text`` with control characters and line breaks replaced, whitespace runs collapsed to one space."""
    if text.isprintable() and "  " not in text and text[:1] != " " and text[-1:] != " ":
        return text  # printable text has no white space but the ASCII space: it is one line already
    return _SPACES.sub(" ", blank_controls(text)).strip()


def blank_controls(text: str) -> str:
    """``text`` with each control character and line break as a space: as long as it was, so spans still fit."""
    return _CONTROL.sub(" ", text)


def plain(segments: Iterable[Segment]) -> str:
    return "".join(segment.text for segment in segments)


def spans_for(text: str, hits: Iterable[Hit], field: Field, index: int | None = None) -> list[tuple[int, int]]:
    """Sorted, merged ``(start, end)`` spans of ``hits`` on ``field`` (and tuple position ``index``) within ``text``.

    A span that starts or ends inside a word is widened to the whole word ("model" in "models" marks "models").
    """
    raw = sorted(
        _whole_words(text, max(0, hit.start), min(len(text), hit.end))
        for hit in hits
        if hit.field == field and (index is None or hit.index == index)
    )
    merged: list[tuple[int, int]] = []
    for start, end in raw:
        if end <= start:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _whole_words(text: str, start: int, end: int) -> tuple[int, int]:
    if end <= start:
        return start, end
    while start > 0 and text[start - 1].isalnum() and text[start].isalnum():
        start -= 1
    while end < len(text) and text[end].isalnum() and text[end - 1].isalnum():
        end += 1
    return start, end


def segments(text: str, spans: Sequence[tuple[int, int]], start: int = 0, end: int | None = None) -> Segments:
    """Split ``text[start:end]`` into plain and highlighted segments."""
    stop = len(text) if end is None else end
    if not text.isprintable():
        text = blank_controls(text)
    out: list[Segment] = []
    pos = start
    for span_start, span_end in spans:
        if span_end <= pos or span_start >= stop:
            continue
        span_start, span_end = max(span_start, pos), min(span_end, stop)
        if span_start > pos:
            out.append(Segment(text[pos:span_start]))
        out.append(Segment(text[span_start:span_end], hit=True))
        pos = span_end
    if pos < stop:
        out.append(Segment(text[pos:stop]))
    return tuple(out)


def highlighted(text: str, hits: Iterable[Hit], field: Field, index: int | None = None) -> Segments:
    return segments(text, spans_for(text, hits, field, index))


def _word_start(text: str, pos: int) -> int:
    """The start of the word at ``pos`` (or ``pos`` itself when it already starts a word)."""
    space = text.rfind(" ", 0, pos)
    return 0 if space < 0 else space + 1


def _word_end(text: str, pos: int, slack: int = 20) -> int:
    """A cut at or before ``pos`` that does not split a word (unless the word is longer than ``slack``)."""
    if pos >= len(text):
        return len(text)
    space = text.rfind(" ", max(0, pos - slack), pos + 1)
    return pos if space <= 0 else space


def shorten(text: str, spans: Sequence[tuple[int, int]], limit: int) -> Segments:
    """At most about ``limit`` characters of ``text`` with its highlights, ``…`` marking what was left out.

    A cut never falls inside a highlight, and the first highlight always stays visible: when it lies past the
    limit the excerpt starts shortly before it instead of at the beginning.
    """
    if len(text) <= limit:
        return segments(text, spans)
    if limit <= 0:
        return ()
    start = 0
    if spans and spans[0][1] > limit - limit // 5:
        start = _word_start(text, max(0, spans[0][0] - limit // 4))
    end = _word_end(text, min(len(text), start + limit))
    for span_start, span_end in spans:
        if span_start < end < span_end:
            end = span_end
    out = list(segments(text, spans, start, end))
    if start > 0:
        out.insert(0, Segment(ELLIPSIS + " "))
    if end < len(text):
        if out and not out[-1].hit:
            out[-1] = Segment(out[-1].text.rstrip(" ,;:.-"))
        out.append(Segment(" " + ELLIPSIS if out and out[-1].hit else ELLIPSIS))
    return tuple(out)


def snippet(paper: Paper, hits: Sequence[Hit], limit: int) -> Segments:
    """A short excerpt of the abstract around its first highlight (the abstract's start when nothing matched it)."""
    return shorten(paper.abstract, spans_for(paper.abstract, hits, Field.ABSTRACT), limit)


@functools.lru_cache(maxsize=4096)
def term_label(term: str) -> str:
    """A query term as a reader would say it: ``'ti:"Graph Neural"'`` -> ``'Graph Neural'``."""
    label = _FIELD_PREFIX.sub("", one_line(term)).strip()
    if len(label) >= 2 and label[0] == label[-1] and label[0] in "\"'":
        label = label[1:-1].strip()
    return label or one_line(term)


def matched_line(hits: Iterable[Hit]) -> str:
    """Why a paper is listed: ``'reinforcement learning (title), reinforcement learning (abstract)'``."""
    seen: dict[tuple[str, Field], None] = {}
    for hit in hits:
        seen.setdefault((term_label(hit.term), hit.field), None)
    return ", ".join(f"{term} ({FIELD_LABELS[field]})" for term, field in seen)


@dataclass(frozen=True, slots=True)
class AuthorName:
    segments: Segments
    gap_before: bool = False  # authors were left out between the previous name and this one


@dataclass(frozen=True, slots=True)
class AuthorList:
    names: tuple[AuthorName, ...]
    total: int

    @property
    def et_al(self) -> bool:
        return len(self.names) < self.total

    @property
    def text(self) -> str:
        parts: list[str] = []
        for name in self.names:
            parts.append(("… " if name.gap_before else "") + plain(name.segments))
        joined = ", ".join(parts)
        return f"{joined} et al. ({self.total} authors)" if self.et_al else joined

    @property
    def byline(self) -> str:
        """``'A. Author'``, or ``'A. Author et al.'`` when there are more: what a one-line entry shows."""
        if not self.names:
            return ""
        first = plain(self.names[0].segments)
        return f"{first} et al." if self.total > 1 else first


def author_list(paper: Paper, hits: Sequence[Hit], limit: int = MAX_AUTHORS) -> AuthorList:
    """The first ``limit`` authors, plus any later author a query term matched; the rest become "et al."."""
    matched = {hit.index for hit in hits if hit.field == Field.AUTHORS}
    names: list[AuthorName] = []
    previous = -1
    for position, name in enumerate(paper.authors):
        if position < limit or position in matched:
            segs = highlighted(name, hits, Field.AUTHORS, position)
            names.append(AuthorName(segs, gap_before=position != previous + 1))
            previous = position
    return AuthorList(tuple(names), len(paper.authors))


@dataclass(frozen=True, slots=True)
class SummaryView:
    """What a paper's LLM summary shows, each field on one line (no field can start a line of its own). The text is
    untrusted, as paper text is: each channel escapes it as it escapes titles and abstracts."""

    summary: str
    topic: str
    subtopic: str
    keywords: tuple[str, ...]
    institution: str | None

    @property
    def tags(self) -> str:
        """``[mlsys], [llm training], [sparse averaging, data parallelism]``, leaving out what is empty."""
        parts = [f"[{self.topic}]" if self.topic else "", f"[{self.subtopic}]" if self.subtopic else ""]
        parts.append(f"[{', '.join(self.keywords)}]" if self.keywords else "")
        return ", ".join(part for part in parts if part)


@functools.lru_cache(maxsize=4096)
def summary_view(summary: Summary | None) -> SummaryView | None:
    """The view of ``summary``; None when there is none, or nothing in it to show."""
    if summary is None:
        return None
    view = SummaryView(
        summary=one_line(summary.summary),
        topic=one_line(summary.topic),
        subtopic=one_line(summary.subtopic),
        keywords=tuple(keyword for keyword in map(one_line, summary.keywords) if keyword),
        institution=one_line(summary.institution or "") or None,
    )
    return view if view.summary or view.tags or view.institution else None


@dataclass(frozen=True, slots=True)
class SimilarityView:
    """Why a ranked paper is listed: the subscriber's paper it is most like, and its score, each on one line. The
    liked title comes from arXiv: each channel escapes it as it escapes paper text."""

    liked_id: str
    liked_title: str  # at most LIKED_TITLE_CHARS; may be empty
    score: str  # two decimals, "0.42"
    liked_url: str | None  # the liked paper's abstract page; None when ``liked_id`` is not an arXiv id
    feedback: FeedbackUrls | None = None  # the "more / fewer like this" links, when the daemon has a public URL

    @property
    def quoted_title(self) -> str:
        return f"“{self.liked_title}”" if self.liked_title else ""

    @property
    def text(self) -> str:
        """``Like your 2401.01234 “Title” · score 0.42``: the line as plain text."""
        title = f" {self.quoted_title}" if self.liked_title else ""
        return f"Like your {self.liked_id}{title} · score {self.score}"

    @property
    def brief(self) -> str:
        """``like your 2401.01234 · score 0.42``: what a paper listed by title only adds to its title."""
        return f"like your {self.liked_id} · score {self.score}"


@functools.lru_cache(maxsize=4096)
def similarity_view(similarity: Similarity | None, feedback: FeedbackUrls | None = None) -> SimilarityView | None:
    """The view of ``similarity`` (with the paper's ``feedback`` links, if it has some), or None for a paper that
    was not ranked."""
    if similarity is None:
        return None
    if feedback is not None:
        feedback = FeedbackUrls(more=one_line(feedback.more), fewer=one_line(feedback.fewer))
    liked_id = one_line(similarity.liked_id)
    title = one_line(similarity.liked_title)
    if len(title) > LIKED_TITLE_CHARS:
        title = title[: LIKED_TITLE_CHARS - 1].rstrip() + ELLIPSIS
    score = 0.0 if math.isnan(similarity.score) else min(max(similarity.score, 0.0), 1.0)
    url = f"https://arxiv.org/abs/{liked_id}" if _ARXIV_ID.fullmatch(liked_id) else None
    return SimilarityView(liked_id=liked_id, liked_title=title, score=f"{score:.2f}", liked_url=url, feedback=feedback)


def is_ranked(section: DigestSection) -> bool:
    """Whether the papers of ``section`` were ranked by similarity to the subscriber's papers."""
    return not section.query or any(match.similarity is not None for match in section.matches)


def ranking_label(query: str, ranked: bool) -> str | None:
    """What a section header adds about ranking: :data:`SIMILAR_ONLY` in place of an empty query, :data:`RANKED`
    after a query whose papers were ranked, else None."""
    if not query:
        return SIMILAR_ONLY
    return RANKED if ranked else None


def badges(paper: Paper) -> tuple[str, ...]:
    out: list[str] = []
    if paper.is_cross_list:
        out.append("cross-list")
    if paper.is_update:
        out.append(f"updated (v{paper.version})")
    if paper.backfilled:
        out.append("backfilled")
    return tuple(out)


# Dates: "Tue 10 Feb", "2–8 Feb", "28 Jan – 3 Feb 2026".


def day_label(day: date, *, year: bool = False) -> str:
    text = f"{day:%a} {day.day} {day:%b}"
    return f"{text} {day.year}" if year else text


def range_label(first: date, last: date, *, year: bool = False) -> str:
    if first == last:
        return day_label(first, year=year)
    tail = f" {last.year}" if year or first.year != last.year else ""
    if (first.year, first.month) == (last.year, last.month):
        return f"{first.day}–{last.day} {last:%b}{tail}"
    head = f"{first.day} {first:%b}" + (f" {first.year}" if first.year != last.year else "")
    return f"{head} – {last.day} {last:%b}{tail}"


def period_label(digest: Digest, *, year: bool = False) -> str:
    """The day a daily digest is for (its ``period_end``), or the range a weekly one covers."""
    end = digest.period_end.date()
    if digest.kind == "weekly":
        return range_label(min(digest.period_start.date(), end), end, year=year)
    return day_label(end, year=year)


def count_label(count: int, noun: str = "paper") -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


@dataclass(frozen=True, slots=True)
class Day:
    """The matches of one announcement day (``day`` is None for papers whose day is unknown)."""

    day: date | None
    sections: tuple[tuple[str, tuple[Match, ...]], ...]  # (rule, matches) in digest order, empty rules left out
    papers: tuple[Paper, ...]

    @property
    def label(self) -> str:
        return "Announcement day unknown" if self.day is None else day_label(self.day, year=True)


def category_totals(papers: Iterable[Paper]) -> tuple[tuple[str, int], ...]:
    """Papers per primary category, largest first."""
    counts: dict[str, int] = {}
    for paper in papers:
        if paper.primary_category:
            counts[paper.primary_category] = counts.get(paper.primary_category, 0) + 1
    return tuple(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def by_day(digest: Digest) -> tuple[Day, ...]:
    """The digest split by ``Paper.announced``, oldest day first; unknown days last."""
    days = sorted({m.paper.announced for s in digest.sections for m in s.matches}, key=lambda d: (d is None, d))
    out: list[Day] = []
    for day in days:
        sections = []
        papers: dict[str, Paper] = {}
        for section in digest.sections:
            matches = tuple(m for m in section.matches if m.paper.announced == day)
            if matches:
                sections.append((section.rule, matches))
                for match in matches:
                    papers.setdefault(match.paper.arxiv_id, match.paper)
        out.append(Day(day, tuple(sections), tuple(papers.values())))
    return tuple(out)
