"""The one politeness gate that every request to arXiv goes through.

arXiv asks robots for at most one request every three seconds, on a single connection, with an identifying
User-Agent. :class:`PoliteGate` enforces that for the RSS feeds and the export API together: one lock (one
request in flight), a minimum spacing between the *starts* of any two requests, ``Retry-After`` honoured on
429/503 (and remembered, so the next request waits too), exponential backoff with jitter on transient failures,
a bounded number of attempts, a total timeout per attempt and a cap on the body size, enforced while reading.
A round of requests (a poll) can share a time budget (:meth:`PoliteGate.time_budget`): attempts are cut to what is
left of it, and once it is spent every request fails at once, so a stalled arXiv holds no one for long.
Redirects are followed only on the server asked (same host and port, or http to https), a few at most: a request
to arXiv never goes anywhere else.

The gate does not judge statuses other than the transient ones: it returns 2xx, 3xx and 4xx answers as a
:class:`GateResponse` and leaves their meaning to the caller. aiohttp errors are translated to
:class:`~notifier.errors.FeedError` here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from notifier import __version__
from notifier.errors import FeedError, FeedHTTPError, FeedParseError, TimeBudgetError

logger = logging.getLogger(__name__)

DEFAULT_MIN_INTERVAL = 3.0
DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_ATTEMPTS = 4
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5
_CHUNK = 64 * 1024


def user_agent(contact: str) -> str:
    """The identifying User-Agent arXiv asks for: ``arxiv-notifier/<version> (+<contact>)``."""
    return f"arxiv-notifier/{__version__} (+{contact})"


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date); None when absent or unreadable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


@dataclass(frozen=True, slots=True)
class GateResponse:
    """A complete answer: status, headers (case-insensitive), the whole body, and the final URL."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    url: str


@dataclass(frozen=True, slots=True)
class _TimeBudget:
    gate: PoliteGate
    deadline: float  # on the gate's clock
    name: str  # what ran out, in messages


# The time budget of the requests the current task makes (see PoliteGate.time_budget); tasks do not share it.
_time_budget: ContextVar[_TimeBudget | None] = ContextVar("notifier_gate_time_budget", default=None)


class PoliteGate:
    """Serialises, spaces and retries every GET to arXiv. The caller owns (creates and closes) the session."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        user_agent: str,
        min_interval: float = DEFAULT_MIN_INTERVAL,
        timeout: float = DEFAULT_TIMEOUT,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        backoff_base: float = 2.0,
        backoff_max: float = 120.0,
        max_retry_after: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        if min_interval < 0 or timeout <= 0 or max_bytes <= 0 or max_attempts < 1:
            raise ValueError("min_interval >= 0, timeout > 0, max_bytes > 0 and max_attempts >= 1 are required")
        self._session = session
        self._user_agent = user_agent
        self.min_interval = min_interval
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.max_attempts = max_attempts
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._max_retry_after = max_retry_after
        self._clock = clock
        self._sleep = sleep
        self._jitter = jitter
        self._lock = asyncio.Lock()
        self._last_start: float | None = None
        self._not_before = 0.0

    @contextlib.contextmanager
    def time_budget(self, seconds: float, name: str) -> Iterator[None]:
        """The requests this task makes inside the block share ``seconds``: an attempt's timeout is cut to what is
        left, a wait (spacing, backoff, Retry-After) that would end past it is not begun, and once it is spent each
        request fails at once with :class:`TimeBudgetError`, which callers handle as any failed request. ``name``
        says in messages what ran out. A budget inside another ends no later than the outer one."""
        deadline = self._clock() + seconds
        outer = _time_budget.get()
        if outer is not None and outer.gate is self and outer.deadline <= deadline:
            deadline, name = outer.deadline, outer.name
        token = _time_budget.set(_TimeBudget(self, deadline, name))
        try:
            yield
        finally:
            _time_budget.reset(token)

    def _budget_left(self, at: float, url: str, attempt: int, last_error: FeedError | None) -> float | None:
        """Seconds the current time budget has left at ``at`` (gate clock), None without one; raises
        :class:`TimeBudgetError` when nothing is left for ``attempt`` of ``url``."""
        budget = _time_budget.get()
        if budget is None or budget.gate is not self:
            return None
        left = budget.deadline - at
        if left > 0:
            return left
        if last_error is None:
            raise TimeBudgetError(f"{budget.name} ran out before {url} was asked", reached=False)
        raise TimeBudgetError(
            f"{budget.name} ran out before {url} was answered (last attempt: {last_error})", reached=True
        )

    async def get(
        self, url: str, *, params: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None
    ) -> GateResponse:
        """GET ``url`` politely; retries transient failures and returns the first non-transient answer.

        Raises :class:`FeedHTTPError` when the attempts run out on 429/5xx (or the server asks to wait longer
        than ``max_retry_after``), :class:`FeedParseError` when the body exceeds ``max_bytes`` and
        :class:`FeedError` when the connection fails or times out on every attempt, and
        :class:`TimeBudgetError` when the current :meth:`time_budget` runs out first.
        """
        full_url = str(URL(url).update_query(dict(params))) if params else url
        send_headers = CIMultiDict(headers or {})
        send_headers["User-Agent"] = self._user_agent
        last_error: FeedError | None = None
        for attempt in range(1, self.max_attempts + 1):
            delay: float | None = None
            async with self._lock:
                limit = await self._wait_turn(full_url, attempt, last_error)
                try:
                    response = await self._attempt(full_url, send_headers, attempt, limit)
                except (FeedParseError, FeedHTTPError):  # an answer retrying cannot change
                    raise
                except FeedError as exc:
                    last_error = exc
                else:
                    if response.status not in RETRY_STATUSES:
                        return response
                    retry_after = parse_retry_after(response.headers.get("Retry-After"))
                    last_error = FeedHTTPError(
                        f"arXiv answered HTTP {response.status} for {full_url}",
                        status=response.status,
                        retry_after=retry_after,
                    )
                    if retry_after is not None:
                        if retry_after > self._max_retry_after:
                            raise last_error
                        self._not_before = max(self._not_before, self._clock() + retry_after)
                        delay = retry_after
            if attempt == self.max_attempts:
                break
            if delay is None:
                delay = self._backoff(attempt)
                self._not_before = max(self._not_before, self._clock() + delay)
            self._budget_left(self._clock() + delay, full_url, attempt + 1, last_error)
            logger.warning(
                "retrying %s in %.1fs (attempt %d of %d): %s",
                full_url,
                delay,
                attempt + 1,
                self.max_attempts,
                last_error,
            )
        assert last_error is not None
        if isinstance(last_error, FeedHTTPError):
            raise last_error
        raise FeedError(f"{last_error} (gave up after {self.max_attempts} attempts)") from last_error

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with equal jitter: half the step is fixed, half random."""
        step = min(self._backoff_max, self._backoff_base * 2.0 ** (attempt - 1))
        return step / 2 + step / 2 * self._jitter()

    async def _wait_turn(self, url: str, attempt: int, last_error: FeedError | None) -> float:
        """Wait for the next request's turn; returns its timeout, cut to what the time budget has left."""
        now = self._clock()
        ready = self._not_before
        if self._last_start is not None:
            ready = max(ready, self._last_start + self.min_interval)
        self._budget_left(max(ready, now), url, attempt, last_error)
        if ready > now:
            await self._sleep(ready - now)
        left = self._budget_left(self._clock(), url, attempt, last_error)
        return self.timeout if left is None else min(self.timeout, left)

    async def _attempt(self, url: str, headers: CIMultiDict[str], attempt: int, limit: float) -> GateResponse:
        """One request, answered within ``limit`` seconds."""
        started = self._clock()
        self._last_start = started
        try:
            async with asyncio.timeout(limit):
                response = await self._fetch(url, headers)
        except TimeoutError as exc:
            logger.info("GET %s -> timeout after %.1fs (attempt %d)", url, limit, attempt)
            raise FeedError(f"arXiv did not answer {url} within {round(limit, 1):g}s") from exc
        except (FeedParseError, FeedHTTPError) as exc:
            logger.info("GET %s -> refused: %s (attempt %d)", url, exc, attempt)
            raise
        except aiohttp.ClientError as exc:
            logger.info("GET %s -> %s (attempt %d)", url, type(exc).__name__, attempt)
            raise FeedError(f"connection to arXiv failed for {url}: {exc or type(exc).__name__}") from exc
        logger.info(
            "GET %s -> %d (%d bytes, %.2fs, attempt %d)",
            url,
            response.status,
            len(response.body),
            self._clock() - started,
            attempt,
        )
        return response

    async def _fetch(self, url: str, headers: CIMultiDict[str]) -> GateResponse:
        current, status = URL(url), 0
        for _ in range(MAX_REDIRECTS + 1):
            async with self._session.get(current, headers=headers, allow_redirects=False) as resp:
                location, status = resp.headers.get("Location"), resp.status
                if status not in REDIRECT_STATUSES or not location:
                    return await self._read(url, resp)
                current = _redirect_target(url, current, location, status)
        raise FeedHTTPError(f"arXiv redirected {url} more than {MAX_REDIRECTS} times; not following", status=status)

    async def _read(self, url: str, resp: aiohttp.ClientResponse) -> GateResponse:
        declared = resp.content_length
        if declared is not None and declared > self.max_bytes:
            resp.close()
            raise FeedParseError(
                f"{url} announced {declared} bytes, more than the {self.max_bytes}-byte limit; not reading it"
            )
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(_CHUNK):
            size += len(chunk)
            if size > self.max_bytes:
                resp.close()
                raise FeedParseError(f"{url} sent more than the {self.max_bytes}-byte limit; stopped reading")
            chunks.append(chunk)
        return GateResponse(status=resp.status, headers=resp.headers, body=b"".join(chunks), url=str(resp.url))


def _redirect_target(url: str, current: URL, location: str, status: int) -> URL:
    """Where a redirect from ``current`` leads, when it stays on the same server; else :class:`FeedHTTPError`."""
    try:
        target = current.join(URL(location))
    except ValueError as exc:
        raise FeedHTTPError(f"arXiv redirected {url} to an unreadable address: {exc}", status=status) from None
    same_host = (target.raw_host or "").lower() == (current.raw_host or "").lower()
    same_port = target.scheme == current.scheme and target.port == current.port
    upgrade = (current.scheme, current.port, target.scheme, target.port) == ("http", 80, "https", 443)
    if not (same_host and (same_port or upgrade)):
        raise FeedHTTPError(
            f"arXiv redirected {url} to another server ({target.scheme}://{target.raw_host}:{target.port}); not"
            " followed: requests to arXiv stay on the configured host (if arXiv moved, update NOTIFIER_ARXIV_RSS_URL"
            " or NOTIFIER_ARXIV_API_URL)",
            status=status,
        )
    return target
