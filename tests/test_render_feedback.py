"""The "more like this" / "fewer like this" links under each ranked paper: in the HTML part after its explanation,
in the text part as two labelled URLs on lines of their own, and in Slack as mrkdwn links; none under a paper that
was not ranked, and none at all without a public URL (the render is then the same byte for byte, see the golden
files of tests/test_render_similar.py). A large digest with links still fits under Gmail's clip.

Regenerate the golden files with ``UPDATE_GOLDEN=1 pytest tests/test_render_feedback.py`` and review the diff.
"""

from __future__ import annotations

import html as html_module
from dataclasses import replace

import pytest

from notifier.models import Digest
from notifier.render.renderer import Renderer
from notifier.web.feedback import FeedbackLinks
from tests.digest_factory import large_digest, similar_digest, with_similarities
from tests.test_render import check_golden, slack_json
from tests.test_render_rich import section_texts

LINKS = FeedbackLinks("golden-secret", "https://notifier.lab.example")


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


def with_links(digest: Digest) -> Digest:
    """``digest`` with the feedback links the planner gives its ranked papers."""
    feedback = {}
    for match in digest.first_matches + tuple(m for s in digest.sections for m in s.matches):
        urls = LINKS.urls(digest.subscriber, match.paper.arxiv_id)
        if match.similarity is not None and urls is not None:
            feedback[match.paper.arxiv_id] = urls
    return replace(digest, feedback=feedback)


def ranked_ids(digest: Digest) -> list[str]:
    return list(dict.fromkeys(m.paper.arxiv_id for s in digest.sections for m in s.matches if m.similarity))


def test_golden_similar_daily_with_feedback_links(renderer: Renderer) -> None:
    digest = with_links(similar_digest())
    email = renderer.email(digest)
    check_golden("similar-feedback-daily.txt", email.text)
    check_golden("similar-feedback-daily.html", email.html)
    check_golden("similar-feedback-daily.slack.json", slack_json(renderer.slack(digest)))


def test_each_ranked_paper_has_both_links_after_its_explanation(renderer: Renderer) -> None:
    digest = with_links(similar_digest())
    email = renderer.email(digest)
    dumped = "\n".join(section_texts(renderer.slack(digest)))
    lines = email.text.split("\n")
    ranked = ranked_ids(digest)
    assert len(ranked) == 8
    for arxiv_id in ranked:
        urls = digest.feedback[arxiv_id]
        more_at = lines.index(f"    More like this:  {urls.more}")
        assert lines[more_at + 1] == f"    Fewer like this: {urls.fewer}"
        assert "score 0." in " ".join(lines[more_at - 3 : more_at]), "right after the explanation"
        escaped = {kind: html_module.escape(url) for kind, url in (("more", urls.more), ("fewer", urls.fewer))}
        assert f'href="{escaped["more"]}"' in email.html and f'href="{escaped["fewer"]}"' in email.html
        more = urls.more.replace("&", "&amp;")
        fewer = urls.fewer.replace("&", "&amp;")
        assert f" · <{more}|More like this> · <{fewer}|Fewer like this>" in dumped
    assert email.text.count("More like this:") == email.html.count(">More like this</a>") == 8
    assert dumped.count("|Fewer like this>") == 8


def test_a_paper_that_was_not_ranked_has_no_links(renderer: Renderer) -> None:
    digest = with_links(similar_digest())
    unranked = [m.paper for s in digest.sections for m in s.matches if m.similarity is None]
    assert unranked, "the music rule's papers are not ranked"
    for paper in unranked:
        assert paper.arxiv_id not in digest.feedback
        assert f"p={paper.arxiv_id}&" not in renderer.email(digest).text


def test_without_a_public_url_there_are_no_links(renderer: Renderer) -> None:
    digest = similar_digest()
    assert FeedbackLinks("golden-secret").urls("lab", "2506.00001") is None
    email = renderer.email(digest)
    assert "like this" not in email.text and "like this" not in email.html
    assert "like this" not in slack_json(renderer.slack(digest))


@pytest.mark.slow
def test_a_large_digest_with_links_fits_gmail_and_slack(renderer: Renderer) -> None:
    digest = with_links(with_similarities(large_digest(300)))
    email = renderer.email(digest)
    assert len(email.html.encode("utf-8")) <= 100_000
    assert "listed by title only" in email.html
    shown = [i for i in ranked_ids(digest) if html_module.escape(digest.feedback[i].more) in email.html]
    assert shown, "the papers shown in full have their links"
    assert email.text.count("More like this:") == len(ranked_ids(digest)), "the text part keeps every link"
    for message in renderer.slack(digest):
        assert len(message.blocks) <= 50
        assert all(len(text) <= 3000 for text in section_texts([message]))
