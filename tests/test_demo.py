"""`notifier demo`: one real cycle, offline, against the arXiv day bundled in the package."""

from __future__ import annotations

import email
import email.policy
import json
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import aiohttp
import pytest

from notifier.demo.stand_in import DATA, ArxivStandIn

ROOT = Path(__file__).resolve().parents[1]
MADE_UP = ("math.OC", "synthetic comment", "Synthetic J. Test.")


def run_demo(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "notifier", "demo", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.hrefs += [value for name, value in attrs if tag == "a" and name == "href" and value]


def test_demo_prints_each_file_it_produced_and_an_index_that_links_every_email_digest(tmp_path):
    folder = tmp_path / "demo"
    done = run_demo("--dir", str(folder))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:4] == [
        "serving a captured day of arXiv (cs.SD and eess.AS, 2025-06-03) on 127.0.0.1; nothing is fetched from the"
        " internet",
        "feed cs.SD: ok, 108 new items",
        "feed eess.AS: ok, 108 new items",
        "digests: 2 (29 papers); deliveries: 4 sent, 0 to retry, 0 failed",
    ]
    assert lines[4] == f"files written to {folder}:"
    assert lines[-1] == f"open {folder / 'index.html'} in a browser to read the email digests"
    listed = [Path(line.strip()) for line in lines[5:-1]]
    produced = sorted(path for path in (folder / "outbox").rglob("*") if path.is_file())
    pages = sorted((folder / "pages").iterdir())
    assert listed == [*produced, *pages]
    emails = [path for path in produced if path.suffix == ".eml"]
    assert len(emails) == 3 and len([path for path in produced if path.suffix == ".json"]) == 1
    links = Links()
    links.feed((folder / "index.html").read_text(encoding="utf-8"))
    assert sorted(folder / href for href in links.hrefs) == pages
    for eml in emails:
        message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
        html_part = message.get_body(("html",))
        assert html_part is not None
        assert (folder / "pages" / f"{eml.stem}.html").read_text(encoding="utf-8") == html_part.get_content().replace(
            "\r\n", "\n"
        )


@pytest.mark.slow
def test_demo_digests_hold_only_what_arxiv_announced(tmp_path):
    """The bundled capture has no categories, comments or journal references: the demo shows none of them."""
    folder = tmp_path / "demo"
    assert run_demo("--dir", str(folder)).returncode == 0
    feed = (DATA / "rss-cs.SD+eess.AS-2025-06-03.xml").read_text(encoding="utf-8")
    captured = set(re.findall(r"<guid isPermaLink=\"false\">oai:arXiv.org:(\d{4}\.\d{5})v\d+</guid>", feed))
    for path in (folder / "outbox").rglob("*"):
        if path.is_file():
            text = path.read_bytes().decode("utf-8", "replace")
            assert not [made_up for made_up in MADE_UP if made_up in text]
            assert "Comment:" not in text and "Journal ref:" not in text
    slack = json.loads(next((folder / "outbox" / "slack").iterdir()).read_text(encoding="utf-8"))
    shown = set(re.findall(r"arxiv\.org/abs/(\d{4}\.\d{5})", json.dumps(slack)))
    assert shown and shown <= captured


@pytest.mark.slow
def test_demo_refuses_a_folder_that_holds_something(tmp_path):
    (tmp_path / "notes.txt").write_text("mine", encoding="utf-8")
    done = run_demo("--dir", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr == f"error: {tmp_path} is not empty; give a new or empty folder\n"
    assert [path.name for path in tmp_path.iterdir()] == ["notes.txt"]


@pytest.mark.slow
def test_demo_ignores_the_settings_of_the_environment(tmp_path):
    """A shell set up for production (a real SMTP host) sends nothing from the demo."""
    done = subprocess.run(
        [sys.executable, "-m", "notifier", "demo", "--dir", str(tmp_path / "demo")],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "NOTIFIER_SMTP_HOST": "127.0.0.1", "NOTIFIER_SMTP_PORT": "9"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "deliveries: 4 sent, 0 to retry, 0 failed" in done.stdout


async def test_the_bundled_stand_in_answers_the_api_with_the_feed_s_own_text_and_nothing_made_up():
    async with ArxivStandIn() as server, aiohttp.ClientSession() as session:
        async with session.get(server.api_url, params={"id_list": "2506.00145"}) as response:
            body = await response.text()
        async with session.get(server.rss_base_url + "cs.SD") as response:
            feed = await response.read()
    assert "Vedavani: A Benchmark Corpus for ASR on Vedic Sanskrit Poetry" in body
    assert "<arxiv:primary_category" not in body and "<category" not in body
    assert "arxiv:comment" not in body and "arxiv:journal_ref" not in body
    assert feed == (DATA / "rss-cs.SD+eess.AS-2025-06-03.xml").read_bytes()


def test_the_stand_in_needs_no_test_dependency():
    program = (
        "import sys, notifier.demo.stand_in, notifier.demo.run; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pytest', 'pytest_asyncio', 'tests')))"
    )
    done = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout == "[]\n"


def test_the_bundled_day_is_small():
    assert sum(path.stat().st_size for path in DATA.iterdir()) < 1_000_000
