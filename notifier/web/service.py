"""What the HTTP endpoints read of the running instance: the daemon provides it, the web layer never imports it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from notifier.arxiv.poller import FeedHealth
from notifier.config.settings import Settings
from notifier.config.subscribers import Config
from notifier.metrics import Metrics
from notifier.store import Store
from notifier.web.feedback import FeedbackLinks
from notifier.web.unsubscribe import UnsubscribeLinks


class Service(Protocol):
    """The running instance as the endpoints see it (:class:`notifier.daemon.Notifier` is one)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def config(self) -> Config:
        """The last good config."""

    @property
    def config_error(self) -> str | None:
        """Why the newest edit of subscribers.yaml was rejected, while it is."""

    @property
    def clock(self) -> Callable[[], datetime]: ...

    @property
    def store(self) -> Store: ...

    @property
    def metrics(self) -> Metrics: ...

    @property
    def unsubscribe_links(self) -> UnsubscribeLinks: ...

    @property
    def feedback_links(self) -> FeedbackLinks: ...

    def feed_health(self, feed_key: str, now: datetime) -> FeedHealth:
        """How the feed ``feed_key`` has been doing, as of ``now``."""
