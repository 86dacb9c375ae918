"""Rich entries through the real CLI: the arXiv stand-in, a real SMTP server, the Slack stand-in and an
OpenAI-compatible LLM stand-in that answers well, stalls, or answers with hostile text."""

from __future__ import annotations

import asyncio
import email.message
import json
import re
import shutil
import signal
import time
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.arxiv_server import ArxivStandIn
from tests.cli import cli_environment, start_cli
from tests.llm_server import LlmStandIn
from tests.slack_server import SlackServer
from tests.smtp_server import SmtpServer
from tests.test_end_to_end import SMALL, expected, fixture_items, mail_by_recipient, paper_ids

pytestmark = pytest.mark.slow  # each test runs the CLI in a child process

LABEL = "Summary (LLM):"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking")
SCREENSHOTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "screenshots"
CONFIG = """\
defaults:
  schedule: "daily 08:00 UTC"
subscribers:
  - name: speech
    email: sam@lab.example
    slack: "#speech"
    categories: [cs.SD, eess.AS]
    rules:
      - name: speech recognition
        query: '"speech recognition"'
        summaries: true
      - name: music
        query: music
"""
LATER = """\
  - name: later
    email: lee@lab.example
    categories: [cs.SD, eess.AS]
    summaries: true
    rules:
      - name: speech recognition
        query: '"speech recognition"'
"""


@dataclass
class Servers:
    arxiv: ArxivStandIn
    smtp: SmtpServer
    slack: SlackServer
    llm: LlmStandIn
    config: Path


@pytest.fixture
async def servers(tmp_path):
    config = tmp_path / "subscribers.yaml"
    config.write_text(CONFIG)
    async with (
        ArxivStandIn(day="2025-06-03") as arxiv,
        SlackServer(channels={"#speech"}) as slack,
        LlmStandIn() as llm,
    ):
        with SmtpServer() as smtp:
            yield Servers(arxiv, smtp, slack, llm, config)


async def notifier(servers: Servers, *args: str, llm: bool = True, **settings: str) -> tuple[int, str, str]:
    env = cli_environment(
        servers.config.parent,
        servers.arxiv,
        servers.smtp,
        NOTIFIER_SLACK_TOKEN=servers.slack.token,
        NOTIFIER_SLACK_API_URL=servers.slack.api_url,
        **settings,
    )
    if llm:
        env |= {"NOTIFIER_LLM_URL": servers.llm.url, "NOTIFIER_LLM_MODEL": "stand-in-1"}
    process = await start_cli(*args, env=env)
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def speech_papers(day: str = "2025-06-03") -> set[str]:
    return expected(fixture_items(SMALL, day), "speech recognition")


def text_of(message: email.message.EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def html_of(message: email.message.EmailMessage) -> str:
    part = message.get_body(("html",))
    assert part is not None
    return str(part.get_content())


async def test_rich_entries_carry_summaries_and_no_paper_is_summarised_twice(servers):
    rich = speech_papers()
    assert len(rich) >= 2, "the fixture day has several speech recognition papers"
    code, _out, err = await notifier(servers, "once")
    assert code == 0, err
    (message,) = mail_by_recipient(servers.smtp)["sam@lab.example"]
    text = text_of(message)
    assert text.count(LABEL) == len(rich), "each rich entry has its summary"
    assert LABEL in html_of(message)
    assert servers.llm.chats == len(rich), "one request per paper, whoever wants it (email and Slack share it)"
    posts = [p for p in servers.slack.posts if p.channel == "#speech"]
    assert json.dumps([p.blocks for p in posts]).count(LABEL) == len(rich)

    code, _out, err = await notifier(servers, "once")
    assert code == 0, err
    assert servers.llm.chats == len(rich), "a second run asks nothing again"

    servers.arxiv.set_day("2025-06-04")
    code, _out, err = await notifier(servers, "once")
    assert code == 0, err
    fresh = speech_papers("2025-06-04") - rich
    assert servers.llm.chats == len(rich) + len(fresh), "the next day asks for the new papers only"
    code, out, err = await notifier(servers, "status")
    assert code == 0, err
    made = len(rich) + len(fresh)
    assert f"summaries today (UTC): {made} made and 0 failed of {made} papers asked, daily limit 500" in out


async def test_a_stalled_llm_never_holds_the_digest_past_its_grace(servers):
    servers.llm.mode = "stall"
    started = time.monotonic()
    code, _out, err = await notifier(servers, "once", NOTIFIER_LLM_GRACE="2", NOTIFIER_LLM_TIMEOUT="30")
    took = time.monotonic() - started
    assert code == 0, err
    assert took < 25, f"once took {took:.1f}s; the grace is 2s and the LLM timeout 30s"
    (message,) = mail_by_recipient(servers.smtp)["sam@lab.example"]
    assert paper_ids(message) >= speech_papers(), "the digest went out with every paper"
    assert LABEL not in text_of(message), "without summaries, shown as before"
    assert servers.llm.chats >= 1

    servers.llm.mode = "valid"
    sent = len(servers.smtp.messages)
    code, _out, err = await notifier(servers, "once")
    assert code == 0, err
    assert len(servers.smtp.messages) == sent, "a summary made later is never sent as a second mail"


async def test_the_daily_limit_holds_across_runs(servers):
    code, _out, err = await notifier(servers, "once", NOTIFIER_LLM_DAILY_LIMIT="2")
    assert code == 0, err
    assert servers.llm.chats == 2
    (message,) = mail_by_recipient(servers.smtp)["sam@lab.example"]
    assert text_of(message).count(LABEL) == 2, "the two most-wanted papers have summaries, the rest none"
    assert paper_ids(message) >= speech_papers()
    assert "daily limit of 2 summaries" in err

    servers.arxiv.set_day("2025-06-04")
    code, _out, err = await notifier(servers, "once", NOTIFIER_LLM_DAILY_LIMIT="2")
    assert code == 0, err
    assert servers.llm.chats == 2, "the limit is per UTC day, counted in the store across runs"
    code, out, err = await notifier(servers, "status", NOTIFIER_LLM_DAILY_LIMIT="2")
    assert code == 0, err
    assert "summaries today (UTC): 2 made and 0 failed of 2 papers asked, daily limit 2" in out


class _Elements(HTMLParser):
    """Every element and attribute of an HTML document, as a browser's parser would see them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes.extend((name, value or "") for name, value in attrs)


async def test_hostile_llm_output_is_inert_in_email_and_slack(servers, tmp_path):
    servers.llm.mode = "inject"
    code, _out, err = await notifier(servers, "once")
    assert code == 0, err
    (message,) = mail_by_recipient(servers.smtp)["sam@lab.example"]
    assert "Bcc" not in message and "\n" not in message["Subject"]
    html = html_of(message)
    elements = _Elements()
    elements.feed(html)
    assert "script" not in elements.tags
    assert not any(name.startswith("on") for name, _value in elements.attributes)
    assert not any(value.strip().lower().startswith("javascript:") for _name, value in elements.attributes)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html, "the hostile text is shown, as text"
    assert "<script>alert(1)</script>" in text_of(message), "the plain text part shows it literally"
    posts = [p for p in servers.slack.posts if p.channel == "#speech"]
    raw = json.dumps([p.blocks for p in posts]) + "".join(p.text or "" for p in posts)
    assert "<!channel>" not in raw and "<@U123>" not in raw
    assert "&lt;!channel&gt;" in raw

    if CHROMIUM is None:
        return
    page = tmp_path / "digest.html"
    page.write_text(html, encoding="utf-8")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOTS / "rich-entry-hostile-llm.png"
    dom = await chromium(tmp_path, "--dump-dom", page.as_uri())
    await chromium(tmp_path, "--window-size=900,1600", f"--screenshot={shot}", page.as_uri())
    assert "<script>alert" not in dom and not re.search(r"<img[^>]*onerror", dom)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom, "Chromium shows the hostile text as text"
    assert shot.stat().st_size > 1000


async def chromium(tmp_path: Path, *args: str) -> str:
    """Run headless Chromium (as tests/test_render_browser.py does) and return what it printed."""
    assert CHROMIUM is not None
    process = await asyncio.create_subprocess_exec(
        CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 90)
    assert process.returncode == 0, err.decode()[-2000:]
    return out.decode()


async def test_preview_shows_stored_summaries_and_asks_the_llm_only_when_told(servers):
    code, _out, err = await notifier(servers, "once", llm=False)
    assert code == 0, err
    servers.config.write_text(CONFIG + LATER)
    rich = speech_papers()

    code, out, err = await notifier(servers, "preview", "later")
    assert code == 0, err
    assert servers.llm.chats == 0, "preview never asks the LLM by itself"
    assert LABEL not in out
    missing = f"(summaries: 0 of {len(rich)} rich entries have one; {len(rich)} still missing:"
    assert missing in err and "'notifier preview later --summarise' makes them)" in err

    code, out, err = await notifier(servers, "preview", "later", "--summarise")
    assert code == 0, err
    assert servers.llm.chats == len(rich)
    assert out.count(LABEL) == len(rich)
    assert f"(summaries: {len(rich)} of {len(rich)} rich entries have one)" in err

    code, out, err = await notifier(servers, "preview", "later")
    assert code == 0, err
    assert servers.llm.chats == len(rich), "stored summaries are shown, not asked again"
    assert out.count(LABEL) == len(rich)

    code, _out, err = await notifier(servers, "preview", "later", "--summarise", llm=False)
    assert code == 1 and "--summarise needs an LLM" in err


async def run_daemon_until_mail(
    servers: Servers, data: str, **settings: str
) -> tuple[email.message.EmailMessage, float]:
    """Start ``notifier run`` on its own data directory, return the first digest it mails and how long it took,
    then stop it with SIGTERM."""
    env = cli_environment(
        servers.config.parent,
        servers.arxiv,
        servers.smtp,
        NOTIFIER_DATA_DIR=str(servers.config.parent / data),
        NOTIFIER_LLM_URL=servers.llm.url,
        NOTIFIER_LLM_MODEL="stand-in-1",
        **settings,
    )
    sent = len(servers.smtp.messages)
    started = time.monotonic()
    process = await start_cli("run", env=env)
    try:
        while len(servers.smtp.messages) == sent:
            assert process.returncode is None, "the daemon stopped"
            assert time.monotonic() - started < 60, "no digest within a minute"
            await asyncio.sleep(0.1)
        took = time.monotonic() - started
    finally:
        process.send_signal(signal.SIGTERM)
        _out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    (message,) = mail_by_recipient(servers.smtp, sent)["sam@lab.example"]
    return message, took


async def test_the_daemon_waits_for_summaries_but_never_past_the_grace(servers):
    servers.config.write_text(CONFIG.replace("daily 08:00 UTC", "instant"))
    rich = speech_papers()
    message, _took = await run_daemon_until_mail(servers, "answering")
    assert text_of(message).count(LABEL) == len(rich), "a due digest waits for the summaries being made"

    servers.llm.mode = "stall"
    message, took = await run_daemon_until_mail(servers, "stalled", NOTIFIER_LLM_GRACE="3")
    assert LABEL not in text_of(message)
    assert paper_ids(message) >= rich
    assert took < 40, f"the digest came {took:.0f}s after the start; the grace is 3s"
