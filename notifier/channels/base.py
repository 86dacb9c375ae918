"""The one small protocol every delivery channel implements.

The outbox hands a channel one :class:`~notifier.models.Outgoing` at a time (several at once, up to the channel's
pool size). A channel returns when the message was accepted, or raises
:class:`~notifier.errors.TemporaryDeliveryError` (retry later) or :class:`~notifier.errors.PermanentDeliveryError`
(give up on this delivery). Third-party errors never leave a channel untranslated.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

from notifier.models import ChannelKind, Outgoing

Progress = Callable[[int], Awaitable[None]]
"""Called with the number of parts of a multi-part payload accepted so far, after each accepted part."""


@runtime_checkable
class Channel(Protocol):
    """A way to deliver an :class:`Outgoing` message."""

    kind: ChannelKind

    async def send(self, message: Outgoing, progress: Progress | None = None) -> None:
        """Deliver ``message``; resume a multi-part payload at ``message.part`` and report each accepted part."""
        ...

    async def aclose(self) -> None:
        """Release connections; safe to call more than once."""
        ...
