"""The status page at `/`: feeds, deliveries waiting or failed with their reasons, subscribers, read in Chromium."""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path

import aiohttp
import pytest

from notifier.config.settings import load_settings
from notifier.config.subscribers import load_config
from notifier.daemon import Notifier
from notifier.web.server import HttpServer
from tests.arxiv_server import ArxivStandIn
from tests.clock import Clock
from tests.slack_server import SlackServer
from tests.smtp_server import SmtpServer

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "screenshots"
CONFIG = """\
subscribers:
  - name: audio
    email: [ann@lab.example, bob@lab.example]
    slack: ["#papers", "{webhook}"]
    categories: [cs.SD, eess.AS]
    rules:
      - name: music
        query: music
  - name: weekly-speech
    email: carol@speech.example
    categories: [eess.AS]
    schedule: "weekly mon 09:00 Europe/Berlin"
    rules:
      - name: speech
        query: speech
"""


class Cells(HTMLParser):
    """The text of each table row of the page, cell by cell, and whether a <script> appears."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.scripts = 0
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script":
            self.scripts += 1
        if tag == "tr":
            self.rows.append([])
        if tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


async def page_after_a_cycle(tmp_path: Path, **settings: str) -> str:
    """`/` after one cycle in which one address was refused for good, one mail is to be retried, and the Slack
    channel was not found."""
    path = tmp_path / "subscribers.yaml"
    clock = Clock()
    async with (
        ArxivStandIn(day="2025-06-03") as arxiv,
        SlackServer(token="xoxb-test", channels=set()) as slack,
    ):
        path.write_text(CONFIG.replace("{webhook}", slack.webhook_url("T9/B9/SECRETSECRET")), encoding="utf-8")
        with SmtpServer() as smtp:
            smtp.faults.reject.add("bob@lab.example")
            smtp.faults.fail_next = 1
            smtp.faults.fail_reply = "451 4.3.0 <b>Greylisted</b>, try again later"
            environ = {
                "NOTIFIER_SUBSCRIBERS": str(path),
                "NOTIFIER_DATA_DIR": str(tmp_path / "data"),
                "NOTIFIER_ARXIV_RSS_URL": arxiv.rss_base_url,
                "NOTIFIER_ARXIV_API_URL": arxiv.api_url,
                "NOTIFIER_MIN_REQUEST_INTERVAL": "0",
                "NOTIFIER_HTTP_ADDR": "127.0.0.1:0",
                "NOTIFIER_SMTP_HOST": "127.0.0.1",
                "NOTIFIER_SMTP_PORT": str(smtp.port),
                "NOTIFIER_SMTP_SECURITY": "none",
                "NOTIFIER_MAIL_FROM": "digest@lab.example",
                "NOTIFIER_SLACK_TOKEN": "xoxb-test",
                "NOTIFIER_SLACK_API_URL": slack.api_url,
                "NOTIFIER_WEBHOOK_HOSTS": f"127.0.0.1:{slack.port}",
                **settings,
            }
            app_settings = load_settings(environ)
            async with (
                Notifier(app_settings, load_config(path, {}), clock=clock) as app,
                HttpServer(app, app_settings.http_host, app_settings.http_port) as server,
                aiohttp.ClientSession() as session,
            ):
                await app.cycle(force_send=True)
                async with session.get(f"http://127.0.0.1:{server.port}/") as response:
                    assert response.status == 200
                    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
                    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
                    return await response.text()


@pytest.fixture
async def page(tmp_path: Path) -> AsyncIterator[str]:
    yield await page_after_a_cycle(tmp_path)


def rows_of(page: str) -> list[list[str]]:
    cells = Cells()
    cells.feed(page)
    assert cells.scripts == 0, "the page works without JavaScript"
    return cells.rows


@pytest.mark.slow
async def test_the_page_shows_each_feed_s_last_announcement_next_expected_and_state(page):
    rows = rows_of(page)
    assert rows[0] == ["Category", "State", "Last announcement", "Next expected", "Last error"]
    assert [row[:3] for row in rows[1:3]] == [["cs.SD", "ok", "2025-06-03"], ["eess.AS", "ok", "2025-06-03"]]
    assert rows[1][3] == "2025-06-04 04:00 UTC", "00:00 US Eastern, when arXiv's feeds roll over"
    assert "As of 2025-06-03 09:00 UTC · config: 2 subscribers" in page


async def test_the_page_lists_deliveries_waiting_or_failed_with_reasons_and_no_address(page):
    rows = rows_of(page)
    header = rows.index(["State", "Subscriber", "Channel", "Attempts", "Next attempt", "Reason"])
    deliveries = sorted(rows[header + 1 : header + 5])
    assert [row[:5] for row in deliveries[:3]] == [
        ["failed", "audio", "email", "1", ""],
        ["failed", "audio", "slack", "1", ""],
        ["failed", "audio", "slack", "1", ""],
    ]
    retrying = deliveries[3]  # whichever mail the server deferred first
    assert retrying[0] == "retrying" and retrying[2:5] == ["email", "1", "2025-06-03 09:00 UTC"]
    assert deliveries[0][5] == (
        "SMTP server refused recipient [hidden]: 550 5.1.1 No such user here (check the address in subscribers.yaml)"
    )
    assert deliveries[3][5] == "SMTP server deferred DATA for [hidden]: 451 4.3.0 <b>Greylisted</b>, try again later"
    assert "&lt;b&gt;Greylisted&lt;/b&gt;" in page, "autoescaped"
    assert sorted(row[5] for row in deliveries[1:3]) == [
        "Slack refused the post to [hidden]: channel_not_found (check the channel name or ID, and that the app can see"
        " it)",
        "Slack webhook [hidden] answered 404 'no_service' (the webhook was removed or disabled; create a new incoming"
        " webhook)",
    ]
    assert re.search(r"retrying:\s*<strong>1</strong>", page) and re.search(r"failed:\s*<strong>3</strong>", page)
    for secret in ("ann@lab.example", "bob@lab.example", "carol@speech.example", "SECRETSECRET", "xoxb-test"):
        assert secret not in page


async def test_the_page_shows_each_subscriber_s_last_digest_and_next_due_time(page):
    rows = rows_of(page)
    header = rows.index(["Subscriber", "Schedule", "Last digest", "Next due", "Problem"])
    assert rows[header + 1 :] == [
        ["audio", "daily 08:00 UTC", "2025-06-03 09:00 UTC", "2025-06-04 08:00 UTC", ""],
        ["weekly-speech", "weekly mon 09:00 Europe/Berlin", "2025-06-03 09:00 UTC", "2025-06-09 07:00 UTC", ""],
    ]


async def test_addresses_are_shown_only_when_asked_for_and_webhooks_never(tmp_path):
    page = await page_after_a_cycle(tmp_path, NOTIFIER_STATUS_SHOW_ADDRESSES="true")
    rows = rows_of(page)
    header = rows.index(["State", "Subscriber", "Channel", "Recipient", "Attempts", "Next attempt", "Reason"])
    recipients = sorted(row[3] for row in rows[header + 1 : header + 5])
    greylisted = {"ann@lab.example", "carol@speech.example"} & set(recipients)  # whichever mail came first
    assert recipients[0] == "#papers" and "bob@lab.example" in recipients and len(greylisted) == 1
    assert recipients[3].startswith("http://127.0.0.1:") and "/…" in recipients[3], "a webhook as host and fingerprint"
    assert "SECRETSECRET" not in page


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
@pytest.mark.slow
async def test_the_page_reads_right_in_chromium_at_1024_px(tmp_path, page):
    source = tmp_path / "status.html"
    source.write_text(page, encoding="utf-8")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    target = SCREENSHOTS / "status-1024.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'p'}"]
    for extra in (["--window-size=1024,1400", f"--screenshot={target}"], ["--dump-dom"]):
        process = await asyncio.create_subprocess_exec(
            str(CHROMIUM),
            *flags,
            *extra,
            source.as_uri(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 90)
        assert process.returncode == 0, err.decode()[-2000:]
    assert target.stat().st_size > 10_000
    rendered = rows_of(out.decode())
    assert rendered == rows_of(page), "Chromium reads the same tables"
