"""The email view of a digest: subject, a text part that reads well in a terminal, and an HTML part for mail clients.

The HTML is laid out with tables, its CSS is inlined with css_inline (media queries for dark mode and small
screens stay in a ``<style>`` block), and it is kept under Gmail's clipping size: abstracts are shortened first,
then the last papers are listed by title and link only. Every paper of the digest appears in both parts.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from dataclasses import dataclass, replace

import css_inline
import jinja2

from notifier.highlight import (
    AuthorList,
    Segments,
    author_list,
    badges,
    by_day,
    category_totals,
    count_label,
    highlighted,
    matched_line,
    one_line,
    period_label,
    plain,
    shorten,
    spans_for,
    valid_unicode,
)
from notifier.models import Digest, Field, Match, Paper, RenderedEmail

ABSTRACT_CHARS = 600
# Abstract lengths tried, in order, while the HTML part is too large; after the last one papers go compact.
ABSTRACT_STEPS = (ABSTRACT_CHARS, 320, 160)
TEXT_WIDTH = 78
SUBJECT_MAX = 200
RULE_NAME_MAX = 60

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
    also_in: tuple[str, ...] = ()  # other rules that list this paper
    first_rule: str | None = None  # set when the paper was shown in full under an earlier rule
    compact: bool = False  # title and links only, to keep the message under the size limit

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


@dataclass(frozen=True, slots=True)
class SectionView:
    rule: str
    query: str
    count: int
    papers: tuple[PaperView, ...]

    @property
    def blocks(self) -> list[tuple[str, list[PaperView]]]:
        """Papers in order as ``("full", [paper])`` rows and ``("brief", [papers...])`` runs of title-only lines."""
        out: list[tuple[str, list[PaperView]]] = []
        for paper in self.papers:
            if paper.compact and paper.first_rule:
                continue  # listed in one line under ``also_above``
            kind = "brief" if paper.compact else "full"
            if kind == "brief" and out and out[-1][0] == "brief":
                out[-1][1].append(paper)
            else:
                out.append((kind, [paper]))
        return out

    @property
    def also_above(self) -> list[PaperView]:
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


def _paper_view(match: Match, abstract_chars: int) -> PaperView:
    paper, hits = match.paper, match.hits
    categories = tuple(highlighted(c, hits, Field.CATEGORIES, i) for i, c in enumerate(paper.categories))
    return PaperView(
        arxiv_id=paper.arxiv_id,
        title=highlighted(paper.title, hits, Field.TITLE),
        authors=author_list(paper, hits),
        primary=categories[0] if categories else None,
        cross=categories[1:],
        badges=badges(paper),
        abstract=shorten(paper.abstract, spans_for(paper.abstract, hits, Field.ABSTRACT), abstract_chars),
        comment=highlighted(paper.comment, hits, Field.COMMENT) if paper.comment else None,
        journal_ref=paper.journal_ref,
        abs_url=paper.abs_url,
        pdf_url=paper.pdf_url,
        html_url=paper.html_url,
        matched=matched_line(hits),
    )


def groups(digest: Digest, abstract_chars: int = ABSTRACT_CHARS, full_papers: int | None = None) -> list[GroupView]:
    """The digest as the templates see it. Only the first ``full_papers`` distinct papers are shown in full."""
    rules_of: dict[str, list[str]] = {}
    for section in digest.sections:
        for match in section.matches:
            rules_of.setdefault(match.paper.arxiv_id, []).append(one_line(section.rule))
    shown: dict[str, str] = {}

    def view(rule: str, match: Match) -> PaperView:
        paper_id = match.paper.arxiv_id
        paper = _paper_view(match, abstract_chars)
        paper = replace(paper, also_in=tuple(r for r in rules_of[paper_id] if r != rule))
        if paper_id in shown:
            return replace(paper, first_rule=shown[paper_id], compact=full_papers is not None)
        shown[paper_id] = rule
        if full_papers is not None and len(shown) > full_papers:
            return replace(paper, compact=True)
        return paper

    days: list[tuple[str | None, tuple[Paper, ...], tuple[tuple[str, tuple[Match, ...]], ...]]]
    if digest.kind == "weekly":
        days = [(day.label, day.papers, day.sections) for day in by_day(digest)]
    else:
        days = [(None, digest.papers, tuple((s.rule, s.matches) for s in digest.sections if s.matches))]
    queries = {section.rule: section.query for section in digest.sections}
    out = []
    for heading, papers, sections in days:
        section_views = tuple(
            SectionView(one_line(rule), one_line(queries[rule]), len(ms), tuple(view(one_line(rule), m) for m in ms))
            for rule, ms in sections
        )
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
    """Jinja filter: ``text`` wrapped to ``width`` columns, URLs and words never split unless longer than a line."""
    return textwrap.fill(
        one_line(text),
        width=width,
        initial_indent=indent if first is None else first,
        subsequent_indent=indent,
        break_on_hyphens=False,
    )


def install_filters(env: jinja2.Environment) -> None:
    env.filters["wrap"] = wrap
    env.filters["one_line"] = one_line
    env.globals["palette"] = PALETTE


@dataclass(frozen=True, slots=True)
class EmailRenderer:
    """Renders both parts of a digest email with the templates of ``env``."""

    env: jinja2.Environment

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
        text = valid_unicode(self.env.get_template("email.txt").render(base, **layout.context))
        return RenderedEmail(subject=valid_unicode(subject_line), text=text.rstrip() + "\n", html=layout.html)

    def _render(self, context: dict[str, object], views: list[GroupView], compact: int, short: bool) -> _Layout:
        extra = {"groups": views, "compact_count": compact, "shortened": short}
        page = valid_unicode(self.env.get_template("email.html").render(context, **extra))
        inliner = css_inline.CSSInliner(keep_at_rules=True, load_remote_stylesheets=False, minify_css=True)
        return _Layout(_style_last_in_head(str(inliner.inline(page))), extra)

    def _layout(self, digest: Digest, context: dict[str, object], limit: int) -> _Layout:
        """The fullest layout whose HTML fits in ``limit`` bytes; the text part uses the same layout."""

        def fits(layout: _Layout) -> bool:
            return len(layout.html.encode("utf-8")) <= limit

        for step, chars in enumerate(ABSTRACT_STEPS):
            layout = self._render(context, groups(digest, chars), 0, short=step > 0)
            if fits(layout):
                return layout
        total = len(digest.papers)
        chars = ABSTRACT_STEPS[-1]

        def attempt(full: int) -> _Layout:
            return self._render(context, groups(digest, chars, full), total - full, short=True)

        return _largest_fitting(total, attempt, fits)


@dataclass(frozen=True, slots=True)
class _Layout:
    html: str
    context: dict[str, object]


def _style_last_in_head(html: str) -> str:
    """Move the ``<style>`` block css_inline leaves for media queries after the meta tags and the title."""
    head_end = html.find("</head>")
    start = html.find("<style>", 0, head_end)
    if start < 0:
        return html
    end = html.index("</style>", start) + len("</style>")
    style = html[start:end]
    html = html[:start] + html[end:]
    return html.replace("</head>", style + "\n</head>", 1)


def _largest_fitting(total: int, attempt: Callable[[int], _Layout], fits: Callable[[_Layout], bool]) -> _Layout:
    """The output of ``attempt(k)`` for the largest ``k`` in ``0..total`` that fits (``attempt(0)`` if none does)."""
    low, high = 0, total
    best = attempt(0)
    if not fits(best):
        return best
    while low < high:
        middle = (low + high + 1) // 2
        layout = attempt(middle)
        if fits(layout):
            low, best = middle, layout
        else:
            high = middle - 1
    return best
