"""The data directory's lock: one process at a time sends from a SQLite data directory.

``run``, ``once``, ``retry`` and ``rename`` (the commands that send or change history) hold an exclusive ``flock``
on ``DATA_DIR/notifier.lock`` for as long as they run, and write their pid into it for the message another process
shows. The kernel releases the lock when its holder exits, however it exits (``kill -9`` included), so a leftover
file never blocks anyone. A second sender waits up to ``NOTIFIER_LOCK_WAIT`` seconds for it, then gives up with
:class:`~notifier.errors.DataDirBusyError` (exit code 5). ``status``, ``check`` and ``preview`` only look, and take
no lock.

Holding the lock is what makes the SQLite store's start-up recovery safe: no other sender can be alive on the
database, so a delivery left ``sending`` belongs to a process that is gone. With PostgreSQL several daemons share
the database by design (leases and a lead lock in the database); no file lock is taken there.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

from notifier.config.settings import Settings
from notifier.errors import DataDirBusyError

log = logging.getLogger(__name__)

LOCK_FILE = "notifier.lock"
_RETRY_EVERY = 0.1  # seconds between two tries while waiting


class DataDirLock:
    """An exclusive lock on one data directory, held by this process between :meth:`acquire` and :meth:`release`."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        """Take the lock if it is free (and write this process's pid into the file); False when another holds it."""
        if self._fd is not None:
            return True
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise DataDirBusyError(f"cannot open the lock file {self.path}: {exc}", pid=None) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def acquire(self, wait: float) -> None:
        """Take the lock, waiting up to ``wait`` seconds for its holder to finish; :class:`DataDirBusyError` then."""
        if self.try_acquire():
            return
        if wait > 0:
            log.info("waiting up to %gs for the notifier sending from %s (%s)", wait, self.data_dir, self.holder_text())
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            time.sleep(min(_RETRY_EVERY, max(deadline - time.monotonic(), 0.0)))
            if self.try_acquire():
                return
        pid = self.holder()
        raise DataDirBusyError(
            f"another notifier is sending from {self.data_dir} ({self.holder_text(pid)}); try again later", pid=pid
        )

    def release(self) -> None:
        """Give the lock up (idempotent). The pid is erased first, while the lock is still held."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing the last descriptor releases the flock

    def holder(self) -> int | None:
        """The pid written by the process holding the lock, or None when it cannot be read."""
        try:
            text = self.path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            return None
        return int(text) if text.isdigit() else None

    def holder_text(self, pid: int | None = None) -> str:
        pid = self.holder() if pid is None else pid
        return f"pid {pid}" if pid is not None else "pid unknown"


def data_dir_lock(settings: Settings) -> DataDirLock | None:
    """The lock a sender takes: the SQLite data directory's, or None with PostgreSQL (shared by design)."""
    return None if settings.database_url else DataDirLock(settings.data_dir)


@contextlib.contextmanager
def hold_data_dir(settings: Settings) -> Iterator[None]:
    """Hold the data directory's lock for the block (SQLite), waiting up to ``settings.lock_wait`` for it."""
    lock = data_dir_lock(settings)
    if lock is None:
        yield
        return
    lock.acquire(settings.lock_wait)
    try:
        yield
    finally:
        lock.release()
