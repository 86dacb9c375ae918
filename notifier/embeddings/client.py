"""Embeddings of papers from an OpenAI-compatible ``/v1/embeddings`` endpoint, through the official ``openai`` client.

The client is built, and what goes wrong translated, as the summaries' client does it
(:func:`~notifier.summaries.client.open_client`, :func:`~notifier.summaries.client.translate_error`): one attempt
per request, ``NOTIFIER_LLM_TIMEOUT`` seconds each, the key never in a message; the ``openai`` package is imported
when the first client is made. A paper's text is its title and abstract, as TF-IDF reads it
(:func:`~notifier.relevance.corpus.text_of`). Papers go in batches of at most :data:`BATCH` texts, at most
``NOTIFIER_LLM_CONCURRENCY`` requests at once; the first failure ends the run
(:class:`~notifier.errors.EmbeddingError`), and what was embedded before it has been handed over already.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from notifier.config.settings import Settings
from notifier.errors import EmbeddingError, InvalidEmbeddingError
from notifier.models import Paper
from notifier.relevance.corpus import text_of
from notifier.summaries.client import open_client, translate_error

if TYPE_CHECKING:
    from openai.types import CreateEmbeddingResponse

log = logging.getLogger(__name__)

BATCH = 100  # texts per request
Vectors = npt.NDArray[np.float32]  # one row per text


class EmbeddingClient:
    """Asks one embedding model at one OpenAI-compatible base URL for the vectors of papers. Close it with
    :meth:`aclose`."""

    def __init__(
        self, *, url: str, model: str, api_key: str | None = None, timeout: float = 60.0, concurrency: int = 4
    ) -> None:
        self.url = url
        self.model = model
        self.concurrency = concurrency
        self._api_key = api_key
        self._openai = open_client(url, api_key, timeout)

    @classmethod
    def from_settings(cls, settings: Settings) -> EmbeddingClient:
        """The client of ``settings.llm_url`` and ``embedding_model`` (see :attr:`Settings.embeddings_enabled`)."""
        if settings.llm_url is None or not settings.embedding_model:
            raise ValueError("no embedding model is configured (NOTIFIER_LLM_URL and NOTIFIER_EMBEDDING_MODEL)")
        return cls(
            url=settings.llm_url,
            model=settings.embedding_model,
            api_key=settings.llm_api_key,
            timeout=settings.llm_timeout,
            concurrency=settings.llm_concurrency,
        )

    async def embed_texts(self, texts: Sequence[str]) -> Vectors:
        """One request for the vectors of ``texts`` (at most :data:`BATCH`), a row each in order. Raises an
        :class:`~notifier.errors.EmbeddingError`."""
        import openai  # imported with the client already (see notifier.summaries.client)

        try:
            answer = await self._openai.embeddings.create(model=self.model, input=list(texts), encoding_format="float")
        except openai.OpenAIError as exc:
            error = translate_error(exc, secret=self._api_key)
            raise EmbeddingError(str(error), llm_error=error) from exc
        return _vectors(answer, len(texts))

    async def embed(self, papers: Sequence[Paper], on_batch: Callable[[Sequence[Paper], Vectors], None]) -> None:
        """Embed ``papers`` in batches of :data:`BATCH`, at most :attr:`concurrency` requests at once, handing each
        batch's papers and vectors to ``on_batch`` as it arrives. The first failure cancels the requests still
        running and is raised (an :class:`~notifier.errors.EmbeddingError`)."""
        batches = [papers[start : start + BATCH] for start in range(0, len(papers), BATCH)]
        slots = asyncio.Semaphore(self.concurrency)

        async def one(batch: Sequence[Paper]) -> None:
            async with slots:
                vectors = await self.embed_texts([text_of(paper) for paper in batch])
            on_batch(batch, vectors)

        try:
            async with asyncio.TaskGroup() as group:
                for batch in batches:
                    group.create_task(one(batch))
        except* EmbeddingError as failures:
            raise failures.exceptions[0] from None

    async def aclose(self) -> None:
        await self._openai.close()

    async def __aenter__(self) -> EmbeddingClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _vectors(answer: CreateEmbeddingResponse, count: int) -> Vectors:
    """The answer's vectors in input order: exactly ``count`` of them, of finite numbers, all one length."""
    data = getattr(answer, "data", None)
    if not isinstance(data, list) or len(data) != count:
        got = len(data) if isinstance(data, list) else "no"
        raise InvalidEmbeddingError(f"invalid answer: {got} embeddings for {count} texts")
    try:
        ordered = sorted(data, key=lambda item: int(item.index))
        indexes = [int(item.index) for item in ordered]
        rows = [item.embedding for item in ordered]
    except (AttributeError, TypeError, ValueError) as exc:
        raise InvalidEmbeddingError(f"invalid answer: {exc}") from None
    if indexes != list(range(count)):
        raise InvalidEmbeddingError(f"invalid answer: the embeddings' indexes are not 0 to {count - 1}")
    if any(isinstance(row, (str, bytes)) or not row for row in rows):
        raise InvalidEmbeddingError("invalid answer: an embedding is not a list of numbers")
    try:
        vectors = np.array(rows, dtype=np.float32)
    except (TypeError, ValueError):
        raise InvalidEmbeddingError("invalid answer: the embeddings are not lists of numbers of one length") from None
    if vectors.ndim != 2:
        raise InvalidEmbeddingError("invalid answer: the embeddings are not all of one length")
    if not np.isfinite(vectors).all():
        raise InvalidEmbeddingError("invalid answer: an embedding holds a number that is not finite")
    return vectors
