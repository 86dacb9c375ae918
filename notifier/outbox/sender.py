"""The outbox reader: sends due deliveries through their channels and records each outcome.

Each (subscriber, channel, recipient) is its own delivery, so one bad address or dead Slack channel never stops
the others. A temporary failure is retried with exponential backoff and jitter for a bounded time; a permanent
one is marked failed with its reason, logged once with the subscriber's name, and kept for ``notifier retry``.

Deliveries are claimed from the store in small batches under a lease in this process's name (:func:`process_owner`),
so several daemons sharing one database never send the same delivery at once; a batch is sent, then the next is
claimed. A lease must outlast the time one batch takes; one that expires (its sender died) frees the delivery
for another sender.

Each send is recorded as soon as the event loop is free: the sends that finished while it was busy are recorded
together, in one transaction, before anything else is sent or claimed (a batch's last ones when it ends).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from notifier.channels.base import Channel
from notifier.channels.webhooks import display_recipient
from notifier.errors import DeliveryError, PermanentDeliveryError, TemporaryDeliveryError
from notifier.metrics import Metrics
from notifier.models import Outgoing
from notifier.progress import Progress
from notifier.store import Store

log = logging.getLogger(__name__)

RETRY_BASE = timedelta(seconds=60)
RETRY_CAP = timedelta(hours=1)
GIVE_UP_AFTER = timedelta(hours=24)
DEFAULT_LEASE = timedelta(seconds=120)
CLAIM_BATCH = 50  # deliveries claimed at a time; one batch must be sent within the lease
MORE_EVERY = 0.1  # seconds between claims while a plan is still writing deliveries


def process_owner() -> str:
    """This process's name on the deliveries it claims: host, pid and a random part (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class ChannelRouter(Protocol):
    def channel_for(self, message: Outgoing) -> Channel: ...

    def concurrency(self, channel: Channel) -> int: ...


@dataclass
class SendReport:
    sent: int = 0
    retry: int = 0
    failed: int = 0
    interrupted: int = 0


def retry_delay(attempts: int, retry_after: float | None = None) -> timedelta:
    """Exponential backoff with full jitter, at least what the server asked for."""
    ceiling = min(RETRY_BASE * (2 ** max(attempts - 1, 0)), RETRY_CAP)
    delay = timedelta(seconds=random.uniform(ceiling.total_seconds() / 2, ceiling.total_seconds()))
    if retry_after is not None:
        delay = max(delay, timedelta(seconds=retry_after))
    return delay


class Sender:
    def __init__(
        self,
        store: Store,
        router: ChannelRouter,
        clock: Callable[[], datetime],
        *,
        metrics: Metrics | None = None,
        lease: timedelta = DEFAULT_LEASE,
        batch: int = CLAIM_BATCH,
        owner: str | None = None,
    ):
        self.store = store
        self.router = router
        self.clock = clock
        self.metrics = metrics or Metrics()
        self.lease = lease
        self.batch = batch
        self.owner = owner or process_owner()
        self._semaphores: dict[int, asyncio.Semaphore] = {}
        self._sent: list[tuple[str, datetime]] = []  # sent, and not yet recorded: (delivery id, when)

    def _semaphore(self, channel: Channel) -> asyncio.Semaphore:
        key = id(channel)
        if key not in self._semaphores:
            self._semaphores[key] = asyncio.Semaphore(self.router.concurrency(channel))
        return self._semaphores[key]

    async def deliver_due(self, *, stop: asyncio.Event | None = None, more: asyncio.Event | None = None) -> SendReport:
        """Claim and send the due deliveries of active subscribers (see
        :meth:`~notifier.store.Store.register_subscribers`), batch after batch, until none is left or
        ``stop`` is set. Until ``more`` is set (a plan is still writing deliveries), none left means none yet:
        the sender looks again every :data:`MORE_EVERY` seconds."""
        report = SendReport()
        with Progress("sending", None, unit="deliveries") as progress:
            while stop is None or not stop.is_set():
                last = more is None or more.is_set()  # read before claiming: then nothing is written after it
                batch = self.store.claim_due(self.clock(), owner=self.owner, lease=self.lease, limit=self.batch)
                if not batch:
                    if last:
                        break
                    assert more is not None
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(more.wait(), MORE_EVERY)
                    continue
                log.debug("sending %d due deliveries", len(batch))
                await self._send_batch(batch, report, stop)
                progress.advance(len(batch))
        return report

    async def _send_batch(self, batch: list[Outgoing], report: SendReport, stop: asyncio.Event | None) -> None:
        started: set[str] = set()
        tasks = [asyncio.create_task(self._send_one(message, report, stop, started)) for message in batch]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._record_sent()
            untouched = [message.delivery_id for message in batch if message.delivery_id not in started]
            if untouched:  # claimed but never attempted (stopping): free them for the next sender at once
                self.store.release(untouched, owner=self.owner, now=self.clock())

    async def _send_one(
        self, message: Outgoing, report: SendReport, stop: asyncio.Event | None, started: set[str]
    ) -> None:
        channel = self.router.channel_for(message)
        async with self._semaphore(channel):
            if stop is not None and stop.is_set():
                report.interrupted += 1
                return
            started.add(message.delivery_id)

            async def progress(parts: int) -> None:
                self.store.mark_part(message.delivery_id, parts, self.clock())

            try:
                await channel.send(message, progress)
            except TemporaryDeliveryError as exc:
                self._temporary(message, exc, report)
            except PermanentDeliveryError as exc:
                self._failed(message, exc, report)
            except DeliveryError as exc:  # a channel that did not say which: treat as temporary
                self._temporary(message, TemporaryDeliveryError(str(exc)), report)
            except asyncio.CancelledError:
                # Handed back mid-send: the row stays 'sending' and is sent again at the next start (SQLite) or
                # when its lease expires (PostgreSQL), as the channel may or may not have taken it.
                report.interrupted += 1
                raise
            else:
                now = self.clock()
                if not self._sent:
                    asyncio.get_running_loop().call_soon(self._record_sent)
                self._sent.append((message.delivery_id, now))
                report.sent += 1
                latency = None if message.created_at is None else now - message.created_at
                self.metrics.record_delivery(message.channel, "sent", latency)
                log.info(
                    "sent %s to %s %s for %s",
                    message.delivery_id,
                    message.channel,
                    display_recipient(message.recipient),
                    message.subscriber,
                )

    def _record_sent(self) -> None:
        """Record the sends not recorded yet, in one transaction."""
        sent, self._sent = self._sent, []
        self.store.mark_all_sent(sent)

    def _temporary(self, message: Outgoing, exc: TemporaryDeliveryError, report: SendReport) -> None:
        now = self.clock()
        attempts, created = self.store.attempts(message.delivery_id)
        if now - created >= GIVE_UP_AFTER:
            self._failed(message, PermanentDeliveryError(f"gave up after {attempts} attempts: {exc}"), report)
            return
        next_at = now + retry_delay(attempts, exc.retry_after)
        self.store.mark_retry(message.delivery_id, now, next_at, str(exc))
        report.retry += 1
        self.metrics.record_delivery(message.channel, "retry")
        log.warning(
            "delivery to %s %s for %s failed (attempt %d), retrying at %s: %s",
            message.channel,
            display_recipient(message.recipient),
            message.subscriber,
            attempts,
            next_at.isoformat(timespec="seconds"),
            exc,
        )

    def _failed(self, message: Outgoing, exc: PermanentDeliveryError, report: SendReport) -> None:
        self.store.mark_failed(message.delivery_id, self.clock(), str(exc))
        report.failed += 1
        self.metrics.record_delivery(message.channel, "failed")
        log.error(
            "delivery to %s %s for %s failed permanently: %s (fix it, then run 'notifier retry %s')",
            message.channel,
            display_recipient(message.recipient),
            message.subscriber,
            exc,
            message.subscriber,
        )
