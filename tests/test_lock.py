"""The data directory's lock: one holder at a time, its pid in the message, and gone with its holder."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from notifier.errors import DataDirBusyError
from notifier.lock import DataDirLock

HOLD = """\
import sys, time
from pathlib import Path
from notifier.lock import DataDirLock
lock = DataDirLock(Path(sys.argv[1]))
assert lock.try_acquire()
print("held", flush=True)
time.sleep(60)
"""


@contextlib.contextmanager
def held_in_another_process(data_dir) -> Iterator[subprocess.Popen[str]]:
    with subprocess.Popen([sys.executable, "-c", HOLD, str(data_dir)], stdout=subprocess.PIPE, text=True) as holder:
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "held\n"
            yield holder
        finally:
            holder.kill()


def test_a_second_process_waits_its_time_then_is_told_who_holds_the_data_directory(tmp_path):
    with held_in_another_process(tmp_path / "data") as holder:
        lock = DataDirLock(tmp_path / "data")
        began = time.monotonic()
        with pytest.raises(DataDirBusyError) as raised:
            lock.acquire(0.5)
        assert 0.5 <= time.monotonic() - began < 2
        assert raised.value.pid == holder.pid
        assert str(raised.value) == (
            f"another notifier is sending from {tmp_path / 'data'} (pid {holder.pid}); try again later"
        )
        assert not lock.held


def test_the_lock_goes_with_a_holder_killed_by_sigkill(tmp_path):
    with held_in_another_process(tmp_path) as holder:
        holder.kill()  # SIGKILL: no chance to clean up
    lock = DataDirLock(tmp_path)
    began = time.monotonic()
    lock.acquire(30)
    assert time.monotonic() - began < 1, "a leftover lock file blocks no one"
    assert lock.holder() is not None and lock.holder() != holder.pid
    lock.release()
    assert lock.holder() is None, "the pid is erased on release"
    assert DataDirLock(tmp_path).try_acquire()
