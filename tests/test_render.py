"""Rendering digests: golden files, email structure and limits, Slack Block Kit limits and escaping, accessibility.

Regenerate the golden files with ``UPDATE_GOLDEN=1 pytest tests/test_render.py`` and review the diff.
"""

from __future__ import annotations

import json
import os
import re
import textwrap
import time
from dataclasses import replace
from datetime import UTC, date, datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest

from notifier.models import Digest, DigestSection, Field, Hit, Match, Paper, SlackMessage
from notifier.render.email import ABSTRACT_STEPS, CONTRAST_PAIRS, PALETTE, EmailRenderer, subject, wrap
from notifier.render.highlight import Segment, author_list, shorten, spans_for, term_label
from notifier.render.pool import RenderFailure, render_all
from notifier.render.renderer import Envelope, Renderer, RenderJob, builtin_templates
from notifier.render.slack import bold_segments, decode_payload, encode_payload, escape
from tests.digest_factory import (
    GOLDEN_RULES,
    SD_0603,
    build_digest,
    empty_digest,
    golden_digest,
    hostile_papers,
    large_digest,
    load_papers,
    weekly_digest,
)

GOLDEN = Path(__file__).resolve().parent / "golden"
UNSUBSCRIBE = "https://lab.example/unsubscribe?token=abc"


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


@pytest.fixture(scope="module")
def large() -> Digest:
    return large_digest(300)


def slack_json(messages: list[SlackMessage]) -> str:
    """The payload of ``messages`` as the Slack channel posts it, indented for review."""
    payload = encode_payload(messages)
    assert decode_payload(payload) == messages
    return json.dumps(json.loads(payload), indent=2, ensure_ascii=False) + "\n"


def check_golden(name: str, actual: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual, encoding="utf-8")
    assert path.exists(), f"missing {path}; run with UPDATE_GOLDEN=1"
    assert actual == path.read_text(encoding="utf-8"), f"{name} differs; run with UPDATE_GOLDEN=1 and review the diff"


# Golden files


def test_golden_daily(renderer: Renderer) -> None:
    email = renderer.email(golden_digest(), unsubscribe_url=UNSUBSCRIBE)
    check_golden("daily.subject.txt", email.subject + "\n")
    check_golden("daily.txt", email.text)
    check_golden("daily.html", email.html)
    check_golden("daily.slack.json", slack_json(renderer.slack(golden_digest())))


def test_golden_weekly_and_empty(renderer: Renderer) -> None:
    weekly = renderer.email(weekly_digest())
    check_golden("weekly.txt", weekly.text)
    check_golden("weekly.slack.json", slack_json(renderer.slack(weekly_digest())))
    check_golden("empty.txt", renderer.email(empty_digest()).text)


def test_rendering_is_deterministic(renderer: Renderer) -> None:
    assert renderer.email(golden_digest()) == Renderer().email(golden_digest())
    assert renderer.slack(golden_digest()) == Renderer().slack(golden_digest())


# Subject


def test_subject_daily_and_weekly() -> None:
    assert subject(golden_digest()) == (
        "[arXiv] 12 papers · speech enhancement (4), voice conversion (4), music (4), safety (2) · Tue 3 Jun"
    )
    assert subject(weekly_digest()).startswith("[arXiv weekly] 14 papers · speech enhancement (6)")
    assert subject(weekly_digest()).endswith(" · 2–8 Jun")
    assert subject(empty_digest()) == "[arXiv] No new papers · Wed 31 Dec"


def test_subject_is_one_short_line_whatever_the_rules() -> None:
    papers = load_papers(SD_0603)
    rules = {f"rule {i}\r\nBcc: x@example.org " + "long" * i: ["speech"] for i in range(40)}
    digest = build_digest(papers, rules, subscriber="Eve\r\nBcc: y@example.org")
    text = subject(digest)
    assert len(text) <= 200
    assert not re.search(r"[\r\n\x00-\x1f\u2028\u2029]", text)
    assert re.search(r"\+\d+ more · Tue 3 Jun$", text)


# Email: content


def test_every_paper_appears_in_both_parts(renderer: Renderer) -> None:
    digest = golden_digest()
    email = renderer.email(digest)
    for paper in digest.papers:
        assert paper.abs_url in email.html
        assert paper.abs_url in email.text


def test_html_is_self_contained_and_escaped(renderer: Renderer) -> None:
    html = renderer.email(golden_digest(), unsubscribe_url=UNSUBSCRIBE).html
    assert '<html lang="en">' in html
    assert '<meta name="color-scheme" content="light dark">' in html
    assert '<meta name="supported-color-schemes" content="light dark">' in html
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img" not in html and "<link" not in html and "url(" not in html and "@import" not in html
    assert "src=" not in html
    assert "&lt;!channel&gt;" in html
    assert "\r" not in html
    # The hostile title's CR/LF became a space: it is one line in the title link.
    assert re.search(r"Speech Enhancement</mark> +Bcc: victim@example.org</a>", html)
    assert "max-width:680px" in html
    assert "overflow-wrap:anywhere" in html and "word-break:break-word" in html


def test_paper_details(renderer: Renderer) -> None:
    email = renderer.email(golden_digest(), unsubscribe_url=UNSUBSCRIBE)
    html, text = email.html, email.text
    for badge in ("cross-list", "updated (v2)", "backfilled"):
        assert f">{badge}</span>" in html
        assert badge in text
    assert "cs.SD (also eess.AS, cs.CR)" in text
    assert "et al. (34 authors)" in html and "et al. (34 authors)" in text
    assert "Journal ref: J. Audio Eng. Soc. 73 (2025) 1-12" in text
    assert "https://arxiv.org/pdf/2506.99901v2" in html and "https://arxiv.org/html/2506.99901v2" in html
    assert "matched: speech enhancement (title), speech enhancement (abstract)" in text
    assert "<mark " in html
    assert "Comment: Accepted at Interspeech 2025" in text


def test_footer_explains_the_mail(renderer: Renderer) -> None:
    email = renderer.email(golden_digest(), unsubscribe_url=UNSUBSCRIBE)
    for part in (email.text, email.html):
        assert "Ada Lovelace" in part
        assert "subscribers.yaml" in part
        assert all(rule in part for rule in GOLDEN_RULES)
    assert f"Unsubscribe: {UNSUBSCRIBE}" in email.text
    assert f'href="{UNSUBSCRIBE}"' in email.html
    assert "Unsubscribe" not in renderer.email(golden_digest()).text


def test_text_part_wraps_at_78_columns(renderer: Renderer, large: Digest) -> None:
    for digest in (golden_digest(), weekly_digest(), large):
        for line in renderer.email(digest, unsubscribe_url=UNSUBSCRIBE).text.splitlines():
            assert len(line) <= 78 or re.fullmatch(r"\s*(\w+:\s+)?https://\S+", line), line


def test_empty_digest_says_why(renderer: Renderer) -> None:
    email = renderer.email(empty_digest())
    assert "arXiv did not announce on Wed 31 Dec (holiday)." in email.text
    assert "arXiv did not announce on Wed 31 Dec (holiday)." in email.html
    assert len(email.text) < 800
    nothing = renderer.email(replace(empty_digest(), empty_reason=None))
    assert "nothing matched your rules" in nothing.text


def test_weekly_has_days_and_totals(renderer: Renderer) -> None:
    digest = weekly_digest()
    # Give the papers categories so the per-category totals show.
    sections = tuple(
        replace(s, matches=tuple(replace(m, paper=replace(m.paper, categories=("eess.AS",))) for m in s.matches))
        for s in digest.sections
    )
    email = renderer.email(replace(digest, sections=sections))
    text, html = email.text, email.html
    assert "Tue 3 Jun 2025 · 11 papers" in text and "Wed 4 Jun 2025 · 3 papers" in text
    assert "By category: eess.AS: 14" in text
    assert "eess.AS: 11" in text and "eess.AS: 3" in text
    assert "<h2>Tue 3 Jun 2025</h2>" in re.sub(r" style=\"[^\"]*\"", "", html)
    assert "11 papers · speech enhancement: 5 · voice conversion: 6" in html


# Email: size


def test_large_digest_fits_gmail_and_keeps_every_paper(renderer: Renderer, large: Digest) -> None:
    email = renderer.email(large)
    assert len(email.html.encode("utf-8")) <= 100_000
    assert "listed by title only" in email.html
    for paper in large.papers:
        assert paper.abs_url in email.html, paper.arxiv_id
        assert paper.abs_url in email.text, paper.arxiv_id
    assert email.html.count('class="paper"') >= 1


def test_a_digest_far_too_large_renders_cards_only_at_the_shortest_abstracts(
    large: Digest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parts of its cards made once for every abstract length (heads, tails) tell that no longer abstract
    could fit, so no card is rendered with one only to be thrown away; the email is the same."""
    expected = Renderer().email(large)
    lengths: list[int] = []
    card = EmailRenderer._card

    def counted(self: EmailRenderer, paper: Paper, hits: tuple[Hit, ...], chars: int, *rest: object) -> object:
        lengths.append(chars)
        return card(self, paper, hits, chars, *rest)  # type: ignore[arg-type]

    monkeypatch.setattr(EmailRenderer, "_card", counted)
    assert Renderer().email(large) == expected
    assert lengths and set(lengths) == {ABSTRACT_STEPS[-1]}


def test_shortening_steps_before_going_compact(renderer: Renderer) -> None:
    digest = golden_digest()
    full = renderer.email(digest, max_html_bytes=10**7).html
    tighter = renderer.email(digest, max_html_bytes=len(full.encode()) - 2000).html
    assert "abstracts are shortened" in tighter and "listed by title only" not in tighter
    tiny = renderer.email(digest, max_html_bytes=1).html  # cannot fit: everything compact, nothing dropped
    assert all(p.abs_url in tiny for p in digest.papers)


# Highlighting and shortening


def test_shorten_keeps_first_highlight_and_never_cuts_inside_one() -> None:
    text = "word " * 300 + "reinforcement learning is here. " + "tail " * 100
    start = text.index("reinforcement")
    spans = [(start, start + len("reinforcement learning"))]
    segments = shorten(text, spans, 600)
    joined = "".join(s.text for s in segments)
    assert segments[0].text.startswith("…") and joined.endswith("…")
    assert Segment("reinforcement learning", hit=True) in segments
    assert len(joined) <= 620
    # A cut that would fall inside the highlight moves to its end.
    early = "x " * 290 + "long highlighted phrase here" + " y" * 200
    at = early.index("long")
    cut = shorten(early, [(at, at + 28)], 590)
    assert Segment("long highlighted phrase here", hit=True) in cut


def test_short_text_is_untouched() -> None:
    assert shorten("short text", [(0, 5)], 600) == (Segment("short", True), Segment(" text"))


def test_spans_merge_and_clamp() -> None:
    hits = [Hit("a", Field.TITLE, 0, 2), Hit("b", Field.TITLE, 1, 5), Hit("c", Field.TITLE, 50, 90)]
    assert spans_for("ab cd ef gh", hits, Field.TITLE) == [(0, 5)]
    # A hit inside a word marks the whole word.
    assert spans_for("large language models", [Hit("m", Field.TITLE, 15, 20)], Field.TITLE) == [(15, 21)]


def test_authors_shortened_but_matched_author_kept() -> None:
    paper = Paper("1", 1, "t", "a", tuple(f"Author {i}" for i in range(20)))
    listing = author_list(paper, (Hit('au:"Author 15"', Field.AUTHORS, 0, 9, index=15),))
    assert listing.text == "Author 0, Author 1, Author 2, Author 3, Author 4, Author 5, … Author 15 et al. (20 authors)"


def test_term_labels() -> None:
    assert term_label('"reinforcement learning"') == "reinforcement learning"
    assert term_label('ti:"Graph Neural"') == "Graph Neural"
    assert term_label("compiler") == "compiler"


# Slack


def all_text(messages: list[SlackMessage]) -> str:
    return slack_json(messages)


def test_slack_limits_on_a_large_digest(renderer: Renderer, large: Digest) -> None:
    messages = renderer.slack(large)
    assert len(messages) > 1
    for message in messages:
        assert message.text
        assert len(message.blocks) <= 50
        for block in message.blocks:
            if block["type"] == "header":
                text = block["text"]
                assert isinstance(text, dict) and text["type"] == "plain_text" and len(text["text"]) <= 150
            if block["type"] == "section":
                text = block["text"]
                assert isinstance(text, dict) and len(text["text"]) <= 3000
    dumped = all_text(messages)
    for paper in large.papers:
        assert f"<{paper.abs_url}|" in dumped, paper.arxiv_id
    assert messages[0].blocks[0]["type"] == "header"
    assert "(part 2 of" in messages[1].text


def test_slack_escapes_paper_text(renderer: Renderer) -> None:
    messages = renderer.slack(golden_digest())
    dumped = all_text(messages)
    for bad in ("<!channel>", "<!here>", "<!everyone>", "<@U123ABC>", "<https://evil.example", "<script>", "<b>"):
        assert bad not in dumped
    assert "@here" not in dumped  # a word joiner follows every @
    assert "&lt;!channel&gt;" in dumped
    assert "*bold*" not in dumped and "_italic_" not in dumped and "~strike~" not in dumped
    assert "`code`" not in dumped
    assert "&amp;amp;amp;" in dumped  # the display text "&amp;amp;" shows as written
    assert "\r" not in dumped and "Bcc: victim" in dumped


def test_slack_structure(renderer: Renderer) -> None:
    [message] = renderer.slack(golden_digest())
    header = message.blocks[0]
    assert header == {
        "type": "header",
        "text": {"type": "plain_text", "text": "arXiv digest · Tue 3 Jun · 12 papers", "emoji": False},
    }
    sections = [b["text"]["text"] for b in message.blocks if b["type"] == "section"]  # type: ignore[index]
    assert "*speech enhancement* — 4 papers" in sections[0]
    assert any("*<https://arxiv.org/abs/2506.00809|FUSE:" in s for s in sections)
    assert message.blocks[-1]["type"] == "context"


def test_slack_empty_digest(renderer: Renderer) -> None:
    [message] = renderer.slack(empty_digest())
    assert "holiday" in message.text
    assert len(message.blocks) == 2


def test_bold_widens_to_whole_words() -> None:
    segments = (Segment("new "), Segment("compiler", True), Segment("s, fast"))
    assert bold_segments(segments) == "new *compilers*, fast"
    assert bold_segments((Segment("re"), Segment("inforce", True), Segment("ment"))) == "*reinforcement*"
    assert escape("a*b_c~d`e <&>") == "a∗bˍc∼dˋe &lt;&amp;&gt;"


# Templates


def test_user_templates_override_ours(tmp_path: Path) -> None:
    (tmp_path / "email.txt").write_text("Custom digest for {{ subscriber }}\n", encoding="utf-8")
    email = Renderer(tmp_path).email(golden_digest())
    assert email.text == "Custom digest for Ada Lovelace\n"
    assert '<html lang="en">' in email.html  # email.html falls back to ours


def test_builtin_templates_are_the_package_data_of_notifier() -> None:
    import jinja2

    folder = Path(__file__).resolve().parents[1] / "templates"
    env = jinja2.Environment(loader=builtin_templates())
    source, filename, _uptodate = env.loader.get_source(env, "_paper.html")  # type: ignore[union-attr]
    assert "{% macro head(paper) %}" in source
    assert filename is not None and Path(filename).resolve() == folder / "_paper.html", "notifier/templates links here"
    with pytest.raises(jinja2.TemplateNotFound):
        env.loader.get_source(env, "../pyproject.toml")  # type: ignore[union-attr]


def test_a_text_template_that_defines_only_the_body_renders_each_paper_with_it(tmp_path: Path) -> None:
    (tmp_path / "_paper.txt").write_text(
        "{% macro feedback(s) %}{% endmacro %}\n{% macro body(paper) %}    <{{ paper.abs_url }}>\n{% endmacro %}\n",
        encoding="utf-8",
    )
    digest = golden_digest()
    text = Renderer(tmp_path).email(digest).text
    assert all(f"    <{paper.abs_url}>" in text for paper in digest.papers)
    assert "abstract: " not in text, "our head, abstract and tail are not used"


def test_a_text_template_with_the_three_parts_needs_no_body(tmp_path: Path) -> None:
    ours = (Path(__file__).resolve().parents[1] / "templates" / "_paper.txt").read_text(encoding="utf-8")
    without_body = ours[: ours.index("{% macro body(paper) %}")]
    (tmp_path / "_paper.txt").write_text(without_body, encoding="utf-8")
    assert Renderer(tmp_path).email(golden_digest()).text == Renderer().email(golden_digest()).text


def test_strict_undefined(tmp_path: Path) -> None:
    import jinja2

    (tmp_path / "email.txt").write_text("{{ no_such_thing }}\n", encoding="utf-8")
    with pytest.raises(jinja2.UndefinedError):
        Renderer(tmp_path).email(golden_digest())


def test_a_chunk_renders_with_the_templates_it_started_with_and_the_next_one_sees_the_change(tmp_path: Path) -> None:
    template = tmp_path / "email.txt"
    template.write_text("first {{ subscriber }}\n", encoding="utf-8")
    renderer = Renderer(tmp_path)
    with renderer.templates_checked_once():
        before = renderer.email(golden_digest()).text
        template.write_text("second {{ subscriber }}\n", encoding="utf-8")
        os.utime(template, (time.time() + 5, time.time() + 5))  # a later mtime, whatever the file system's clock
        during = renderer.email(golden_digest()).text
    after = renderer.email(golden_digest()).text
    assert (before, during, after) == ("first Ada Lovelace\n", "first Ada Lovelace\n", "second Ada Lovelace\n")


def test_templates_that_do_not_load_fail_each_digest_of_a_chunk_with_their_error(tmp_path: Path) -> None:
    (tmp_path / "email.txt").write_text("{% if %}\n", encoding="utf-8")
    renderer = Renderer(tmp_path)
    envelope = Envelope(
        "digest@lab.example", "ada@lab.example", "<1@lab.example>", datetime(2025, 6, 4, tzinfo=UTC), "lab.example"
    )
    email = RenderJob(golden_digest(), envelope)
    outcomes = render_all(renderer, [email, email])
    assert [type(outcome) for outcome in outcomes] == [RenderFailure, RenderFailure]
    assert all("TemplateSyntaxError" in outcome.reason for outcome in outcomes if isinstance(outcome, RenderFailure))


# Accessibility


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_title = tag == "title"

    def handle_endtag(self, tag: str) -> None:
        self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data


def luminance(hex_colour: str) -> float:
    channels = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


@pytest.mark.parametrize("digest", [golden_digest(), weekly_digest(), empty_digest()], ids=["daily", "weekly", "empty"])
def test_html_basics(renderer: Renderer, digest: Digest) -> None:
    html = renderer.email(digest).html
    parser = _Tags()
    parser.feed(html)
    html_tag = next(attrs for tag, attrs in parser.tags if tag == "html")
    assert html_tag.get("lang") == "en"
    assert parser.title.strip() == subject(digest)
    assert all(attrs.get("alt") for tag, attrs in parser.tags if tag == "img")
    assert all(attrs.get("role") == "presentation" for tag, attrs in parser.tags if tag == "table")


@pytest.mark.parametrize("scheme", sorted(PALETTE))
def test_palette_contrast(scheme: str) -> None:
    colours = PALETTE[scheme]
    for foreground, background in CONTRAST_PAIRS:
        ratio = contrast(colours[foreground], colours[background])
        assert ratio >= 4.5, f"{scheme}: {foreground} on {background} is {ratio:.2f}"


def test_html_uses_only_palette_colours(renderer: Renderer) -> None:
    html = renderer.email(golden_digest()).html
    used = {c.lower() for c in re.findall(r"#[0-9a-fA-F]{6}\b", html)}
    known = {c for scheme in PALETTE.values() for c in scheme.values()}
    assert used and used <= known, used - known
    assert not re.search(r"#[0-9a-fA-F]{3}\b", html)


def test_hostile_papers_alone(renderer: Renderer) -> None:
    day = date(2025, 6, 3)
    papers = hostile_papers(day)
    digest = build_digest(papers, {"everything": ["a"]})
    email = renderer.email(digest)
    assert all(p.abs_url in email.text for p in papers)
    section = DigestSection("x\r\ny", "q", (Match(papers[0], "x\r\ny", ()),))
    odd = replace(digest, sections=(section,))
    assert "\n" not in renderer.email(odd).subject


def test_a_lone_surrogate_renders_as_a_replacement_character(renderer: Renderer) -> None:
    # YAML's "\ud800" escape makes a string no encoding can carry; it must not stop the digest.
    digest = build_digest(load_papers()[:10], {"speech \ud800 rule": ['"speech"']}, subscriber="Ada \udfff")
    email = renderer.email(digest)
    for part in (email.subject, email.text, email.html):
        part.encode("utf-8")
    assert "speech \ufffd rule" in email.subject and "speech \ufffd rule" in email.html
    assert "Ada \ufffd" in email.text


def test_wrap_fills_lines_as_textwrap_does() -> None:
    texts = [p.abstract for p in load_papers()[:40]] + [
        "",
        "x" * 200,
        "a " + "y" * 80 + " b",
        "https://example.org/" + "z" * 100 + " tail",
        "\tspaced\n\nout  text\u2028here\xa0nbsp",
    ]
    for text in texts:
        for indent, first in (("", None), ("    ", None), ("    ", ""), ("    ", " 12. ")):
            for width in (78, 30, 10):
                start = indent if first is None else first
                expected = textwrap.fill(
                    " ".join(text.split()),
                    width,
                    initial_indent=start,
                    subsequent_indent=indent,
                    break_on_hyphens=False,
                )
                assert wrap(text, indent, first, width) == expected, (text[:40], indent, first, width)
