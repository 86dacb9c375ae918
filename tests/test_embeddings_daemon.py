"""Embedding inside the daemon: right after each poll (``run``'s poll round as ``once``'s cycle), the papers ranking
needs are embedded and stored; a stalled embeddings endpoint costs one warning and holds up neither the summaries
nor the digests. In process, with a settable clock, the arXiv stand-in and the OpenAI-compatible stand-in."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from notifier.config.settings import load_settings
from notifier.config.subscribers import load_config
from notifier.daemon import Notifier
from tests.arxiv_server import ArxivStandIn
from tests.clock import Clock
from tests.llm_server import LlmStandIn
from tests.test_likes_cli import LIKED

pytestmark = pytest.mark.slow  # each test polls the stand-in and plans a day (a few seconds)

POLLED = datetime(2025, 6, 3, 4, 10, tzinfo=UTC)  # just after Tuesday's announcement
MODEL = "stand-in-embed"
CONFIG = f"""\
defaults:
  categories: [cs.SD, eess.AS]
subscribers:
  - name: asr-lab
    email: lab@lab.example
    like: [{", ".join(f'"{arxiv_id}"' for arxiv_id in LIKED)}]
    rules:
      - {{name: most like ours, similar: {{top: 5}}}}
      - {{name: speech recognition, query: '"speech recognition"', summaries: true}}
"""


@pytest.fixture
async def servers() -> AsyncIterator[tuple[ArxivStandIn, LlmStandIn]]:
    async with ArxivStandIn(day="2025-06-03") as arxiv, LlmStandIn() as llm:
        yield arxiv, llm


def app_of(tmp_path: Path, arxiv: ArxivStandIn, llm: LlmStandIn, **settings: object) -> Notifier:
    path = tmp_path / "subscribers.yaml"
    path.write_text(CONFIG)
    overrides: dict[str, object] = {
        "subscribers": str(path),
        "data_dir": str(tmp_path / "data"),
        "arxiv_rss_url": arxiv.rss_base_url,
        "arxiv_api_url": arxiv.api_url,
        "min_request_interval": 0.05,
        "llm_url": llm.url,
        "embedding_model": MODEL,
    }
    return Notifier(load_settings({}, overrides | settings), load_config(path, {}), clock=Clock(POLLED))


async def test_a_poll_round_embeds_what_ranking_needs(servers, tmp_path):
    arxiv, llm = servers
    async with app_of(tmp_path, arxiv, llm) as app:
        await app._poll_round()
        recent = app.store.recent_papers(POLLED - timedelta(days=30), 100_000)
        liked = list(app.store.reference_papers(LIKED).values())
        stored = app.store.embeddings(MODEL, [paper.key for paper in recent + liked])
    assert len(liked) == len(LIKED) and recent
    assert set(stored) == {paper.key for paper in recent + liked}
    assert llm.embedding_inputs == len(stored), "each paper version once"


async def test_a_stalled_endpoint_holds_up_neither_summaries_nor_digests(servers, tmp_path, caplog):
    arxiv, llm = servers
    llm.embeddings_mode = "stall"
    async with app_of(tmp_path, arxiv, llm, llm_model="stand-in-1", llm_timeout=0.5) as app:
        with caplog.at_level(logging.INFO, logger="notifier"):
            report = await app.cycle(force_send=True)
    assert report.plan is not None and report.plan.digests == 1
    assert llm.chats > 0, "the summaries were asked for"
    warned = [r.getMessage() for r in caplog.records if r.name.startswith("notifier.embeddings")]
    assert len(warned) == 1 and "timed out" in warned[0] and "falls back to TF-IDF" in warned[0]
    assert not [r for r in caplog.records if r.name == "notifier.outbox.ranking" and r.levelno >= logging.INFO]
