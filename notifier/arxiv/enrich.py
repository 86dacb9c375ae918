"""Enrichment, fail-open: comments, journal references, categories and affiliations of matched papers from the API.

The RSS item carries none of these. Only papers some rule matched are looked up, 100 per request through the
politeness gate; when the API is down the digest goes out without them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from datetime import datetime

from notifier.arxiv.api import fetch_metadata
from notifier.arxiv.gate import PoliteGate
from notifier.errors import FeedError
from notifier.store import Store

log = logging.getLogger(__name__)


async def enrich_papers(
    store: Store, gate: PoliteGate, api_url: str, arxiv_ids: Collection[str], clock: Callable[[], datetime]
) -> int:
    """Look up the papers among ``arxiv_ids`` not enriched yet; returns how many were updated."""
    wanted = store.not_enriched(arxiv_ids)
    if not wanted:
        return 0
    try:
        entries = await fetch_metadata(gate, api_url, wanted)
    except FeedError as exc:
        log.warning("arXiv API lookup of %d papers failed; digests go out without comments: %s", len(wanted), exc)
        return 0
    now = clock()
    for arxiv_id in wanted:  # an id the API does not know is marked too, so it is not asked for again
        entry = entries.get(arxiv_id)
        if entry is None:
            store.enrich(arxiv_id, now, comment=None, journal_ref=None, categories=())
        else:
            store.enrich(
                arxiv_id,
                now,
                comment=entry.comment,
                journal_ref=entry.journal_ref,
                categories=entry.categories,
                affiliations=entry.affiliations,
            )
    log.info("enriched %d of %d matched papers from the arXiv API", len(entries), len(wanted))
    return len(entries)
