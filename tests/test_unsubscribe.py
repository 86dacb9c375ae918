"""One-click unsubscribe links: the tokens, the settings they need, and the headers each email carries."""

from __future__ import annotations

import contextlib
import email
import email.policy
import sqlite3
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from notifier.config.settings import load_settings
from notifier.config.subscribers import load_config
from notifier.daemon import Notifier
from notifier.errors import ConfigError
from notifier.models import Paper
from notifier.outbox.planner import PlanReport
from notifier.store.payloads import unpack
from notifier.web.server import HttpServer
from notifier.web.unsubscribe import UnsubscribeLinks

PUBLIC_URL = "https://notifier.lab.example/arxiv/"
CONFIG = """\
subscribers:
  - name: lab
    email: [Ann@Lab.example, bob@lab.example]
    slack: "#papers"
    categories: [cs.DC]
    rules:
      - {name: compilers, query: compiler}
"""


def test_a_token_verifies_only_for_its_subscriber_and_address():
    links = UnsubscribeLinks("secret-1")
    token = links.token("lab", "ann@lab.example")
    assert len(token) == 22 and token.isascii() and "=" not in token
    assert links.verify("lab", "ann@lab.example", token)
    assert links.verify("lab", "ANN@lab.example", token), "addresses are compared case-insensitively"
    assert not links.verify("lab", "bob@lab.example", token)
    assert not links.verify("other", "ann@lab.example", token)
    assert not links.verify("lab", "ann@lab.example", token[:-1])
    assert not links.verify("lab", "ann@lab.example", "")
    assert not links.verify("lab", "ann@lab.example", "ünïcode")
    assert not UnsubscribeLinks("secret-2").verify("lab", "ann@lab.example", token)


def test_the_link_is_under_the_public_url_and_carries_its_own_query():
    links = UnsubscribeLinks("s", PUBLIC_URL)
    url = links.url("lab", "a+b@lab.example")
    assert url is not None
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "notifier.lab.example", "/arxiv/unsubscribe")
    query = {key: values[0] for key, values in parse_qs(parts.query).items()}
    assert query["s"] == "lab" and query["a"] == "a+b@lab.example"
    assert links.verify(query["s"], query["a"], query["t"])
    assert UnsubscribeLinks("s").url("lab", "a@lab.example") is None


def test_a_public_url_needs_an_http_address_to_serve_it():
    with pytest.raises(ConfigError) as info:
        load_settings({"NOTIFIER_PUBLIC_URL": "https://notifier.lab.example"})
    assert str(info.value).startswith("NOTIFIER_PUBLIC_URL:") and "NOTIFIER_HTTP_ADDR" in str(info.value)
    settings = load_settings({"NOTIFIER_PUBLIC_URL": "https://n.example", "NOTIFIER_HTTP_ADDR": "[::1]:8080"})
    assert (settings.http_host, settings.http_port) == ("::1", 8080)


@pytest.mark.parametrize("address", ["8080", ":8080", "localhost", "localhost:http", "127.0.0.1:70000"])
def test_a_malformed_http_address_is_refused_naming_the_variable(address):
    with pytest.raises(ConfigError, match=r"^NOTIFIER_HTTP_ADDR: must be host:port"):
        load_settings({"NOTIFIER_HTTP_ADDR": address})


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2025, 6, 3, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def make_app(tmp_path: Path, clock: Clock, public_url: str | None = PUBLIC_URL) -> Notifier:
    path = tmp_path / "subscribers.yaml"
    path.write_text(CONFIG)
    environ = {"NOTIFIER_SUBSCRIBERS": str(path), "NOTIFIER_DATA_DIR": str(tmp_path / "data")}
    if public_url:
        environ |= {"NOTIFIER_PUBLIC_URL": public_url, "NOTIFIER_HTTP_ADDR": "127.0.0.1:0"}
    return Notifier(load_settings(environ), load_config(path, {}), clock=clock)


def paper(arxiv_id: str, title: str) -> Paper:
    return Paper(
        arxiv_id=arxiv_id,
        version=1,
        title=title,
        abstract="We study compilers.",
        authors=("Ada Lovelace",),
        categories=("cs.DC",),
        announce_type="new",
        announced=date(2025, 6, 3),
    )


async def planned_emails(app: Notifier, clock: Clock) -> list[EmailMessage]:
    """The emails a plan wrote to the outbox, as the database holds them."""
    app.store.ingest("cs.DC", [paper("2506.1", "A compiler for GPUs")], clock())
    await app.plan(force=True)
    with contextlib.closing(sqlite3.connect(app.settings.database)) as db:
        rows = db.execute(
            """SELECT payload FROM deliveries JOIN delivery_payloads ON delivery_id = id
               WHERE channel = 'email' ORDER BY created_at, id"""
        ).fetchall()
    return [email.message_from_bytes(unpack(payload), policy=email.policy.default) for (payload,) in rows]


async def test_each_email_carries_one_click_headers_whose_token_verifies_after_a_restart(tmp_path):
    clock = Clock()
    async with make_app(tmp_path, clock) as app:
        mails = await planned_emails(app, clock)
    assert len(mails) == 2
    async with make_app(tmp_path, clock) as restarted:  # the secret is kept in the store
        for mail in mails:
            assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
            header = str(mail["List-Unsubscribe"])
            assert header.startswith(f"<{PUBLIC_URL}unsubscribe?") and header.endswith(">")
            url = header[1:-1]
            query = {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}
            assert query["s"] == "lab" and query["a"] == str(mail["To"])
            assert restarted.unsubscribe_links.verify(query["s"], query["a"], query["t"])
            text = mail.get_body(("plain",))
            assert text is not None
            assert url in text.get_content(), "the footer links to the same page"


async def test_without_a_public_url_no_email_has_unsubscribe_headers(tmp_path):
    clock = Clock()
    async with make_app(tmp_path, clock, public_url=None) as app:
        mails = await planned_emails(app, clock)
    assert len(mails) == 2
    assert all(mail["List-Unsubscribe"] is None and mail["List-Unsubscribe-Post"] is None for mail in mails)


async def test_an_address_unsubscribed_while_a_plan_runs_gets_nothing_from_that_plan(tmp_path):
    clock = Clock()
    async with make_app(tmp_path, clock, public_url=None) as app:
        app.store.ingest("cs.DC", [paper("2506.1", "A compiler for GPUs")], clock())
        report = PlanReport()
        steps = app.planner.steps(app.config, clock(), report, force=True)
        next(steps)  # the plan has read who unsubscribed, and planned Ann's digest; nothing is written yet
        app.store.unsubscribe("lab", "ann@lab.example", clock())
        for _ in steps:
            pass
        states = {row.recipient: row.state for row in app.store.deliveries(("pending", "cancelled"))}
    assert report.digests == 1
    assert states == {"Ann@lab.example": "cancelled", "bob@lab.example": "pending", "#papers": "pending"}


async def test_a_one_click_post_for_an_address_written_differently_unsubscribes_that_recipient(tmp_path):
    clock = Clock()
    async with (
        make_app(tmp_path, clock) as app,
        HttpServer(app, "127.0.0.1", 0) as server,
        aiohttp.ClientSession() as session,
    ):
        assert len(await planned_emails(app, clock)) == 2
        query = app.unsubscribe_links.query("lab", "  ann@LAB.example ")  # as a mail client may hand it back
        url = f"http://127.0.0.1:{server.port}/unsubscribe?{query}"
        async with session.post(url, data={"List-Unsubscribe": "One-Click"}) as response:
            assert response.status == 200, await response.text()
        assert app.store.unsubscribed("lab") == {"ann@lab.example"}
        cancelled = [row.recipient.lower() for row in app.store.deliveries(("cancelled",))]
        assert cancelled == ["ann@lab.example"], "her pending digest is cancelled"

        clock.now += timedelta(days=1)
        app.store.ingest("cs.DC", [paper("2506.2", "Another compiler")], clock())
        clock.now += timedelta(minutes=1)
        report = await app.plan(force=True)
    assert report.deliveries == 2, "bob and #papers, not Ann"
