"""The HTML templates' CSS, inlined into their source once: the same styles a CSS inliner gives the rendered page;
escaping of text and attributes; reuse of rendered papers across digests; and the size fitting's search."""

from __future__ import annotations

import re
from dataclasses import replace
from html.parser import HTMLParser

import css_inline
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notifier.models import Digest, DigestSection, Field, Hit, Match
from notifier.render.email import HTML_LINE, EmailRenderer, _largest_fitting, _Layout, _predicted, marked
from notifier.render.highlight import Segment
from notifier.render.html import Stylesheet, html_text, inline_source
from notifier.render.renderer import Renderer
from tests.digest_factory import (
    build_digest,
    empty_digest,
    golden_digest,
    hostile_papers,
    large_digest,
    large_rich_weekly_digest,
    load_papers,
    similar_digest,
    weekly_digest,
    with_similarities,
)

UNSUBSCRIBE = "https://lab.example/unsubscribe?token=abc"


class _Styles(HTMLParser):
    """Every start tag in order, as (tag, class, {property: value} of its style attribute)."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("tbody", "style"):  # a parser adds tbody (the templates leave it implied); style may move
            return
        found = dict(attrs)
        style = {}
        for declaration in (found.get("style") or "").split(";"):
            prop, _, value = declaration.partition(":")
            if prop.strip():
                style[prop.strip()] = value.strip()
        self.elements.append((tag, found.get("class") or "", style))


def styles(html: str) -> list[tuple[str, str, dict[str, str]]]:
    parser = _Styles()
    parser.feed(html)
    return parser.elements


@pytest.mark.parametrize(
    "digest",
    [golden_digest(), weekly_digest(), empty_digest(), large_digest(300), similar_digest()],
    ids=["daily", "weekly", "empty", "large", "similar"],
)
def test_every_element_has_the_style_a_css_inliner_gives_it(digest: Digest) -> None:
    renderer = Renderer()
    html = renderer.email(digest, unsubscribe_url=UNSUBSCRIBE).html
    css = renderer.env.get_template("email.css").render()
    bare = re.sub(r' style="[^"]*"', "", html).replace("<style>", "<style>" + css, 1)
    inliner = css_inline.CSSInliner(keep_at_rules=True, load_remote_stylesheets=False)
    assert styles(html) == styles(inliner.inline(bare))


def test_at_rules_stay_in_the_style_block_and_plain_rules_do_not() -> None:
    html = Renderer().email(golden_digest()).html
    block = html[html.index("<style>") : html.index("</style>")]
    assert "@media (prefers-color-scheme: dark)" in block and "@media (max-width: 480px)" in block
    assert ".abstract { margin" not in block
    assert html.index("<title>") < html.index("<style>") < html.index("</head>")


def test_stylesheet_keeps_what_a_style_attribute_cannot_say() -> None:
    sheet = Stylesheet.parse(
        "/* note */ p { color: red; } a:hover { color: blue; } .x > .y { margin: 0 } "
        'td, .z i { font-family: "A B", sans-serif; padding: 1px !important; } @media print { p { color: black } }'
    )
    assert "a:hover { color: blue; }" in sheet.kept and ".x > .y" in sheet.kept
    assert "@media print { p { color: black } }" in sheet.kept
    assert sheet.style(("td", frozenset()), []) == "font-family:'A B', sans-serif;padding:1px !important"
    assert sheet.style(("i", frozenset()), [("p", frozenset({"z"}))]) == (
        "font-family:'A B', sans-serif;padding:1px !important"
    )
    assert sheet.style(("i", frozenset()), [("p", frozenset())]) == ""


def test_inline_source_follows_the_tags_written_in_the_template() -> None:
    sheet = Stylesheet.parse("p { margin: 0; color: red } .lead a { color: blue } a { color: green }")
    source = (
        '<p class="lead" style="color: black">{% if x %}<a href="{{ url }}">{{ text }}</a>{% endif %}</p>'
        "<a href='{{ url }}' title={{ title }}>more</a>"
    )
    assert inline_source(source, sheet) == (
        '<p class="lead" style="margin:0;color:red;color: black">{% if x %}'
        '<a href="{{ ( url ) | e }}" style="color:blue">{{ text }}</a>{% endif %}</p>'
        "<a href='{{ ( url ) | e }}' title={{ ( title ) | e }} style=\"color:green\">more</a>"
    )


def test_text_escapes_markup_and_attributes_escape_quotes_too() -> None:
    papers = hostile_papers()
    evil = replace(papers[1], arxiv_id='2506.9"><script>x', title='It\'s "quoted" & <b>bold</b>')
    html = Renderer().email(build_digest([evil], {"everything": ["a"]})).html
    assert 'It\'s "quoted" &amp; &lt;b&gt;bold&lt;/b&gt;' in html
    assert 'href="https://arxiv.org/abs/2506.9&#34;&gt;&lt;script&gt;x"' in html
    assert "<script" not in html


@pytest.mark.slow
def test_papers_rendered_for_other_digests_are_reused_exactly() -> None:
    warm = Renderer()
    ranked = with_similarities(golden_digest())
    for digest in (large_digest(300), weekly_digest(), ranked, golden_digest(), empty_digest(), similar_digest()):
        warm.email(digest)
        warm.slack(digest)
    for digest in (golden_digest(), weekly_digest(), large_digest(300), ranked, similar_digest()):
        fresh = Renderer()
        assert warm.email(digest, unsubscribe_url=UNSUBSCRIBE) == fresh.email(digest, unsubscribe_url=UNSUBSCRIBE)
        assert warm.slack(digest) == fresh.slack(digest)


def test_the_same_paper_is_marked_by_each_digest_s_own_hits() -> None:
    paper = load_papers()[0]
    renderer = Renderer()

    def digest_marking(word: str) -> Digest:
        start = paper.title.lower().index(word)
        hit = Hit(word, Field.TITLE, start, start + len(word))
        return replace(golden_digest(), sections=(DigestSection(word, word, (Match(paper, word, (hit,)),)),))

    first, second = paper.title.split()[0].lower(), paper.title.split()[-1].lower()
    for word in (first, second, first):
        html = renderer.email(digest_marking(word)).html
        marked = re.findall(r"<mark[^>]*>([^<]*)</mark>", html)
        assert [m.lower() for m in marked] == [word], (word, marked)


@pytest.mark.parametrize(
    "digest",
    [large_digest(300), with_similarities(large_digest(200)), large_rich_weekly_digest()],
    ids=["large", "ranked", "rich-weekly"],
)
def test_papers_listed_by_title_only_read_the_same_from_their_brief_cards(digest: Digest) -> None:
    env = Renderer().env
    briefly, fully = EmailRenderer(env), EmailRenderer(env)
    fully.brief = fully.card  # each paper listed by title only gets its whole card, abstract rendered
    for limit in (100_000, 60_000):
        brief = briefly.render(digest, UNSUBSCRIBE, limit)
        assert "listed by title only" in brief.html, "the digest is too large to show every paper in full"
        assert brief == fully.render(digest, UNSUBSCRIBE, limit)


@pytest.mark.parametrize("limit", [0, 5, 37, 60, 99, 100, 1000])
def test_largest_fitting_finds_the_fullest_layout_from_any_guess(limit: int) -> None:
    sizes = [10 + k * k // 4 for k in range(40)]  # grows with the number of papers in full

    def attempt(full: int) -> _Layout:
        return _Layout(f"{full}", sizes[full], {})

    best = max((k for k in range(40) if sizes[k] <= limit), default=0)
    for guess in (-3, 0, 1, 7, 20, 39, 45):
        assert _largest_fitting(39, attempt, limit, guess).html == f"{best}", guess


def test_the_size_prediction_learns_each_papers_markup_and_then_needs_two_measurements() -> None:
    gains = [800 + 37 * (k % 5) for k in range(120)]

    def size(full: int) -> int:  # a base, then each paper in full: its gain and 310 bytes of markup
        return 40_000 + sum(gains[:full]) + 310 * full

    measured: list[int] = []

    def size_at(full: int) -> int:
        measured.append(full)
        return size(full)

    best = max(k for k in range(len(gains) + 1) if size(k) <= 100_000)
    first, markup = _predicted(size_at, gains, 100_000, markup=0.0)
    assert (first, markup) == (best, 310)

    measured.clear()
    again, _ = _predicted(size_at, gains, 100_000, markup)
    assert again == best and measured == [0, best], "none in full, then the right layout at once"


OPEN = '<mark style="background-color: #fff3b0; color: #1a1a1a; padding: 0 1px;">'


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.text(alphabet="ab <&é", max_size=120), st.booleans()), max_size=40))
def test_marked_text_breaks_into_lines_only_at_its_own_spaces(parts):
    """Long marked text (an abstract) is broken into lines at spaces of its text, never of a tag, so that the HTML part
    can go without quoted-printable; a line break is a space to HTML, so it reads the same."""
    runs = tuple(Segment(text, hit=hit) for text, hit in parts if text)
    folded = str(marked(runs, OPEN, "</mark>"))
    whole = "".join(f"{OPEN}{html_text(s.text)}</mark>" if s.hit else html_text(s.text) for s in runs)
    assert folded.replace("\n", " ") == whole, "only spaces became line breaks"
    assert folded.count(OPEN) == whole.count(OPEN), "never a space of a tag"
    for line in folded.split("\n")[:-1]:
        text_only = line.replace(OPEN, "x" * len(OPEN))
        assert " " not in text_only[HTML_LINE:], "a line ends at the last space that fits, or at the first after it"
