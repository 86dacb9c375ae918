"""Files: each message becomes one file in an outbox folder, for dry runs and the embedded default.

Email is written as the ``.eml`` it would have been sent as; Slack as the JSON list of messages it would have
posted. Writes are atomic (a temporary file, then ``os.replace``) and idempotent: the same message always lands in
the same file, so writing it again after a retry is harmless.

The messages handed over in one turn of the event loop (a sender sends a claimed batch at once) are written
together, split among at most :data:`WRITERS` worker threads: a thread per file cost more than the file (handing
each write to a thread and back took more CPU than writing it), and the disk takes the files of a batch together.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from pathlib import Path

from notifier.atomic import write_all
from notifier.channels.base import Progress
from notifier.channels.webhooks import display_recipient
from notifier.errors import TemporaryDeliveryError
from notifier.models import ChannelKind, Outgoing

log = logging.getLogger(__name__)

# Worker threads a batch of files is split among: each waits for its files' fsyncs, which the others can overlap.
WRITERS = 4

_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]+")
_SUFFIX = {"email": ".eml", "slack": ".json"}


def safe_name(message_id: str) -> str:
    """A file name from a message id: angle brackets dropped, anything unusual replaced, never hidden or empty."""
    name = _UNSAFE.sub("_", message_id.strip().strip("<>")).strip("._")
    return name[:200] or "message"


class FileChannel:
    """Writes each message to ``root/<kind>/<message id>.eml|.json``."""

    def __init__(self, root: Path, kind: ChannelKind, *, writers: int = WRITERS) -> None:
        if kind not in _SUFFIX:
            raise ValueError(f"kind must be 'email' or 'slack', not {kind!r}")
        self.kind: ChannelKind = kind
        self.folder = Path(root) / kind
        self.writers = writers
        self._queued: list[tuple[Path, bytes, asyncio.Future[OSError | None]]] = []

    def path_for(self, message: Outgoing) -> Path:
        return self.folder / f"{safe_name(message.message_id)}{_SUFFIX[self.kind]}"

    async def send(self, message: Outgoing, progress: Progress | None = None) -> None:
        path = self.path_for(message)
        loop = asyncio.get_running_loop()
        written: asyncio.Future[OSError | None] = loop.create_future()
        if not self._queued:
            loop.call_soon(self._write_queued)
        self._queued.append((path, message.payload, written))
        error = await written
        if error is not None:
            raise TemporaryDeliveryError(f"cannot write {path}: {error}", hint="check the outbox folder") from error
        log.debug("wrote %s for %s", path, display_recipient(message.recipient))  # the sender logs each "sent"

    def _write_queued(self) -> None:
        """Write what was queued in this turn of the event loop (those whose sender gave up waiting left out)."""
        queued = [entry for entry in self._queued if not entry[2].done()]
        self._queued = []
        if not queued:
            return
        loop = asyncio.get_running_loop()
        share = -(-len(queued) // max(1, self.writers))
        for start in range(0, len(queued), share):
            part = queued[start : start + share]
            job = loop.run_in_executor(None, write_all, [(path, data) for path, data, _ in part])
            job.add_done_callback(functools.partial(_settle, part))

    async def aclose(self) -> None:
        return None


def _settle(
    part: list[tuple[Path, bytes, asyncio.Future[OSError | None]]], job: asyncio.Future[list[OSError | None]]
) -> None:
    """Hand each writer of ``part`` its file's outcome (any error of the job itself is each one's)."""
    failure = job.exception() if not job.cancelled() else OSError("the write was cancelled")
    outcomes: list[OSError | None]
    if failure is None:
        outcomes = job.result()
    elif isinstance(failure, OSError):
        outcomes = [failure] * len(part)
    else:
        for _path, _data, written in part:
            if not written.done():
                written.set_exception(failure)
        return
    for (_path, _data, written), outcome in zip(part, outcomes, strict=True):
        if not written.done():
            written.set_result(outcome)
