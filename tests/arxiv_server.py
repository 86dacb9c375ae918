"""The arXiv stand-in (:mod:`notifier.demo.stand_in`) over the shared fixtures: two captured days of two combined
feeds, a legacy RSS 1.0 day, recorded API answers, and the synthetic split into categories and API metadata that
the tests of polling, backfill and enrichment need.

Use in tests with ``async with ArxivStandIn() as server`` or the ``arxiv_stand_in`` / ``arxiv_stand_in_factory``
fixtures. As a process::

    python -m tests.arxiv_server --port 0 --day 2025-06-03     # prints "READY http://127.0.0.1:PORT"
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest_asyncio

from notifier.arxiv.gate import PoliteGate
from notifier.demo import stand_in
from notifier.demo.stand_in import (
    BOMB,
    FAULT_MODES,
    HTML_PAGE,
    MALFORMED,
    SMALL,
    Catalogue,
    _ApiPaper,
    canonical_key,
    canonical_order,
    category_feed,
    day_feed,
    item_categories,
    serve_until_stopped,
    submission_cutoff,
    synthetic_metadata,
)

__all__ = [
    "BIG",
    "BOMB",
    "FAULT_MODES",
    "HTML_PAGE",
    "MALFORMED",
    "RSS_DAYS",
    "SMALL",
    "ArxivStandIn",
    "_ApiPaper",
    "canonical_key",
    "canonical_order",
    "category_feed",
    "day_feed",
    "fixtures_dir",
    "item_categories",
    "submission_cutoff",
    "synthetic_metadata",
]

BIG = "cs.CL+cs.CV+cs.MM+cs.LG+cs.SI"
RSS_DAYS: dict[str, dict[str, str]] = {
    "2025-06-03": {BIG: f"rss-{BIG}-2025-06-03.DERIVED.xml", SMALL: f"rss-{SMALL}-2025-06-03.DERIVED.xml"},
    "2025-06-04": {BIG: f"rss-{BIG}-2025-06-04.DERIVED.xml", SMALL: f"rss-{SMALL}-2025-06-04.DERIVED.xml"},
    "2012-09-12": {"math": "rdf-math-2012-09-12-legacy-rss1.0-lanl-mirror.xml"},
}
CASSETTES = {
    "1707.08567": "api-atom-2026-04-12-id_1707.08567-34authors-mojibake.cassette.json",
    "abc": "api-atom-2026-04-12-id_abc-http400-error.cassette.json",
    "0000.0000": "api-atom-2026-04-12-id_0000.0000-zero-results.cassette.json",
}


def fixtures_dir() -> Path:
    env = os.environ.get("NOTIFIER_FIXTURES_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "arxiv"


def fixture_catalogue(fixtures: Path | None = None) -> Catalogue:
    return Catalogue(
        folder=fixtures or fixtures_dir(),
        days=RSS_DAYS,
        holiday="rss-physics-2025-12-31-empty-holiday.RECONSTRUCTED.xml",
        cassettes=CASSETTES,
        search_cassette="api-atom-2026-04-12-search_testing-10entries.cassette.json",
        synthetic=True,
    )


class ArxivStandIn(stand_in.ArxivStandIn):
    """The stand-in serving the shared fixtures, with their synthetic categories and metadata."""

    def __init__(
        self,
        *,
        day: str = "2025-06-03",
        fixtures: Path | None = None,
        host: str = "127.0.0.1",
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        super().__init__(day=day, catalogue=fixture_catalogue(fixtures), host=host, clock=clock)


@pytest_asyncio.fixture
async def arxiv_stand_in_factory() -> AsyncIterator[Callable[..., Awaitable[ArxivStandIn]]]:
    """Start any number of stand-ins (keyword arguments as for :class:`ArxivStandIn`); all closed at teardown."""
    servers: list[ArxivStandIn] = []

    async def make(**kwargs: Any) -> ArxivStandIn:
        server = ArxivStandIn(**kwargs)
        await server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.close()


@pytest_asyncio.fixture
async def arxiv_stand_in(
    arxiv_stand_in_factory: Callable[..., Awaitable[ArxivStandIn]],
) -> ArxivStandIn:
    return await arxiv_stand_in_factory()


@contextlib.asynccontextmanager
async def stand_in_with_gate(*, request_timeout: float) -> AsyncIterator[tuple[PoliteGate, ArxivStandIn]]:
    """A running stand-in and a quick polite gate to it (short spacing, two attempts, ``request_timeout`` a request)."""
    async with ArxivStandIn() as server, aiohttp.ClientSession() as session:
        gate = PoliteGate(
            session,
            user_agent="arxiv-notifier/test (+t@example.org)",
            min_interval=0.05,
            timeout=request_timeout,
            max_attempts=2,
            backoff_base=0.05,
        )
        yield gate, server


async def _serve(args: argparse.Namespace) -> None:
    fixtures = Path(args.fixtures) if args.fixtures else None
    await serve_until_stopped(ArxivStandIn(day=args.day, fixtures=fixtures, host=args.host), args.port)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the arXiv fixtures like rss.arxiv.org and the export API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--day", default="2025-06-03")
    parser.add_argument("--fixtures", default=None, help="fixture directory (default: shared/fixtures/arxiv)")
    asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
