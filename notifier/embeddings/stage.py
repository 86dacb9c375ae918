"""The embedding stage: after each poll, the papers ranking will need are embedded, each paper version once per model.

Ranking in the embedding space (:class:`~notifier.outbox.ranking.Rankings`) needs a vector for every paper it
places: the liked and disliked papers of the subscribers that rank, and the papers of the corpus window (the recent
papers, among which are those the next digests can show). What the store has no vector for is asked of the
embedding model (``NOTIFIER_EMBEDDING_MODEL`` at ``NOTIFIER_LLM_URL``) and stored as each batch arrives, so a crash
loses none and nothing is asked twice. It fails open: any failure ends this cycle's embedding with one warning, and
ranking falls back to TF-IDF for the subscribers whose papers are not all embedded; nothing else waits for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from notifier.config.settings import Settings
from notifier.config.subscribers import Subscriber
from notifier.embeddings.client import EmbeddingClient, Vectors
from notifier.errors import EmbeddingError
from notifier.models import Paper
from notifier.outbox.ranking import CORPUS_DAYS, CORPUS_PAPERS, ranking_papers
from notifier.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EmbeddingRun:
    """What one :meth:`EmbeddingStage.embed` did."""

    wanted: int  # distinct paper versions ranking needs
    cached: int  # of those, already embedded
    made: int  # embedded now and stored
    error: str | None = None  # why it stopped early, when it did


class EmbeddingStage:
    """Use as ``stage = EmbeddingStage(settings, store, clock)``, then :meth:`embed` after each poll, and
    ``await stage.aclose()`` at the end. With no ``NOTIFIER_EMBEDDING_MODEL`` it is off, and asks nothing."""

    def __init__(self, settings: Settings, store: Store, clock: Callable[[], datetime]) -> None:
        self.store = store
        self.clock = clock
        self._client = EmbeddingClient.from_settings(settings) if settings.embeddings_enabled else None

    @property
    def enabled(self) -> bool:
        return self._client is not None

    def wanted(self, subscribers: Sequence[Subscriber]) -> list[Paper]:
        """The papers ranking ``subscribers`` needs a vector for, each version once: the liked and disliked papers
        of those that rank (their readers' feedback included), then the corpus window's papers, newest first; none
        when no one ranks."""
        ranked = [subscriber for subscriber in subscribers if subscriber.ranks]
        if not ranked:
            return []
        own = [group for pair in ranking_papers(self.store, ranked).values() for group in pair]
        recent = self.store.recent_papers(self.clock() - timedelta(days=CORPUS_DAYS), CORPUS_PAPERS)
        papers: dict[tuple[str, int], Paper] = {}
        for group in (*own, recent):
            for paper in group:
                papers.setdefault(paper.key, paper)
        return list(papers.values())

    async def embed(self, subscribers: Sequence[Subscriber]) -> EmbeddingRun | None:
        """Embed what ranking ``subscribers`` needs and the store has no vector for, storing each batch as it
        arrives; None when the stage is off or no one ranks. A failure is logged (one warning) and reported in
        :attr:`EmbeddingRun.error`, never raised."""
        client = self._client
        if client is None:
            return None
        made = 0

        def store(papers: Sequence[Paper], vectors: Vectors) -> None:
            nonlocal made
            made += self.store.save_embeddings(
                client.model, {paper.key: vector for paper, vector in zip(papers, vectors, strict=True)}, self.clock()
            )

        wanted: list[Paper] = []
        cached = 0
        try:
            wanted = self.wanted(subscribers)
            if not wanted:
                return None
            stored = self.store.embeddings(client.model, (paper.key for paper in wanted))
            cached = len(stored)
            missing = [paper for paper in wanted if paper.key not in stored]
            if missing:
                await client.embed(missing, store)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the server, its answer or the store: ranking falls back, nothing else waits
            reason = str(exc) if isinstance(exc, EmbeddingError) else f"{type(exc).__name__}: {exc}"
            log.warning(
                "embedding papers with %s stopped (%s): %d of %d papers embedded, and ranking falls back to TF-IDF"
                " for the subscribers whose papers are not all embedded",
                client.model,
                reason,
                cached + made,
                len(wanted),
                exc_info=not isinstance(exc, EmbeddingError),
            )
            return EmbeddingRun(len(wanted), cached, made, reason)
        if made:
            log.info("embeddings: %d papers embedded with %s (%d were already)", made, client.model, cached)
        return EmbeddingRun(len(wanted), cached, made)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
