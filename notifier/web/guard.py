"""Limits that keep the daemon's HTTP side answering when its clients are slow, stalled or too many.

- **Request head.** A connection must send a complete request line and headers within ``header_timeout`` seconds
  of opening, and of the end of its previous request when it is kept alive; otherwise it is closed.
- **Request.** A request, body included, must be handled within ``request_timeout`` seconds; otherwise it is
  answered 408 and its connection is closed.
- **Connections.** At most ``max_connections`` are open at once (by default 100, and at most a quarter of the
  process's file-descriptor limit, so arXiv, SMTP and the database keep theirs). A connection beyond the cap closes
  the one that has waited longest for a request head (or, when every one is busy, the oldest): stalled clients
  can never keep a health check out.

aiohttp parses and answers; :class:`ConnectionGuard` only watches each connection (through a thin protocol around
aiohttp's) and closes the ones past a limit. :class:`GuardedSite` is the listening socket that applies it.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Awaitable, Callable

from aiohttp import web

log = logging.getLogger(__name__)

HEADER_TIMEOUT = 10.0
REQUEST_TIMEOUT = 10.0
MAX_CONNECTIONS = 100
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _file_limit() -> int | None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def connection_cap(most: int = MAX_CONNECTIONS) -> int:
    """``most``, lowered to a quarter of this process's soft limit on open files (at least 4)."""
    limit = _file_limit()
    return most if limit is None else max(4, min(most, limit // 4))


def listen_backlog(cap: int) -> int:
    """How many new connections the kernel queues until they are accepted: 128 (a burst waits in the queue instead
    of being refused), but at most half the open-files limit, as asyncio accepts a queue's worth at once, each a
    descriptor until the cap closes it; never less than ``cap``."""
    limit = _file_limit()
    return max(cap, 128 if limit is None else min(128, limit // 2))


class _Watched(asyncio.Protocol):
    """aiohttp's protocol for one connection, passed every event, with what the guard needs to know about it."""

    def __init__(self, guard: ConnectionGuard, handler: web.RequestHandler) -> None:
        self.guard = guard
        self.handler = handler
        self.transport: asyncio.Transport | None = None
        self.busy = False
        self.since = 0.0  # when it opened or its last request ended: the start of its wait for a request head
        self.deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.guard.opened(self)
        self.handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.handler.data_received(data)

    def eof_received(self) -> None:
        self.handler.eof_received()

    def pause_writing(self) -> None:
        self.handler.pause_writing()

    def resume_writing(self) -> None:
        self.handler.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.lost(self)
        self.handler.connection_lost(exc)


class ConnectionGuard:
    """Tracks the open connections of one server and closes those past a limit (see the module docstring)."""

    def __init__(
        self,
        *,
        max_connections: int | None = None,
        header_timeout: float = HEADER_TIMEOUT,
        request_timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self.max_connections = connection_cap() if max_connections is None else max_connections
        if self.max_connections < 1 or header_timeout <= 0 or request_timeout <= 0:
            raise ValueError("max_connections >= 1, header_timeout > 0 and request_timeout > 0 are required")
        self.header_timeout = header_timeout
        self.request_timeout = request_timeout
        self._open: dict[web.RequestHandler, _Watched] = {}  # in the order they opened

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def protocol_factory(self, server: web.Server) -> Callable[[], asyncio.Protocol]:
        """What the listening socket calls for each new connection: aiohttp's protocol, watched."""
        return lambda: _Watched(self, server())

    def opened(self, watched: _Watched) -> None:
        if len(self._open) >= self.max_connections:
            log.warning(
                "http: %d connections open, the most allowed; closing the one waiting longest for a request",
                self.max_connections,
            )
            while len(self._open) >= self.max_connections:
                self._close(self._longest_waiting())
        self._open[watched.handler] = watched
        self._wait_for_request(watched)

    def lost(self, watched: _Watched) -> None:
        if self._open.get(watched.handler) is watched:
            del self._open[watched.handler]
        if watched.deadline is not None:
            watched.deadline.cancel()

    @web.middleware
    async def middleware(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        """Times each request and marks its connection busy meanwhile (so it is not closed as stalled)."""
        watched = self._open.get(request.protocol)
        if watched is not None:
            watched.busy = True
            if watched.deadline is not None:
                watched.deadline.cancel()
        limit = asyncio.timeout(self.request_timeout)
        try:
            async with limit:
                return await handler(request)
        except TimeoutError:
            if not limit.expired():
                raise
            response = web.Response(status=408, text=f"request not completed within {self.request_timeout:g} s\n")
            response.force_close()
            return response
        finally:
            if watched is not None and self._open.get(request.protocol) is watched:
                watched.busy = False
                self._wait_for_request(watched)

    def _wait_for_request(self, watched: _Watched) -> None:
        loop = asyncio.get_running_loop()
        if watched.deadline is not None:
            watched.deadline.cancel()
        watched.since = loop.time()
        watched.deadline = loop.call_later(self.header_timeout, self._expire, watched)

    def _expire(self, watched: _Watched) -> None:
        if not watched.busy and self._open.get(watched.handler) is watched:
            self._close(watched)

    def _longest_waiting(self) -> _Watched:
        waiting = [watched for watched in self._open.values() if not watched.busy]
        if waiting:
            return min(waiting, key=lambda watched: watched.since)
        return next(iter(self._open.values()))

    def _close(self, watched: _Watched) -> None:
        self.lost(watched)
        if watched.transport is not None:
            watched.transport.abort()


class GuardedSite(web.BaseSite):
    """A TCP site whose connections go through a :class:`ConnectionGuard`."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, guard: ConnectionGuard) -> None:
        super().__init__(runner, backlog=listen_backlog(guard.max_connections))
        self._host = host
        self._port = port
        self._guard = guard

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self._guard.protocol_factory(server), self._host, self._port, backlog=self._backlog
        )
