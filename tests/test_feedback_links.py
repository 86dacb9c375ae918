"""Signed "more like this" / "fewer like this" links: a token stands for one subscriber, one paper and one kind,
never for an unsubscribe link (nor the other way round), and the link carries what it names."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from notifier.web.feedback import FeedbackLinks, feedback_kind
from notifier.web.unsubscribe import UnsubscribeLinks

PUBLIC_URL = "https://notifier.lab.example/arxiv/"


def test_a_token_verifies_only_for_its_subscriber_paper_and_kind():
    links = FeedbackLinks("secret-1")
    token = links.token("lab", "2506.01234", "more")
    assert len(token) == 22 and token.isascii() and "=" not in token
    assert links.verify("lab", "2506.01234", "more", token)
    assert not links.verify("lab", "2506.01234", "fewer", token)
    assert not links.verify("lab", "2506.01235", "more", token)
    assert not links.verify("other", "2506.01234", "more", token)
    assert not FeedbackLinks("secret-2").verify("lab", "2506.01234", "more", token)


def test_a_tampered_or_missing_token_does_not_verify():
    links = FeedbackLinks("secret-1")
    token = links.token("lab", "2506.01234", "fewer")
    flipped = ("A" if token[0] != "A" else "B") + token[1:]
    for bad in (flipped, token[:-1], token + "A", "", "ünïcode"):
        assert not links.verify("lab", "2506.01234", "fewer", bad)


def test_an_unsubscribe_token_is_not_a_feedback_token_nor_the_reverse():
    secret = "the-same-secret"
    feedback, unsubscribe = FeedbackLinks(secret), UnsubscribeLinks(secret)
    for subscriber, first, second in (("lab", "2506.01234", "more"), ("lab", "more", "2506.01234")):
        token = unsubscribe.token(subscriber, first)
        assert not feedback.verify(subscriber, first, second, token)
        assert not feedback.verify(subscriber, second, first, token)
    token = feedback.token("lab", "2506.01234", "more")
    assert not unsubscribe.verify("lab", "2506.01234", token)
    assert not unsubscribe.verify("lab", "more", token)


def test_the_links_are_under_the_public_url_and_name_subscriber_paper_and_kind():
    links = FeedbackLinks("s", PUBLIC_URL)
    urls = links.urls("lab & co", "2506.01234")
    assert urls is not None
    for url, kind in ((urls.more, "more"), (urls.fewer, "fewer")):
        assert url.startswith("https://notifier.lab.example/arxiv/feedback?")
        query = {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}
        assert query == {"s": "lab & co", "p": "2506.01234", "k": kind, "t": query["t"]}
        assert links.verify("lab & co", "2506.01234", kind, query["t"])
    assert FeedbackLinks("s").urls("lab", "2506.01234") is None, "no public URL, no links"


def test_only_more_and_fewer_are_kinds():
    assert feedback_kind("more") == "more" and feedback_kind("fewer") == "fewer"
    assert feedback_kind("MORE") is None and feedback_kind("") is None
