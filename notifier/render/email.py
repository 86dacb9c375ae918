"""The email view of a digest: subject, a text part that reads well in a terminal, and an HTML part for mail clients.

The HTML is laid out with tables, its CSS is inlined into the templates when they load (media queries for dark mode
and small screens stay in a ``<style>`` block), and it is kept under Gmail's clipping size: abstracts are shortened
first (those of papers with an LLM summary last of all left out), then the last papers are listed by title and link
only (and their summary). Every paper of the digest appears in both parts.

A digest with rich sections shows their papers in full with their LLM summary (tags, institution and the TL;DR,
marked as machine-written), and the papers of its other sections one line each, so that the rich ones stand out.

A paper ranked by similarity to the subscriber's own papers says why, under its meta lines, wherever it is listed:
``Like your 2401.01234 “Title” · score 0.42``; listed by title only, it says ``like your 2401.01234 · score 0.42``
after its title. A section whose rule only ranks says "most like your papers" where others show their query. When
the digest carries feedback links (the daemon has a public URL), "More like this" and "Fewer like this" follow the
explanation: small links in the HTML part (where a paper listed by title only keeps its brief form, without
them), two labelled URLs on lines of their own in the text part.
"""

from __future__ import annotations

import functools
import itertools
import textwrap
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

import jinja2
from markupsafe import Markup

from notifier.models import Digest, FeedbackUrls, Field, Hit, Match, Paper, RenderedEmail
from notifier.render.highlight import (
    AuthorList,
    Segments,
    SimilarityView,
    SummaryView,
    author_list,
    badges,
    by_day,
    category_totals,
    count_label,
    highlighted,
    is_ranked,
    matched_line,
    one_line,
    period_label,
    plain,
    ranking_label,
    shorten,
    similarity_view,
    spans_for,
    summary_view,
    utf8,
    valid_unicode,
)
from notifier.render.html import html_text

ABSTRACT_CHARS = 600
# Abstract lengths tried, in order, while the HTML part is too large; after the last one papers go compact. A digest
# with rich sections then tries two more steps: the abstracts of the papers with a summary are left out, then its
# one-line entries show their titles only.
ABSTRACT_STEPS = (ABSTRACT_CHARS, 320, 160)
TEXT_WIDTH = 78
SUBJECT_MAX = 200
RULE_NAME_MAX = 60
# Rendered papers kept for reuse, and wrapped lines: bounded, as a renderer serves every digest of a plan.
CARD_CACHE = 2048
WRAP_CACHE = 4096
HTML_LINE = 400  # characters of marked text on a line of the HTML part (see marked)

# Every colour the HTML uses. The CSS template reads it, and the tests check the contrast of CONTRAST_PAIRS.
PALETTE: dict[str, dict[str, str]] = {
    "light": {
        "page_bg": "#eef1f5",
        "card_bg": "#ffffff",
        "text": "#1b1f24",
        "muted": "#525a63",
        "link": "#0a4fb8",
        "border": "#d3d9e0",
        "mark_bg": "#ffe98a",
        "mark_text": "#1b1f24",
        "badge_bg": "#e4ebf5",
        "badge_text": "#1e3f66",
        "notice_bg": "#fff4d6",
        "notice_text": "#4a3500",
        "tldr_border": "#7d9cc4",
    },
    "dark": {
        "page_bg": "#111418",
        "card_bg": "#1b2027",
        "text": "#e8ebef",
        "muted": "#aab3bd",
        "link": "#8cb8ff",
        "border": "#3a424c",
        "mark_bg": "#6b5400",
        "mark_text": "#fff6d1",
        "badge_bg": "#26364d",
        "badge_text": "#cfe0ff",
        "notice_bg": "#3d3000",
        "notice_text": "#ffeeb0",
        "tldr_border": "#7d9cc4",
    },
}
# (foreground, background) pairs that appear together; each must reach WCAG AA (4.5:1) in both schemes.
CONTRAST_PAIRS: tuple[tuple[str, str], ...] = (
    ("text", "card_bg"),
    ("muted", "card_bg"),
    ("link", "card_bg"),
    ("text", "page_bg"),
    ("muted", "page_bg"),
    ("link", "page_bg"),
    ("mark_text", "mark_bg"),
    ("badge_text", "badge_bg"),
    ("notice_text", "notice_bg"),
)


@dataclass(frozen=True, slots=True)
class PaperView:
    """What the templates show of a paper for one set of hits and one abstract length, the same in every digest."""

    arxiv_id: str
    title: Segments
    authors: AuthorList
    primary: Segments | None
    cross: tuple[Segments, ...]
    badges: tuple[str, ...]
    abstract: Segments
    comment: Segments | None
    journal_ref: str | None
    abs_url: str
    pdf_url: str
    html_url: str
    matched: str
    summary: SummaryView | None = None  # in a rich section, when the paper has a summary
    similarity: SimilarityView | None = None  # when the paper was ranked by similarity to the subscriber's papers

    @property
    def title_text(self) -> str:
        return plain(self.title)

    @property
    def abstract_text(self) -> str:
        return plain(self.abstract)

    @property
    def comment_text(self) -> str:
        return plain(self.comment) if self.comment else ""

    @property
    def categories_text(self) -> str:
        if self.primary is None:
            return ""
        text = plain(self.primary)
        if self.cross:
            text += " (also " + ", ".join(plain(c) for c in self.cross) + ")"
        return text


@dataclass(slots=True)
class PaperCard:
    """A paper's view with its HTML rendered (``head``, ``abstract``, ``tail`` of ``_paper.html``), and its text body
    (``head``, ``abstract``, ``tail`` of ``_paper.txt``, or its ``body``) on demand; not changed after it is made,
    but for remembering that text body."""

    view: PaperView
    html: Markup
    html_bytes: int  # UTF-8 size of ``html``, for sizing a digest before rendering it
    title_text: str
    texts: Callable[[PaperView], str]  # renders (or recalls) the text body
    _text: str | None = None

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = self.texts(self.view)
        return self._text


@dataclass(frozen=True, slots=True)
class PaperRow:
    """A paper where one digest lists it: its card, and what depends on the rest of that digest."""

    card: PaperCard
    also_in: tuple[str, ...] = ()  # other rules that list this paper
    first_rule: str | None = None  # set when the paper was shown in full under an earlier rule
    compact: bool = False  # title and links only (and its summary), to keep the message under the size limit; its
    # card is then a brief one: the view of its head, why it matched, its summary and similarity, and no HTML
    line: bool = False  # one line (title, first author, id; compact: title only): a paper of a section that is not
    # rich, in a digest with rich sections

    @property
    def arxiv_id(self) -> str:
        return self.card.view.arxiv_id

    @property
    def abs_url(self) -> str:
        return self.card.view.abs_url

    @property
    def title(self) -> Segments:
        return self.card.view.title

    @property
    def title_text(self) -> str:
        return self.card.title_text

    @property
    def matched(self) -> str:
        return self.card.view.matched

    @property
    def byline(self) -> str:
        return self.card.view.authors.byline

    @property
    def summary(self) -> SummaryView | None:
        return self.card.view.summary

    @property
    def similarity(self) -> SimilarityView | None:
        return self.card.view.similarity

    @property
    def html(self) -> Markup:
        return self.card.html

    @property
    def text(self) -> str:
        return self.card.text


@dataclass(frozen=True, slots=True)
class SectionView:
    rule: str
    query: str
    count: int
    papers: tuple[PaperRow, ...]
    lines: bool = False  # every paper in one line (a section that is not rich, in a digest with rich ones)
    ranking: str | None = None  # "most like your papers" (no query), "ranked by similarity ..." (see ranking_label)

    @property
    def blocks(self) -> list[tuple[str, list[PaperRow]]]:
        """Papers in order as ``("full", [paper])`` rows, ``("brief", [papers...])`` runs of title-only lines and
        ``("line", [papers...])`` runs of one-line entries."""
        out: list[tuple[str, list[PaperRow]]] = []
        for paper in self.papers:
            if paper.compact and paper.first_rule:
                continue  # listed in one line under ``also_above``
            kind = "line" if paper.line else "brief" if paper.compact else "full"
            if kind != "full" and out and out[-1][0] == kind:
                out[-1][1].append(paper)
            else:
                out.append((kind, [paper]))
        return out

    @property
    def also_above(self) -> list[PaperRow]:
        """Papers of this rule that are already listed above, when the message is too long to repeat them."""
        return [paper for paper in self.papers if paper.compact and paper.first_rule]


@dataclass(frozen=True, slots=True)
class GroupView:
    """A day of a weekly digest; a daily digest has one group with no heading."""

    heading: str | None
    paper_count: int
    category_totals: tuple[tuple[str, int], ...]
    rule_totals: tuple[tuple[str, int], ...]
    sections: tuple[SectionView, ...]


def rule_counts(digest: Digest) -> list[tuple[str, int]]:
    return [(one_line(section.rule), len(section.matches)) for section in digest.sections if section.matches]


def subject(digest: Digest) -> str:
    """``[arXiv] 12 papers · reinforcement learning (3), compilers (9) · Tue 10 Feb``, on one line, ≤ 200 chars."""
    prefix = "[arXiv weekly]" if digest.kind == "weekly" else "[arXiv]"
    when = period_label(digest)
    if digest.is_empty:
        return f"{prefix} No new papers · {when}"
    total = count_label(len(digest.papers))
    rules = [
        (name if len(name) <= RULE_NAME_MAX else name[: RULE_NAME_MAX - 1] + "…", count)
        for name, count in rule_counts(digest)
    ]
    for shown in range(len(rules), -1, -1):
        listed = ", ".join(f"{name} ({count})" for name, count in rules[:shown])
        more = len(rules) - shown
        if more:
            listed = f"{listed}, +{more} more" if listed else f"{len(rules)} rules"
        text = one_line(f"{prefix} {total} · {listed} · {when}")
        if len(text) <= SUBJECT_MAX:
            return text
    return one_line(f"{prefix} {total} · {when}")[:SUBJECT_MAX]


def head_view(
    paper: Paper, title_hits: tuple[Hit, ...], author_hits: tuple[Hit, ...], category_hits: tuple[Hit, ...]
) -> PaperView:
    """The view of ``paper`` with what the head of its card shows (title, authors, categories, badges, links) and
    no abstract, comment or reason yet."""
    categories = tuple(highlighted(c, category_hits, Field.CATEGORIES, i) for i, c in enumerate(paper.categories))
    return PaperView(
        arxiv_id=paper.arxiv_id,
        title=highlighted(paper.title, title_hits, Field.TITLE),
        authors=author_list(paper, author_hits),
        primary=categories[0] if categories else None,
        cross=categories[1:],
        badges=badges(paper),
        abstract=(),
        comment=None,
        journal_ref=paper.journal_ref,
        abs_url=paper.abs_url,
        pdf_url=paper.pdf_url,
        html_url=paper.html_url,
        matched="",
    )


@dataclass(frozen=True, slots=True)
class _Part:
    """A part of a card (``head`` or ``tail`` of ``_paper.html``) and the view it was rendered from."""

    view: PaperView
    html: str
    size: int  # UTF-8 bytes of ``html`` (each lone surrogate counted as one: at most its true size)


Cards = Callable[[Paper, tuple[Hit, ...], int, SummaryView | None, SimilarityView | None], PaperCard]
Full = tuple[Match, SummaryView | None]  # a paper shown in full, with the summary it shows
Feedback = Mapping[str, FeedbackUrls]  # a digest's feedback links, by arXiv id


def card_of(
    cards: Cards,
    match: Match,
    abstract_chars: int,
    summary: SummaryView | None,
    feedback: FeedbackUrls | None = None,
) -> PaperCard:
    """The card of ``match``'s paper, with its hits, its similarity (and the ``feedback`` links under it) and
    ``summary``."""
    return cards(match.paper, match.hits, abstract_chars, summary, similarity_view(match.similarity, feedback))


def full_matches(digest: Digest) -> list[Full]:
    """The papers a layout with nothing compact shows in full, each once (its first match), in digest order: every
    paper, or in a digest with rich sections the papers of those, each with its summary."""
    if not digest.has_rich:
        return [(match, None) for match in digest.first_matches]
    seen: dict[str, Full] = {}
    for section in digest.sections:
        if section.rich:
            for match in section.matches:
                if match.paper.arxiv_id not in seen:
                    seen[match.paper.arxiv_id] = (match, summary_view(digest.summary_of(match.paper)))
    return list(seen.values())


def groups(
    digest: Digest,
    cards: Cards,
    abstract_chars: int = ABSTRACT_CHARS,
    full_papers: int | None = None,
    summarised_chars: int | None = None,
    bare_lines: bool = False,
    briefs: Cards | None = None,
) -> list[GroupView]:
    """The digest as the templates see it. Only the first ``full_papers`` distinct papers are shown in full; the
    abstracts of papers with a summary are cut to ``summarised_chars`` (by default ``abstract_chars``); with
    ``bare_lines``, one-line entries show their title and link only, once: a paper listed above goes by its id.
    The papers listed by title only get their cards from ``briefs`` when it is given (see
    :meth:`EmailRenderer._brief`)."""
    rules_of: dict[str, list[str]] = {}
    for section in digest.sections:
        for match in section.matches:
            rules_of.setdefault(match.paper.arxiv_id, []).append(one_line(section.rule))
    shown: dict[str, str] = {}  # papers shown in full, and under which rule
    listed: dict[str, str] = {}  # papers shown in full or in one line, and under which rule
    has_rich = digest.has_rich
    rich_rules = {section.rule for section in digest.sections if section.rich}

    def row(rule: str, match: Match, rich: bool) -> PaperRow:
        paper_id = match.paper.arxiv_id
        feedback = digest.feedback.get(paper_id)
        if has_rich and not rich:
            card = card_of(cards, match, 0, None, feedback)
            if bare_lines and paper_id in listed:
                return PaperRow(card, first_rule=listed[paper_id], compact=True, line=True)
            listed.setdefault(paper_id, rule)
            return PaperRow(card, compact=bare_lines, line=True)
        summary = summary_view(digest.summary_of(match.paper)) if rich else None
        chars = abstract_chars if summary is None or summarised_chars is None else summarised_chars
        again = paper_id in shown
        compact = full_papers is not None and (again or len(shown) >= full_papers)
        card = card_of(briefs if compact and briefs is not None else cards, match, chars, summary, feedback)
        also_in = tuple(r for r in rules_of[paper_id] if r != rule)
        if again:
            return PaperRow(card, also_in, first_rule=shown[paper_id], compact=compact)
        shown[paper_id] = rule
        listed.setdefault(paper_id, rule)
        return PaperRow(card, also_in, compact=compact)

    def section_view(rule: str, matches: tuple[Match, ...]) -> SectionView:
        rich = rule in rich_rules
        name = one_line(rule)
        rows = tuple(row(name, match, rich) for match in matches)
        query = one_line(queries[rule])
        ranking = ranking_label(query, rule in ranked)
        return SectionView(name, query, len(matches), rows, lines=has_rich and not rich, ranking=ranking)

    days: list[tuple[str | None, tuple[Paper, ...], tuple[tuple[str, tuple[Match, ...]], ...]]]
    if digest.kind == "weekly":
        days = [(day.label, day.papers, day.sections) for day in by_day(digest)]
    else:
        days = [(None, digest.papers, tuple((s.rule, s.matches) for s in digest.sections if s.matches))]
    queries = {section.rule: section.query for section in digest.sections}
    ranked = {section.rule for section in digest.sections if is_ranked(section)}
    out = []
    for heading, papers, sections in days:
        section_views = tuple(section_view(rule, matches) for rule, matches in sections)
        out.append(
            GroupView(
                heading=heading,
                paper_count=len(papers),
                category_totals=category_totals(papers),
                rule_totals=tuple((s.rule, s.count) for s in section_views),
                sections=section_views,
            )
        )
    return out


def wrap(text: str, indent: str = "", first: str | None = None, width: int = TEXT_WIDTH) -> str:
    """Jinja filter: ``text`` wrapped to ``width`` columns, URLs and words never split unless longer than a line.

    Words are filled greedily, as :func:`textwrap.fill` fills them: each line takes the longest run of whole words
    that fits, found by looking back from its last column for a space (a step per line, not per word). A word too
    long for a line goes through textwrap itself, which splits it the way it always has.
    """
    start = indent if first is None else first
    text = one_line(text)
    if not text or max(map(len, text.split(" "))) > width - max(len(start), len(indent)):
        return textwrap.fill(text, width, initial_indent=start, subsequent_indent=indent, break_on_hyphens=False)
    lines = []
    prefix, at, end = start, 0, len(text)
    while end - at > width - len(prefix):
        cut = text.rfind(" ", at, at + width - len(prefix) + 1)  # every word fits a line: there is one
        lines.append(prefix + text[at:cut])
        prefix, at = indent, cut + 1
    lines.append(prefix + text[at:])
    return "\n".join(lines)


def marked(segments: Segments, open_tag: str, close_tag: str) -> Markup:
    """Jinja filter (HTML): the text of ``segments``, escaped, with each hit run between ``open_tag`` and ``close_tag``.

    The template gives the tags (``<mark>`` with its inlined style), so the markup stays the template's. Markup longer
    than :data:`HTML_LINE` (an abstract with its marks) is broken into lines at spaces of its text, which HTML reads
    as the spaces they were: the email's HTML part can then go as it is, not quoted-printable, whose lines must stay
    within 998 octets (see :func:`~notifier.render.mime.build_email`)."""
    pieces = [(f"{open_tag}{html_text(s.text)}{close_tag}" if s.hit else html_text(s.text)) for s in segments]
    html = "".join(pieces)
    if len(html) <= HTML_LINE:
        return Markup(html)
    lines, line = [], ""
    for segment, piece in zip(segments, pieces, strict=True):
        lo = len(open_tag) if segment.hit else 0  # spaces of the text only, never of a tag
        while len(line) + len(piece) > HTML_LINE:
            hi = len(piece) - (len(close_tag) if segment.hit else 0)
            limit = HTML_LINE - len(line)  # what of the piece still fits on the line
            cut = piece.rfind(" ", lo, min(limit, hi)) if limit > lo else -1
            if cut == -1:
                cut = piece.find(" ", max(lo, limit), hi)  # the line runs over to the end of a word
                if cut == -1:
                    break  # no space left in the piece: the line runs on into the next one
            lines.append(line + piece[:cut])
            line, piece, lo = "", piece[cut + 1 :], 0
        line += piece
    lines.append(line)
    return Markup("\n".join(lines))


def install_filters(env: jinja2.Environment) -> None:
    """Our filters and globals. ``wrap`` remembers its recent results: the same lines recur in digest after digest."""
    env.filters["wrap"] = functools.lru_cache(maxsize=WRAP_CACHE)(wrap)
    env.filters["marked"] = marked
    env.filters["one_line"] = one_line
    env.globals["palette"] = PALETTE


class EmailRenderer:
    """Renders both parts of a digest email with the templates of ``env``.

    Each paper is rendered once for its hits and abstract length (a :class:`PaperCard`) and reused by every digest
    that lists it; the most recently used ``cards`` are kept. Templates come with their CSS inlined
    (:mod:`notifier.render.html`), so rendering a digest is filling in its templates and nothing more.
    """

    def __init__(self, env: jinja2.Environment, cards: int = CARD_CACHE) -> None:
        self.env = env
        self._html = env.get_template("email.html")
        self._text = env.get_template("email.txt")
        self._head = _macro(env, "_paper.html", "head")
        self._abstract = _macro(env, "_paper.html", "abstract")
        self._tail = _macro(env, "_paper.html", "tail")
        self._summary = _macro(env, "_paper.html", "summary")
        self._similarity = _macro(env, "_paper.html", "similarity")
        self._text_parts = _parts(env, "_paper.txt", ("head", "abstract", "tail"))
        # a _paper.txt without those three parts must define its body whole
        self._text_body = _macro(env, "_paper.txt", "body") if self._text_parts is None else None
        self.templates = tuple(
            env.get_template(name) for name in ("email.html", "email.txt", "_paper.html", "_paper.txt")
        )
        self.card: Cards = functools.lru_cache(maxsize=cards)(self._card)
        self.brief: Cards = functools.lru_cache(maxsize=cards)(self._brief)
        self._heads = functools.lru_cache(maxsize=cards)(self._head_of)
        self._tails = functools.lru_cache(maxsize=cards)(self._tail_of)
        self._summaries = functools.lru_cache(maxsize=cards)(self._summary_of)
        self._similarities = functools.lru_cache(maxsize=cards)(self._similarity_of)
        self._texts: tuple[dict[Hashable, str], ...] = ({}, {}, {})  # text bodies, or their heads, abstracts, tails
        self._texts_kept = cards
        self._markup = 0.0  # bytes a paper in full adds beyond its estimated gain (see _predicted)

    def _card(
        self,
        paper: Paper,
        hits: tuple[Hit, ...],
        abstract_chars: int,
        summary: SummaryView | None,
        similarity: SimilarityView | None,
    ) -> PaperCard:
        """The card of ``paper`` for ``hits`` (and ``similarity`` then ``summary``, shown between its head and its
        abstract). Its head and tail depend only on the hits they show, which most digests share (terms mostly
        match abstracts); so a new card usually costs its abstract and nothing more."""
        on = _on_fields(hits)
        head, tail = self._frame(paper, on)
        view = replace(
            head.view,
            abstract=_excerpt(paper, on, abstract_chars),
            comment=tail.view.comment,
            matched=matched_line(hits),
            summary=summary,
            similarity=similarity,
        )
        like = self._similarities(similarity) if similarity is not None else ""
        rich = self._summaries(summary) if summary is not None else ""
        html, data = utf8(
            "\n".join(part for part in (head.html, like, rich, str(self._abstract(view)), tail.html) if part)
        )
        return PaperCard(view, Markup(html), len(data), view.title_text, self._text_of)

    def _brief(
        self,
        paper: Paper,
        hits: tuple[Hit, ...],
        abstract_chars: int,
        summary: SummaryView | None,
        similarity: SimilarityView | None,
    ) -> PaperCard:
        """The card of a paper listed by title only: the view of its head, why it matched, its summary and its
        similarity, and no HTML (the templates write a compact entry from these). It costs a fraction of a card:
        the head is most often made already, and no abstract is cut or rendered."""
        head = self._head_for(paper, _on_fields(hits))
        view = replace(head.view, matched=matched_line(hits), summary=summary, similarity=similarity)
        return PaperCard(view, Markup(""), 0, view.title_text, self._text_of)

    def _head_for(self, paper: Paper, on: Mapping[Field, Sequence[Hit]]) -> _Part:
        return self._heads(paper, tuple(on[Field.TITLE]), tuple(on[Field.AUTHORS]), tuple(on[Field.CATEGORIES]))

    def _frame(self, paper: Paper, on: Mapping[Field, Sequence[Hit]]) -> tuple[_Part, _Part]:
        """The head and the tail of ``paper``'s card for the hits ``on`` each field, the same at every abstract
        length."""
        return self._head_for(paper, on), self._tails(paper, tuple(on[Field.COMMENT]))

    def _estimated_gain(self, match: Match, abstract_chars: int, summary: SummaryView | None, links: Feedback) -> int:
        """About what :func:`_gain` says of the paper's card, without rendering its abstract: the sizes of the
        card's head, tail, similarity and summary (each made once for every abstract length) and of the text of
        its abstract's excerpt. The abstract's markup is left out: :func:`_predicted` learns it as it measures."""
        paper = match.paper
        on = _on_fields(match.hits)
        head, similarity, size = self._around_abstract(match, on, summary, links)
        size += _size(plain(_excerpt(paper, on, abstract_chars)))
        return size - _kept(head.view.title_text, paper.abs_url, similarity, summary)

    def _around_abstract(
        self, match: Match, on: Mapping[Field, Sequence[Hit]], summary: SummaryView | None, links: Feedback
    ) -> tuple[_Part, SimilarityView | None, int]:
        """The head of the paper's card, its similarity, and the bytes of all the card holds but its abstract (its
        head, tail, similarity and summary, as :meth:`_card` puts them in, each made once for every abstract
        length)."""
        head, tail = self._frame(match.paper, on)
        similarity = similarity_view(match.similarity, links.get(match.paper.arxiv_id))
        size = head.size + tail.size
        size += _size(self._similarities(similarity)) if similarity is not None else 0
        size += _size(self._summaries(summary)) if summary is not None else 0
        return head, similarity, size

    def _least_cards(
        self, firsts: Sequence[Full], abstract_chars: int, summarised_chars: int, links: Feedback, limit: int
    ) -> int:
        """Fewer bytes than :func:`_cards` counts, without rendering an abstract: each card's parts around its
        abstract, which are made once for every abstract length, and an excerpt of at least a quarter of the
        abstract's length (as :func:`_at_least` says). A digest far too large for a step is known from these, where
        :func:`_cards` renders its cards at that step's length to tell; the sum stops once it is past ``limit``."""
        total = 0
        for match, summary in firsts:
            total += self._around_abstract(match, _on_fields(match.hits), summary, links)[2]
            total += min(len(match.paper.abstract), _chars(summary, abstract_chars, summarised_chars) // 4)
            if total > limit:
                break
        return total

    def _head_of(
        self, paper: Paper, title_hits: tuple[Hit, ...], author_hits: tuple[Hit, ...], category_hits: tuple[Hit, ...]
    ) -> _Part:
        view = head_view(paper, title_hits, author_hits, category_hits)
        html = _lines(str(self._head(view)))
        return _Part(view, html, _size(html))

    def _tail_of(self, paper: Paper, comment_hits: tuple[Hit, ...]) -> _Part:
        comment = highlighted(paper.comment, comment_hits, Field.COMMENT) if paper.comment else None
        view = replace(head_view(paper, (), (), ()), comment=comment)
        html = _lines(str(self._tail(view)))
        return _Part(view, html, _size(html))

    def _summary_of(self, summary: SummaryView) -> str:
        return str(self._summary(summary))

    def _similarity_of(self, similarity: SimilarityView) -> str:
        return str(self._similarity(similarity))

    def _text_of(self, view: PaperView) -> str:
        """The text body of ``view``: its head, abstract excerpt and tail, each rendered once for what it shows (the
        text part shows no highlights, so most papers share their head and tail with every digest that lists them,
        and their excerpt with some); or, from a ``_paper.txt`` that defines only ``body``, that whole."""
        heads, abstracts, tails = self._texts
        if self._text_parts is None:
            assert self._text_body is not None  # looked up whenever the parts are not defined
            key = (view.abs_url, view.pdf_url, view.html_url, view.authors.text, view.categories_text, view.badges,
                   view.abstract_text, view.comment_text, view.journal_ref, view.summary, view.similarity)  # fmt: skip
            return self._kept(heads, key, self._text_body, view)
        head, abstract, tail = self._text_parts
        return (
            self._kept(heads, (view.authors.text, view.categories_text, view.badges, view.similarity, view.summary),
                       head, view)
            + self._kept(abstracts, view.abstract_text, abstract, view)
            + self._kept(tails, (view.comment_text, view.journal_ref, view.abs_url, view.pdf_url, view.html_url),
                         tail, view)
        )  # fmt: skip

    def _kept(self, texts: dict[Hashable, str], key: Hashable, macro: Callable[[Any], object], view: PaperView) -> str:
        """``macro`` rendered for ``view``, or recalled from ``texts`` by ``key`` (what it shows of the view)."""
        text = texts.get(key)
        if text is None:
            if len(texts) >= self._texts_kept:
                del texts[next(iter(texts))]  # the oldest
            text = texts[key] = valid_unicode(str(macro(view)))
        return text

    def render(self, digest: Digest, unsubscribe_url: str | None, max_html_bytes: int) -> RenderedEmail:
        subject_line = subject(digest)
        base: dict[str, object] = {
            "digest": digest,
            "subscriber": one_line(digest.subscriber),
            "period": period_label(digest, year=True),
            "weekly": digest.kind == "weekly",
            "empty_reason": one_line(digest.empty_reason or "nothing matched your rules"),
            "paper_count": len(digest.papers),
            "rule_counts": rule_counts(digest),
            "week_categories": category_totals(digest.papers),
            "rules": [(one_line(s.rule), one_line(s.query)) for s in digest.sections],
            "config_path": one_line(digest.config_path),
            "unsubscribe_url": one_line(unsubscribe_url) if unsubscribe_url else None,
            "subject": subject_line,
        }
        layout = self._layout(digest, base, max_html_bytes)
        if layout.size > max_html_bytes and digest.summaries:
            layout = self._fewer_summaries(digest, base, max_html_bytes)
        text = valid_unicode(self._text.render(base, **layout.context))
        return RenderedEmail(subject=valid_unicode(subject_line), text=text.rstrip() + "\n", html=layout.html)

    def _fewer_summaries(self, digest: Digest, base: dict[str, object], limit: int) -> _Layout:
        """When even the shortest layout is too big, the summaries of the papers shown first are kept, as many
        as fit in ``limit``, and the others are left out (their papers show as without an LLM)."""
        shown = [match.paper.key for match in digest.first_matches if match.paper.key in digest.summaries]

        def keeping(count: int) -> _Layout:
            kept = replace(digest, summaries={key: digest.summaries[key] for key in shown[:count]})
            return self._layout(kept, {**base, "digest": kept}, limit)

        low, high = 0, len(shown) - 1  # with every summary it did not fit
        best = keeping(0)
        while low < high:
            middle = (low + high + 1) // 2
            layout = keeping(middle)
            if layout.size <= limit:
                best, low = layout, middle
            else:
                high = middle - 1
        return best

    def _render(self, context: dict[str, object], views: list[GroupView], compact: int, short: bool) -> _Layout:
        extra = {"groups": views, "compact_count": compact, "shortened": short}
        html, data = utf8(self._html.render(context, **extra))
        return _Layout(html, len(data), extra)

    def _layout(self, digest: Digest, context: dict[str, object], limit: int) -> _Layout:
        """The fullest layout whose HTML fits in ``limit`` bytes; the text part uses the same layout.

        Abstracts are shortened step by step (in a digest with rich sections, those of papers with a summary then
        left out, and one-line entries cut to their titles); then the last papers go compact, as many as needed.
        How many is predicted from the sizes of the papers' cards, then settled by rendering around the prediction.
        """
        firsts = full_matches(digest)
        steps = [(chars, chars, False) for chars in ABSTRACT_STEPS]
        if digest.has_rich:
            if any(summary is not None for _, summary in firsts):
                steps.append((ABSTRACT_STEPS[-1], 0, False))
            steps.append((*steps[-1][:2], True))
        for step, (chars, summarised, bare) in enumerate(steps):
            if (
                _at_least(firsts, chars, summarised) > limit
                or self._least_cards(firsts, chars, summarised, digest.feedback, limit) > limit
                or _cards(firsts, self.card, chars, summarised, digest.feedback, limit) > limit
            ):
                continue  # no need to render it to know (the cards are made once, for the page too)
            views = groups(digest, self.card, chars, None, summarised, bare)
            layout = self._render(context, views, 0, short=step > 0)
            if layout.size <= limit:
                return layout
        total = len(firsts)
        tried: dict[int, _Layout] = {}

        def attempt(full: int) -> _Layout:
            if full not in tried:
                views = groups(digest, self.card, chars, full, summarised, bare, self.brief)
                tried[full] = self._render(context, views, total - full, short=True)
            return tried[full]

        links = digest.feedback
        gains = [self._estimated_gain(m, _chars(s, chars, summarised), s, links) for m, s in firsts]
        guess, self._markup = _predicted(lambda full: attempt(full).size, gains, limit, self._markup)
        return _largest_fitting(total, attempt, limit, guess)


def _chars(summary: SummaryView | None, abstract_chars: int, summarised_chars: int) -> int:
    return abstract_chars if summary is None else summarised_chars


def _at_least(firsts: Sequence[Full], abstract_chars: int, summarised_chars: int) -> int:
    """Fewer bytes than the HTML of ``firsts`` in full takes: each shows its link twice and an excerpt of its
    abstract of at least a quarter of its length (see :func:`~notifier.render.highlight.shorten`)."""
    return sum(
        2 * len(match.paper.abs_url)
        + min(len(match.paper.abstract), _chars(summary, abstract_chars, summarised_chars) // 4)
        for match, summary in firsts
    )


def _cards(
    firsts: Sequence[Full],
    cards: Cards,
    abstract_chars: int,
    summarised_chars: int,
    feedback: Feedback,
    limit: int,
) -> int:
    """The bytes of the papers' cards, each of which a layout with every paper in full shows once at least; the sum
    stops once it is past ``limit``, so a digest far too large for it costs the cards that tell, not all of them."""
    total = 0
    for match, summary in firsts:
        chars = _chars(summary, abstract_chars, summarised_chars)
        total += card_of(cards, match, chars, summary, feedback.get(match.paper.arxiv_id)).html_bytes
        if total > limit:
            break
    return total


def _gain(card: PaperCard) -> int:
    """About how many bytes of HTML a paper saves by going compact: a compact paper shows its title and link
    (and briefly why it was ranked, and its summary) instead of its card."""
    view = card.view
    return card.html_bytes - _kept(card.title_text, view.abs_url, view.similarity, view.summary)


def _kept(title: str, abs_url: str, similarity: SimilarityView | None, summary: SummaryView | None) -> int:
    """The bytes of a paper's text that its compact entry still shows (see :func:`_gain`)."""
    kept = _size(title) + len(abs_url)
    if similarity is not None:
        kept += _size(similarity.brief)
    if summary is not None:
        kept += _size(summary.summary)
    return kept


def _predicted(
    size_at: Callable[[int], int], gains: Sequence[int], limit: int, markup: float, rounds: int = 3
) -> tuple[int, float]:
    """How many papers probably stay in full, and the markup per paper learnt on the way.

    The HTML with ``k`` papers in full is taken to be its size with none in full plus, for each of those ``k``, its
    estimated gain and ``markup`` bytes (what a card's row adds beyond its card, nearly the same for every paper).
    From the layout with none in full, the prediction is the largest ``k`` whose size stays within ``limit``; that
    layout is measured with ``size_at``, ``markup`` re-fitted from the last two measurements, and the step repeated
    up to ``rounds`` times. With the markup of the previous digest the first prediction is mostly right.
    """
    reach = [0, *itertools.accumulate(gains)]  # reach[k]: the estimated gains of the first k papers
    known = [(0, size_at(0))]
    full = 0
    for measured in range(rounds + 1):
        if measured:
            known.append((full, size_at(full)))
            (before, size_before), (after, size_after) = known[-2], known[-1]
            if after != before:
                markup = max(((size_after - size_before) - (reach[after] - reach[before])) / (after - before), 0.0)
        full, size = known[-1]
        base = size - reach[full] - markup * full
        moved = max((k for k in range(len(gains) + 1) if base + reach[k] + markup * k <= limit), default=0)
        if any(moved == k for k, _ in known):
            return moved, markup
        full = moved
    return full, markup


def _parts(
    env: jinja2.Environment, template: str, names: tuple[str, str, str]
) -> tuple[Callable[[Any], object], ...] | None:
    """The macros ``names`` of ``template``, or None unless it defines every one of them."""
    module = env.get_template(template).module
    macros = tuple(getattr(module, name, None) for name in names)
    return cast(tuple[Callable[[Any], object], ...], macros) if all(callable(m) for m in macros) else None


def _macro(env: jinja2.Environment, template: str, name: str) -> Callable[[Any], object]:
    macro = getattr(env.get_template(template).module, name, None)
    if not callable(macro):
        raise jinja2.TemplateError(f"{template} must define the macro {name}(paper)")
    return cast(Callable[[Any], object], macro)


_FIELDS = tuple(Field)  # iterating the enum itself is slow, and a card looks at its fields every time


def _on_fields(hits: Sequence[Hit]) -> dict[Field, list[Hit]]:
    on: dict[Field, list[Hit]] = {field: [] for field in _FIELDS}
    for hit in hits:
        on[hit.field].append(hit)
    return on


def _excerpt(paper: Paper, on: Mapping[Field, Sequence[Hit]], abstract_chars: int) -> Segments:
    """The abstract of ``paper`` cut to about ``abstract_chars``, with the hits ``on`` it marked."""
    return shorten(paper.abstract, spans_for(paper.abstract, on[Field.ABSTRACT], Field.ABSTRACT), abstract_chars)


def _size(text: str) -> int:
    """The UTF-8 size of ``text``, each lone surrogate counted as one byte (at most the size of what is sent)."""
    return len(text.encode("utf-8", "replace"))


def _lines(html: str) -> str:
    """``html`` with each paragraph on a line of its own: a card's parts run together otherwise (the templates trim
    the line ends after their tags), and a line of the HTML part must fit in 998 octets to go 7-bit (see
    :func:`~notifier.render.mime.build_email`). A line break between two paragraphs shows nothing."""
    return html.replace("</p><p", "</p>\n<p")


@dataclass(frozen=True, slots=True)
class _Layout:
    html: str
    size: int  # UTF-8 bytes of ``html``
    context: dict[str, object]


def _largest_fitting(total: int, attempt: Callable[[int], _Layout], limit: int, guess: int) -> _Layout:
    """The output of ``attempt(k)`` for the largest ``k`` in ``0..total`` whose size is within ``limit``
    (``attempt(0)`` if none is). Sizes grow with ``k``; the search starts at ``guess`` and widens its steps from
    there, so a right guess costs two attempts (``guess`` and the one above), which ``attempt`` may have cached."""
    guess = min(max(guess, 0), total)
    tried: dict[int, _Layout] = {}

    def fits(full: int) -> bool:
        if full not in tried:
            tried[full] = attempt(full)
        return tried[full].size <= limit

    if fits(guess):
        low, step = guess, 1  # low fits; look above it
        while low + step <= total and fits(low + step):
            low, step = low + step, step * 2
        high = min(low + step, total + 1)  # the first known not to fit (or past the end)
    else:
        high, step = guess, 1  # high does not fit; look below it
        while high - step >= 0 and not fits(high - step):
            high, step = high - step, step * 2
        if high - step >= 0:
            low = high - step
        elif fits(0):
            low = 0
        else:
            return tried[0]
    while high - low > 1:
        middle = (low + high) // 2
        if fits(middle):
            low = middle
        else:
            high = middle
    return tried[low]
