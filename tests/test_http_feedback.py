"""Feedback links through the daemon's real HTTP server ("more like this", "fewer like this"): a GET shows a confirm
page and changes nothing (mail scanners follow links), a POST records the feedback; a bad link is 403, a subscriber
gone from the config or a paper the store does not know is 404."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from notifier.config.settings import load_settings
from notifier.config.subscribers import load_config
from notifier.daemon import Notifier
from notifier.models import FeedbackKind
from notifier.web.server import MAX_BODY, HttpServer
from tests.clock import Clock
from tests.test_http import Served
from tests.test_unsubscribe import paper

CONFIG = """\
subscribers:
  - name: lab
    email: ann@lab.example
    categories: [cs.DC]
    rules:
      - {name: compilers, query: compiler}
"""
TITLE = "A compiler for <GPUs>"


def link(served: Served, subscriber: str, arxiv_id: str, kind: FeedbackKind) -> str:
    return "/feedback?" + served.app.feedback_links.query(subscriber, arxiv_id, kind)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    path = tmp_path / "subscribers.yaml"
    path.write_text(CONFIG)
    environ = {
        "NOTIFIER_SUBSCRIBERS": str(path),
        "NOTIFIER_DATA_DIR": str(tmp_path / "data"),
        "NOTIFIER_PUBLIC_URL": "https://notifier.lab.example",
        "NOTIFIER_HTTP_ADDR": "127.0.0.1:0",
    }
    clock = Clock()
    async with (
        Notifier(load_settings(environ), load_config(path, {}), clock=clock) as app,
        HttpServer(app, "127.0.0.1", 0) as server,
        aiohttp.ClientSession() as session,
    ):
        app.store.ingest("cs.DC", [paper("2506.00001", TITLE)], clock())
        yield Served(app, server, session, clock)


async def test_opening_the_link_asks_to_confirm_and_changes_nothing(served):
    status, page = await served.get(link(served, "lab", "2506.00001", "more"))
    assert status == 200, page
    assert "<strong>lab</strong> more papers like “A compiler for &lt;GPUs&gt;”" in page
    assert '<form method="post" action="feedback?' in page and ">More like this</button>" in page
    assert served.app.store.feedback_of(["lab"]) == {}


async def test_the_confirm_button_records_the_feedback_once_logged_without_the_token(served, caplog):
    url = link(served, "lab", "2506.00001", "fewer")
    _status, page = await served.get(url)
    action = page.split('action="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
    with caplog.at_level(logging.INFO, logger="notifier.web.server"):
        status, page = await served.post(f"/{action}", None)
    assert status == 200, page
    assert "Thanks: lab's next digests will show fewer papers like “A compiler for &lt;GPUs&gt;”." in page
    assert served.app.store.feedback_of(["lab"]) == {"lab": {"2506.00001": ("fewer", served.clock())}}
    lines = [r.getMessage() for r in caplog.records if r.name == "notifier.web.server"]
    assert lines == ["feedback: lab wants fewer papers like 2506.00001"]
    token = served.app.feedback_links.token("lab", "2506.00001", "fewer")
    assert token not in caplog.text


async def test_a_later_click_replaces_the_earlier_one(served):
    assert (await served.post(link(served, "lab", "2506.00001", "more"), None))[0] == 200
    served.clock.now = served.clock.now.replace(hour=10)
    assert (await served.post(link(served, "lab", "2506.00001", "fewer"), None))[0] == 200
    assert served.app.store.feedback_of(["lab"]) == {"lab": {"2506.00001": ("fewer", served.clock())}}


async def test_a_link_whose_token_does_not_match_is_refused(served):
    good = link(served, "lab", "2506.00001", "more")
    other_kind = good.replace("k=more", "k=fewer")
    other_paper = good.replace("p=2506.00001", "p=2506.00002")
    tampered = good[:-1] + ("A" if good[-1] != "A" else "B")
    unsubscribe = "/feedback?" + served.app.unsubscribe_links.query("lab", "ann@lab.example")
    missing = good.split("&t=")[0]
    for url in (other_kind, other_paper, tampered, unsubscribe, missing, good.replace("k=more", "k=most")):
        for post in (False, True):
            status, page = await (served.post(url, None) if post else served.get(url))
            assert status == 403, (url, page)
            assert "This feedback link is not valid." in page
    assert served.app.store.feedback_of(["lab"]) == {}


async def test_a_subscriber_gone_from_the_config_or_an_unknown_paper_is_not_found(served):
    for post in (False, True):
        gone, unknown = link(served, "gone", "2506.00001", "more"), link(served, "lab", "2506.99999", "more")
        status, page = await (served.post(gone, None) if post else served.get(gone))
        assert status == 404 and "There is no subscriber gone any more." in page
        status, page = await (served.post(unknown, None) if post else served.get(unknown))
        assert status == 404 and "arXiv:2506.99999 is no longer known here." in page
    assert served.app.store.feedback_of(["lab", "gone"]) == {}


async def test_a_body_over_the_limit_is_refused(served):
    status, _page = await served.post(link(served, "lab", "2506.00001", "more"), data=b"x" * (MAX_BODY + 1))
    assert status == 413
    assert served.app.store.feedback_of(["lab"]) == {}
