"""Rich entries: papers of rich sections with their LLM summary (tags, institution, TL;DR), the other sections of
such a digest one line per paper, in the HTML part, the text part and Slack; escaping of what the LLM wrote, and
the size limits with summaries.

Regenerate the golden files with ``UPDATE_GOLDEN=1 pytest tests/test_render_rich.py`` and review the diff.
"""

from __future__ import annotations

import re
from dataclasses import replace
from html.parser import HTMLParser

import pytest

from notifier.models import Digest, SlackMessage
from notifier.render.highlight import summary_view
from notifier.render.renderer import Renderer
from notifier.render.slack import MAX_MESSAGE_CHARS, summary_text
from tests.digest_factory import (
    SD_0603,
    build_digest,
    fake_summary,
    golden_digest,
    hostile_summary,
    large_rich_weekly_digest,
    load_papers,
    rich_weekly_digest,
    weekly_digest,
    with_summaries,
)
from tests.test_render import check_golden, slack_json

HOSTILE_TEXT = "<script>alert(1)</script><img src=x onerror=alert(2)> <!channel> @here <@U123>"


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


def section_texts(messages: list[SlackMessage]) -> list[str]:
    """Every mrkdwn or plain text of every block, in order."""
    out: list[str] = []
    for message in messages:
        for block in message.blocks:
            text = block.get("text")
            if isinstance(text, dict):
                out.append(str(text["text"]))
            for element in block.get("elements", ()):  # type: ignore[attr-defined]
                out.append(str(element["text"]))
    return out


class Elements(HTMLParser):
    """The start tags of an HTML document with their attributes, and its text."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def named(self, name: str) -> list[dict[str, str | None]]:
        return [attrs for tag, attrs in self.tags if tag == name]


# Golden files


def test_golden_rich_weekly(renderer: Renderer) -> None:
    email = renderer.email(rich_weekly_digest())
    check_golden("rich-weekly.txt", email.text)
    check_golden("rich-weekly.html", email.html)
    check_golden("rich-weekly.slack.json", slack_json(renderer.slack(rich_weekly_digest())))


# What a rich entry shows


def test_a_rich_paper_shows_its_tags_institution_and_summary(renderer: Renderer) -> None:
    digest = rich_weekly_digest()
    first = digest.sections[0].matches[0].paper
    summary = digest.summary_of(first)
    assert summary is not None and summary.institution
    email = renderer.email(digest)
    keywords = ", ".join(summary.keywords)
    tags = f"Tags: [{summary.topic}], [{summary.subtopic}], [{keywords}]"
    start = email.text.index(first.title[:40])
    flat = " ".join(email.text[start : email.text.index(f"abstract: {first.abs_url}")].split())
    assert tags in flat
    assert f"Institution: {summary.institution}" in flat
    assert f"Summary (LLM): {summary.summary}" in flat
    html = re.sub(r' style="[^"]*"', "", email.html)
    assert f'<p class="meta">{tags}</p>' in html
    assert f'<p class="meta">Institution: {summary.institution}</p>' in html
    assert f'<p class="meta tldr"><b>Summary (LLM):</b> {summary.summary}</p>' in html
    # The summary block is set apart: a left border, in the muted colour, bold label.
    assert re.search(r'<p class="meta tldr" style="[^"]*border-left:3px solid #[0-9a-f]{6}', email.html)


def test_a_rich_paper_without_a_summary_shows_as_today(renderer: Renderer) -> None:
    # One section: rich but with no summary made in time renders byte for byte as when it was not rich.
    digest = build_digest(load_papers(SD_0603), {"speech enhancement": ['"speech enhancement"']})
    rich = replace(digest, sections=tuple(replace(s, rich=True) for s in digest.sections))
    assert rich.has_rich and not rich.summaries
    assert renderer.email(rich) == renderer.email(digest)
    assert renderer.slack(rich) == renderer.slack(digest)


def test_papers_without_a_summary_have_no_empty_labels(renderer: Renderer) -> None:
    digest = rich_weekly_digest()
    missing = [m.paper for m in digest.sections[0].matches if digest.summary_of(m.paper) is None]
    assert len(missing) == 2
    text = renderer.email(digest).text
    for paper in missing:
        start = text.index(paper.title[:40])
        entry = text[start : text.index("matched:", start)]
        assert "Tags:" not in entry and "Institution:" not in entry and "Summary (LLM)" not in entry
    assert text.count("Summary (LLM):") == len(digest.summaries)
    assert text.count("Institution:") == 1


def test_other_sections_are_one_line_per_paper(renderer: Renderer) -> None:
    digest = rich_weekly_digest()
    email = renderer.email(digest)
    html = re.sub(r' style="[^"]*"', "", email.html)
    for section in digest.sections[1:]:
        for match in section.matches:
            paper = match.paper
            byline = f"{paper.authors[0]} et al." if len(paper.authors) > 1 else paper.authors[0]
            assert f"    {byline} · {paper.abs_url}\n" in email.text
            link = f'<li><a href="{paper.abs_url}">{paper.title}</a>'
            assert f'{link} <span class="meta">· {byline} · arXiv:{paper.arxiv_id}' in html, paper.arxiv_id
    # Only the rich section's papers are shown in full.
    assert html.count('<td class="paper">') == len(digest.sections[0].matches)


def test_a_paper_in_a_rich_and_a_plain_section_is_shown_in_full_under_the_rich_one(renderer: Renderer) -> None:
    digest = rich_weekly_digest()
    both = {m.paper.arxiv_id for m in digest.sections[0].matches} & {
        m.paper.arxiv_id for s in digest.sections[1:] for m in s.matches
    }
    assert both  # ReFlow-VC: denoising, and voice conversion
    text = renderer.email(digest).text
    for arxiv_id in both:
        assert f"abstract: https://arxiv.org/abs/{arxiv_id}" in text
        assert "(shown above under" not in text


def test_weekly_days_count_papers_per_category_and_per_rule(renderer: Renderer) -> None:
    digest = rich_weekly_digest()
    email = renderer.email(digest)
    assert "Mon 2 Jun 2025 · 14 papers\nspeech enhancement: 5 · music: 5 · voice conversion: 5\n" in email.text
    assert "eess.AS: 8 · cs.SD: 6\n" in email.text
    html = re.sub(r' style="[^"]*"', "", email.html)
    assert "14 papers · speech enhancement: 5 · music: 5 · voice conversion: 5<br>eess.AS: 8 · cs.SD: 6" in html
    days = [t for t in section_texts(renderer.slack(digest)) if t.startswith("*Mon 2 Jun 2025*")]
    assert days == ["*Mon 2 Jun 2025* — 14 papers · speech enhancement: 5 · music: 5 · voice conversion: 5\n"
                    "eess.AS: 8 · cs.SD: 6"]  # fmt: skip


def test_digests_without_rich_sections_render_as_before(renderer: Renderer) -> None:
    # The golden files of tests/test_render.py hold the rest; summaries of a digest with no rich section are unused.
    digest = golden_digest()
    papers = digest.papers
    stray = replace(digest, summaries={(p.arxiv_id, p.version): fake_summary(p) for p in papers})
    assert renderer.email(stray) == renderer.email(digest)
    assert renderer.slack(stray) == renderer.slack(digest)


# Escaping what the LLM wrote


def hostile_digest() -> Digest:
    digest = with_summaries(weekly_digest(), ["speech enhancement"])
    summaries = {key: hostile_summary(digest.sections[0].matches[0].paper) for key in list(digest.summaries)[:1]}
    return replace(digest, summaries={**digest.summaries, **summaries})


def test_hostile_summary_in_html_is_text(renderer: Renderer) -> None:
    html = renderer.email(hostile_digest()).html
    found = Elements(html)
    assert not found.named("script") and not found.named("img") and not found.named("i")
    assert not [a for a in found.named("a") if (a.get("href") or "").lower().startswith("javascript")]
    assert all(not key.startswith("on") for _, attrs in found.tags for key in attrs)
    # Our label is the only <b>: the topic's <b>x</b> is text.
    assert len(found.named("b")) == html.count("Summary (LLM):")
    text = "".join(found.text)
    assert HTML_TEXT in text
    assert (
        'Tags: [<b>x</b>], [*bold* _it_ `code`], [<a href="javascript:alert(3)">k</a>, <https://evil.example|click>]'
        in text
    )
    assert "Institution: <i>Evil</i> University Subject: hi" in text


HTML_TEXT = HOSTILE_TEXT + " Bcc: x@example.org"


def test_hostile_summary_in_slack_is_inert(renderer: Renderer) -> None:
    dumped = slack_json(renderer.slack(hostile_digest()))
    for bad in ("<!channel>", "<@U123>", "<https://evil.example", "<script>", "<b>", "<a href", "*bold*", "_it_"):
        assert bad not in dumped
    assert "@here" not in dumped  # a word joiner follows every @
    assert "&lt;!channel&gt;" in dumped and "&lt;@\u2060U123&gt;" in dumped
    assert "_Summary (LLM):_ &lt;script&gt;alert(1)&lt;/script&gt;" in dumped
    assert "\\r" not in dumped and "Bcc: x@\u2060example.org" in dumped


def test_hostile_summary_in_the_text_part_is_literal_and_starts_no_line(renderer: Renderer) -> None:
    text = renderer.email(hostile_digest()).text
    assert f"Summary (LLM): {HOSTILE_TEXT} Bcc: x@example.org" in " ".join(text.split())
    assert "Institution: <i>Evil</i> University Subject: hi" in " ".join(text.split())
    assert "\r" not in text
    for line in text.splitlines():
        assert not re.match(r"(Bcc|Subject|To|From):", line), line
    assert renderer.email(hostile_digest()).subject == renderer.email(weekly_digest()).subject


# Size


def test_large_rich_weekly_fits_gmail_and_keeps_every_summary(renderer: Renderer) -> None:
    digest = large_rich_weekly_digest()
    assert len(digest.summaries) == 70 and len(digest.sections[1].matches) > 150
    email = renderer.email(digest)
    assert len(email.html.encode("utf-8")) <= 100_000
    for paper in digest.papers:
        assert paper.abs_url in email.html and paper.abs_url in email.text, paper.arxiv_id
    for summary in digest.summaries.values():
        assert summary.summary.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") in email.html
        assert " ".join(summary.summary.split()[:8]) in " ".join(email.text.split())
    assert email.text.count("Summary (LLM):") == 70


def test_when_summaries_alone_are_too_big_the_first_papers_keep_theirs_and_the_email_still_fits(
    renderer: Renderer,
) -> None:
    digest = large_rich_weekly_digest(rich_papers=160)
    assert len(digest.summaries) > 150
    email = renderer.email(digest)
    assert len(email.html.encode("utf-8")) <= 100_000
    for paper in digest.papers:
        assert paper.abs_url in email.html and paper.abs_url in email.text, paper.arxiv_id
    kept = email.html.count("Summary (LLM):")
    assert 0 < kept < len(digest.summaries)
    assert kept == email.text.count("Summary (LLM):"), "both parts keep the same summaries"
    shown = [m.paper for m in digest.first_matches if m.paper.key in digest.summaries]
    escaped = [p for p in shown if digest.summaries[p.key].summary.replace("<", "&lt;") in email.html]
    assert escaped == shown[:kept], "the summaries kept are those of the papers shown first"


def test_abstracts_shorten_before_summaries(renderer: Renderer) -> None:
    digest = rich_weekly_digest()
    full = renderer.email(digest, max_html_bytes=10**7).html
    for cut in (2000, 6000):
        tighter = renderer.email(digest, max_html_bytes=len(full.encode()) - cut).html
        assert "abstracts are shortened" in tighter and "listed by title only" not in tighter
        assert tighter.count("Summary (LLM):") == full.count("Summary (LLM):") == len(digest.summaries)
    # With the abstracts of summarised papers left out, the summaries stay.
    without = renderer.email(digest, max_html_bytes=len(full.encode()) - 9000).html
    assert without.count("Summary (LLM):") == len(digest.summaries)
    first = digest.sections[0].matches[0].paper
    assert first.abstract[:60] not in without


def test_slack_limits_with_summaries(renderer: Renderer) -> None:
    digest = large_rich_weekly_digest()
    messages = renderer.slack(digest)
    assert len(messages) > 1
    for message in messages:
        assert len(message.blocks) <= 50
        texts = section_texts([message])
        assert sum(map(len, texts)) <= MAX_MESSAGE_CHARS
        assert all(len(text) <= 3000 for text in texts)
    dumped = "\n".join(section_texts(messages))
    for paper in digest.papers:
        assert f"<{paper.abs_url}|" in dumped, paper.arxiv_id
    for summary in digest.summaries.values():
        view = summary_view(summary)
        assert view is not None and summary_text(view) in dumped


def test_slack_keeps_a_long_summary_and_drops_the_excerpt(renderer: Renderer) -> None:
    # Entities make the escaped text longer than the text: a block that would not fit with the excerpt.
    paper = replace(
        load_papers(SD_0603)[0],
        title="T&" * 150,
        abstract="audio <&> " * 100,
        authors=tuple(f"Author &amp; Name {i}" for i in range(40)),
    )
    summary = replace(fake_summary(paper), summary="<&> " * 400, keywords=("k&" * 50,) * 5, institution="I&" * 150)
    digest = build_digest([paper], {"all": ["audio"]})
    digest = replace(digest, sections=(replace(digest.sections[0], rich=True),), summaries={summary.key: summary})
    texts = section_texts(renderer.slack(digest))
    block = next(t for t in texts if "_Summary (LLM):_" in t)
    assert len(block) <= 3000
    assert "\n> " not in block  # the excerpt went first
    assert block.endswith("_matched: audio (abstract)_")
    assert "_Summary (LLM):_ &lt;&amp;&gt; &lt;&amp;&gt;" in block
    assert all(len(line) <= 1000 + len("_Summary (LLM):_ ") for line in block.split("\n")[1:])


def test_rich_digest_slack_lines(renderer: Renderer) -> None:
    digest = rich_weekly_digest()
    texts = section_texts(renderer.slack(digest))
    paper = digest.sections[1].matches[0].paper
    line = f"• <{paper.abs_url}|{paper.title}> · {paper.authors[0]} et al. · arXiv:{paper.arxiv_id}"
    assert any(line in text.split("\n") for text in texts)
    assert not any("matched: music" in text for text in texts)


def test_summary_view_keeps_fields_on_one_line() -> None:
    paper = load_papers(SD_0603)[0]
    view = summary_view(hostile_summary(paper))
    assert view is not None
    for value in (view.summary, view.topic, view.subtopic, view.institution, *view.keywords):
        assert value is not None and "\n" not in value and "\r" not in value
    empty = replace(fake_summary(paper), summary="", topic="", subtopic=" ", keywords=(), institution="\n")
    assert summary_view(empty) is None
    assert summary_view(None) is None
