"""Ranking by embeddings, through the real CLI: the liked papers looked up in the arXiv stand-in, every paper ranking
needs embedded once by the OpenAI-compatible stand-in and cached, and when its embeddings fail, ranking by TF-IDF
with one log line."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from notifier.store.sqlite import SqliteStore
from tests.arxiv_server import ArxivStandIn
from tests.cli import cli_environment, start_cli
from tests.llm_server import LlmStandIn
from tests.smtp_server import SmtpServer
from tests.test_end_to_end import SMALL, contains, fixture_items, mail_by_recipient
from tests.test_likes_cli import CONFIG, EXPLAINED, LIKED, section

pytestmark = pytest.mark.slow  # each test runs the CLI in a child process

MODEL = "stand-in-embed"
KEY = "sk-embeddings-key"
FALLBACK = re.compile(r"TF-IDF", re.IGNORECASE)


async def notifier(tmp_path: Path, arxiv: ArxivStandIn, smtp: SmtpServer, llm: LlmStandIn) -> str:
    """``notifier once`` with the embedding model set; its standard error."""
    env = cli_environment(
        tmp_path, arxiv, smtp, NOTIFIER_LLM_URL=llm.url, NOTIFIER_LLM_API_KEY=KEY, NOTIFIER_EMBEDDING_MODEL=MODEL
    )
    process = await start_cli("once", env=env)
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    assert KEY not in out.decode() + err.decode()
    return err.decode()


def ranked_section(smtp: SmtpServer, sent: int) -> str:
    (message,) = mail_by_recipient(smtp, sent)["lab@lab.example"]
    body = message.get_body(("plain",))
    assert body is not None
    return section(str(body.get_content()), "most like our papers")


async def test_papers_are_embedded_once_and_the_most_like_yours_say_why(tmp_path):
    (tmp_path / "subscribers.yaml").write_text(CONFIG)
    async with ArxivStandIn(day="2025-06-03") as arxiv, LlmStandIn(api_key=KEY) as llm:
        with SmtpServer() as smtp:
            first = await notifier(tmp_path, arxiv, smtp, llm)
            after_first = llm.embedding_inputs
            sent = len(smtp.messages)
            arxiv.set_day("2025-06-04")
            second = await notifier(tmp_path, arxiv, smtp, llm)
            after_second = llm.embedding_inputs
            ranked = ranked_section(smtp, sent)
            third = await notifier(tmp_path, arxiv, smtp, llm)
    store = SqliteStore(tmp_path / "data" / "notifier.sqlite3")
    try:
        papers = {paper.key for paper in store.recent_papers(datetime(2000, 1, 1, tzinfo=UTC), 100_000)}
        liked = {paper.key for paper in store.reference_papers(LIKED).values()}
        cached = store.embeddings(MODEL, papers | liked)
        (rows,) = store._query("SELECT count(*) AS n FROM embeddings WHERE model = ?", (MODEL,))
    finally:
        store.close()
    assert set(cached) == papers | liked, "every paper ranking needs is embedded and cached"
    assert after_second == rows["n"], "each paper version once: the second run asked only for what was new"
    assert llm.embedding_inputs == after_second, "a run with nothing new asks for no embedding"
    assert 0 < after_first < after_second
    top = re.findall(r"arxiv\.org/abs/(\d{4}\.\d{5})", ranked)
    assert len(top) == 5
    about_asr = {i.arxiv_id for i in fixture_items(SMALL, "2025-06-04") if contains(i.text, "speech recognition")}
    assert len(set(top) & about_asr) >= 2, "the nearest vectors are papers on speech recognition"
    assert len(EXPLAINED.findall(ranked)) == 5 and set(EXPLAINED.findall(ranked)) <= set(LIKED)
    assert "score 0." in ranked or "score 1." in ranked
    for err in (first, second, third):
        assert not FALLBACK.search(err), "every subscriber ranked by embeddings"
    assert "papers embedded with stand-in-embed" in second


async def test_failing_embeddings_fall_back_to_tf_idf_with_one_log_line(tmp_path):
    (tmp_path / "subscribers.yaml").write_text(CONFIG)
    async with ArxivStandIn(day="2025-06-03") as arxiv, LlmStandIn(api_key=KEY) as llm:
        llm.embeddings_mode = "error"
        with SmtpServer() as smtp:
            await notifier(tmp_path, arxiv, smtp, llm)
            sent = len(smtp.messages)
            arxiv.set_day("2025-06-04")
            err = await notifier(tmp_path, arxiv, smtp, llm)
            ranked = ranked_section(smtp, sent)
    lines = [line for line in err.splitlines() if FALLBACK.search(line) or "notifier.embeddings" in line]
    assert len(lines) == 1, err
    assert "notifier.outbox.ranking" not in err, "the plan does not say it again"
    assert "WARNING" in lines[0] and "server error (500)" in lines[0] and "falls back to TF-IDF" in lines[0]
    top = re.findall(r"arxiv\.org/abs/(\d{4}\.\d{5})", ranked)
    assert len(top) == 5 and len(EXPLAINED.findall(ranked)) == 5, "ranked by TF-IDF, each with its reason"
    assert llm.embedding_requests, "the stand-in was asked"
