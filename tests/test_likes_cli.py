"""Papers like mine, through the real CLI: liked papers looked up in the arXiv stand-in, the next day's papers ranked
by how much they look like them, each with the liked paper it is nearest to."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.arxiv_server import ArxivStandIn
from tests.cli import ROOT, cli_environment, start_cli
from tests.smtp_server import SmtpServer
from tests.test_end_to_end import SMALL, contains, fixture_items, mail_by_recipient

pytestmark = pytest.mark.slow  # each test runs the CLI in a child process

LIKED = [
    i.arxiv_id
    for i in fixture_items(SMALL, "2025-06-03")
    if i.announce_type == "new" and contains(i.text, "speech recognition")
]
CONFIG = f"""\
subscribers:
  - name: asr-lab
    email: lab@lab.example
    categories: [cs.SD, eess.AS]
    like: [{", ".join(f'"{arxiv_id}"' for arxiv_id in LIKED)}]
    rules:
      - name: most like our papers
        similar: {{top: 5}}
      - name: models like our work
        query: model
        similar: {{min_score: 0.1}}
      - name: music
        query: music
"""
EXPLAINED = re.compile(r"[Ll]ike your (\d{4}\.\d{5})")


async def notifier(tmp_path: Path, arxiv: ArxivStandIn, smtp: SmtpServer, *args: str) -> tuple[int, str, str]:
    process = await start_cli(*args, env=cli_environment(tmp_path, arxiv, smtp))
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def section(text: str, title: str) -> str:
    """The part of a digest's text that a section heading starts, up to the next section."""
    start = text.index(f"{title} (")
    ends = [text.find(f"\n{other} (", start + 1) for other in ("models like our work", "music")]
    return text[start : min([end for end in ends if end > 0], default=len(text))]


async def test_the_papers_most_like_yours_come_first_and_say_why(tmp_path):
    assert len(LIKED) >= 5, "the fixture day has several speech recognition papers to like"
    (tmp_path / "subscribers.yaml").write_text(CONFIG)
    async with ArxivStandIn(day="2025-06-03") as arxiv:
        with SmtpServer() as smtp:
            code, _out, err = await notifier(tmp_path, arxiv, smtp, "once")
            assert code == 0, err
            lists = [set(r.query.get("id_list", "").split(",")) for r in arxiv.requests_to("/api/")]
            assert sum(1 for ids in lists if set(LIKED) <= ids) == 1, "every liked paper in one API request"
            sent = len(smtp.messages)
            arxiv.set_day("2025-06-04")
            code, _out, err = await notifier(tmp_path, arxiv, smtp, "once")
            assert code == 0, err
            (message,) = mail_by_recipient(smtp, sent)["lab@lab.example"]
            code, out, err = await notifier(tmp_path, arxiv, smtp, "likes", "asr-lab")
            assert code == 0, err
    assert out.startswith(f"asr-lab likes ({len(LIKED)} entries, {len(LIKED)} papers known):")
    for arxiv_id in LIKED:
        assert f"  id:{arxiv_id}: 1 paper, looked up " in out
    assert out.rstrip().endswith("asr-lab dislikes: none\nasr-lab feedback: none")
    body = message.get_body(("plain",))
    assert body is not None
    text = str(body.get_content())
    ranked = section(text, "most like our papers")
    top = re.findall(r"arxiv\.org/abs/(\d{4}\.\d{5})", ranked)
    assert len(top) == 5
    about_asr = {i.arxiv_id for i in fixture_items(SMALL, "2025-06-04") if contains(i.text, "speech recognition")}
    day = {i.arxiv_id for i in fixture_items(SMALL, "2025-06-04")}
    assert len(about_asr & day) / len(day) <= 0.25, "five papers of the day at random hold about one on the topic"
    assert len(set(top) & about_asr) >= 2, "the top five hold twice that: like the liked papers, speech recognition"
    assert len(EXPLAINED.findall(ranked)) == 5, "each ranked paper names the liked paper it is nearest to"
    assert set(EXPLAINED.findall(ranked)) <= set(LIKED)
    assert "score 0." in ranked or "score 1." in ranked
    keyword = {i.arxiv_id for i in fixture_items(SMALL, "2025-06-04") if contains(i.text, "model")}
    counted = re.search(r"^  models like our work: (\d+)\r?$", text, re.MULTILINE)
    assert counted, "the section of the query that also ranks"
    assert 0 < int(counted[1]) < len(keyword), "the query's matches, only those that also look like the liked papers"


def test_check_places_a_broken_bib_file_at_its_line(tmp_path):
    (tmp_path / "ours.bib").write_text(
        "@article{ok, title={Fine}, eprint={2506.00454}}\n\n@article{bad,\n  title={Open\n"
    )
    (tmp_path / "subscribers.yaml").write_text(CONFIG.replace("    like: [", '    like: ["ours.bib", '))
    done = subprocess.run(
        [sys.executable, "-m", "notifier", "check", "--subscribers", str(tmp_path / "subscribers.yaml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.startswith(f"{tmp_path / 'ours.bib'}:3: not valid BibTeX: '@article{{bad,")
