"""The exit codes of the ``notifier`` command, for cron and scripts to act on (the table is in ``--help``)."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0  # done; also when SIGTERM or SIGINT stopped run, once or retry
    CONFIG = 1  # a setting or subscribers.yaml is invalid
    FAILED = 2  # bad usage (argparse's own code), or the command failed (the store, a template...)
    ARXIV_UNREACHABLE = 3  # once: no feed could be fetched; what was stored was still planned and sent
    DELIVERY_FAILED = 4  # once, retry, send-test: some deliveries failed for good (`notifier status` says why)
    BUSY = 5  # another notifier is sending from the same data directory (SQLite)
    INTERRUPTED = 130  # interrupted while starting


TABLE = """\
exit codes:
  0    done; also when SIGTERM or SIGINT stopped run, once or retry (the sends in flight finish first,
       within a few seconds; what was not sent goes out at the next run)
  1    the config is invalid (a setting, or subscribers.yaml: check prints file:line:column); once, after a
       broken edit of subscribers.yaml: the digests went out with the last one that loaded (kept in the data
       directory), and the error is printed
  2    bad usage, or the command failed (the store, a template...; the reason is printed)
  3    once: arXiv could not be reached (no feed could be fetched); stored papers were still planned and sent
  4    once, retry, send-test: some deliveries failed for good (once and retry: `notifier status` says why)
  5    another notifier is sending from the same data directory (SQLite) and did not finish within
       NOTIFIER_LOCK_WAIT seconds (default 30); nothing was sent; try again later
  130  interrupted while starting
When both 3 and 4 apply, once exits 3.
"""
