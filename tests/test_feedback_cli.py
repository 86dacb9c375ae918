"""The acceptance test of feedback links, through the real CLI: a digest's "fewer like this" and "more like this"
links, followed through the daemon's real HTTP server, change the next digest, and ``notifier likes`` lists them.

Two data directories start from the same first day: one whose reader clicks, and one left alone, so that the
second day's digests can be told apart by what a person reads in them.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
import shutil
import signal
from collections import Counter
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from tests.arxiv_server import ArxivStandIn
from tests.cli import cli_environment, start_cli
from tests.test_likes_cli import LIKED

pytestmark = pytest.mark.slow  # each test runs the CLI in child processes

PUBLIC_URL = "https://notifier.lab.example"
CONFIG = f"""\
subscribers:
  - name: asr-lab
    email: lab@lab.example
    categories: [cs.SD, eess.AS]
    like: [{", ".join(f'"{arxiv_id}"' for arxiv_id in LIKED)}]
    sort: relevance
    rules:
      - name: most like our papers
        similar: {{top: 12}}
      - name: music
        query: music
"""
EXPLAINED = re.compile(r"Like your (\d{4}\.\d{5})")
LINK = re.compile(r"^    (More|Fewer) like this: +(https://\S+)\r?$", re.MULTILINE)


async def notifier(env: dict[str, str], *args: str) -> str:
    process = await start_cli(*args, env=env)
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()
    return out.decode()


def newest_digest(data: Path) -> str:
    """The text part of the newest email digest in the outbox folder of ``data``."""
    newest = max((data / "outbox" / "email").glob("*.eml"), key=lambda path: path.stat().st_mtime_ns)
    message = email.message_from_bytes(newest.read_bytes(), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    body = message.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


def links_of(text: str) -> dict[tuple[str, str], str]:
    """(arxiv_id, "more" or "fewer") -> the feedback link under that paper in a digest's text part."""
    found = {}
    for label, url in LINK.findall(text):
        query = parse_qs(urlsplit(url).query)
        assert query["s"] == ["asr-lab"] and query["k"] == [label.lower()]
        found[query["p"][0], label.lower()] = url
    return found


def section(text: str, title: str) -> str:
    start = text.index(f"\n{title} (")
    end = text.find("\nmusic (", start + 1) if title != "music" else -1
    return text[start : end if end > 0 else len(text)]


async def click(session: aiohttp.ClientSession, port: int, url: str) -> str:
    """Open ``url`` as a reader does (served on ``port`` here), then press the confirm button; the page it shows."""
    local = url.replace(PUBLIC_URL, f"http://127.0.0.1:{port}")
    async with session.get(local) as response:
        assert response.status == 200
        page = await response.text()
    action = page.split('action="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
    async with session.post(f"http://127.0.0.1:{port}/{action}") as response:
        assert response.status == 200
        return await response.text()


async def serve_and_click(env: dict[str, str], urls: list[str]) -> list[str]:
    """Run ``notifier run`` with its HTTP server, follow ``urls`` through it, stop it; the pages they ended on."""
    process = await start_cli("run", env=env)
    assert process.stderr is not None
    lines: list[str] = []
    port = None
    while port is None:
        line = (await asyncio.wait_for(process.stderr.readline(), 60)).decode()
        assert line, "".join(lines)
        lines.append(line)
        if found := re.search(r"http listening on 127\.0\.0\.1:(\d+)", line):
            port = int(found[1])
    async with aiohttp.ClientSession() as session:
        pages = [await click(session, port, url) for url in urls]
    process.send_signal(signal.SIGTERM)
    _out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, "".join(lines) + err.decode()
    assert "feedback: asr-lab wants fewer papers like" in err.decode()
    return pages


async def test_feedback_links_change_the_next_digest(tmp_path):
    clicked, alone = tmp_path / "clicked", tmp_path / "alone"
    clicked.mkdir()
    (clicked / "subscribers.yaml").write_text(CONFIG)
    async with ArxivStandIn(day="2025-06-03") as arxiv:
        settings = {"NOTIFIER_PUBLIC_URL": PUBLIC_URL, "NOTIFIER_HTTP_ADDR": "127.0.0.1:0"}
        env = cli_environment(clicked, arxiv, **settings)
        await notifier(env, "once")
        first = newest_digest(clicked / "data")
        shutil.copytree(clicked, alone)
        env_alone = cli_environment(alone, arxiv, **settings)

        links = links_of(first)
        arxiv.set_day("2025-06-04")
        await notifier(env_alone, "once")
        untouched = newest_digest(alone / "data")
        # "fewer like this" on the liked paper the untouched second digest names most, "more like this" on a music
        # paper of the first digest: both are there, ranked, with their links
        fewer, _count = Counter(EXPLAINED.findall(section(untouched, "most like our papers"))).most_common(1)[0]
        music = [i for i, kind in links if kind == "more" and f"p={i}&" in section(first, "music")]
        assert (fewer, "fewer") in links and music, first
        more = music[0]

        arxiv.set_day("2025-06-03")  # the daemon's poll finds nothing new while the links are followed
        pages = await serve_and_click(env, [links[fewer, "fewer"], links[more, "more"]])
        assert pages[0].count("Thanks: asr-lab's next digests will show fewer papers like “") == 1
        assert "next digests will show more papers like “" in pages[1]

        arxiv.set_day("2025-06-04")
        await notifier(env, "once")
        second = newest_digest(clicked / "data")
        listed = await notifier(env, "likes", "asr-lab")

    assert LINK.search(second), "the next digest has links too"
    ranked, ranked_untouched = section(second, "most like our papers"), section(untouched, "most like our papers")
    assert fewer in EXPLAINED.findall(ranked_untouched)
    assert fewer not in EXPLAINED.findall(second), "no paper is said to be like the one the reader wants fewer like"
    assert more not in EXPLAINED.findall(untouched)
    assert more in EXPLAINED.findall(second), "papers are said to be like the one the reader wants more like"
    assert ranked != ranked_untouched
    assert re.search(rf"^  fewer  {fewer}  \d{{4}}-\d\d-\d\d \d\d:\d\d UTC  \S", listed, re.MULTILINE), listed
    assert re.search(rf"^  more   {more}  \d{{4}}-\d\d-\d\d \d\d:\d\d UTC  \S", listed, re.MULTILINE), listed
    assert "asr-lab feedback (2 papers" in listed
