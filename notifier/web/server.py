"""The daemon's HTTP face: health, readiness, Prometheus metrics and one-click unsubscribe.

=====================  ==============================================================================================
``GET /``              the status page: feeds, deliveries waiting or failed, subscribers (:mod:`.status_page`)
``GET /healthz``       200 ``ok`` while the event loop answers
``GET /readyz``        200 when the config is good, the store answers and no feed is stale; else 503 with a JSON body
                       naming what is wrong
``GET /metrics``       Prometheus text format
``GET /unsubscribe``   a page with a confirm button; it changes nothing (mail scanners follow links)
``POST /unsubscribe``  RFC 8058 one-click (body ``List-Unsubscribe=One-Click``): records the unsubscription
``GET /feedback``      "more / fewer like this" under a ranked paper: a page with a confirm button; it changes nothing
``POST /feedback``     records the feedback (:mod:`.feedback`): the subscriber's next digests rank with it
=====================  ==============================================================================================

Requests are not logged (their URLs carry tokens); an unsubscription, and a feedback, is logged once when recorded.
Slow or stalled clients are cut off and the open connections are capped (:mod:`notifier.web.guard`), so the
health check keeps answering.
"""

from __future__ import annotations

import html
import json
import logging
import re

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from notifier.errors import NotifierError, StoreError
from notifier.models import FeedbackKind, Paper
from notifier.web.feedback import feedback_kind
from notifier.web.guard import HEADER_TIMEOUT, REQUEST_TIMEOUT, ConnectionGuard, GuardedSite
from notifier.web.service import Service
from notifier.web.status_page import gather, render

log = logging.getLogger(__name__)

MAX_BODY = 8 * 1024
SHUTDOWN_TIMEOUT = 2.0
LINGER = 1.0  # seconds the rest of an unread request body is still read (and dropped) before the connection closes
_APP_KEY: web.AppKey[Service] = web.AppKey("notifier")
_CONFIG_PLACE = re.compile(r":(?P<line>\d+):(?:\d+:)? (?P<message>.*)$", re.DOTALL)
_SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
}


def describe_config_error(error: str) -> str:
    """``rejected at line N: message`` from a ConfigError's ``file:line:column: message`` text."""
    found = _CONFIG_PLACE.search(error)
    if found is None:
        return f"rejected: {error}"
    return f"rejected at line {found['line']}: {found['message']}"


def readiness(app: Service) -> dict[str, object]:
    """What keeps ``app`` from being ready; empty when it is ready."""
    problems: dict[str, object] = {}
    if app.config_error is not None:
        problems["config"] = describe_config_error(app.config_error)
    try:
        app.store.ping()
    except StoreError as exc:
        problems["store"] = f"unreachable: {exc}"
        return problems
    now = app.clock()
    stale = {key: "stale" for key in app.config.categories if app.feed_health(key, now).state == "stale"}
    if stale:
        problems["feeds"] = stale
    return problems


def _app(request: web.Request) -> Service:
    return request.app[_APP_KEY]


async def _healthz(_request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def _readyz(request: web.Request) -> web.Response:
    problems = readiness(_app(request))
    body = {"ready": not problems, **problems}
    return web.json_response(body, status=503 if problems else 200, dumps=lambda value: json.dumps(value) + "\n")


async def _status(request: web.Request) -> web.Response:
    try:
        page = render(gather(_app(request)))
    except StoreError as exc:
        return _page("Status unavailable", f"<p>The store cannot be read: {html.escape(str(exc))}</p>", status=503)
    return web.Response(text=page, content_type="text/html", headers=_SECURITY_HEADERS)


async def _metrics(request: web.Request) -> web.Response:
    return web.Response(body=_app(request).metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def _page(title: str, body: str, status: int = 200) -> web.Response:
    document = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="robots" content="noindex">'
        f"<title>{html.escape(title)}</title>"
        "<style>body{font:16px/1.5 system-ui,sans-serif;max-width:34em;margin:3em auto;padding:0 1em;color:#222}"
        "button{font:inherit;padding:.5em 1.2em;cursor:pointer}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>\n"
    )
    return web.Response(text=document, content_type="text/html", status=status, headers=_SECURITY_HEADERS)


def _forbidden() -> web.Response:
    return _page("Link not valid", "<p>This unsubscribe link is not valid.</p>", status=403)


def _verified(request: web.Request, params: dict[str, str]) -> tuple[str, str] | None:
    subscriber, address, token = params.get("s", ""), params.get("a", ""), params.get("t", "")
    if not (subscriber and address and token):
        return None
    if not _app(request).unsubscribe_links.verify(subscriber, address, token):
        return None
    return subscriber, address


async def _unsubscribe_page(request: web.Request) -> web.Response:
    found = _verified(request, dict(request.query))
    if found is None:
        return _forbidden()
    subscriber, address = found
    query = _app(request).unsubscribe_links.query(subscriber, address)
    body = (
        f"<p>Stop sending <strong>{html.escape(subscriber)}</strong> arXiv digests to "
        f"<strong>{html.escape(address)}</strong>?</p>"
        f'<form method="post" action="unsubscribe?{html.escape(query)}">'
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
        "<button type=submit>Unsubscribe</button></form>"
    )
    return _page("Unsubscribe", body)


async def _unsubscribe(request: web.Request) -> web.Response:
    form = await request.post()
    params = {key: str(value) for key, value in form.items() if isinstance(value, str)}
    found = _verified(request, {**params, **request.query})
    if found is None:
        return _forbidden()
    if params.get("List-Unsubscribe") != "One-Click":
        return _page("Unsubscribe", "<p>Use the button in the page this link opens to unsubscribe.</p>", status=400)
    subscriber, address = found
    app = _app(request)
    app.store.unsubscribe(subscriber, address, app.clock())
    log.info("unsubscribed %s from %s's digests", address, subscriber)
    body = f"<p><strong>{html.escape(address)}</strong> gets no more digests from {html.escape(subscriber)}.</p>"
    return _page("Unsubscribed", body)


def _feedback_wanted(request: web.Request) -> tuple[str, Paper, FeedbackKind] | web.Response:
    """The subscriber, paper and kind a feedback link names, once its token is checked; else the page that says why
    not: 403 for a bad link, 404 for a subscriber no longer in the config or a paper the store does not know."""
    params = dict(request.query)
    subscriber, arxiv_id, token = params.get("s", ""), params.get("p", ""), params.get("t", "")
    kind = feedback_kind(params.get("k", ""))
    app = _app(request)
    if kind is None or not (subscriber and arxiv_id and app.feedback_links.verify(subscriber, arxiv_id, kind, token)):
        return _page("Link not valid", "<p>This feedback link is not valid.</p>", status=403)
    if subscriber not in {s.name for s in app.config.subscribers}:
        body = f"<p>There is no subscriber {html.escape(subscriber)} any more.</p>"
        return _page("Subscriber not found", body, status=404)
    paper = app.store.known_paper(arxiv_id)
    if paper is None:
        body = f"<p>The paper arXiv:{html.escape(arxiv_id)} is no longer known here.</p>"
        return _page("Paper not found", body, status=404)
    return subscriber, paper, kind


def _quoted_title(paper: Paper) -> str:
    return html.escape(f"“{' '.join(paper.title.split())}”")


async def _feedback_page(request: web.Request) -> web.Response:
    found = _feedback_wanted(request)
    if isinstance(found, web.Response):
        return found
    subscriber, paper, kind = found
    query = _app(request).feedback_links.query(subscriber, paper.arxiv_id, kind)
    label = "More like this" if kind == "more" else "Fewer like this"
    body = (
        f"<p>Show <strong>{html.escape(subscriber)}</strong> {kind} papers like {_quoted_title(paper)} "
        f"(arXiv:{html.escape(paper.arxiv_id)}) in its next digests?</p>"
        f'<form method="post" action="feedback?{html.escape(query)}">'
        f"<button type=submit>{label}</button></form>"
    )
    return _page(label, body)


async def _feedback(request: web.Request) -> web.Response:
    await request.read()  # whatever the form sent; the link says it all
    found = _feedback_wanted(request)
    if isinstance(found, web.Response):
        return found
    subscriber, paper, kind = found
    app = _app(request)
    app.store.save_feedback(subscriber, paper, kind, app.clock())
    log.info("feedback: %s wants %s papers like %s", subscriber, kind, paper.arxiv_id)
    body = (
        f"<p>Thanks: {html.escape(subscriber)}'s next digests will show {kind} papers like {_quoted_title(paper)}.</p>"
    )
    return _page("Thanks", body)


def make_app(notifier: Service, guard: ConnectionGuard | None = None) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY, middlewares=[] if guard is None else [guard.middleware])
    app[_APP_KEY] = notifier
    app.router.add_get("/", _status)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/unsubscribe", _unsubscribe_page)
    app.router.add_post("/unsubscribe", _unsubscribe)
    app.router.add_get("/feedback", _feedback_page)
    app.router.add_post("/feedback", _feedback)
    return app


class HttpServer:
    """Serves :func:`make_app` on ``host:port`` (port 0: a free one), within the limits of a
    :class:`~notifier.web.guard.ConnectionGuard`; ``close()`` is idempotent."""

    def __init__(
        self,
        notifier: Service,
        host: str,
        port: int,
        *,
        max_connections: int | None = None,
        header_timeout: float = HEADER_TIMEOUT,
        request_timeout: float = REQUEST_TIMEOUT,
    ):
        self.notifier = notifier
        self.host = host
        self.port = port
        self.guard = ConnectionGuard(
            max_connections=max_connections, header_timeout=header_timeout, request_timeout=request_timeout
        )
        self._runner: web.AppRunner | None = None

    async def start(self) -> HttpServer:
        runner = web.AppRunner(
            make_app(self.notifier, self.guard),
            access_log=None,
            shutdown_timeout=SHUTDOWN_TIMEOUT,
            handler_cancellation=True,
            lingering_time=LINGER,
        )
        await runner.setup()
        try:
            await GuardedSite(runner, self.host, self.port, self.guard).start()
        except OSError as exc:
            await runner.cleanup()
            raise NotifierError(f"cannot listen on {self.host}:{self.port}: {exc}") from exc
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        log.info("http listening on %s:%d (/healthz, /readyz, /metrics, /unsubscribe, /feedback)", self.host, self.port)
        return self

    async def close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> HttpServer:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
