"""Papers' embeddings: the vector an embedding model gave each paper version, kept for good while the paper is.

One row of ``embeddings`` per (arxiv id, version, model), its vector as float32 bytes. The first vector stored
stays (:meth:`EmbeddingQueries.save_embeddings`), so a paper version is embedded once per model, ever, and two
daemons embedding the same paper at once keep one. A vector goes when its paper is neither a feed's (``papers``)
nor a liked one (``reference_papers``) any more (:meth:`~notifier.store.sql.SqlStore.prune`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

import numpy as np
import numpy.typing as npt

from notifier.models import SummaryKey
from notifier.store.dialect import ConnT, Dialect

Vector = npt.NDArray[np.float32]


class EmbeddingQueries(Dialect[ConnT]):
    """The embeddings of the store."""

    def embeddings(self, model: str, keys: Iterable[SummaryKey]) -> dict[SummaryKey, Vector]:
        """(arxiv_id, version) -> its vector under ``model``, for those of ``keys`` that have one.

        Papers are looked up by id, as many at a time as the dialect binds in one statement; versions not asked
        for are left out.
        """
        wanted = set(keys)
        found: dict[SummaryKey, Vector] = {}
        for chunk in self._chunks(sorted({arxiv_id for arxiv_id, _ in wanted})):
            among, params = self._in("arxiv_id", "id", chunk)
            rows = self._query(
                f"SELECT arxiv_id, version, vector FROM embeddings WHERE model = :model AND {among}",
                {"model": model, **params},
            )
            for row in rows:
                key = (str(row["arxiv_id"]), int(row["version"]))
                if key in wanted:
                    found[key] = _vector(row["vector"])
        return found

    def recent_embeddings(self, model: str, since: datetime, limit: int) -> dict[SummaryKey, Vector]:
        """(arxiv_id, version) -> its vector under ``model``, for those of the at most ``limit`` newest papers the
        feeds brought since ``since`` (as :meth:`~notifier.store.likes.LikeQueries.recent_papers` reads them) that
        have one, in one statement."""
        rows = self._query(
            f"""SELECT e.arxiv_id, e.version, e.vector FROM embeddings e
                JOIN (SELECT arxiv_id, version FROM papers WHERE first_seen >= :since
                      ORDER BY first_seen DESC, arxiv_id{self._BY_CODE_POINT} LIMIT :limit) p
                  ON e.arxiv_id = p.arxiv_id AND e.version = p.version
                WHERE e.model = :model""",
            {"since": since, "limit": limit, "model": model},
        )
        return {(str(row["arxiv_id"]), int(row["version"])): _vector(row["vector"]) for row in rows}

    def save_embeddings(self, model: str, vectors: Mapping[SummaryKey, npt.ArrayLike], now: datetime) -> int:
        """Store the vectors ``model`` gave these paper versions at ``now``, in one transaction, as float32; a paper
        version that has a vector under ``model`` keeps it. Returns how many were new."""
        added = 0
        with self.transaction() as db:
            for (arxiv_id, version), vector in vectors.items():
                data = np.asarray(vector, dtype=np.float32).tobytes()
                added += self._exec(
                    db, self._insert_ignore("embeddings VALUES (?, ?, ?, ?, ?)"), (arxiv_id, version, model, data, now)
                )
        return added


def _vector(value: object) -> Vector:
    """A vector as read from a row (SQLite gives bytes, PostgreSQL bytes or a memoryview)."""
    return np.frombuffer(bytes(value), dtype=np.float32)  # type: ignore[call-overload]
