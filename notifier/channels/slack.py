"""Slack: post digests with ``chat.postMessage`` or to an incoming webhook.

Only this module knows slack-sdk; its errors are translated here. The payload of an :class:`Outgoing` is the list
of messages that :func:`~notifier.render.slack.encode_payload` wrote. They are posted in order as top-level
messages, starting at ``message.part``; ``progress`` is awaited after each accepted part, so a retry resumes after
them.

A webhook URL is a secret and goes only to an allowed host (:mod:`notifier.channels.webhooks`); it is shown by its
host alone, in logs and in errors.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from notifier.channels.base import Progress
from notifier.channels.webhooks import WEBHOOK_HOSTS_SETTING, display_recipient, scrub, webhook_refusal
from notifier.config.settings import split_host_port
from notifier.config.subscribers import is_webhook
from notifier.errors import PermanentDeliveryError, TemporaryDeliveryError
from notifier.models import ChannelKind, Outgoing, SlackMessage
from notifier.render.slack import decode_payload

log = logging.getLogger(__name__)
# slack-sdk logs each request's URL (a webhook's secret) at debug and info level; its clients log through this one.
_sdk_log = logging.getLogger(__name__ + ".sdk")
_sdk_log.setLevel(logging.WARNING)

MAX_RETRY_WAIT = 10.0
"""Longest Retry-After (seconds) waited out inside the channel; longer waits go back to the outbox."""

_TOKEN_HINT = "check NOTIFIER_SLACK_TOKEN"
_PERMANENT_HINTS = {
    "channel_not_found": "check the channel name or ID, and that the app can see it",
    "not_in_channel": "invite the app to the channel: /invite @yourapp",
    "is_archived": "the channel is archived; unarchive it or pick another channel",
    "invalid_auth": _TOKEN_HINT,
    "not_authed": _TOKEN_HINT,
    "account_inactive": _TOKEN_HINT + " (the app or its user was deactivated)",
    "token_revoked": _TOKEN_HINT + " (the token was revoked; reinstall the app)",
    "token_expired": _TOKEN_HINT + " (the token expired)",
    "missing_scope": "add the chat:write scope to the app and reinstall it",
    "restricted_action": "a workspace admin restricts posting in this channel",
    "invalid_blocks": "the rendered blocks were refused by Slack",
    "msg_too_long": "the rendered message is too long",
    "no_text": "the rendered message has no text",
}
_WEBHOOK_PERMANENT = {
    "no_service": "the webhook was removed or disabled; create a new incoming webhook",
    "no_service_id": "the webhook URL is incomplete",
    "no_team": "the webhook URL is wrong",
    "team_disabled": "the Slack workspace is disabled",
    "invalid_token": "the webhook URL is wrong or was revoked",
    "channel_not_found": "the webhook's channel was deleted; create a new incoming webhook",
    "channel_is_archived": "the webhook's channel is archived",
    "action_prohibited": "a workspace admin restricts posting in the webhook's channel",
    "invalid_payload": "the rendered message was refused by Slack",
    "no_text": "the rendered message has no text",
}


class _RateLimitHandler(AsyncRateLimitErrorRetryHandler):
    """slack-sdk's 429 handler (it waits Retry-After plus jitter), but only for waits up to ``max_wait``."""

    def __init__(self, max_retry_count: int, max_wait: float) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self.max_wait = max_wait

    async def _can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if response is None or response.status_code != 429:
            return False
        wait = _retry_after(response.headers)
        return wait is None or wait <= self.max_wait


def _retry_after(headers: Any) -> float | None:
    for name, value in (headers or {}).items():
        if name.lower() == "retry-after":
            raw = value[0] if isinstance(value, list) else value
            try:
                return max(0.0, float(raw))
            except (TypeError, ValueError):
                return None
    return None


class SlackChannel:
    """Posts to Slack channels through the Web API (needs a bot token), or to incoming-webhook URLs.

    Webhooks go to https://hooks.slack.com and to the hosts in ``webhook_hosts`` (``host`` or ``host:port``).
    """

    kind: ChannelKind = "slack"

    def __init__(
        self,
        *,
        token: str | None,
        base_url: str = "https://slack.com/api/",
        session: aiohttp.ClientSession | None = None,
        max_retries: int = 3,
        max_retry_wait: float = MAX_RETRY_WAIT,
        webhook_hosts: Collection[str] = (),
    ) -> None:
        self._token = token
        for entry in webhook_hosts:
            split_host_port(entry)  # a ValueError now, not in the middle of a send
        self._webhook_hosts = tuple(webhook_hosts)
        self._base_url = base_url
        self._session = session
        self._owns_session = session is None
        self._handlers: list[AsyncRetryHandler] = [
            _RateLimitHandler(max_retry_count=max_retries, max_wait=max_retry_wait),
            AsyncConnectionErrorRetryHandler(max_retry_count=max_retries),
        ]
        self._client: AsyncWebClient | None = None
        self._closed = False

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        return self._session

    def _web(self) -> AsyncWebClient:
        if self._client is None:
            self._client = AsyncWebClient(
                token=self._token,
                base_url=self._base_url,
                session=self._get_session(),
                retry_handlers=self._handlers,
                logger=_sdk_log,
            )
        return self._client

    async def send(self, message: Outgoing, progress: Progress | None = None) -> None:
        if self._closed:
            raise TemporaryDeliveryError("the Slack channel is closed")
        parts = _parse_payload(message)
        webhook = is_webhook(message.recipient)
        if not webhook and not self._token:
            raise PermanentDeliveryError("no Slack token", hint="set NOTIFIER_SLACK_TOKEN")
        where = display_recipient(message.recipient)
        refusal = webhook_refusal(message.recipient, self._webhook_hosts) if webhook else None
        if refusal is not None:
            raise PermanentDeliveryError(
                f"not posting to the webhook {where}: {refusal}",
                hint=f"if the host is yours, add it to {WEBHOOK_HOSTS_SETTING}",
            )
        for index in range(message.part, len(parts)):
            if webhook:
                await self._post_webhook(message.recipient, parts[index], where)
            else:
                await self._post_api(message.recipient, parts[index])
            log.info("slack %s accepted part %d/%d of %s", where, index + 1, len(parts), message.message_id)
            if progress is not None:
                await progress(index + 1)

    async def _post_api(self, channel: str, part: SlackMessage) -> None:
        try:
            await self._web().chat_postMessage(
                channel=channel,
                text=part.text,
                blocks=list(part.blocks) or None,
                unfurl_links=False,
                unfurl_media=False,
            )
        except SlackApiError as exc:
            raise _api_error(exc, channel) from exc
        except (aiohttp.ClientError, TimeoutError, SlackClientError) as exc:
            raise TemporaryDeliveryError(f"cannot reach the Slack API: {exc!r}") from exc

    async def _post_webhook(self, url: str, part: SlackMessage, where: str) -> None:
        client = AsyncWebhookClient(url, session=self._get_session(), retry_handlers=self._handlers, logger=_sdk_log)
        try:
            response = await client.send(
                text=part.text, blocks=list(part.blocks) or None, unfurl_links=False, unfurl_media=False
            )
        except (aiohttp.ClientError, TimeoutError, SlackClientError) as exc:
            raise TemporaryDeliveryError(f"cannot reach the Slack webhook {where}: {scrub(repr(exc), url)}") from None
        status, body = response.status_code, (response.body or "").strip()
        if status == 200:
            return
        what = f"Slack webhook {where} answered {status} {scrub(body[:100], url)!r}"
        if status == 429 or status >= 500:
            raise TemporaryDeliveryError(what, retry_after=_retry_after(response.headers))
        hint = _WEBHOOK_PERMANENT.get(body)
        if hint is None and status == 404:
            hint = "the webhook URL is unknown; create a new incoming webhook"
        raise PermanentDeliveryError(what, hint=hint)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._owns_session and self._session is not None:
            await self._session.close()
            log.info("slack http session closed")


def _parse_payload(message: Outgoing) -> list[SlackMessage]:
    try:
        return decode_payload(message.payload)
    except ValueError as exc:
        raise PermanentDeliveryError(f"Slack payload of {message.message_id} {exc}") from None


def _api_error(exc: SlackApiError, channel: str) -> TemporaryDeliveryError | PermanentDeliveryError:
    response = exc.response
    status = int(response.status_code)
    data = response.data if isinstance(response.data, dict) else {}
    error = str(data.get("error") or f"HTTP {status}")
    what = f"Slack refused the post to {channel}: {error}"
    if status == 429 or error == "ratelimited":
        return TemporaryDeliveryError(what, retry_after=_retry_after(response.headers))
    if status >= 500 or error in ("internal_error", "fatal_error", "service_unavailable", "request_timeout"):
        return TemporaryDeliveryError(what)
    if error == "missing_scope" and data.get("needed"):
        return PermanentDeliveryError(what, hint=f"add the {data['needed']} scope to the app and reinstall it")
    return PermanentDeliveryError(what, hint=_PERMANENT_HINTS.get(error))
