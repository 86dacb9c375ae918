"""Files: each message becomes one file in an outbox folder, for dry runs and the embedded default.

Email is written as the ``.eml`` it would have been sent as; Slack as the JSON list of messages it would have
posted. Writes are atomic (a temporary file, then ``os.replace``) and idempotent: the same message always lands in
the same file, so writing it again after a retry is harmless.
"""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

from notifier.atomic import write_atomic
from notifier.channels.base import Progress
from notifier.channels.webhooks import display_recipient
from notifier.errors import TemporaryDeliveryError
from notifier.models import ChannelKind, Outgoing

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]+")
_SUFFIX = {"email": ".eml", "slack": ".json"}


def safe_name(message_id: str) -> str:
    """A file name from a message id: angle brackets dropped, anything unusual replaced, never hidden or empty."""
    name = _UNSAFE.sub("_", message_id.strip().strip("<>")).strip("._")
    return name[:200] or "message"


class FileChannel:
    """Writes each message to ``root/<kind>/<message id>.eml|.json``."""

    def __init__(self, root: Path, kind: ChannelKind) -> None:
        if kind not in _SUFFIX:
            raise ValueError(f"kind must be 'email' or 'slack', not {kind!r}")
        self.kind: ChannelKind = kind
        self.folder = Path(root) / kind

    def path_for(self, message: Outgoing) -> Path:
        return self.folder / f"{safe_name(message.message_id)}{_SUFFIX[self.kind]}"

    async def send(self, message: Outgoing, progress: Progress | None = None) -> None:
        path = self.path_for(message)
        try:
            await asyncio.to_thread(write_atomic, path, message.payload)
        except OSError as exc:
            raise TemporaryDeliveryError(f"cannot write {path}: {exc}", hint="check the outbox folder") from exc
        log.debug("wrote %s for %s", path, display_recipient(message.recipient))  # the sender logs each "sent"

    async def aclose(self) -> None:
        return None
