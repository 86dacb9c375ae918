"""A local stand-in for the Slack Web API and incoming webhooks, for tests.

In a test::

    async with SlackServer(token="xoxb-test", channels={"#papers", "C0123"}) as slack:
        channel = SlackChannel(token="xoxb-test", base_url=slack.api_url)
        slack.faults.rate_limit_next = 1          # one 429 with Retry-After first
        ...
        assert slack.posts[0].channel == "#papers"

Webhooks: ``slack.webhook_url("T1")`` is accepted once ``"T1"`` is in ``webhooks``; other ids get 404 no_service.

Standalone: ``python -m tests.slack_server --port 0`` prints ``READY http://127.0.0.1:PORT/api/``;
``GET /_control/posts`` returns the recorded posts as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
from dataclasses import asdict, dataclass, field
from typing import Any

from aiohttp import web

DEFAULT_TOKEN = "xoxb-test-token"
DEFAULT_CHANNELS = frozenset({"#papers", "C0123"})


@dataclass
class Post:
    """One accepted ``chat.postMessage`` or webhook post."""

    channel: str  # the channel, or "webhook:<id>"
    text: str | None
    blocks: list[Any] | None
    unfurl_links: Any
    unfurl_media: Any
    thread_ts: str | None
    ts: str


@dataclass
class SlackFaults:
    """Fault modes, switchable while the server runs."""

    rate_limit_next: int = 0  # answer 429 ratelimited for the next N calls
    retry_after: int = 1  # seconds, sent in the Retry-After header of those 429s
    server_error_next: int = 0  # answer HTTP 500 for the next N calls
    not_in_channel: set[str] = field(default_factory=set)  # channels the app was not invited to
    archived: set[str] = field(default_factory=set)


class SlackServer:
    """The stand-in: an aiohttp app on 127.0.0.1 and a free port, in the running event loop."""

    def __init__(
        self,
        *,
        token: str = DEFAULT_TOKEN,
        channels: set[str] | frozenset[str] = DEFAULT_CHANNELS,
        webhooks: set[str] | None = None,
        port: int = 0,
    ) -> None:
        self.token = token
        self.channels = set(channels)
        self.webhooks = set(webhooks or {"T000/B000/XXXX"})
        self.faults = SlackFaults()
        self.posts: list[Post] = []
        self.calls = 0  # every request to chat.postMessage or a webhook, refused or not
        self._port = port
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.app = web.Application()
        self.app.router.add_post("/api/chat.postMessage", self._post_message)
        self.app.router.add_post("/webhook/{id:.+}", self._webhook)
        self.app.router.add_get("/_control/posts", self._control_posts)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    def webhook_url(self, hook_id: str = "T000/B000/XXXX") -> str:
        return f"http://127.0.0.1:{self.port}/webhook/{hook_id}"

    async def start(self) -> SlackServer:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self._port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> SlackServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _common_fault(self, *, webhook: bool) -> web.Response | None:
        self.calls += 1
        if self.faults.rate_limit_next > 0:
            self.faults.rate_limit_next -= 1
            headers = {"Retry-After": str(self.faults.retry_after)}
            if webhook:
                return web.Response(status=429, text="rate_limited", headers=headers)
            return web.json_response({"ok": False, "error": "ratelimited"}, status=429, headers=headers)
        if self.faults.server_error_next > 0:
            self.faults.server_error_next -= 1
            if webhook:
                return web.Response(status=500, text="internal_error")
            return web.json_response({"ok": False, "error": "internal_error"}, status=500)
        return None

    def _record(self, channel: str, body: dict[str, Any]) -> Post:
        blocks = body.get("blocks")
        if isinstance(blocks, str):  # form-encoded calls send blocks as a JSON string
            blocks = json.loads(blocks)
        post = Post(
            channel=channel,
            text=body.get("text"),
            blocks=blocks,
            unfurl_links=body.get("unfurl_links"),
            unfurl_media=body.get("unfurl_media"),
            thread_ts=body.get("thread_ts"),
            ts=f"1700000000.{len(self.posts) + 1:06d}",
        )
        self.posts.append(post)
        return post

    async def _post_message(self, request: web.Request) -> web.Response:
        fault = self._common_fault(webhook=False)
        if fault is not None:
            return fault
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response({"ok": False, "error": "invalid_auth"})
        if request.content_type == "application/json":
            body = await request.json()
        else:
            body = dict(await request.post())
        channel = str(body.get("channel", ""))
        if channel not in self.channels:
            return web.json_response({"ok": False, "error": "channel_not_found"})
        if channel in self.faults.not_in_channel:
            return web.json_response({"ok": False, "error": "not_in_channel"})
        if channel in self.faults.archived:
            return web.json_response({"ok": False, "error": "is_archived"})
        if not body.get("text") and not body.get("blocks"):
            return web.json_response({"ok": False, "error": "no_text"})
        post = self._record(channel, body)
        return web.json_response({"ok": True, "channel": channel, "ts": post.ts})

    async def _webhook(self, request: web.Request) -> web.Response:
        fault = self._common_fault(webhook=True)
        if fault is not None:
            return fault
        hook_id = request.match_info["id"]
        if hook_id not in self.webhooks:
            return web.Response(status=404, text="no_service")
        body = await request.json()
        if not body.get("text") and not body.get("blocks"):
            return web.Response(status=400, text="no_text")
        self._record(f"webhook:{hook_id}", body)
        return web.Response(text="ok")

    async def _control_posts(self, request: web.Request) -> web.Response:
        return web.json_response([asdict(post) for post in self.posts])


async def _serve(port: int, token: str, channels: list[str]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with SlackServer(token=token, channels=set(channels), port=port) as server:
        print(f"READY {server.api_url}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A local Slack Web API stand-in for tests.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", default=DEFAULT_TOKEN)
    parser.add_argument("--channel", action="append", dest="channels", help="a known channel (repeatable)")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.port, args.token, args.channels or sorted(DEFAULT_CHANNELS)))


if __name__ == "__main__":
    main()
