"""The politeness gate against the local arXiv stand-in: spacing, identity, retries, limits."""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime

import aiohttp
import pytest
from aiohttp import web

from notifier.arxiv.gate import MAX_REDIRECTS, PoliteGate, parse_retry_after, user_agent
from notifier.errors import FeedError, FeedHTTPError, FeedParseError
from tests.arxiv_server import ArxivStandIn

FEED = "rss/cs.SD+eess.AS"


@pytest.fixture
async def server():
    async with ArxivStandIn() as stand_in:
        yield stand_in


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as client:
        yield client


def make_gate(session, **overrides):
    options = {
        "user_agent": user_agent("ops@example.org"),
        "min_interval": 0.2,
        "timeout": 2.0,
        "max_attempts": 3,
        "backoff_base": 0.1,
    }
    options.update(overrides)
    return PoliteGate(session, **options)


def test_user_agent_names_the_program_and_a_contact():
    assert user_agent("ops@example.org") == "arxiv-notifier/0.1.0 (+ops@example.org)"


def test_retry_after_seconds_and_http_date():
    now = datetime(2025, 6, 3, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("120", now=now) == 120.0
    assert parse_retry_after("Tue, 03 Jun 2025 12:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("Tue, 03 Jun 2025 11:00:00 GMT", now=now) == 0.0
    assert parse_retry_after("soon", now=now) is None
    assert parse_retry_after(None) is None


@pytest.mark.slow
async def test_requests_are_spaced_serialised_and_identified(server, session):
    gate = make_gate(session)
    for _ in range(2):
        await gate.get(server.url + "/" + FEED)
    await gate.get(server.api_url, params={"id_list": "2506.00003"})
    seen = server.requests
    assert len(seen) == 3
    gaps = [b.at - a.at for a, b in itertools.pairwise(seen)]
    assert min(gaps) >= 0.2 - 0.01
    assert all(r.headers["User-Agent"] == "arxiv-notifier/0.1.0 (+ops@example.org)" for r in seen)
    assert [r.path.rsplit("/", 1)[-1] for r in seen] == [
        "cs.SD+eess.AS",
        "cs.SD+eess.AS",
        "query",
    ]


async def test_concurrent_callers_share_one_gate(server, session):
    import asyncio

    gate = make_gate(session, min_interval=0.15)
    await asyncio.gather(*(gate.get(server.url + "/" + FEED) for _ in range(3)))
    times = [r.at for r in server.requests]
    assert all(b - a >= 0.15 - 0.01 for a, b in itertools.pairwise(times))


async def test_retry_after_on_429_is_honoured(server, session):
    gate = make_gate(session, min_interval=0.0)
    server.fail_next("/rss", "429", retry_after=0.5)
    response = await gate.get(server.url + "/" + FEED)
    assert response.status == 200
    first, second = server.requests_to("/rss")
    assert second.at - first.at >= 0.5 - 0.01


async def test_retry_after_as_http_date_on_503(server, session):
    gate = make_gate(session, min_interval=0.0)
    server.fail_next("/rss", "503", retry_after="Mon, 01 Jan 2001 00:00:00 GMT")  # in the past: retry at once
    assert (await gate.get(server.url + "/" + FEED)).status == 200


async def test_503_backs_off_exponentially_then_gives_up(server, session):
    gate = make_gate(session, min_interval=0.0, backoff_base=0.2, jitter=lambda: 1.0)
    server.fail_next("/rss", "503", count=3)
    with pytest.raises(FeedHTTPError) as caught:
        await gate.get(server.url + "/" + FEED)
    assert caught.value.status == 503
    assert "503" in str(caught.value)
    at = [r.at for r in server.requests_to("/rss")]
    assert len(at) == 3
    assert at[1] - at[0] >= 0.2 - 0.01
    assert at[2] - at[1] >= 0.4 - 0.01
    assert (await gate.get(server.url + "/" + FEED)).status == 200  # recovers


async def test_500_is_retried(server, session):
    gate = make_gate(session, min_interval=0.0)
    server.fail_next("/rss", "500")
    assert (await gate.get(server.url + "/" + FEED)).status == 200
    assert len(server.requests) == 2


async def test_a_long_retry_after_is_not_waited_out(server, session):
    gate = make_gate(session, max_retry_after=5.0)
    server.fail_next("/rss", "429", retry_after=3600)
    with pytest.raises(FeedHTTPError) as caught:
        await gate.get(server.url + "/" + FEED)
    assert caught.value.retry_after == 3600
    assert len(server.requests) == 1


async def test_stalled_body_times_out(server, session):
    gate = make_gate(session, timeout=0.5, max_attempts=1)
    server.fail_next("/rss", "stall")
    started = time.monotonic()
    with pytest.raises(FeedError, match=r"did not answer .* within 0\.5s"):
        await gate.get(server.url + "/" + FEED)
    assert time.monotonic() - started < 2
    assert (await gate.get(server.url + "/" + FEED)).status == 200


async def test_stall_then_retry_recovers(server, session):
    gate = make_gate(session, timeout=0.4)
    server.fail_next("/rss", "stall")
    assert (await gate.get(server.url + "/" + FEED)).status == 200
    assert len(server.requests) == 2


async def test_connection_reset_mid_body(server, session):
    gate = make_gate(session, max_attempts=1)
    server.fail_next("/rss", "reset")
    with pytest.raises(FeedError, match="connection to arXiv failed") as caught:
        await gate.get(server.url + "/" + FEED)
    assert isinstance(caught.value.__cause__, FeedError | aiohttp.ClientError)
    assert (await gate.get(server.url + "/" + FEED)).status == 200


@pytest.mark.parametrize("mode", ["huge", "huge-declared"])
async def test_oversized_body_is_not_buffered(server, session, mode):
    gate = make_gate(session, max_bytes=1024 * 1024)
    server.fail_next("/rss", mode)
    started = time.monotonic()
    with pytest.raises(FeedParseError, match="1048576-byte limit"):
        await gate.get(server.url + "/" + FEED)
    assert time.monotonic() - started < 3
    assert len(server.requests) == 1  # not retried
    assert (await gate.get(server.url + "/" + FEED)).status == 200


async def test_default_limit_stops_a_50_mb_body(server, session):
    gate = make_gate(session)
    server.fail_next("/rss", "huge")
    with pytest.raises(FeedParseError, match="20971520-byte limit"):
        await gate.get(server.url + "/" + FEED)


async def test_connection_refused_is_a_feed_error(session):
    gate = make_gate(session, max_attempts=2, min_interval=0.0)
    with pytest.raises(FeedError, match="gave up after 2 attempts"):
        await gate.get("http://127.0.0.1:9/rss/cs.LG")


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError, match="max_attempts"):
        PoliteGate(None, user_agent="x", max_attempts=0)  # type: ignore[arg-type]


class Redirector:
    """A small server that answers with redirects: ``/to?location=...`` redirects there, ``/loop`` to itself."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.app = web.Application()
        self.app.router.add_get("/to", self._to)
        self.app.router.add_get("/loop", self._loop)
        self.runner = web.AppRunner(self.app, access_log=None)
        self.port = 0

    async def __aenter__(self) -> Redirector:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self.runner.addresses[0][1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _to(self, request: web.Request) -> web.Response:
        self.hits.append(request.path_qs)
        raise web.HTTPFound(request.query["location"])

    async def _loop(self, request: web.Request) -> web.Response:
        self.hits.append(request.path_qs)
        raise web.HTTPMovedPermanently("/loop")


@pytest.fixture
async def redirector():
    async with Redirector() as server:
        yield server


async def test_a_redirect_to_another_server_is_refused_and_never_followed(server, redirector, session):
    gate = make_gate(session)
    elsewhere = server.url + "/" + FEED  # the arXiv stand-in: same host, another port, so another server
    with pytest.raises(FeedHTTPError, match="another server") as info:
        await gate.get(redirector.url("/to"), params={"location": elsewhere})
    assert "NOTIFIER_ARXIV_RSS_URL" in str(info.value)
    assert info.value.status == 302
    assert server.requests == [], "the other server was never asked"
    assert len(redirector.hits) == 1, "a refused redirect is not retried"


async def test_a_redirect_on_the_same_server_is_followed(redirector, session):
    gate = make_gate(session)
    response = await gate.get(redirector.url("/to"), params={"location": "/to?location=/missing"})
    assert response.status == 404 and response.url == redirector.url("/missing")
    assert redirector.hits == ["/to?location=/to?location%3D/missing", "/to?location=/missing"]


async def test_a_redirect_loop_stops_after_a_few_hops(redirector, session):
    gate = make_gate(session)
    with pytest.raises(FeedHTTPError, match=f"more than {MAX_REDIRECTS} times"):
        await gate.get(redirector.url("/loop"))
    assert len(redirector.hits) == MAX_REDIRECTS + 1, "one attempt, not retried"
