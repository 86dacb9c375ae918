"""Ranked papers: each says which of the subscriber's papers it is most like, with its score, in the HTML part, the
text part and Slack; a section whose rule only ranks says so where others show their query; escaping of the liked
paper's title (it comes from arXiv), and the size limits with explanations.

Regenerate the golden files with ``UPDATE_GOLDEN=1 pytest tests/test_render_similar.py`` and review the diff.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace

import pytest

from notifier.models import Digest, Match, Similarity
from notifier.render.email import EmailRenderer, _gain, card_of
from notifier.render.highlight import LIKED_TITLE_CHARS, SimilarityView, similarity_view
from notifier.render.renderer import Renderer
from notifier.render.slack import MAX_MESSAGE_CHARS, similarity_text
from tests.digest_factory import (
    SIMILAR_RULE,
    golden_digest,
    large_digest,
    liked_papers,
    rich_weekly_digest,
    similar_digest,
    with_similarities,
)
from tests.test_render import check_golden, slack_json
from tests.test_render_rich import Elements, section_texts

HOSTILE_TITLE = (
    "<script>alert(1)</script> “Quoted” *bold* _it_ `code` <!channel> @here <https://evil.example|click> & more"
    "\r\nBcc: x@example.org"
)


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


def ranked_matches(digest: Digest) -> list[Match]:
    return [match for match in digest.first_matches if match.similarity is not None]


def view_of(match: Match) -> SimilarityView:
    view = similarity_view(match.similarity)
    assert view is not None
    return view


def html_escaped(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def unstyled(html: str) -> str:
    return re.sub(r' style="[^"]*"', "", html)


def one_line_text(text: str) -> str:
    return " ".join(text.split())


# Golden files


def test_golden_similar_daily(renderer: Renderer) -> None:
    email = renderer.email(similar_digest())
    check_golden("similar-daily.txt", email.text)
    check_golden("similar-daily.html", email.html)
    check_golden("similar-daily.slack.json", slack_json(renderer.slack(similar_digest())))


# What a ranked paper shows


def test_every_ranked_paper_says_which_of_yours_it_is_like_and_its_score(renderer: Renderer) -> None:
    digest = similar_digest()
    email = renderer.email(digest)
    html = unstyled(email.html)
    dumped = "\n".join(section_texts(renderer.slack(digest)))
    ranked = ranked_matches(digest)
    assert len(ranked) == 8
    liked_ids = {paper.arxiv_id for paper in liked_papers()}
    for match in ranked:
        similarity = match.similarity
        assert similarity is not None and similarity.liked_id in liked_ids
        line = f"Like your {similarity.liked_id} “{similarity.liked_title}” · score {similarity.score:.2f}"
        assert line in one_line_text(email.text), match.paper.arxiv_id
        link = f'<a href="https://arxiv.org/abs/{similarity.liked_id}">{similarity.liked_id}</a>'
        assert f"Like your {link} “{html_escaped(similarity.liked_title)}” · score {similarity.score:.2f}" in html
        assert (
            f"Like your <https://arxiv.org/abs/{similarity.liked_id}|{similarity.liked_id}>"
            f" “{similarity.liked_title}” · score {similarity.score:.2f}" in dumped
        )
    assert email.text.count("Like your ") == email.html.count("Like your ") == dumped.count("Like your ") == 8


def test_the_explanation_comes_right_under_the_paper_s_meta(renderer: Renderer) -> None:
    digest = similar_digest()
    match = ranked_matches(digest)[0]
    view = view_of(match)
    text = renderer.email(digest).text
    lines = text.split("\n")
    where = next(i for i, line in enumerate(lines) if line.startswith("    Like your "))
    assert lines[where - 1] == "    updated (v2)"  # the paper's badges, its last meta line
    assert one_line_text(" ".join(lines[where : where + 4])).startswith(view.text)
    [block] = [t for t in section_texts(renderer.slack(digest)) if match.paper.abs_url in t]
    assert block.split("\n")[3] == similarity_text(view)  # after its title, authors and details


def test_a_section_that_only_ranks_says_so_instead_of_a_query(renderer: Renderer) -> None:
    digest = similar_digest()
    email = renderer.email(digest)
    assert f"{SIMILAR_RULE} (4)\n{'-' * 78}\nmost like your papers\n" in email.text
    assert '-\nquery: "speech enhancement" · ranked by similarity to your papers\n' in email.text
    assert "-\nquery: music\n" in email.text
    assert "query: \n" not in email.text and "query:\n" not in email.text
    html = unstyled(email.html)
    assert f'<h3>{SIMILAR_RULE} (4)</h3>\n<span class="meta">most like your papers</span>\n</td></tr>' in html
    assert (
        '<h3>speech enhancement (4)</h3>\n<span class="query">"speech enhancement"</span>\n'
        '<span class="meta">· ranked by similarity to your papers</span>\n</td></tr>'
    ) in html
    assert '<h3>music (4)</h3>\n<span class="query">music</span>\n</td></tr>' in html
    assert '<span class="query"></span>' not in html
    texts = section_texts(renderer.slack(digest))
    assert f"*{SIMILAR_RULE}* — 4 papers · most like your papers" in texts
    assert '*speech enhancement* — 4 papers · `"speech enhancement"` · ranked by similarity to your papers' in texts
    assert "*music* — 4 papers · `music`" in texts


def test_a_paper_that_only_ranks_claims_no_matched_terms(renderer: Renderer) -> None:
    digest = similar_digest()
    email = renderer.email(digest)
    assert "matched: \n" not in email.text and "    matched:\n" not in email.text
    assert email.text.count("matched: ") == 8  # the keyword rules' papers
    assert "Matched: <" not in email.html and "Matched: </p>" not in email.html
    assert email.html.count("Matched: ") == 8
    texts = section_texts(renderer.slack(digest))
    assert not any("_matched: _" in text or text.endswith("\n__") for text in texts)
    assert sum("_matched: " in text for text in texts) == 8


def test_a_paper_ranked_in_two_sections_is_explained_once_and_points_to_the_other(renderer: Renderer) -> None:
    digest = similar_digest()
    first = digest.sections[1].matches[0]
    similar = replace(digest.sections[0], matches=(replace(first, rule=SIMILAR_RULE, hits=()),))
    digest = replace(digest, sections=(similar, *digest.sections[1:]))
    email = renderer.email(digest)
    assert email.text.count("Like your ") == email.html.count("Like your ") == 4  # each paper once
    html = unstyled(email.html)
    assert '<p class="why">Also under speech enhancement</p>' in html
    assert "Shown above under like my work. Matched: speech enhancement (title)" in html
    assert "    also under: speech enhancement\n" in email.text
    texts = section_texts(renderer.slack(digest))
    assert any(text.endswith("\n_also under speech enhancement_") for text in texts)


def test_one_line_entries_keep_the_explanation(renderer: Renderer) -> None:
    digest = with_similarities(rich_weekly_digest(), ["music"])
    music = next(section for section in digest.sections if section.rule == "music")
    email = renderer.email(digest)
    texts = section_texts(renderer.slack(digest))
    for match in music.matches:
        view = view_of(match)
        assert view.text in one_line_text(email.text), match.paper.arxiv_id
        assert f"“{html_escaped(view.liked_title)}” · score {view.score}" in email.html
        line = next(line for text in texts for line in text.split("\n") if f"• <{match.paper.abs_url}|" in line)
        assert line.startswith("• ") and line.endswith(f" · {similarity_text(view)}")


def test_matches_without_similarity_show_no_explanation(renderer: Renderer) -> None:
    email = renderer.email(golden_digest())
    assert "Like your" not in email.html and "Like your" not in email.text
    assert "ranked by similarity" not in email.text and "most like your papers" not in email.text
    assert "Like your" not in slack_json(renderer.slack(golden_digest()))


# The liked paper's title comes from arXiv


def hostile_digest(liked_id: str = "2401.01234") -> Digest:
    digest = similar_digest()
    similarity = Similarity(0.4242, liked_id, HOSTILE_TITLE)
    matches = tuple(replace(match, similarity=similarity) for match in digest.sections[0].matches)
    return replace(digest, sections=(replace(digest.sections[0], matches=matches), *digest.sections[1:]))


def test_hostile_liked_title_in_html_is_text(renderer: Renderer) -> None:
    html = renderer.email(hostile_digest()).html
    found = Elements(html)
    assert not found.named("script")
    assert not [a for a in found.named("a") if "evil" in (a.get("href") or "")]
    text = "".join(found.text)
    shown = HOSTILE_TITLE.replace("\r\n", " ")
    assert f"Like your 2401.01234 “{shown}” · score 0.42" in text
    assert html.count('<a href="https://arxiv.org/abs/2401.01234"') == 4


def test_hostile_liked_id_is_shown_but_not_linked(renderer: Renderer) -> None:
    evil = '2401.01234"><script>x</script>|<!channel>'
    html = renderer.email(hostile_digest(evil)).html
    found = Elements(html)
    assert not found.named("script")
    assert not [a for a in found.named("a") if "2401.01234" in (a.get("href") or "")]
    assert f"Like your {evil} “" in "".join(found.text)
    dumped = slack_json(renderer.slack(hostile_digest(evil)))
    assert "<https://arxiv.org/abs/2401.01234" not in dumped and "<!channel>" not in dumped
    assert 'Like your 2401.01234\\"&gt;&lt;script&gt;x&lt;/script&gt;¦&lt;!channel&gt; “' in dumped


def test_hostile_liked_title_in_slack_is_inert(renderer: Renderer) -> None:
    dumped = slack_json(renderer.slack(hostile_digest()))
    for bad in ("<!channel>", "<https://evil.example", "<script>", "*bold*", "_it_", "`code`"):
        assert bad not in dumped
    assert "@here" not in dumped  # a word joiner follows every @
    assert "Like your <https://arxiv.org/abs/2401.01234|2401.01234> “&lt;script&gt;alert(1)&lt;/script&gt;" in dumped
    assert "&lt;!channel&gt;" in dumped and "&amp; more Bcc: x@\u2060example.org” · score 0.42" in dumped
    assert "\\r" not in dumped


def test_hostile_liked_title_in_the_text_part_is_literal_and_starts_no_line(renderer: Renderer) -> None:
    text = renderer.email(hostile_digest()).text
    assert f"Like your 2401.01234 “{one_line_text(HOSTILE_TITLE)}” · score 0.42" in one_line_text(text)
    assert "\r" not in text
    for line in text.splitlines():
        assert not re.match(r"(Bcc|Subject|To|From):", line), line


def test_similarity_view_keeps_its_line_short_and_its_score_in_range() -> None:
    long = similarity_view(Similarity(0.5, "2401.01234", "Word " * 100))
    assert long is not None and len(long.liked_title) == LIKED_TITLE_CHARS and long.liked_title.endswith("…")
    scores = [similarity_view(Similarity(s, "2401.01234", "T")) for s in (1.7, -0.2, math.nan, 0.005, 0.995)]
    assert [view.score for view in scores if view] == ["1.00", "0.00", "0.00", "0.01", "0.99"]
    untitled = similarity_view(Similarity(0.3, "math/0601001", ""))
    assert untitled is not None and untitled.text == "Like your math/0601001 · score 0.30"
    assert untitled.liked_url == "https://arxiv.org/abs/math/0601001"
    assert similarity_view(None) is None


# Size


def test_the_explanation_counts_in_a_paper_s_card(renderer: Renderer) -> None:
    email = EmailRenderer(renderer.env)
    match = ranked_matches(similar_digest())[0]
    plain = card_of(email.card, replace(match, similarity=None), 600, None)
    ranked = card_of(email.card, match, 600, None)
    line = str(email.env.get_template("_paper.html").module.similarity(view_of(match)))  # type: ignore[attr-defined]
    shown = len(line.encode("utf-8")) + 1  # and the line break that puts it on a line of its own
    assert ranked.html_bytes == plain.html_bytes + shown
    brief = len(view_of(match).brief.encode("utf-8"))
    assert _gain(ranked) == _gain(plain) + shown - brief, "a compact paper keeps its brief form"


def test_a_compact_paper_keeps_its_explanation(renderer: Renderer) -> None:
    digest = similar_digest()
    tiny = renderer.email(digest, max_html_bytes=1)  # cannot fit: everything compact, nothing dropped
    assert "listed by title only" in tiny.html
    for match in ranked_matches(digest):
        view = view_of(match)
        assert f"{html_escaped(match.paper.title)}</a> · like your {view.liked_id} · score {view.score}" in tiny.html
        assert view.text in one_line_text(tiny.text)


@pytest.mark.slow
def test_a_large_ranked_digest_fits_gmail_and_slack_and_explains_every_paper(renderer: Renderer) -> None:
    digest = with_similarities(large_digest(300))
    email = renderer.email(digest)
    assert len(email.html.encode("utf-8")) <= 100_000
    assert "listed by title only" in email.html
    for match in digest.first_matches:
        view = view_of(match)
        assert match.paper.abs_url in email.html and match.paper.abs_url in email.text, match.paper.arxiv_id
        explained = f"{html_escaped(match.paper.title)}</a> · like your {view.liked_id} · score {view.score}"
        assert f"“{html_escaped(view.liked_title)}” · score {view.score}" in email.html or explained in email.html
        assert view.text in one_line_text(email.text), match.paper.arxiv_id
    messages = renderer.slack(digest)
    for message in messages:
        assert len(message.blocks) <= 50
        texts = section_texts([message])
        assert sum(map(len, texts)) <= MAX_MESSAGE_CHARS
        assert all(len(text) <= 3000 for text in texts)
    dumped = "\n".join(section_texts(messages))
    for match in digest.first_matches:
        assert similarity_text(view_of(match)) in dumped, match.paper.arxiv_id
