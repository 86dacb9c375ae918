"""A delivery's rendered message as the store keeps it: a Zstandard frame.

A digest email is tens of KB of HTML and text that compresses about four times (level 1: 0.1 ms to compress a
35 KB message, 0.06 ms to decompress it). Stored compressed, the database file shrinks about as much, and so does
what recording a plan writes and what a claim reads back: recording digests costs less, their compression included,
and grows less as the file grows (``bench/store.py``).

Only the store packs and unpacks: ``record_digests`` is handed the message as it is sent, and a claim hands it
back the same. A frame starts with Zstandard's magic number, which a message never does (an email starts with a
header, a Slack payload with ``[``), so a message that a database of an older version stored uncompressed is read
as it is; a pruned payload is empty (see :meth:`~notifier.store.sql.SqlStore.prune`).
"""

from __future__ import annotations

import threading

import zstandard

LEVEL = 1  # zstd's fastest standard level: 4.3x on digest emails, against 4.6x at the default 3 for 35% more time
MAGIC = b"\x28\xb5\x2f\xfd"  # the first four bytes of every Zstandard frame


class _Codecs(threading.local):
    """A compressor and a decompressor per thread: neither may be used by two threads at once."""

    def __init__(self) -> None:
        self.compressor = zstandard.ZstdCompressor(level=LEVEL)
        self.decompressor = zstandard.ZstdDecompressor()


_codecs = _Codecs()


class CorruptPayload(ValueError):
    """A stored frame that does not decompress: the database was damaged."""


def pack(message: bytes) -> bytes:
    """``message`` as it is stored: one Zstandard frame that records its size (an empty message stays empty)."""
    return _codecs.compressor.compress(message) if message else message


def unpack(stored: bytes) -> bytes:
    """The message that :func:`pack` stored, or a message an older version stored as it was."""
    if not stored.startswith(MAGIC):
        return stored
    try:
        return _codecs.decompressor.decompress(stored)
    except zstandard.ZstdError as exc:
        raise CorruptPayload(f"a stored message does not decompress ({exc})") from None
