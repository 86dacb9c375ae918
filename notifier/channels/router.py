"""Picks the channel for each delivery from the settings: real servers when configured, the outbox folder if not."""

from __future__ import annotations

import logging

import aiohttp

from notifier.channels.base import Channel
from notifier.channels.email import SmtpChannel
from notifier.channels.files import FileChannel
from notifier.channels.slack import SlackChannel
from notifier.config.settings import Settings
from notifier.config.subscribers import is_webhook
from notifier.models import Outgoing

log = logging.getLogger(__name__)

_DEFAULT_PORTS = {"tls": 465, "starttls": 587, "none": 25}
# Outbox files handed over at once: a whole claimed batch, which FileChannel writes together.
FILE_BATCH = 64


class Channels:
    """Owns every channel and closes them in one place."""

    def __init__(self, settings: Settings, session: aiohttp.ClientSession):
        self.email: Channel
        self.slack: Channel
        if settings.smtp_host:
            self.email = SmtpChannel(
                host=settings.smtp_host,
                port=settings.smtp_port or _DEFAULT_PORTS[settings.smtp_security],
                security=settings.smtp_security,
                username=settings.smtp_username,
                password=settings.smtp_password,
                sender=settings.mail_from,
                pool_size=settings.smtp_pool_size,
                validate_certs=settings.smtp_validate_certs,
            )
            self.email_pool = settings.smtp_pool_size
        else:
            self.email = FileChannel(settings.outbox, "email")
            self.email_pool = FILE_BATCH
        if settings.slack_token:
            self.slack = SlackChannel(
                token=settings.slack_token,
                base_url=settings.slack_api_url,
                session=session,
                webhook_hosts=settings.webhook_hosts,
            )
        else:
            self.slack = FileChannel(settings.outbox, "slack")
        self.webhooks = SlackChannel(
            token=None, base_url=settings.slack_api_url, session=session, webhook_hosts=settings.webhook_hosts
        )
        log.info(
            "email via %s, Slack via %s",
            f"SMTP {settings.smtp_host}" if settings.smtp_host else f"files in {settings.outbox / 'email'}",
            "the Web API" if settings.slack_token else f"files in {settings.outbox / 'slack'}",
        )

    def channel_for(self, message: Outgoing) -> Channel:
        if message.channel == "email":
            return self.email
        if is_webhook(message.recipient):
            return self.webhooks
        return self.slack

    def concurrency(self, channel: Channel) -> int:
        if isinstance(channel, FileChannel):
            return FILE_BATCH
        return self.email_pool if channel is self.email else 1

    async def aclose(self) -> None:
        for channel in (self.email, self.slack, self.webhooks):
            await channel.aclose()
