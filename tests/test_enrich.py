"""Enrichment: comments and journal references from the arXiv API reach the digest, the authors' affiliations are
stored for the summaries, and an API outage does not stop it (fail-open). The stand-in's API gives fixture papers
synthetic comments and journal references, and the affiliations a test gives them."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from notifier.config.settings import load_settings
from notifier.config.subscribers import load_config
from notifier.daemon import Notifier
from tests.arxiv_server import ArxivStandIn
from tests.clock import Clock

CONFIG = """\
subscribers:
  - name: audio
    email: audio@lab.example
    categories: [cs.SD, eess.AS]
    rules: [{name: music, query: music}, {name: speech, query: speech}]
"""


def make_app(tmp_path: Path, server: ArxivStandIn, config: str = CONFIG) -> Notifier:
    path = tmp_path / "subscribers.yaml"
    path.write_text(config)
    settings = load_settings(
        {},
        {
            "subscribers": str(path),
            "data_dir": str(tmp_path / "data"),
            "arxiv_rss_url": server.rss_base_url,
            "arxiv_api_url": server.api_url,
            "min_request_interval": 0.05,
        },
    )
    return Notifier(settings, load_config(path, {}), clock=Clock(datetime(2025, 6, 3, 4, 10, tzinfo=UTC)))


def digest_text(tmp_path: Path) -> str:
    (mail,) = (tmp_path / "data" / "outbox" / "email").glob("*.eml")
    message = email.message_from_bytes(mail.read_bytes(), policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    text, html = message.get_body(("plain",)), message.get_body(("html",))
    assert text is not None and html is not None
    return text.get_content() + html.get_content()


async def test_comments_and_journal_references_reach_the_digest(tmp_path):
    async with ArxivStandIn(day="2025-06-03") as server:
        async with make_app(tmp_path, server) as app:
            report = await app.cycle(force_send=True)
            planned = app.planner.preview(app.config, app.config.subscribers[0], app.clock())
            assert report.sent.sent == 1
            stored = app.store.candidates("cs.SD+eess.AS", datetime(2000, 1, 1, tzinfo=UTC), app.clock())
        lookups = [r for r in server.requests_to("/api/") if "id_list" in r.query]
    assert len(lookups) == 1, "one id_list request for the matched papers"
    looked_up = set(lookups[0].query["id_list"].split(","))
    assert not planned.record.deliveries, "everything was sent"
    api = server.api_papers()
    text = digest_text(tmp_path)
    listed = set(re.findall(r"arxiv\.org/abs/(\d{4}\.\d{4,5})", text))
    assert listed and listed <= looked_up
    # a long digest lists its last papers by title only: the papers shown in full show their comments
    full = set(re.findall(r"abstract: https://arxiv\.org/abs/(\d{4}\.\d{4,5})", text))
    with_comment = {p.arxiv_id: api[p.arxiv_id].extra for p in stored if p.arxiv_id in full}
    commented = {i: extra for i, extra in with_comment.items() if "comment" in extra}
    referenced = {i: extra for i, extra in with_comment.items() if "journal_ref" in extra}
    assert commented and referenced, "the synthetic metadata covers some matched papers"
    for extra in commented.values():
        assert f"Comment: {extra['comment']}" in text
    for extra in referenced.values():
        assert f"Journal ref: {extra['journal_ref']}" in text
    unmatched = [p for p in stored if p.arxiv_id not in looked_up and p.comment]
    assert not unmatched, "only matched papers are looked up"


async def test_the_affiliations_of_matched_papers_are_stored_as_the_api_gives_them(tmp_path):
    async with ArxivStandIn(day="2025-06-03") as server:
        api = server.api_papers()
        audio = sorted(i for i, p in api.items() if {"cs.SD", "eess.AS"} & set(p.categories))
        given = audio[::2]  # every other paper has affiliations: a shared one, then the second author's own
        for arxiv_id in given:
            server.set_affiliations(arxiv_id, [["Shared Institute"], ["Shared Institute", f"Lab {arxiv_id}"]])
        async with make_app(tmp_path, server) as app:
            await app.cycle(force_send=True)
            stored = app.store.affiliations(api)
        lookups = [r for r in server.requests_to("/api/") if "id_list" in r.query]
    looked_up = {i for r in lookups for i in r.query["id_list"].split(",")}
    expected = {
        arxiv_id: ("Shared Institute", f"Lab {arxiv_id}") if len(api[arxiv_id].authors) > 1 else ("Shared Institute",)
        for arxiv_id in looked_up.intersection(given)
    }
    assert expected and looked_up - set(given), "the matched papers are some with affiliations and some without"
    assert stored == expected


@pytest.mark.slow
async def test_the_digest_goes_out_without_comments_when_the_api_fails(tmp_path):
    async with ArxivStandIn(day="2025-06-03") as server:
        server.fail_next("/api", "503", count=50)
        async with make_app(tmp_path, server) as app:
            app.gate.max_attempts = 2  # keep the test short; the gate's retries are tested in test_gate
            report = await app.cycle(force_send=True)
        assert server.requests_to("/api/"), "the API was asked"
    assert [o.status for o in report.polls] == ["ok", "ok"]  # cs.SD and eess.AS
    assert report.sent.sent == 1
    text = digest_text(tmp_path)
    assert "arxiv.org/abs/" in text
    assert "Comment:" not in text and "synthetic comment" not in text


async def test_a_rule_on_the_comment_matches_papers_whose_comment_only_the_api_knows(tmp_path):
    config = CONFIG.replace("rules: [{name: music, query: music}, {name: speech, query: speech}]",
                            "rules: [{name: commented, query: 'co:\"synthetic comment\"'}]")  # fmt: skip
    async with ArxivStandIn(day="2025-06-03") as server:
        async with make_app(tmp_path, server, config) as app:
            report = await app.cycle(force_send=True)
            stored = app.store.candidates("cs.SD+eess.AS", datetime(2000, 1, 1, tzinfo=UTC), app.clock())
        api = server.api_papers()
    expected = {
        p.arxiv_id
        for p in stored
        if p.announce_type in ("new", "cross") and "synthetic comment" in api[p.arxiv_id].extra.get("comment", "")
    }
    assert expected, "some fixture papers carry a synthetic comment"
    assert report.sent.sent == 1
    listed = set(re.findall(r"arxiv\.org/abs/(\d{4}\.\d{4,5})", digest_text(tmp_path)))
    assert listed == expected
