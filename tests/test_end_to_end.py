"""The whole path, as a user runs it: the real CLI against a local arXiv, a real SMTP server and a Slack stand-in.

The expected papers are computed here from the fixture XML, independently of the matcher: a paper belongs to a
rule when the keyword stands in its title or abstract as whole words (punctuation as spaces, plural allowed).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.arxiv_server import ArxivStandIn, fixtures_dir
from tests.cli import cli_environment, start_cli
from tests.slack_server import SlackServer
from tests.smtp_server import SmtpServer

pytestmark = pytest.mark.slow  # each test runs the CLI in a child process

ROOT = Path(__file__).resolve().parents[1]
SMALL = "cs.SD+eess.AS"
BIG = "cs.CL+cs.CV+cs.MM+cs.LG+cs.SI"
ARXIV_NS = "{http://arxiv.org/schemas/atom}"
ABS_LINK = re.compile(r"arxiv\.org/abs/(\d{4}\.\d{4,5})")


@dataclass(frozen=True)
class FixtureItem:
    arxiv_id: str
    version: int
    announce_type: str
    text: str


def fixture_items(categories: str, day: str) -> list[FixtureItem]:
    tree = ET.parse(fixtures_dir() / f"rss-{categories}-{day}.DERIVED.xml")
    items = []
    for item in tree.iter("item"):
        guid = item.findtext("guid") or ""
        found = re.search(r"(\d{4}\.\d{4,5})v(\d+)$", guid)
        assert found, guid
        description = item.findtext("description") or ""
        abstract = description.split("Abstract:", 1)[-1]
        items.append(
            FixtureItem(
                arxiv_id=found[1],
                version=int(found[2]),
                announce_type=item.findtext(f"{ARXIV_NS}announce_type") or "",
                text=f"{item.findtext('title')} {abstract}",
            )
        )
    return items


def contains(text: str, keyword: str) -> bool:
    words = " ".join(re.sub(r"[^0-9a-z]+", " ", text.lower()).split())
    phrase = " ".join(re.sub(r"[^0-9a-z]+", " ", keyword.lower()).split())
    return re.search(rf"(?<![0-9a-z]){re.escape(phrase)}(s|es)?(?![0-9a-z])", words) is not None


def expected(items: Iterable[FixtureItem], keyword: str, types: Iterable[str] = ("new", "cross")) -> set[str]:
    allowed = set(types)
    return {item.arxiv_id for item in items if item.announce_type in allowed and contains(item.text, keyword)}


CONFIG = f"""\
defaults:
  schedule: "daily 08:00 UTC"
subscribers:
  - name: music
    email: [ann@lab.example, bob@lab.example]
    slack: "#papers"
    categories: [cs.SD, eess.AS]
    rules:
      - name: music
        query: music
  - name: speech
    email: sam@lab.example
    categories: [eess.AS, cs.SD]
    rules:
      - name: speech recognition
        query: '"speech recognition"'
  - name: vision
    email: vic@lab.example
    categories: [{BIG.replace("+", ", ")}]
    rules:
      - name: reinforcement learning
        query: '"reinforcement learning"'
      - name: diffusion
        query: diffusion
  - name: updates
    email: upd@lab.example
    categories: [cs.SD, eess.AS]
    announce_types: [new, cross, replace]
    rules:
      - name: music
        query: music
  - name: hostile
    email: host@lab.example
    slack: "#security"
    categories: [cs.CR]
    rules:
      - name: everything
        query: attack
"""

HOSTILE_FEED = b"""<?xml version='1.0' encoding='UTF-8'?>
<rss xmlns:arxiv="http://arxiv.org/schemas/atom" xmlns:dc="http://purl.org/dc/elements/1.1/" version="2.0">
  <channel>
    <title>cs.CR updates on arXiv.org</title>
    <link>http://rss.arxiv.org/rss/cs.CR</link>
    <description>cs.CR updates on the arXiv.org e-print archive.</description>
    <lastBuildDate>Tue, 03 Jun 2025 04:13:00 +0000</lastBuildDate>
    <pubDate>Tue, 03 Jun 2025 00:00:00 -0400</pubDate>
    <item>
      <title>An attack &lt;script&gt;alert(1)&lt;/script&gt; on
Bcc: victim@evil.example parsers</title>
      <link>https://arxiv.org/abs/2506.99001</link>
      <description>arXiv:2506.99001v1 Announce Type: new
Abstract: We attack &lt;!channel&gt; and &lt;@U123&gt; and &lt;https://evil.example|click&gt;
with &amp;amp; entities.</description>
      <guid isPermaLink="false">oai:arXiv.org:2506.99001v1</guid>
      <pubDate>Tue, 03 Jun 2025 00:00:00 -0400</pubDate>
      <arxiv:announce_type>new</arxiv:announce_type>
      <dc:creator>Mallory &lt;img src=x onerror=alert(1)&gt;, Eve</dc:creator>
    </item>
  </channel>
</rss>
"""


@dataclass
class Servers:
    arxiv: ArxivStandIn
    smtp: SmtpServer
    slack: SlackServer
    config: Path
    data: Path


@pytest.fixture
async def servers(tmp_path):
    config = tmp_path / "subscribers.yaml"
    config.write_text(CONFIG)
    async with (
        ArxivStandIn(day="2025-06-03") as arxiv,
        SlackServer(channels={"#papers", "#security", "#late"}) as slack,
    ):
        arxiv.add_feed("2025-06-03", "cs.CR", HOSTILE_FEED)
        with SmtpServer() as smtp:
            yield Servers(arxiv, smtp, slack, config, tmp_path / "data")


async def notifier(servers: Servers, *args: str) -> tuple[int, str, str]:
    env = cli_environment(
        servers.config.parent,
        servers.arxiv,
        servers.smtp,
        NOTIFIER_MAIL_FROM="arXiv digest <digest@lab.example>",
        NOTIFIER_SLACK_TOKEN=servers.slack.token,
        NOTIFIER_SLACK_API_URL=servers.slack.api_url,
    )
    process = await start_cli(*args, env=env)
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def mail_by_recipient(smtp: SmtpServer, start: int = 0) -> dict[str, list[email.message.EmailMessage]]:
    result: dict[str, list[email.message.EmailMessage]] = {}
    for received in smtp.messages[start:]:
        message = email.message_from_bytes(received.data, policy=email.policy.default)
        assert isinstance(message, email.message.EmailMessage)
        (recipient,) = received.rcpt_tos
        result.setdefault(recipient, []).append(message)
    return result


def paper_ids(message: email.message.EmailMessage) -> set[str]:
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    ids = set(ABS_LINK.findall(text.get_content()))
    assert ids == set(ABS_LINK.findall(html.get_content())), "text and HTML list the same papers"
    return ids


async def test_two_days_of_arxiv_reach_each_subscriber_exactly_once(servers):
    day1_small = fixture_items(SMALL, "2025-06-03")
    day1_big = fixture_items(BIG, "2025-06-03")
    music1 = expected(day1_small, "music")
    speech1 = expected(day1_small, "speech recognition")
    vision1 = expected(day1_big, "reinforcement learning") | expected(day1_big, "diffusion")
    assert music1 and speech1 and music1 != speech1, "the fixture gives these keywords different papers"

    code, out, err = await notifier(servers, "once")
    assert code == 0, err
    assert "digests:" in out
    mail = mail_by_recipient(servers.smtp)
    assert set(mail) == {
        "ann@lab.example",
        "bob@lab.example",
        "sam@lab.example",
        "vic@lab.example",
        "upd@lab.example",
        "host@lab.example",
    }
    assert all(len(messages) == 1 for messages in mail.values()), "one digest per recipient"
    assert paper_ids(mail["ann@lab.example"][0]) == music1
    assert paper_ids(mail["bob@lab.example"][0]) == music1
    assert paper_ids(mail["sam@lab.example"][0]) == speech1
    assert paper_ids(mail["vic@lab.example"][0]) == vision1
    for messages in mail.values():
        (message,) = messages
        assert message["To"].addresses[0].addr_spec in mail  # recipients never see each other
        assert message["Message-ID"] and message["Date"] and message["From"]
    (slack_post, *_) = [post for post in servers.slack.posts if post.channel == "#papers"]
    assert slack_post.unfurl_links is False

    # One request per category, however many subscribers and sets share it.
    rss_paths = sorted(r.path for r in servers.arxiv.requests_to("/rss/"))
    wanted = sorted({*SMALL.split("+"), *BIG.split("+"), "cs.CR"})
    assert rss_paths == [f"/rss/{category}" for category in wanted]

    # Running again on the same announcement sends nothing.
    sent_before = len(servers.smtp.messages)
    code, out, err = await notifier(servers, "once")
    assert code == 0, err
    assert len(servers.smtp.messages) == sent_before
    conditional = [r for r in servers.arxiv.requests_to("/rss/") if r.headers.get("If-None-Match")]
    assert conditional, "the second poll is a conditional GET"

    # The next day: only new papers; a replacement of a paper already sent goes only to 'updates'.
    servers.arxiv.set_day("2025-06-04")
    day2_small = fixture_items(SMALL, "2025-06-04")
    code, out, err = await notifier(servers, "once")
    assert code == 0, err
    day2 = mail_by_recipient(servers.smtp, sent_before)
    music2 = expected(day2_small, "music") - music1
    if music2:
        assert paper_ids(day2["ann@lab.example"][0]) == music2
    else:
        assert "ann@lab.example" not in day2
    replaced = {i.arxiv_id for i in day2_small if i.announce_type == "replace" and contains(i.text, "music")}
    updates2 = expected(day2_small, "music", ("new", "cross", "replace"))
    resent = replaced & music1
    assert paper_ids(day2["upd@lab.example"][0]) == updates2 if updates2 else "upd@lab.example" not in day2
    for messages in day2.get("ann@lab.example", []):
        assert not paper_ids(messages) & resent, "replacements are not resent by default"


async def test_hostile_paper_text_arrives_inert(servers):
    code, _out, err = await notifier(servers, "once")
    assert code == 0, err
    (message,) = mail_by_recipient(servers.smtp)["host@lab.example"]
    assert "Bcc" not in message, "a line break in a title cannot add a header"
    assert "\n" not in message["Subject"] and "\r" not in message["Subject"]
    html = message.get_body(("html",))
    assert html is not None
    body = html.get_content()
    assert "<script>" not in body and "onerror=alert" not in body.replace("onerror=alert(1)&gt;", "")
    assert "&lt;script&gt;" in body
    (post,) = [p for p in servers.slack.posts if p.channel == "#security"]
    raw = json.dumps(post.blocks) + (post.text or "")
    assert "<!channel>" not in raw and "<@U123>" not in raw and "<https://evil.example|click>" not in raw
    assert "&lt;!channel&gt;" in raw


async def test_preview_shows_what_the_next_digest_will_hold_and_records_nothing(servers, tmp_path):
    code, _out, err = await notifier(servers, "once")
    assert code == 0, err
    sent = len(servers.smtp.messages)
    # A subscriber added after the poll: preview shows its next digest from the stored papers.
    late = (
        "  - name: late\n    email: late@lab.example\n    slack: '#late'\n    categories: [cs.SD, eess.AS]\n"
        "    rules: [{name: music, query: music}]\n"
    )
    servers.config.write_text(CONFIG + late)
    code, out, err = await notifier(servers, "preview", "late", "--html", str(tmp_path / "late.html"))
    assert code == 0, err
    previewed = set(ABS_LINK.findall(out))
    assert previewed == expected(fixture_items(SMALL, "2025-06-03"), "music")
    assert "<html" in (tmp_path / "late.html").read_text()
    assert len(servers.smtp.messages) == sent, "preview sends nothing"
    code, out, err = await notifier(servers, "preview", "late", "--slack")
    assert code == 0, err
    slack_preview = json.loads(out)
    assert slack_preview[0]["blocks"]
    code, _out, err = await notifier(servers, "once", "--no-poll")
    assert code == 0, err
    (message,) = mail_by_recipient(servers.smtp, sent)["late@lab.example"]
    assert paper_ids(message) == previewed, "preview recorded nothing, so the real digest holds the same papers"
    posts = [post for post in servers.slack.posts if post.channel == "#late"]
    assert [post.blocks for post in posts] == [part["blocks"] for part in slack_preview], "as previewed"
    code, _out, err = await notifier(servers, "preview", "nobody")
    assert code == 1 and "no subscriber named 'nobody'" in err


async def test_a_broken_feed_is_reported_and_the_next_run_recovers(servers):
    servers.arxiv.fail_next("/rss/", "html", count=8)  # every category's feed answers with an HTML error page
    code, out, err = await notifier(servers, "once")
    assert code == 3, "arXiv unreachable"
    assert "error" in out and "HTML" in (out + err)
    assert err.splitlines()[-1] == (
        "error: arXiv could not be reached: could not fetch any of the 8 feeds; to try the notifier offline on a"
        " bundled day of arXiv, run `notifier demo`"
    )
    assert not servers.smtp.messages
    code, out, err = await notifier(servers, "once")
    assert code == 0, err
    assert mail_by_recipient(servers.smtp)["sam@lab.example"]


async def test_status_shows_feeds_and_deliveries(servers):
    servers.slack.channels.discard("#papers")  # the bot was removed from the channel
    code, _out, err = await notifier(servers, "once")
    assert code == 4, "a delivery failed for good"
    code, out, err = await notifier(servers, "status")
    assert code == 0, err
    assert "  cs.SD: " in out and "  eess.AS: " in out, "one feed per category"
    assert "failed" in out and "#papers" in out and "channel_not_found" in out
    for feed in ("cs.SD", "eess.AS"):  # each feed's health is shown; which one depends on the hour the test runs
        assert re.search(rf"^  {re.escape(feed)}: (ok|late|stale); last announcement seen ", out, re.M), out

    # The bot is invited back; 'retry' sends the failed digest, and only that one.
    servers.slack.channels.add("#papers")
    posts_before = len(servers.slack.posts)
    code, out, err = await notifier(servers, "retry", "music")
    assert code == 0, err
    assert "1 deliveries queued again" in out and "1 sent" in out
    assert {post.channel for post in servers.slack.posts[posts_before:]} == {"#papers"}
