"""Files written whole or not at all: a temporary file beside the target, flushed to disk, then renamed over it."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (its folder made if missing): a reader sees the old file or the new one, never a
    part. The file is readable by its owner only, as :func:`tempfile.mkstemp` creates it."""
    error = write_all([(path, data)])[0]
    if error is not None:
        raise error


def write_all(files: Sequence[tuple[Path, bytes]]) -> list[OSError | None]:
    """Write each ``(path, data)`` as :func:`write_atomic` does, and say how each went: None, or its error.

    The files are written first, then flushed to disk, then renamed, then their folders flushed once each (so that
    the new names are on disk too): the disk takes the files of a batch together, and one that fails leaves the
    others written.
    """
    errors: list[OSError | None] = [None] * len(files)
    opened: list[tuple[int, int, str]] = []  # (index, fd, temporary path)
    renamed: set[int] = set()
    try:
        try:
            for index, (path, data) in enumerate(files):
                try:
                    fd, tmp = _temporary(path)
                except OSError as exc:
                    errors[index] = exc
                    continue
                opened.append((index, fd, tmp))
                errors[index] = _written(fd, data)
            for index, fd, _tmp in opened:
                if errors[index] is None:
                    errors[index] = _synced(fd)
        finally:
            for _index, fd, _tmp in opened:
                os.close(fd)
        folders: set[Path] = set()
        for index, _fd, tmp in opened:
            path = files[index][0]
            if errors[index] is None:
                try:
                    os.replace(tmp, path)
                except OSError as exc:
                    errors[index] = exc
                else:
                    renamed.add(index)
                    folders.add(path.parent)
        for folder in folders:
            _sync_folder(folder)
    finally:
        for index, _fd, tmp in opened:
            if index not in renamed:
                Path(tmp).unlink(missing_ok=True)
    return errors


def _written(fd: int, data: bytes) -> OSError | None:
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except OSError as exc:
        return exc
    return None


def _synced(fd: int) -> OSError | None:
    try:
        os.fsync(fd)
    except OSError as exc:
        return exc
    return None


def _temporary(path: Path) -> tuple[int, str]:
    """A new, empty temporary file beside ``path``: its descriptor and its path."""
    try:
        return tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
    except FileNotFoundError:  # the folder is made once, not looked for at every write (an outbox writes thousands)
        path.parent.mkdir(parents=True, exist_ok=True)
        return tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")


def _sync_folder(folder: Path) -> None:
    """Flush a folder's entries (the new names) to disk where the system allows it; the files themselves are on disk
    already, so a folder that cannot be flushed is left as it is."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
